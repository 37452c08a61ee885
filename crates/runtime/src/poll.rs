//! The poll thread: the only place that touches the Kafka consumer.
//!
//! Guarantees:
//! - **Never blocks the async runtime**: the consumer (rdkafka `BaseConsumer` with our [`ConsumerContext`]) is
//!   polled on a dedicated OS thread, which keeps calling `poll` while handlers run or wait, so the consumer
//!   stays in its group however long a record is retried. Blocking calls (synchronous commits, reading stored
//!   positions) happen here too, each bounded.
//! - **Order and bounded memory**: each assigned partition has a lane fed through a bounded inbox (capacity =
//!   batch size, `inbox`). The records of a burst (up to `BURST`) gather in their partitions' stashes
//!   and move to the inboxes at its end, one lock and one wake-up per partition; what does not fit waits in the
//!   stash; when its share of the stash budget waits there
//!   (`buffer_bytes_per_partition`, at most `buffer_bytes_total` ÷ assigned partitions) the partition is
//!   **paused**, and it resumes when half of that has moved on. The next expected offset per
//!   partition is tracked and anything below it is dropped, so a pause, resume or refetch never reorders or
//!   duplicates records within an assignment. librdkafka's prefetch is bounded by `queued.max.messages.kbytes`,
//!   and what one fetch brings for a partition by `max.partition.fetch.bytes` (so it fits in the stash share).
//!   A fetch the broker holds for partitions with nothing new lasts at most `fetch.wait.max.ms`
//!   (`fetch_wait_max`, 100 ms by default): a partition resumed, seeked or back from a back-off waits for it,
//!   librdkafka having one fetch in flight per broker (decision 0055).
//! - **The poll thread runs in the normal scheduling class** even when started from a batch-class worker of the
//!   services' runtime (decision 0054), and so do librdkafka's threads, which it creates.
//! - **Commits only what is done, only for what is owned** (when the mode commits to Kafka — see
//!   [`Delivery::commits_to_kafka`]): offsets come from the lanes' durable progress; an offset counts as
//!   committed only once Kafka confirmed it, so on revoke and shutdown every revoked partition whose confirmed
//!   offset is behind its progress is committed **synchronously** — an asynchronous commit still in flight (or
//!   lost in the rebalance) never leaves it behind. Periodic commits are asynchronous and are skipped while the
//!   coordinator says a rebalance is in progress. A **lost** assignment commits nothing.
//! - **Rebalance** (cooperative-sticky; eager works too): callbacks stay short — on revoke the revoked lanes stop
//!   taking records and get `drain_timeout` to finish their unit in flight, then their offsets are committed and
//!   the partitions unassigned; on assign the mode prepares the partitions ([`Delivery::assign`]: in mode (b)
//!   the stored positions, read with a deadline) and fetching starts where it says. When that cannot be read
//!   (database down) the partitions are assigned **paused**, and the poll loop retries and then seeks and
//!   resumes them, so the callback never waits for an outage and the member never overruns
//!   `max.poll.interval.ms`, which is set explicitly.
//! - **Lag** per partition = high watermark (last stable offset for `read_committed`) − next offset to process,
//!   sampled from librdkafka's statistics every `lag_interval`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Assigned, Delivery, Seek};
use crate::error::RuntimeError;
use crate::inbox::{InboxSender, inbox};
use crate::lane::{Lane, LaneControl, LaneExit, Progress};
use crate::options::MIN_STASH_BYTES;
use crate::processor::Processor;
use crate::record::Record;
use crate::shared::Shared;

/// Readiness condition: the consumer has partitions assigned.
pub const READY_ASSIGNED: &str = "consumer";

/// Why the poll thread ended.
pub(crate) enum PipelineExit {
    /// The shutdown token fired; everything was drained and committed.
    Shutdown,
    /// The consumer (and producers) must be re-created; processing resumes from the committed positions.
    Restart(String),
    /// The configuration is unusable.
    Fatal(RuntimeError),
}

/// Poll timeout when nothing is stashed, and when a lane may have room for stashed records.
const IDLE_POLL: Duration = Duration::from_millis(100);
const BUSY_POLL: Duration = Duration::from_millis(2);
/// Records taken from librdkafka's queue in one go, between two rounds of commits, lane service and checks.
const BURST: usize = 256;
/// How often lanes are checked for unexpected exits when nothing is stashed.
const SERVICE_INTERVAL: Duration = Duration::from_millis(50);

