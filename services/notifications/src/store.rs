//! `notification_deliveries`: what the consumer records and the dispatcher claims and settles.
//!
//! Guarantees:
//! - [`record`] inserts one row per notification id, in one transaction per batch; a notification already there
//!   (whatever its status) is left alone, so a redelivered, replayed or duplicated request never adds a second
//!   delivery, and a `sent` one is never sent again.
//! - [`claim`] hands out due pending rows of one channel under a lease (`FOR UPDATE SKIP LOCKED`), so two
//!   dispatchers never hold the same row at once; a killed dispatcher's rows come back when the lease runs out.
//! - [`settle`] changes a row only while the caller's lease token is still on it.

use chrono::{DateTime, Utc};
use events::notification::{Channel, NotificationRequested};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// One consumed request with the record it came in (kept for the dead letter).
#[derive(Debug, Clone)]
pub struct Incoming {
    pub request: NotificationRequested,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: serde_json::Value,
}

/// Records `batch`; returns how many rows were new per channel.
pub async fn record(pool: &PgPool, batch: &[Incoming]) -> Result<Vec<(Channel, u64)>, sqlx::Error> {
    let mut tx: Transaction<'_, Postgres> = pool.begin().await?;
    let mut new: Vec<(Channel, u64)> = Vec::new();
    for i in batch {
        let r = &i.request;
        let inserted = sqlx::query(
            "INSERT INTO notification_deliveries
                 (notification_id, recipient_kind, recipient_id, channel, template, locale, destination,
                  requested_at, source_topic, source_partition, source_offset, source_timestamp, record_key,
                  record_value, record_headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(r.notification_id.as_uuid())
        .bind(r.recipient.kind.as_str())
        .bind(&r.recipient.id)
        .bind(r.channel.as_str())
        .bind(&r.template)
        .bind(&r.locale)
        .bind(&r.destination)
        .bind(r.requested_at)
        .bind(&i.topic)
        .bind(i.partition)
        .bind(i.offset)
        .bind(i.timestamp)
        .bind(&i.key)
        .bind(&i.value)
        .bind(&i.headers)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted > 0 {
            match new.iter_mut().find(|(c, _)| *c == r.channel) {
                Some((_, n)) => *n += 1,
                None => new.push((r.channel, 1)),
            }
        }
    }
    tx.commit().await?;
    Ok(new)
}

/// The original record of a delivery, as consumed.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: serde_json::Value,
}

/// A row claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub notification_id: Uuid,
    pub recipient_id: String,
    pub destination: Option<String>,
    /// Attempts made before this one.
    pub attempts: i32,
    pub first_failure_at: Option<DateTime<Utc>>,
    pub record: StoredRecord,
}

type ClaimRow = (
    Uuid,
    String,
    Option<String>,
    i32,
    Option<DateTime<Utc>>,
    String,
    i32,
    i64,
    Option<i64>,
    Option<Vec<u8>>,
    Vec<u8>,
    serde_json::Value,
);

/// Claims up to `limit` due pending rows of `channel` for `lease`, under `token`.
pub async fn claim(
    pool: &PgPool,
    channel: Channel,
    limit: usize,
    lease: std::time::Duration,
    token: Uuid,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH due AS (
             SELECT notification_id FROM notification_deliveries
              WHERE channel = $1 AND status = 'pending' AND next_attempt_at <= now()
                AND (lease_until IS NULL OR lease_until < now())
              ORDER BY next_attempt_at
              LIMIT $2
                FOR UPDATE SKIP LOCKED)
         UPDATE notification_deliveries d
            SET lease_until = now() + $3 * interval '1 millisecond', lease_token = $4,
                claims = d.claims + 1
           FROM due
          WHERE d.notification_id = due.notification_id
         RETURNING d.notification_id, d.recipient_id, d.destination, d.attempts, d.first_failure_at,
                   d.source_topic, d.source_partition, d.source_offset, d.source_timestamp, d.record_key,
                   d.record_value, d.record_headers",
    )
    .bind(channel.as_str())
    .bind(limit as i64)
    .bind(lease.as_millis() as f64)
    .bind(token)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            notification_id: r.0,
            recipient_id: r.1,
            destination: r.2,
            attempts: r.3,
            first_failure_at: r.4,
            record: StoredRecord {
                topic: r.5,
                partition: r.6,
                offset: r.7,
                timestamp: r.8,
                key: r.9,
                value: r.10,
                headers: r.11,
            },
        })
        .collect())
}

