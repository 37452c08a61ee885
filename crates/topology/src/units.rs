//! Quantities of the file, always written with an explicit unit and converted exactly to Kafka's integers.
//!
//! - [`TimeSpan`]: `30d`, `12h`, `15m`, `30s`, `500ms` → milliseconds (`retention.ms`). A bare number is refused:
//!   "30" could be days, hours or milliseconds, and a wrong guess silently deletes data.
//! - [`ByteSize`]: `100MiB`, `1GiB`, `512KiB`, or an exact byte count (`104857600`) → bytes (`segment.bytes`,
//!   `max.message.bytes`). `MB`/`GB`/`KB` are refused as ambiguous (10^6 or 2^20?); the spec's "100MB" and "1MB"
//!   are Kafka's binary sizes, which is what the broker settings of `deploy/local/up` already use.
//! - [`Compression`], [`CleanupPolicy`], [`TopicKind`]: Kafka's own vocabulary, so the file reads the same as the
//!   broker's `describe` output. The spec's compression "None" is deliberately *not* accepted (see
//!   [`Compression`]).
//!
//! Every type serialises back to the canonical text it parses, so a file can be loaded, changed and written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A length of time, held as exact milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeSpan {
    millis: u64,
}

const TIME_UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl TimeSpan {
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    pub const fn from_days(days: u64) -> Self {
        Self {
            millis: days * 86_400_000,
        }
    }

    pub const fn as_millis(self) -> u64 {
        self.millis
    }
}

impl FromStr for TimeSpan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "`{text}` is not a duration: write a whole number and a unit, e.g. 30d, 12h, 500ms"
            ));
        }
        let Some((_, factor)) = TIME_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(if unit.is_empty() {
                format!("`{text}` has no unit: write e.g. {text}d, {text}h or {text}ms")
            } else {
                format!("`{text}` has an unknown unit `{unit}`: use d, h, m, s or ms")
            });
        };
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        let millis = value
            .checked_mul(*factor)
            .filter(|ms| *ms <= i64::MAX as u64);
        millis
            .map(TimeSpan::from_millis)
            .ok_or_else(|| format!("`{text}` is too large for Kafka"))
    }
}

impl fmt::Display for TimeSpan {
    /// The largest unit that divides the value exactly: `2592000000` ms is `30d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, factor) = TIME_UNITS
            .iter()
            .find(|(_, factor)| self.millis != 0 && self.millis.is_multiple_of(*factor))
            .copied()
            .unwrap_or(("ms", 1));
        write!(f, "{}{unit}", self.millis / factor)
    }
}

impl TryFrom<String> for TimeSpan {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<TimeSpan> for String {
    fn from(span: TimeSpan) -> String {
        span.to_string()
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "SizeText", into = "SizeText")]
pub struct ByteSize {
    bytes: u64,
}

const SIZE_UNITS: &[(&str, u64)] = &[("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self { bytes }
    }

    pub const fn from_mib(mib: u64) -> Self {
        Self { bytes: mib << 20 }
    }

    pub const fn as_bytes(self) -> u64 {
        self.bytes
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let unit = unit.trim_start();
        if digits.is_empty() {
            return Err(format!(
                "`{text}` is not a size: write e.g. 100MiB, 1GiB or an exact byte count"
            ));
        }
        let factor = match SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, factor)) => *factor,
            None if unit.is_empty() || unit == "B" => 1,
            None if ["KB", "MB", "GB", "kB", "Kb", "Mb", "Gb"].contains(&unit) => {
                return Err(format!(
                    "`{text}` is ambiguous (powers of 1000 or 1024?): write {digits}{}iB or the exact byte count",
                    &unit[..1].to_ascii_uppercase()
                ));
            }
            None => {
                return Err(format!(
                    "`{text}` has an unknown unit `{unit}`: use KiB, MiB, GiB or bytes"
                ));
            }
        };
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        value
            .checked_mul(factor)
            .map(ByteSize::from_bytes)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIZE_UNITS
            .iter()
            .find(|(_, factor)| self.bytes != 0 && self.bytes.is_multiple_of(*factor))
        {
            Some((unit, factor)) => write!(f, "{}{unit}", self.bytes / factor),
            None => write!(f, "{}", self.bytes),
        }
    }
}

/// YAML lets a size be written as a number (`104857600`) or a string (`100MiB`).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;
    fn try_from(text: SizeText) -> Result<Self, String> {
        match text {
            SizeText::Bytes(bytes) => Ok(ByteSize::from_bytes(bytes)),
            SizeText::Text(text) => text.parse(),
        }
    }
}

impl From<ByteSize> for SizeText {
    fn from(size: ByteSize) -> SizeText {
        let text = size.to_string();
        match text.parse() {
            Ok(bytes) => SizeText::Bytes(bytes),
            Err(_) => SizeText::Text(text),
        }
    }
}

/// The topic's `compression.type`: what the broker stores on disk.
///
/// The spec's Development value "None" means *the broker adds no compression of its own*. That is Kafka's
/// `producer` (keep each batch exactly as the producer compressed it: lz4 from our producers, never
/// recompressed), not `uncompressed` (which makes the broker decompress every lz4 batch and rewrite it raw:
/// broker CPU, and dev storing different bytes than production). `none` is refused because it means
/// `uncompressed` to a producer and "no broker compression" in the spec. Decision 0006.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    Producer,
    Uncompressed,
    Lz4,
    Zstd,
    Snappy,
    Gzip,
}

