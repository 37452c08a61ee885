//! End-to-end benchmark of the first consumer groups, at the scale.
//!
//! 200 merchants and 10 000 invoices (≈ 75k domain events and ≈ 15k checkout views) are written to the outbox at a
//! steady 2 000 events/s (four writers committing transactions of 20, like a few busy API instances) and published by the outbox publisher to a private
//! 12-partition topic, while `projections`, `audit` and `analytics` run in this process, each as its own consumer
//! group with the spec's policy. Reported:
//! - end-to-end latency **outbox commit → read model updated** (the commit time recorded by the writer against
//!   `proj_applied_events.applied_at`, the clock time inside the projection's transaction), p50 / p99 / max;
//! - how long each service needed after the last commit to finish;
//! - whether the read models, the audit log (count, metadata, chain) and the analytics equal the generator's truth.
//!
//! Run with `cargo bench -p flows --bench e2e` (after `make up`). Environment: `E2E_INVOICES` (default 10000),
//! `E2E_MERCHANTS` (200), `E2E_RATE` (2000 events/s), `E2E_SERVICES` (`projections,audit,analytics`).

use std::time::{Duration, Instant};

use flows::harness::{Bus, summary};
use flows::{Scenario, check};
use runtime::ConsumerOptions;
use runtime::policy::PolicyOverrides;
use service_kit::Settings;
use service_kit::shutdown::CancellationToken;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn settings<S>(bus: &Bus, service: S) -> Settings<S> {
    let mut settings = Settings {
        kafka: flows::harness::kafka(),
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    };
    settings.database.url = Some(bus.db.url.clone().into());
    settings.database.max_connections = 16;
    settings
}

