//! The native client with `persist(path)`: a sending process killed with SIGKILL mid-stream
//! and started again on the same journal; a journal whose directory does not exist. Against the
//! real server on loopback (port 0); the sender is this test binary run again as a child
//! process (the ignored test `child_sender`), so that the kill is a real one.

#![cfg(all(unix, not(target_arch = "wasm32")))]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use wsrelay::{Error, Event, Incoming, SendOptions, WebSocketClient};
use wsrelay_server::{ServerConfig, WebSocketServer};

/// Upper bound of any single wait: a test that hangs fails instead.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the child reports on its stdout, one line each: `restored N` for each restored message
/// (N its number), `delivered N` for each acknowledged one, `done` at the end.
fn spawn_sender(addr: SocketAddr, journal: &Path, from: u64, count: u64) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "child_sender",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WSRELAY_CHILD_URL", format!("ws://{addr}"))
        .env("WSRELAY_CHILD_JOURNAL", journal)
        .env("WSRELAY_CHILD_FROM", from.to_string())
        .env("WSRELAY_CHILD_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts")
}

/// The child: sends `count` numbered messages to `receiver` from `from` on, in bursts, with the
/// journal at the given path, reporting what was restored and delivered; then waits for every
/// outcome. Run only by the tests below (ignored otherwise).
#[test]
#[ignore = "run as a child process by the tests of this file"]
fn child_sender() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let from: u64 = var("WSRELAY_CHILD_FROM").parse().expect("a number");
        let count: u64 = var("WSRELAY_CHILD_COUNT").parse().expect("a number");
        let builder = WebSocketClient::builder(var("WSRELAY_CHILD_URL"), "sender")
            .min_reconnection_delay(Duration::from_millis(20))
            .persist(var("WSRELAY_CHILD_JOURNAL"));
        let mut events = builder.subscribe();
        let client = builder.build().expect("a client");
        let numbers: Arc<Mutex<std::collections::HashMap<u64, u64>>> = Arc::default();
        let watcher = {
            let numbers = Arc::clone(&numbers);
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    match event {
                        Event::Restored(messages) => {
                            for message in messages {
                                let number = message.payload.as_deref().unwrap_or("0");
                                println!("restored {number}");
                                if let Ok(number) = number.parse() {
                                    numbers.lock().expect("lock").insert(message.id, number);
                                }
                            }
                        }
                        Event::Delivered { id } => {
                            if let Some(number) = numbers.lock().expect("lock").get(&id) {
                                println!("delivered {number}");
                            }
                        }
                        Event::Failed { id, error } => println!("failed {id} {error}"),
                        _ => {}
                    }
                }
            })
        };
        // Faster than the relay acknowledges, so that a kill finds many messages queued;
        // a full queue (10 000) waits.
        let mut number = from;
        while number < from + count {
            for _ in 0..200 {
                if number == from + count {
                    break;
                }
                match client.post_with("n", number, SendOptions::to("receiver")) {
                    Ok(id) => {
                        numbers.lock().expect("lock").insert(id, number);
                        number += 1;
                    }
                    Err(Error::QueueFull { .. }) => break,
                    Err(error) => panic!("post: {error}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Every outcome, then done.
        while client.stats().queued_messages > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("done");
        watcher.abort();
    });
}

/// Reads the child's report lines as they come.
fn report_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn numbers_in(lines: &[String], prefix: &str) -> BTreeSet<u64> {
    lines
        .iter()
        .filter_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_stream_resumes_exactly_once_in_order() {
    let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("bind a loopback port");
    let addr = server.local_addr();
    let builder = WebSocketClient::builder(format!("ws://{addr}"), "receiver");
    let mut receiver_events = builder.subscribe();
    let receiver = builder.build().expect("a client");
    // Connected before anyone sends to it (a message to nobody is refused: unknown_target).
    tokio::time::timeout(PATIENCE, async {
        while !matches!(receiver_events.recv().await, Ok(Event::Open { .. })) {}
    })
    .await
    .expect("the receiver connects");
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    {
        let got = Arc::clone(&got);
        receiver.on("n", move |message: Incoming<u64>| {
            got.lock().expect("lock").push(message.payload);
            async {}
        });
    }
    let directory = std::env::temp_dir().join(format!("wsrelay-persist-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    let journal = directory.join("sender.journal");
    let _ = std::fs::remove_file(&journal);

    // The first process: killed once 300 of its messages were delivered, with more in flight.
    let mut first = spawn_sender(addr, &journal, 1, 100_000);
    let lines = report_lines(&mut first);
    let mut first_lines = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while numbers_in(&first_lines, "delivered ").len() < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first sender delivers"
        );
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            first_lines.push(line);
        }
    }
    // SIGKILL: no destructor, no close, no flush.
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    first_lines.extend(lines.try_iter());

    // The second process, on the same journal: what it restores, then 50 more.
    let mut second = spawn_sender(addr, &journal, 1_000_000, 50);
    let lines = report_lines(&mut second);
    let mut second_lines = Vec::new();
    while second_lines.last().map(String::as_str) != Some("done") {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("the second sender reports");
        second_lines.push(line);
    }
    assert!(second.wait().expect("exits").success());
    let restored = numbers_in(&second_lines, "restored ");
    assert!(
        !second_lines.iter().any(|line| line.starts_with("failed")),
        "nothing fails: {second_lines:?}"
    );

    // Everything acknowledged to the first process, everything restored and everything the
    // second sent arrives once, in order.
    let mut expected: BTreeSet<u64> = numbers_in(&first_lines, "delivered ");
    expected.extend(&restored);
    expected.extend(1_000_000..1_000_050);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let arrived: BTreeSet<u64> = got.lock().expect("lock").iter().copied().collect();
        if expected.is_subset(&arrived) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing: {:?}",
            expected.difference(&arrived).take(10).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = got.lock().expect("lock").clone();
    assert!(
        got.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, none twice"
    );
    // Restored messages may include some the relay had acknowledged (settled ids reach the
    // journal with a later batch): sent again, they were dropped as copies (none twice above).
    assert!(!restored.is_empty(), "the kill left messages to restore");
    let _ = std::fs::remove_dir_all(&directory);
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_is_reported_and_the_client_works_in_memory() {
    let server = WebSocketServer::bind("127.0.0.1:0", ServerConfig::default())
        .await
        .expect("bind a loopback port");
    let url = format!("ws://{}", server.local_addr());
    let missing = std::env::temp_dir()
        .join(format!("wsrelay-missing-{}", std::process::id()))
        .join("no-such-directory")
        .join("client.journal");
    let builder = WebSocketClient::builder(url, "alice").persist(&missing);
    let mut events = builder.subscribe();
    let client = builder.build().expect("a client, in memory");
    let reported = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(Event::Error(Error::Storage(message))) => return message,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended"),
            }
        }
    })
    .await
    .expect("the storage failure is reported");
    assert!(reported.contains("no-such-directory"), "{reported}");
    tokio::time::timeout(PATIENCE, client.send("note", "still works"))
        .await
        .expect("acknowledged in time")
        .expect("delivered");
}
