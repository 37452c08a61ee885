//! How long `checkoutctl verify` takes on a system holding ~100k invoices' worth of state (`make bench-verify`).
//!
//! Fills a fresh database the honest way: a by-service scenario (`BENCH_VERIFY_INVOICES`, default 100 000, over
//! `BENCH_VERIFY_MERCHANTS`, default 500) is appended through the outbox and the real services — the outbox
//! publisher, settlement, projections and audit — run in this process until the settlements equal the
//! generator's truth and every group is at the end of the topic. Then `verify` runs `BENCH_VERIFY_RUNS` times
//! (default 5) with the grace 0, with and without the audit chain, and prints: invoices, events, settlements,
//! ledger rows, each check's time and the total (median of the runs). Figures are printed, never asserted; a
//! verification that does not pass fails the run. Needs `make up`.
//!
//! `BENCH_VERIFY_KEEP=1` leaves the services' state in place and prints a `checkoutctl verify` command that
//! checks it again (the database is a test database: `testkit` drops it on a later run).

#[path = "../tests/system/mod.rs"]
mod system;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use checkoutctl::verify::{self, Options, Report};
use flows::Scenario;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print(report: &Report) {
    for c in &report.checks {
        println!(
            "  {:<12} {:>6} ms  {} checked, {} in flight, {} violation(s)  {}",
            c.name, c.elapsed_ms, c.checked, c.in_flight, c.violations, c.summary
        );
    }
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let invoices: usize = env("BENCH_VERIFY_INVOICES", 100_000);
    let merchants: usize = env("BENCH_VERIFY_MERCHANTS", 500);
    let runs: usize = env("BENCH_VERIFY_RUNS", 5).max(1);
    let keep = std::env::var("BENCH_VERIFY_KEEP").is_ok_and(|v| v == "1");

    let started = Instant::now();
    let flows = flows::generate(&Scenario::new(0x7e61f, merchants, invoices).settled_by_service());
    let expected = flows.expected_settlements();
    println!(
        "generated {merchants} merchants, {invoices} invoices: {} domain events, {} settlements expected \
         ({} held at the horizon) in {:.1}s",
        flows.events.len(),
        expected.len(),
        expected.iter().filter(|s| s.status != "completed").count(),
        started.elapsed().as_secs_f64()
    );

    let system = system::System::start().await;
    let fill = Instant::now();
    system.bus.append(&flows.events, 1000).await;
    println!(
        "appended to the outbox in {:.1}s",
        fill.elapsed().as_secs_f64()
    );
    let timeout = Duration::from_secs(3600);
    system::wait_for_settlements(system.pool(), &[&flows], timeout).await;
    println!(
        "settlements equal the truth after {:.1}s",
        fill.elapsed().as_secs_f64()
    );
    system.wait_quiescent(timeout).await;
    let filled = fill.elapsed().as_secs_f64();
    println!(
        "FILL {invoices} invoices, {} events through the real services (publisher, settlement, projections, \
         audit) in {filled:.1}s",
        flows.events.len()
    );
    // Let autovacuum's work happen now (visibility maps, statistics), as on a system that has been up a while.
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(system.pool())
        .await
        .expect("vacuum");
    let counts: (i64, i64, i64, i64, i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM proj_invoices), (SELECT count(*) FROM settlements), \
                (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM proj_applied_events), \
                (SELECT count(*) FROM audit_log), pg_size_pretty(pg_database_size(current_database()))",
    )
    .fetch_one(system.pool())
    .await
    .expect("counts");
    println!(
        "STATE invoices {}, settlements {}, ledger rows {}, read-model events {}, audit rows {}, database {}",
        counts.0, counts.1, counts.2, counts.3, counts.4, counts.5
    );

    let kafka = flows::harness::kafka();
    let url = system.bus.db.url.clone();
    let mut failed = false;
    for audit_chain in [false, true] {
        let options = Options {
            grace: Duration::ZERO,
            topic: system.bus.domain_topic.clone(),
            projections_group: system.projections_group.clone(),
            audit_group: system.audit_group.clone(),
            settlement_group: system.settlement_group.clone(),
            audit_chain,
            ..Options::default()
        };
        let name = if audit_chain {
            "verify"
        } else {
            "verify --no-audit-chain"
        };
        let mut totals = Vec::new();
        let mut per_check: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
        let mut order = Vec::new();
        for run in 1..=runs {
            let report = verify::verify(&url, &kafka, &options)
                .await
                .unwrap_or_else(|e| panic!("verify could not run: {:#}", anyhow::Error::new(e)));
            if run == 1 {
                println!("{name} (first run):");
                print(&report);
                order = report.checks.iter().map(|c| c.name).collect();
            }
            if !report.ok {
                failed = true;
                println!(
                    "  NOT PASSED: {}",
                    report
                        .first_violation()
                        .map_or("?".into(), |v| v.to_string())
                );
            }
            for c in &report.checks {
                per_check.entry(c.name).or_default().push(c.elapsed_ms);
            }
            totals.push(report.elapsed_ms);
        }
        let checks: Vec<String> = order
            .iter()
            .map(|c| {
                let ms = median(per_check.get_mut(c).expect("every run has every check"));
                format!("{c} {:.2}s", ms as f64 / 1000.0)
            })
            .collect();
        let (min, max) = (
            *totals.iter().min().expect("runs"),
            *totals.iter().max().expect("runs"),
        );
        println!(
            "RESULT {name} on {} invoices, {} settlements, {} ledger rows: total {:.2}s median (min {:.2}s, max \
             {:.2}s, {runs} runs); per check (median): {}",
            counts.0,
            counts.1,
            counts.2,
            median(&mut totals) as f64 / 1000.0,
            min as f64 / 1000.0,
            max as f64 / 1000.0,
            checks.join(", ")
        );
    }
    if keep {
        println!(
            "kept: checkoutctl verify --grace 0 --database-url '{}' {}",
            verify::redact_url(&url),
            system.verify_args().join(" ")
        );
        std::mem::forget(system);
    } else {
        system.stop().await;
    }
    if failed {
        std::process::exit(1);
    }
}
