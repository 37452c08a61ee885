//! The poll thread: the only place that touches the Kafka consumer.
//!
//! Guarantees:
//! - **Never blocks the async runtime**: the consumer (rdkafka `BaseConsumer` with our [`ConsumerContext`]) is
//!   polled on a dedicated OS thread, which keeps calling `poll` while handlers run or wait, so the consumer
//!   stays in its group however long a record is retried. Blocking calls (synchronous commits, transactional
//!   calls, reading stored offsets) happen here too.
//! - **Order and bounded memory**: each assigned partition has a lane fed through a bounded queue (capacity =
//!   batch size). When it is full, messages wait in a stash; when `buffer_bytes_per_partition` (4 MiB) waits
//!   there the partition is **paused**, and it resumes when half of that has moved on — so a partition holds at
//!   most two batches (the lane's and its queue) plus that bound in the runtime, and lanes get full batches. The next expected offset per partition is tracked and anything below it is dropped, so a pause,
//!   resume or refetch can never reorder or duplicate records within an assignment. librdkafka's prefetch is
//!   bounded by `queued.max.messages.kbytes`.
//! - **Commits only what is done, only for what is owned**: offsets come from the lanes' durable progress;
//!   periodic commits are asynchronous, commits on revoke and shutdown synchronous (or the transaction's commit
//!   in mode (a)); revoked partitions are removed before committing, and a **lost** assignment commits nothing.
//! - **Rebalance** (cooperative-sticky, incremental; eager works too): on revoke the revoked lanes stop taking
//!   records, their in-flight attempt gets `drain_timeout` to finish, then their offsets are committed and the
//!   partitions unassigned. On assign in mode (b) the stored offsets are read from `consumer_offsets` and set in
//!   the assignment, so fetching starts exactly there.
//! - **Lag** per partition = high watermark (last stable offset for `read_committed`) − next offset to process,
//!   sampled from librdkafka's statistics every `lag_interval`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use rdkafka::Message;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{READY_ASSIGNED, Shared};
use crate::eos_db;
use crate::eos_kafka::Txn;
use crate::error::RuntimeError;
use crate::handler::Handler;
use crate::lane::{Lane, LaneExit, Progress, Sink};
use crate::policy::Guarantee;
use crate::record::Record;

/// Why the poll thread ended.
pub(crate) enum PipelineExit {
    /// The shutdown token fired; everything was drained and committed.
    Shutdown,
    /// The consumer (and producer) must be re-created; processing resumes from the committed offsets.
    Restart(String),
    /// The configuration is unusable.
    Fatal(RuntimeError),
}

/// Poll timeout when nothing is stashed, and when a lane may have room for stashed records.
const IDLE_POLL: Duration = Duration::from_millis(100);
const BUSY_POLL: Duration = Duration::from_millis(2);
/// How often lanes are checked for unexpected exits when nothing is stashed.
const SERVICE_INTERVAL: Duration = Duration::from_millis(50);

/// Runs one pipeline (consumer + producer + lanes) until shutdown or until it must be re-created.
pub(crate) fn run<H: Handler>(
    shared: Arc<Shared<H>>,
    runtime: Handle,
    shutdown: CancellationToken,
) -> PipelineExit {
    let sink = match make_sink(&shared) {
        Ok(sink) => sink,
        Err(exit) => return exit,
    };
    let context = PollCtx {
        shared: shared.clone(),
        sink,
        runtime,
        shutdown: shutdown.clone(),
        state: Mutex::new(State::default()),
        restart: Mutex::new(None),
        closing: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<PollCtx<H>> =
        match consumer_config(&shared).create_with_context(context) {
            Ok(consumer) => consumer,
            Err(err) => return PipelineExit::Fatal(RuntimeError::Kafka(err)),
        };
    let topics: Vec<&str> = shared.policy.topics.iter().map(String::as_str).collect();
    if let Err(err) = consumer.subscribe(&topics) {
        return PipelineExit::Fatal(RuntimeError::Kafka(err));
    }
    let ctx = consumer.context().clone();
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
            last_service = Instant::now();
        }
        ctx.maybe_commit(&consumer);
        match consumer.poll(if ctx.lock().any_stash {
            BUSY_POLL
        } else {
            IDLE_POLL
        }) {
            None => {}
            Some(Ok(message)) => ctx.dispatch(&consumer, &message),
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                ctx.request_restart(format!("fatal consumer error: {code}"));
            }
            Some(Err(err)) => tracing::warn!(error = %err, "consumer error"),
        }
    };
    let graceful = matches!(exit, PipelineExit::Shutdown);
    ctx.stop_all(&consumer, graceful);
    ctx.closing.store(true, Ordering::Release);
    // Closing the consumer leaves the group (its revoke callback finds nothing left to do).
    drop(consumer);
    exit
}

