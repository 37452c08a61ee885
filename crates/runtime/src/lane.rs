//! A partition lane: the task that processes one assigned partition's records in batches, keeping per-key order.
//!
//! Guarantees:
//! - **Batches**: each round takes what is queued, up to the group's batch size, and runs it as one unit of
//!   work (one handler call, one commit by the mode's [`LaneSink`]).
//! - **A failing record is isolated**: when a unit fails, the record that made it fail is found (named by the
//!   handler, or by bisecting the batch when it cannot tell), the rest is applied without it — without the
//!   records of its key that come after it, too, so per-key order holds — and that record alone goes through the
//!   retry policy (retried in place, or dead-lettered); the records held back behind it follow once it is
//!   settled. Without gaps (mode (a): a Kafka offset is one number) everything after the failing record waits.
//!   Infrastructure failures are never blamed on a record: the circuit breaker opens and the unit is retried.
//! - **Durable before done**: the lane's [`Position`] (and [`Progress`], which the poll thread commits) moves
//!   only once the sink made the work durable — outputs acknowledged, transaction committed, DLQ record written.
//! - **Attempts survive the lane**: a record's failed attempts are kept in the [`AttemptStore`], so a rebalance
//!   or a restart neither resets its retry budget nor falsifies `dlq.attempts`.
//! - **Bounded**: a lane holds at most `batch_size` records (its pending list) besides its queue.
//! - **Stoppable**: when its stop token fires (revoke, shutdown), a lane starts no new unit, abandons waits
//!   (retry backoff, circuit breaker) at once, finishes the unit in flight, and closes its sink — gracefully
//!   (committing what is pending) unless told to discard (a lost assignment).
//! - **Fenced**: when the sink finds another owner (mode (b)'s compare-and-set), the lane stops at once.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Instant, SystemTime};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::{Breaker, Permit};
use crate::delivery::{LaneSink, Position, SinkError};
use crate::dlq;
use crate::error::{ErrorClass, HandlerError};
use crate::handler::HandlerCtx;
use crate::inbox::InboxReceiver;
use crate::metrics::LaneMetrics;
use crate::processor::{Processor, Run};
use crate::record::Record;
use crate::retry::{Decision, FailureLog, decide};
use crate::shared::Shared;

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

/// How a lane is told to stop.
#[derive(Debug, Default)]
pub(crate) struct LaneControl {
    pub stop: CancellationToken,
    /// Set before `stop` when the partition was lost: nothing pending may be committed.
    pub discard: AtomicBool,
}

/// How a lane ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LaneExit {
    /// Its stop token fired (or its queue closed).
    Stopped,
    /// Another consumer owns the partition now.
    Fenced,
    /// The clients must be re-created (a failed Kafka transaction).
    Restart(String),
}

impl LaneExit {
    fn from_sink(error: SinkError) -> Option<LaneExit> {
        match error {
            SinkError::Fenced => Some(LaneExit::Fenced),
            SinkError::Restart(why) => Some(LaneExit::Restart(why)),
            SinkError::Unavailable(_) | SinkError::Permanent(_) => None,
        }
    }
}

/// The result of one unit of work.
#[derive(Debug)]
enum Attempt {
    /// Every record of the unit is done.
    Done,
    /// The handler failed; `kept` leading records are done nonetheless.
    Failed {
        kept: usize,
        index: Option<usize>,
        error: HandlerError,
    },
    /// The sink could not make the unit durable: nothing of it is done.
    Sink(SinkError),
}

/// What a round of [`Lane::isolate`] left to do.
#[derive(Debug, Default)]
struct Round {
    /// Records that failed (the first failure of each), in offset order: each is settled alone.
    failures: Vec<(i64, HandlerError)>,
    /// A dependency is down: the breaker must open.
    unavailable: Option<HandlerError>,
    /// A write refused for good (e.g. a missing output topic): the lane waits and tries again.
    stalled: Option<HandlerError>,
    exit: Option<LaneExit>,
}

/// One lane's state.
pub(crate) struct Lane<P, S> {
    pub shared: Arc<Shared<P>>,
    pub sink: S,
    pub topic: Arc<str>,
    pub partition: i32,
    pub progress: Arc<Progress>,
    pub metrics: LaneMetrics,
    /// Records taken and not done yet, in offset order.
    pending: Vec<Record>,
    /// Done offsets above the first pending record (and, from the start, offsets a previous owner applied
    /// ahead: skipped when they arrive).
    ahead: BTreeSet<i64>,
    /// One past the highest offset taken.
    high: Option<i64>,
    /// Whether the first record arrived (the attempt store is cleaned below it then).
    started: bool,
}

impl<P: Processor, S: LaneSink> Lane<P, S> {
    pub fn new(
        shared: Arc<Shared<P>>,
        sink: S,
        topic: Arc<str>,
        partition: i32,
        progress: Arc<Progress>,
        skip: Vec<i64>,
    ) -> Self {
        let metrics = shared.metrics.lane(&topic);
        Lane {
            shared,
            sink,
            topic,
            partition,
            progress,
            metrics,
            pending: Vec::new(),
            ahead: skip.into_iter().collect(),
            high: None,
            started: false,
        }
    }

