//! The delivery mode as one strategy: how a group's work becomes durable and where its position is kept.
//!
//! Two traits, called by the poll thread and the lanes and by nothing else:
//! - [`Delivery`], one per pipeline: whether the poll thread commits offsets to Kafka, and what a newly assigned
//!   partition needs before fetching starts (where to start, which offsets are already done, its lane's sink);
//! - [`LaneSink`], one per partition lane: open a unit of work, make it durable with its outputs and the
//!   lane's new [`Position`], or drop it; write a dead letter; flush what is pending; close.
//!
//! The three modes: [`at_least_once`] (outputs acknowledged, then the offset is committed to Kafka),
//! [`kafka_txn`] (mode (a): outputs and offsets in one Kafka transaction per partition), [`db_offsets`] (mode
//! (b): the handler's writes, the outputs' acknowledgement and the position in one PostgreSQL transaction).
//! [`pipeline`] is the one place that picks the mode from the group's guarantee. The modes import nothing of the
//! lane, the poll thread or the consumer, and a fake sink unit-tests the lane (see `lane.rs`).

pub(crate) mod at_least_once;
pub(crate) mod db_offsets;
pub(crate) mod kafka_txn;

use std::future::Future;
use std::sync::Arc;

use sqlx::PgConnection;

use crate::error::HandlerError;
use crate::record::OutputRecord;

/// A lane's durable position: every record below `next` is done, and so is every offset in `ahead` (all above
/// `next`: records applied while an earlier record of another key waited for its retries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub next: i64,
    pub ahead: Vec<i64>,
}

/// Why a sink could not make work durable.
#[derive(Debug)]
pub(crate) enum SinkError {
    /// A dependency failed (broker, database): the work is not durable; retry (infrastructure errors through
    /// the circuit breaker).
    Unavailable(HandlerError),
    /// A write that will fail the same way again (e.g. the dead-letter topic does not exist): reported loudly;
    /// the lane retries slowly, on its own, without stopping the other partitions.
    Permanent(HandlerError),
    /// Another consumer owns the partition now: the lane stops without committing anything more.
    Fenced,
    /// The clients are unusable (a failed Kafka transaction): the pipeline must be re-created.
    Restart(String),
}

/// Where fetching starts for a newly assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seek {
    /// The group's committed offset in Kafka (or `auto.offset.reset` without one).
    Committed,
    Offset(i64),
    Beginning,
    End,
}

/// What a newly assigned partition needs before fetching starts.
pub(crate) struct Assigned<S> {
    pub topic: Arc<str>,
    pub partition: i32,
    pub seek: Seek,
    /// Offsets at or after the start that are already done (skipped when they arrive).
    pub skip: Vec<i64>,
    pub sink: S,
}

/// How a pipeline makes work durable; one value per pipeline (consumer and clients).
pub(crate) trait Delivery: Send + Sync + 'static {
    type Sink: LaneSink;

    /// Whether the poll thread commits the lanes' positions to Kafka (periodically, and synchronously on revoke
    /// and shutdown). Mode (a) commits inside its transactions instead.
    fn commits_to_kafka(&self) -> bool;

    /// Prepares newly assigned partitions. Blocking (the poll thread calls it); `Err` when what they need cannot
    /// be read now — the partitions then stay paused and the poll thread asks again.
    fn assign(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Assigned<Self::Sink>>, String>;

    /// The consumer's group generation changed (after every rebalance); `metadata` reads the consumer's current
    /// group metadata (mode (a) sends it with its offsets).
    fn group_changed(
        &self,
        _metadata: impl FnOnce() -> Option<rdkafka::consumer::ConsumerGroupMetadata>,
    ) {
    }
}

/// Makes one partition lane's work durable.
pub(crate) trait LaneSink: Send + 'static {
    /// An open unit of work (mode (b): the database transaction the handler writes through).
    type Unit: Send;

    /// Whether records after a held-back one may become done before it (their offsets kept in
    /// [`Position::ahead`]). Without gaps, a failing record holds back everything after it.
    fn gaps(&self) -> bool;

    /// Whether the effects of records a per-record handler finished before failing stand without the unit being
    /// committed (false in mode (b): they were written in the transaction that the failure rolls back).
    fn keeps_partial(&self) -> bool;

    /// Called once when the lane starts, before any record (mode (a): creates the partition's transactional
    /// producer, which fences the previous owner and aborts its open transaction — until then the partition's
    /// committed offset is unstable and fetching cannot even begin).
    fn start(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    fn begin(&mut self) -> impl Future<Output = Result<Self::Unit, SinkError>> + Send;

    /// The unit's database connection, handed to the handler.
    fn db(unit: &mut Self::Unit) -> Option<&mut PgConnection>;

    /// Makes the unit durable with `outputs`; once it returns `Ok` the lane's position is `position`.
    fn commit(
        &mut self,
        unit: Self::Unit,
        outputs: Vec<OutputRecord>,
        position: &Position,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Drops the unit's effects.
    fn abort(&mut self, unit: Self::Unit) -> impl Future<Output = ()> + Send;

    /// Writes a dead letter durably; once it returns `Ok` the lane's position is `position`.
    fn dead_letter(
        &mut self,
        letter: OutputRecord,
        position: &Position,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// When [`LaneSink::flush`] must run next (mode (a): its transaction's commit interval); `None`: never.
    fn due(&self) -> Option<tokio::time::Instant>;

    /// Commits what is pending (mode (a): the open transaction, with `position`).
    fn flush(&mut self, position: &Position) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The lane is about to wait — for records, a retry, the breaker or a handler slot — rather than start its
    /// next unit: let go of what it kept between units (mode (b): its database connection, back to the pool).
    fn idle(&mut self) {}

    /// The lane is about to wait for records: as [`LaneSink::idle`], unless the sink keeps its pending work open
    /// a little longer for the next ones ([`LaneSink::due`] then says until when; mode (b)'s linger).
    fn awaiting_records(&mut self) {
        self.idle();
    }

    /// The lane ends: commit what is pending (`graceful`) or drop it.
    fn close(&mut self, position: &Position, graceful: bool) -> impl Future<Output = ()> + Send;
}

/// A produce or database failure as a sink error: infrastructure or transient → unavailable; anything else the
/// dependency refused for good → permanent.
pub(crate) fn classify(error: HandlerError) -> SinkError {
    use crate::error::ErrorClass;
    match error.class() {
        ErrorClass::Infrastructure | ErrorClass::Transient => SinkError::Unavailable(error),
        ErrorClass::Schema | ErrorClass::Business => SinkError::Permanent(error),
    }
}

/// Runs `future` on `runtime` and waits for it from this (non-runtime) thread, at most `timeout`.
pub(crate) fn block_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    timeout: std::time::Duration,
    future: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = runtime.spawn(async move {
        let _ = tx.send(future.await);
    });
    let result = rx.recv_timeout(timeout).ok();
    task.abort();
    result
}