fn make_sink<H: Handler>(shared: &Shared<H>) -> Result<Sink, PipelineExit> {
    let mut config = service_kit::kafka::producer_config(&shared.kafka);
    config.set(
        "client.id",
        format!("{}.{}", shared.policy.group, shared.instance_id),
    );
    let plain = |config: &ClientConfig| -> Result<FutureProducer, PipelineExit> {
        config
            .create()
            .map_err(|e| PipelineExit::Fatal(RuntimeError::Kafka(e)))
    };
    Ok(match shared.policy.guarantee {
        Guarantee::AtLeastOnce => Sink::AtLeastOnce(plain(&config)?),
        Guarantee::ExactlyOnceDb => Sink::Db {
            pool: shared.pool.clone().expect("checked by the builder"),
            producer: plain(&config)?,
        },
        Guarantee::ExactlyOnceKafka => {
            config
                .set(
                    "transactional.id",
                    format!("{}.{}", shared.policy.group, shared.instance_id),
                )
                .set(
                    "transaction.timeout.ms",
                    millis(shared.options.transaction_timeout),
                );
            let txn =
                Txn::start(&config, shared.options.transactional_call_timeout).map_err(|e| {
                    PipelineExit::Restart(format!(
                        "starting the transactional producer failed: {}",
                        chain(&e)
                    ))
                })?;
            Sink::Kafka(Arc::new(txn))
        }
    })
}

fn consumer_config<H: Handler>(shared: &Shared<H>) -> ClientConfig {
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
        // Never hand an aborted transaction's records to a handler (mode (a) requires it; it is right for all).
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", &options.auto_offset_reset)
        .set(
            "queued.max.messages.kbytes",
            options.queued_max_messages_kbytes.to_string(),
        )
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

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    service_kit::telemetry::error_chain(err)
}

/// Runs `future` on the runtime and waits for it from this (non-runtime) thread, at most `timeout`.
fn block_on<T: Send + 'static>(
    runtime: &Handle,
    timeout: Duration,
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

/// One assigned partition, as the poll thread sees it.
struct Part {
    topic: Arc<str>,
    partition: i32,
    lane: LaneHandle,
    /// Offsets below it were already handed to the lane (or skipped) in this assignment.
    next_expected: Option<i64>,
    /// Records that did not fit in the lane's queue; the partition is paused while this is not empty.
    stash: VecDeque<Record>,
    /// [`Record::approx_size`] of the stash.
    stash_bytes: usize,
    paused: bool,
    /// The offset last committed (to Kafka, or in a transaction); `None` when unknown.
    committed: Option<i64>,
    consumed: IntCounter,
    lag: IntGauge,
}

impl Part {
    /// The lane's done offset when it is ahead of the last commit.
    fn due(&self) -> Option<i64> {
        let done = self.lane.progress.done()?;
        self.committed
            .is_none_or(|committed| done > committed)
            .then_some(done)
    }
}

struct LaneHandle {
    queue: mpsc::Sender<Record>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Receives the lane's exit; disconnected if the task ended without one (aborted or panicked).
    exit: std::sync::mpsc::Receiver<LaneExit>,
    progress: Arc<Progress>,
}

#[derive(Default)]
struct State {
    parts: HashMap<Arc<str>, HashMap<i32, Part>>,
    any_stash: bool,
    last_commit: Option<Instant>,
}