    /// Processes records from `queue` until stopped; closes the sink; returns why it stopped.
    pub async fn run(mut self, mut queue: InboxReceiver, control: Arc<LaneControl>) -> LaneExit {
        let span = tracing::info_span!("lane", group = %self.shared.policy.group, topic = %self.topic, partition = self.partition);
        async move {
            let exit = match self.sink.start().await {
                Ok(()) => self.consume(&mut queue, &control.stop).await,
                Err(error) => LaneExit::from_sink(error)
                    .unwrap_or_else(|| LaneExit::Restart("the lane's sink could not start".into())),
            };
            let graceful = exit == LaneExit::Stopped && !control.discard.load(Ordering::Acquire);
            let position = self.position();
            self.sink.close(&position, graceful).await;
            exit
        }
        .instrument(span)
        .await
    }

    async fn consume(&mut self, queue: &mut InboxReceiver, stop: &CancellationToken) -> LaneExit {
        let batch_size = self.shared.policy.batch_size;
        let mut incoming = Vec::with_capacity(batch_size);
        loop {
            if self.pending.is_empty() {
                if queue.try_recv_many(&mut incoming, batch_size) == 0 {
                    // Nothing to do: what the sink keeps between back-to-back units goes back before the wait
                    // (or lingers, until its due time, for the next records).
                    self.sink.awaiting_records();
                    let due = self.sink.due();
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return LaneExit::Stopped,
                        n = queue.recv_many(&mut incoming, batch_size) => if n == 0 { return LaneExit::Stopped },
                        _ = sleep_until(due), if due.is_some() => {
                            if let Err(exit) = self.flush().await {
                                return exit;
                            }
                            continue;
                        }
                    }
                }
            } else {
                let room = batch_size.saturating_sub(self.pending.len());
                queue.try_recv_many(&mut incoming, room);
            }
            for record in incoming.drain(..) {
                self.take(record).await;
            }
            if stop.is_cancelled() {
                return LaneExit::Stopped;
            }
            if self.pending.is_empty() {
                continue;
            }
            if let Err(exit) = self.round(stop).await {
                return exit;
            }
            if self
                .sink
                .due()
                .is_some_and(|due| due <= tokio::time::Instant::now())
                && let Err(exit) = self.flush().await
            {
                return exit;
            }
        }
    }

    /// Takes a record from the queue: pending, or skipped when a previous owner already applied it.
    async fn take(&mut self, record: Record) {
        if !self.started {
            self.started = true;
            // Records before the first one delivered are done: forget their attempts.
            let store = &self.shared.attempts;
            store
                .clear(&self.topic, self.partition, record.offset, true)
                .await;
        }
        self.high = Some(
            self.high
                .map_or(record.offset + 1, |h| h.max(record.offset + 1)),
        );
        if self.ahead.contains(&record.offset) {
            tracing::debug!(
                offset = record.offset,
                "already applied ahead by a previous owner; skipped"
            );
            return;
        }
        self.pending.push(record);
    }

    /// One round: a unit of everything pending (one record when probing the breaker), failing records
    /// isolated and settled.
    async fn round(&mut self, stop: &CancellationToken) -> Result<(), LaneExit> {
        let shared = self.shared.clone();
        let Some(permit) = breaker_permit(&mut self.sink, &shared.breaker, stop).await else {
            return Err(LaneExit::Stopped);
        };
        let take = if permit.is_probe() {
            1
        } else {
            self.pending.len().min(shared.policy.batch_size)
        };
        let offsets: Vec<i64> = self.pending[..take].iter().map(|r| r.offset).collect();
        let round = {
            let _slot = slot(&mut self.sink, &shared.slots).await;
            self.isolate(offsets).await
        };
        match &round.unavailable {
            Some(error) => {
                permit.infra_failure();
                tracing::error!(
                    error = %error.chain(),
                    "dependency unavailable; circuit breaker open, consumption paused"
                );
            }
            None => permit.success(),
        }
        if let Some(exit) = round.exit {
            return Err(exit);
        }
        if let Some(error) = round.stalled {
            self.stall(&error, stop).await?;
        }
        for (offset, error) in round.failures {
            self.settle(offset, error, stop).await?;
        }
        Ok(())
    }

    /// Runs `offsets` (pending records, in order) as units until each is done or known to fail: a failing
    /// record is taken out (with the later records of its key when the sink allows gaps, with everything after
    /// it otherwise) and the rest is run again; a failure the handler cannot attribute is found by bisecting.
    async fn isolate(&mut self, offsets: Vec<i64>) -> Round {
        let gaps = self.sink.gaps();
        let mut round = Round::default();
        let mut segments: VecDeque<Vec<i64>> = VecDeque::from([offsets]);
        // Key → offset of its failed record: later records of the key wait for it.
        let mut blocked: HashMap<Option<Vec<u8>>, i64> = HashMap::new();
        while let Some(mut segment) = segments.pop_front() {
            if !blocked.is_empty() {
                segment.retain(|offset| {
                    let key = &self.record(*offset).key;
                    blocked.get(key).is_none_or(|failed| offset < failed)
                });
            }
            if segment.is_empty() {
                continue;
            }
            let (kept, index, error) = match self.attempt(&segment, 1).await {
                Attempt::Done => continue,
                Attempt::Sink(error) => {
                    match error {
                        SinkError::Permanent(e) => round.stalled = Some(e),
                        SinkError::Unavailable(e) => round.unavailable = Some(e),
                        SinkError::Fenced => round.exit = Some(LaneExit::Fenced),
                        SinkError::Restart(why) => round.exit = Some(LaneExit::Restart(why)),
                    }
                    return round;
                }
                Attempt::Failed { kept, index, error } => (kept, index, error),
            };
            self.metrics.failure(error.class());
            if error.class() == ErrorClass::Infrastructure {
                round.unavailable = Some(error);
                return round;
            }
            let rest = &segment[kept..];
            let culprit = match index {
                Some(index) => index.max(kept) - kept,
                None if rest.len() == 1 => 0,
                None => {
                    // Nobody to blame yet: run the halves as units of their own, the first half first.
                    let (left, right) = rest.split_at(rest.len() / 2);
                    segments.push_front(right.to_vec());
                    segments.push_front(left.to_vec());
                    continue;
                }
            };
            let failed = rest[culprit];
            round.failures.push((failed, error));
            if gaps {
                blocked.insert(self.record(failed).key.clone(), failed);
                let mut again = rest.to_vec();
                again.remove(culprit);
                segments.push_front(again);
            } else {
                // Everything after the failed record waits for it.
                segments.clear();
                segments.push_front(rest[..culprit].to_vec());
            }
        }
        round.failures.sort_by_key(|(offset, _)| *offset);
        round
    }

    /// One unit of work: the records at `offsets` through the handler, then the sink's commit.
    async fn attempt(&mut self, offsets: &[i64], attempt: u32) -> Attempt {
        let mut unit = match self.sink.begin().await {
            Ok(unit) => unit,
            Err(error) => return Attempt::Sink(error),
        };
        let first = self.index_of(offsets[0]);
        let contiguous = self.pending[first..]
            .iter()
            .map(|r| r.offset)
            .take(offsets.len())
            .eq(offsets.iter().copied());
        let owned: Vec<Record>;
        let records: &[Record] = if contiguous {
            &self.pending[first..first + offsets.len()]
        } else {
            owned = offsets.iter().map(|o| self.record(*o).clone()).collect();
            &owned
        };
        let group = self.shared.policy.group.as_str();
        let mut ctx = HandlerCtx::new(group, attempt, S::db(&mut unit));
        let started = Instant::now();
        let span = tracing::debug_span!(
            "handle",
            first = offsets[0],
            records = offsets.len(),
            attempt
        );
        let run = self
            .shared
            .processor
            .run(records, &mut ctx)
            .instrument(span)
            .await
            .0;
        self.metrics
            .processing
            .observe(started.elapsed().as_secs_f64());
        self.metrics.unit_records.observe(offsets.len() as f64);
        match run {
            Run::Ok => {
                let outputs = ctx.into_outputs(true);
                let position = self.position_after(offsets);
                match self.sink.commit(unit, outputs, &position).await {
                    Ok(()) => {
                        self.mark_done(offsets, position, true);
                        Attempt::Done
                    }
                    Err(error) => Attempt::Sink(error),
                }
            }
            Run::Failed { kept, index, error } => {
                let kept = if self.sink.keeps_partial() {
                    kept.min(offsets.len())
                } else {
                    0
                };
                if kept > 0 {
                    let outputs = ctx.into_outputs(false);
                    let position = self.position_after(&offsets[..kept]);
                    if let Err(error) = self.sink.commit(unit, outputs, &position).await {
                        return Attempt::Sink(error);
                    }
                    self.mark_done(&offsets[..kept], position, true);
                } else {
                    drop(ctx);
                    self.sink.abort(unit).await;
                }
                Attempt::Failed { kept, index, error }
            }
        }
    }

    /// Takes the record at `offset`, whose first attempt failed with `error`, through the retry policy until it
    /// succeeds or is dead-lettered. `Err` when the lane must stop first: the record is not done.
    async fn settle(
        &mut self,
        offset: i64,
        error: HandlerError,
        stop: &CancellationToken,
    ) -> Result<(), LaneExit> {
        let (topic, partition) = (self.topic.clone(), self.partition);
        let attempts = self.shared.attempts.clone();
        let now = SystemTime::now();
        let mut log = match attempts.load(&topic, partition, offset).await {
            Some(mut earlier) => {
                earlier.record(error.class(), now);
                earlier
            }
            None => FailureLog::first(error.class(), now),
        };
        attempts.save(&topic, partition, offset, &log).await;
        let mut error = error;
        loop {
            let class = error.class();
            match decide(&self.shared.policy, &log) {
                Decision::DeadLetter => {
                    self.dead_letter(offset, &error, &log, stop).await?;
                    attempts.clear(&topic, partition, offset, false).await;
                    return Ok(());
                }
                Decision::RetryAfter(wait) => {
                    self.metrics.retried(class);
                    tracing::warn!(
                        offset, attempt = log.attempts, error_class = %class, retry_in = ?wait,
                        error = %error.chain(), "record failed; retrying in place"
                    );
                    // Whatever is done must not wait with it (mode (a)'s open transaction), nor what the sink
                    // keeps between units (mode (b)'s connection).
                    self.flush().await?;
                    self.sink.idle();
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Err(LaneExit::Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Decision::OpenBreaker => {
                    self.metrics.retried(class);
                    tracing::error!(
                        offset, attempt = log.attempts, error = %error.chain(),
                        "dependency unavailable; circuit breaker open, consumption paused"
                    );
                }
            }
            let shared = self.shared.clone();
            let Some(permit) = breaker_permit(&mut self.sink, &shared.breaker, stop).await else {
                return Err(LaneExit::Stopped);
            };
            let outcome = {
                let _slot = slot(&mut self.sink, &shared.slots).await;
                self.attempt(&[offset], log.attempts + 1).await
            };
            let next = match outcome {
                Attempt::Done => {
                    permit.success();
                    attempts.clear(&topic, partition, offset, false).await;
                    tracing::info!(
                        offset,
                        attempts = log.attempts + 1,
                        "record succeeded after retries"
                    );
                    return Ok(());
                }
                Attempt::Failed { error, .. } => {
                    match error.class() {
                        ErrorClass::Infrastructure => permit.infra_failure(),
                        _ => permit.success(),
                    }
                    error
                }
                Attempt::Sink(SinkError::Unavailable(error)) => {
                    permit.infra_failure();
                    error
                }
                Attempt::Sink(SinkError::Permanent(error)) => {
                    permit.success();
                    self.stall(&error, stop).await?;
                    continue;
                }
                Attempt::Sink(other) => {
                    permit.success();
                    return Err(LaneExit::from_sink(other).unwrap_or(LaneExit::Stopped));
                }
            };
            self.metrics.failure(next.class());
            log.record(next.class(), SystemTime::now());
            attempts.save(&topic, partition, offset, &log).await;
            error = next;
        }
    }

    /// Writes the record at `offset` to its DLQ (retrying while that fails), then marks it done.
    async fn dead_letter(
        &mut self,
        offset: i64,
        error: &HandlerError,
        log: &FailureLog,
        stop: &CancellationToken,
    ) -> Result<(), LaneExit> {
        let letter = dlq::dead_letter(self.record(offset), &self.shared.policy.group, error, log);
        loop {
            let shared = self.shared.clone();
            let Some(permit) = breaker_permit(&mut self.sink, &shared.breaker, stop).await else {
                return Err(LaneExit::Stopped);
            };
            let position = self.position_after(&[offset]);
            match self.sink.dead_letter(letter.clone(), &position).await {
                Ok(()) => {
                    permit.success();
                    self.mark_done(&[offset], position, false);
                    self.metrics.dead_lettered(error.class());
                    tracing::error!(
                        offset, attempts = log.attempts, error_class = %error.class(),
                        dlq = %letter.topic, error = %error.chain(), "record dead-lettered"
                    );
                    return Ok(());
                }
                Err(SinkError::Unavailable(dlq_error)) => {
                    permit.infra_failure();
                    self.metrics.failure(ErrorClass::Infrastructure);
                    tracing::error!(offset, error = %dlq_error.chain(), "writing to the DLQ failed; retrying");
                }
                Err(SinkError::Permanent(dlq_error)) => {
                    permit.success();
                    self.stall(&dlq_error, stop).await?;
                }
                Err(other) => {
                    permit.success();
                    return Err(LaneExit::from_sink(other).unwrap_or(LaneExit::Stopped));
                }
            }
        }
    }

    /// A write was refused for a reason that does not pass by itself: say so loudly, wait (this partition only;
    /// the breaker stays closed for the others), and let the caller try again.
    async fn stall(
        &mut self,
        error: &HandlerError,
        stop: &CancellationToken,
    ) -> Result<(), LaneExit> {
        self.metrics.stalls.inc();
        let wait = self.shared.policy.transient_backoff_cap;
        tracing::error!(
            error = %error.chain(), retry_in = ?wait,
            "a write of this partition was refused and will be until an operator acts (a missing topic?); \
             the partition waits, the others go on"
        );
        self.sink.idle();
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(LaneExit::Stopped),
            _ = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// Commits what the sink holds pending (mode (a)'s transaction), if anything.
    async fn flush(&mut self) -> Result<(), LaneExit> {
        if self.sink.due().is_none() {
            return Ok(());
        }
        let position = self.position();
        match self.sink.flush(&position).await {
            Ok(()) => Ok(()),
            Err(error) => Err(LaneExit::from_sink(error).unwrap_or_else(|| {
                LaneExit::Restart("flushing the lane's pending work failed".into())
            })),
        }
    }

    fn index_of(&self, offset: i64) -> usize {
        self.pending
            .binary_search_by_key(&offset, |r| r.offset)
            .expect("the offset is pending")
    }

    fn record(&self, offset: i64) -> &Record {
        &self.pending[self.index_of(offset)]
    }

    /// The position now.
    fn position(&self) -> Position {
        self.position_after(&[])
    }

    /// The position once the records at `done` (pending ones, ascending) are done too: `next` is the first
    /// pending record not done (one past the last record taken when there is none), `ahead` every done offset
    /// from `next` on — including offsets a previous owner applied ahead that have not arrived yet.
    fn position_after(&self, done: &[i64]) -> Position {
        debug_assert!(done.is_sorted(), "done offsets come in pending order");
        let mut done_iter = done.iter().copied().peekable();
        let next = self
            .pending
            .iter()
            .map(|r| r.offset)
            .find(|&offset| !take_if_done(&mut done_iter, offset))
            .or(self.high)
            .unwrap_or(0);
        let mut ahead: Vec<i64> = self
            .ahead
            .range(next..)
            .copied()
            .chain(done.iter().copied().filter(|&o| o >= next))
            .collect();
        ahead.sort_unstable();
        ahead.dedup();
        Position { next, ahead }
    }

    /// The records at `offsets` (pending ones, ascending) are durable (`processed`: succeeded, or
    /// dead-lettered): the lane's position is now `position`.
    fn mark_done(&mut self, offsets: &[i64], position: Position, processed: bool) {
        debug_assert!(offsets.is_sorted(), "done offsets come in pending order");
        let now = chrono::Utc::now().timestamp_millis();
        let latency = self.metrics.latency.local();
        let mut done = offsets.iter().copied().peekable();
        let mut count = 0u64;
        self.pending.retain(|record| {
            if !take_if_done(&mut done, record.offset) {
                return true;
            }
            count += 1;
            if processed && let Some(at) = record.event_time_millis() {
                latency.observe((now - at).max(0) as f64 / 1000.0);
            }
            false
        });
        latency.flush();
        if processed {
            self.metrics.processed.inc_by(count);
        }
        self.ahead.clear();
        self.ahead.extend(position.ahead);
        self.progress.set(position.next);
    }
}

/// Walking ascending `done` offsets beside ascending pending offsets: whether `offset` is among them (the walk
/// moves past it, and past anything below it).
fn take_if_done(done: &mut std::iter::Peekable<impl Iterator<Item = i64>>, offset: i64) -> bool {
    while done.next_if(|&d| d < offset).is_some() {}
    done.next_if_eq(&offset).is_some()
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// A breaker permit; when one must be waited for, the sink first lets go of what it keeps between units.
async fn breaker_permit<'b, S: LaneSink>(
    sink: &mut S,
    breaker: &'b Breaker,
    stop: &CancellationToken,
) -> Option<Permit<'b>> {
    if let Some(permit) = breaker.try_acquire() {
        return Some(permit);
    }
    sink.idle();
    breaker.acquire(stop).await
}

/// A handler slot (`max_parallel_partitions`); when one must be waited for, the sink first lets go of what it
/// keeps between units.
async fn slot<'s, S: LaneSink>(sink: &mut S, slots: &'s Semaphore) -> SemaphorePermit<'s> {
    if let Ok(permit) = slots.try_acquire() {
        return permit;
    }
    sink.idle();
    slots
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

