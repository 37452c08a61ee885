//! Timestamps on the wire.
//!
//! Guarantees: input is RFC 3339 with a UTC offset (`Z`, `+00:00`); any other offset is a
//! [`crate::ContractErrorKind::InvalidTimestamp`] even though it names a valid instant, because the contract
//! says UTC and a producer sending local time has a bug worth seeing. Output is RFC 3339 with `Z` and only as
//! many fractional digits as the value needs (0, 3, 6 or 9), so whole seconds print as `2025-01-15T10:00:00Z`.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ContractErrorKind;
use crate::error::de_error;

/// Parses an RFC 3339 UTC timestamp.
pub fn parse_utc(input: &str) -> Result<DateTime<Utc>, String> {
    let parsed = DateTime::parse_from_rfc3339(input)
        .map_err(|e| format!("`{input}` is not an RFC 3339 timestamp: {e}"))?;
    if parsed.offset().local_minus_utc() != 0 {
        return Err(format!("`{input}` is not in UTC; write it with `Z`"));
    }
    Ok(parsed.with_timezone(&Utc))
}

/// Formats a timestamp canonically.
pub fn format_utc(timestamp: &DateTime<Utc>) -> String {
    timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Truncates to microseconds, the precision PostgreSQL keeps, so that an event written to the outbox table and
/// read back is the same event.
pub(crate) fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// `#[serde(with = "crate::time::rfc3339")]` for `DateTime<Utc>` fields.
pub(crate) mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer, de};
    use std::fmt;

    pub(crate) fn serialize<S: Serializer>(
        timestamp: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_utc(timestamp))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DateTime<Utc>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp in UTC")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
                parse_utc(v).map_err(|e| de_error(ContractErrorKind::InvalidTimestamp, e))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_utc_only() {
        assert_eq!(
            format_utc(&parse_utc("2025-01-15T10:00:00Z").unwrap()),
            "2025-01-15T10:00:00Z"
        );
        assert_eq!(
            format_utc(&parse_utc("2025-01-15T10:00:00+00:00").unwrap()),
            "2025-01-15T10:00:00Z"
        );
        assert_eq!(
            format_utc(&parse_utc("2025-01-15T10:00:00.120Z").unwrap()),
            "2025-01-15T10:00:00.120Z"
        );
        for bad in [
            "2025-01-15T12:00:00+02:00",
            "2025-01-15",
            "2025-01-15T10:00:00",
            "yesterday",
            "2025-13-01T00:00:00Z",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn now_is_truncated_to_microseconds() {
        assert_eq!(now_micros().timestamp_subsec_nanos() % 1_000, 0);
    }
}
