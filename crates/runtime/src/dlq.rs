//! Dead-letter records: the original record, unchanged, plus provenance headers.
//!
//! Guarantees: [`dead_letter`] copies the source record's key, value and headers byte for byte (in order) to
//! `<source topic>.dlq` and appends the provenance headers named once below — original topic, partition,
//! offset and timestamp, consumer group, error class, error message (the whole cause chain), attempt count,
//! first and last failure time (RFC 3339, UTC, milliseconds). The runtime writes it and waits for the broker's
//! acknowledgement (or, in mode (a), puts it in the same transaction as the offsets) before the source offset
//! is committed; a failed DLQ write is an infrastructure error — retried, never skipped.
//!
//! One exception keeps a partition from stalling on a record the DLQ cannot hold: when the dead letter would
//! exceed [`MAX_DEAD_LETTER_BYTES`] (a foreign producer may write up to the topic's 1 MiB, the contract allows
//! 1 MB, and the provenance headers add up to ~5 KB), its value keeps only its first [`TRUNCATED_VALUE_BYTES`] and
//! the headers [`VALUE_TRUNCATED`] (the original size) and [`VALUE_SHA256`] say so; the whole original stays
//! at `dlq.original.topic`/partition/offset for the topic's retention. Refused whole by the broker, it would be
//! refused forever, and the partition would wait behind it.
//!
//! Replaying (`checkoutctl dlq replay`, decision 0035): a DLQ record is the original plus `dlq.*` headers, so the
//! replay tool strips the `dlq.` headers (and the `replay.` headers of an earlier replay), produces
//! key/value/headers back to `dlq.original.topic` and appends the [`REPLAY_HEADERS`] — except a truncated letter
//! ([`VALUE_TRUNCATED`]), which it refuses: its original must be fetched from its original position.
//!
//! Parking lot: a record that carries [`REPLAY_ID`] — it was replayed by an operator — and fails again is written
//! to `<source>.dlq.parked` ([`events::topics::parked_topic`]) instead of `<source>.dlq`, with the same provenance
//! headers (and its replay headers kept), so a replay can never feed the DLQ it came from: no loop. A missing
//! parking-lot topic is a refused write like a missing DLQ: the partition stalls loudly, nothing is skipped.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::HandlerError;
use crate::policy::dead_letter_topic;
use crate::record::{OutputRecord, Record};
use crate::retry::FailureLog;

pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
/// Milliseconds since the epoch, as the broker reported it (absent when it did not).
pub const ORIGINAL_TIMESTAMP: &str = "dlq.original.timestamp";
pub const CONSUMER_GROUP: &str = "dlq.consumer.group";
/// `transient`, `schema`, `business` or `infrastructure` (in practice `schema` or `business`).
pub const ERROR_CLASS: &str = "dlq.error.class";
/// The error and its cause chain, truncated to [`MAX_MESSAGE_BYTES`].
pub const ERROR_MESSAGE: &str = "dlq.error.message";
/// Attempts made, all failed.
pub const ATTEMPTS: &str = "dlq.attempts";
pub const FIRST_FAILURE: &str = "dlq.first.failure";
pub const LAST_FAILURE: &str = "dlq.last.failure";

/// Set by `checkoutctl dlq replay` on every record it produces: one id per replay run (a UUID).
pub const REPLAY_ID: &str = "replay.id";
/// The dead-letter (or parking-lot) topic, partition and offset the replayed record was read from.
pub const REPLAY_FROM_TOPIC: &str = "replay.from.topic";
pub const REPLAY_FROM_PARTITION: &str = "replay.from.partition";
pub const REPLAY_FROM_OFFSET: &str = "replay.from.offset";
/// How many times this record has been replayed (1 for the first replay; an earlier replay's count plus one).
pub const REPLAY_COUNT: &str = "replay.count";
/// Who ran the replay (`--operator` or `$USER`).
pub const REPLAY_OPERATOR: &str = "replay.operator";
/// When, RFC 3339 UTC.
pub const REPLAY_AT: &str = "replay.at";
/// The consumer group whose failure was replayed (from [`CONSUMER_GROUP`]); informational — every group of the
/// topic sees the record, the others skip it by their idempotency.
pub const REPLAY_GROUP: &str = "replay.group";

/// Every replay header, in the order the replay tool appends them.
pub const REPLAY_HEADERS: [&str; 8] = [
    REPLAY_ID,
    REPLAY_FROM_TOPIC,
    REPLAY_FROM_PARTITION,
    REPLAY_FROM_OFFSET,
    REPLAY_COUNT,
    REPLAY_OPERATOR,
    REPLAY_AT,
    REPLAY_GROUP,
];

