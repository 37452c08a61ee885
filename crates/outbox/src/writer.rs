//! Appending records to the outbox inside the caller's transaction.
//!
//! The writer takes any [`events::Publishable`]: domain events ([`events::Envelope`]) and every other contract of
//! the `events` crate (the analytics topic's [`events::CheckoutViewed`], and the notification and integration
//! records to come). Each row carries its record's own topic, key, aggregate and headers; the publisher produces
//! each row to its row's topic. One batch may mix contracts (`&[&dyn Publishable]`).
//!
//! Guarantees:
//! - **Atomic with the caller's writes**: the rows are inserted on the caller's connection, inside its
//!   transaction; if it rolls back, no record exists.
//! - **Valid or nothing**: each record is validated and encoded by the `events` crate (size limit included)
//!   when `append`/`append_batch` is called, before anything is written; an invalid record returns
//!   [`OutboxError::Invalid`] naming the offending field, and the caller must roll back.
//! - **Per-key commit order**: before inserting, the writer takes a transaction-scoped advisory lock on each
//!   partition key (in a fixed order, so two batches cannot deadlock each other). A second transaction appending
//!   for the same key waits until the first commits, so its rows get larger ids: for one key, id order is commit
//!   order. This is what lets the publisher avoid the "late commit of a smaller id" trap without any
//!   high-water mark. The lock is held until the caller's transaction ends, so keep such transactions short.
//!   A key is the pair (topic, partition key): Kafka orders per topic, so a notification keyed by a merchant id
//!   neither waits for nor is blocked by that merchant's domain events.
//! - **Wake-up**: `NOTIFY outbox_events` is queued in the same transaction; PostgreSQL delivers it on commit.

use std::future::Future;

use events::{OutboxRecord, Publishable};
use sqlx::PgConnection;

use crate::OutboxError;

/// The channel the publisher LISTENs on.
pub const NOTIFY_CHANNEL: &str = "outbox_events";

/// Seed of the advisory-lock key hash, so our locks do not collide with other users of `hashtextextended`.
const LOCK_SEED: i64 = 0x0c0ffee;

/// Appends one record. See [`append_batch`].
pub fn append<'c, P: Publishable + ?Sized>(
    tx: &'c mut PgConnection,
    record: &P,
) -> impl Future<Output = Result<(), OutboxError>> + Send + use<'c, P> {
    let rows = rows(std::slice::from_ref(&record));
    async move { insert(tx, rows?).await }
}

/// Appends records in the given order (which is their order within each partition key). The records are
/// validated and encoded when this is called, so the returned future holds only the encoded rows.
pub fn append_batch<'c, P: Publishable>(
    tx: &'c mut PgConnection,
    records: &[P],
) -> impl Future<Output = Result<(), OutboxError>> + Send + use<'c, P> {
    let rows = rows(records);
    async move { insert(tx, rows?).await }
}

/// Validates and encodes every record; the first invalid one fails the whole batch.
fn rows<P: Publishable>(records: &[P]) -> Result<Vec<Row>, OutboxError> {
    records
        .iter()
        .map(|record| Ok(Row::from(record.to_outbox_record()?)))
        .collect()
}

async fn insert(tx: &mut PgConnection, rows: Vec<Row>) -> Result<(), OutboxError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<String> = rows.iter().map(Row::lock_key).collect();
    keys.sort_unstable();
    keys.dedup();
    // The inner ORDER BY fixes the order in which locks are taken.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h) FROM \
         (SELECT hashtextextended(k, $2) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS keys",
    )
    .bind(&keys)
    .bind(LOCK_SEED)
    .execute(&mut *tx)
    .await?;

    let col = |f: fn(&Row) -> String| rows.iter().map(f).collect::<Vec<String>>();
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, partition_key, bucket, aggregate_type, aggregate_id, event_type, \
                             event_version, payload, headers) \
         SELECT e, t, k, (hashtextextended(k, 0) & 63)::smallint, at, ai, et, ev, p::json, h::jsonb \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], \
                     $8::text[], $9::text[]) WITH ORDINALITY AS r(e, t, k, at, ai, et, ev, p, h, n) \
         ORDER BY n",
    )
    .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(col(|r| r.topic.to_string()))
    .bind(col(|r| r.partition_key.clone()))
    .bind(col(|r| r.aggregate_type.to_string()))
    .bind(col(|r| r.aggregate_id.clone()))
    .bind(col(|r| r.event_type.to_string()))
    .bind(rows.iter().map(|r| r.event_version).collect::<Vec<i32>>())
    .bind(col(|r| r.payload.clone()))
    .bind(col(|r| r.headers.clone()))
    .execute(&mut *tx)
    .await?;

    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One outbox row, derived entirely from a validated record.
struct Row {
    event_id: uuid::Uuid,
    topic: &'static str,
    partition_key: String,
    aggregate_type: &'static str,
    aggregate_id: String,
    event_type: &'static str,
    event_version: i32,
    payload: String,
    headers: String,
}

impl Row {
    /// What the per-key lock is taken on: topic and partition key. Kafka topic names have no spaces, so the
    /// pair is unambiguous.
    fn lock_key(&self) -> String {
        format!("{} {}", self.topic, self.partition_key)
    }
}

impl From<OutboxRecord> for Row {
    fn from(record: OutboxRecord) -> Self {
        let headers: Vec<[&str; 2]> = record
            .headers
            .iter()
            .map(|(k, v)| [*k, v.as_str()])
            .collect();
        Row {
            event_id: record.event_id.as_uuid(),
            topic: record.topic,
            partition_key: record.key,
            aggregate_type: record.aggregate_type,
            aggregate_id: record.aggregate_id,
            event_type: record.event_type,
            event_version: i32::try_from(record.event_version).expect("record versions are small"),
            payload: String::from_utf8(record.value).expect("the events crate encodes UTF-8 JSON"),
            headers: serde_json::to_string(&headers).expect("headers serialise"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    #[test]
    fn a_row_is_its_records_topic_key_aggregate_and_bytes() {
        let view = examples::checkout_viewed();
        let row = Row::from(view.to_outbox_record().unwrap());
        assert_eq!(row.topic, events::topics::ANALYTICS_EVENTS);
        assert_eq!(row.partition_key, "2025-01-15");
        assert_eq!(
            (row.aggregate_type, row.aggregate_id.as_str()),
            ("Invoice", view.invoice_id.to_string().as_str())
        );
        assert_eq!((row.event_type, row.event_version), ("CheckoutViewed", 1));
        assert_eq!(row.payload.as_bytes(), view.encode().unwrap());
        let headers: Vec<(String, String)> = serde_json::from_str(&row.headers).unwrap();
        assert!(headers.contains(&("event_type".into(), "CheckoutViewed".into())));

        let event = examples::example(EventType::MerchantCreated);
        let row = Row::from(event.to_outbox_record().unwrap());
        assert_eq!(row.topic, events::topics::DOMAIN_EVENTS);
        assert_eq!(row.partition_key, event.partition_key());
        assert_eq!(row.aggregate_id, event.aggregate_id().to_string());
    }
}
