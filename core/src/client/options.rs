//! Every setting of the client, with reconnecting-websocket's names and defaults where it has one.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::Error;
use crate::protocol::{CLOSE_FORBIDDEN, CLOSE_REPLACED, CLOSE_UNAUTHORIZED};

/// Settings of a [`ClientCore`](super::ClientCore).
///
/// The reconnection options mean what they mean in the JavaScript `reconnecting-websocket`
/// (`minReconnectionDelay` is `min_reconnection_delay`, and so on), with the same defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Delay before the first reconnect attempt. Default 1 s.
    pub min_reconnection_delay: Duration,
    /// Cap on the delay between attempts. Default 10 s.
    pub max_reconnection_delay: Duration,
    /// Each further attempt waits this many times longer. Default 1.3.
    pub reconnection_delay_grow_factor: f64,
    /// Fraction of randomness drawn afresh for every attempt (0 disables it), so that clients
    /// dropped together do not return together. Default 0.3.
    pub reconnection_jitter: f64,
    /// A connection must stay open this long before the retry count resets, so a server that
    /// accepts and then drops at once does not reset the backoff. Default 5 s.
    pub min_uptime: Duration,
    /// How long an attempt may take, from starting to connect to the server's welcome. Default 4 s.
    pub connection_timeout: Duration,
    /// Give up after this many failed reconnect attempts in a row. Default `None`: never.
    pub max_retries: Option<u32>,
    /// Do not connect until [`reconnect`](super::ClientCore::reconnect) is called. Default false.
    pub start_closed: bool,
    /// Most messages kept waiting for acknowledgement (queued or in flight). Default 10 000.
    pub max_enqueued_messages: usize,
    /// Most bytes of encoded frames kept waiting for acknowledgement. Default 16 MiB.
    pub max_enqueued_bytes: usize,
    /// Largest encoded frame the client sends (the server's default limit). Default 1 MiB.
    pub max_message_size: usize,
    /// An application ping is sent this often while open. Default 25 s (Socket.IO's
    /// `pingInterval`): within the server's 30 s check, so a client that pings is never pinged.
    pub heartbeat_interval: Duration,
    /// The connection is declared dead after this long without any frame. Default 45 s
    /// (Socket.IO's `pingInterval` + `pingTimeout`).
    pub heartbeat_timeout: Duration,
    /// Timeout of a request that names none. Default 30 s.
    pub request_timeout: Duration,
    /// Received frames are acknowledged at most this long after arrival. Default 1 s: one
    /// acknowledgement covers every frame of that span, and at a few frames a second the
    /// acknowledgements are most of what a receiving client writes (a browser pays a socket
    /// send and a timer for each). Nothing waits for it: a reconnecting client's hello says
    /// exactly what it received, and the two triggers below ack at once before the server's
    /// windows fill; the delay only bounds how long the server keeps what was delivered.
    pub ack_delay: Duration,
    /// ...or at once when this many are unacknowledged. Default 128: frames arriving faster
    /// than 128 a second are acknowledged one in 128 rather than every second.
    pub ack_every: u64,
    /// ...or at once when the reliable frames unacknowledged reach this many bytes (0: every
    /// frame at once). Default 64 KiB, well under the server's backlog window (1 MiB by
    /// default), past which its senders wait for this client's acknowledgement.
    pub ack_bytes: usize,
    /// How long a graceful close waits for the server to acknowledge what is in flight. Default 5 s.
    pub close_timeout: Duration,
    /// Close codes after which the client stops reconnecting and reports the code: protocol
    /// error, policy violation, authentication failed, forbidden, replaced by another connection.
    pub stop_codes: Vec<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_reconnection_delay: Duration::from_millis(1000),
            max_reconnection_delay: Duration::from_millis(10_000),
            reconnection_delay_grow_factor: 1.3,
            reconnection_jitter: 0.3,
            min_uptime: Duration::from_millis(5000),
            connection_timeout: Duration::from_millis(4000),
            max_retries: None,
            start_closed: false,
            max_enqueued_messages: 10_000,
            max_enqueued_bytes: 16 << 20,
            max_message_size: 1 << 20,
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(45),
            request_timeout: Duration::from_secs(30),
            ack_delay: Duration::from_millis(1000),
            ack_every: 128,
            ack_bytes: 64 << 10,
            close_timeout: Duration::from_secs(5),
            stop_codes: vec![
                1002,
                1008,
                CLOSE_UNAUTHORIZED,
                CLOSE_FORBIDDEN,
                CLOSE_REPLACED,
            ],
        }
    }
}