/// Prefix of the provenance headers.
pub const PROVENANCE_PREFIX: &str = "dlq.";
/// Prefix of the replay headers.
pub const REPLAY_PREFIX: &str = "replay.";

/// Every provenance header, in the order they are appended.
pub const PROVENANCE_HEADERS: [&str; 10] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    CONSUMER_GROUP,
    ERROR_CLASS,
    ERROR_MESSAGE,
    ATTEMPTS,
    FIRST_FAILURE,
    LAST_FAILURE,
];

/// Longest error message kept in a header (bytes, cut on a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Largest dead letter (key + value + headers) written whole: under librdkafka's default `message.max.bytes`
/// (1 000 000, which the record's framing also counts) and the topics' 1 MiB `max.message.bytes`.
pub const MAX_DEAD_LETTER_BYTES: usize = 960_000;
/// What the value of a dead letter over [`MAX_DEAD_LETTER_BYTES`] keeps: its first bytes, for a human to read.
pub const TRUNCATED_VALUE_BYTES: usize = 64 * 1024;
/// On a truncated dead letter: the original value's size in bytes.
pub const VALUE_TRUNCATED: &str = "dlq.value.truncated";
/// On a truncated dead letter: the SHA-256 of the original value (lowercase hex), to check a fetched original.
pub const VALUE_SHA256: &str = "dlq.value.sha256";

/// Where a failed `record` goes: `<source>.dlq`, or `<source>.dlq.parked` when it was replayed ([`REPLAY_ID`]).
pub fn dead_letter_destination(record: &Record) -> String {
    let dlq = dead_letter_topic(&record.topic);
    if record.header(REPLAY_ID).is_some() {
        events::topics::parked_topic(&dlq)
    } else {
        dlq
    }
}