fn policy(topics: Vec<String>, group: &str) -> PolicyOverrides {
    PolicyOverrides {
        group: Some(testkit::unique_name(group)),
        topics: Some(topics),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let invoices: usize = env("E2E_INVOICES", 10_000);
    let merchants: usize = env("E2E_MERCHANTS", 200);
    let rate: u32 = env("E2E_RATE", 2000);
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
    let bus = Bus::new().await;
    let shutdown = CancellationToken::new();
    let publisher = bus.start_publisher().await;
    let options = ConsumerOptions {
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let domain = vec![bus.domain_topic.clone()];
    let mut readiness = Vec::new();
    let mut waits = Vec::new();
    if services.contains("projections") {
        let config = settings(
            &bus,
            projections::ProjectionsSettings {
                consumer: projections::ConsumerSettings {
                    policy: policy(domain.clone(), "bench-projections"),
                    options: options.clone(),
                },
            },
        );
        let running = projections::start(config, shutdown.clone())
            .await
            .expect("projections");
        readiness.push(("projections", running.readiness.clone()));
        waits.push(tokio::spawn(running.wait()));
    }
    if services.contains("audit") {
        let config = settings(
            &bus,
            audit::AuditSettings {
                consumer: audit::ConsumerSettings {
                    policy: policy(domain.clone(), "bench-audit"),
                    options: options.clone(),
                },
            },
        );
        let running = audit::start(config, shutdown.clone()).await.expect("audit");
        readiness.push(("audit", running.readiness.clone()));
        waits.push(tokio::spawn(running.wait()));
    }
    if services.contains("analytics") {
        let topics = vec![bus.domain_topic.clone(), bus.analytics_topic.clone()];
        let config = settings(
            &bus,
            analytics::AnalyticsSettings {
                consumer: analytics::ConsumerSettings {
                    policy: policy(topics, "bench-analytics"),
                    options: options.clone(),
                },
            },
        );
        let running = analytics::start(config, shutdown.clone())
            .await
            .expect("analytics");
        readiness.push(("analytics", running.readiness.clone()));
        waits.push(tokio::spawn(running.wait()));
    }
    for (name, ready) in &readiness {
        let started = Instant::now();
        while ready.check().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} not ready: {:?}",
                ready.check()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Checkout views go straight to their topic (no outbox), spread over the same period.
    let seconds = flows.events.len() as f64 / f64::from(rate);
    let views = {
        let (topic, records) = (bus.analytics_topic.clone(), flows.analytics.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let chunks = (seconds.ceil() as usize).max(1);
            for (n, chunk) in records
                .chunks(records.len().div_ceil(chunks).max(1))
                .enumerate()
            {
                if let Some(wait) = Duration::from_secs(n as u64).checked_sub(started.elapsed()) {
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
    let started = Instant::now();
    let committed = bus.append_paced(&flows.events, rate, 20, 4).await;
    let writing = started.elapsed().as_secs_f64();
    views.await.expect("views producer");
    println!(
        "wrote {} events in {writing:.1}s ({:.0} events/s)",
        committed.len(),
        committed.len() as f64 / writing
    );

    let pool = bus.pool().clone();
    let after_commit = Instant::now();
    // Figures are printed, never asserted; a state that differs from the truth fails the run.
    let mut wrong = Vec::new();
    if services.contains("projections") {
        // Cheap progress check while catching up; the (expensive) comparison with the truth once at the end.
        while after_commit.elapsed() < Duration::from_secs(600) {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM proj_applied_events")
                .fetch_one(&pool)
                .await
                .expect("count");
            if applied as usize >= flows.events.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up = after_commit.elapsed().as_secs_f64();
        let actual = check::projections(&pool).await.expect("read models");
        let last = check::projections_diff(&flows.truth, &actual);
        println!(
            "projections: caught up {caught_up:.1}s after the last commit; read models {} the truth",
            if last.is_empty() {
                "EQUAL"
            } else {
                "DIFFER FROM"
            },
        );
        for line in last.iter().take(10) {
            println!("  {line}");
        }
        if !last.is_empty() {
            wrong.push("projections");
        }
        let applied: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT event_id, applied_at FROM proj_applied_events")
                .fetch_all(&pool)
                .await
                .expect("applied events");
        let applied: std::collections::HashMap<_, _> = applied.into_iter().collect();
        let latencies: Vec<f64> = committed
            .iter()
            .filter_map(|(id, at)| {
                applied
                    .get(id)
                    .map(|done| (*done - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
            })
            .collect();
        let (p50, p99, max, n) = summary(latencies);
        println!(
            "LATENCY outbox commit → read model updated at {rate} events/s: p50 {p50:.1} ms, p99 {p99:.1} ms, \
             max {max:.1} ms ({n} events)"
        );
        // Where the time goes: the publisher stamps each record when it produces it (CreateTime).
        let records = flows::harness::read_topic(
            &bus.domain_topic,
            flows.events.len(),
            Duration::from_secs(120),
        )
        .await;
        let produced: std::collections::HashMap<uuid::Uuid, i64> = records
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
        let mut rows = 0i64;
        while after_commit.elapsed() < Duration::from_secs(900) {
            rows = sqlx::query_scalar("SELECT count(*) FROM audit_log")
                .fetch_one(&pool)
                .await
                .expect("count");
            if rows as usize >= flows.events.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut conn = pool.acquire().await.expect("connection");
        let verification = audit::verify::verify(&mut conn).await.expect("verify");
        let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM audit_log")
            .fetch_one(&pool)
            .await
            .expect("count");
        println!(
            "audit: {rows} rows ({distinct} distinct) of {} events, {:.1}s after the last commit; chain {}",
            flows.events.len(),
            after_commit.elapsed().as_secs_f64(),
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
        let expected = (flows.events.len() + flows.analytics.len()) as i64;
        while after_commit.elapsed() < Duration::from_secs(900) {
            let processed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM processed_events WHERE consumer_group LIKE 'bench-analytics-%'",
            )
            .fetch_one(&pool)
            .await
            .expect("count");
            if processed >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up = after_commit.elapsed().as_secs_f64();
        let actual = check::analytics(&pool).await.expect("aggregates");
        let last = check::analytics_diff(&flows.truth, &actual);
        println!(
            "analytics: caught up {caught_up:.1}s after the last commit; aggregates {} the truth",
            if last.is_empty() {
                "EQUAL"
            } else {
                "DIFFER FROM"
            },
        );
        for line in last.iter().take(10) {
            println!("  {line}");
        }
        if !last.is_empty() {
            wrong.push("analytics");
        }
    }
    shutdown.cancel();
    for wait in waits {
        let _ = wait.await;
    }
    publisher.stop().await;
    if !wrong.is_empty() {
        eprintln!("the state of {wrong:?} differs from the generator's truth");
        std::process::exit(1);
    }
}
