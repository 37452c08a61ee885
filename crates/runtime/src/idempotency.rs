//! Idempotency for at-least-once handlers: the `processed_events` record keyed by (group, event id).
//!
//! Guarantees: inside the handler's own database transaction, [`first_time`] returns `true` exactly once per
//! (group, event id) across every redelivery, restart and consumer instance — the insert and the handler's writes
//! commit or roll back together, and a concurrent duplicate blocks on the primary key until the first
//! transaction ends, then sees the conflict. Use it like this:
//!
//! ```no_run
//! # async fn handle(pool: sqlx::PgPool, group: &str, event_id: uuid::Uuid) -> Result<(), sqlx::Error> {
//! let mut tx = pool.begin().await?;
//! if runtime::idempotency::first_time(&mut tx, group, event_id).await? {
//!     // apply the effect through `&mut *tx`
//! }
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! In mode (b) the offset store already makes processing exactly-once; the helper is for at-least-once groups
//! (and for effects outside the database, where it records that the effect was started).

use sqlx::PgConnection;
use uuid::Uuid;

/// Records that `group` processed `event_id`; `false` when it already had (do nothing then).
pub async fn first_time(
    conn: &mut PgConnection,
    group: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(event_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether `group` has processed `event_id` (read-only check, e.g. for a webhook retry endpoint).
pub async fn already_processed(
    conn: &mut PgConnection,
    group: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer_group = $1 AND event_id = $2)")
        .bind(group)
        .bind(event_id)
        .fetch_one(conn)
        .await
}