impl State {
    fn iter(&self) -> impl Iterator<Item = &Part> {
        self.parts.values().flat_map(HashMap::values)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Part> {
        self.parts.values_mut().flat_map(HashMap::values_mut)
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Part> {
        self.parts
            .get_mut(topic)
            .and_then(|ps| ps.get_mut(&partition))
    }

    fn remove(&mut self, topic: &str, partition: i32) -> Option<Part> {
        let topic_parts = self.parts.get_mut(topic)?;
        let part = topic_parts.remove(&partition);
        if topic_parts.is_empty() {
            self.parts.remove(topic);
        }
        part
    }

    fn count(&self) -> usize {
        self.parts.values().map(HashMap::len).sum()
    }
}

/// The consumer's context: its state lives here because rebalance callbacks run inside `poll`.
pub(crate) struct PollCtx<H> {
    shared: Arc<Shared<H>>,
    sink: Sink,
    runtime: Handle,
    shutdown: CancellationToken,
    state: Mutex<State>,
    restart: Mutex<Option<String>>,
    /// The pipeline is tearing down: callbacks only unassign.
    closing: AtomicBool,
}

impl<H: Handler> PollCtx<H> {
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

    fn is_mode_a(&self) -> bool {
        matches!(self.sink, Sink::Kafka(_))
    }

    /// Hands a message to its partition's lane, or stashes it (pausing the partition when a batch is stashed).
    fn dispatch(&self, consumer: &BaseConsumer<Self>, message: &BorrowedMessage<'_>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(part) = state
            .parts
            .get_mut(message.topic())
            .and_then(|ps| ps.get_mut(&message.partition()))
        else {
            tracing::trace!(
                topic = message.topic(),
                partition = message.partition(),
                "message of an unowned partition dropped"
            );
            return;
        };
        let offset = message.offset();
        if part.next_expected.is_some_and(|next| offset < next) {
            tracing::debug!(topic = %part.topic, partition = part.partition, offset, "redelivered offset dropped");
            return;
        }
        part.next_expected = Some(offset + 1);
        part.consumed.inc();
        let record = Record::from_message(message, part.topic.clone());
        let record = if part.stash.is_empty() {
            match part.lane.queue.try_send(record) {
                Ok(()) => return,
                Err(TrySendError::Full(record) | TrySendError::Closed(record)) => record,
            }
        } else {
            record
        };
        part.stash_bytes += record.approx_size();
        part.stash.push_back(record);
        state.any_stash = true;
        // Pausing makes librdkafka drop what it prefetched for the partition and fetch it again on resume: the
        // stash must be large enough that this stays rare (a 500-record bound cost 5-10x the throughput).
        if part.stash_bytes >= self.shared.options.buffer_bytes_per_partition && !part.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&part.topic, part.partition);
            match consumer.pause(&tpl) {
                Ok(()) => {
                    part.paused = true;
                    let metrics = &self.shared.metrics;
                    metrics.pauses.with_label_values(&[metrics.group()]).inc();
                }
                Err(err) => tracing::warn!(error = %err, "pausing a partition failed"),
            }
        }
    }

