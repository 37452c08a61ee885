//! Every SQL statement the publisher runs on the outbox tables, in one place.
//!
//! Guarantees of [`fetch_publishable`]: rows come in id order (per key: commit order, see [`crate::writer`]),
//! only from the given buckets, never quarantined rows, and never a row whose key — its (topic, partition key)
//! — has a quarantined row: a poison record blocks the later records of its key on its topic, and only those. `exclude` leaves out rows still in flight
//! (the publisher prefetches the next batch while the current one awaits its acknowledgements).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// A row ready to be produced.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub bucket: i16,
    pub event_id: uuid::Uuid,
    pub topic: String,
    pub partition_key: String,
    pub payload: String,
    /// `[["name", "value"], …]`
    pub headers: sqlx::types::Json<Vec<(String, String)>>,
    pub created_at: DateTime<Utc>,
}

impl OutboxRow {
    /// The unit of ordering and of blocking: the row's topic and partition key.
    pub fn ordering_key(&self) -> (&str, &str) {
        (&self.topic, &self.partition_key)
    }
}

pub async fn fetch_publishable(
    pool: &PgPool,
    buckets: &[i16],
    limit: i64,
    exclude: &[i64],
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, bucket, event_id, topic, partition_key, payload::text AS payload, headers, created_at \
         FROM outbox o \
         WHERE o.bucket = ANY($1) AND o.quarantined_at IS NULL AND o.id <> ALL($3) \
           AND NOT EXISTS (SELECT 1 FROM outbox q \
                           WHERE q.quarantined_at IS NOT NULL AND q.partition_key = o.partition_key \
                             AND q.topic = o.topic) \
         ORDER BY o.id \
         LIMIT $2",
    )
    .bind(buckets)
    .bind(limit)
    .bind(exclude)
    .fetch_all(pool)
    .await
}

/// Deletes rows the broker acknowledged.
pub async fn delete_published(pool: &PgPool, ids: &[i64]) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Records a retriable failure on rows that stay for the next attempt.
pub async fn record_failure(pool: &PgPool, ids: &[i64], error: &str) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets a row aside as poison: it and the later rows of its key stop being published until released/dropped.
pub async fn quarantine(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, quarantined_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Backlog figures for metrics and `checkoutctl outbox status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Backlog {
    /// Rows not yet published (quarantined ones included).
    pub rows: i64,
    /// Age of the oldest unpublished row, in seconds (0 when empty).
    pub oldest_age_seconds: f64,
    pub quarantined: i64,
    /// Rows waiting behind a quarantined row of the same key.
    pub blocked: i64,
}

pub async fn backlog(conn: &mut PgConnection) -> Result<Backlog, sqlx::Error> {
    let (rows, oldest, quarantined, blocked): (i64, Option<f64>, i64, i64) = sqlx::query_as(
        "SELECT count(*), \
                extract(epoch FROM now() - min(created_at))::float8, \
                count(*) FILTER (WHERE quarantined_at IS NOT NULL), \
                count(*) FILTER (WHERE quarantined_at IS NULL AND (topic, partition_key) IN \
                    (SELECT topic, partition_key FROM outbox WHERE quarantined_at IS NOT NULL)) \
         FROM outbox",
    )
    .fetch_one(conn)
    .await?;
    Ok(Backlog {
        rows,
        oldest_age_seconds: oldest.unwrap_or(0.0).max(0.0),
        quarantined,
        blocked,
    })
}
