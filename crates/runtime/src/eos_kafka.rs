//! Mode (a), exactly-once within Kafka: outputs, DLQ records and consumed offsets in one Kafka transaction.
//!
//! Guarantees:
//! - One transactional producer per consumer instance, `transactional.id = <group>.<instance id>`; creating it
//!   (`init_transactions`) fences any earlier producer with the same id and aborts its open transaction.
//! - A lane publishes a batch's outputs (or a DLQ record) **and** marks their offsets done in one critical
//!   section: under the read side of [`Txn`]'s lock, synchronously (no `.await` inside, so a task abort cannot
//!   split it). The committer takes the write side, so a transaction holds exactly the outputs of the offsets it
//!   commits — never an output without its offset or the reverse.
//! - The committer (the poll thread, every `transaction_commit_interval`, and on revoke/shutdown) sends the done
//!   offsets with the consumer's current group metadata (`send_offsets_to_transaction`, KIP-447: a consumer
//!   that lost its partitions is fenced by the group generation), commits, and begins the next transaction.
//!   Input is read `read_committed`.
//! - Every transactional call has a timeout. Any failure — abortable, fatal, or indefinite (a timeout, after
//!   which the outcome is unknown; see ANCHORS.md on Jepsen's findings) — aborts the transaction (bounded) and
//!   **rebuilds the pipeline**: the producer and the consumer are dropped and re-created, and processing resumes
//!   from the committed offsets, so no record's effect is kept twice or lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::RwLock;

use crate::error::HandlerError;
use crate::handler::Handler;
use crate::lane::{BatchOutcome, Lane};
use crate::produce;
use crate::record::{OutputRecord, Record};

/// The instance's transactional producer and the barrier between lanes and the committer.
pub(crate) struct Txn {
    producer: FutureProducer,
    barrier: RwLock<()>,
    /// Set when a critical section failed half-way: the open transaction must not commit.
    poisoned: AtomicBool,
    call_timeout: Duration,
}

/// A transactional call failed; the pipeline must be rebuilt.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxnError {
    #[error("{step} failed")]
    Kafka {
        step: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("the transaction is poisoned by a failed publish")]
    Poisoned,
    #[error("the consumer has no group metadata (not in a group)")]
    NoGroupMetadata,
}

impl Txn {
    /// Creates the producer, fences predecessors (`init_transactions`) and begins the first transaction.
    /// Blocking: call it on the poll thread.
    pub fn start(config: &ClientConfig, call_timeout: Duration) -> Result<Txn, TxnError> {
        let producer: FutureProducer = config.create().map_err(|source| TxnError::Kafka {
            step: "creating the producer",
            source,
        })?;
        producer
            .init_transactions(call_timeout)
            .map_err(|source| TxnError::Kafka {
                step: "init_transactions",
                source,
            })?;
        producer
            .begin_transaction()
            .map_err(|source| TxnError::Kafka {
                step: "begin_transaction",
                source,
            })?;
        Ok(Txn {
            producer,
            barrier: RwLock::new(()),
            poisoned: AtomicBool::new(false),
            call_timeout,
        })
    }

    /// In a lane: enqueues `outputs` into the open transaction and runs `mark` (marking the offset done), as one
    /// critical section against the committer.
    pub async fn publish(
        &self,
        outputs: &[OutputRecord],
        mark: impl FnOnce(),
    ) -> Result<(), HandlerError> {
        let _shared = self.barrier.read().await;
        // From here to the end: no await.
        if self.poisoned.load(Ordering::Acquire) {
            return Err(HandlerError::infrastructure(
                "the Kafka transaction failed and is being rebuilt",
            ));
        }
        for out in outputs {
            if let Err(err) = produce::enqueue(&self.producer, out) {
                // Some outputs may be in the transaction without their offset: it must never commit.
                self.poisoned.store(true, Ordering::Release);
                return Err(HandlerError::infrastructure(produce::ProduceError {
                    topic: out.topic.clone(),
                    cause: err.to_string(),
                }));
            }
        }
        mark();
        Ok(())
    }

    /// On the poll thread: with lanes held out, collects the offsets due (`collect` reads the lanes' progress:
    /// `(topic, partition, next offset)`), sends them to the transaction, commits it and — unless `last` — begins
    /// the next one. Returns the offsets committed (empty: nothing was due, the transaction stays open).
    pub fn commit(
        &self,
        collect: impl FnOnce() -> Vec<(Arc<str>, i32, i64)>,
        group_metadata: impl FnOnce() -> Option<ConsumerGroupMetadata>,
        last: bool,
    ) -> Result<Vec<(Arc<str>, i32, i64)>, TxnError> {
        let _exclusive = self.barrier.blocking_write();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(TxnError::Poisoned);
        }
        let due = collect();
        if due.is_empty() {
            return Ok(due);
        }
        let step = |step| move |source| TxnError::Kafka { step, source };
        let mut offsets = TopicPartitionList::with_capacity(due.len());
        for (topic, partition, next) in &due {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(step("building the offsets"))?;
        }
        let metadata = group_metadata().ok_or(TxnError::NoGroupMetadata)?;
        self.producer
            .send_offsets_to_transaction(&offsets, &metadata, self.call_timeout)
            .map_err(step("send_offsets_to_transaction"))?;
        self.producer
            .commit_transaction(self.call_timeout)
            .map_err(step("commit_transaction"))?;
        if !last {
            self.producer
                .begin_transaction()
                .map_err(step("begin_transaction"))?;
        }
        Ok(due)
    }

    /// Aborts the open transaction (bounded), so that the next instance does not wait for its timeout. Errors
    /// are logged: the producer is dropped next either way.
    pub fn abort(&self) {
        let _exclusive = self.barrier.blocking_write();
        self.poisoned.store(true, Ordering::Release);
        if let Err(err) = self.producer.abort_transaction(self.call_timeout) {
            tracing::warn!(error = %err, "aborting the Kafka transaction failed; the producer is dropped anyway");
        }
    }
}

/// Runs the handler over `records` until the first failure, then publishes the successful prefix's outputs and
/// marks it done in one critical section.
pub(crate) async fn process<H: Handler>(
    lane: &Lane<H>,
    txn: &Txn,
    records: &[Record],
    attempt: u32,
) -> BatchOutcome {
    let mut outputs = Vec::new();
    let mut done = 0;
    let mut failure = None;
    for record in records {
        let (result, outs) = lane.call(record, attempt, None).await;
        match result {
            Ok(()) => {
                outputs.extend(outs);
                done += 1;
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if done > 0 {
        let next = records[done - 1].offset + 1;
        if let Err(error) = txn.publish(&outputs, || lane.progress.set(next)).await {
            return BatchOutcome::failed_at_start(error);
        }
        lane.count_processed(&records[..done]);
    }
    BatchOutcome { done, failure }
}

pub(crate) async fn dead_letter<H: Handler>(
    lane: &Lane<H>,
    txn: &Txn,
    record: &Record,
    letter: &OutputRecord,
) -> Result<(), HandlerError> {
    txn.publish(std::slice::from_ref(letter), || lane.mark_skipped(record))
        .await
}