/// How an attempt settles its row.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// The provider accepted it.
    Sent {
        sent_to: String,
        provider_id: Option<String>,
        segments: Option<i32>,
    },
    /// Failed for good (and dead-lettered): `class` is `permanent` or `transient` (retries exhausted).
    Failed { class: &'static str, error: String },
    /// Failed; try again at `at`.
    RetryAt { at: DateTime<Utc>, error: String },
    /// The channel was unreachable: not an attempt; back to the queue, due now.
    Release,
    /// Not sendable yet (its recipient is not known yet): not an attempt; due again at `at`.
    WaitUntil { at: DateTime<Utc>, error: String },
}

/// Settles `id` under `token`; false when the lease was no longer ours (nothing changed).
pub async fn settle(
    pool: &PgPool,
    id: Uuid,
    token: Uuid,
    settle: &Settle,
) -> Result<bool, sqlx::Error> {
    let query = match settle {
        Settle::Sent {
            sent_to,
            provider_id,
            segments,
        } => sqlx::query(
            "UPDATE notification_deliveries
                SET status = 'sent', attempts = attempts + 1, sent_at = now(), sent_to = $3, provider_id = $4,
                    segments = $5, lease_until = NULL, lease_token = NULL
              WHERE notification_id = $1 AND lease_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(sent_to)
        .bind(provider_id)
        .bind(segments),
        Settle::Failed { class, error } => sqlx::query(
            "UPDATE notification_deliveries
                SET status = 'failed', attempts = attempts + 1, failure_class = $3, last_error = $4,
                    first_failure_at = coalesce(first_failure_at, now()), last_failure_at = now(),
                    lease_until = NULL, lease_token = NULL
              WHERE notification_id = $1 AND lease_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(*class)
        .bind(error),
        Settle::RetryAt { at, error } => sqlx::query(
            "UPDATE notification_deliveries
                SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4,
                    first_failure_at = coalesce(first_failure_at, now()), last_failure_at = now(),
                    lease_until = NULL, lease_token = NULL
              WHERE notification_id = $1 AND lease_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(*at)
        .bind(error),
        Settle::WaitUntil { at, error } => sqlx::query(
            "UPDATE notification_deliveries
                SET next_attempt_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL
              WHERE notification_id = $1 AND lease_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token)
        .bind(*at)
        .bind(error),
        Settle::Release => sqlx::query(
            "UPDATE notification_deliveries SET lease_until = NULL, lease_token = NULL
              WHERE notification_id = $1 AND lease_token = $2 AND status = 'pending'",
        )
        .bind(id)
        .bind(token),
    };
    Ok(query.execute(pool).await?.rows_affected() == 1)
}

/// Pending rows per channel (for the backlog gauge).
pub async fn pending_by_channel(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, count(*) FROM notification_deliveries WHERE status = 'pending' GROUP BY channel",
    )
    .fetch_all(pool)
    .await
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub recipient: Option<String>,
    pub status: Option<String>,
    pub channel: Option<String>,
    pub limit: i64,
}

/// A delivery as `checkoutctl notifications list` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct View {
    pub notification_id: Uuid,
    pub recipient_kind: String,
    pub recipient_id: String,
    pub channel: String,
    pub template: String,
    pub locale: String,
    pub status: String,
    pub attempts: i32,
    pub sent_to: Option<String>,
    pub provider_id: Option<String>,
    pub segments: Option<i32>,
    pub failure_class: Option<String>,
    pub last_error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Deliveries matching `filter`, newest first.
pub async fn list(pool: &PgPool, filter: &Filter) -> Result<Vec<View>, sqlx::Error> {
    sqlx::query_as(
        "SELECT notification_id, recipient_kind, recipient_id, channel, template, locale, status, attempts,
                sent_to, provider_id, segments, failure_class, last_error, requested_at, created_at, sent_at,
                CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at
           FROM notification_deliveries
          WHERE ($1::text IS NULL OR recipient_id = $1)
            AND ($2::text IS NULL OR status = $2)
            AND ($3::text IS NULL OR channel = $3)
          ORDER BY created_at DESC, notification_id
          LIMIT $4",
    )
    .bind(&filter.recipient)
    .bind(&filter.status)
    .bind(&filter.channel)
    .bind(filter.limit.max(1))
    .fetch_all(pool)
    .await
}
