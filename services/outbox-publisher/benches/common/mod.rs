//! What the outbox benchmarks share (`benches/outbox.rs`, `benches/peers.rs`): the ~1 KiB event, the publisher's
//! configuration, the backlog writer, Kafka's `kafka-producer-perf-test` with the publisher's producer settings,
//! and the topic's high watermarks. Each bench uses a subset.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use events::{Envelope, EventId, EventType, InvoiceId};
use outbox::PublisherSettings;
use outbox_publisher::Config;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use service_kit::{KafkaSettings, Settings};
use sqlx::PgPool;
use testkit::{infra, workspace_root};

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An InvoiceCreated event of ~1 KiB encoded (the metadata's user agent pads it).
pub fn event(invoice: InvoiceId) -> Envelope {
    let mut parts = events::examples::example(EventType::InvoiceCreated).into_parts();
    parts.event_id = EventId::new();
    parts.aggregate_id = invoice.into();
    parts.metadata.user_agent = Some("bench/1.0 ".repeat(26));
    Envelope::from_parts(parts).unwrap()
}

/// The encoded size of [`event`], what the producer perf test sends.
pub fn record_size() -> usize {
    events::encode(&event(InvoiceId::new())).unwrap().len()
}

/// The publisher's configuration: its defaults, domain events routed to `topic`, 8 database connections.
pub fn config(db_url: &str, topic: &str) -> Config {
    let mut service = PublisherSettings::default();
    service
        .topic_routes
        .insert(events::topics::DOMAIN_EVENTS.into(), topic.into());
    let mut config: Config = Settings {
        kafka: KafkaSettings {
            bootstrap_servers: infra().bootstrap_servers.clone(),
            client: Default::default(),
        },
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    };
    config.database.url = Some(db_url.to_string().into());
    config.database.max_connections = 8;
    config
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Appends `events` events to the outbox through `outbox::append_batch`, 5,000 per transaction, over 50,000
/// invoices (partition keys); with `delete_in_tx` each transaction deletes its rows again before it commits (the
/// outbox setup Debezium's documentation recommends: the change lives on in the WAL only). Then VACUUM ANALYZE,
/// and one line of figures on stdout. Returns the seconds it took.
pub async fn fill(pool: &PgPool, events: u64, delete_in_tx: bool) -> f64 {
    let fill = Instant::now();
    let invoices: Vec<InvoiceId> = (0..50_000).map(|_| InvoiceId::new()).collect();
    let mut inserted = 0u64;
    while inserted < events {
        let n = 5_000.min(events - inserted);
        let batch: Vec<Envelope> = (0..n)
            .map(|i| event(invoices[((inserted + i) as usize) % invoices.len()]))
            .collect();
        let mut tx = pool.begin().await.unwrap();
        outbox::append_batch(&mut tx, &batch).await.unwrap();
        if delete_in_tx {
            // Nothing else writes this database: the table holds exactly this transaction's rows.
            sqlx::query("DELETE FROM outbox")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        inserted += n;
        if inserted.is_multiple_of(100_000) {
            eprintln!(
                "  inserted {inserted}/{events} ({:.0}s)",
                fill.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("VACUUM ANALYZE outbox")
        .execute(pool)
        .await
        .unwrap();
    let secs = fill.elapsed().as_secs_f64();
    println!(
        "  writer: {events} events appended in {secs:.1}s ({:.0} events/s, batches of 5000{})",
        events as f64 / secs,
        if delete_in_tx {
            ", each deleted in its writing transaction"
        } else {
            ""
        }
    );
    secs
}

/// What `kafka-producer-perf-test` printed: its summary line and the records/s in it.
pub struct PerfTest {
    pub summary: String,
    pub rate: Option<f64>,
    pub stderr: String,
}

/// Kafka's own producer (deploy/local/kafka-cli) sending `records` records of `record_size` bytes to `topic` with
/// the publisher's producer settings: acks=all, idempotence, lz4, linger.ms=10, batch.size=16384.
pub fn producer_perf_test(topic: &str, records: u64, record_size: usize) -> PerfTest {
    let output = Command::new(workspace_root().join("deploy/local/kafka-cli"))
        .args([
            "kafka-producer-perf-test",
            "--topic",
            topic,
            "--num-records",
            &records.to_string(),
        ])
        .args([
            "--record-size",
            &record_size.to_string(),
            "--throughput",
            "-1",
            "--producer-props",
        ])
        .arg(format!("bootstrap.servers={}", infra().bootstrap_servers))
        .args([
            "acks=all",
            "enable.idempotence=true",
            "compression.type=lz4",
            "linger.ms=10",
            "batch.size=16384",
        ])
        .output()
        .expect("run kafka-producer-perf-test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    let rate = summary
        .split(',')
        .find(|part| part.contains("records/sec"))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    PerfTest {
        summary,
        rate,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The sum of `topic`'s high watermarks: the records it holds (acknowledged by every in-sync replica). Blocking.
/// (flows::harness::end_offsets does the same for tests; flows depends on this crate, so it is not used here.)
pub fn records_in(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// A plain client for [`records_in`].
pub fn watermark_reader() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &infra().bootstrap_servers)
        .create()
        .expect("consumer")
}

/// The machine's load averages (1, 5, 15 minutes) as printed by uptime.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
