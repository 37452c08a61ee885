//! A partition lane: the task that processes one assigned partition's records, strictly in offset order.
//!
//! Guarantees:
//! - **Order**: one record (or one batch, in order) at a time; a failed record is retried in place, so no later
//!   record of the partition is processed before it is settled (succeeded or dead-lettered).
//! - **Durable before done**: [`Progress::done`] (the next offset whose predecessors are all durable) advances only
//!   after the mode's durability point — output acks (at-least-once), the transaction critical section (mode a),
//!   the database commit with the offset (mode b), or the DLQ ack.
//! - **Bounded**: a lane holds at most `batch_size` records (its queue) plus the batch it is processing.
//! - **Stoppable**: when its stop token fires (revoke, shutdown), a lane starts no new attempt, abandons waits
//!   (retry backoff, circuit breaker) at once, finishes the attempt in flight, and exits.
//! - **Fenced**: in mode (b), when the offset compare-and-set finds another writer, the lane exits with
//!   [`LaneExit::Fenced`] and commits nothing more.
//!
//! Mode-specific work (how a batch becomes durable, how a dead letter is written) lives in `at_least_once.rs`,
//! `eos_kafka.rs` and `eos_db.rs`; this file is the loop, the retry flow and the circuit breaker protocol.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime};

use futures_util::FutureExt;
use rdkafka::producer::FutureProducer;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::Shared;
use crate::error::{ErrorClass, HandlerError};
use crate::handler::{Handler, HandlerCtx};
use crate::metrics::LaneMetrics;
use crate::record::{OutputRecord, Record};
use crate::retry::{Decision, FailureLog, decide};
use crate::{at_least_once, dlq, eos_db, eos_kafka};

/// Where a lane's results go: the mode's producer, transaction or database.
#[derive(Clone)]
pub(crate) enum Sink {
    AtLeastOnce(FutureProducer),
    Kafka(Arc<eos_kafka::Txn>),
    Db {
        pool: PgPool,
        producer: FutureProducer,
    },
}

/// The lane's durable position, read by the poll thread to commit.
#[derive(Debug)]
pub(crate) struct Progress {
    done: AtomicI64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            done: AtomicI64::new(-1),
        })
    }

    /// The next offset to process: every record before it is durable. `None` before the first record.
    pub fn done(&self) -> Option<i64> {
        let done = self.done.load(Ordering::Acquire);
        (done >= 0).then_some(done)
    }

    pub(crate) fn set(&self, next_offset: i64) {
        self.done.fetch_max(next_offset, Ordering::AcqRel);
    }
}

/// How a lane ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneExit {
    /// Its stop token fired (or its queue closed).
    Stopped,
    /// Mode (b): another consumer stored an offset for this partition; this lane no longer owns it.
    Fenced,
}

/// Mode (b)'s compare-and-set found another writer.
#[derive(Debug)]
pub(crate) struct Fenced;

/// The result of processing a prefix of the pending records.
pub(crate) struct BatchOutcome {
    /// How many records, from the first, are done (durable).
    pub done: usize,
    /// Why the record after them failed, if one did.
    pub failure: Option<HandlerError>,
}

impl BatchOutcome {
    pub fn failed_at_start(error: HandlerError) -> Self {
        BatchOutcome {
            done: 0,
            failure: Some(error),
        }
    }
}

/// One lane's state.
pub(crate) struct Lane<H> {
    pub shared: Arc<Shared<H>>,
    pub sink: Sink,
    pub topic: Arc<str>,
    pub partition: i32,
    pub progress: Arc<Progress>,
    pub metrics: LaneMetrics,
    /// Mode (b): `consumer_offsets.next_offset` as this lane last read or wrote it (`None`: no row yet) — the
    /// expected value of the compare-and-set.
    pub stored: Option<i64>,
}

