//! The canary: a KMinion-style end-to-end probe. Every `interval`, one probe per partition of the canary topic
//! is produced (with the spec's producer settings, like every producer of the bus) and consumed back by this
//! instance's own consumer.
//!
//! Guarantees:
//! - `canary_probes_sent_total` counts every probe handed to the producer; each one later counts exactly once in
//!   `canary_probes_received_total` (back within `timeout`, its round trip observed in `canary_roundtrip_seconds`)
//!   or in `canary_probes_lost_total` (not back within `timeout`, including a failed produce). A probe that comes
//!   back after being declared lost is ignored.
//! - `canary_produce_ack_seconds` observes the time from send to the broker's acknowledgement (acks=all).
//! - The consumer assigns every partition itself at the current end offsets *before* the first probe, carries
//!   its own group id and never commits, and counts only probes keyed with this instance's id: replicas of the
//!   monitor never steal or double-count each other's probes.
//! - A missing canary topic is retried (logged, `canary_errors_total`), never a crash; a partition added to it is
//!   picked up within 30 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use service_kit::KafkaSettings;
use service_kit::shutdown::CancellationToken;

use crate::settings::CanarySettings;

#[derive(Clone)]
pub struct CanaryMetrics {
    pub produce_ack: Histogram,
    pub roundtrip: Histogram,
    pub sent: IntCounter,
    pub received: IntCounter,
    pub lost: IntCounter,
    pub errors: IntCounter,
}

impl CanaryMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let histogram = |name: &str, help: &str| -> prometheus::Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.clone()))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            produce_ack: histogram(
                "canary_produce_ack_seconds",
                "Canary probe: send to broker acknowledgement (acks=all).",
            )?,
            roundtrip: histogram(
                "canary_roundtrip_seconds",
                "Canary probe: send to consumed back.",
            )?,
            sent: counter("canary_probes_sent_total", "Canary probes produced.")?,
            received: counter(
                "canary_probes_received_total",
                "Canary probes consumed back within the timeout.",
            )?,
            lost: counter(
                "canary_probes_lost_total",
                "Canary probes not back within the timeout.",
            )?,
            errors: counter(
                "canary_errors_total",
                "Canary failures: topic missing, metadata or produce errors.",
            )?,
        })
    }
}

type Pending = Arc<Mutex<HashMap<u64, Instant>>>;

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the canary until `shutdown`.
pub async fn run(
    kafka: KafkaSettings,
    settings: CanarySettings,
    kafka_timeout: Duration,
    metrics: CanaryMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let producer: FutureProducer = service_kit::kafka::producer_config(&kafka)
        .create()
        .context("creating the canary producer")?;
    let consumer: Arc<StreamConsumer> = Arc::new(
        service_kit::kafka::client_config(&kafka)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", "50")
            .create()
            .context("creating the canary consumer")?,
    );
    let metadata: Arc<BaseConsumer> = Arc::new(
        service_kit::kafka::client_config(&kafka)
            .create()
            .context("creating the canary metadata client")?,
    );
    let pending: Pending = Arc::default();

    let receiver = tokio::spawn(receive(
        Arc::clone(&consumer),
        instance.clone(),
        Arc::clone(&pending),
        metrics.clone(),
        shutdown.clone(),
    ));

    let mut partitions: Vec<i32> = Vec::new();
    let mut refreshed: Option<Instant> = None;
    let mut seq: u64 = 0;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        sweep(&pending, settings.timeout, &metrics);
        if refreshed.is_none_or(|at| at.elapsed() >= Duration::from_secs(30))
            || partitions.is_empty()
        {
            refreshed = Some(Instant::now());
            match assign(
                &metadata,
                &consumer,
                &settings.topic,
                &partitions,
                kafka_timeout,
            )
            .await
            {
                Ok(Some(now)) => {
                    tracing::info!(topic = %settings.topic, partitions = now.len(), "canary assigned");
                    partitions = now;
                }
                Ok(None) => {}
                Err(err) => {
                    metrics.errors.inc();
                    tracing::warn!(topic = %settings.topic, error = format!("{err:#}"), "canary cannot read its topic");
                    continue;
                }
            }
        }
        for &partition in &partitions {
            seq += 1;
            let id = seq;
            let sent_at = Instant::now();
            lock(&pending).insert(id, sent_at);
            metrics.sent.inc();
            let producer = producer.clone();
            let topic = settings.topic.clone();
            let key = instance.clone();
            let metrics = metrics.clone();
            let timeout = settings.timeout;
            tokio::spawn(async move {
                let payload = id.to_string();
                let record = FutureRecord::to(&topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload);
                match producer.send(record, timeout).await {
                    Ok(_) => metrics.produce_ack.observe(sent_at.elapsed().as_secs_f64()),
                    Err((err, _)) => {
                        // Left pending: the sweep counts it lost.
                        metrics.errors.inc();
                        tracing::warn!(%topic, partition, error = %err, "canary probe not acknowledged");
                    }
                }
            });
        }
    }
    receiver.await.context("canary receiver panicked")?;
    Ok(())
}

/// Counts the probes older than `timeout` as lost.
fn sweep(pending: &Pending, timeout: Duration, metrics: &CanaryMetrics) {
    let mut pending = lock(pending);
    let before = pending.len();
    pending.retain(|_, sent| sent.elapsed() < timeout);
    metrics.lost.inc_by((before - pending.len()) as u64);
}

/// (Re)assigns the consumer when the topic's partition count changed, at the current end offsets. `Ok(None)`:
/// unchanged.
async fn assign(
    metadata: &Arc<BaseConsumer>,
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    current: &[i32],
    timeout: Duration,
) -> anyhow::Result<Option<Vec<i32>>> {
    let metadata = Arc::clone(metadata);
    let name = topic.to_string();
    let ends = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
        let md = metadata.fetch_metadata(Some(&name), timeout)?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .with_context(|| format!("topic {name} not in the metadata"))?;
        if let Some(err) = t.error() {
            anyhow::bail!("topic {name}: {err:?} (declared in deploy/kafka/topics.yaml: `checkoutctl topics apply`)");
        }
        let mut ends = Vec::new();
        for p in t.partitions() {
            let (_, high) = metadata.fetch_watermarks(&name, p.id(), timeout)?;
            ends.push((p.id(), high));
        }
        Ok(ends)
    })
    .await??;
    let partitions: Vec<i32> = ends.iter().map(|(p, _)| *p).collect();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} has no partitions");
    }
    if partitions == current {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, high) in &ends {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*high))?;
    }
    consumer.assign(&tpl)?;
    Ok(Some(partitions))
}

async fn receive(
    consumer: Arc<StreamConsumer>,
    instance: String,
    pending: Pending,
    metrics: CanaryMetrics,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(err) => {
                metrics.errors.inc();
                tracing::warn!(error = %err, "canary consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if message.key() != Some(instance.as_bytes()) {
            continue;
        }
        let Some(id) = message
            .payload()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(sent) = lock(&pending).remove(&id) {
            metrics.roundtrip.observe(sent.elapsed().as_secs_f64());
            metrics.received.inc();
        }
    }
}