#[cfg(test)]
mod tests {
    //! The lane against a fake sink and a scripted handler: batching, isolation of a failing record (named or
    //! found by bisecting), per-key order, gaps or none, retries persisted across lanes, the breaker, a DLQ
    //! that refuses — no broker, no database.

    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    use prometheus::Registry;
    use sqlx::PgConnection;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::attempts::AttemptStore;
    use crate::breaker::Breaker;
    use crate::handler::{BatchError, BatchHandler, Handler};
    use crate::metrics::Metrics;
    use crate::options::ConsumerOptions;
    use crate::policy::{Backoff, GroupPolicy, READ_MODEL_PROJECTIONS, RetryPolicy};
    use crate::processor::{Batched, PerRecord};
    use crate::record::OutputRecord;

    /// What the fake sink was asked to make durable.
    #[derive(Debug, Default)]
    struct Journal {
        /// Per committed unit: the offsets whose outputs it carried, and the position.
        commits: Vec<(Vec<i64>, Position)>,
        letters: Vec<(i64, String, Position)>,
        aborts: usize,
        /// Times the lane said it had nothing left to do, and the number of commits before each.
        idles: Vec<usize>,
    }

    struct FakeSink {
        journal: Arc<Mutex<Journal>>,
        gaps: bool,
        keeps_partial: bool,
        /// Commits that fail as unavailable before one succeeds.
        unavailable_commits: Arc<Mutex<usize>>,
        /// Dead letters refused for good before one is written.
        refused_letters: Arc<Mutex<usize>>,
    }