/// Runs one pipeline (consumer + the mode's clients + lanes) until shutdown or until it must be re-created.
pub(crate) fn run<P: Processor, D: Delivery>(
    shared: Arc<Shared<P>>,
    delivery: D,
    runtime: Handle,
    shutdown: CancellationToken,
) -> PipelineExit {
    let context = PollCtx {
        shared: shared.clone(),
        delivery,
        runtime,
        state: Mutex::new(State::default()),
        restart: Mutex::new(None),
        closing: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<PollCtx<P, D>> =
        match consumer_config(&shared).create_with_context(context) {
            Ok(consumer) => consumer,
            Err(err) => return PipelineExit::Fatal(RuntimeError::Kafka(err)),
        };
    let topics: Vec<&str> = shared.policy.topics.iter().map(String::as_str).collect();
    if let Err(err) = consumer.subscribe(&topics) {
        return PipelineExit::Fatal(RuntimeError::Kafka(err));
    }
    let ctx = consumer.context();
    let mut last_service = Instant::now();
    let exit = loop {
        if shutdown.is_cancelled() {
            break PipelineExit::Shutdown;
        }
        if let Some(reason) = ctx.take_restart() {
            break PipelineExit::Restart(reason);
        }
        let stashed = ctx.lock().any_stash;
        if stashed || last_service.elapsed() >= SERVICE_INTERVAL {
            ctx.service_lanes(&consumer);
            ctx.retry_waiting(&consumer);
            last_service = Instant::now();
        }
        ctx.maybe_commit(&consumer);
        let mut timeout = if ctx.lock().any_stash {
            BUSY_POLL
        } else {
            IDLE_POLL
        };
        // What librdkafka already holds is taken in a burst, without the bookkeeping above per record (its
        // locks and clock reads cost as much as the hand-off itself).
        for _ in 0..BURST {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => ctx.dispatch(&consumer, &message),
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    ctx.request_restart(format!("fatal consumer error: {code}"));
                    break;
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "consumer error");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        ctx.hand_off(&consumer);
    };
    let graceful = matches!(exit, PipelineExit::Shutdown);
    ctx.stop_all(&consumer, graceful);
    ctx.closing.store(true, Ordering::Release);
    // Closing the consumer leaves the group (its revoke callback finds nothing left to do).
    drop(consumer);
    exit
}

fn consumer_config<P>(shared: &Shared<P>) -> ClientConfig {
    let (policy, options) = (&shared.policy, &shared.options);
    let mut config = service_kit::kafka::client_config(&shared.kafka);
    config
        .set("group.id", &policy.group)
        .set(
            "client.id",
            format!("{}.{}", policy.group, shared.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", millis(policy.session_timeout))
        .set("heartbeat.interval.ms", millis(policy.heartbeat_interval))
        // The poll thread polls continuously; only a callback (bounded by the drain and database deadlines)
        // can hold it. Set explicitly so an overrun is a decision, not librdkafka's default.
        .set("max.poll.interval.ms", millis(options.max_poll_interval))
        // Never hand an aborted transaction's records to a handler (mode (a) requires it; it is right for all).
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", &options.auto_offset_reset)
        .set(
            "queued.max.messages.kbytes",
            options.queued_max_messages_kbytes.to_string(),
        )
        .set(
            "fetch.queue.backoff.ms",
            millis(options.fetch_queue_backoff),
        )
        .set(
            "max.partition.fetch.bytes",
            options.max_partition_fetch_bytes.to_string(),
        )
        .set("fetch.wait.max.ms", millis(options.fetch_wait_max))
        .set("statistics.interval.ms", millis(options.lag_interval))
        .set("enable.partition.eof", "false");
    if options.static_membership {
        config.set("group.instance.id", &shared.instance_id);
    }
    config
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// One assigned partition, as the poll thread sees it.
struct Part {
    topic: Arc<str>,
    partition: i32,
    lane: LaneHandle,
    /// Offsets below it were already handed to the lane (or skipped) in this assignment.
    next_expected: Option<i64>,
    /// Records not in the lane's inbox yet: those of the current burst, and those that did not fit; the
    /// partition is paused while this is large.
    stash: VecDeque<Record>,
    /// [`Record::approx_size`] of the stash.
    stash_bytes: usize,
    paused: bool,
    /// Listed in [`State::touched`]: records arrived for it in the current burst.
    touched: bool,
    commits: Commits,
    consumed: IntCounter,
    lag: IntGauge,
}

/// How long an asynchronous commit may stay unanswered before it is sent again. Its answer can fail to reach
/// the commit callback (seen under rebalances on a loaded machine: librdkafka logged the commit as failed, the
/// callback never saw it); without a resend, a partition with no newer progress would keep its last offsets
/// uncommitted for good. Committing the same offset twice is harmless.
const IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// What Kafka knows of a partition's committed offset in this assignment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Commits {
    /// The offset Kafka confirmed as committed.
    confirmed: Option<i64>,
    /// An asynchronous commit of this offset is in flight since then (it may yet fail, e.g. in a rebalance).
    in_flight: Option<(i64, Instant)>,
}

impl Commits {
    /// What a synchronous commit (revoke, shutdown) must write: progress Kafka has not confirmed — whether or not
    /// an asynchronous commit of it is in flight.
    fn unconfirmed(self, done: Option<i64>) -> Option<i64> {
        let done = done?;
        self.confirmed.is_none_or(|c| done > c).then_some(done)
    }

    /// What a periodic asynchronous commit sends at `now`: progress neither confirmed nor in flight — or in
    /// flight unanswered for longer than [`IN_FLIGHT_TIMEOUT`].
    fn due(self, done: Option<i64>, now: Instant) -> Option<i64> {
        self.unconfirmed(done).filter(|done| {
            self.in_flight.is_none_or(|(f, since)| {
                *done > f || now.saturating_duration_since(since) > IN_FLIGHT_TIMEOUT
            })
        })
    }

    fn sent(&mut self, offset: i64, now: Instant) {
        self.in_flight = Some((offset, now));
    }

    fn confirmed(&mut self, offset: i64) {
        self.confirmed = Some(self.confirmed.map_or(offset, |c| c.max(offset)));
        if self.in_flight.is_some_and(|(f, _)| f <= offset) {
            self.in_flight = None;
        }
    }

    fn failed(&mut self) {
        self.in_flight = None;
    }
}

impl Part {
    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && *self.topic == *topic
    }

    /// Moves what fits from the stash to the lane's inbox; pauses the partition when its share of the stash
    /// budget (`limit`) still waits. Whether it paused now.
    //
    // Pausing makes librdkafka drop what it prefetched for the partition and fetch it again on resume: the stash
    // must be large enough that this stays rare (a 500-record bound cost 5-10x the throughput).
    fn relieve<C: ConsumerContext>(&mut self, limit: usize, consumer: &BaseConsumer<C>) -> bool {
        self.stash_bytes -= self.lane.queue.push(&mut self.stash);
        if self.stash_bytes < limit || self.paused {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        match consumer.pause(&tpl) {
            Ok(()) => {
                self.paused = true;
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "pausing a partition failed");
                false
            }
        }
    }

    fn unconfirmed(&self) -> Option<i64> {
        self.commits.unconfirmed(self.lane.progress.done())
    }

    fn due(&self, now: Instant) -> Option<i64> {
        self.commits.due(self.lane.progress.done(), now)
    }
}

struct LaneHandle {
    queue: InboxSender,
    control: Arc<LaneControl>,
    task: JoinHandle<()>,
    /// Receives the lane's exit; disconnected if the task ended without one (aborted or panicked).
    exit: std::sync::mpsc::Receiver<LaneExit>,
    progress: Arc<Progress>,
}

#[derive(Default)]
struct State {
    /// The partitions with a lane. A list: a member owns tens of partitions, and a burst's records come
    /// partition after partition, so the one found last is looked at first ([`find`]).
    parts: Vec<Part>,
    /// Where in `parts` the last partition looked up was: a hint, checked before use.
    last: usize,
    /// Partitions that received records in the current burst; handed to their lanes at its end.
    touched: Vec<(Arc<str>, i32)>,
    any_stash: bool,
    last_commit: Option<Instant>,
    /// Since when a rebalance is in progress (after a revoke, or a commit the coordinator refused for it);
    /// cleared by the next assignment, and disregarded after a session timeout.
    rebalancing: Option<Instant>,
    /// Partitions assigned (paused) whose start the mode could not read yet, and when to try again.
    waiting: Vec<(Arc<str>, i32)>,
    retry_waiting_at: Option<Instant>,
    waiting_backoff: Duration,
}

/// Where `topic`/`partition` is in `parts`, looking at `last` first (and remembering it there; any value of
/// `last` is safe).
fn find(parts: &[Part], last: &mut usize, topic: &str, partition: i32) -> Option<usize> {
    let is = |p: &Part| p.is(topic, partition);
    if parts.get(*last).is_some_and(is) {
        return Some(*last);
    }
    let at = parts.iter().position(is)?;
    *last = at;
    Some(at)
}

impl State {
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Part> {
        self.parts.iter_mut()
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Part> {
        let at = find(&self.parts, &mut self.last, topic, partition)?;
        Some(&mut self.parts[at])
    }

    fn remove(&mut self, topic: &str, partition: i32) -> Option<Part> {
        let at = find(&self.parts, &mut self.last, topic, partition)?;
        Some(self.parts.swap_remove(at))
    }

    /// Adds a partition's lane; the one it replaces, if there was one.
    fn insert(&mut self, part: Part) -> Option<Part> {
        match find(&self.parts, &mut self.last, &part.topic, part.partition) {
            Some(at) => Some(std::mem::replace(&mut self.parts[at], part)),
            None => {
                self.parts.push(part);
                None
            }
        }
    }

    fn count(&self) -> usize {
        self.parts.len() + self.waiting.len()
    }
}

/// The consumer's context: its state lives here because rebalance callbacks run inside `poll`.
pub(crate) struct PollCtx<P, D> {
    shared: Arc<Shared<P>>,
    delivery: D,
    runtime: Handle,
    state: Mutex<State>,
    restart: Mutex<Option<String>>,
    /// The pipeline is tearing down: callbacks only unassign.
    closing: AtomicBool,
}

impl<P: Processor, D: Delivery> PollCtx<P, D> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_restart(&self, reason: String) {
        tracing::error!(%reason, "the pipeline must be re-created");
        let mut restart = self.restart.lock().unwrap_or_else(|p| p.into_inner());
        restart.get_or_insert(reason);
    }

    fn take_restart(&self) -> Option<String> {
        self.restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Takes a message into its partition's stash; the burst's records reach the lanes at its end
    /// ([`Self::hand_off`]), or earlier when a partition's share of the stash budget is reached.
    fn dispatch(&self, consumer: &BaseConsumer<Self>, message: &BorrowedMessage<'_>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(at) = find(
            &state.parts,
            &mut state.last,
            message.topic(),
            message.partition(),
        ) else {
            tracing::trace!(
                topic = message.topic(),
                partition = message.partition(),
                "message of an unowned partition dropped"
            );
            return;
        };
        let part = &mut state.parts[at];
        let offset = message.offset();
        if part.next_expected.is_some_and(|next| offset < next) {
            tracing::debug!(topic = %part.topic, partition = part.partition, offset, "redelivered offset dropped");
            return;
        }
        part.next_expected = Some(offset + 1);
        part.consumed.inc();
        let record = Record::from_message(message, part.topic.clone());
        part.stash_bytes += record.approx_size();
        part.stash.push_back(record);
        if !part.touched {
            part.touched = true;
            state.touched.push((part.topic.clone(), part.partition));
        }
        // No partition's limit is below the floor: the common path stops here.
        if part.stash_bytes < MIN_STASH_BYTES {
            return;
        }
        let limit = self.shared.options.stash_limit(state.count());
        let part = &mut state.parts[at];
        if part.stash_bytes >= limit && part.relieve(limit, consumer) {
            self.count_pauses(1);
        }
    }

    /// The end of a burst: what arrived goes to the lanes (as much as fits, with one wake-up each).
    fn hand_off(&self, consumer: &BaseConsumer<Self>) {
        let mut guard = self.lock();
        if guard.touched.is_empty() {
            return;
        }
        let limit = self.shared.options.stash_limit(guard.count());
        let State {
            parts,
            last,
            touched,
            any_stash,
            ..
        } = &mut *guard;
        let mut pauses = 0;
        for (topic, partition) in touched.drain(..) {
            let Some(at) = find(parts, last, &topic, partition) else {
                continue; // revoked during the burst
            };
            let part = &mut parts[at];
            part.touched = false;
            pauses += u64::from(part.relieve(limit, consumer));
            *any_stash |= !part.stash.is_empty();
        }
        drop(guard);
        if pauses > 0 {
            self.count_pauses(pauses);
        }
    }

    fn count_pauses(&self, pauses: u64) {
        let metrics = &self.shared.metrics;
        metrics
            .pauses
            .with_label_values(&[metrics.group()])
            .inc_by(pauses);
    }

    /// Moves stashed records into lanes that have room (resuming their partitions when the stash is small) and
    /// notices lanes that ended on their own (fenced, a failed transaction, or a bug): the pipeline restarts.
    fn service_lanes(&self, consumer: &BaseConsumer<Self>) {
        let mut resume = TopicPartitionList::new();
        let mut ended = None;
        {
            let mut guard = self.lock();
            let limit = self.shared.options.stash_limit(guard.count());
            let mut any_stash = false;
            for part in guard.iter_mut() {
                part.stash_bytes -= part.lane.queue.push(&mut part.stash);
                // Resume at half: the next fetch arrives while the rest of the stash drains.
                if part.paused && part.stash_bytes < limit / 2 {
                    resume.add_partition(&part.topic, part.partition);
                    part.paused = false;
                }
                any_stash |= !part.stash.is_empty();
                match part.lane.exit.try_recv() {
                    Ok(exit) => {
                        ended = Some(format!(
                            "the lane of {}/{} ended: {exit:?}",
                            part.topic, part.partition
                        ))
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        ended = Some(format!(
                            "the lane of {}/{} ended unexpectedly",
                            part.topic, part.partition
                        ))
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
            }
            guard.any_stash = any_stash;
        }
        if resume.count() > 0
            && let Err(err) = consumer.resume(&resume)
        {
            tracing::warn!(error = %err, "resuming partitions failed");
        }
        if let Some(reason) = ended {
            self.request_restart(reason);
        }
    }

    /// Commits done offsets to Kafka asynchronously when the interval has passed (modes that commit to Kafka),
    /// unless a rebalance is in progress.
    fn maybe_commit(&self, consumer: &BaseConsumer<Self>) {
        if !self.delivery.commits_to_kafka() {
            return;
        }
        let mut state = self.lock();
        if state
            .rebalancing
            .is_some_and(|since| since.elapsed() < self.shared.policy.session_timeout)
            || state
                .last_commit
                .is_some_and(|at| at.elapsed() < self.shared.options.commit_interval)
        {
            return;
        }
        let now = Instant::now();
        state.last_commit = Some(now);
        let mut tpl = TopicPartitionList::new();
        let mut sent = Vec::new();
        for part in state.iter_mut() {
            if let Some(done) = part.due(now)
                && tpl
                    .add_partition_offset(&part.topic, part.partition, Offset::Offset(done))
                    .is_ok()
            {
                sent.push((part.topic.clone(), part.partition, done));
            }
        }
        if sent.is_empty() {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => {
                for (topic, partition, done) in sent {
                    if let Some(part) = state.get_mut(&topic, partition) {
                        part.commits.sent(done, now);
                    }
                }
            }
            Err(err) => {
                self.shared.metrics.commit("kafka", false);
                tracing::warn!(error = %err, "committing offsets failed; retried at the next commit");
            }
        }
    }

    /// Commits the unconfirmed progress of `parts` synchronously (revoke, shutdown).
    fn commit_sync(&self, consumer: &BaseConsumer<Self>, parts: &mut [Part]) {
        if !self.delivery.commits_to_kafka() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let mut due = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            if let Some(done) = part.unconfirmed()
                && tpl
                    .add_partition_offset(&part.topic, part.partition, Offset::Offset(done))
                    .is_ok()
            {
                due.push((index, done));
            }
        }
        if due.is_empty() {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.shared.metrics.commit("kafka", true);
                for (index, done) in due {
                    parts[index].commits.confirmed(done);
                }
            }
            Err(err) => {
                self.shared.metrics.commit("kafka", false);
                tracing::warn!(error = %err, "committing the offsets of stopping partitions failed; their last records will be redelivered");
            }
        }
    }

    /// Starts the lane of a newly assigned partition.
    fn start_lane(&self, assigned: Assigned<D::Sink>) -> Part {
        let shared = &self.shared;
        let Assigned {
            topic,
            partition,
            skip,
            sink,
            ..
        } = assigned;
        let (queue, queue_rx) = inbox(shared.policy.batch_size);
        let (exit_tx, exit) = std::sync::mpsc::sync_channel(1);
        let control = Arc::new(LaneControl::default());
        let progress = Progress::new();
        let lane = Lane::new(
            shared.clone(),
            sink,
            topic.clone(),
            partition,
            progress.clone(),
            skip,
        );
        let lane_control = control.clone();
        let task = self.runtime.spawn(async move {
            let _ = exit_tx.send(lane.run(queue_rx, lane_control).await);
        });
        Part {
            consumed: shared.metrics.consumed(&topic, partition),
            lag: shared.metrics.lag(&topic, partition),
            topic,
            partition,
            lane: LaneHandle {
                queue,
                control,
                task,
                exit,
                progress,
            },
            next_expected: None,
            stash: VecDeque::new(),
            stash_bytes: 0,
            paused: false,
            touched: false,
            commits: Commits::default(),
        }
    }

    /// Stops lanes: they take no new record, and their unit in flight has until the deadline (then it is
    /// abandoned). With `drain == false` they are abandoned at once and commit nothing more.
    fn stop_lanes(&self, parts: &[Part], drain: bool) {
        for part in parts {
            part.lane.control.discard.store(!drain, Ordering::Release);
            part.lane.control.stop.cancel();
        }
        let deadline = Instant::now()
            + if drain {
                self.shared.options.drain_timeout
            } else {
                Duration::from_millis(200)
            };
        for part in parts {
            let waited = part
                .lane
                .exit
                .recv_timeout(deadline.saturating_duration_since(Instant::now()));
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = waited {
                if drain {
                    tracing::warn!(topic = %part.topic, partition = part.partition, "in-flight work did not finish within the drain deadline; abandoned");
                }
                part.lane.task.abort();
            }
        }
    }

    /// Stops everything at the end of a pipeline: pauses fetching, drains lanes (or abandons them when the
    /// pipeline failed: a restart redoes their uncommitted work), commits what is done.
    fn stop_all(&self, consumer: &BaseConsumer<Self>, graceful: bool) {
        let mut parts: Vec<Part> = {
            let mut state = self.lock();
            state.waiting.clear();
            std::mem::take(&mut state.parts)
        };
        if let Ok(assignment) = consumer.assignment()
            && assignment.count() > 0
        {
            let _ = consumer.pause(&assignment);
        }
        self.stop_lanes(&parts, graceful || self.delivery.commits_to_kafka());
        // Done work is durable whatever the reason for stopping: commit it.
        self.commit_sync(consumer, &mut parts);
        for part in &parts {
            self.shared
                .metrics
                .forget_partition(&part.topic, part.partition);
        }
        self.assignment_changed(0);
    }

    fn assignment_changed(&self, assigned: usize) {
        let metrics = &self.shared.metrics;
        metrics
            .assigned_partitions
            .with_label_values(&[metrics.group()])
            .set(assigned as i64);
        if assigned > 0 {
            self.shared.readiness.set_ready(READY_ASSIGNED);
        } else {
            self.shared
                .readiness
                .set_not_ready(READY_ASSIGNED, "no partitions assigned");
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.shared.metrics.rebalance("assign");
        self.lock().rebalancing = None;
        let partitions: Vec<(Arc<str>, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::from(e.topic()), e.partition()))
            .collect();
        let prepared = if partitions.is_empty() {
            Ok(Vec::new())
        } else {
            self.delivery.assign(&partitions)
        };
        let waiting = match prepared {
            Ok(assigned) => {
                for assigned in &assigned {
                    if let Some(offset) = offset_of(assigned.seek)
                        && let Err(err) =
                            tpl.set_partition_offset(&assigned.topic, assigned.partition, offset)
                    {
                        self.request_restart(format!(
                            "cannot set the start of {}/{}: {err}",
                            assigned.topic, assigned.partition
                        ));
                    }
                }
                self.add_lanes(assigned);
                false
            }
            Err(why) => {
                tracing::error!(error = %why, partitions = ?partitions, "the start of the assigned partitions cannot be read yet; they stay paused until it can");
                let mut state = self.lock();
                state.waiting.extend(partitions.iter().cloned());
                state.waiting_backoff = self.shared.options.breaker_probe_initial;
                state.retry_waiting_at = Some(Instant::now() + state.waiting_backoff);
                drop(state);
                self.shared.readiness.set_not_ready(
                    READY_ASSIGNED,
                    "cannot read where the assigned partitions start (database unavailable)",
                );
                true
            }
        };
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(err) = assigned {
            self.request_restart(format!("assigning partitions failed: {err}"));
        }
        // A partition paused in an earlier assignment must not stay paused — unless it waits for its start.
        let _ = if waiting {
            consumer.pause(tpl)
        } else {
            consumer.resume(tpl)
        };
        self.delivery.group_changed(|| consumer.group_metadata());
        tracing::info!(partitions = ?partitions, waiting, "partitions assigned");
        let count = self.lock().count();
        if !waiting {
            self.assignment_changed(count);
        }
    }

    /// Starts lanes for prepared partitions.
    fn add_lanes(&self, assigned: Vec<Assigned<D::Sink>>) {
        let mut state = self.lock();
        for assigned in assigned {
            let part = self.start_lane(assigned);
            if let Some(old) = state.insert(part) {
                // Cannot happen (revoke removes parts first); never leave a lane running unowned.
                self.stop_lanes(std::slice::from_ref(&old), false);
            }
        }
    }

    /// Partitions assigned while their start could not be read: try again when due, then seek and resume.
    fn retry_waiting(&self, consumer: &BaseConsumer<Self>) {
        let waiting = {
            let state = self.lock();
            if state.waiting.is_empty()
                || state.retry_waiting_at.is_some_and(|at| Instant::now() < at)
            {
                return;
            }
            state.waiting.clone()
        };
        match self.delivery.assign(&waiting) {
            Ok(assigned) => {
                let mut resume = TopicPartitionList::new();
                for assigned in &assigned {
                    if let Some(offset) = offset_of(assigned.seek)
                        && let Err(err) = consumer.seek(
                            &assigned.topic,
                            assigned.partition,
                            offset,
                            Duration::from_secs(10),
                        )
                    {
                        self.request_restart(format!(
                            "cannot seek {}/{} to its start: {err}",
                            assigned.topic, assigned.partition
                        ));
                        return;
                    }
                    resume.add_partition(&assigned.topic, assigned.partition);
                }
                self.lock().waiting.clear();
                self.add_lanes(assigned);
                let _ = consumer.resume(&resume);
                tracing::info!(partitions = ?waiting, "the start of the waiting partitions was read; they resume");
                let count = self.lock().count();
                self.assignment_changed(count);
            }
            Err(why) => {
                let mut state = self.lock();
                state.waiting_backoff =
                    (state.waiting_backoff * 2).min(self.shared.options.breaker_probe_max);
                state.retry_waiting_at = Some(Instant::now() + state.waiting_backoff);
                tracing::error!(error = %why, retry_in = ?state.waiting_backoff, "the start of the waiting partitions still cannot be read");
            }
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        self.shared
            .metrics
            .rebalance(if lost { "lost" } else { "revoke" });
        // Lanes that commit on their way out (mode (a)) send the current generation with their offsets.
        self.delivery.group_changed(|| consumer.group_metadata());
        let mut revoked: Vec<Part> = {
            let mut state = self.lock();
            state
                .waiting
                .retain(|(t, p)| tpl.find_partition(t, *p).is_none());
            tpl.elements()
                .iter()
                .filter_map(|e| state.remove(e.topic(), e.partition()))
                .collect()
        };
        if self.closing.load(Ordering::Acquire) {
            self.stop_lanes(&revoked, false);
        } else if lost {
            // Another member may own them already: commit nothing for them.
            self.stop_lanes(&revoked, false);
            tracing::warn!(
                partitions = revoked.len(),
                "assignment lost: nothing is committed for these partitions"
            );
        } else {
            self.stop_lanes(&revoked, true);
            self.commit_sync(consumer, &mut revoked);
        }
        for part in &revoked {
            self.shared
                .metrics
                .forget_partition(&part.topic, part.partition);
        }
        let unassigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(err) = unassigned {
            tracing::warn!(error = %err, "unassigning partitions failed");
        }
        let partitions: Vec<String> = revoked
            .iter()
            .map(|p| format!("{}/{}", p.topic, p.partition))
            .collect();
        tracing::info!(?partitions, lost, "partitions revoked");
        let count = self.lock().count();
        self.assignment_changed(count);
    }
}

/// The assignment offset of a [`Seek`]; `None` leaves librdkafka to use the committed offset.
fn offset_of(seek: Seek) -> Option<Offset> {
    match seek {
        Seek::Committed => None,
        Seek::Offset(offset) => Some(Offset::Offset(offset)),
        Seek::Beginning => Some(Offset::Beginning),
        Seek::End => Some(Offset::End),
    }
}

impl<P: Processor, D: Delivery> ClientContext for PollCtx<P, D> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", error = %error, reason, "client error");
    }

    fn stats(&self, statistics: Statistics) {
        let state = self.lock();
        for (topic, topic_stats) in &statistics.topics {
            for partition_stats in topic_stats.partitions.values() {
                let Some(part) = state
                    .parts
                    .iter()
                    .find(|p| p.is(topic, partition_stats.partition))
                else {
                    continue;
                };
                let high = if partition_stats.ls_offset >= 0 {
                    partition_stats.ls_offset
                } else {
                    partition_stats.hi_offset
                };
                let position = part
                    .lane
                    .progress
                    .done()
                    .or(part.commits.confirmed)
                    .or((partition_stats.committed_offset >= 0)
                        .then_some(partition_stats.committed_offset));
                if high >= 0
                    && let Some(position) = position
                {
                    part.lag.set((high - position).max(0));
                }
            }
        }
    }
}

impl<P: Processor, D: Delivery> ConsumerContext for PollCtx<P, D> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                self.on_revoke(consumer, tpl, lost);
                self.lock().rebalancing = Some(Instant::now());
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the whole assignment");
                let all = consumer.assignment().unwrap_or_default();
                self.on_revoke(consumer, &all, true);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut state = self.lock();
        match result {
            Ok(()) => {
                self.shared.metrics.commit("kafka", true);
                for element in offsets.elements() {
                    let Some(part) = state.get_mut(element.topic(), element.partition()) else {
                        continue;
                    };
                    // A commit that succeeded as a whole can still have failed for a partition: only what Kafka
                    // confirmed for that partition counts, the rest is sent again at the next commit.
                    match (element.error(), element.offset()) {
                        (Ok(()), Offset::Offset(offset)) => part.commits.confirmed(offset),
                        (Err(err), _) => {
                            self.shared.metrics.commit("kafka", false);
                            tracing::warn!(
                                topic = element.topic(),
                                partition = element.partition(),
                                error = %err,
                                "an offset commit failed for this partition; it is retried"
                            );
                            part.commits.failed();
                        }
                        (Ok(()), _) => part.commits.failed(),
                    }
                }
            }
            Err(err) => {
                self.shared.metrics.commit("kafka", false);
                if matches!(
                    err.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::RebalanceInProgress
                            | RDKafkaErrorCode::IllegalGeneration
                            | RDKafkaErrorCode::UnknownMemberId
                    )
                ) {
                    state.rebalancing = Some(Instant::now());
                }
                tracing::warn!(error = %err, "an asynchronous offset commit failed; it is retried");
                for element in offsets.elements() {
                    if let Some(part) = state.get_mut(element.topic(), element.partition()) {
                        part.commits.failed();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_in_flight_is_not_resent_but_a_revoke_commits_it_synchronously() {
        let t0 = Instant::now();
        let mut commits = Commits::default();
        assert_eq!(commits.due(None, t0), None, "nothing done yet");
        assert_eq!(commits.due(Some(10), t0), Some(10));
        commits.sent(10, t0);
        assert_eq!(
            commits.due(Some(10), t0),
            None,
            "periodic commits do not resend it"
        );
        assert_eq!(
            commits.unconfirmed(Some(10)),
            Some(10),
            "a revoke must commit it synchronously: the asynchronous one may still fail in the rebalance"
        );
        assert_eq!(
            commits.due(Some(12), t0),
            Some(12),
            "newer progress is sent"
        );
        commits.confirmed(10);
        assert_eq!(
            commits.unconfirmed(Some(10)),
            None,
            "confirmed: nothing to do"
        );
        assert_eq!(commits.unconfirmed(Some(12)), Some(12));
    }

    #[test]
    fn a_failed_asynchronous_commit_is_sent_again() {
        let t0 = Instant::now();
        let mut commits = Commits::default();
        commits.sent(7, t0);
        commits.failed();
        assert_eq!(commits.due(Some(7), t0), Some(7));
        commits.sent(7, t0);
        commits.confirmed(9);
        assert_eq!(
            commits,
            Commits {
                confirmed: Some(9),
                in_flight: None
            }
        );
    }

    #[test]
    fn an_unanswered_asynchronous_commit_is_sent_again_after_the_timeout() {
        let t0 = Instant::now();
        let mut commits = Commits::default();
        commits.sent(7, t0);
        assert_eq!(
            commits.due(Some(7), t0 + IN_FLIGHT_TIMEOUT),
            None,
            "still waiting"
        );
        assert_eq!(
            commits.due(Some(7), t0 + IN_FLIGHT_TIMEOUT + Duration::from_millis(1)),
            Some(7),
            "no answer: sent again, so the last offsets are committed even without newer progress"
        );
    }
}
