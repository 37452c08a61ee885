//! End-to-end benchmark of the consumer groups, at the scale.
//!
//! 200 merchants and 10 000 invoices (≈ 62k domain events and ≈ 12k checkout views) are written to the outbox at
//! a steady rate (four writers committing transactions of 20, like a few busy API instances) and published by
//! the outbox publisher to a private 12-partition topic, while `projections`, `audit`, `analytics` and
//! `settlement` run in this process, each as its own consumer group with the spec's policy. With settlement in
//! the run the generator leaves the settlement events to the service (`Scenario::settled_by_service`): the
//! service's events go through the outbox and the topic like any other, and every group takes them in. Reported:
//! - end-to-end latency **outbox commit → read model updated** (the commit time recorded by the writer against
//!   `proj_applied_events.applied_at`, the clock time inside the projection's transaction), p50 / p99 / max;
//! - settlement latency **commit of the event that completed an invoice's conditions (its `PaymentConfirmed` or
//!   `InvoicePaid`) → the payout in the ledger** (`ledger_entries.recorded_at`) **→ `SettlementCompleted`
//!   readable on the topic** (the publisher's record timestamp), p50 / p99 / max, for settlements completed
//!   without a hold; and settlements completed per second over the run;
//! - how long each group needed after the last commit to finish — watched for all groups at once, every 50 ms;
//! - whether the read models, the audit log (count, chain), the analytics and the settlements (rows, ledger,
//!   events with their ids and causes) equal the generator's truth.
//!
//! Run with `make bench-e2e` (after `make up`). Environment: `E2E_INVOICES` (default 10000), `E2E_MERCHANTS`
//! (200), `E2E_RATE` (2000 events/s; `E2E_RATES=500,1000,2000` runs several in a row, each on a fresh bus),
//! `E2E_SERVICES` (`projections,audit,analytics,settlement`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::{Envelope, EventType};
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
        // Settlements in their final state (a held one stays held at the horizon).
        "settlement" => "SELECT count(*) FROM settlements WHERE status <> 'created'",
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
    let services: String = env(
        "E2E_SERVICES",
        "projections,audit,analytics,settlement".to_string(),
    );
    let generated = Instant::now();
    let scenario = Scenario::new(0xe2e, merchants, invoices);
    let scenario = if services.contains("settlement") {
        scenario.settled_by_service()
    } else {
        scenario
    };
    let flows = flows::generate(&scenario);
    println!(
        "generated {} merchants, {} invoices: {} domain events, {} checkout views, {} settlements ({:.1}s)",
        merchants,
        invoices,
        flows.events.len(),
        flows.analytics.len(),
        flows.expected_settlements().len(),
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
    for name in ["projections", "audit", "analytics", "settlement"] {
        if !services.contains(name) {
            continue;
        }
        let (group, running) = match name {
            "projections" => start::<projections::Projections>(&bus, &domain, &shutdown).await,
            "audit" => start::<audit::Audit>(&bus, &domain, &shutdown).await,
            "settlement" => start::<settlement::Settlement>(&bus, &domain, &shutdown).await,
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

    // Watch every group at once: the time each needed after the last commit to take in everything — the
    // generated events and, with settlement in the run, the settlement events it adds.
    let pool = bus.pool().clone();
    let expected = flows.expected_settlements();
    let on_topic = if services.contains("settlement") {
        flows.events_with_expected_settlements().len()
    } else {
        flows.events.len()
    };
    let after_commit = Instant::now();
    let mut caught_up: HashMap<&str, f64> = HashMap::new();
    while caught_up.len() < started.len() && after_commit.elapsed() < Duration::from_secs(900) {
        for (name, group, _) in &started {
            if caught_up.contains_key(name) {
                continue;
            }
            let target = match *name {
                "analytics" => on_topic + flows.analytics.len(),
                "settlement" => expected.len(),
                _ => on_topic,
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

    // The domain topic, read once for the projections' and settlement's figures: the publisher stamps each record
    // when it produces it (CreateTime).
    let records = if services.contains("projections") || services.contains("settlement") {
        flows::harness::read_topic(&bus.domain_topic, on_topic, Duration::from_secs(120)).await
    } else {
        Vec::new()
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
        // Where the time goes: commit → produced by the publisher → applied.
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
            "audit: caught up {} after the last commit; {rows} rows ({distinct} distinct) of {on_topic} events; chain {}",
            caught("audit"),
            if verification.intact() {
                "intact".to_string()
            } else {
                format!("BROKEN: {:?}", verification.first_break)
            }
        );
        if !verification.intact() || rows as usize != on_topic || distinct != rows {
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
    let mut settlement_latency = String::new();
    if services.contains("settlement") {
        let (line, ok) = settlement(
            &bus,
            flows,
            &expected,
            &committed,
            &records,
            caught("settlement"),
        )
        .await;
        settlement_latency = line;
        if !ok {
            wrong.push("settlement");
        }
    }
    for (name, _, running) in &started {
        let (units, records) = unit_sizes(&running.registry);
        println!(
            "{name}: {units} units of work, {:.1} records per unit on average",
            records / units.max(1) as f64
        );
    }
    let caught_up_line: Vec<String> = started
        .iter()
        .map(|(name, _, _)| format!("{name} {}", caught(name)))
        .collect();
    println!(
        "RESULT rate={rate}/s achieved={:.0}/s latency: {latency}{}; caught up: {}",
        committed.len() as f64 / writing,
        if settlement_latency.is_empty() {
            String::new()
        } else {
            format!("; settlement: {settlement_latency}")
        },
        caught_up_line.join(", ")
    );
    shutdown.cancel();
    for (_, _, running) in started {
        let _ = running.wait().await;
    }
    publisher.stop().await;
    wrong
}

/// The settlement part of a run: its state against the truth (rows, ledger, events on the topic) and its
/// latencies. Returns the summary line and whether the state equals the truth.
async fn settlement(
    bus: &Bus,
    flows: &Flows,
    expected: &[flows::ExpectedSettlement],
    committed: &[(uuid::Uuid, chrono::DateTime<chrono::Utc>)],
    records: &[rdkafka::message::OwnedMessage],
    caught: String,
) -> (String, bool) {
    let pool = bus.pool();
    let rows = check::settlement_rows(pool).await.expect("settlements");
    let mut differences =
        check::settlement_rows_diff(&check::expected_settlement_rows(expected), &rows);
    differences.extend(
        check::ledger_diff(pool, expected, &flows.owed_back())
            .await
            .expect("ledger"),
    );
    let mut stamped: Vec<(Envelope, i64)> = Vec::new();
    for m in records {
        use rdkafka::Message;
        let (Some(payload), Some(at)) = (m.payload(), m.timestamp().to_millis()) else {
            continue;
        };
        if let Ok(event) = events::codec::decode(payload)
            && check::is_settlement_event(&event)
        {
            stamped.push((event, at));
        }
    }
    let settlement_events: Vec<Envelope> = stamped.iter().map(|(e, _)| e.clone()).collect();
    differences.extend(check::settlement_events_diff(
        &settlement_events,
        flows,
        expected,
    ));
    let (held, completed) = (
        expected.iter().filter(|s| s.held).count(),
        expected.iter().filter(|s| s.status == "completed").count(),
    );
    println!(
        "settlement: caught up {caught} after the last commit; {} settlements ({completed} completed, {held} held \
         on the way), ledger and {} events on the topic {} the truth",
        rows.len(),
        settlement_events.len(),
        if differences.is_empty() {
            "EQUAL"
        } else {
            "DIFFER FROM"
        }
    );
    for line in differences.iter().take(10) {
        println!("  {line}");
    }

    // Latency, for settlements completed by the invoice's own lane and the merchant's without a hold: from the
    // commit of the generated event that caused `SettlementCreated` to the payout journal and to the
    // `SettlementCompleted` record.
    let committed: HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>> =
        committed.iter().copied().collect();
    let mut cause_of_created = HashMap::new();
    for (e, _) in &stamped {
        if e.event_type() == EventType::SettlementCreated
            && let Some(cause) = e.causation_id()
        {
            cause_of_created.insert(e.event_id().as_uuid(), cause.as_uuid());
        }
    }
    let payouts: Vec<(uuid::Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT settlement_id, max(recorded_at) FROM ledger_entries WHERE kind = 'payout' GROUP BY settlement_id",
    )
    .fetch_all(pool)
    .await
    .expect("payouts");
    let payouts: HashMap<_, _> = payouts.into_iter().collect();
    let (mut to_ledger, mut to_topic, mut completed_at) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for (e, at) in &stamped {
        if e.event_type() != EventType::SettlementCompleted || !seen.insert(e.event_id()) {
            continue;
        }
        completed_at.push(*at);
        let Some(start) = e
            .causation_id()
            .and_then(|created| cause_of_created.get(&created.as_uuid()))
            .and_then(|cause| committed.get(cause))
        else {
            continue; // released by a reinstatement: its clock starts with the reinstatement
        };
        to_topic.push((*at - start.timestamp_millis()) as f64);
        if let Some(paid) = payouts.get(&e.aggregate_id().as_uuid()) {
            to_ledger.push((*paid - *start).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let (l50, l99, lmax, ln) = summary(to_ledger);
    let (t50, t99, tmax, tn) = summary(to_topic);
    let span = match (completed_at.iter().min(), completed_at.iter().max()) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1000.0,
        _ => f64::NAN,
    };
    println!(
        "LATENCY commit of PaymentConfirmed/InvoicePaid → payout in the ledger: p50 {l50:.1} ms, p99 {l99:.1} ms, \
         max {lmax:.1} ms ({ln} settlements)"
    );
    let line = format!("p50 {t50:.1} ms, p99 {t99:.1} ms, max {tmax:.1} ms");
    println!(
        "LATENCY commit of PaymentConfirmed/InvoicePaid → SettlementCompleted on the topic: {line} ({tn} settlements); \
         {:.0} settlements completed/s ({} over {span:.1} s)",
        completed_at.len() as f64 / span,
        completed_at.len()
    );
    (line, differences.is_empty())
}
