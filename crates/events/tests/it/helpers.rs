//! Small utilities shared by the integration tests.

use events::{ContractError, ContractErrorKind, Envelope, EventType, decode, encode, examples};
use serde_json::Value;

/// The canonical JSON of the example of `event_type`, as a mutable value.
pub fn example_json(event_type: EventType) -> Value {
    serde_json::from_slice(&encode(&examples::example(event_type)).unwrap()).unwrap()
}

/// Decodes a JSON value.
pub fn decode_value(value: &Value) -> Result<Envelope, ContractError> {
    decode(value.to_string().as_bytes())
}

/// Asserts that `value` is refused with `kind` at `path`.
#[track_caller]
pub fn assert_rejected(value: &Value, kind: ContractErrorKind, path: &str) {
    let err = decode_value(value).expect_err("must be rejected");
    assert_eq!((err.kind(), err.path()), (kind, path), "{err}");
}

/// A JSON number with exactly these digits (serde_json's arbitrary precision keeps them).
pub fn number(digits: &str) -> Value {
    serde_json::from_str(digits).unwrap()
}

/// Whether two JSON documents say the same thing, reading decimal strings and numbers as equal when they are
/// the same decimal, and ids with and without their prefix as equal.
pub fn equivalent(a: &Value, b: &Value) -> bool {
    use std::str::FromStr;
    let decimal = |v: &Value| -> Option<rust_decimal::Decimal> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return None,
        };
        rust_decimal::Decimal::from_str(&text).ok()
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equivalent(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| equivalent(v, w))
        }
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            decimal(a).is_some() && decimal(a) == decimal(b)
        }
        _ => a == b,
    }
}
