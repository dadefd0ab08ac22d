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

/// The server crate's layers, top to bottom: a file may use what is below its own layer (and,
/// among the leaves, other leaves), never what is above. `server.rs` (the public handle) ->
/// `presence.rs` (a service on top of the state) and `listener.rs` (accept) -> `http.rs`
/// (upgrade, endpoints) -> `connection.rs` (a connection's I/O loop) -> `state.rs` (the shared
/// state) -> the leaves. `lib.rs` and `main.rs` are the facade and the binary, above all.
const SERVER_LAYERS: &[(&str, u8)] = &[
    ("main", 9),
    ("lib", 9),
    ("server", 8),
    ("presence", 7),
    ("listener", 6),
    ("http", 5),
    ("connection", 4),
    ("state", 3),
    // Leaves: what the layers above are made of.
    ("admission", 1),
    ("auth", 1),
    ("clock", 1),
    ("config", 1),
    ("engine", 1),
    ("handlers", 1),
    ("hooks", 1),
    ("jwt", 1),
    ("lifecycle", 1),
    ("logs", 1),
    ("metrics", 1),
    ("requests", 1),
    ("tls", 1),
    ("websocket", 1),
];

/// The layer of a file or module of the server crate (`engine/redis/mod.rs` is `engine`'s).
fn server_layer(module: &str) -> Option<u8> {
    SERVER_LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// The modules a file names with `crate::module`, outside comments; `crate::Item` (the crate
/// root, the facade) counts as `lib`.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let module = if name.starts_with(char::is_uppercase) || name.is_empty() {
                "lib".to_owned()
            } else {
                name
            };
            found.push((number + 1, module));
        }
    }
    found
}

#[test]
fn the_server_crate_is_layered_and_no_import_goes_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("native-server/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut offences = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs").to_owned())
            .unwrap_or_default();
        let Some(layer) = server_layer(&module) else {
            offences.push(format!(
                "{}: a file in no layer of SERVER_LAYERS",
                relative.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("readable file");
        for (number, used) in crate_paths(&text) {
            let Some(used_layer) = server_layer(&used) else {
                offences.push(format!(
                    "{}:{number}: crate::{used} in no layer",
                    relative.display()
                ));
                continue;
            };
            let leaf_to_leaf = layer == 1 && used_layer == 1;
            if used != module && used_layer >= layer && !leaf_to_leaf {
                offences.push(format!(
                    "{}:{number}: {module} (layer {layer}) uses {used} (layer {used_layer})",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "an import goes up the server crate's layers:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_import_going_up() {
    let text = "use crate::hub::Hub;\nuse crate::server::WebSocketServer; // up\n// crate::server in a comment\nfn f() -> crate::ClientInfo {}";
    let used: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(used, ["hub", "server", "lib"]);
    assert!(server_layer("hub") < server_layer("server"));
}
