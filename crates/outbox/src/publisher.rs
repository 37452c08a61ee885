//! The publisher loop: claim → produce → await every ack → delete, one batch at a time.
//!
//! Guarantees (see also [`crate::writer`] and [`crate::lease`]):
//! - **Nothing lost**: a row is deleted only after the broker acknowledged it (acks=all, idempotent producer).
//!   Rows are selected by what is in the table, not by a cursor, so a transaction that commits late is simply
//!   picked up by a later batch.
//! - **Per-key order**: a key is a (topic, partition key) pair — each row goes to its own row's topic (after
//!   `topic_routes`), and Kafka orders per topic. A batch holds rows in id order (per key: commit order); one
//!   producer with idempotence and at most 5 in-flight requests keeps that order within a partition; the next
//!   batch starts only after the previous one is fully resolved. After a failure of one row, later rows of the
//!   same key in the batch are not sent; rows that fail retriably stay and go out again, first, in the next
//!   batch.
//! - **Poison rows**: a row the broker can never accept (larger than the topic's `max.message.bytes`, or
//!   rejected as invalid) is quarantined with the error; its key is blocked (the store never returns later rows
//!   of a key with a quarantined row) and every other key keeps flowing. The size check runs before sending,
//!   against the topic's live limit, so the common case never reaches the broker. If the broker rejects a row
//!   that passed the check while a later row of the same key was already acknowledged, the reordering is logged
//!   and counted (`outbox_publish_errors_total{kind="order_violation"}`) — it cannot be undone.
//! - **Duplicates** only when the process stops between the ack and the delete (or a send timed out although
//!   the broker had written it); consumers drop them by `event_id`.
//! - **No busy-waiting**: an idle publisher sleeps until a `NOTIFY` from a committing writer or the poll
//!   interval (fallback for lost notifications).
//! - **Graceful shutdown**: stops claiming, lets the in-flight batch finish (bounded by `shutdown_grace`),
//!   deletes what was acknowledged, flushes the producer, releases its buckets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
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
    /// Rows per batch: produced together, acknowledged together.
    pub batch_size: i64,
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

