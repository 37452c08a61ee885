//! The publisher loop: a pipeline of batches — claim → produce → await every ack → delete — with up to
//! `pipeline_depth` batches handed to the producer at once, so the producer never idles between batches.
//!
//! Guarantees (see also [`crate::writer`] and [`crate::lease`]):
//! - **Nothing lost**: a row is deleted only after the broker acknowledged it (acks=all, idempotent producer).
//!   Rows are selected by what is in the table, not by a cursor, so a transaction that commits late is simply
//!   picked up by a later batch.
//! - **Per-key order**: a key is a (topic, partition key) pair — each row goes to its own row's topic (after
//!   `topic_routes`), and Kafka orders per topic. A batch holds rows in id order (per key: commit order); the
//!   next batch is read leaving out every row still in flight and is handed to the same producer after it, so
//!   the producer receives each key's rows in commit order, and one producer with idempotence and at most 5
//!   in-flight requests keeps that order within a partition through its retries. Batches are settled
//!   (acknowledgements read, rows deleted) in the order they were sent. After any failure nothing new is read
//!   until everything in flight has settled; rows that failed retriably stay and go out again, first, in the
//!   next batch, and after a failure of one row the later rows of its key in the batch are not sent.
//! - **The one window**: the producer drops a record only by failing it outright (its delivery timeout, or a
//!   rejection); a later record of the same key already handed to it — in the same batch, or in a batch behind
//!   it in the pipeline — may then be acknowledged ahead of it. That is logged and counted
//!   (`outbox_publish_errors_total{kind="order_violation"}`); it cannot be undone. Rejections are kept from
//!   happening by the size check below; timeouts need the broker to be unreachable for the whole delivery
//!   timeout and to come back within the few milliseconds between two sends (decision 0047).
//! - **Poison rows**: a row the broker can never accept (larger than the topic's `max.message.bytes`, or
//!   rejected as invalid) is quarantined with the error; its key is blocked (the store never returns later rows
//!   of a key with a quarantined row) and every other key keeps flowing. The size check runs before sending,
//!   against the topic's live limit, so the common case never reaches the broker.
//! - **Duplicates** only when the process stops between the ack and the delete (or a send timed out although
//!   the broker had written it); consumers drop them by `event_id`.
//! - **No busy-waiting**: an idle publisher sleeps until a `NOTIFY` from a committing writer or the poll
//!   interval (fallback for lost notifications). While earlier batches are in flight a notification is read
//!   too, at most every 5 ms (`READ_SPACING`), so a commit waits neither for their acknowledgements nor for
//!   a read per commit.
//! - **Buckets change between batches**: before a heartbeat (which may release or take buckets) the pipeline
//!   drains.
//! - **Graceful shutdown**: stops reading, lets the batches in flight finish (bounded by `shutdown_grace`),
//!   deletes what was acknowledged, flushes the producer, releases its buckets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{JoinAll, join_all};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use service_kit::KafkaSettings;
use service_kit::ops::Readiness;
use service_kit::telemetry::error_chain;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::error::OutboxError;
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::store::{self, OutboxRow};
use crate::writer::NOTIFY_CHANNEL;

/// The publisher's own settings (the `service` section of its configuration).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherSettings {
    /// Rows per batch: read together, produced together, acknowledged and deleted together.
    pub batch_size: i64,
    /// Batches handed to the producer at once: while the oldest awaits its acknowledgements the next ones are
    /// read and sent. At most `batch_size × pipeline_depth` rows are in memory.
    pub pipeline_depth: usize,
    /// Fallback wake-up when no NOTIFY arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Heartbeat and bucket rebalancing among replicas.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often backlog metrics are refreshed.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
    /// How long a shutdown waits for the in-flight batch.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Longest pause after repeated failures.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Topic routing: a row written for the key topic is produced to the value topic instead (environment
    /// prefixes, migrations, test isolation). Unlisted topics are produced as written.
    pub topic_routes: std::collections::BTreeMap<String, String>,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            batch_size: 2000,
            pipeline_depth: 3,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            status_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            max_backoff: Duration::from_secs(5),
            topic_routes: Default::default(),
        }
    }
}

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub published: usize,
    pub quarantined: usize,
    /// Rows left for a later attempt (broker unavailable, timeouts).
    pub retriable_failures: usize,
}