    impl LaneSink for FakeSink {
        type Unit = ();
        fn gaps(&self) -> bool {
            self.gaps
        }
        fn keeps_partial(&self) -> bool {
            self.keeps_partial
        }
        async fn begin(&mut self) -> Result<(), SinkError> {
            Ok(())
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
            {
                let mut failing = self.unavailable_commits.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(SinkError::Unavailable(HandlerError::infrastructure(
                        "broker down",
                    )));
                }
            }
            let offsets = outputs
                .iter()
                .map(|o| {
                    String::from_utf8_lossy(o.value.as_deref().unwrap())
                        .parse()
                        .unwrap()
                })
                .collect();
            self.journal
                .lock()
                .unwrap()
                .commits
                .push((offsets, position.clone()));
            Ok(())
        }
        async fn abort(&mut self, _unit: ()) {
            self.journal.lock().unwrap().aborts += 1;
        }
        async fn dead_letter(
            &mut self,
            letter: OutputRecord,
            position: &Position,
        ) -> Result<(), SinkError> {
            {
                let mut refused = self.refused_letters.lock().unwrap();
                if *refused > 0 {
                    *refused -= 1;
                    return Err(SinkError::Permanent(HandlerError::business(
                        "unknown topic t.dlq",
                    )));
                }
            }
            let offset = letter
                .headers
                .iter()
                .find(|(k, _)| k == dlq::ORIGINAL_OFFSET)
                .map(|(_, v)| {
                    String::from_utf8_lossy(v.as_deref().unwrap())
                        .parse()
                        .unwrap()
                })
                .unwrap();
            let attempts = letter
                .headers
                .iter()
                .find(|(k, _)| k == dlq::ATTEMPTS)
                .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap()).into_owned())
                .unwrap();
            self.journal
                .lock()
                .unwrap()
                .letters
                .push((offset, attempts, position.clone()));
            Ok(())
        }
        fn due(&self) -> Option<tokio::time::Instant> {
            None
        }
        async fn flush(&mut self, _position: &Position) -> Result<(), SinkError> {
            Ok(())
        }
        fn idle(&mut self) {
            let mut journal = self.journal.lock().unwrap();
            let commits = journal.commits.len();
            journal.idles.push(commits);
        }
        async fn close(&mut self, _position: &Position, _graceful: bool) {}
    }

    /// Fails the records whose value is listed (business errors), naming them or not; records every call and
    /// produces each successful record's offset as an output.
    #[derive(Clone, Default)]
    struct Script {
        poison: Arc<Mutex<HashSet<String>>>,
        infra_once: Arc<Mutex<bool>>,
        blame: bool,
        calls: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl Script {
        fn failing(values: &[&str], blame: bool) -> Script {
            Script {
                poison: Arc::new(Mutex::new(values.iter().map(|v| v.to_string()).collect())),
                blame,
                ..Default::default()
            }
        }
        fn fails(&self, record: &Record) -> bool {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap()).into_owned();
            self.poison.lock().unwrap().contains(&value)
        }
        fn output(record: &Record) -> OutputRecord {
            OutputRecord::new("out", b"k".to_vec(), record.offset.to_string().into_bytes())
        }
    }

    impl BatchHandler for Script {
        async fn handle_batch(
            &self,
            records: &[Record],
            ctx: &mut HandlerCtx<'_>,
        ) -> Result<(), BatchError> {
            self.calls
                .lock()
                .unwrap()
                .push(records.iter().map(|r| r.offset).collect());
            if std::mem::take(&mut *self.infra_once.lock().unwrap()) {
                return Err(BatchError::unknown(HandlerError::infrastructure("db down")));
            }
            for (i, record) in records.iter().enumerate() {
                if self.fails(record) {
                    let error = HandlerError::business(format!("poison at {}", record.offset));
                    return Err(if self.blame {
                        BatchError::at(i, error)
                    } else {
                        BatchError::unknown(error)
                    });
                }
                ctx.produce(Script::output(record));
            }
            Ok(())
        }
    }

    impl Handler for Script {
        async fn handle(
            &self,
            record: &Record,
            ctx: &mut HandlerCtx<'_>,
        ) -> Result<(), HandlerError> {
            self.calls.lock().unwrap().push(vec![record.offset]);
            if self.fails(record) {
                return Err(HandlerError::business("poison"));
            }
            ctx.produce(Script::output(record));
            Ok(())
        }
    }

    /// (offset, key, value) → a record of topic `t`, partition 0.
    fn rec(offset: i64, key: &str, value: &str) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: None,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    struct Harness<P> {
        shared: Arc<Shared<P>>,
        journal: Arc<Mutex<Journal>>,
        unavailable_commits: Arc<Mutex<usize>>,
        refused_letters: Arc<Mutex<usize>>,
        registry: Registry,
    }

    /// Business errors: 2 retries 10 ms apart, then the DLQ.
    fn harness<P: Processor>(processor: P, attempts: AttemptStore) -> Harness<P> {
        harness_with(
            processor,
            attempts,
            GroupPolicy::spec(READ_MODEL_PROJECTIONS).unwrap(),
        )
    }

    fn harness_with<P: Processor>(
        processor: P,
        attempts: AttemptStore,
        mut policy: GroupPolicy,
    ) -> Harness<P> {
        policy.retry = RetryPolicy {
            max_retries: 2,
            backoff: Backoff::Fixed {
                interval: Duration::from_millis(10),
            },
        };
        let options = ConsumerOptions {
            breaker_probe_initial: Duration::from_millis(50),
            breaker_probe_max: Duration::from_millis(100),
            ..Default::default()
        };
        let registry = Registry::new();
        let metrics = Metrics::register(&registry, &policy.group).unwrap();
        Harness {
            shared: Arc::new(Shared {
                breaker: Breaker::new(
                    options.breaker_probe_initial,
                    options.breaker_probe_max,
                    |_| {},
                ),
                policy,
                options,
                processor,
                metrics,
                slots: Semaphore::new(4),
                readiness: Default::default(),
                attempts,
                pool: sqlx::postgres::PgPoolOptions::new()
                    .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                    .unwrap(),
                kafka: Default::default(),
                instance_id: "test".into(),
            }),
            journal: Default::default(),
            unavailable_commits: Default::default(),
            refused_letters: Default::default(),
            registry,
        }
    }

    impl<P: Processor> Harness<P> {
        /// Runs a lane over `records` (all queued before it starts, so they form one batch) until `done`
        /// holds for the journal, then stops it.
        async fn run(
            &self,
            records: Vec<Record>,
            gaps: bool,
            keeps_partial: bool,
            skip: Vec<i64>,
            done: impl Fn(&Journal) -> bool,
        ) {
            let sink = FakeSink {
                journal: self.journal.clone(),
                gaps,
                keeps_partial,
                unavailable_commits: self.unavailable_commits.clone(),
                refused_letters: self.refused_letters.clone(),
            };
            let lane = Lane::new(
                self.shared.clone(),
                sink,
                "t".into(),
                0,
                Progress::new(),
                skip,
            );
            let (tx, rx) = crate::inbox::inbox(500);
            let mut records: VecDeque<Record> = records.into();
            tx.push(&mut records);
            assert!(records.is_empty(), "at most 500 records per test");
            let control = Arc::new(LaneControl::default());
            let task = tokio::spawn(lane.run(rx, control.clone()));
            for _ in 0..100_000 {
                if done(&self.journal.lock().unwrap()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            control.stop.cancel();
            assert_eq!(task.await.unwrap(), LaneExit::Stopped);
            assert!(
                done(&self.journal.lock().unwrap()),
                "{:?}",
                self.journal.lock().unwrap()
            );
        }

        fn counter(&self, name: &str) -> f64 {
            self.registry
                .gather()
                .into_iter()
                .filter(|f| f.name() == name)
                .flat_map(|f| f.get_metric().to_vec())
                .map(|m| m.get_counter().get_value())
                .sum()
        }
    }

    fn pos(next: i64, ahead: &[i64]) -> Position {
        Position {
            next,
            ahead: ahead.to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_batch_is_one_unit_and_one_commit() {
        let script = Script::default();
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        let records = (10..15).map(|o| rec(o, &format!("k{o}"), "ok")).collect();
        h.run(records, true, true, vec![], |j| !j.commits.is_empty())
            .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(
            journal.commits,
            vec![(vec![10, 11, 12, 13, 14], pos(15, &[]))]
        );
        assert_eq!(
            *script.calls.lock().unwrap(),
            vec![vec![10, 11, 12, 13, 14]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_sink_lets_go_of_what_it_keeps_only_when_nothing_is_left_to_do() {
        // Five queued records in batches of two: three back-to-back units, then the lane waits.
        let mut policy = GroupPolicy::spec(READ_MODEL_PROJECTIONS).unwrap();
        policy.batch_size = 2;
        let h = harness_with(Batched(Script::default()), AttemptStore::memory(), policy);
        let records = (10..15).map(|o| rec(o, &format!("k{o}"), "ok")).collect();
        h.run(records, true, true, vec![], |j| !j.idles.is_empty())
            .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(journal.commits.len(), 3, "{journal:?}");
        assert_eq!(
            journal.idles,
            vec![3],
            "idle once, after the third unit, never between units"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_sink_lets_go_of_what_it_keeps_before_a_retry_wait() {
        // b@11 fails twice (10 ms apart) and is dead-lettered; each wait starts with the sink let go.
        let script = Script::failing(&["bad"], true);
        let h = harness(Batched(script), AttemptStore::memory());
        let records = vec![rec(10, "a", "ok"), rec(11, "b", "bad")];
        h.run(records, true, true, vec![], |j| {
            j.letters.len() == 1 && !j.idles.is_empty()
        })
        .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(
            journal.idles,
            vec![1, 1, 1],
            "before each of the two retry waits (after the first unit's commit), and when done: {journal:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_named_failure_is_isolated_the_rest_applied_and_its_key_held_back() {
        // b@11 fails; a and c go on at once, b@12 waits for b@11, which is dead-lettered after 3 attempts.
        let script = Script::failing(&["bad"], true);
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        let records = vec![
            rec(10, "a", "ok"),
            rec(11, "b", "bad"),
            rec(12, "b", "ok"),
            rec(13, "c", "ok"),
        ];
        h.run(records, true, true, vec![], |j| j.commits.len() == 2)
            .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(
            journal.commits[0],
            (vec![10, 13], pos(11, &[13])),
            "the rest, with a gap for b"
        );
        assert_eq!(journal.letters, vec![(11, "3".to_string(), pos(12, &[13]))]);
        assert_eq!(
            journal.commits[1],
            (vec![12], pos(14, &[])),
            "b's follower after b"
        );
        let calls = script.calls.lock().unwrap();
        assert_eq!(calls[0], vec![10, 11, 12, 13]);
        assert_eq!(
            calls[1],
            vec![10, 13],
            "b@12 is not applied before b@11 is settled"
        );
        assert_eq!(
            &calls[2..],
            &[vec![11], vec![11], vec![12]][..],
            "then b@11 alone (2 retries), then b@12"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unattributed_failure_is_found_by_bisecting() {
        let script = Script::failing(&["bad"], false);
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        let records: Vec<Record> = (0..8)
            .map(|o| rec(o, &format!("k{o}"), if o == 5 { "bad" } else { "ok" }))
            .collect();
        h.run(records, true, true, vec![], |j| {
            j.commits.len() >= 2 && !j.letters.is_empty()
        })
        .await;
        let journal = h.journal.lock().unwrap();
        let applied: Vec<i64> = journal
            .commits
            .iter()
            .flat_map(|(o, _)| o.clone())
            .collect();
        assert_eq!(
            applied,
            vec![0, 1, 2, 3, 4, 6, 7],
            "everything but the culprit, once"
        );
        assert_eq!(journal.letters[0].0, 5);
        assert_eq!(journal.letters[0].2, pos(8, &[]));
    }

    #[tokio::test(start_paused = true)]
    async fn without_gaps_everything_after_the_failure_waits() {
        let script = Script::failing(&["bad"], true);
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        let records = vec![rec(10, "a", "ok"), rec(11, "b", "bad"), rec(12, "c", "ok")];
        h.run(records, false, true, vec![], |j| j.commits.len() == 2)
            .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(journal.commits[0], (vec![10], pos(11, &[])));
        assert_eq!(journal.letters[0].2, pos(12, &[]));
        assert_eq!(journal.commits[1], (vec![12], pos(13, &[])));
    }

    #[tokio::test(start_paused = true)]
    async fn per_record_handlers_keep_the_prefix_or_replay_it_when_the_unit_is_rolled_back() {
        // At-least-once: records before the failure stand (their outputs are committed, not replayed).
        let script = Script::failing(&["bad"], true);
        let h = harness(PerRecord(script.clone()), AttemptStore::memory());
        let records = vec![rec(1, "a", "ok"), rec(2, "b", "bad"), rec(3, "c", "ok")];
        h.run(records, true, true, vec![], |j| {
            !j.letters.is_empty() && j.commits.len() == 2
        })
        .await;
        assert_eq!(h.journal.lock().unwrap().commits[0], (vec![1], pos(2, &[])));
        assert_eq!(
            script.calls.lock().unwrap()[..3],
            [vec![1], vec![2], vec![3]]
        );

        // Mode (b): the failure rolled the prefix back, so it runs again.
        let script = Script::failing(&["bad"], true);
        let h = harness(PerRecord(script.clone()), AttemptStore::memory());
        let records = vec![rec(1, "a", "ok"), rec(2, "b", "bad"), rec(3, "c", "ok")];
        h.run(records, true, false, vec![], |j| !j.letters.is_empty())
            .await;
        let journal = h.journal.lock().unwrap();
        assert_eq!(journal.aborts, 3, "the first unit and b's two retries");
        assert_eq!(journal.commits[0], (vec![1, 3], pos(2, &[3])));
        assert_eq!(script.calls.lock().unwrap()[..2], [vec![1], vec![2]]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_carry_over_to_the_next_owner_and_dlq_attempts_is_the_true_count() {
        let store = AttemptStore::memory();
        let now = SystemTime::now();
        let mut earlier = FailureLog::first(ErrorClass::Business, now);
        earlier.record(ErrorClass::Business, now);
        store.save("t", 0, 7, &earlier).await;
        let script = Script::failing(&["bad"], true);
        let h = harness(Batched(script.clone()), store.clone());
        h.run(vec![rec(7, "a", "bad")], true, true, vec![], |j| {
            !j.letters.is_empty()
        })
        .await;
        assert_eq!(
            script.calls.lock().unwrap().len(),
            1,
            "two attempts were made before: one more and the policy (3) is spent"
        );
        assert_eq!(h.journal.lock().unwrap().letters[0].1, "3");
        assert!(store.load("t", 0, 7).await.is_none(), "forgotten once done");
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_a_previous_owner_applied_ahead_are_skipped_and_kept_in_the_position() {
        let script = Script::default();
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        // The previous owner stopped at 10 with 12 and 14 done ahead.
        let records = (10..14).map(|o| rec(o, "k", "ok")).collect();
        h.run(records, true, true, vec![12, 14], |j| !j.commits.is_empty())
            .await;
        assert_eq!(*script.calls.lock().unwrap(), vec![vec![10, 11, 13]]);
        assert_eq!(
            h.journal.lock().unwrap().commits[0].1,
            pos(14, &[14]),
            "14 has not arrived yet and stays done"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_dependencies_open_the_breaker_and_blame_no_record() {
        let script = Script::default();
        *script.infra_once.lock().unwrap() = true;
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        *h.unavailable_commits.lock().unwrap() = 1;
        let records = vec![rec(1, "a", "ok"), rec(2, "b", "ok")];
        h.run(records, true, true, vec![], |j| j.commits.len() == 2)
            .await;
        let journal = h.journal.lock().unwrap();
        assert!(journal.letters.is_empty());
        // The handler's outage, then the sink's: each time a probe of one record, then the rest.
        assert_eq!(journal.commits[0].0, vec![1], "a probe risks one record");
        assert_eq!(journal.commits.last().unwrap().1, pos(3, &[]));
        assert_eq!(
            h.counter("checkout_consumer_records_dead_lettered_total"),
            0.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_topic_that_refuses_stalls_this_partition_without_opening_the_breaker() {
        let script = Script::failing(&["bad"], true);
        let h = harness(Batched(script.clone()), AttemptStore::memory());
        *h.refused_letters.lock().unwrap() = 2;
        h.run(vec![rec(1, "a", "bad")], true, true, vec![], |j| {
            !j.letters.is_empty()
        })
        .await;
        assert_eq!(h.counter("checkout_consumer_partition_stalls_total"), 2.0);
        assert_eq!(h.shared.breaker.state(), crate::BreakerState::Closed);
        assert_eq!(h.journal.lock().unwrap().letters[0].2, pos(2, &[]));
    }
}
