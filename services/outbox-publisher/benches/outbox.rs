//! `make bench-outbox`: the outbox publisher's figures on this machine, printed (never asserted).
//!
//! 1. Backlog drain: BENCH_EVENTS (default 1,000,000) events of ~1 KiB pre-inserted, one publisher; events/s
//!    until the outbox is empty; the backlog figures (`outbox::store::backlog`, what metrics and `checkoutctl
//!    outbox status` read) timed at the full backlog and every 200 ms during the drain.
//! 2. Steady state: writers commit 2,000 events/s for BENCH_STEADY_SECS (default 60); latency from each
//!    writer's commit to the event being readable by a consumer (an upper bound of commit → broker ack), p50/p99.
//! 3. Ceiling: Kafka's own `kafka-producer-perf-test` with the same record size, acks=all and idempotence; our
//!    drain rate as a ratio of it.
//!
//! Needs `make up` (the real broker and database), like the tests.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use events::{Envelope, EventId, EventType, InvoiceId};
use outbox::PublisherSettings;
use outbox_publisher::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};
use service_kit::shutdown::CancellationToken;
use service_kit::{KafkaSettings, Settings};
use testkit::{create_topic, fresh_database, infra, workspace_root};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An InvoiceCreated event of ~1 KiB encoded (the metadata's user agent pads it).
fn event(invoice: InvoiceId) -> Envelope {
    let mut parts = events::examples::example(EventType::InvoiceCreated).into_parts();
    parts.event_id = EventId::new();
    parts.aggregate_id = invoice.into();
    parts.metadata.user_agent = Some("bench/1.0 ".repeat(26));
    Envelope::from_parts(parts).unwrap()
}

fn config(db_url: &str, topic: &str) -> Config {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Quiet by default; RUST_LOG=outbox::publisher=debug shows each batch's enqueue/ack/finish times.
    service_kit::telemetry::init(&service_kit::LogSettings {
        filter: "warn".into(),
        ..Default::default()
    });
    let events_wanted = env_or("BENCH_EVENTS", 1_000_000);
    let steady_secs = env_or("BENCH_STEADY_SECS", 60);
    let record_size = events::encode(&event(InvoiceId::new())).unwrap().len();
    println!(
        "outbox benchmark: {events_wanted} events of {record_size} bytes; steady state 2000 events/s for {steady_secs}s"
    );

    // 1. Backlog drain.
    let db = fresh_database().await;
    let topic = create_topic(12).await;
    let fill = Instant::now();
    let invoices: Vec<InvoiceId> = (0..50_000).map(|_| InvoiceId::new()).collect();
    let mut inserted = 0u64;
    while inserted < events_wanted {
        let n = 5_000.min(events_wanted - inserted);
        let batch: Vec<Envelope> = (0..n)
            .map(|i| event(invoices[((inserted + i) as usize) % invoices.len()]))
            .collect();
        let mut tx = db.pool.begin().await.unwrap();
        outbox::append_batch(&mut tx, &batch).await.unwrap();
        tx.commit().await.unwrap();
        inserted += n;
        if inserted.is_multiple_of(100_000) {
            eprintln!(
                "  inserted {inserted}/{events_wanted} ({:.0}s)",
                fill.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("VACUUM ANALYZE outbox")
        .execute(&db.pool)
        .await
        .unwrap();
    println!(
        "  writer: {events_wanted} events appended in {:.1}s ({:.0} events/s, batches of 5000)",
        fill.elapsed().as_secs_f64(),
        events_wanted as f64 / fill.elapsed().as_secs_f64()
    );

    // The backlog figures the publisher's metrics and `checkoutctl outbox status` read, timed at the full
    // backlog and then throughout the drain (it doubles as the drain's progress probe: one query, no count(*)).
    let mut backlog_times: Vec<Duration> = Vec::new();
    let mut conn = db.pool.acquire().await.unwrap();
    let timed = Instant::now();
    let full = outbox::store::backlog(&mut conn).await.unwrap();
    let full_backlog_time = timed.elapsed();

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = outbox_publisher::start(config(&db.url, &topic), shutdown.clone())
        .await
        .unwrap();
    let mut last_report = Instant::now();
    loop {
        let timed = Instant::now();
        let backlog = outbox::store::backlog(&mut conn).await.unwrap();
        backlog_times.push(timed.elapsed());
        if backlog.rows == 0 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  draining: {}{} left after {:.0}s",
                if backlog.rows_estimated { "~" } else { "" },
                backlog.rows,
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(conn);
    let drain_secs = started.elapsed().as_secs_f64();
    let drain_rate = events_wanted as f64 / drain_secs;
    println!(
        "1. backlog drain: {events_wanted} events in {drain_secs:.1}s = {drain_rate:.0} events/s (target >= 20000)"
    );
    backlog_times.sort();
    println!(
        "   backlog query (store::backlog): {:.1} ms at the full backlog ({}{} rows); during the drain p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms over {} reads (target: none over 50 ms)",
        full_backlog_time.as_secs_f64() * 1e3,
        if full.rows_estimated { "~" } else { "" },
        full.rows,
        percentile(&backlog_times, 0.5).as_secs_f64() * 1e3,
        percentile(&backlog_times, 0.99).as_secs_f64() * 1e3,
        backlog_times.last().unwrap().as_secs_f64() * 1e3,
        backlog_times.len()
    );
    shutdown.cancel();
    running.wait().await.unwrap();
    drop(db);

    // 2. Steady state at 2k events/s.
    let db = fresh_database().await;
    let topic = create_topic(12).await;
    let shutdown = CancellationToken::new();
    let running = outbox_publisher::start(config(&db.url, &topic), shutdown.clone())
        .await
        .unwrap();
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (committed, latencies, stop, topic) = (
            committed.clone(),
            latencies.clone(),
            stop.clone(),
            topic.clone(),
        );
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &infra().bootstrap_servers)
                .set("group.id", testkit::unique_name("bench-reader"))
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", "5")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let now = Instant::now();
                let id = msg
                    .headers()
                    .and_then(|h| h.iter().find(|x| x.key == "event_id").and_then(|x| x.value))
                    .unwrap();
                let id = String::from_utf8(id.to_vec()).unwrap();
                if let Some(at) = committed.lock().unwrap().remove(&id) {
                    latencies.lock().unwrap().push(now - at);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await; // reader joined, publisher owns its buckets
    // 20 independent writers, each committing one 4-event transaction every 40 ms (25 tx/s): 2,000 events/s.
    // Independent, so one slow commit delays only its own writer, like real request handlers.
    let end = Instant::now() + Duration::from_secs(steady_secs);
    let mut writers = Vec::new();
    for _ in 0..20 {
        let (pool, committed) = (db.pool.clone(), committed.clone());
        writers.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(40));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut written = 0u64;
            while Instant::now() < end {
                ticker.tick().await;
                let batch: Vec<Envelope> = (0..4).map(|_| event(InvoiceId::new())).collect();
                let mut tx = pool.begin().await.unwrap();
                outbox::append_batch(&mut tx, &batch).await.unwrap();
                tx.commit().await.unwrap();
                let now = Instant::now();
                let mut committed = committed.lock().unwrap();
                for e in &batch {
                    committed.insert(e.event_id().to_string(), now);
                }
                written += 4;
            }
            written
        }));
    }
    let mut written = 0u64;
    for w in writers {
        written += w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let actual_rate = written as f64 / steady_secs as f64;
    if lat.is_empty() {
        println!("2. steady state: no event was read back");
    } else {
        println!(
            "2. steady state: {written} events at {actual_rate:.0}/s; commit → readable by a consumer: p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms over {} events (target p99 <= 50 ms)",
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3,
            lat.len()
        );
    }
    shutdown.cancel();
    running.wait().await.unwrap();

    // 3. Ceiling: Kafka's own producer with the same record size, acks=all, idempotence (and lz4, as ours).
    let perf_topic = create_topic(12).await;
    let output = Command::new(workspace_root().join("deploy/local/kafka-cli"))
        .args([
            "kafka-producer-perf-test",
            "--topic",
            &perf_topic,
            "--num-records",
            &events_wanted.min(1_000_000).to_string(),
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
    let perf_rate: Option<f64> = summary
        .split(',')
        .find(|part| part.contains("records/sec"))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    println!("3. kafka-producer-perf-test: {summary}");
    match perf_rate {
        Some(rate) => println!(
            "   our drain rate / perf-test rate = {:.2} (target >= 0.3)",
            drain_rate / rate
        ),
        None => println!(
            "   could not read the perf-test rate: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}
