//! A terminal chat over wsrelay: every line typed goes to everybody else in the room, and
//! everybody else's lines are printed. Talks to the browser demo of `cargo xtask run` too.
//!
//! ```sh
//! cargo run -p wsrelay-server -- --port 8080            # a relay
//! cargo run --example chat -- ws://127.0.0.1:8080 alice
//! cargo run --example chat -- ws://127.0.0.1:8080 bob   # in another terminal
//! ```
//!
//! A line `@bob hello` goes to bob only.

// The terminal chat is native; on wasm32 (built by `clippy --all-targets`) it is empty.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    terminal::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod terminal {
    use serde::{Deserialize, Serialize};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::sync::broadcast::error::RecvError;
    use wsrelay::{Event, Incoming, SendOptions, WebSocketClient};

    /// The payload of `chat-message`, as the browser demo sends it (extra fields are ignored).
    #[derive(Debug, Serialize, Deserialize)]
    struct ChatMessage {
        message: String,
    }

    #[tokio::main]
    pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
        let mut args = std::env::args().skip(1);
        let (Some(url), Some(name)) = (args.next(), args.next()) else {
            eprintln!("usage: chat ws://HOST:PORT NAME");
            std::process::exit(2);
        };
        let builder = WebSocketClient::builder(url, name);
        // Subscribed before the client starts, so that even the first `Open` is seen.
        let mut events = builder.subscribe();
        let client = builder.build()?;

        client.on("chat-message", |m: Incoming<ChatMessage>| async move {
            let from = m.source.as_deref().unwrap_or("server");
            println!("{from}: {}", m.payload.message);
        });

        // Lifecycle and failures on stderr, so stdout carries only the conversation.
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Open { resumed }) => {
                        eprintln!("* connected{}", if resumed { " (resumed)" } else { "" })
                    }
                    Ok(Event::Close { code, reason, .. }) => {
                        eprintln!("* disconnected: {code} {reason}")
                    }
                    Ok(Event::Reconnecting { attempt, delay }) => {
                        eprintln!("* reconnecting in {delay:?} (attempt {attempt})")
                    }
                    Ok(Event::Failed { error, .. }) => eprintln!("* not delivered: {error}"),
                    Ok(Event::Error(error)) => eprintln!("* error: {error}"),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        });

        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (options, text) = match line.strip_prefix('@').and_then(|l| l.split_once(' ')) {
                Some((to, text)) => (SendOptions::to(to), text),
                None => (SendOptions::default(), line),
            };
            let message = ChatMessage {
                message: text.to_owned(),
            };
            // `post` does not wait for the acknowledgement, so typing never blocks; a message that
            // cannot be delivered is reported by the event task above.
            if let Err(error) = client.post_with("chat-message", message, options) {
                eprintln!("* not sent: {error}");
            }
        }
        // End of input: flush what is in flight and leave cleanly.
        client.close().await;
        Ok(())
    }
}
