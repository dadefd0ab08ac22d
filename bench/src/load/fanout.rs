//! Fan-out and the open loop: broadcast (scenario 3, and the cluster rows), send_to at a
//! fixed rate (scenario 2b), and the npm rows' sender.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

use crate::wire::{
    self, classify, masked, stamp_of, Conn, Incoming, Message, Proto, FIRST_ID, OP_CLOSE, OP_PING,
    OP_TEXT, SIO_PONG,
};

use super::{connect_all, measure, pad_for, Sample, Shared, Target, Tasks, Timing};

/// Messages a broadcast sender may have in flight (sent, not yet seen by the probe client).
pub const BROADCAST_WINDOW: u64 = 32;

/// Scenario 3: `senders` clients broadcast to everybody else; every client counts deliveries.
/// Senders are paced by a probe client (a non-sender): at most [`BROADCAST_WINDOW`] messages
/// of each sender not yet delivered to it. With several servers, a sender's probe is on
/// another server than the sender, so that the window bounds what crosses between servers.
pub async fn broadcast(
    target: &Target,
    proto: Proto,
    conns: usize,
    senders: usize,
    timing: Timing,
) -> Result<Sample, String> {
    fan_out(target, proto, conns, senders, timing, false).await
}

/// The chat rows (issue 21): [`broadcast`]'s load, the senders' messages the original
/// design's chat messages (`{"message": ...}`, [`Message::chat`]), which the server's chat
/// handler broadcasts to every client (the sender too) as `{"sender", "message",
/// "timestamp"}`.
pub async fn chat(
    target: &Target,
    proto: Proto,
    conns: usize,
    senders: usize,
    timing: Timing,
) -> Result<Sample, String> {
    fan_out(target, proto, conns, senders, timing, true).await
}

async fn fan_out(
    target: &Target,
    proto: Proto,
    conns: usize,
    senders: usize,
    timing: Timing,
    chat: bool,
) -> Result<Sample, String> {
    let servers = target.addrs.len();
    // Client `senders + j` is on server `(senders + j) mod servers`.
    let probe_of = move |sender: usize| {
        (senders..senders + servers.max(1))
            .find(|p| servers < 2 || p % servers != sender % servers)
            .unwrap_or(senders)
    };
    if senders + servers.max(1) > conns {
        return Err("broadcast needs more clients than senders and probes".into());
    }
    let clients = connect_all(&target.addrs, proto, conns, 16 * 1024).await?;
    tokio::time::sleep(target.settle).await;
    let shared = Shared::new();
    let pad = pad_for(20);
    let seen: Rc<Vec<Cell<u64>>> = Rc::new((0..senders).map(|_| Cell::new(0)).collect());
    let wake: Rc<Vec<Notify>> = Rc::new((0..senders).map(|_| Notify::new()).collect());
    let mut handles = Vec::new();
    for conn in clients {
        let (index, key) = (conn.index, conn.key);
        let (mut receiver, write) = Receiver::split(conn, pad);
        receiver.chat = chat;
        if index < senders {
            let (shared, seen, wake, write) = (
                Rc::clone(&shared),
                Rc::clone(&seen),
                Rc::clone(&wake),
                Rc::clone(&write),
            );
            let message = if chat {
                Message::chat(proto, "bc", index as u64, pad, key)
            } else {
                Message::of(proto, "bc", None, index as u64, pad, key)
            };
            handles.push(tokio::task::spawn_local(async move {
                if let Err(error) = sender_loop(message, index, &shared, &seen, &wake, &write).await
                {
                    shared.fail(error);
                }
            }));
        }
        let (shared, seen, wake) = (Rc::clone(&shared), Rc::clone(&seen), Rc::clone(&wake));
        handles.push(tokio::task::spawn_local(async move {
            let result = receiver
                .run(&shared, &write, |sender| {
                    let sender = sender as usize;
                    if probe_of(sender) == index {
                        if let Some(count) = seen.get(sender) {
                            count.set(count.get() + 1);
                            wake[sender].notify_one();
                        }
                    }
                })
                .await;
            if let Err(error) = result {
                shared.fail(error);
            }
        }));
    }
    let tasks = Tasks(handles);
    let sample = measure(&shared, timing, target, conns).await;
    drop(tasks);
    sample
}

/// The reading side of a connection whose writes are shared with another task.
struct Receiver {
    reader: wire::Reader,
    read: OwnedReadHalf,
    proto: Proto,
    key: [u8; 4],
    pad: usize,
    /// Messages are chat handlers' broadcasts ([`wire::chat_stamp`]).
    chat: bool,
}

type SharedWrite = Rc<tokio::sync::Mutex<OwnedWriteHalf>>;