impl BatchOutcome {
    fn failed(&self) -> bool {
        self.quarantined + self.retriable_failures > 0
    }
}

pub struct Publisher {
    pool: PgPool,
    producer: FutureProducer,
    leases: Leases,
    metrics: Metrics,
    settings: PublisherSettings,
    /// Topic → max.message.bytes, refreshed in the background with the heartbeat.
    limits: TopicLimits,
}

/// A batch handed to the producer, awaiting its acknowledgements.
struct InFlight {
    rows: Vec<OutboxRow>,
    /// Index in `rows` of each row handed to the producer, in the order of `acks`' results.
    sent: Vec<usize>,
    acks: JoinAll<DeliveryFuture>,
    started: Instant,
    /// Rows that never reached the producer: quarantined, or left for a later attempt.
    outcome: BatchOutcome,
}

/// What a batch's acknowledgements resolved to, in the order of [`InFlight::sent`].
type Acks = Vec<<DeliveryFuture as Future>::Output>;

/// How the pipeline goes on after what it saw.
#[derive(Debug, Default)]
struct Flow {
    /// Read nothing new until the window is empty: after a failure (the next read must start from the failed
    /// rows, and skip a newly quarantined row's key), and before a heartbeat (buckets change between batches).
    draining: bool,
    /// A retriable failure: pause (`backoff`, doubling up to `max_backoff`) before reading again.
    retry: bool,
    backoff: Duration,
}

impl Flow {
    /// A failure: drain the window, then (`retry`) pause.
    fn failed(&mut self, retry: bool) {
        self.draining = true;
        self.retry |= retry;
    }
}

/// What the pipeline loop waited for.
enum Wake {
    Shutdown,
    Acknowledged(Acks),
    /// Time to read the table: a notification, the spacing after a partial read, or the poll fallback.
    Read,
    Heartbeat,
}

/// The shortest gap between two partial reads while batches are in flight (half the spec's `linger.ms`).
const READ_SPACING: Duration = Duration::from_millis(5);

/// Per-record overhead added to key + value + headers when comparing with `max.message.bytes` (record batch
/// header and varints; generous on purpose).
const RECORD_OVERHEAD: usize = 128;

