//! Test plumbing of this service only (the shared part is `flows::service`): the service on a bus, its
//! settlements, ledger and emitted events compared with the generator's truth (`Flows::expected_settlements`,
//! `Flows::owed_back`), which is computed from the plan, never from this service. The comparisons themselves
//! live in `flows::check` (the e2e bench uses them too); here they wait and assert.

use std::collections::BTreeMap;
use std::time::Duration;

use events::Envelope;
use flows::Flows;
use flows::harness::Bus;
use flows::service::InProcess;
use settlement::Settlement;
use sqlx::PgPool;
use uuid::Uuid;

/// The service in this process on `bus`, under a fresh group.
pub async fn start(bus: &Bus) -> InProcess {
    InProcess::start::<Settlement>(bus, std::slice::from_ref(&bus.domain_topic)).await
}

/// A settlement as text, comparable between the truth and the table ([`flows::check::expected_settlement_rows`]).
pub type Row = String;

/// What the `settlements` table holds, by settlement id.
pub async fn actual_rows(pool: &PgPool) -> BTreeMap<Uuid, Row> {
    flows::check::settlement_rows(pool)
        .await
        .expect("read settlements")
}

/// Waits until the `settlements` table equals the truth; on timeout fails listing the differences.
pub async fn wait_for_settlements(pool: &PgPool, flows: &Flows, timeout: Duration) {
    let expected = flows::check::expected_settlement_rows(&flows.expected_settlements());
    assert!(
        !expected.is_empty(),
        "a by-service scenario settles something"
    );
    let started = std::time::Instant::now();
    loop {
        let diff = flows::check::settlement_rows_diff(&expected, &actual_rows(pool).await);
        if diff.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the settlements did not reach the truth within {timeout:?} ({} differences):\n{}",
            diff.len(),
            diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The ledger against the truth ([`flows::check::ledger_diff`]): every currency balances; per merchant and
/// currency what is owed (created and held settlements) and what was paid out; the platform's fees per currency;
/// what is owed back to customers per asset.
pub async fn check_ledger(pool: &PgPool, flows: &Flows) {
    let diff = flows::check::ledger_diff(pool, &flows.expected_settlements(), &flows.owed_back())
        .await
        .expect("read the ledger");
    assert!(
        diff.is_empty(),
        "the ledger differs from the truth:\n{}",
        diff.join("\n")
    );
}

/// The settlement events on `bus`'s domain topic (all of them, duplicates included) once at least `at_least`
/// records are there.
pub async fn settlement_events(bus: &Bus, at_least: usize) -> Vec<Envelope> {
    flows::harness::read_topic(&bus.domain_topic, at_least, Duration::from_secs(60))
        .await
        .iter()
        .filter_map(|m| {
            use rdkafka::Message;
            let event = events::codec::decode(m.payload()?).ok()?;
            flows::check::is_settlement_event(&event).then_some(event)
        })
        .collect()
}

/// The settlement events, de-duplicated by event id, against the truth's ([`flows::check::settlement_events_diff`]):
/// per invoice, the same types at the same times in the same order, with the truth's amounts; one event id per
/// (invoice, type); the invoice's correlation id and the cause that completed each step.
pub fn check_events(events: &[Envelope], flows: &Flows) {
    let diff = flows::check::settlement_events_diff(events, flows, &flows.expected_settlements());
    assert!(
        diff.is_empty(),
        "the settlement events differ from the truth ({} differences):\n{}",
        diff.len(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Nothing of `group` was dead-lettered and no record is failing as a business error (waiting for its retries):
/// a guard that refused a duplicate by failing would show here.
pub async fn assert_nothing_refused(bus: &Bus, group: &str) {
    let refused = flows::service::refusals(bus, group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// `checkoutctl verify` with no grace passes once the projections and audit `groups[0..2]` have consumed the whole
/// topic and settlement's `groups[2]` has stored its end, and it counts exactly the truth's settlements.
pub async fn assert_verify_passes(bus: &Bus, flows: &Flows, groups: [&String; 3]) {
    let [projections, audit, settlement] = groups;
    let topic = bus.domain_topic.as_str();
    flows::harness::wait_stored(bus.pool(), settlement, &[topic], Duration::from_secs(90)).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    for group in [projections, audit] {
        flows::harness::wait_consumed(group, topic, Duration::from_secs(90)).await;
    }
    let options = checkoutctl::verify::Options {
        grace: Duration::ZERO,
        topic: topic.to_string(),
        projections_group: projections.clone(),
        audit_group: audit.clone(),
        settlement_group: settlement.clone(),
        ..Default::default()
    };
    let report = checkoutctl::verify::verify(&bus.db.url, &flows::harness::kafka(), &options)
        .await
        .expect("verify runs");
    assert!(report.ok, "verify: {:#?}", report.violations);
    let settlements = report
        .checks
        .iter()
        .find(|c| c.name == "settlements")
        .expect("the settlements check");
    let n = flows.expected_settlements().len();
    assert_eq!(
        settlements.summary,
        format!("{n} paid and confirmed invoice(s), {n} settlement(s)"),
        "verify's settlements against the truth's"
    );
}
