//! Sharing the work among publisher replicas.
//!
//! Partition keys hash into 64 buckets (computed by the writer). A replica publishes only the rows of buckets
//! whose PostgreSQL advisory lock it holds, on a dedicated session; two replicas can therefore never publish the
//! same key at the same time, and per-key order holds with any number of replicas. Each replica heartbeats into
//! `outbox_publishers`, aims for an equal share (`ceil(64 / live replicas)`), releases buckets above its share
//! between batches and takes free ones below it.
//!
//! When a replica dies, PostgreSQL ends its session and frees its locks at once (SIGKILL closes the socket); the
//! others pick the buckets up at their next heartbeat. If the lock session itself breaks, the replica drops all
//! its buckets before publishing again. A replica cut off from the database while a batch is in flight can still
//! finish that batch after its buckets moved: that produces duplicates (same `event_id`), never a reordering of
//! first occurrences, because both replicas publish the same rows in the same order.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// Number of buckets; fixed by the `outbox.bucket` check constraint.
pub const BUCKETS: i16 = 64;
/// First key of our advisory locks (`pg_try_advisory_lock(LOCK_CLASS, bucket)`).
const LOCK_CLASS: i32 = 0x0b0c;
/// A replica whose heartbeat is older than this no longer counts towards the fair share.
pub const LIVENESS: Duration = Duration::from_secs(10);

pub struct Leases {
    url: String,
    instance_id: uuid::Uuid,
    hostname: String,
    session: Option<PgConnection>,
    owned: BTreeSet<i16>,
}

impl Leases {
    pub fn new(database_url: String, instance_id: uuid::Uuid) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            url: database_url,
            instance_id,
            hostname,
            session: None,
            owned: BTreeSet::new(),
        }
    }

    /// The buckets this replica may publish now.
    pub fn owned(&self) -> Vec<i16> {
        self.owned.iter().copied().collect()
    }

    /// Heartbeats and rebalances. On any error the session is dropped with all its locks, and the replica owns
    /// nothing until a later refresh succeeds.
    pub async fn refresh(&mut self) -> Result<(), sqlx::Error> {
        match self.try_refresh().await {
            Ok(()) => Ok(()),
            Err(err) => {
                self.owned.clear();
                if let Some(session) = self.session.take() {
                    let _ = session.close().await;
                }
                Err(err)
            }
        }
    }

    async fn try_refresh(&mut self) -> Result<(), sqlx::Error> {
        if self.session.is_none() {
            self.session = Some(PgConnection::connect(&self.url).await?);
        }
        let session = self.session.as_mut().expect("just connected");
        let owned: Vec<i16> = self.owned.iter().copied().collect();
        sqlx::query(
            "INSERT INTO outbox_publishers (instance_id, hostname, buckets) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), buckets = $3",
        )
        .bind(self.instance_id)
        .bind(&self.hostname)
        .bind(&owned)
        .execute(&mut *session)
        .await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox_publishers WHERE heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(LIVENESS.as_secs_f64())
        .fetch_one(&mut *session)
        .await?;
        let share = (i64::from(BUCKETS) + live.max(1) - 1) / live.max(1);

        while self.owned.len() as i64 > share {
            let bucket = *self.owned.iter().next_back().expect("non-empty");
            sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(i32::from(bucket))
                .execute(&mut *session)
                .await?;
            self.owned.remove(&bucket);
            tracing::info!(bucket, "released outbox bucket for another replica");
        }
        if (self.owned.len() as i64) < share {
            // Start the search at a per-instance offset so replicas do not all race for bucket 0.
            let start = (self.instance_id.as_u128() % BUCKETS as u128) as i16;
            for step in 0..BUCKETS {
                if self.owned.len() as i64 >= share {
                    break;
                }
                let bucket = (start + step) % BUCKETS;
                if self.owned.contains(&bucket) {
                    continue;
                }
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(LOCK_CLASS)
                    .bind(i32::from(bucket))
                    .fetch_one(&mut *session)
                    .await?;
                if got {
                    self.owned.insert(bucket);
                }
            }
        }
        // Forget replicas that have been gone for a long time.
        sqlx::query("DELETE FROM outbox_publishers WHERE heartbeat_at < now() - interval '1 hour'")
            .execute(&mut *session)
            .await?;
        Ok(())
    }

    /// Releases every bucket and removes the heartbeat row (graceful shutdown).
    pub async fn release_all(&mut self) {
        if let Some(mut session) = self.session.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut session)
                .await;
            let _ = sqlx::query("DELETE FROM outbox_publishers WHERE instance_id = $1")
                .bind(self.instance_id)
                .execute(&mut session)
                .await;
            let _ = session.close().await;
        }
        self.owned.clear();
    }
}