impl Publisher {
    pub fn new(
        pool: PgPool,
        database_url: String,
        kafka: &KafkaSettings,
        settings: PublisherSettings,
        metrics: Metrics,
    ) -> Result<Self, OutboxError> {
        // Settings built in code did not pass Settings::load's check; a reserved property is refused here too.
        kafka.validate()?;
        if settings.batch_size < 1 || settings.pipeline_depth < 1 {
            return Err(OutboxError::Settings(
                service_kit::ConfigError::Inconsistent(format!(
                    "service.batch_size and service.pipeline_depth must be at least 1 (got {} and {})",
                    settings.batch_size, settings.pipeline_depth
                )),
            ));
        }
        let mut config = service_kit::kafka::producer_config(kafka);
        // The broker's limit (the spec's 1 MB); librdkafka's default is lower than what the contract allows.
        config.set("message.max.bytes", "1048576");
        // Keep every batch of the pipeline in the client queue, and one more.
        config.set(
            "queue.buffering.max.messages",
            (settings.batch_size * (settings.pipeline_depth as i64 + 1)).to_string(),
        );
        let producer: FutureProducer = config.create()?;
        let admin: AdminClient<DefaultClientContext> =
            service_kit::kafka::client_config(kafka).create()?;
        let leases = Leases::new(database_url, uuid::Uuid::new_v4());
        Ok(Self {
            pool,
            producer,
            leases,
            metrics,
            settings,
            limits: TopicLimits {
                admin: Arc::new(admin),
                known: Arc::default(),
            },
        })
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        readiness: Readiness,
    ) -> Result<(), OutboxError> {
        readiness.register("database", "not yet connected");
        readiness.register("kafka", "no batch published yet");
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        readiness.set_ready("database");
        if self.kafka_reachable().await {
            readiness.set_ready("kafka");
        }

        // Backlog metrics on their own task: they must stay fresh while a batch waits for an absent broker.
        let status = tokio::spawn(status_loop(
            self.pool.clone(),
            self.metrics.clone(),
            self.settings.status_interval,
            shutdown.clone(),
        ));
        let depth = self.settings.pipeline_depth;
        // Batches handed to the producer, oldest first; settled in this order.
        let mut window: VecDeque<InFlight> = VecDeque::with_capacity(depth);
        // Keys (topic, partition key) whose row failed while later batches were in flight.
        let mut failed: HashSet<String> = HashSet::new();
        // Read the table without waiting for a notification (start-up, a full batch, the poll fallback).
        let mut read = true;
        // While batches are in flight, a partial read is followed by the next one no sooner than this: the
        // producer holds a record up to `linger.ms` anyway, and a read per notification (hundreds a second at
        // 2,000 events/s) costs the database and this loop more than it gains.
        let mut next_read_at = Instant::now();
        let mut flow = Flow::default();
        let mut next_heartbeat = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_heartbeat {
                flow.draining = true;
            }
            if window.is_empty() {
                failed.clear();
                if Instant::now() >= next_heartbeat {
                    self.heartbeat(&readiness).await;
                    next_heartbeat = Instant::now() + self.settings.heartbeat_interval;
                }
                if flow.retry {
                    flow.backoff = (flow.backoff * 2)
                        .clamp(Duration::from_millis(100), self.settings.max_backoff);
                    sleep_or_cancel(flow.backoff, &shutdown).await;
                    flow.retry = false;
                    read = true;
                }
                flow.draining = false;
            }
            let owned = self.leases.owned();
            if owned.is_empty() && window.is_empty() {
                sleep_or_cancel(
                    next_heartbeat.saturating_duration_since(Instant::now()),
                    &shutdown,
                )
                .await;
                continue;
            }

            // Read and send the next batch while the earlier ones await their acknowledgements.
            let spaced = window.is_empty() || Instant::now() >= next_read_at;
            if read && spaced && !flow.draining && window.len() < depth && !owned.is_empty() {
                // What was notified so far committed before this read: it is in it.
                while listener.next_buffered().is_some() {}
                let exclude: Vec<i64> = window
                    .iter()
                    .flat_map(|b| b.rows.iter().map(|r| r.id))
                    .collect();
                let sent = match store::fetch_publishable(
                    &self.pool,
                    &owned,
                    self.settings.batch_size,
                    &exclude,
                )
                .await
                {
                    // A full batch: more is waiting, read on. A partial one: the table was drained when read;
                    // wait for the next commit's notification.
                    Ok(rows) if rows.is_empty() => {
                        read = false;
                        Ok(None)
                    }
                    Ok(rows) => {
                        read = rows.len() as i64 >= self.settings.batch_size;
                        if !read {
                            next_read_at = Instant::now() + READ_SPACING;
                        }
                        self.send(rows).await.map(Some)
                    }
                    Err(err) => Err(err.into()),
                };
                match sent {
                    Ok(Some(batch)) => {
                        if batch.outcome.failed() {
                            flow.failed(batch.outcome.retriable_failures > 0);
                        }
                        window.push_back(batch);
                    }
                    Ok(None) => flow.backoff = Duration::ZERO,
                    Err(err) => {
                        self.failed(&err, &readiness);
                        flow.failed(true);
                    }
                }
                continue;
            }

            // Wait: for the oldest batch's acknowledgements, for a commit to read while it is out, for the
            // heartbeat, or (nothing in flight) for the poll interval.
            let room = !flow.draining && window.len() < depth;
            let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
            let wake = match window.front_mut() {
                Some(oldest) => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Wake::Shutdown,
                    acks = &mut oldest.acks => Wake::Acknowledged(acks),
                    notification = listener.recv(), if room && !read => {
                        log_listener_error(notification);
                        Wake::Read
                    }
                    _ = tokio::time::sleep_until(next_read_at.into()), if room && read => Wake::Read,
                    _ = tokio::time::sleep(until_heartbeat), if !flow.draining => Wake::Heartbeat,
                },
                None => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => Wake::Shutdown,
                    notification = listener.recv() => {
                        log_listener_error(notification);
                        Wake::Read
                    }
                    _ = tokio::time::sleep(self.settings.poll_interval.min(until_heartbeat)) => Wake::Read,
                },
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Read => read = true,
                Wake::Heartbeat => {}
                Wake::Acknowledged(acks) => {
                    let batch = window.pop_front().expect("the oldest batch was awaited");
                    self.after_settle(batch, acks, &mut failed, &readiness, &mut flow)
                        .await;
                }
            }
        }

        // Shutdown: read nothing more, let what is in flight finish (bounded by the grace), delete what was
        // acknowledged.
        let grace = self.settings.shutdown_grace;
        let finished = tokio::time::timeout(grace, async {
            while let Some(mut batch) = window.pop_front() {
                let acks = (&mut batch.acks).await;
                self.after_settle(batch, acks, &mut failed, &readiness, &mut flow)
                    .await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                "in-flight batches did not finish within the shutdown grace; their rows stay in the outbox and \
                 will be published again"
            );
        }
        tracing::info!("stopping: flushing the producer and releasing buckets");
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(grace)).await;
        self.leases.release_all().await;
        let _ = status.await;
        Ok(())
    }

    /// Settles the oldest batch and decides how the pipeline goes on: a failure drains it, a retriable one
    /// also pauses it.
    async fn after_settle(
        &self,
        batch: InFlight,
        acks: Acks,
        failed: &mut HashSet<String>,
        readiness: &Readiness,
        flow: &mut Flow,
    ) {
        match self.settle(batch, acks, failed).await {
            Ok(outcome) if outcome.retriable_failures > 0 => {
                readiness.set_not_ready("kafka", "publishing failed; retrying");
                flow.failed(true);
            }
            Ok(outcome) => {
                if outcome.quarantined > 0 {
                    flow.failed(false);
                }
                if outcome.published > 0 {
                    readiness.set_ready("kafka");
                    flow.backoff = Duration::ZERO;
                }
            }
            Err(err) => {
                self.failed(&err, readiness);
                flow.failed(true);
            }
        }
    }

    /// Counts and logs an error of the publishing path.
    fn failed(&self, err: &OutboxError, readiness: &Readiness) {
        self.metrics
            .errors
            .with_label_values(&[if err.is_retriable() {
                "retriable"
            } else {
                "fatal"
            }])
            .inc();
        tracing::error!(error = %error_chain(err), "publishing a batch failed");
        if matches!(err, OutboxError::Database(_)) {
            readiness.set_not_ready("database", "database operation failed");
        }
    }

    async fn heartbeat(&mut self, readiness: &Readiness) {
        match self.leases.refresh().await {
            Ok(()) => readiness.set_ready("database"),
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "outbox lease heartbeat failed; publishing paused");
                self.metrics.errors.with_label_values(&["lease"]).inc();
                readiness.set_not_ready("database", "lease heartbeat failed");
            }
        }
        self.metrics
            .owned_buckets
            .set(self.leases.owned().len() as i64);
        // Topic limits change rarely; re-read them off the publishing path.
        self.limits.refresh_in_background();
    }

    async fn kafka_reachable(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// Publishes one batch of the given buckets' oldest rows and settles it, with nothing else in flight.
    /// Public for tests and benchmarks.
    pub async fn publish_batch(&mut self, buckets: &[i16]) -> Result<BatchOutcome, OutboxError> {
        let rows =
            store::fetch_publishable(&self.pool, buckets, self.settings.batch_size, &[]).await?;
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let mut batch = self.send(rows).await?;
        let acks = (&mut batch.acks).await;
        self.settle(batch, acks, &mut HashSet::new()).await
    }

    /// Hands a batch's rows to the producer in id order, after routing and the size check. A row that cannot
    /// be sent is quarantined (poison) or recorded as failed, and the later rows of its key in the batch are
    /// not sent.
    async fn send(&self, mut rows: Vec<OutboxRow>) -> Result<InFlight, OutboxError> {
        for row in &mut rows {
            if let Some(routed) = self.settings.topic_routes.get(&row.topic) {
                row.topic.clone_from(routed);
            }
        }
        let started = Instant::now();
        let mut outcome = BatchOutcome::default();
        let mut sent = Vec::with_capacity(rows.len());
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut failed_keys: HashSet<(&str, &str)> = HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            if failed_keys.contains(&row.ordering_key()) {
                continue; // keep per-key order: nothing after a failed row of the same key
            }
            // The size check is what keeps a poison row from reaching the broker; without the topic's limit we
            // do not send blind, we try again later.
            let Some(limit) = self.limits.get(&row.topic).await else {
                let why = format!("cannot read max.message.bytes of {}", row.topic);
                store::record_failure(&self.pool, &[row.id], &why).await?;
                outcome.retriable_failures += 1;
                failed_keys.insert(row.ordering_key());
                continue;
            };
            let size = record_size(row);
            if size > limit {
                let why = format!(
                    "record of {size} bytes exceeds max.message.bytes={limit} of {}",
                    row.topic
                );
                self.quarantine(row, &why).await?;
                outcome.quarantined += 1;
                failed_keys.insert(row.ordering_key());
                continue;
            }
            match self.enqueue(row).await {
                Ok(delivery) => {
                    sent.push(i);
                    deliveries.push(delivery);
                }
                Err(err) if is_poison(&err) => {
                    self.quarantine(row, &error_chain(&err)).await?;
                    outcome.quarantined += 1;
                    failed_keys.insert(row.ordering_key());
                }
                Err(err) => {
                    store::record_failure(&self.pool, &[row.id], &error_chain(&err)).await?;
                    outcome.retriable_failures += 1;
                    failed_keys.insert(row.ordering_key());
                }
            }
        }
        Ok(InFlight {
            rows,
            sent,
            acks: join_all(deliveries),
            started,
            outcome,
        })
    }

    /// Reads a sent batch's acknowledgements in order: deletes the acknowledged rows, quarantines what the
    /// broker rejected as poison and records the retriable failures. `failed` holds the keys that failed in
    /// this batch or in an earlier one of the same pipeline run, so that an acknowledgement of a later row of
    /// such a key is seen as the reordering it is.
    async fn settle(
        &self,
        batch: InFlight,
        acks: Acks,
        failed: &mut HashSet<String>,
    ) -> Result<BatchOutcome, OutboxError> {
        let acknowledged = batch.started.elapsed();
        let mut outcome = batch.outcome;
        let mut published = Vec::with_capacity(batch.sent.len());
        let mut retry_ids = Vec::new();
        let mut last_retry_error = String::new();
        let now = chrono::Utc::now();
        let key_of = |row: &OutboxRow| format!("{}\u{0}{}", row.topic, row.partition_key);
        for (&i, result) in batch.sent.iter().zip(acks) {
            let row = &batch.rows[i];
            let result = match result {
                Ok(result) => result.map(|_| ()).map_err(|(err, _)| err),
                Err(_canceled) => Err(KafkaError::Canceled),
            };
            match result {
                Ok(()) => {
                    if !failed.is_empty() && failed.contains(&key_of(row)) {
                        self.metrics
                            .errors
                            .with_label_values(&["order_violation"])
                            .inc();
                        tracing::error!(key = %row.partition_key, event_id = %row.event_id,
                            "a later event of this key was acknowledged after an earlier one failed");
                    }
                    published.push(row.id);
                    self.metrics
                        .published
                        .with_label_values(&[&row.topic])
                        .inc();
                    let latency = (now - row.created_at).to_std().unwrap_or_default();
                    self.metrics
                        .commit_to_ack_seconds
                        .with_label_values(&[&row.topic])
                        .observe(latency.as_secs_f64());
                }
                Err(err) if is_poison(&err) => {
                    failed.insert(key_of(row));
                    self.quarantine(row, &error_chain(&err)).await?;
                    outcome.quarantined += 1;
                }
                Err(err) => {
                    failed.insert(key_of(row));
                    last_retry_error = error_chain(&err);
                    retry_ids.push(row.id);
                }
            }
        }
        store::delete_published(&self.pool, &published).await?;
        if !retry_ids.is_empty() {
            tracing::warn!(rows = retry_ids.len(), error = %last_retry_error, "rows not acknowledged; retrying");
            self.metrics
                .errors
                .with_label_values(&["retriable"])
                .inc_by(retry_ids.len() as u64);
            store::record_failure(&self.pool, &retry_ids, &last_retry_error).await?;
            outcome.retriable_failures += retry_ids.len();
        }
        outcome.published = published.len();
        if let Some(row) = batch.rows.first() {
            self.metrics
                .batch_seconds
                .with_label_values(&[&row.topic])
                .observe(batch.started.elapsed().as_secs_f64());
        }
        tracing::debug!(
            ?outcome,
            rows = batch.rows.len(),
            acknowledged_ms = acknowledged.as_secs_f64() * 1e3,
            settled_ms = batch.started.elapsed().as_secs_f64() * 1e3,
            "batch done"
        );
        Ok(outcome)
    }

    /// Queues one record, waiting while librdkafka's local queue is full.
    async fn enqueue(&self, row: &OutboxRow) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(row.headers.0.len());
        for (name, value) in &row.headers.0 {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&row.topic)
            .key(&row.partition_key)
            .payload(row.payload.as_bytes())
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    async fn quarantine(&self, row: &OutboxRow, why: &str) -> Result<(), OutboxError> {
        tracing::error!(event_id = %row.event_id, key = %row.partition_key, error = why,
            "quarantining a poison outbox row; later events of its key wait for `checkoutctl outbox release|drop`");
        self.metrics.errors.with_label_values(&["poison"]).inc();
        store::quarantine(&self.pool, row.id, why).await?;
        Ok(())
    }
}

