//! A client that keeps its state in a journal (`persist`, PROTOCOL.md section 10), killed and
//! restarted on the simulation harness: what it queued reaches its recipient once, in order;
//! what it received is handled once.

// The simulation (the feature `sim`) is a native-only dev-dependency.
#![cfg(not(target_arch = "wasm32"))]

use std::time::Duration;

use wsrelay_core::client::{ClientCore, Event, Options, Outgoing, Output, ReadyState};
use wsrelay_core::sim::Sim;
use wsrelay_core::Instant;

fn to<'a>(recipient: &'a str, payload: &'a str) -> Outgoing<'a> {
    Outgoing {
        kind: "n",
        payload: Some(payload),
        to: Some(recipient),
        ..Outgoing::default()
    }
}

fn is_open(sim: &Sim, client: usize) -> bool {
    sim.clients[client].core.ready_state() == ReadyState::Open
}

/// The numbers client `index`'s handlers were given, in order, across its processes.
fn numbers(sim: &Sim, index: usize) -> Vec<u64> {
    sim.clients[index]
        .received()
        .into_iter()
        .filter_map(|(_, _, payload)| payload?.parse().ok())
        .collect()
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn messages_queued_offline_survive_a_crash_and_arrive_once_in_order() {
    let mut sim = Sim::new();
    let alice = sim.add_persistent_client("alice", Options::default(), 1);
    let bob = sim.add_client("bob", Options::default(), 2);
    sim.run_until(100, |s| is_open(s, alice) && is_open(s, bob));
    sim.cut(alice);
    sim.clients[alice].hold_attempts = true;
    let ids: Vec<u64> = (1..=5)
        .map(|n| {
            sim.with_client(alice, |core, now| core.send(now, to("bob", &n.to_string())))
                .expect("queued")
        })
        .collect();
    sim.run_for(ms(10));
    sim.crash(alice, false);
    sim.clients[alice].hold_attempts = false;
    sim.run_for(ms(50));
    assert!(numbers(&sim, bob).is_empty(), "nothing was sent");
    let before = sim.clients[alice].events.len();
    sim.restart(alice, 3).expect("the journal reads");
    sim.run_until(1000, |s| numbers(s, bob).len() == 5);
    sim.run_for(ms(100));
    assert_eq!(numbers(&sim, bob), [1, 2, 3, 4, 5]);
    let after = &sim.clients[alice].events[before..];
    let Some((_, Event::Restored(restored))) = after.first() else {
        panic!("the restored client's first event says what it restored: {after:?}");
    };
    assert_eq!(
        restored.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids,
        "with their ids"
    );
    assert_eq!(restored[0].payload.as_deref(), Some("1"));
    assert_eq!(restored[0].to.as_deref(), Some("bob"));
    for id in ids {
        assert!(
            after
                .iter()
                .any(|(_, event)| *event == Event::Delivered { id }),
            "message {id}'s outcome is reported by the new process"
        );
    }
    // Sent after the restart: after the restored ones.
    sim.with_client(alice, |core, now| core.send(now, to("bob", "6")))
        .expect("queued");
    sim.run_until(1000, |s| numbers(s, bob).len() == 6);
    assert_eq!(numbers(&sim, bob), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn nothing_is_transmitted_or_acknowledged_before_it_is_stored() {
    let mut core = ClientCore::restore(Options::default(), 1, Instant::from_millis(0), 0, "")
        .expect("an empty journal");
    let drain =
        |core: &mut ClientCore| std::iter::from_fn(|| core.poll_output()).collect::<Vec<_>>();
    let outputs = drain(&mut core);
    assert!(matches!(outputs.first(), Some(Output::Event(Event::Restored(m))) if m.is_empty()));
    let Some(Output::Save(first)) = outputs.last() else {
        panic!("a new journal is written at once: {outputs:?}");
    };
    assert!(first.rewrite, "the first batch replaces whatever was there");
    assert!(first.text.starts_with("{\"session\":"));
    let id = core
        .send(Instant::from_millis(1), to("bob", "1"))
        .expect("queued");
    let outputs = drain(&mut core);
    let Some(Output::Save(save)) = outputs.last() else {
        panic!("the message is journaled: {outputs:?}");
    };
    assert!(save.text.contains("\"q\":1"), "{}", save.text);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Transmit(_))));
    core.handle_saved(Instant::from_millis(2), save.mark);
    // Not open yet: nothing to transmit, and nothing left to write.
    assert!(
        drain(&mut core).is_empty(),
        "message {id} waits for the connection"
    );
}

