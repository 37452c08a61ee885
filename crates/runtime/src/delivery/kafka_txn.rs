//! Mode (a), exactly-once within Kafka: a partition's outputs, dead letters and consumed offset commit in one
//! Kafka transaction, by a transactional producer of that partition's own.
//!
//! Guarantees:
//! - Each partition lane has a producer whose `transactional.id` is derived from the group, topic and partition.
//!   Whoever owns the partition next uses the same id, so its `init_transactions` fences the previous owner's
//!   producer and aborts that owner's open transaction at once — a killed member's partitions never wait for
//!   `transaction.timeout.ms` (a per-process random id could not be fenced by anyone).
//! - Outputs are enqueued into the open transaction as units finish; every `transaction_commit_interval` while
//!   the transaction holds outputs or dead letters, every `commit_interval` (at-least-once's offset cadence)
//!   while it holds only the position, and when the lane stops gracefully, the lane's position is sent to the
//!   transaction (`send_offsets_to_transaction`, with the consumer's current group metadata) and the transaction
//!   committed. A consumer reading `read_committed` sees a unit's outputs if and only if its offset is committed
//!   too. A transaction of offsets alone holds back nobody's reads, and what a crash loses of it is redone by the
//!   next owner without a duplicate: those records produced nothing (decision 0052).
//! - No gaps: a Kafka offset is one number, so a record that fails holds back the records after it.
//! - Any transactional failure aborts (bounded by `transactional_call_timeout`) and asks for the pipeline to be
//!   re-created: it resumes from the committed offsets, so aborted work is redone exactly once. The blocking
//!   transactional calls run on the blocking pool, never on a runtime worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sqlx::PgConnection;
use tokio::time::Instant;

use super::{Assigned, Delivery, LaneSink, Position, Seek, SinkError};
use crate::produce;
use crate::record::OutputRecord;

/// The consumer's group metadata as of the last rebalance, which `send_offsets_to_transaction` needs.
#[derive(Default)]
pub(crate) struct GroupMetadata(Mutex<Option<Arc<ConsumerGroupMetadata>>>);

impl GroupMetadata {
    pub fn set(&self, metadata: Option<ConsumerGroupMetadata>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = metadata.map(Arc::new);
    }

    fn get(&self) -> Option<Arc<ConsumerGroupMetadata>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) struct KafkaTxn {
    /// The producer configuration (the spec's settings); the lanes add their `transactional.id`.
    pub producer_config: ClientConfig,
    pub group: String,
    pub metadata: Arc<GroupMetadata>,
    pub transaction_timeout: Duration,
    pub call_timeout: Duration,
    /// How often a transaction holding outputs or dead letters is committed.
    pub commit_interval: Duration,
    /// How often a transaction holding only the position is committed.
    pub offsets_interval: Duration,
}

/// The `transactional.id` of the lane of `topic`/`partition` in `group`.
pub(crate) fn transactional_id(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}.{topic}.{partition}")
}

impl Delivery for KafkaTxn {
    type Sink = Sink;

    fn commits_to_kafka(&self) -> bool {
        false
    }

    fn group_changed(&self, metadata: impl FnOnce() -> Option<ConsumerGroupMetadata>) {
        self.metadata.set(metadata());
    }

    fn assign(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Assigned<Sink>>, String> {
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let mut config = self.producer_config.clone();
                config
                    .set(
                        "transactional.id",
                        transactional_id(&self.group, topic, *partition),
                    )
                    .set(
                        "transaction.timeout.ms",
                        self.transaction_timeout.as_millis().to_string(),
                    );
                Assigned {
                    topic: topic.clone(),
                    partition: *partition,
                    seek: Seek::Committed,
                    skip: Vec::new(),
                    sink: Sink {
                        config,
                        producer: None,
                        topic: topic.clone(),
                        partition: *partition,
                        metadata: self.metadata.clone(),
                        call_timeout: self.call_timeout,
                        commit_interval: self.commit_interval,
                        offsets_interval: self.offsets_interval,
                        pending: None,
                        holds_outputs: false,
                        last_commit: Instant::now(),
                    },
                }
            })
            .collect())
    }
}

pub(crate) struct Sink {
    config: ClientConfig,
    /// Created (and its transactions initialised, fencing the previous owner) when the lane starts.
    producer: Option<FutureProducer>,
    topic: Arc<str>,
    partition: i32,
    metadata: Arc<GroupMetadata>,
    call_timeout: Duration,
    commit_interval: Duration,
    offsets_interval: Duration,
    /// The position to commit with the open transaction, once work was enqueued into it.
    pending: Option<Position>,
    /// Whether the open transaction holds outputs or dead letters (readers wait for them), or only the position.
    holds_outputs: bool,
    last_commit: Instant,
}

fn restart(step: &str, err: impl std::fmt::Display) -> SinkError {
    SinkError::Restart(format!("the Kafka transaction failed at {step}: {err}"))
}

