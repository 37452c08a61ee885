//! Mode (b), exactly-once into PostgreSQL: the handler's writes, the outputs' acknowledgement and the lane's
//! position commit in one database transaction.
//!
//! Guarantees:
//! - A unit (a batch, or one record) runs in one transaction that also stores the lane's [`Position`] in
//!   `consumer_offsets` (`next_offset`, and `ahead`: offsets above it that are done too). Whatever the handler
//!   wrote through the transaction commits with that position or not at all; the runtime rolls it back on any
//!   failure, so a failed unit leaves no trace (handlers of this mode keep their effects in the transaction).
//! - The position is written with a compare-and-set on its `generation` (`UPDATE … WHERE generation =
//!   expected`, or an insert when there was no row): a consumer that lost the partition — a zombie — finds
//!   another generation, rolls back and stops ([`SinkError::Fenced`]). Exactly one transaction can move a
//!   position from a given generation, so each record's writes commit exactly once.
//! - On assignment the stored positions are read first; fetching starts at `next_offset`, the `ahead` offsets
//!   are skipped when they arrive, and a partition **with no stored row starts at the beginning of its topic**
//!   (or its end, when `auto_offset_reset = "latest"` says so) — never at Kafka's committed offset, which this
//!   mode writes for lag tools only.
//! - Output and DLQ records are acknowledged by the broker before the database commit: at-least-once for them
//!   (use the outbox for exactly-once publishing); a crash between a DLQ ack and the commit can dead-letter a
//!   record twice (its provenance headers identify it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::runtime::Handle;

use super::{Assigned, Delivery, LaneSink, Position, Seek, SinkError, classify};
use crate::error::{ErrorClass, HandlerError, classify_sqlx};
use crate::produce;
use crate::record::OutputRecord;

pub(crate) struct DbOffsets {
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub group: String,
    pub runtime: Handle,
    pub db_timeout: Duration,
    pub produce_timeout: Duration,
    /// Where a partition with no stored position starts.
    pub without_row: Seek,
}

/// A stored position and its generation.
type Stored = HashMap<(String, i32), (Position, i64)>;

impl DbOffsets {
    async fn load(pool: PgPool, group: String, topics: Vec<String>) -> Result<Stored, sqlx::Error> {
        let rows: Vec<(String, i32, i64, Vec<i64>, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset, ahead, generation FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = ANY($2)",
        )
        .bind(&group)
        .bind(&topics)
        .fetch_all(&pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next, ahead, generation)| {
                ((topic, partition), (Position { next, ahead }, generation))
            })
            .collect())
    }
}

impl Delivery for DbOffsets {
    type Sink = Sink;

    fn commits_to_kafka(&self) -> bool {
        true
    }

    fn assign(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Assigned<Sink>>, String> {
        let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let load = Self::load(self.pool.clone(), self.group.clone(), topics);
        let mut stored = match super::block_on(&self.runtime, self.db_timeout, load) {
            Some(Ok(stored)) => stored,
            Some(Err(err)) => {
                return Err(format!(
                    "reading the stored positions failed: {}",
                    service_kit::telemetry::error_chain(&err)
                ));
            }
            None => {
                return Err(format!(
                    "reading the stored positions got no answer within {:?}",
                    self.db_timeout
                ));
            }
        };
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let found = stored.remove(&(topic.to_string(), *partition));
                let (seek, skip, generation) = match found {
                    Some((position, generation)) => (
                        Seek::Offset(position.next),
                        position.ahead,
                        Some(generation),
                    ),
                    None => (self.without_row, Vec::new(), None),
                };
                Assigned {
                    topic: topic.clone(),
                    partition: *partition,
                    seek,
                    skip,
                    sink: Sink {
                        pool: self.pool.clone(),
                        producer: self.producer.clone(),
                        group: self.group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        generation,
                        db_timeout: self.db_timeout,
                        produce_timeout: self.produce_timeout,
                    },
                }
            })
            .collect())
    }
}