    /// Moves stashed records into lanes that have room (resuming their partitions when the stash is empty) and
    /// notices lanes that ended on their own (fenced in mode (b), or a bug), which requires a restart.
    fn service_lanes(&self, consumer: &BaseConsumer<Self>) {
        let mut resume = TopicPartitionList::new();
        let mut ended = None;
        {
            let mut guard = self.lock();
            let mut any_stash = false;
            for part in guard.iter_mut() {
                while let Some(record) = part.stash.pop_front() {
                    let size = record.approx_size();
                    if let Err(TrySendError::Full(record) | TrySendError::Closed(record)) =
                        part.lane.queue.try_send(record)
                    {
                        part.stash.push_front(record);
                        break;
                    }
                    part.stash_bytes -= size;
                }
                // Resume at half: the next fetch arrives while the rest of the stash drains.
                if part.paused
                    && part.stash_bytes < self.shared.options.buffer_bytes_per_partition / 2
                {
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

    /// Commits done offsets when the interval has passed: asynchronously to Kafka, or by committing the
    /// transaction in mode (a).
    fn maybe_commit(&self, consumer: &BaseConsumer<Self>) {
        let interval = match self.sink {
            Sink::Kafka(_) => self.shared.options.transaction_commit_interval,
            _ => self.shared.options.commit_interval,
        };
        let mut state = self.lock();
        if state.last_commit.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        state.last_commit = Some(Instant::now());
        match &self.sink {
            Sink::Kafka(txn) => self.commit_transaction(consumer, txn, &mut state, &mut [], false),
            _ => self.commit_kafka(consumer, state.iter_mut(), CommitMode::Async),
        }
    }

    /// Commits the done offsets of `parts` to Kafka (at-least-once, and mode (b)'s informational copy).
    fn commit_kafka<'a>(
        &self,
        consumer: &BaseConsumer<Self>,
        parts: impl Iterator<Item = &'a mut Part>,
        mode: CommitMode,
    ) {
        let mut tpl = TopicPartitionList::new();
        let mut due = Vec::new();
        for part in parts {
            if let Some(done) = part.due() {
                if let Err(err) =
                    tpl.add_partition_offset(&part.topic, part.partition, Offset::Offset(done))
                {
                    tracing::warn!(error = %err, "building the offsets to commit failed");
                    continue;
                }
                due.push((part, done));
            }
        }
        if due.is_empty() {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.shared.metrics.commit("kafka", true);
                for (part, done) in due {
                    part.committed = Some(done);
                }
            }
            Err(err) => {
                self.shared.metrics.commit("kafka", false);
                tracing::warn!(error = %err, "committing offsets failed; retried at the next commit");
            }
        }
    }

    /// Mode (a): commits the open transaction with the done offsets of every owned partition and of `extra`
    /// (partitions being revoked or stopped); `last` begins no new transaction. A failure aborts the transaction
    /// and requires a restart (its records are processed again).
    fn commit_transaction(
        &self,
        consumer: &BaseConsumer<Self>,
        txn: &Txn,
        state: &mut State,
        extra: &mut [Part],
        last: bool,
    ) {
        let result = txn.commit(
            || {
                state
                    .iter()
                    .chain(extra.iter())
                    .filter_map(|part| Some((part.topic.clone(), part.partition, part.due()?)))
                    .collect()
            },
            || consumer.group_metadata(),
            last,
        );
        match result {
            Ok(committed) if committed.is_empty() => {}
            Ok(committed) => {
                self.shared.metrics.commit("transaction", true);
                for (topic, partition, done) in committed {
                    let part = match state.get_mut(&topic, partition) {
                        Some(part) => Some(part),
                        None => extra
                            .iter_mut()
                            .find(|p| p.topic == topic && p.partition == partition),
                    };
                    if let Some(part) = part {
                        part.committed = Some(done);
                    }
                }
            }
            Err(err) => {
                self.shared.metrics.commit("transaction", false);
                txn.abort();
                self.request_restart(format!("the Kafka transaction failed: {}", chain(&err)));
            }
        }
    }

    /// Starts a lane for a newly assigned partition.
    fn start_lane(&self, topic: Arc<str>, partition: i32, stored: Option<i64>) -> Part {
        let shared = &self.shared;
        let (queue, queue_rx) = mpsc::channel(shared.policy.batch_size);
        let (exit_tx, exit) = std::sync::mpsc::sync_channel(1);
        let stop = CancellationToken::new();
        let progress = Progress::new();
        let lane = Lane {
            shared: shared.clone(),
            sink: self.sink.clone(),
            topic: topic.clone(),
            partition,
            progress: progress.clone(),
            metrics: shared.metrics.lane(&topic),
            stored,
        };
        let lane_stop = stop.clone();
        let task = self.runtime.spawn(async move {
            let _ = exit_tx.send(lane.run(queue_rx, lane_stop).await);
        });
        Part {
            consumed: shared.metrics.consumed(&topic, partition),
            lag: shared.metrics.lag(&topic, partition),
            topic,
            partition,
            lane: LaneHandle {
                queue,
                stop,
                task,
                exit,
                progress,
            },
            next_expected: None,
            stash: VecDeque::new(),
            stash_bytes: 0,
            paused: false,
            committed: None,
        }
    }

    /// Stops lanes: they take no new record, and their in-flight attempt has until the deadline (then it is
    /// abandoned). With `drain == false` they are abandoned at once (their work is not going to be committed).
    fn stop_lanes(&self, parts: &[Part], drain: bool) {
        for part in parts {
            part.lane.stop.cancel();
        }
        let deadline = Instant::now()
            + if drain {
                self.shared.options.drain_timeout
            } else {
                Duration::ZERO
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

    /// Stops everything at the end of a pipeline: pauses fetching, drains (or abandons) lanes, and commits what
    /// is done unless the transaction of mode (a) cannot be trusted.
    fn stop_all(&self, consumer: &BaseConsumer<Self>, graceful: bool) {
        let mut parts: Vec<Part> = {
            let mut state = self.lock();
            std::mem::take(&mut state.parts)
                .into_values()
                .flat_map(HashMap::into_values)
                .collect()
        };
        if let Ok(assignment) = consumer.assignment()
            && assignment.count() > 0
        {
            let _ = consumer.pause(&assignment);
        }
        match &self.sink {
            Sink::Kafka(txn) => {
                self.stop_lanes(&parts, graceful);
                if graceful {
                    self.commit_transaction(consumer, txn, &mut State::default(), &mut parts, true);
                } else {
                    txn.abort();
                }
            }
            _ => {
                // Done offsets are durable whatever the reason for stopping: commit them.
                self.stop_lanes(&parts, true);
                self.commit_kafka(consumer, parts.iter_mut(), CommitMode::Sync);
            }
        }
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

    /// Mode (b): the stored offsets of `partitions`, retried while the database is unavailable. `None` when
    /// shutdown came first.
    fn load_stored(&self, partitions: &[(String, i32)]) -> Option<HashMap<(String, i32), i64>> {
        let Sink::Db { pool, .. } = &self.sink else {
            return Some(HashMap::new());
        };
        let mut wait = self.shared.options.breaker_probe_initial;
        loop {
            let (pool, group, list) = (
                pool.clone(),
                self.shared.policy.group.clone(),
                partitions.to_vec(),
            );
            let timeout = self.shared.options.db_timeout;
            let loaded = block_on(&self.runtime, timeout, async move {
                eos_db::load_offsets(&pool, &group, &list).await
            });
            let why = match loaded {
                Some(Ok(offsets)) => return Some(offsets),
                Some(Err(err)) => chain(&err),
                None => format!("no answer within {timeout:?}"),
            };
            tracing::error!(error = %why, retry_in = ?wait, "reading the stored offsets failed; the assignment waits");
            self.shared.readiness.set_not_ready(
                READY_ASSIGNED,
                "cannot read the stored offsets (database unavailable)",
            );
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.shutdown.is_cancelled() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(self.shared.options.breaker_probe_max);
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        self.shared.metrics.rebalance("assign");
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let stored = self.load_stored(&partitions);
        if let Some(stored) = &stored {
            let mut state = self.lock();
            for (topic, partition) in &partitions {
                let offset = stored.get(&(topic.clone(), *partition)).copied();
                if let Some(offset) = offset
                    && let Err(err) =
                        tpl.set_partition_offset(topic, *partition, Offset::Offset(offset))
                {
                    self.request_restart(format!(
                        "cannot set the stored offset of {topic}/{partition}: {err}"
                    ));
                }
                let topic: Arc<str> = topic.as_str().into();
                let part = self.start_lane(topic.clone(), *partition, offset);
                if let Some(old) = state
                    .parts
                    .entry(topic)
                    .or_default()
                    .insert(*partition, part)
                {
                    // Cannot happen (revoke removes parts first); never leave a lane running unowned.
                    self.stop_lanes(std::slice::from_ref(&old), false);
                }
            }
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(err) = assigned {
            self.request_restart(format!("assigning partitions failed: {err}"));
        }
        // A partition paused in an earlier assignment must not stay paused.
        let _ = consumer.resume(tpl);
        tracing::info!(partitions = ?partitions, stored_offsets = ?stored, "partitions assigned");
        let count = self.lock().count();
        self.assignment_changed(count);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        self.shared
            .metrics
            .rebalance(if lost { "lost" } else { "revoke" });
        let mut revoked: Vec<Part> = {
            let mut state = self.lock();
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
            if self.is_mode_a() {
                self.request_restart("assignment lost while a transaction was open".into());
            }
        } else {
            self.stop_lanes(&revoked, true);
            match &self.sink {
                Sink::Kafka(txn) => {
                    let mut state = self.lock();
                    self.commit_transaction(consumer, txn, &mut state, &mut revoked, false);
                }
                _ => self.commit_kafka(consumer, revoked.iter_mut(), CommitMode::Sync),
            }
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

impl<H: Handler> ClientContext for PollCtx<H> {
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
            let Some(parts) = state.parts.get(topic.as_str()) else {
                continue;
            };
            for partition_stats in topic_stats.partitions.values() {
                let Some(part) = parts.get(&partition_stats.partition) else {
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
                    .or(part.committed)
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

impl<H: Handler> ConsumerContext for PollCtx<H> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl, consumer.assignment_lost())
            }
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the whole assignment");
                let all = consumer.assignment().unwrap_or_default();
                self.on_revoke(consumer, &all, true);
                let _ = consumer.unassign();
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            self.shared.metrics.commit("kafka", false);
            tracing::warn!(error = %err, "an asynchronous offset commit failed; it is retried");
            let mut state = self.lock();
            for element in offsets.elements() {
                if let Some(part) = state.get_mut(element.topic(), element.partition()) {
                    part.committed = None;
                }
            }
        }
    }
}
