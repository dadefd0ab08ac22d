//! The test bed: runs the relay binary on a free port and lets tests stop and start it.
//!
//! A browser test cannot kill a process, so the test command starts this supervisor and hands
//! its address to the tests (`WSRELAY_TESTBED`, read by the wasm tests at compile time with
//! `option_env!` and by the Node tests from the environment). Its HTTP API, with CORS so that a
//! page on another port may call it:
//!
//! - `GET /url`: the relay's WebSocket URL, `ws://127.0.0.1:PORT` (text);
//! - `POST /stop`: SIGTERM, the relay closes its connections (1001) and exits; answered once
//!   it has exited;
//! - `POST /kill`: SIGKILL, connections die without a close frame;
//! - `POST /start`: starts it again on the same port; answered once it listens;
//! - `POST /restart`: stop then start.
//!
//! std only, one thread per request: a handful of requests per test need nothing more, and
//! xtask stays quick to build.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The relay process and the port it keeps across restarts.
struct Relay {
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Relay {
    fn url(&self) -> String {
        let mut url = String::from("ws://127.0.0.1:");
        url.push_str(&self.port.to_string());
        url
    }

    /// Starts the relay (on `self.port`, or a free one the first time) and waits for its
    /// `listening on http://HOST:PORT` line.
    fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        // Rebinding the same port right after a stop can race the old socket's release: retry.
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(last_error)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or("relay without stdout")?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        // EOF (the relay exited, e.g. port taken) reads an empty line.
        let _ = reader.read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse::<u16>().ok());
        match port {
            Some(port) => {
                self.port = port;
                // Keep draining stdout so the relay never blocks on a full pipe.
                thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
                self.child = Some(child);
                Ok(())
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the relay did not start: {line:?}"))
            }
        }
    }

    /// Stops the relay: gracefully (SIGTERM) or not (SIGKILL), and waits for it to exit.
    fn stop(&mut self, graceful: bool) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            // The relay gives connections up to 5 s to close; don't wait forever for it.
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        child.wait().map(drop).map_err(|e| e.to_string())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop(false);
    }
}

/// A running test bed; dropping it stops the relay.
pub struct Testbed {
    /// `http://127.0.0.1:PORT` of the control API.
    pub control_url: String,
    relay: Arc<Mutex<Relay>>,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Ok(mut relay) = self.relay.lock() {
            let _ = relay.stop(false);
        }
    }
}

/// Starts the relay `binary` and the control API.
pub fn start(binary: &Path) -> Result<Testbed, String> {
    let mut relay = Relay {
        binary: binary.to_path_buf(),
        port: 0,
        child: None,
    };
    relay.start()?;
    let relay = Arc::new(Mutex::new(relay));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let shared = Arc::clone(&relay);
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let relay = Arc::clone(&shared);
            thread::spawn(move || serve(stream, &relay));
        }
    });
    Ok(Testbed {
        control_url: format!("http://127.0.0.1:{port}"),
        relay,
    })
}

/// Answers one request (the connection is closed after it).
fn serve(mut stream: TcpStream, relay: &Mutex<Relay>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Read the request head only; the API takes no bodies.
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("OPTIONS", _) => ("204 No Content", String::new()),
        ("GET", "/url") => ("200 OK", lock(relay).url()),
        ("POST", "/stop") => outcome(lock(relay).stop(true)),
        ("POST", "/kill") => outcome(lock(relay).stop(false)),
        ("POST", "/start") => outcome(lock(relay).start()),
        ("POST", "/restart") => {
            let mut relay = lock(relay);
            outcome(relay.stop(true).and_then(|()| relay.start()))
        }
        _ => ("404 Not Found", "unknown endpoint".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         access-control-allow-origin: *\r\naccess-control-allow-methods: GET, POST, OPTIONS\r\n\
         access-control-allow-headers: *\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

fn lock(relay: &Mutex<Relay>) -> std::sync::MutexGuard<'_, Relay> {
    // A request thread that panicked cannot leave the relay half-changed in a way that
    // matters to the next request: carry on with the data.
    relay
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn outcome(result: Result<(), String>) -> (&'static str, String) {
    match result {
        Ok(()) => ("200 OK", "ok".into()),
        Err(error) => ("500 Internal Server Error", error),
    }
}