pub struct Publisher {
    pool: PgPool,
    producer: FutureProducer,
    leases: Leases,
    metrics: Metrics,
    settings: PublisherSettings,
    /// Topic → max.message.bytes, refreshed in the background with the heartbeat.
    limits: TopicLimits,
    /// The next batch, read while the previous one awaited its acknowledgements. Used only if that batch
    /// had no failure (otherwise a failed key's later rows could be in it) and only for buckets still owned.
    prefetched: Option<Vec<OutboxRow>>,
}

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
        let mut config = service_kit::kafka::producer_config(kafka);
        // The broker's limit (the spec's 1 MB); librdkafka's default is lower than what the contract allows.
        config.set("message.max.bytes", "1048576");
        // Keep a full batch in the client queue.
        config.set(
            "queue.buffering.max.messages",
            (settings.batch_size.max(1) * 2).to_string(),
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
            prefetched: None,
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
        let mut next_heartbeat = Instant::now();
        let mut backoff = Duration::ZERO;
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_heartbeat {
                self.heartbeat(&readiness).await;
                next_heartbeat = Instant::now() + self.settings.heartbeat_interval;
            }
            let owned = self.leases.owned();
            if owned.is_empty() {
                sleep_or_cancel(self.settings.heartbeat_interval, &shutdown).await;
                continue;
            }

            let grace = self.settings.shutdown_grace;
            let result = {
                let batch = self.publish_batch(&owned);
                tokio::pin!(batch);
                tokio::select! {
                    result = &mut batch => Some(result),
                    _ = shutdown.cancelled() => tokio::time::timeout(grace, &mut batch).await.ok(),
                }
            };
            let Some(result) = result else {
                tracing::warn!(
                    "in-flight batch did not finish within the shutdown grace; its rows stay in the \
                                outbox and will be published again"
                );
                break;
            };
            match result {
                Ok(outcome) if outcome.retriable_failures > 0 => {
                    readiness.set_not_ready("kafka", "publishing failed; retrying");
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(100), self.settings.max_backoff);
                    sleep_or_cancel(backoff, &shutdown).await;
                }
                Ok(outcome) if outcome.published + outcome.quarantined > 0 => {
                    readiness.set_ready("kafka");
                    backoff = Duration::ZERO;
                }
                Ok(_) => {
                    backoff = Duration::ZERO;
                    let idle = self
                        .settings
                        .poll_interval
                        .min(next_heartbeat.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => {}
                        notification = listener.recv() => {
                            if let Err(err) = notification {
                                tracing::warn!(error = %error_chain(&err), "LISTEN connection failed; reconnecting");
                            }
                        }
                        _ = tokio::time::sleep(idle) => {}
                    }
                }
                Err(err) => {
                    self.metrics
                        .errors
                        .with_label_values(&[if err.is_retriable() {
                            "retriable"
                        } else {
                            "fatal"
                        }])
                        .inc();
                    tracing::error!(error = %error_chain(&err), "publishing a batch failed");
                    if matches!(err, OutboxError::Database(_)) {
                        readiness.set_not_ready("database", "database operation failed");
                    }
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(100), self.settings.max_backoff);
                    sleep_or_cancel(backoff, &shutdown).await;
                }
            }
        }

        tracing::info!("stopping: flushing the producer and releasing buckets");
        let producer = self.producer.clone();
        let grace = self.settings.shutdown_grace;
        let _ = tokio::task::spawn_blocking(move || producer.flush(grace)).await;
        self.leases.release_all().await;
        let _ = status.await;
        Ok(())
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

    /// Publishes one batch of the given buckets' oldest rows. Public for tests and benchmarks.
    pub async fn publish_batch(&mut self, buckets: &[i16]) -> Result<BatchOutcome, OutboxError> {
        let mut rows = match self.prefetched.take() {
            Some(rows) => rows
                .into_iter()
                .filter(|r| buckets.contains(&r.bucket))
                .collect(),
            None => {
                store::fetch_publishable(&self.pool, buckets, self.settings.batch_size, &[]).await?
            }
        };
        for row in &mut rows {
            if let Some(routed) = self.settings.topic_routes.get(&row.topic) {
                row.topic.clone_from(routed);
            }
        }
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let started = Instant::now();
        let mut outcome = BatchOutcome::default();
        let mut failed_keys: HashSet<(&str, &str)> = HashSet::new();
        let mut pending = Vec::with_capacity(rows.len());

        for row in &rows {
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
                Ok(delivery) => pending.push((row, delivery)),
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

        let enqueued = started.elapsed();
        let (rows_sent, deliveries): (Vec<&OutboxRow>, Vec<_>) = pending.into_iter().unzip();
        // While the broker acknowledges this batch, read the next one (leaving this one's rows out).
        let in_batch: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let (results, next) = tokio::join!(
            join_all(deliveries),
            store::fetch_publishable(&self.pool, buckets, self.settings.batch_size, &in_batch)
        );
        let acknowledged = started.elapsed();
        let mut published = Vec::with_capacity(rows_sent.len());
        let mut retry_ids = Vec::new();
        let mut last_retry_error = String::new();
        let mut delivery_failed: HashSet<(&str, &str)> = HashSet::new();
        let now = chrono::Utc::now();
        for (row, result) in rows_sent.into_iter().zip(results) {
            let result = match result {
                Ok(result) => result.map(|_| ()).map_err(|(err, _)| err),
                Err(_canceled) => Err(KafkaError::Canceled),
            };
            match result {
                Ok(()) => {
                    if delivery_failed.contains(&row.ordering_key()) {
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
                    delivery_failed.insert(row.ordering_key());
                    self.quarantine(row, &error_chain(&err)).await?;
                    outcome.quarantined += 1;
                }
                Err(err) => {
                    delivery_failed.insert(row.ordering_key());
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
        // A full batch means a backlog: the prefetched rows are next. A partial one means the table was drained
        // when it was read; reading again now catches more of what committed meanwhile (lower latency).
        let full = rows.len() as i64 >= self.settings.batch_size;
        if full && outcome.quarantined == 0 && outcome.retriable_failures == 0 {
            self.prefetched = next.ok().filter(|rows| !rows.is_empty());
        }
        if let Some(row) = rows.first() {
            self.metrics
                .batch_seconds
                .with_label_values(&[&row.topic])
                .observe(started.elapsed().as_secs_f64());
        }
        tracing::debug!(
            ?outcome,
            enqueue_ms = enqueued.as_secs_f64() * 1e3,
            ack_ms = (acknowledged - enqueued).as_secs_f64() * 1e3,
            finish_ms = (started.elapsed() - acknowledged).as_secs_f64() * 1e3,
            prefetched = self.prefetched.as_ref().map_or(0, Vec::len),
            "batch done"
        );
        Ok(outcome)
    }

    /// Queues one record, waiting while librdkafka's local queue is full.
    async fn enqueue(
        &self,
        row: &OutboxRow,
    ) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
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
