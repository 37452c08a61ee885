//! Failed attempts per record, kept where they survive the consumer: a rebalance, a restart or a crash does not
//! give a poison record a fresh retry budget, and the DLQ's `dlq.attempts` is the true count.
//!
//! Guarantees: the [`FailureLog`] of a record (group, topic, partition, offset) is saved after each failed
//! attempt and read back by whoever attempts the record next, in any process; it is deleted once the record is
//! done (succeeded or dead-lettered). Saving is best effort: when the database is unreachable (the failure
//! being retried is often that very outage) the log lives on in the lane's memory and the store is written
//! again at the next failure. Rows of records before a lane's first record are done and are removed when the
//! lane starts. [`AttemptStore::memory`] keeps them in memory (unit tests only).

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::ErrorClass;
use crate::retry::FailureLog;

/// Where failure logs are kept.
#[derive(Clone)]
pub(crate) enum AttemptStore {
    Postgres {
        pool: PgPool,
        group: String,
        timeout: Duration,
    },
    #[cfg(test)]
    Memory(Arc<Mutex<MemoryLogs>>),
}

/// Unit tests: failure logs by (topic, partition, offset).
#[cfg(test)]
type MemoryLogs = HashMap<(String, i32, i64), FailureLog>;

type Row = (i32, i32, i32, DateTime<Utc>, DateTime<Utc>, String);

impl AttemptStore {
    #[cfg(test)]
    pub fn memory() -> AttemptStore {
        AttemptStore::Memory(Default::default())
    }

    /// The failures of the record at `offset` so far, by any consumer.
    pub async fn load(&self, topic: &str, partition: i32, offset: i64) -> Option<FailureLog> {
        match self {
            #[cfg(test)]
            AttemptStore::Memory(map) => map
                .lock()
                .unwrap()
                .get(&(topic.to_string(), partition, offset))
                .cloned(),
            AttemptStore::Postgres {
                pool,
                group,
                timeout,
            } => {
                let query = sqlx::query_as::<_, Row>(
                    "SELECT attempts, business_failures, consecutive_transient, first_failure, last_failure, \
                            last_class \
                     FROM consumer_retry_attempts \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $4",
                )
                .bind(group)
                .bind(topic)
                .bind(partition)
                .bind(offset)
                .fetch_optional(pool);
                let row = match tokio::time::timeout(*timeout, query).await {
                    Ok(Ok(row)) => row?,
                    Ok(Err(err)) => {
                        warn_unavailable("reading", &err.to_string());
                        return None;
                    }
                    Err(_) => {
                        warn_unavailable("reading", "timed out");
                        return None;
                    }
                };
                let (attempts, business, transient, first, last, class) = row;
                Some(FailureLog {
                    attempts: attempts.max(0) as u32,
                    business_failures: business.max(0) as u32,
                    consecutive_transient: transient.max(0) as u32,
                    first_failure: first.into(),
                    last_failure: last.into(),
                    last_class: ErrorClass::parse(&class).unwrap_or(ErrorClass::Business),
                })
            }
        }
    }

    /// Saves the failures of the record at `offset`.
    pub async fn save(&self, topic: &str, partition: i32, offset: i64, log: &FailureLog) {
        match self {
            #[cfg(test)]
            AttemptStore::Memory(map) => {
                map.lock()
                    .unwrap()
                    .insert((topic.to_string(), partition, offset), log.clone());
            }
            AttemptStore::Postgres {
                pool,
                group,
                timeout,
            } => {
                let at = |t: SystemTime| DateTime::<Utc>::from(t);
                let query = sqlx::query(
                    "INSERT INTO consumer_retry_attempts (consumer_group, topic, partition, \"offset\", attempts, \
                                 business_failures, consecutive_transient, first_failure, last_failure, last_class) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (consumer_group, topic, partition, \"offset\") DO UPDATE SET \
                         attempts = EXCLUDED.attempts, business_failures = EXCLUDED.business_failures, \
                         consecutive_transient = EXCLUDED.consecutive_transient, \
                         first_failure = EXCLUDED.first_failure, last_failure = EXCLUDED.last_failure, \
                         last_class = EXCLUDED.last_class, updated_at = now()",
                )
                .bind(group)
                .bind(topic)
                .bind(partition)
                .bind(offset)
                .bind(log.attempts as i32)
                .bind(log.business_failures as i32)
                .bind(log.consecutive_transient as i32)
                .bind(at(log.first_failure))
                .bind(at(log.last_failure))
                .bind(log.last_class.as_str())
                .execute(pool);
                match tokio::time::timeout(*timeout, query).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => warn_unavailable("saving", &err.to_string()),
                    Err(_) => warn_unavailable("saving", "timed out"),
                }
            }
        }
    }

    /// Forgets the record at `offset` (done), or every record of the partition below `offset` (`below`).
    pub async fn clear(&self, topic: &str, partition: i32, offset: i64, below: bool) {
        match self {
            #[cfg(test)]
            AttemptStore::Memory(map) => map.lock().unwrap().retain(|(t, p, o), _| {
                let hit = if below { *o < offset } else { *o == offset };
                !(t == topic && *p == partition && hit)
            }),
            AttemptStore::Postgres {
                pool,
                group,
                timeout,
            } => {
                let sql = if below {
                    "DELETE FROM consumer_retry_attempts \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND \"offset\" < $4"
                } else {
                    "DELETE FROM consumer_retry_attempts \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND \"offset\" = $4"
                };
                let query = sqlx::query(sql)
                    .bind(group)
                    .bind(topic)
                    .bind(partition)
                    .bind(offset)
                    .execute(pool);
                match tokio::time::timeout(*timeout, query).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => warn_unavailable("clearing", &err.to_string()),
                    Err(_) => warn_unavailable("clearing", "timed out"),
                }
            }
        }
    }
}

fn warn_unavailable(what: &str, why: &str) {
    tracing::warn!(
        error = why,
        "{what} the retry attempts failed; the count continues in memory"
    );
}
