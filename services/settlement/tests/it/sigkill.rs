//! Two `settlement` processes SIGKILLed ten times while events flow, then a slice of the input and every
//! settlement event published a second time: the settlements, the ledger and the settlement events end exactly
//! as the truth says — nothing lost, nothing settled, posted or emitted twice — and `checkoutctl verify` passes
//! over the whole system (projections and audit running beside, in this process).

use std::path::Path;
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use flows::service::{InProcess, KillRun};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_processes_and_republished_events_settle_each_invoice_once() {
    let flows = flows::generate(&Scenario::new(1102, 40, 1500).settled_by_service());
    let emitted: usize = flows
        .expected_settlements()
        .iter()
        .map(|s| s.events.len())
        .sum();
    let bus = Bus::new().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_settlement"));
    let topics = std::slice::from_ref(&bus.domain_topic);
    let projections = InProcess::start::<projections::Projections>(&bus, topics).await;
    let audit = InProcess::start::<audit::Audit>(&bus, topics).await;
    let run = KillRun::run(&bus, binary, topics, &flows, 2, 10).await;
    wait_for_settlements(bus.pool(), &flows, Duration::from_secs(180)).await;
    check_ledger(bus.pool(), &flows).await;
    let topic = [bus.domain_topic.as_str()];
    flows::harness::wait_stored(bus.pool(), &run.group, &topic, Duration::from_secs(120)).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    let events = settlement_events(&bus, flows.events.len() + emitted).await;
    check_events(&events, &flows);
    let rows = actual_rows(bus.pool()).await;
    let lines = ledger_lines(bus.pool()).await;

    // Produced again straight onto the topic, as a misbehaving producer would (same event ids): a third of the
    // input (payments confirmed and invoices paid a second time, after later events of their keys) and every
    // settlement event (read back by the merchants' lanes again).
    let third = flows.events.len() / 3;
    let mut again = flows.events[third..2 * third].to_vec();
    let mut seen = std::collections::BTreeSet::new();
    again.extend(events.iter().filter(|e| seen.insert(e.event_id())).cloned());
    let records: Vec<(String, Vec<u8>)> = again
        .iter()
        .map(|e| (e.partition_key(), events::encode(e).expect("a valid event")))
        .collect();
    flows::harness::produce(&bus.domain_topic, &records).await;
    flows::harness::wait_stored(bus.pool(), &run.group, &topic, Duration::from_secs(120)).await;
    assert_eq!(
        actual_rows(bus.pool()).await,
        rows,
        "duplicates changed settlements"
    );
    assert_eq!(
        ledger_lines(bus.pool()).await,
        lines,
        "duplicates posted to the ledger"
    );
    let events = settlement_events(&bus, flows.events.len() + again.len() + emitted).await;
    check_events(&events, &flows);
    assert_nothing_refused(&bus, &run.group).await;
    assert_verify_passes(&bus, &flows, [&projections.group, &audit.group, &run.group]).await;
    run.finish().await;
    audit.stop().await;
    projections.stop().await;
}

async fn ledger_lines(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
        .fetch_one(pool)
        .await
        .unwrap()
}
