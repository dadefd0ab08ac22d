//! The architecture holds: the sans-IO core stays sans-IO (no runtime, no browser bindings,
//! no clock, no shared-state primitives in the `wsrelay-core` crate, whose types are `Send`
//! for free), and the server's per-connection task makes no protocol decision of its own.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "web_sys",
    "js_sys",
    "wasm_bindgen",
    "std::net",
    "std::thread",
    "std::time::Instant",
    "SystemTime",
    "Rc<",
    "Arc<",
    "Mutex",
    "RefCell",
    "mpsc",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source tree") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn core_and_protocol_perform_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("core");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() >= 8, "found {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("readable file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                if code.contains(word) {
                    offences.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the core must stay sans-IO:\n{}",
        offences.join("\n")
    );
}

#[test]
fn core_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<wsrelay_core::client::ClientCore>();
    struct Handlers;
    impl wsrelay_core::server::HandlerSet for Handlers {
        fn handles(&self, _: &str) -> bool {
            false
        }
    }
    assert_send_sync::<wsrelay_core::server::ServerConnection<String, Handlers>>();
    assert_send_sync::<wsrelay_core::server::memory::MemoryState<String, u64>>();
    assert_send_sync::<wsrelay_core::client::Event>();
}

/// Words that only code making protocol decisions needs: decoding or building frames,
/// connection modes, de-duplication watermarks, retransmission, sessions, control types.
const DECISIONS: &[&str] = &[
    "Frame::",
    "Message {",
    "Mode",
    "watermark",
    "retransmit",
    "unacked",
    "resume",
    "\"~",
    "std::time::Instant",
];

#[test]
fn the_servers_connection_task_holds_no_protocol_decision() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("native-server/src");
    let mut offences = Vec::new();
    for file in ["connection.rs", "websocket.rs", "engine/memory.rs"] {
        let text = fs::read_to_string(root.join(file)).expect("readable file");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in DECISIONS {
                if code.contains(word) {
                    offences.push(format!("{file}:{}: {word}", number + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "protocol decisions belong in wsrelay_core::server::ServerConnection:\n{}",
        offences.join("\n")
    );
}