impl Receiver {
    fn split(conn: Conn, pad: usize) -> (Receiver, SharedWrite) {
        let Conn {
            stream,
            reader,
            key,
            proto,
            ..
        } = conn;
        let (read, write) = stream.into_split();
        let receiver = Receiver {
            reader,
            read,
            proto,
            key,
            pad,
            chat: false,
        };
        (receiver, Rc::new(tokio::sync::Mutex::new(write)))
    }

    /// Reads frames until the connection fails: counts every application message as a
    /// delivery (latency from its stamp) and hands its sender's index to `seen`;
    /// acknowledges wsrelay frames every 32; answers pings.
    async fn run(
        mut self,
        shared: &Shared,
        write: &tokio::sync::Mutex<OwnedWriteHalf>,
        mut seen: impl FnMut(u64),
    ) -> io::Result<()> {
        let mut acks = wire::Acks::default();
        loop {
            let frame = self.reader.next(&mut self.read).await?;
            match frame.op {
                OP_TEXT => {}
                OP_CLOSE => return Err(wire::closed(self.reader.data(&frame))),
                OP_PING => {
                    let pong = masked(0xA, self.reader.data(&frame), self.key);
                    write.lock().await.write_all(&pong).await?;
                    continue;
                }
                _ => continue,
            }
            let data = self.reader.data(&frame);
            match classify(self.proto, data) {
                Incoming::App => {}
                Incoming::Control => continue,
                Incoming::Ping => {
                    let pong = masked(OP_TEXT, SIO_PONG, self.key);
                    write.lock().await.write_all(&pong).await?;
                    continue;
                }
                Incoming::Refused => {
                    return Err(io::Error::other(String::from_utf8_lossy(data).into_owned()))
                }
            }
            let stamp = if self.chat {
                wire::chat_stamp(data)
            } else {
                stamp_of(self.proto, data, self.pad)
            };
            shared.delivered(stamp.map(|(ts, _)| ts));
            if let Some((_, sender)) = stamp {
                seen(sender);
            }
            if self.proto == Proto::Wsrelay {
                if let Some(ack) = acks.count(data, self.key) {
                    write.lock().await.write_all(&ack).await?;
                }
            }
        }
    }
}

async fn sender_loop(
    mut message: Message,
    index: usize,
    shared: &Shared,
    seen: &[Cell<u64>],
    wake: &[Notify],
    write: &tokio::sync::Mutex<OwnedWriteHalf>,
) -> io::Result<()> {
    let mut id = FIRST_ID;
    let mut sent = 0u64;
    loop {
        while sent - seen[index].get() >= BROADCAST_WINDOW {
            if tokio::time::timeout(Duration::from_secs(10), wake[index].notified())
                .await
                .is_err()
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("broadcast sender {index} stalled: its messages stopped arriving"),
                ));
            }
        }
        sent += 1;
        id += 1;
        let frame = message.stamp(id, shared.now_us());
        write.lock().await.write_all(frame).await?;
    }
}

/// The rooms rows: `clients` clients in rooms of `size` (client `i` in room `r{i / size}`,
/// so that with several servers a room's members are spread over them), each sending `rate`
/// messages per second to its room, whatever comes back (an open loop): every other member
/// receives each one. Joins first, then a settle, then the schedule.
pub async fn rooms_open(
    target: &Target,
    proto: Proto,
    clients: usize,
    size: usize,
    rate: f64,
    timing: Timing,
) -> Result<Sample, String> {
    if clients == 0 || size < 2 || !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "rooms need clients, rooms of two or more and a rate ({clients}, {size}, {rate})"
        ));
    }
    let conns = connect_all(&target.addrs, proto, clients, 4096).await?;
    let shared = Shared::new();
    let pad = pad_for(20);
    let mut members = Vec::with_capacity(clients);
    for conn in conns {
        let (index, key) = (conn.index, conn.key);
        let room = format!("r{}", index / size);
        let (receiver, write) = Receiver::split(conn, pad);
        let join = wire::join_frame(proto, &room, key);
        write
            .lock()
            .await
            .write_all(&join)
            .await
            .map_err(|error| format!("join: {error}"))?;
        members.push((index, key, room, receiver, write));
    }
    // The joins are consumed before the schedule starts (Socket.IO answers none of them: a
    // pause long enough for the slowest peer, 10 000 joins in well under 1.5 s here).
    let joins = Duration::from_millis(500 + clients as u64 / 10);
    tokio::time::sleep(target.settle + joins).await;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::new();
    for (index, key, room, receiver, write) in members {
        let (sender_shared, sender_write) = (Rc::clone(&shared), Rc::clone(&write));
        // Clients take turns over the period instead of all writing at once.
        let first = start + period.mul_f64(index as f64 / clients as f64);
        handles.push(tokio::task::spawn_local(async move {
            let mut message = Message::to_room(proto, "rm", &room, index as u64, pad, key);
            let mut ticks = tokio::time::interval_at(first, period);
            let mut id = FIRST_ID;
            loop {
                ticks.tick().await;
                id += 1;
                let frame = message.stamp(id, sender_shared.now_us());
                if let Err(error) = sender_write.lock().await.write_all(frame).await {
                    sender_shared.fail(error);
                    return;
                }
            }
        }));
        let shared = Rc::clone(&shared);
        handles.push(tokio::task::spawn_local(async move {
            if let Err(error) = receiver.run(&shared, &write, |_| {}).await {
                shared.fail(error);
            }
        }));
    }
    let tasks = Tasks(handles);
    let sample = measure(&shared, timing, target, clients).await;
    drop(tasks);
    sample
}

