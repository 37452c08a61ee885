//! End-to-end benchmark of the consumer groups, at the scale.
//!
//! 200 merchants and 10 000 invoices (≈ 62k domain events and ≈ 12k checkout views) are written to the outbox at
//! a steady rate (four writers committing transactions of 20, like a few busy API instances) and published by
//! the outbox publisher to a private 12-partition topic, while `projections`, `audit` and `analytics` run in this
//! process, each as its own consumer group with the spec's policy. Reported:
//! - end-to-end latency **outbox commit → read model updated** (the commit time recorded by the writer against
//!   `proj_applied_events.applied_at`, the clock time inside the projection's transaction), p50 / p99 / max;
//! - how long each group needed after the last commit to finish — watched for all groups at once, every 50 ms;
//! - whether the read models, the audit log (count, chain) and the analytics equal the generator's truth.
//!
//! Run with `make bench-e2e` (after `make up`). Environment: `E2E_INVOICES` (default 10000), `E2E_MERCHANTS`
//! (200), `E2E_RATE` (2000 events/s; `E2E_RATES=500,1000,2000` runs several in a row, each on a fresh bus),
//! `E2E_SERVICES` (`projections,audit,analytics`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flows::harness::{Bus, summary};
use flows::{Flows, Scenario, check};
use runtime::ConsumerOptions;
use runtime::service::{ConsumerService, Running};
use service_kit::shutdown::CancellationToken;
use sqlx::PgPool;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts service `S` in this process on `bus` under a fresh group reading `topics`.
async fn start<S: ConsumerService>(
    bus: &Bus,
    topics: &[String],
    shutdown: &CancellationToken,
) -> (String, Running) {
    let defaults = ConsumerOptions::default();
    let options = ConsumerOptions {
        drain_timeout: Duration::from_secs(5),
        max_parallel_partitions: env("E2E_PARALLEL", defaults.max_parallel_partitions),
        ..defaults
    };
    let group = testkit::unique_name(&format!("bench-{}", S::NAME));
    let mut settings = flows::service::settings::<S>(bus, &group, topics, options);
    settings.database.max_connections = 16;
    let running = runtime::service::start::<S>(settings, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e:#}", S::NAME));
    (group, running)
}

/// Units of work and the records they held, from the runtime's `unit_records` histogram.
fn unit_sizes(registry: &prometheus::Registry) -> (u64, f64) {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "checkout_consumer_unit_records")
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| {
            let h = m.get_histogram();
            (h.get_sample_count(), h.get_sample_sum())
        })
        .fold((0, 0.0), |(n, s), (c, v)| (n + c, s + v))
}

/// How far a group has come: rows it wrote, against how many it must write.
async fn progress(pool: &PgPool, service: &str, group: &str) -> i64 {
    let sql = match service {
        "projections" => "SELECT count(*) FROM proj_applied_events",
        "audit" => "SELECT count(*) FROM audit_log",
        _ => "SELECT count(*) FROM processed_events WHERE consumer_group = $1",
    };
    sqlx::query_scalar(sql)
        .bind(group)
        .fetch_one(pool)
        .await
        .expect("count progress")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let invoices: usize = env("E2E_INVOICES", 10_000);
    let merchants: usize = env("E2E_MERCHANTS", 200);
    let rates: String = env("E2E_RATES", env("E2E_RATE", 2000u32).to_string());
    let services: String = env("E2E_SERVICES", "projections,audit,analytics".to_string());
    let generated = Instant::now();
    let flows = flows::generate(&Scenario::new(0xe2e, merchants, invoices));
    println!(
        "generated {} merchants, {} invoices: {} domain events, {} checkout views ({:.1}s)",
        merchants,
        invoices,
        flows.events.len(),
        flows.analytics.len(),
        generated.elapsed().as_secs_f64()
    );
    let mut wrong = Vec::new();
    for rate in rates
        .split(',')
        .filter_map(|r| r.trim().parse::<u32>().ok())
    {
        wrong.extend(run(&flows, rate, &services).await);
    }
    if !wrong.is_empty() {
        eprintln!("the state of {wrong:?} differs from the generator's truth");
        std::process::exit(1);
    }
}