impl<H: Handler> Lane<H> {
    /// Processes records from `queue` until stopped. Returns why it stopped.
    pub async fn run(
        mut self,
        mut queue: mpsc::Receiver<Record>,
        stop: CancellationToken,
    ) -> LaneExit {
        let span = tracing::info_span!("lane", group = %self.shared.policy.group, topic = %self.topic, partition = self.partition);
        async move {
            let batch_size = self.shared.policy.batch_size;
            let mut pending: Vec<Record> = Vec::with_capacity(batch_size);
            loop {
                if pending.is_empty() {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return LaneExit::Stopped,
                        n = queue.recv_many(&mut pending, batch_size) => if n == 0 { return LaneExit::Stopped },
                    }
                } else {
                    while pending.len() < batch_size {
                        match queue.try_recv() {
                            Ok(record) => pending.push(record),
                            Err(_) => break,
                        }
                    }
                }
                if stop.is_cancelled() {
                    return LaneExit::Stopped;
                }
                let shared = self.shared.clone();
                let Some(permit) = shared.breaker.acquire(&stop).await else { return LaneExit::Stopped };
                // A half-open probe risks a single record.
                let take = if permit.is_probe() { 1 } else { pending.len() };
                let outcome = {
                    let _slot = shared.slots.acquire().await.expect("the semaphore is never closed");
                    match self.process(&pending[..take], 1).await {
                        Ok(outcome) => outcome,
                        Err(Fenced) => return LaneExit::Fenced,
                    }
                };
                report(permit, outcome.failure.as_ref());
                pending.drain(..outcome.done);
                if let Some(error) = outcome.failure {
                    match self.settle(&pending[0], error, &stop).await {
                        Ok(()) => {
                            pending.remove(0);
                        }
                        Err(exit) => return exit,
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Takes a record whose first attempt failed with `error` through the retry policy until it succeeds or is
    /// dead-lettered. `Err` when the lane must exit first (stop, fencing): the record is not done.
    async fn settle(
        &mut self,
        record: &Record,
        error: HandlerError,
        stop: &CancellationToken,
    ) -> Result<(), LaneExit> {
        let mut log = FailureLog::first(error.class(), SystemTime::now());
        let mut error = error;
        loop {
            let class = error.class();
            self.metrics.failure(class);
            match decide(&self.shared.policy, &log) {
                Decision::DeadLetter => return self.dead_letter(record, &error, &log, stop).await,
                Decision::RetryAfter(wait) => {
                    self.metrics.retried(class);
                    tracing::warn!(
                        offset = record.offset, attempt = log.attempts, error_class = %class, retry_in = ?wait,
                        error = %error.chain(), "record failed; retrying in place"
                    );
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Err(LaneExit::Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Decision::OpenBreaker => {
                    self.metrics.retried(class);
                    tracing::error!(
                        offset = record.offset, attempt = log.attempts, error = %error.chain(),
                        "dependency unavailable; circuit breaker open, consumption paused"
                    );
                }
            }
            let shared = self.shared.clone();
            let Some(permit) = shared.breaker.acquire(stop).await else {
                return Err(LaneExit::Stopped);
            };
            let outcome = {
                let _slot = shared
                    .slots
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                self.process(std::slice::from_ref(record), log.attempts + 1)
                    .await
                    .map_err(|Fenced| LaneExit::Fenced)?
            };
            report(permit, outcome.failure.as_ref());
            match outcome.failure {
                None => {
                    tracing::info!(
                        offset = record.offset,
                        attempts = log.attempts + 1,
                        "record succeeded after retries"
                    );
                    return Ok(());
                }
                Some(next) => {
                    log.record(next.class(), SystemTime::now());
                    error = next;
                }
            }
        }
    }

    /// Writes the record to its DLQ (retrying while that fails: a DLQ outage is an infrastructure failure), then
    /// marks it done.
    async fn dead_letter(
        &mut self,
        record: &Record,
        error: &HandlerError,
        log: &FailureLog,
        stop: &CancellationToken,
    ) -> Result<(), LaneExit> {
        let letter = dlq::dead_letter(record, &self.shared.policy.group, error, log);
        loop {
            let shared = self.shared.clone();
            let Some(permit) = shared.breaker.acquire(stop).await else {
                return Err(LaneExit::Stopped);
            };
            let written = match self.sink.clone() {
                Sink::AtLeastOnce(producer) => {
                    at_least_once::dead_letter(self, &producer, record, &letter).await
                }
                Sink::Kafka(txn) => eos_kafka::dead_letter(self, &txn, record, &letter).await,
                Sink::Db { pool, producer } => {
                    eos_db::dead_letter(self, &pool, &producer, record, &letter)
                        .await
                        .map_err(|Fenced| LaneExit::Fenced)?
                }
            };
            match written {
                Ok(()) => {
                    permit.success();
                    self.metrics.dead_lettered(error.class());
                    tracing::error!(
                        offset = record.offset, attempts = log.attempts, error_class = %error.class(),
                        dlq = %letter.topic, error = %error.chain(), "record dead-lettered"
                    );
                    return Ok(());
                }
                Err(dlq_error) => {
                    permit.infra_failure();
                    self.metrics.failure(ErrorClass::Infrastructure);
                    tracing::error!(offset = record.offset, error = %dlq_error.chain(), "writing to the DLQ failed; retrying");
                }
            }
        }
    }

    /// Processes `records` (in order, stopping at the first failure) and makes the successful prefix durable.
    async fn process(&mut self, records: &[Record], attempt: u32) -> Result<BatchOutcome, Fenced> {
        match self.sink.clone() {
            Sink::AtLeastOnce(producer) => {
                Ok(at_least_once::process(self, &producer, records, attempt).await)
            }
            Sink::Kafka(txn) => Ok(eos_kafka::process(self, &txn, records, attempt).await),
            Sink::Db { pool, producer } => {
                eos_db::process(self, &pool, &producer, records, attempt).await
            }
        }
    }

    /// Calls the handler for one record: times it, turns a panic into a business error, returns its outputs.
    pub(crate) async fn call(
        &self,
        record: &Record,
        attempt: u32,
        db: Option<&mut PgConnection>,
    ) -> (Result<(), HandlerError>, Vec<OutputRecord>) {
        let mut ctx = HandlerCtx::new(&self.shared.policy.group, attempt, db);
        let started = Instant::now();
        let span = tracing::debug_span!("handle", offset = record.offset, attempt);
        let result = AssertUnwindSafe(
            self.shared
                .handler
                .handle(record, &mut ctx)
                .instrument(span),
        )
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(HandlerError::business(format!(
                "handler panicked: {}",
                panic_message(&panic)
            )))
        });
        self.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        let outputs = if result.is_ok() {
            ctx.into_outputs(true)
        } else {
            Vec::new()
        };
        (result, outputs)
    }

    /// Marks a dead-lettered record done (its DLQ record is durable): the offset moves past it.
    pub(crate) fn mark_skipped(&self, record: &Record) {
        self.progress.set(record.offset + 1);
    }

    /// Marks `records` (a prefix of the partition's pending records) done: their work is durable.
    pub(crate) fn mark_done(&self, records: &[Record]) {
        if let Some(last) = records.last() {
            self.progress.set(last.offset + 1);
            self.count_processed(records);
        }
    }

    /// The metrics of records processed successfully: count and end-to-end latency.
    pub(crate) fn count_processed(&self, records: &[Record]) {
        self.metrics.processed.inc_by(records.len() as u64);
        let now = chrono::Utc::now();
        for record in records {
            if let Some(at) = record.event_time() {
                let latency = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
                self.metrics.latency.observe(latency);
            }
        }
    }
}

/// Tells the breaker whether the attempt reached its dependencies.
fn report(permit: crate::breaker::Permit<'_>, failure: Option<&HandlerError>) {
    match failure.map(HandlerError::class) {
        Some(ErrorClass::Infrastructure) => permit.infra_failure(),
        _ => permit.success(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
