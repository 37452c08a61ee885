//! The audit log's rows and their hash chain.
//!
//! Guarantees: [`AuditRow::canonical`] is an unambiguous encoding of every column of a row except the two hashes
//! — a fixed tag, then each field length-prefixed (4 bytes, big-endian; `0xFFFFFFFF` for NULL) in a fixed order,
//! timestamps as whole microseconds since the epoch — so no two different rows encode alike, and the encoding
//! only uses values that PostgreSQL stores exactly (text, integers, UUIDs, microsecond timestamps). A row's
//! `hash` is `SHA-256(prev_hash ‖ canonical)` and its `prev_hash` the previous row's `hash` ([`GENESIS`] for row
//! 1): changing any column of any row, removing a row or moving one changes what every later hash must be.

use chrono::{DateTime, Utc};
use events::Envelope;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of row 1.
pub const GENESIS: [u8; 32] = [0; 32];

/// Tag that starts every canonical encoding; a new encoding gets a new tag.
pub const TAG: &[u8] = b"crypto-checkout/audit-row/v1\n";

/// Appends one length-prefixed field (4 bytes big-endian, then the bytes; `0xFFFFFFFF` alone for NULL).
fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            let len = u32::try_from(bytes.len()).expect("fields are far below 4 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// One row of `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: i32,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub merchant_id: String,
    pub invoice_id: Option<String>,
    pub actor: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub source: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub kafka_topic: String,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub event: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Where a record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Truncates to whole microseconds, what PostgreSQL stores.
pub fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl AuditRow {
    /// Row `seq` for `envelope` (read from `provenance` as the JSON text `event`), chained after `prev_hash`,
    /// with its hash computed.
    pub fn new(
        seq: i64,
        prev_hash: Vec<u8>,
        envelope: &Envelope,
        event: String,
        provenance: &Provenance,
        recorded_at: DateTime<Utc>,
    ) -> AuditRow {
        let metadata = envelope.metadata();
        let mut row = AuditRow {
            seq,
            event_id: envelope.event_id().as_uuid(),
            event_type: envelope.event_type().as_str().to_string(),
            event_version: envelope.event_version() as i32,
            aggregate_type: envelope.aggregate_type().as_str().to_string(),
            aggregate_id: envelope.aggregate_id().to_string(),
            merchant_id: envelope.merchant_id().to_string(),
            invoice_id: envelope.invoice_id().map(|i| i.to_string()),
            actor: metadata.actor.to_string(),
            ip_address: metadata.ip_address.map(|ip| ip.to_string()),
            user_agent: metadata.user_agent.clone(),
            request_id: metadata.request_id.clone(),
            source: metadata.source.clone(),
            correlation_id: envelope.correlation_id().map(|c| c.to_string()),
            causation_id: envelope.causation_id().map(|c| c.to_string()),
            occurred_at: micros(envelope.timestamp()),
            recorded_at: micros(recorded_at),
            kafka_topic: provenance.topic.clone(),
            kafka_partition: provenance.partition,
            kafka_offset: provenance.offset,
            event,
            prev_hash,
            hash: Vec::new(),
        };
        row.hash = row.compute_hash().to_vec();
        row
    }

    /// The canonical encoding of every column but `prev_hash` and `hash`: [`TAG`], the row number, then
    /// [`AuditRow::canonical_rest`].
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + self.event.len() + 512);
        out.extend_from_slice(TAG);
        field(&mut out, Some(self.seq.to_string().as_bytes()));
        out.extend_from_slice(&self.canonical_rest());
        out
    }

    /// The canonical encoding of the columns after `seq`. The appender sends it to the database, which prefixes
    /// the tag and the row number it assigns under the chain lock (see `handler::append`).
    pub fn canonical_rest(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.event.len() + 512);
        let text = |s: &String| Some(s.as_bytes().to_vec());
        let opt = |s: &Option<String>| s.as_ref().map(|s| s.as_bytes().to_vec());
        let values: [Option<Vec<u8>>; 20] = [
            Some(self.event_id.hyphenated().to_string().into_bytes()),
            text(&self.event_type),
            Some(self.event_version.to_string().into_bytes()),
            text(&self.aggregate_type),
            text(&self.aggregate_id),
            text(&self.merchant_id),
            opt(&self.invoice_id),
            text(&self.actor),
            opt(&self.ip_address),
            opt(&self.user_agent),
            opt(&self.request_id),
            opt(&self.source),
            opt(&self.correlation_id),
            opt(&self.causation_id),
            Some(self.occurred_at.timestamp_micros().to_string().into_bytes()),
            Some(self.recorded_at.timestamp_micros().to_string().into_bytes()),
            text(&self.kafka_topic),
            Some(self.kafka_partition.to_string().into_bytes()),
            Some(self.kafka_offset.to_string().into_bytes()),
            text(&self.event),
        ];
        for value in &values {
            field(&mut out, value.as_deref());
        }
        out
    }

    /// `SHA-256(prev_hash ‖ canonical)`.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(&self.prev_hash);
        hasher.update(self.canonical());
        hasher.finalize().into()
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    fn row(seq: i64, prev: Vec<u8>) -> AuditRow {
        let event = examples::example(EventType::InvoiceCreated);
        let text = String::from_utf8(events::encode(&event).unwrap()).unwrap();
        let provenance = Provenance {
            topic: "t".into(),
            partition: 3,
            offset: 42,
        };
        AuditRow::new(seq, prev, &event, text, &provenance, Utc::now())
    }

    #[test]
    fn the_hash_covers_every_column_and_the_previous_hash() {
        let base = row(1, GENESIS.to_vec());
        assert_eq!(base.hash, base.compute_hash().to_vec());
        assert_eq!(base.actor, "api_key:key_abc123");
        assert_eq!(base.request_id.as_deref(), Some("req_xyz789"));
        type Tamper = Box<dyn Fn(&mut AuditRow)>;
        let changes: Vec<Tamper> = vec![
            Box::new(|r| r.seq = 2),
            Box::new(|r| r.actor = "api_key:key_other".into()),
            Box::new(|r| r.ip_address = None),
            Box::new(|r| r.user_agent = Some(String::new())),
            Box::new(|r| r.kafka_offset += 1),
            Box::new(|r| r.recorded_at += chrono::TimeDelta::microseconds(1)),
            Box::new(|r| r.event.push(' ')),
            Box::new(|r| r.prev_hash[0] = 1),
        ];
        for change in changes {
            let mut tampered = base.clone();
            change(&mut tampered);
            assert_ne!(tampered.compute_hash().to_vec(), base.hash);
        }
    }

    #[test]
    fn null_and_empty_encode_differently_and_fields_cannot_shift() {
        let mut a = row(1, GENESIS.to_vec());
        let mut b = a.clone();
        a.request_id = None;
        b.request_id = Some(String::new());
        assert_ne!(a.canonical(), b.canonical());
        // "ab" + "c" must not encode like "a" + "bc".
        let (mut x, mut y) = (a.clone(), a.clone());
        x.user_agent = Some("ab".into());
        x.request_id = Some("c".into());
        y.user_agent = Some("a".into());
        y.request_id = Some("bc".into());
        assert_ne!(x.canonical(), y.canonical());
    }
}
