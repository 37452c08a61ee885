//! Appending events to the outbox inside the caller's transaction.
//!
//! Guarantees:
//! - **Atomic with the caller's writes**: the rows are inserted on the caller's connection, inside its
//!   transaction; if it rolls back, no event exists.
//! - **Valid or nothing**: each envelope is validated and encoded by the `events` crate (size limit included)
//!   before anything is written; an invalid event returns [`OutboxError::Invalid`] and the caller must roll back.
//! - **Per-key commit order**: before inserting, the writer takes a transaction-scoped advisory lock on each
//!   partition key (in a fixed order, so two batches cannot deadlock each other). A second transaction appending
//!   for the same key waits until the first commits, so its rows get larger ids: for one key, id order is commit
//!   order. This is what lets the publisher avoid the "late commit of a smaller id" trap without any
//!   high-water mark. The lock is held until the caller's transaction ends, so keep such transactions short.
//! - **Wake-up**: `NOTIFY outbox_events` is queued in the same transaction; PostgreSQL delivers it on commit.

use events::Envelope;
use sqlx::PgConnection;

use crate::OutboxError;

/// The channel the publisher LISTENs on.
pub const NOTIFY_CHANNEL: &str = "outbox_events";

/// Seed of the advisory-lock key hash, so our locks do not collide with other users of `hashtextextended`.
const LOCK_SEED: i64 = 0x0c0ffee;

/// Appends one event. See [`append_batch`].
pub async fn append(tx: &mut PgConnection, envelope: &Envelope) -> Result<(), OutboxError> {
    append_batch(tx, std::slice::from_ref(envelope)).await
}

/// Appends events in the given order (which is their order within each partition key).
pub async fn append_batch(
    tx: &mut PgConnection,
    envelopes: &[Envelope],
) -> Result<(), OutboxError> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let rows = envelopes
        .iter()
        .map(Row::from_envelope)
        .collect::<Result<Vec<_>, _>>()?;

    let mut keys: Vec<&str> = rows.iter().map(|r| r.partition_key.as_str()).collect();
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
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::int[], \
                     $8::text[], $9::text[]) WITH ORDINALITY AS r(e, t, k, at, ai, et, ev, p, h, n) \
         ORDER BY n",
    )
    .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
    .bind(col(|r| r.topic.to_string()))
    .bind(col(|r| r.partition_key.clone()))
    .bind(col(|r| r.aggregate_type.to_string()))
    .bind(rows.iter().map(|r| r.aggregate_id).collect::<Vec<_>>())
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

/// One outbox row, derived entirely from a validated envelope.
struct Row {
    event_id: uuid::Uuid,
    topic: &'static str,
    partition_key: String,
    aggregate_type: &'static str,
    aggregate_id: uuid::Uuid,
    event_type: &'static str,
    event_version: i32,
    payload: String,
    headers: String,
}

impl Row {
    fn from_envelope(envelope: &Envelope) -> Result<Self, OutboxError> {
        let bytes = events::encode(envelope)?;
        let payload = String::from_utf8(bytes).expect("the events crate encodes UTF-8 JSON");
        let headers = envelope.kafka_headers();
        let headers: Vec<[&str; 2]> = headers.iter().map(|(k, v)| [*k, v.as_str()]).collect();
        Ok(Self {
            event_id: envelope.event_id().as_uuid(),
            topic: envelope.topic(),
            partition_key: envelope.partition_key(),
            aggregate_type: envelope.aggregate_type().as_str(),
            aggregate_id: envelope.aggregate_id().as_uuid(),
            event_type: envelope.event_type().as_str(),
            event_version: i32::try_from(envelope.event_version())
                .expect("event versions are small"),
            payload,
            headers: serde_json::to_string(&headers).expect("headers serialise"),
        })
    }
}