/// One client broadcasting on a fixed schedule, whatever comes back (the npm rows' sender:
/// the clients measured are elsewhere). What does come back is read, acknowledged every 32
/// (wsrelay) and answered (pings), so that the server never waits on it.
pub struct Broadcaster {
    message: Message,
    /// The last message id sent.
    id: u64,
    write: SharedWrite,
    shared: Rc<Shared>,
    _reader: Tasks,
}

impl Broadcaster {
    /// Connects the sender (`c0`) to `addr`.
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Result<Broadcaster, String> {
        let conn = connect_all(&[addr], proto, 1, 4096)
            .await?
            .pop()
            .ok_or("no connection")?;
        let pad = pad_for(20);
        let message = Message::of(proto, "bc", None, 0, pad, conn.key);
        let (receiver, write) = Receiver::split(conn, pad);
        let shared = Shared::new();
        let reader = {
            let (shared, write) = (Rc::clone(&shared), Rc::clone(&write));
            tokio::task::spawn_local(async move {
                if let Err(error) = receiver.run(&shared, &write, |_| {}).await {
                    shared.fail(error);
                }
            })
        };
        Ok(Broadcaster {
            message,
            id: FIRST_ID,
            write,
            shared,
            _reader: Tasks(vec![reader]),
        })
    }

    /// Sends `count` broadcasts (20-byte payloads), `rate` per second, the first at once.
    pub async fn send(&mut self, rate: f64, count: u64) -> Result<(), String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("a broadcast rate must be positive ({rate})"));
        }
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for _ in 0..count {
            ticks.tick().await;
            if let Some(error) = self.shared.error.borrow().clone() {
                return Err(format!("the sender failed: {error}"));
            }
            self.id += 1;
            let frame = self.message.stamp(self.id, self.shared.now_us());
            self.write
                .lock()
                .await
                .write_all(frame)
                .await
                .map_err(|e| format!("the sender failed: {e}"))?;
        }
        Ok(())
    }
}

/// Scenario 2b, open loop: in each pair one client sends directed messages to its partner on
/// a fixed schedule, `rate` messages per second in all, whatever the answers (pairs alternate
/// direction, so that with two servers half the traffic goes each way). Latency runs from the
/// write of each message (not from the tick that was due: tokio's timer fires up to a
/// millisecond late, which is not the server's doing); a server that falls behind still shows,
/// since its backlog delays the deliveries, and a load generator that falls behind shows as
/// fewer deliveries per second than the rate.
pub async fn send_to_open(
    target: &Target,
    proto: Proto,
    pairs: usize,
    rate: f64,
    timing: Timing,
) -> Result<Sample, String> {
    if pairs == 0 || !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "an open loop needs pairs and a rate ({pairs}, {rate})"
        ));
    }
    let clients = connect_all(&target.addrs, proto, pairs * 2, 4096).await?;
    tokio::time::sleep(target.settle).await;
    let shared = Shared::new();
    let pad = pad_for(20);
    let period = Duration::from_secs_f64(pairs as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut handles = Vec::new();
    for conn in clients {
        let (index, key) = (conn.index, conn.key);
        let pair = index / 2;
        let (receiver, write) = Receiver::split(conn, pad);
        if index % 2 == pair % 2 {
            let (shared, write) = (Rc::clone(&shared), Rc::clone(&write));
            // Senders take turns over the period instead of all writing at once.
            let first = start + period.mul_f64(pair as f64 / pairs as f64);
            handles.push(tokio::task::spawn_local(async move {
                let partner = format!("c{}", index ^ 1);
                let mut message = Message::of(proto, "dm", Some(&partner), index as u64, pad, key);
                let mut ticks = tokio::time::interval_at(first, period);
                let mut id = FIRST_ID;
                loop {
                    ticks.tick().await;
                    id += 1;
                    let frame = message.stamp(id, shared.now_us());
                    if let Err(error) = write.lock().await.write_all(frame).await {
                        shared.fail(error);
                        return;
                    }
                }
            }));
        }
        let shared = Rc::clone(&shared);
        handles.push(tokio::task::spawn_local(async move {
            if let Err(error) = receiver.run(&shared, &write, |_| {}).await {
                shared.fail(error);
            }
        }));
    }
    let tasks = Tasks(handles);
    let sample = measure(&shared, timing, target, pairs * 2).await;
    drop(tasks);
    sample
}
