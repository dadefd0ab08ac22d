//! The `wsrelay-server` binary: port announcement, static files and upgrades on the same port,
//! SIGTERM shutdown, and a plain Node.js `ws` client chatting through it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Client, WAIT};
use serde_json::json;
use tokio::process::{Child, Command};

/// The relay binary on a free port; killed when dropped.
struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    async fn start(args: &[&str]) -> Relay {
        let args: Vec<&str> = ["--port", "0"].iter().chain(args).copied().collect();
        let (child, addr) = common::spawn_relay(&args, WAIT).await;
        Relay { child, addr }
    }

    /// Sends SIGTERM and returns whether the process exited successfully.
    async fn terminate(mut self) -> bool {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -TERM");
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exit in time");
        exit.unwrap().success()
    }
}

fn www_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("www-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>hello wsrelay</h1>\n").unwrap();
    std::fs::write(dir.join("app.js"), "console.log('demo');\n").unwrap();
    dir
}

#[tokio::test]
async fn serves_files_and_upgrades_on_any_path_then_stops_on_sigterm() {
    let dir = www_dir();
    let relay = Relay::start(&["--www", dir.to_str().unwrap()]).await;
    let addr = relay.addr;

    assert_eq!(
        common::http_get(addr, "/").await,
        (200, "<h1>hello wsrelay</h1>\n".to_owned())
    );
    assert_eq!(
        common::http_get(addr, "/app.js").await,
        (200, "console.log('demo');\n".to_owned())
    );
    assert_eq!(common::http_get(addr, "/missing.js").await.0, 404);

    let mut alice = Client::bare(addr, "alice").await; // path `/`
    let mut bob = Client::open(addr, "/ws?source=bob").await;
    bob.send(r#"{"type":"~ping"}"#).await;
    assert_eq!(bob.recv().await["type"], "~pong");
    alice
        .send(r#"{"type":"chat-message","payload":{"message":"Hello"}}"#)
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "chat-message", "source": "alice", "payload": {"message": "Hello"}})
    );

    let stopping = tokio::spawn(relay.terminate());
    assert_eq!(
        alice.closed().await.0,
        Some(1001),
        "clients are told the server goes away"
    );
    assert!(stopping.await.unwrap(), "clean exit on SIGTERM");
}

#[tokio::test]
async fn without_www_plain_http_is_told_to_upgrade() {
    let relay = Relay::start(&[]).await;
    assert_eq!(common::http_get(relay.addr, "/").await.0, 426);
}

#[tokio::test]
async fn a_node_ws_client_chats_through_the_relay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/ws").is_dir() {
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm install in {}", dir.display());
    }
    let relay = Relay::start(&[]).await;
    let run = Command::new("node")
        .arg("chat.mjs")
        .arg(format!("ws://{}", relay.addr))
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("node finished in time")
        .expect("node is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("node chat ok"), "{stdout}");
}

#[tokio::test]
async fn announces_joins_and_leaves_and_lists_who_is_online() {
    let relay = Relay::start(&[]).await;
    let (mut alice, _) = Client::session(relay.addr, "alice", "alice-session-1", 0).await;
    let mut bob = Client::bare(relay.addr, "bob").await;
    // Changes are coalesced per 100 ms: bob's arrival may come with alice's, or after it.
    let joined = alice.recv_app().await;
    assert_eq!(joined["type"], "relay:presence");
    assert!(joined.get("source").is_none(), "sent by the server itself");
    let mut arrivals = joined["payload"]["joined"].as_array().unwrap().clone();
    if !arrivals.contains(&json!("bob")) {
        assert_eq!(arrivals, [json!("alice")]);
        arrivals = alice.recv_app().await["payload"]["joined"]
            .as_array()
            .unwrap()
            .clone();
    }
    assert_eq!(arrivals.last(), Some(&json!("bob")));

    alice.send(r#"{"type":"relay:clients","id":1}"#).await;
    let list = alice.recv_app().await;
    assert_eq!(list["re"], 1, "{list}");
    assert_eq!(list["payload"], json!(["alice", "bob"]));

    bob.ws.close(None).await.unwrap();
    let left = alice.recv_app().await;
    assert_eq!(left["payload"], json!({"joined": [], "left": ["bob"]}));
    assert!(relay.terminate().await);
}
