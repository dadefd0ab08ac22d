//! `cargo xtask fuzz [CASES]`: runs the fuzz targets of `wsrelay-fuzz` for CASES cases in all
//! (default 12 million, a quarter each), on inputs that are random bytes or mutations of the
//! targets' corpora, and checks after every case that it allocated a bounded amount (at most
//! 64 times its input plus 4 MiB). A panic or an allocation past the bound prints the input
//! (hex) and exits with 1. Deterministic: the seed is the second argument (default 1).

use std::alloc::System;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use wsrelay_fuzz::{connection, decode, upgrade, websocket, CORPUS, FRAMES, REQUESTS};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// xorshift64*: fast, reproducible, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// An input: random bytes, or a seed from `corpus` mutated a few times.
fn input(rng: &mut Rng, corpus: &[&str], out: &mut Vec<u8>) {
    out.clear();
    if rng.below(4) == 0 {
        let len = rng.below(512);
        out.extend((0..len).map(|_| rng.next() as u8));
        return;
    }
    out.extend_from_slice(corpus[rng.below(corpus.len())].as_bytes());
    for _ in 0..rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] = rng.next() as u8,
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => {
                // A piece again: duplicate fields, deeper nesting.
                let end = (at + rng.below(32)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => {
                let token = [
                    &b"{"[..],
                    b"}",
                    b"[",
                    b"]",
                    b"\"",
                    b"\\u0000",
                    b",",
                    b"%FF",
                    b"\r\n",
                ];
                let token = token[rng.below(token.len())];
                out.splice(at..at, token.iter().copied());
            }
            _ => out.truncate(at),
        }
    }
}

/// An input for the WebSocket target: a piece-size byte, then valid frames, mutated.
fn frames(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    out.push(rng.next() as u8);
    for _ in 0..1 + rng.below(4) {
        out.extend_from_slice(FRAMES[rng.below(FRAMES.len())]);
    }
    for _ in 0..rng.below(4) {
        let at = 1 + rng.below(out.len() - 1);
        match rng.below(3) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out.insert(at, rng.next() as u8),
            _ => {
                out.remove(at);
            }
        }
        if out.len() < 2 {
            break;
        }
    }
}

/// A program for the connection target: a few mutated frames' worth of random op bytes.
fn program(rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    let len = 8 + rng.below(256);
    out.extend((0..len).map(|_| rng.next() as u8));
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let cases: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12_000_000);
    let seed: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut data = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut counts = [0u64; 4];
    let mut most = [0usize; 4];
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..cases {
        let target = (case % 4) as usize;
        match target {
            0 => input(&mut rng, CORPUS, &mut data),
            1 => program(&mut rng, &mut data),
            2 => input(&mut rng, REQUESTS, &mut data),
            _ => frames(&mut rng, &mut data),
        }
        let before = ALLOCATOR.stats().bytes_allocated;
        let outcome = std::panic::catch_unwind(|| match target {
            0 => decode(&data),
            1 => connection(&data),
            2 => upgrade(&data),
            _ => websocket(&data),
        });
        let allocated = ALLOCATOR.stats().bytes_allocated - before;
        let name = ["decode", "connection", "upgrade", "websocket"][target];
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            eprintln!(
                "{name}: panicked on case {case}: {message}\ninput: {}",
                hex(&data)
            );
            return ExitCode::FAILURE;
        }
        let bound = 64 * data.len() + (4 << 20);
        if allocated > bound {
            eprintln!(
                "{name}: case {case} allocated {allocated} B for {} B of input\ninput: {}",
                data.len(),
                hex(&data)
            );
            return ExitCode::FAILURE;
        }
        counts[target] += 1;
        most[target] = most[target].max(allocated);
        if case % 1_000_000 == 999_999 {
            print!(".");
            let _ = std::io::stdout().flush();
        }
    }
    println!(
        "\nfuzz: {cases} cases in {:.0} s, no panic, allocations bounded \
         (decode {} cases, most {} B; connection {} cases, most {} B; upgrade {} cases, most {} B; \
         websocket {} cases, most {} B)",
        started.elapsed().as_secs_f64(),
        counts[0],
        most[0],
        counts[1],
        most[1],
        counts[2],
        most[2],
        counts[3],
        most[3]
    );
    ExitCode::SUCCESS
}