/// One run at `rate` events/s on a fresh bus; returns the services whose state differs from the truth.
async fn run(flows: &Flows, rate: u32, services: &str) -> Vec<&'static str> {
    let bus = Bus::new().await;
    let shutdown = CancellationToken::new();
    let publisher = bus.start_publisher().await;
    let domain = vec![bus.domain_topic.clone()];
    let both = vec![bus.domain_topic.clone(), bus.analytics_topic.clone()];
    let mut started: Vec<(&'static str, String, Running)> = Vec::new();
    for name in ["projections", "audit", "analytics"] {
        if !services.contains(name) {
            continue;
        }
        let (group, running) = match name {
            "projections" => start::<projections::Projections>(&bus, &domain, &shutdown).await,
            "audit" => start::<audit::Audit>(&bus, &domain, &shutdown).await,
            _ => start::<analytics::Analytics>(&bus, &both, &shutdown).await,
        };
        started.push((name, group, running));
    }
    for (name, _, running) in &started {
        let since = Instant::now();
        while running.readiness.check().is_err() {
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "{name} not ready: {:?}",
                running.readiness.check()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Checkout views go straight to their topic (no outbox), spread over the same period.
    let seconds = flows.events.len() as f64 / f64::from(rate);
    let views = {
        let (topic, records) = (bus.analytics_topic.clone(), flows.analytics.clone());
        tokio::spawn(async move {
            let since = Instant::now();
            let chunks = (seconds.ceil() as usize).max(1);
            for (n, chunk) in records
                .chunks(records.len().div_ceil(chunks).max(1))
                .enumerate()
            {
                if let Some(wait) = Duration::from_secs(n as u64).checked_sub(since.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let raw: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|r| (r.key.clone(), r.value.clone()))
                    .collect();
                flows::harness::produce(&topic, &raw).await;
            }
        })
    };
    println!(
        "writing {} events to the outbox at {rate}/s (~{seconds:.0}s), services: {services}",
        flows.events.len()
    );
    let writing_started = Instant::now();
    let committed = bus.append_paced(&flows.events, rate, 20, 4).await;
    let writing = writing_started.elapsed().as_secs_f64();
    views.await.expect("views producer");
    println!(
        "wrote {} events in {writing:.1}s ({:.0} events/s)",
        committed.len(),
        committed.len() as f64 / writing
    );

    // Watch every group at once: the time each needed after the last commit to take in everything.
    let pool = bus.pool().clone();
    let after_commit = Instant::now();
    let mut caught_up: HashMap<&str, f64> = HashMap::new();
    while caught_up.len() < started.len() && after_commit.elapsed() < Duration::from_secs(900) {
        for (name, group, _) in &started {
            if caught_up.contains_key(name) {
                continue;
            }
            let target = match *name {
                "analytics" => flows.events.len() + flows.analytics.len(),
                _ => flows.events.len(),
            };
            if progress(&pool, name, group).await as usize >= target {
                caught_up.insert(name, after_commit.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught = |name: &str| {
        caught_up
            .get(name)
            .map_or("NOT within 900 s".to_string(), |s| format!("{s:.2} s"))
    };

    // Figures are printed, never asserted; a state that differs from the truth fails the run.
    let mut wrong = Vec::new();
    let mut latency = String::new();
    if services.contains("projections") {
        let actual = check::projections(&pool).await.expect("read models");
        let differences = check::projections_diff(&flows.truth, &actual);
        println!(
            "projections: caught up {} after the last commit; read models {} the truth",
            caught("projections"),
            if differences.is_empty() {
                "EQUAL"
            } else {
                "DIFFER FROM"
            },
        );
        for line in differences.iter().take(10) {
            println!("  {line}");
        }
        if !differences.is_empty() {
            wrong.push("projections");
        }
        let applied: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT event_id, applied_at FROM proj_applied_events")
                .fetch_all(&pool)
                .await
                .expect("applied events");
        let applied: HashMap<_, _> = applied.into_iter().collect();
        let latencies: Vec<f64> = committed
            .iter()
            .filter_map(|(id, at)| {
                applied
                    .get(id)
                    .map(|done| (*done - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            })
            .collect();
        let (p50, p99, max, n) = summary(latencies);
        latency = format!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        println!(
            "LATENCY outbox commit → read model updated at {rate} events/s: {latency} ({n} events)"
        );
        // Where the time goes: the publisher stamps each record when it produces it (CreateTime).
        let records = flows::harness::read_topic(
            &bus.domain_topic,
            flows.events.len(),
            Duration::from_secs(120),
        )
        .await;
        let produced: HashMap<uuid::Uuid, i64> = records
            .iter()
            .filter_map(|m| {
                let at = rdkafka::Message::timestamp(m).to_millis()?;
                Some((flows::harness::event_id_of(m)?, at))
            })
            .collect();
        let (mut to_kafka, mut to_model) = (Vec::new(), Vec::new());
        for (id, at) in &committed {
            if let (Some(p), Some(done)) = (produced.get(id), applied.get(id)) {
                to_kafka.push((*p - at.timestamp_millis()) as f64);
                to_model.push((done.timestamp_millis() - *p) as f64);
            }
        }
        let (k50, k99, _, _) = summary(to_kafka);
        let (m50, m99, _, _) = summary(to_model);
        println!(
            "  of which commit → produced by the publisher: p50 {k50:.0} ms, p99 {k99:.0} ms; \
             produced → applied by projections: p50 {m50:.0} ms, p99 {m99:.0} ms"
        );
    }
    if services.contains("audit") {
        let mut conn = pool.acquire().await.expect("connection");
        let verification = audit::verify::verify(&mut conn).await.expect("verify");
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM audit_log")
                .fetch_one(&pool)
                .await
                .expect("count");
        println!(
            "audit: caught up {} after the last commit; {rows} rows ({distinct} distinct) of {} events; chain {}",
            caught("audit"),
            flows.events.len(),
            if verification.intact() {
                "intact".to_string()
            } else {
                format!("BROKEN: {:?}", verification.first_break)
            }
        );
        if !verification.intact() || rows as usize != flows.events.len() || distinct != rows {
            wrong.push("audit");
        }
    }
    if services.contains("analytics") {
        let actual = check::analytics(&pool).await.expect("aggregates");
        let differences = check::analytics_diff(&flows.truth, &actual);
        println!(
            "analytics: caught up {} after the last commit; aggregates {} the truth",
            caught("analytics"),
            if differences.is_empty() {
                "EQUAL"
            } else {
                "DIFFER FROM"
            },
        );
        for line in differences.iter().take(10) {
            println!("  {line}");
        }
        if !differences.is_empty() {
            wrong.push("analytics");
        }
    }
    for (name, _, running) in &started {
        let (units, records) = unit_sizes(&running.registry);
        println!(
            "{name}: {units} units of work, {:.1} records per unit on average",
            records / units.max(1) as f64
        );
    }
    println!(
        "RESULT rate={rate}/s achieved={:.0}/s latency: {latency}; caught up: projections {}, audit {}, analytics {}",
        committed.len() as f64 / writing,
        caught("projections"),
        caught("audit"),
        caught("analytics")
    );
    shutdown.cancel();
    for (_, _, running) in started {
        let _ = running.wait().await;
    }
    publisher.stop().await;
    wrong
}
