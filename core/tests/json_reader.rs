//! The envelope's JSON reader agrees with serde_json: on every value serde_json writes, and on
//! whether arbitrary near-JSON text is accepted at all.

// proptest (and serde_json) are native-only dev-dependencies.
#![cfg(not(target_arch = "wasm32"))]

use proptest::prelude::*;
use serde_json::Value;
use wsrelay_core::protocol::json::{self, MAX_DEPTH};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Whether serde_json accepts `text` as one JSON value, at the reader's depth limit.
fn serde_accepts(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Text close to JSON: a valid document with a few characters inserted, removed or replaced.
fn near_json() -> impl Strategy<Value = String> {
    let alphabet = prop_oneof![
        Just('{'),
        Just('}'),
        Just('['),
        Just(']'),
        Just('"'),
        Just(':'),
        Just(','),
        Just('\\'),
        Just('-'),
        Just('.'),
        Just('e'),
        Just('0'),
        Just('7'),
        Just(' '),
        Just('u'),
        Just('\u{1}'),
        Just('t'),
        Just('n'),
        any::<char>(),
    ];
    (
        json_value(),
        proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, alphabet), 0..4),
    )
        .prop_map(|(value, edits)| {
            let mut chars: Vec<char> = value.to_string().chars().collect();
            for (at, op, c) in edits {
                let i = at.index(chars.len() + 1);
                match op {
                    0 => chars.insert(i, c),
                    1 if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ if i < chars.len() => chars[i] = c,
                    _ => chars.push(c),
                }
            }
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn accepts_everything_serde_json_writes(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).expect("serializable")
        } else {
            value.to_string()
        };
        let raw = json::validate(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        // Compare with serde_json's reading of the same text (its float parsing is not exact,
        // so `value` itself may differ in the last digit).
        let value: Value = serde_json::from_str(&text).expect("serde_json reads its own output");
        prop_assert_eq!(serde_json::from_str::<Value>(raw.text()).ok(), Some(value.clone()));
        if let Value::Object(map) = &value {
            let members = json::object_members(&text).expect("valid").expect("an object");
            prop_assert_eq!(members.len(), map.len());
            for (name, raw) in members {
                let expected = map.get(&*name).expect("same names");
                prop_assert_eq!(&serde_json::from_str::<Value>(raw.text()).expect("raw slice is JSON"), expected);
            }
        }
        if let Value::String(s) = &value {
            prop_assert_eq!(raw.as_str().map(|c| c.into_owned()), Some(s.clone()));
        }
    }

    #[test]
    fn accepts_what_serde_json_accepts(text in near_json()) {
        prop_assert_eq!(json::validate(&text).is_ok(), serde_accepts(&text), "{:?}", text);
    }

    #[test]
    fn written_strings_read_back(text in any::<String>()) {
        let mut out = String::new();
        json::write_string(&mut out, &text);
        prop_assert_eq!(serde_json::from_str::<String>(&out).ok(), Some(text.clone()));
        let read_back = json::validate(&out).expect("valid").as_str().map(|c| c.into_owned());
        prop_assert_eq!(read_back, Some(text));
    }
}

#[test]
fn depth_limit_is_below_serde_jsons() {
    let at_limit = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert!(json::validate(&at_limit).is_ok() && serde_accepts(&at_limit));
}