/// One run of the fault test: alice sends numbered messages to bob; both persist; links are
/// cut, processes killed (some mid-write) and restarted, at random.
fn crash_run(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut sim = Sim::new();
    let alice = sim.add_persistent_client("alice", Options::default(), seed);
    // Half the runs: bob's handler awaits something for a few milliseconds, longer than he
    // waits to acknowledge or to reconnect (what he received is then not handled yet: it must
    // not be acknowledged, nor handed over again when the server resends it on resume).
    let asynchronous = seed % 2 == 0;
    let bob_options = if asynchronous {
        Options {
            ack_delay: ms(2),
            min_reconnection_delay: ms(1),
            max_reconnection_delay: ms(4),
            ..Options::default()
        }
    } else {
        Options::default()
    };
    let bob = sim.add_persistent_client("bob", bob_options, seed + 1);
    if asynchronous {
        sim.clients[bob].handler_delay = Some(ms(20 + 5 * (seed % 9)));
    }
    sim.run_until(100, |s| is_open(s, alice) && is_open(s, bob));
    // Messages alice's application sent, by the process (restart count) that sent them.
    let mut sent: Vec<(u64, usize, u64)> = Vec::new();
    let mut restarts = [0usize; 2];
    // Where bob's events stood at each of his crashes.
    let mut bob_crashes = Vec::new();
    let mut n = 0;
    for _ in 0..300 {
        match next(20) {
            0 => {
                let torn = next(2) == 0;
                sim.crash(alice, torn);
                sim.run_for(ms(next(30)));
                restarts[0] += 1;
                sim.restart(alice, seed + 10 + restarts[0] as u64)
                    .expect("alice's journal reads");
            }
            1 => {
                let torn = next(2) == 0;
                bob_crashes.push(sim.clients[bob].finished.len());
                sim.crash(bob, torn);
                sim.run_for(ms(next(30)));
                restarts[1] += 1;
                sim.restart(bob, seed + 100 + restarts[1] as u64)
                    .expect("bob's journal reads");
            }
            2 => sim.cut(alice),
            3 => sim.cut(bob),
            _ => {
                n += 1;
                let result =
                    sim.with_client(alice, |core, now| core.send(now, to("bob", &n.to_string())));
                if let Ok(id) = result {
                    sent.push((n, restarts[0], id));
                }
            }
        }
        sim.run_for(ms(next(8)));
    }
    sim.run_for(Duration::from_secs(30));
    let got: Vec<u64> = sim.clients[bob]
        .finished
        .iter()
        .filter_map(|payload| payload.as_deref()?.parse().ok())
        .collect();
    // In order per sender, and nothing twice, except what a killed bob had handled after his
    // journal's last stored batch: handled again by the next process.
    let mut last = 0;
    // Each number bob's handler finished with, and where (its place in `finished`).
    let mut seen = std::collections::BTreeMap::new();
    for (index, payload) in sim.clients[bob].finished.iter().enumerate() {
        let Some(number) = payload.as_deref().and_then(|p| p.parse::<u64>().ok()) else {
            continue;
        };
        match seen.insert(number, index) {
            Some(first) => assert!(
                bob_crashes
                    .iter()
                    .any(|&crash| first < crash && crash <= index),
                "seed {seed}: message {number} handled twice by one process: {got:?}"
            ),
            None => {
                assert!(number > last, "seed {seed}: {number} after {last}: {got:?}");
                last = number;
            }
        }
    }
    // Every message whose sender process lived to store it reached bob: everything sent
    // by a process that was not killed afterwards, and everything restored.
    let restored: std::collections::BTreeSet<u64> = sim.clients[alice]
        .events
        .iter()
        .filter_map(|(_, event)| match event {
            Event::Restored(messages) => Some(
                messages
                    .iter()
                    .filter_map(|m| m.payload.as_deref()?.parse().ok()),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    for &(number, process, _) in &sent {
        if process == restarts[0] || restored.contains(&number) {
            assert!(
                seen.contains_key(&number),
                "seed {seed}: message {number} never arrived (sent by process {process} of {}): {got:?}",
                restarts[0]
            );
        }
    }
    assert!(seen.len() > sent.len() / 2, "seed {seed}: most arrive");
    // And its sender learned each one's outcome.
    for &(number, process, id) in &sent {
        if process == restarts[0] {
            let settled = sim.clients[alice].saw(|event| {
                matches!(event, Event::Delivered { id: settled } | Event::Failed { id: settled, .. } if *settled == id)
            });
            assert!(
                settled,
                "seed {seed}: message {number} (id {id}) has no outcome"
            );
        }
    }
}

#[test]
fn crashes_cuts_and_torn_writes_lose_nothing_stored_and_repeat_nothing_handled() {
    for seed in 1..=40 {
        crash_run(seed);
    }
}