fn log_listener_error(notification: Result<sqlx::postgres::PgNotification, sqlx::Error>) {
    if let Err(err) = notification {
        tracing::warn!(error = %error_chain(&err), "LISTEN connection failed; reconnecting");
    }
}

/// `max.message.bytes` per topic, as the broker reports it. Read once inline the first time a topic is seen
/// (the size check needs it before sending), then refreshed by background tasks so a slow admin request
/// never stalls publishing.
struct TopicLimits {
    admin: Arc<AdminClient<DefaultClientContext>>,
    known: Arc<Mutex<HashMap<String, usize>>>,
}

impl TopicLimits {
    async fn get(&self, topic: &str) -> Option<usize> {
        if let Some(limit) = self.known.lock().expect("limits lock").get(topic) {
            return Some(*limit);
        }
        let limit = describe_limit(&self.admin, topic).await?;
        self.known
            .lock()
            .expect("limits lock")
            .insert(topic.to_string(), limit);
        Some(limit)
    }

    fn refresh_in_background(&self) {
        let topics: Vec<String> = self
            .known
            .lock()
            .expect("limits lock")
            .keys()
            .cloned()
            .collect();
        let (admin, known) = (self.admin.clone(), self.known.clone());
        tokio::spawn(async move {
            for topic in topics {
                if let Some(limit) = describe_limit(&admin, &topic).await {
                    known.lock().expect("limits lock").insert(topic, limit);
                }
            }
        });
    }
}

