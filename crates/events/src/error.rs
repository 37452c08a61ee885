//! The one error family of the contract.
//!
//! Guarantees: every way an event can break the contract — bytes that are not JSON, a missing or unknown
//! field, a wrong type, an unknown event type or version, a wrong id prefix, a bad amount, a violated payload
//! invariant, an oversized message — is reported as a [`ContractError`] that names the offending field by its
//! JSON path (`$.event_data.total_amount`, `$.event_data.payment_ids[3]`, `$` for the document itself).
//!
//! Serde only lets custom `Deserialize` impls report a message, so the impls in this crate start their
//! message with the kind's [`ContractErrorKind::as_str`] token (`too_many_decimals: …`); [`from_serde`] reads
//! the token back, and recognises serde's own fixed phrases (`missing field`, `invalid type`, …) for the rest.

use std::fmt;

/// A violation of the event contract.
///
/// **Every `ContractError` is permanent.** The same bytes will fail the same way on every retry, so the
/// consumer runtime classifies the whole family as a *schema error*: no retry, straight to the dead-letter
/// topic, with [`ContractError::path`] and [`ContractError::kind`] recorded in the DLQ headers. There is no
/// retriable variant on purpose; anything transient (I/O, broker, database) lives in other crates' errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}: {message}")]
pub struct ContractError {
    kind: ContractErrorKind,
    path: String,
    message: String,
}

/// What kind of contract violation a [`ContractError`] is. Useful for metrics labels and for tests; the
/// handling is the same for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ContractErrorKind {
    /// Not JSON at all, truncated JSON, or trailing bytes after the document.
    MalformedJson,
    /// A required field is absent.
    MissingField,
    /// A field that the contract does not know; fields are never silently dropped.
    UnknownField,
    /// The same field appears twice in one object.
    DuplicateField,
    /// A field has the wrong JSON type (a string where a number is expected, …).
    WrongType,
    /// A field has the right type but a value outside its domain (an unknown enum variant, a malformed hash, …).
    InvalidValue,
    /// `event_type` is not one of the contract's event types.
    UnknownEventType,
    /// `event_version` is not a version this build can decode: zero, newer than current, or retired.
    UnknownVersion,
    /// `aggregate_type` does not belong to `event_type`, or the aggregate id is of another aggregate.
    AggregateMismatch,
    /// An id carries the prefix of another kind of id (`mer_…` where an invoice id is expected).
    WrongIdPrefix,
    /// An id is not a UUID, or is the nil UUID.
    InvalidId,
    /// A money amount or percentage below zero.
    NegativeAmount,
    /// More decimal places than the currency or asset has.
    TooManyDecimals,
    /// A currency or asset code that is not in the tables of [`crate::money`].
    UnknownCurrency,
    /// A timestamp that is not RFC 3339, or not in UTC.
    InvalidTimestamp,
    /// A payload invariant does not hold (fee + net ≠ gross, confirmations below the requirement, …).
    InvariantViolated,
    /// The encoded event is larger than [`crate::MAX_EVENT_BYTES`].
    TooLarge,
}

impl ContractErrorKind {
    /// Every kind, for tests and for the CLI's help.
    pub const ALL: [ContractErrorKind; 17] = [
        Self::MalformedJson,
        Self::MissingField,
        Self::UnknownField,
        Self::DuplicateField,
        Self::WrongType,
        Self::InvalidValue,
        Self::UnknownEventType,
        Self::UnknownVersion,
        Self::AggregateMismatch,
        Self::WrongIdPrefix,
        Self::InvalidId,
        Self::NegativeAmount,
        Self::TooManyDecimals,
        Self::UnknownCurrency,
        Self::InvalidTimestamp,
        Self::InvariantViolated,
        Self::TooLarge,
    ];

    /// Stable snake_case name, suitable for a metrics label or a DLQ header.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MissingField => "missing_field",
            Self::UnknownField => "unknown_field",
            Self::DuplicateField => "duplicate_field",
            Self::WrongType => "wrong_type",
            Self::InvalidValue => "invalid_value",
            Self::UnknownEventType => "unknown_event_type",
            Self::UnknownVersion => "unknown_version",
            Self::AggregateMismatch => "aggregate_mismatch",
            Self::WrongIdPrefix => "wrong_id_prefix",
            Self::InvalidId => "invalid_id",
            Self::NegativeAmount => "negative_amount",
            Self::TooManyDecimals => "too_many_decimals",
            Self::UnknownCurrency => "unknown_currency",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvariantViolated => "invariant_violated",
            Self::TooLarge => "too_large",
        }
    }

    fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == token)
    }
}