impl Compression {
    pub const fn as_kafka(self) -> &'static str {
        match self {
            Compression::Producer => "producer",
            Compression::Uncompressed => "uncompressed",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        const ALL: [Compression; 6] = [
            Compression::Producer,
            Compression::Uncompressed,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
            Compression::Gzip,
        ];
        if text == "none" {
            return Err("`none` is ambiguous: write `producer` (the broker keeps the producer's codec; the spec's \
                        \"None\", decision 0006) or `uncompressed` (the broker rewrites every batch raw)"
                .into());
        }
        ALL.into_iter().find(|c| c.as_kafka() == text).ok_or_else(|| {
            format!("`{text}` is not a Kafka compression.type: use producer, uncompressed, lz4, zstd, snappy or gzip")
        })
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.as_kafka().to_string()
    }
}

/// A Kafka `cleanup.policy`: `delete`, `compact` or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
    pub const COMPACT_DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: true,
    };

    /// Kafka's spelling; the order of a list is not significant to the broker.
    pub const fn as_kafka(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            (false, _) => "delete",
        }
    }
}

impl FromStr for CleanupPolicy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut policy = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for part in text.split(',').map(str::trim) {
            let flag = match part {
                "delete" => &mut policy.delete,
                "compact" => &mut policy.compact,
                _ => {
                    return Err(format!(
                        "`{text}` is not a cleanup.policy: use delete, compact or compact,delete"
                    ));
                }
            };
            if std::mem::replace(flag, true) {
                return Err(format!("`{text}` names `{part}` twice"));
            }
        }
        Ok(policy)
    }
}

impl TryFrom<String> for CleanupPolicy {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<CleanupPolicy> for String {
    fn from(p: CleanupPolicy) -> String {
        p.as_kafka().to_string()
    }
}

/// What a topic holds, which decides its cleanup policy (decision 0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicKind {
    /// An append-only history (events, DLQ records): every record matters, so never compacted.
    EventLog,
    /// The latest state per key (snapshots, changelogs): older records of a key may be compacted away.
    Snapshot,
}

impl TopicKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TopicKind::EventLog => "event-log",
            TopicKind::Snapshot => "snapshot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_exactly_to_milliseconds() {
        assert_eq!(
            "30d".parse::<TimeSpan>().unwrap().as_millis(),
            2_592_000_000
        );
        assert_eq!(
            "90d".parse::<TimeSpan>().unwrap().as_millis(),
            7_776_000_000
        );
        assert_eq!("168h".parse::<TimeSpan>().unwrap(), TimeSpan::from_days(7));
        assert_eq!("500ms".parse::<TimeSpan>().unwrap().as_millis(), 500);
        assert_eq!("15m".parse::<TimeSpan>().unwrap().as_millis(), 900_000);
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        assert_eq!(TimeSpan::from_millis(2_592_000_000).to_string(), "30d");
        assert_eq!(TimeSpan::from_millis(90_000_000).to_string(), "25h");
        assert_eq!(TimeSpan::from_millis(1_500).to_string(), "1500ms");
        assert_eq!(TimeSpan::from_millis(0).to_string(), "0ms");
    }

    #[test]
    fn a_duration_without_a_known_unit_is_refused() {
        assert!("30".parse::<TimeSpan>().unwrap_err().contains("no unit"));
        assert!(
            "30 days"
                .parse::<TimeSpan>()
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!("d".parse::<TimeSpan>().is_err());
        assert!("-1d".parse::<TimeSpan>().is_err());
        assert!(
            "999999999999999999d"
                .parse::<TimeSpan>()
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes_are_binary_and_exact() {
        assert_eq!(
            "100MiB".parse::<ByteSize>().unwrap().as_bytes(),
            104_857_600
        );
        assert_eq!(
            "1GiB".parse::<ByteSize>().unwrap().as_bytes(),
            1_073_741_824
        );
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().as_bytes(), 1_048_576);
        assert_eq!(
            "104857600".parse::<ByteSize>().unwrap(),
            ByteSize::from_mib(100)
        );
        assert_eq!(ByteSize::from_bytes(1_073_741_824).to_string(), "1GiB");
        assert_eq!(ByteSize::from_bytes(1_048_588).to_string(), "1048588");
    }

    #[test]
    fn decimal_size_units_are_refused_as_ambiguous() {
        let err = "100MB".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("100MiB"), "{err}");
        assert!("1GB".parse::<ByteSize>().unwrap_err().contains("1GiB"));
    }

    #[test]
    fn sizes_read_from_yaml_numbers_and_strings() {
        let sizes: Vec<ByteSize> = serde_yaml::from_str("[104857600, 100MiB, '1GiB']").unwrap();
        assert_eq!(
            sizes,
            [
                ByteSize::from_mib(100),
                ByteSize::from_mib(100),
                ByteSize::from_mib(1024)
            ]
        );
    }

    #[test]
    fn compression_none_is_refused_because_it_is_ambiguous() {
        let err = "none".parse::<Compression>().unwrap_err();
        assert!(
            err.contains("producer") && err.contains("uncompressed"),
            "{err}"
        );
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
        assert_eq!(
            "producer".parse::<Compression>().unwrap().as_kafka(),
            "producer"
        );
    }

    #[test]
    fn cleanup_policies_are_sets() {
        assert_eq!(
            "delete,compact".parse::<CleanupPolicy>().unwrap(),
            CleanupPolicy::COMPACT_DELETE
        );
        assert_eq!(CleanupPolicy::COMPACT_DELETE.as_kafka(), "compact,delete");
        assert!("delete,delete".parse::<CleanupPolicy>().is_err());
        assert!("remove".parse::<CleanupPolicy>().is_err());
    }
}
