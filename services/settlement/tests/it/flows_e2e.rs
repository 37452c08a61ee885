//! Generated flows in settlement-service mode, published through the outbox: the service settles exactly the
//! invoices the truth says, with its amounts, times and holds; the ledger balances and matches the truth; its
//! events, read by the projections, give read models equal to the truth; replaying the whole topic into a fresh
//! consumer group changes nothing and emits nothing, and `checkoutctl verify` then passes with no grace, the
//! replay's group included, counting exactly the truth's settlements; the service answers /health, /ready and
//! /metrics.

use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use flows::service::InProcess;

use crate::helpers::*;

async fn counts(pool: &sqlx::PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM settlements), (SELECT count(*) FROM ledger_entries), \
                (SELECT count(*) FROM stl_invoices)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settles_what_the_truth_says_once_and_a_replay_changes_nothing() {
    let flows = flows::generate(&Scenario::new(1101, 60, 3000).settled_by_service());
    let expected = flows.expected_settlements();
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let projections =
        InProcess::start::<projections::Projections>(&bus, std::slice::from_ref(&bus.domain_topic))
            .await;
    let audit =
        InProcess::start::<audit::Audit>(&bus, std::slice::from_ref(&bus.domain_topic)).await;
    bus.append(&flows.events, 200).await;

    wait_for_settlements(bus.pool(), &flows, Duration::from_secs(120)).await;
    check_ledger(bus.pool(), &flows).await;
    flows::check::wait_for_projections(bus.pool(), &flows.truth, Duration::from_secs(60)).await;
    let emitted: usize = expected.iter().map(|s| s.events.len()).sum();
    let on_topic = settlement_events(&bus, flows.events.len() + emitted).await;
    assert_eq!(
        on_topic.len(),
        emitted,
        "each settlement event published once"
    );
    check_events(&on_topic, &flows);

    let currencies: std::collections::BTreeSet<&str> =
        expected.iter().map(|s| s.currency.code()).collect();
    assert_eq!(
        currencies.len(),
        4,
        "USD, EUR, GBP and JPY (no minor unit) settle: {currencies:?}"
    );
    let held = expected.iter().filter(|s| s.held).count();
    let completed = expected.iter().filter(|s| s.status == "completed").count();
    assert!(
        held >= 3 && completed > held,
        "the scenario holds some: {held} held, {completed} completed"
    );
    for (outcome, n) in [
        ("created", expected.len()),
        ("held", held),
        ("completed", completed),
    ] {
        let counted = service.counter("settlement_settlements_total", Some(("outcome", outcome)));
        assert_eq!(
            counted as usize, n,
            "settlement_settlements_total{{outcome={outcome}}}"
        );
    }
    let late = service.counter("settlement_paid_while_suspended_total", None);
    assert_eq!(
        late, 0.0,
        "suspensions committed in time order reach the merchant's lane in time"
    );
    let metrics = service.check_ops_endpoints().await;
    assert!(
        metrics.contains("settlement_settlements_total"),
        "{metrics}"
    );
    flows::harness::wait_stored(
        bus.pool(),
        &service.group,
        &[bus.domain_topic.as_str()],
        Duration::from_secs(60),
    )
    .await;
    let first_group = service.group.clone();
    service.stop().await;

    // The whole topic again, into a fresh group (a restore, an operator's reset): the same decisions, all
    // turned away.
    let before = (counts(bus.pool()).await, actual_rows(bus.pool()).await);
    let replay = start(&bus).await;
    flows::harness::wait_stored(
        bus.pool(),
        &replay.group,
        &[bus.domain_topic.as_str()],
        Duration::from_secs(90),
    )
    .await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    for outcome in ["created", "held", "completed"] {
        let counted = replay.counter("settlement_settlements_total", Some(("outcome", outcome)));
        assert_eq!(counted, 0.0, "the replay decided {outcome} again");
    }
    assert_eq!(
        (counts(bus.pool()).await, actual_rows(bus.pool()).await),
        before
    );
    let after = settlement_events(&bus, flows.events.len() + emitted).await;
    assert_eq!(after.len(), emitted, "the replay published nothing");
    assert_nothing_refused(&bus, &replay.group).await;
    assert_nothing_refused(&bus, &first_group).await;

    // The money-conservation check over the whole system, the replay's group as settlement's.
    assert_verify_passes(
        &bus,
        &flows,
        [&projections.group, &audit.group, &replay.group],
    )
    .await;
    replay.stop().await;
    audit.stop().await;
    projections.stop().await;
    publisher.stop().await;
}