/// A value for [`Options::set`], as a dynamically typed caller (JavaScript, a JSON test
/// scenario) has it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionValue<'a> {
    /// A number: milliseconds for durations, a count, or a factor.
    Number(f64),
    /// A flag.
    Bool(bool),
    /// A list of numbers (`stopCodes`).
    Numbers(&'a [f64]),
}

impl Options {
    /// The name of every option, as [`set`](Self::set) takes it: reconnecting-websocket's
    /// camelCase names, which the JavaScript options object uses too. One table, so that no
    /// driver can miss an option.
    pub const NAMES: [&'static str; 19] = [
        "minReconnectionDelay",
        "maxReconnectionDelay",
        "reconnectionDelayGrowFactor",
        "reconnectionJitter",
        "minUptime",
        "connectionTimeout",
        "maxRetries",
        "startClosed",
        "maxEnqueuedMessages",
        "maxEnqueuedBytes",
        "maxMessageSize",
        "heartbeatInterval",
        "heartbeatTimeout",
        "requestTimeout",
        "ackDelay",
        "ackEvery",
        "closeTimeout",
        "stopCodes",
        "ackBytes",
    ];

    /// Sets the option `name` (one of [`NAMES`](Self::NAMES)) from a dynamically typed value.
    /// Durations are milliseconds (at least 0), counts whole numbers (at least 0), `maxRetries`
    /// a count or `Infinity` (never give up), `stopCodes` close codes 1000 to 4999.
    ///
    /// Fails with [`Error::InvalidOption`] naming the option when the name is unknown or the
    /// value has the wrong type or range. Ranges that involve several options are checked by
    /// [`validate`](Self::validate).
    pub fn set(&mut self, name: &str, value: OptionValue<'_>) -> Result<(), Error> {
        // By position in `NAMES`, not by matching on the strings, and with each value
        // converted once: this is compiled into the browser package, where size counts.
        let index = Self::NAMES.iter().position(|known| *known == name);
        let index = index.ok_or_else(|| invalid_option(name, "is not an option"))?;
        let invalid = || invalid_option(name, "has the wrong type or range");
        match value {
            OptionValue::Bool(flag) if index == 7 => self.start_closed = flag,
            OptionValue::Numbers(codes) if index == 17 => {
                let mut stop_codes = Vec::new();
                for &code in codes {
                    if !(1000.0..=4999.0).contains(&code) || code != f64::from(code as u16) {
                        return Err(invalid());
                    }
                    stop_codes.push(code as u16);
                }
                self.stop_codes = stop_codes;
            }
            OptionValue::Number(n) if n >= 0.0 && !matches!(index, 7 | 17) => {
                let whole = is_whole(n);
                // Saturating: a count beyond the type is as good as unbounded.
                let millis = Duration::from_millis(n as u64);
                match index {
                    2 => self.reconnection_delay_grow_factor = n,
                    3 => self.reconnection_jitter = n,
                    6 if n.is_infinite() => self.max_retries = None,
                    _ if !whole => {
                        // Durations may have a fraction of a millisecond; counts may not.
                        if !n.is_finite() || matches!(index, 6 | 8 | 9 | 10 | 15 | 18) {
                            return Err(invalid());
                        }
                        self.set_millis(index, millis);
                    }
                    6 => self.max_retries = Some(n as u32),
                    8 => self.max_enqueued_messages = n as usize,
                    9 => self.max_enqueued_bytes = n as usize,
                    10 => self.max_message_size = n as usize,
                    15 => self.ack_every = n as u64,
                    18 => self.ack_bytes = n as usize,
                    _ => self.set_millis(index, millis),
                }
            }
            _ => return Err(invalid()),
        }
        Ok(())
    }

    /// The duration option at `index` of `NAMES`.
    fn set_millis(&mut self, index: usize, millis: Duration) {
        let slot = match index {
            0 => &mut self.min_reconnection_delay,
            1 => &mut self.max_reconnection_delay,
            4 => &mut self.min_uptime,
            5 => &mut self.connection_timeout,
            11 => &mut self.heartbeat_interval,
            12 => &mut self.heartbeat_timeout,
            13 => &mut self.request_timeout,
            14 => &mut self.ack_delay,
            _ => &mut self.close_timeout,
        };
        *slot = millis;
    }