/// `max.message.bytes` of a topic as the broker reports it (None when it cannot be read).
async fn describe_limit(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Option<usize> {
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .ok()?;
    let resource = results.into_iter().next()?.ok()?;
    resource
        .get("max.message.bytes")?
        .value
        .as_ref()?
        .parse()
        .ok()
}

fn record_size(row: &OutboxRow) -> usize {
    let headers: usize = row
        .headers
        .0
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    row.partition_key.len() + row.payload.len() + headers + RECORD_OVERHEAD
}

/// Errors that sending the same record again can never fix.
fn is_poison(err: &KafkaError) -> bool {
    let code = match err {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
    )
}

async fn status_loop(
    pool: PgPool,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match pool.acquire().await {
            Ok(mut conn) => match store::backlog(&mut conn).await {
                Ok(b) => {
                    metrics.backlog_rows.set(b.rows);
                    metrics.oldest_unpublished_seconds.set(b.oldest_age_seconds);
                    metrics.quarantined_rows.set(b.quarantined);
                    metrics.blocked_rows.set(b.blocked);
                }
                Err(err) => {
                    tracing::warn!(error = %error_chain(&err), "reading the outbox backlog failed")
                }
            },
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "no database connection for backlog metrics")
            }
        }
        sleep_or_cancel(interval, &shutdown).await;
    }
}