impl Sink {
    /// The producer, created and initialised (in a transaction) on first use.
    async fn producer(&mut self) -> Result<FutureProducer, SinkError> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        let (config, timeout) = (self.config.clone(), self.call_timeout);
        let producer = tokio::task::spawn_blocking(move || {
            // librdkafka's threads inherit the class of the thread that creates them: the producer's are
            // normal like the poll thread's, not batch like this blocking thread (decision 0054).
            let created =
                service_kit::threads::with_class(service_kit::threads::Class::Normal, || {
                    config.create::<FutureProducer>()
                });
            let producer: FutureProducer =
                created.map_err(|e| restart("creating the producer", e))?;
            producer
                .init_transactions(timeout)
                .map_err(|e| restart("init_transactions", e))?;
            producer
                .begin_transaction()
                .map_err(|e| restart("begin_transaction", e))?;
            Ok::<_, SinkError>(producer)
        })
        .await
        .map_err(|e| restart("starting the producer", e))??;
        self.last_commit = Instant::now();
        self.producer = Some(producer.clone());
        Ok(producer)
    }

    async fn enqueue(
        &mut self,
        outputs: &[OutputRecord],
        position: &Position,
    ) -> Result<(), SinkError> {
        let producer = self.producer().await?;
        // Set before producing: an output enqueued before a failure is in the transaction too.
        self.holds_outputs |= !outputs.is_empty();
        for out in outputs {
            // Some outputs may be in the transaction without their offset: it must never commit.
            produce::enqueue(&producer, out)
                .await
                .map_err(|e| restart("enqueueing an output", e.chain()))?;
        }
        self.pending = Some(position.clone());
        if self.last_commit.elapsed() >= self.interval() {
            self.commit_pending(true).await?;
        }
        Ok(())
    }

    /// How long the open transaction may stay open: short while readers wait for its outputs.
    fn interval(&self) -> Duration {
        if self.holds_outputs {
            self.commit_interval
        } else {
            self.offsets_interval
        }
    }

    /// Sends the pending position to the open transaction and commits it; begins the next one unless `last`.
    async fn commit_pending(&mut self, reopen: bool) -> Result<(), SinkError> {
        let (Some(position), Some(producer)) = (self.pending.clone(), self.producer.clone()) else {
            return Ok(());
        };
        let metadata = self.metadata.get().ok_or_else(|| {
            restart(
                "send_offsets_to_transaction",
                "the consumer is not in a group",
            )
        })?;
        let (topic, partition, timeout) = (self.topic.clone(), self.partition, self.call_timeout);
        let committed = tokio::task::spawn_blocking(move || {
            let mut offsets = TopicPartitionList::with_capacity(1);
            offsets
                .add_partition_offset(&topic, partition, Offset::Offset(position.next))
                .map_err(|e| restart("building the offsets", e))?;
            producer
                .send_offsets_to_transaction(&offsets, &metadata, timeout)
                .map_err(|e| restart("send_offsets_to_transaction", e))?;
            producer
                .commit_transaction(timeout)
                .map_err(|e| restart("commit_transaction", e))?;
            if reopen {
                producer
                    .begin_transaction()
                    .map_err(|e| restart("begin_transaction", e))?;
            }
            Ok::<_, SinkError>(())
        })
        .await
        .map_err(|e| restart("committing", e))?;
        if let Err(err) = committed {
            self.abort_open().await;
            return Err(err);
        }
        self.pending = None;
        self.holds_outputs = false;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Aborts the open transaction (bounded), so that the next owner does not wait for its timeout; the
    /// producer is dropped (a new one is created if the lane goes on).
    async fn abort_open(&mut self) {
        self.pending = None;
        self.holds_outputs = false;
        if let Some(producer) = self.producer.take() {
            let timeout = self.call_timeout;
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(err) = producer.abort_transaction(timeout) {
                    tracing::warn!(error = %err, "aborting the Kafka transaction failed; the producer is dropped anyway");
                }
            })
            .await;
        }
    }
}

impl LaneSink for Sink {
    type Unit = ();

    fn gaps(&self) -> bool {
        false
    }

    fn keeps_partial(&self) -> bool {
        true
    }

    async fn start(&mut self) -> Result<(), SinkError> {
        self.producer().await.map(|_| ())
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        self.producer().await.map(|_| ())
    }

    fn db(_unit: &mut ()) -> Option<&mut PgConnection> {
        None
    }

    async fn commit(
        &mut self,
        _unit: (),
        outputs: Vec<OutputRecord>,
        position: &Position,
    ) -> Result<(), SinkError> {
        self.enqueue(&outputs, position).await
    }

    async fn abort(&mut self, _unit: ()) {}

    async fn dead_letter(
        &mut self,
        letter: OutputRecord,
        position: &Position,
    ) -> Result<(), SinkError> {
        self.enqueue(std::slice::from_ref(&letter), position).await
    }

    fn due(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|_| self.last_commit + self.interval())
    }

    async fn flush(&mut self, _position: &Position) -> Result<(), SinkError> {
        self.commit_pending(true).await
    }

    async fn close(&mut self, _position: &Position, graceful: bool) {
        if graceful && self.pending.is_some() {
            match self.commit_pending(false).await {
                Ok(()) => {
                    self.producer = None;
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = ?err, "committing the last transaction failed; its work is redone by the next owner")
                }
            }
        }
        self.abort_open().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Sink {
        Sink {
            config: ClientConfig::new(),
            producer: None,
            topic: "t".into(),
            partition: 0,
            metadata: Default::default(),
            call_timeout: Duration::from_secs(10),
            commit_interval: Duration::from_millis(100),
            offsets_interval: Duration::from_secs(1),
            pending: None,
            holds_outputs: false,
            last_commit: Instant::now(),
        }
    }

    #[test]
    fn a_transaction_is_due_after_the_interval_of_what_it_holds() {
        let mut sink = sink();
        assert_eq!(sink.due(), None, "nothing done, nothing to commit");
        sink.pending = Some(Position {
            next: 10,
            ahead: Vec::new(),
        });
        assert_eq!(
            sink.due(),
            Some(sink.last_commit + Duration::from_secs(1)),
            "offsets alone: the offset cadence"
        );
        sink.holds_outputs = true;
        assert_eq!(
            sink.due(),
            Some(sink.last_commit + Duration::from_millis(100)),
            "outputs (or dead letters): the transaction interval, counted from the last commit"
        );
    }
}