/// The dead-letter record of `record`, which failed with `error` after the failures in `log`: to its DLQ, or to
/// the DLQ's parking lot when the record was replayed (see the module docs).
pub fn dead_letter(
    record: &Record,
    group: &str,
    error: &HandlerError,
    log: &FailureLog,
) -> OutputRecord {
    let mut headers = record.headers.clone();
    let mut add =
        |name: &str, value: String| headers.push((name.to_string(), Some(value.into_bytes())));
    add(ORIGINAL_TOPIC, record.topic.to_string());
    add(ORIGINAL_PARTITION, record.partition.to_string());
    add(ORIGINAL_OFFSET, record.offset.to_string());
    if let Some(ts) = record.timestamp {
        add(ORIGINAL_TIMESTAMP, ts.to_string());
    }
    add(CONSUMER_GROUP, group.to_string());
    add(ERROR_CLASS, error.class().as_str().to_string());
    add(ERROR_MESSAGE, truncate(error.chain(), MAX_MESSAGE_BYTES));
    add(ATTEMPTS, log.attempts.to_string());
    add(FIRST_FAILURE, rfc3339(log.first_failure));
    add(LAST_FAILURE, rfc3339(log.last_failure));
    let mut letter = OutputRecord {
        topic: dead_letter_destination(record),
        // Same partition when the DLQ has as many partitions; otherwise the key decides. We let the key decide:
        // DLQ topics may have fewer partitions than their source.
        partition: None,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    };
    if letter.bytes() > MAX_DEAD_LETTER_BYTES
        && let Some(whole) = letter.value.as_mut()
    {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(whole.as_slice());
        let original = whole.len();
        whole.truncate(TRUNCATED_VALUE_BYTES);
        letter = letter
            .header(VALUE_TRUNCATED, original.to_string())
            .header(VALUE_SHA256, hex(&digest));
    }
    letter
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;
    use std::time::Duration;

    #[test]
    fn keeps_the_original_and_appends_every_provenance_header() {
        let record = Record {
            topic: "crypto-checkout.domain-events".into(),
            partition: 7,
            offset: 42,
            timestamp: Some(1_736_935_200_000),
            key: Some(b"inv_1".to_vec()),
            value: Some(b"\xff not json".to_vec()),
            headers: vec![
                ("event_id".into(), Some(b"e1".to_vec())),
                ("nil".into(), None),
            ],
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_736_935_200_123);
        let mut log = FailureLog::first(ErrorClass::Business, t0);
        log.record(ErrorClass::Business, t0 + Duration::from_secs(1));
        let err = HandlerError::business("invoice inv_1 is unknown");
        let dlq = dead_letter(&record, "read-model-projections", &err, &log);

        assert_eq!(dlq.topic, "crypto-checkout.domain-events.dlq");
        assert_eq!(dlq.key, record.key);
        assert_eq!(dlq.value, record.value);
        assert_eq!(
            dlq.headers[..2],
            record.headers[..],
            "original headers first, unchanged"
        );
        let names: Vec<&str> = dlq.headers[2..].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, PROVENANCE_HEADERS);
        let get = |name: &str| {
            let v = dlq
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .unwrap()
                .1
                .clone()
                .unwrap();
            String::from_utf8(v).unwrap()
        };
        assert_eq!(get(ORIGINAL_TOPIC), "crypto-checkout.domain-events");
        assert_eq!(get(ORIGINAL_PARTITION), "7");
        assert_eq!(get(ORIGINAL_OFFSET), "42");
        assert_eq!(get(ORIGINAL_TIMESTAMP), "1736935200000");
        assert_eq!(get(CONSUMER_GROUP), "read-model-projections");
        assert_eq!(get(ERROR_CLASS), "business");
        assert_eq!(
            get(ERROR_MESSAGE),
            "business error: invoice inv_1 is unknown"
        );
        assert_eq!(get(ATTEMPTS), "2");
        assert_eq!(get(FIRST_FAILURE), "2025-01-15T10:00:00.123Z");
        assert_eq!(get(LAST_FAILURE), "2025-01-15T10:00:01.123Z");
    }

    #[test]
    fn a_value_the_dlq_cannot_hold_is_cut_and_its_size_and_digest_kept() {
        let record = |len: usize| Record {
            topic: "crypto-checkout.domain-events".into(),
            partition: 1,
            offset: 9,
            timestamp: None,
            key: Some(b"inv_1".to_vec()),
            value: Some(vec![b'x'; len]),
            headers: vec![],
        };
        let log = FailureLog::first(ErrorClass::Schema, SystemTime::UNIX_EPOCH);
        let err = HandlerError::schema("too large");
        let header = |letter: &OutputRecord, name: &str| {
            letter
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8(v.clone().unwrap()).unwrap())
        };

        let fits = dead_letter(&record(900_000), "g", &err, &log);
        assert_eq!(fits.value.as_ref().unwrap().len(), 900_000, "kept whole");
        assert_eq!(header(&fits, VALUE_TRUNCATED), None);

        let big = dead_letter(&record(1_040_000), "g", &err, &log);
        assert_eq!(
            big.value.as_deref(),
            Some(&vec![b'x'; TRUNCATED_VALUE_BYTES][..])
        );
        assert_eq!(header(&big, VALUE_TRUNCATED).as_deref(), Some("1040000"));
        use sha2::Digest;
        let digest = sha2::Sha256::digest(vec![b'x'; 1_040_000]);
        assert_eq!(header(&big, VALUE_SHA256), Some(hex(&digest)));
        assert_eq!(
            header(&big, ORIGINAL_OFFSET).as_deref(),
            Some("9"),
            "where the original is"
        );
        let total: usize = big.value.as_ref().unwrap().len()
            + big
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        assert!(total < MAX_DEAD_LETTER_BYTES);
    }

    #[test]
    fn a_replayed_record_that_fails_again_is_parked_not_dead_lettered_again() {
        let mut record = Record {
            topic: "crypto-checkout.notification-events".into(),
            partition: 1,
            offset: 9,
            timestamp: Some(1),
            key: Some(b"k".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: vec![("event_id".into(), Some(b"e1".to_vec()))],
        };
        let t0 = SystemTime::UNIX_EPOCH;
        let log = FailureLog::first(ErrorClass::Business, t0);
        let err = HandlerError::business("still broken");
        assert_eq!(
            dead_letter(&record, "g", &err, &log).topic,
            "crypto-checkout.notification-events.dlq"
        );
        record
            .headers
            .push((REPLAY_ID.into(), Some(b"r-1".to_vec())));
        record
            .headers
            .push((REPLAY_COUNT.into(), Some(b"1".to_vec())));
        let parked = dead_letter(&record, "g", &err, &log);
        assert_eq!(
            parked.topic,
            "crypto-checkout.notification-events.dlq.parked"
        );
        assert_eq!(
            parked.headers[..3],
            record.headers[..],
            "replay headers kept"
        );
        let names: Vec<&str> = parked.headers[3..]
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(names, PROVENANCE_HEADERS);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = "é".repeat(3000);
        let cut = truncate(s, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