async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_about_the_record_itself_are_poison() {
        let poison = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(is_poison(&poison));
        assert!(is_poison(&KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidRecord
        )));
        // A missing topic or a timeout is an infrastructure problem: retry, never quarantine.
        assert!(!is_poison(&KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!is_poison(&KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut
        )));
        assert!(!is_poison(&KafkaError::Canceled));
    }

    #[test]
    fn record_size_counts_key_payload_and_headers() {
        let row = OutboxRow {
            id: 1,
            bucket: 0,
            event_id: uuid::Uuid::nil(),
            topic: "t".into(),
            partition_key: "key".into(),
            payload: "x".repeat(1000),
            headers: sqlx::types::Json(vec![("event_id".into(), "abc".into())]),
            created_at: chrono::Utc::now(),
        };
        assert_eq!(record_size(&row), 3 + 1000 + (8 + 3 + 8) + RECORD_OVERHEAD);
    }

    #[tokio::test]
    async fn a_reserved_client_property_is_refused_before_any_client_exists() {
        let kafka = KafkaSettings {
            bootstrap_servers: "127.0.0.1:1".into(),
            client: [("enable.gapless.guarantee".to_string(), "true".to_string())].into(),
        };
        let url = "postgres://nobody@127.0.0.1:1/none";
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy(url)
            .unwrap();
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let result = Publisher::new(
            pool,
            url.into(),
            &kafka,
            PublisherSettings::default(),
            metrics,
        );
        let Err(err) = result else {
            panic!("a reserved property must be refused")
        };
        assert!(matches!(err, OutboxError::Settings(_)), "{err}");
        assert!(!err.is_retriable());
        assert!(
            error_chain(&err).contains("kafka.client.\"enable.gapless.guarantee\""),
            "{}",
            error_chain(&err)
        );
    }

    #[test]
    fn settings_reject_unknown_keys() {
        let err = serde_json::from_str::<PublisherSettings>(r#"{"batch_sise": 10}"#).unwrap_err();
        assert!(err.to_string().contains("batch_sise"), "{err}");
        let ok: PublisherSettings =
            serde_json::from_str(r#"{"batch_size": 10, "poll_interval": "250ms"}"#).unwrap();
        assert_eq!(
            (ok.batch_size, ok.poll_interval),
            (10, Duration::from_millis(250))
        );
    }
}