impl fmt::Display for ContractErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ContractError {
    /// An error of `kind` at JSON path `path` (`$`-rooted, e.g. `$.event_data.net_amount`).
    pub fn new(
        kind: ContractErrorKind,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error whose path is relative to an object that the caller will place with [`Self::within`].
    pub(crate) fn at(kind: ContractErrorKind, relative: &str, message: impl Into<String>) -> Self {
        Self::new(kind, join("$", relative), message)
    }

    /// The kind of violation.
    pub fn kind(&self) -> ContractErrorKind {
        self.kind
    }

    /// JSON path of the offending field; `$` when the document as a whole is at fault.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Human-readable detail, without the path and kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Re-roots a path computed inside a nested object: `$.net_amount` within `$.event_data` becomes
    /// `$.event_data.net_amount`.
    pub(crate) fn within(mut self, parent: &str) -> Self {
        let rest = self.path.strip_prefix('$').unwrap_or(&self.path);
        self.path = format!("{parent}{rest}");
        self
    }
}

/// Appends a relative path (`net_amount`, `changes.old`, `[2]`) to a `$`-rooted one.
fn join(parent: &str, relative: &str) -> String {
    if relative.is_empty() {
        parent.to_owned()
    } else if relative.starts_with('[') {
        format!("{parent}{relative}")
    } else {
        format!("{parent}.{relative}")
    }
}

/// Builds the message a custom `Deserialize` impl reports, so that [`from_serde`] recovers `kind`.
pub(crate) fn de_error<E: serde::de::Error>(
    kind: ContractErrorKind,
    message: impl fmt::Display,
) -> E {
    E::custom(format_args!("{}: {message}", kind.as_str()))
}

/// Turns a serde_json error plus the path at which it happened into a [`ContractError`].
pub(crate) fn from_serde(error: &serde_json::Error, path: String) -> ContractError {
    use serde_json::error::Category;
    let full = error.to_string();
    // serde_json appends the position; the path says more, and the CLI adds line numbers itself.
    let message = match full.rfind(" at line ") {
        Some(at) if error.line() != 0 => &full[..at],
        _ => full.as_str(),
    };
    let kind = match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ContractErrorKind::MalformedJson,
        Category::Data => classify_data(message),
    };
    let message = match message.split_once(": ") {
        Some((token, rest)) if ContractErrorKind::from_token(token).is_some() => rest,
        _ => message,
    };
    let message = match error.classify() {
        Category::Syntax | Category::Eof if error.line() != 0 => {
            format!(
                "{message} (line {}, column {})",
                error.line(),
                error.column()
            )
        }
        _ => message.to_owned(),
    };
    let path = match kind {
        // serde reports these at the enclosing object; the field's own path is more useful.
        ContractErrorKind::MissingField
        | ContractErrorKind::UnknownField
        | ContractErrorKind::DuplicateField => match message.split('`').nth(1) {
            Some(field) if !path.ends_with(&format!(".{field}")) => join(&path, field),
            _ => path,
        },
        _ => path,
    };
    ContractError {
        kind,
        path,
        message,
    }
}

fn classify_data(message: &str) -> ContractErrorKind {
    if let Some(kind) = message
        .split_once(": ")
        .and_then(|(token, _)| ContractErrorKind::from_token(token))
    {
        return kind;
    }
    // serde's own phrases, from serde::de::Error's provided methods; stable across serde 1.x.
    const PHRASES: [(&str, ContractErrorKind); 7] = [
        ("missing field", ContractErrorKind::MissingField),
        ("unknown field", ContractErrorKind::UnknownField),
        ("duplicate field", ContractErrorKind::DuplicateField),
        ("invalid type", ContractErrorKind::WrongType),
        ("invalid value", ContractErrorKind::InvalidValue),
        ("invalid length", ContractErrorKind::InvalidValue),
        ("unknown variant", ContractErrorKind::InvalidValue),
    ];
    PHRASES
        .iter()
        .find(|(phrase, _)| message.starts_with(phrase))
        .map_or(ContractErrorKind::InvalidValue, |(_, kind)| *kind)
}

/// Renders a serde_path_to_error path as a `$`-rooted JSON path.
pub(crate) fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push('.');
                out.push_str(key);
            }
            // A key that was not read yet (e.g. a syntax error where a key should be): the parent is the place.
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_token_round_trips() {
        for kind in ContractErrorKind::ALL {
            assert_eq!(ContractErrorKind::from_token(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn within_re_roots_nested_paths() {
        let e = ContractError::at(ContractErrorKind::InvariantViolated, "net_amount", "x");
        assert_eq!(e.path(), "$.net_amount");
        assert_eq!(e.within("$.event_data").path(), "$.event_data.net_amount");
        let root = ContractError::at(ContractErrorKind::InvariantViolated, "", "x");
        assert_eq!(root.within("$.event_data").path(), "$.event_data");
        let seq = ContractError::at(ContractErrorKind::InvalidId, "[2]", "x");
        assert_eq!(seq.path(), "$[2]");
    }

    #[test]
    fn serde_phrases_and_custom_tokens_are_classified() {
        let e: serde_json::Error = serde::de::Error::missing_field("merchant_id");
        let c = from_serde(&e, "$.event_data".into());
        assert_eq!(
            (c.kind(), c.path()),
            (ContractErrorKind::MissingField, "$.event_data.merchant_id")
        );
        let e: serde_json::Error = de_error(ContractErrorKind::TooManyDecimals, "three decimals");
        let c = from_serde(&e, "$.x".into());
        assert_eq!(c.kind(), ContractErrorKind::TooManyDecimals);
        assert_eq!(c.message(), "three decimals");
        let e = serde_json::from_str::<u32>("\"1\"").unwrap_err();
        assert_eq!(
            from_serde(&e, "$".into()).kind(),
            ContractErrorKind::WrongType
        );
        let e = serde_json::from_str::<Vec<u32>>("[1,").unwrap_err();
        assert_eq!(
            from_serde(&e, "$".into()).kind(),
            ContractErrorKind::MalformedJson
        );
    }
}