pub(crate) struct Sink {
    pool: PgPool,
    producer: FutureProducer,
    group: String,
    topic: Arc<str>,
    partition: i32,
    /// The generation of the stored position as this lane read or wrote it last (`None`: no row yet): the
    /// expected value of the compare-and-set.
    generation: Option<i64>,
    db_timeout: Duration,
    produce_timeout: Duration,
}

/// A failure of the runtime's own statements: a lost connection or a timeout is infrastructure; anything else
/// the database refused is retried as transient (it is not the record's fault).
fn db_error(err: sqlx::Error) -> SinkError {
    SinkError::Unavailable(match classify_sqlx(&err) {
        ErrorClass::Infrastructure => HandlerError::infrastructure(err),
        _ => HandlerError::transient(err),
    })
}

impl Sink {
    /// Runs `op` with the configured statement deadline; a timeout is an infrastructure failure.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.db_timeout, op).await {
            Ok(result) => result.map_err(db_error),
            Err(_) => Err(SinkError::Unavailable(HandlerError::infrastructure(
                format!("database statement timed out after {:?}", self.db_timeout),
            ))),
        }
    }

    /// Stores `position` (compare-and-set on the generation) and commits `tx`.
    async fn store_and_commit(
        &mut self,
        mut tx: Transaction<'static, Postgres>,
        position: &Position,
    ) -> Result<(), SinkError> {
        let stored = match self.generation {
            Some(expected) => {
                let update = sqlx::query_scalar::<_, i64>(
                    "UPDATE consumer_offsets SET next_offset = $4, ahead = $5, generation = generation + 1, \
                            updated_at = now() \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND generation = $6 \
                     RETURNING generation",
                )
                .bind(&self.group)
                .bind(&*self.topic)
                .bind(self.partition)
                .bind(position.next)
                .bind(&position.ahead)
                .bind(expected)
                .fetch_optional(&mut *tx);
                self.bounded(update).await?
            }
            None => {
                let insert = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, ahead, generation) \
                     VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT DO NOTHING RETURNING generation",
                )
                .bind(&self.group)
                .bind(&*self.topic)
                .bind(self.partition)
                .bind(position.next)
                .bind(&position.ahead)
                .fetch_optional(&mut *tx);
                self.bounded(insert).await?
            }
        };
        let Some(generation) = stored else {
            let _ = tx.rollback().await;
            tracing::warn!(
                expected = ?self.generation, next = position.next,
                "the stored position moved under us: another consumer owns this partition; stopping (fenced)"
            );
            return Err(SinkError::Fenced);
        };
        // Whether a failed commit happened is unknown; the next compare-and-set tells (and fences us if it did).
        self.bounded(tx.commit()).await?;
        self.generation = Some(generation);
        Ok(())
    }
}

impl LaneSink for Sink {
    type Unit = Transaction<'static, Postgres>;

    fn gaps(&self) -> bool {
        true
    }

    fn keeps_partial(&self) -> bool {
        false
    }

    async fn begin(&mut self) -> Result<Self::Unit, SinkError> {
        self.bounded(self.pool.begin()).await
    }

    fn db(unit: &mut Self::Unit) -> Option<&mut PgConnection> {
        Some(&mut **unit)
    }

    async fn commit(
        &mut self,
        unit: Self::Unit,
        outputs: Vec<OutputRecord>,
        position: &Position,
    ) -> Result<(), SinkError> {
        if let Err(error) = produce::send_all(&self.producer, &outputs, self.produce_timeout).await
        {
            let _ = unit.rollback().await;
            return Err(classify(error));
        }
        self.store_and_commit(unit, position).await
    }

    async fn abort(&mut self, unit: Self::Unit) {
        let _ = unit.rollback().await;
    }

    async fn dead_letter(
        &mut self,
        letter: OutputRecord,
        position: &Position,
    ) -> Result<(), SinkError> {
        produce::send_all(&self.producer, &[letter], self.produce_timeout)
            .await
            .map_err(classify)?;
        let tx = self.begin().await?;
        self.store_and_commit(tx, position).await
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        None
    }

    async fn flush(&mut self, _position: &Position) -> Result<(), SinkError> {
        Ok(())
    }

    async fn close(&mut self, _position: &Position, _graceful: bool) {}
}
