//! What the scripts answer, named. Each script's header comment lists its codes; these types
//! are the one place Rust reads them, and a code a script does not list is an error, never
//! taken for another outcome.

use redis::Value;

use super::{ints, EngineError};

/// The status the scripts on one mailbox share (`route_one`, `broadcast`, `commit`, `fetch`,
/// `settle`): the first number of their answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// 0: done (appended, consumed, read, settled).
    Done,
    /// 1: done before (the same sender and id): nothing done.
    Duplicate,
    /// 2: nobody with that source is connected or within its grace period.
    UnknownTarget,
    /// 3: the recipient is connected and over the window: nothing done.
    Blocked,
    /// 4: the recipient's mailbox is at its hard bound.
    Overflow,
    /// 5: the claim is stale: another connection holds the source.
    Fenced,
    /// 6: the source's state is gone.
    Gone,
}

impl Status {
    /// The status of `script`'s answer `value`.
    pub(super) fn of(script: &str, value: &Value) -> Result<Status, EngineError> {
        Ok(match first(value) {
            Some(0) => Status::Done,
            Some(1) => Status::Duplicate,
            Some(2) => Status::UnknownTarget,
            Some(3) => Status::Blocked,
            Some(4) => Status::Overflow,
            Some(5) => Status::Fenced,
            Some(6) => Status::Gone,
            other => return Err(unknown(script, other)),
        })
    }
}

/// What `claim.lua` answers first: the claim's epoch, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claimed {
    /// The source is claimed with this epoch (positive).
    Epoch(u64),
    /// -1: another client instance holds the source and duplicates are refused.
    Occupied,
    /// -2: a newer attempt of the same client instance holds the source.
    Stale,
}

impl Claimed {
    pub(super) fn of(value: &Value) -> Result<Claimed, EngineError> {
        Ok(match first(value) {
            Some(-1) => Claimed::Occupied,
            Some(-2) => Claimed::Stale,
            Some(epoch) if epoch > 0 => Claimed::Epoch(epoch.unsigned_abs()),
            other => return Err(unknown("claim", other)),
        })
    }
}

/// What `open.lua` answers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// 0 or 1: opened (1: the session was resumed); the session's numbers follow.
    Opened,
    /// -1: the claim is stale.
    Fenced,
    /// -2: the source's state is gone.
    Gone,
}

impl Open {
    pub(super) fn of(value: &Value) -> Result<Open, EngineError> {
        Ok(match first(value) {
            Some(0 | 1) => Open::Opened,
            Some(-1) => Open::Fenced,
            Some(-2) => Open::Gone,
            other => return Err(unknown("open", other)),
        })
    }
}

/// What `renew.lua` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Renewal {
    /// 1: the lease is extended.
    Renewed,
    /// 2: extended, but it had lapsed: appends meanwhile were taken for a source without a
    /// connection, and announced to nobody.
    Lapsed,
    /// 0: the claim is stale, or the source's state is gone.
    Stale,
}

impl Renewal {
    pub(super) fn of(value: &Value) -> Result<Renewal, EngineError> {
        Ok(match first(value) {
            Some(1) => Renewal::Renewed,
            Some(2) => Renewal::Lapsed,
            Some(0) => Renewal::Stale,
            other => return Err(unknown("renew", other)),
        })
    }
}

/// Whether `release.lua` released the source (1), or found the claim stale (0).
pub(super) fn released(value: &Value) -> Result<bool, EngineError> {
    match first(value) {
        Some(1) => Ok(true),
        Some(0) => Ok(false),
        other => Err(unknown("release", other)),
    }
}

fn first(value: &Value) -> Option<i64> {
    ints(value).first().copied()
}

fn unknown(script: &str, code: Option<i64>) -> EngineError {
    match code {
        Some(code) => EngineError(format!(
            "{script}.lua answered {code}, a code it does not list"
        )),
        None => EngineError(format!("{script}.lua gave no status")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(codes: &[i64]) -> Value {
        Value::Array(codes.iter().map(|&code| Value::Int(code)).collect())
    }

    #[test]
    fn every_listed_code_is_named_and_any_other_is_an_error() {
        let named: Vec<_> = (0..=6)
            .map(|code| Status::of("t", &answer(&[code, 0])))
            .collect();
        assert!(named.iter().all(Result::is_ok), "{named:?}");
        assert_eq!(named[5], Ok(Status::Fenced), "5 is fenced, never overflow");
        for bad in [answer(&[7]), answer(&[-1]), answer(&[]), Value::Nil] {
            assert!(Status::of("t", &bad).is_err(), "{bad:?}");
        }
        assert_eq!(Claimed::of(&answer(&[3, 1])), Ok(Claimed::Epoch(3)));
        assert_eq!(Claimed::of(&answer(&[-2])), Ok(Claimed::Stale));
        assert!(Claimed::of(&answer(&[0])).is_err(), "epochs start at 1");
        assert_eq!(Open::of(&answer(&[1, 0, 0, 1])), Ok(Open::Opened));
        assert_eq!(Open::of(&answer(&[-1])), Ok(Open::Fenced));
        assert!(Open::of(&answer(&[2])).is_err());
        assert_eq!(Renewal::of(&Value::Int(2)), Ok(Renewal::Lapsed));
        assert!(Renewal::of(&Value::Int(3)).is_err());
        assert_eq!(released(&Value::Int(0)), Ok(false));
        assert!(released(&Value::Int(5)).is_err());
    }
}
