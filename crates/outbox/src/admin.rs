//! Operator actions on the outbox (`checkoutctl outbox status|release|drop`).
//!
//! Guarantees: a quarantined row is never deleted silently — `drop` moves it to `outbox_dropped` with who and
//! why; `release` clears the quarantine so the publisher retries the row (first, before the later rows of its
//! key). Both act only on quarantined rows.

use serde::Serialize;
use sqlx::PgConnection;

use crate::error::OutboxError;
use crate::store::{self, Backlog};

/// One quarantined row, for display.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Quarantined {
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub partition_key: String,
    pub topic: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub quarantined_at: chrono::DateTime<chrono::Utc>,
    pub payload_bytes: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub backlog: Backlog,
    pub quarantined_rows: Vec<Quarantined>,
    pub publishers: Vec<PublisherReplica>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PublisherReplica {
    pub instance_id: uuid::Uuid,
    pub hostname: String,
    pub heartbeat_age_seconds: f64,
    pub buckets: i32,
}

pub async fn status(conn: &mut PgConnection) -> Result<Status, OutboxError> {
    let backlog = store::backlog(conn).await?;
    let quarantined_rows = sqlx::query_as(
        "SELECT event_id, event_type, partition_key, topic, attempts, last_error, quarantined_at, \
                octet_length(payload::text) AS payload_bytes \
         FROM outbox WHERE quarantined_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let publishers = sqlx::query_as(
        "SELECT instance_id, hostname, extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds, \
                cardinality(buckets) AS buckets \
         FROM outbox_publishers ORDER BY started_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(Status {
        backlog,
        quarantined_rows,
        publishers,
    })
}

/// Clears the quarantine of one row; the publisher retries it next.
pub async fn release(conn: &mut PgConnection, event_id: uuid::Uuid) -> Result<(), OutboxError> {
    let done = sqlx::query(
        "UPDATE outbox SET quarantined_at = NULL, attempts = 0 WHERE event_id = $1 AND quarantined_at IS NOT NULL",
    )
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    unblocked(conn, event_id, done.rows_affected()).await
}

/// Moves one quarantined row to `outbox_dropped`, unblocking the later events of its key.
pub async fn drop_row(
    conn: &mut PgConnection,
    event_id: uuid::Uuid,
    by: &str,
    reason: &str,
) -> Result<(), OutboxError> {
    let moved = sqlx::query(
        "WITH d AS (DELETE FROM outbox WHERE event_id = $1 AND quarantined_at IS NOT NULL RETURNING *) \
         INSERT INTO outbox_dropped SELECT d.*, now(), $2, $3 FROM d",
    )
    .bind(event_id)
    .bind(by)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    unblocked(conn, event_id, moved.rows_affected()).await
}

/// After release/drop: refuse when no quarantined row matched, else wake the publisher (the key is unblocked).
async fn unblocked(
    conn: &mut PgConnection,
    event_id: uuid::Uuid,
    rows: u64,
) -> Result<(), OutboxError> {
    if rows == 0 {
        return Err(OutboxError::NotFound(format!(
            "no quarantined outbox row has event_id {event_id}"
        )));
    }
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(crate::NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