    /// Checks what no single setter can: every driver calls it before building a client, so
    /// both refuse the same settings with the same error ([`Error::InvalidOption`]).
    pub fn validate(&self) -> Result<(), Error> {
        let factor = self.reconnection_delay_grow_factor;
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(invalid_option(
                "reconnectionDelayGrowFactor",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.reconnection_jitter) {
            return Err(invalid_option("reconnectionJitter", "must be 0 to 1"));
        }
        if self.min_reconnection_delay > self.max_reconnection_delay {
            return Err(invalid_option(
                "minReconnectionDelay",
                "must not exceed maxReconnectionDelay",
            ));
        }
        if self.ack_every == 0 {
            return Err(invalid_option("ackEvery", "must be at least 1"));
        }
        if self.max_message_size == 0 {
            return Err(invalid_option("maxMessageSize", "must be at least 1"));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout.is_zero() {
            return Err(invalid_option(
                "heartbeatInterval",
                "and heartbeatTimeout must be above 0",
            ));
        }
        Ok(())
    }
}

/// `invalid option NAME WHY`, built without the formatting machinery (kilobytes of wasm).
/// `n.fract() == 0.0` without std's `f64::fract` (the core builds without std for the
/// browser): finite, and either beyond 2^52, where every `f64` is whole, or equal to its
/// truncation.
fn is_whole(n: f64) -> bool {
    n.is_finite() && (n.abs() >= 4_503_599_627_370_496.0 || n == n as i64 as f64)
}

fn invalid_option(name: &str, why: &str) -> Error {
    let mut message = String::from("invalid option ");
    message.push_str(name);
    message.push(' ');
    message.push_str(why);
    Error::InvalidOption(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_as_std_fract_says() {
        for n in [
            0.0,
            -0.0,
            1.0,
            1.5,
            -2.5,
            1e15 + 0.5,
            4_503_599_627_370_496.0,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(is_whole(n), n.fract() == 0.0, "{n}");
        }
    }

    #[test]
    fn every_name_sets_its_option() {
        let mut options = Options::default();
        for name in Options::NAMES {
            let value = match name {
                "startClosed" => OptionValue::Bool(true),
                "stopCodes" => OptionValue::Numbers(&[4000.0, 1008.0]),
                "reconnectionJitter" => OptionValue::Number(0.5),
                _ => OptionValue::Number(7.0),
            };
            options.set(name, value).expect(name);
        }
        assert_ne!(options, Options::default());
        assert_eq!(options.ack_delay, Duration::from_millis(7));
        assert_eq!(options.ack_every, 7);
        assert_eq!(options.ack_bytes, 7);
        assert_eq!(options.max_retries, Some(7));
        assert_eq!(options.stop_codes, [4000, 1008]);
        assert!(options.start_closed);
        options
            .set("maxRetries", OptionValue::Number(f64::INFINITY))
            .expect("Infinity: never give up");
        assert_eq!(options.max_retries, None);
    }

    #[test]
    fn wrong_values_name_the_option() {
        let mut options = Options::default();
        for (name, value) in [
            ("minUptime", OptionValue::Number(-1.0)),
            ("minUptime", OptionValue::Number(f64::NAN)),
            ("minUptime", OptionValue::Bool(true)),
            ("ackEvery", OptionValue::Number(1.5)),
            ("ackBytes", OptionValue::Number(0.5)),
            ("ackBytes", OptionValue::Number(f64::INFINITY)),
            ("startClosed", OptionValue::Number(1.0)),
            ("stopCodes", OptionValue::Numbers(&[999.0])),
            ("stopCodes", OptionValue::Number(4000.0)),
            ("noSuchOption", OptionValue::Number(1.0)),
        ] {
            let error = options.set(name, value).expect_err(name);
            assert_eq!(error.code(), "invalid_option");
            assert!(error.to_string().contains(name), "{error}");
        }
        assert_eq!(options, Options::default(), "nothing was changed");
        assert_eq!(options.validate(), Ok(()));
        options.reconnection_jitter = 2.0;
        assert_eq!(
            options.validate().map_err(|e| e.code().to_owned()),
            Err("invalid_option".into())
        );
    }
}
