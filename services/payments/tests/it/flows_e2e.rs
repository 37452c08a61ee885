//! End to end against the generator's truth, with the generator playing the chain (scanner mode,
//! `flows::generate_scanned`): merchants, invoices, expiries and cancellations go through the outbox, the scanners'
//! reports (sightings, confirmations, reorganisations, drops, duplicates) to `integration-events`; the real
//! payments service turns them into payment events and `InvoicePaid`, and the projections, the settlement service
//! and analytics downstream must end exactly where the truth — computed from the plan, never from a service —
//! says: read models, settlements (net of the platform fee), the ledger, the daily aggregates, with nothing
//! refused or dead-lettered.

use std::time::{Duration, Instant};

use events::EventData;
use flows::Scenario;
use flows::harness::{Bus, create_integration_topic};
use flows::service::InProcess;
use payments::Payments;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scanner_reports_through_payments_end_where_the_truth_says() {
    let mut scenario = Scenario::new(1414, 16, 360).settled_by_service();
    scenario.days = 2;
    let flows = flows::generate_scanned(&scenario);
    let expected = flows.expected_settlements();
    let reports = flows.scanner_reports();
    let phases = flows.scanner_phases();
    let bus = Bus::new().await;
    let integration = create_integration_topic().await;
    let publisher = bus.start_publisher().await;
    let payments =
        InProcess::start::<Payments>(&bus, &[integration.clone(), bus.domain_topic.clone()]).await;
    let domain = std::slice::from_ref(&bus.domain_topic);
    let projections = InProcess::start::<projections::Projections>(&bus, domain).await;
    let settlement = InProcess::start::<settlement::Settlement>(&bus, domain).await;
    let analytics = InProcess::start::<analytics::Analytics>(
        &bus,
        &[bus.domain_topic.clone(), bus.analytics_topic.clone()],
    )
    .await;

    let started = Instant::now();
    bus.feed_scanned(
        &integration,
        &payments.group,
        &phases,
        Duration::from_secs(60),
    )
    .await;
    bus.produce_analytics(&flows.analytics).await;
    eprintln!(
        "{} domain events and {} reports fed in {} phases in {:.1}s",
        flows.events.len(),
        reports.len(),
        phases.len(),
        started.elapsed().as_secs_f64()
    );

    // Read models, settlements, ledger and aggregates equal the truth.
    flows::check::wait_for_projections(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    let expected_rows = flows::check::expected_settlement_rows(&expected);
    let started = Instant::now();
    loop {
        let actual = flows::check::settlement_rows(bus.pool()).await.unwrap();
        let diff = flows::check::settlement_rows_diff(&expected_rows, &actual);
        if diff.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "settlements differ from the truth:\n{}",
            diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ledger = flows::check::ledger_diff(bus.pool(), &expected, &flows.owed_back())
        .await
        .unwrap();
    assert!(ledger.is_empty(), "ledger:\n{}", ledger.join("\n"));
    let started = Instant::now();
    loop {
        let actual = flows::check::analytics(bus.pool()).await.unwrap();
        let diff = flows::check::analytics_diff(&flows.truth, &actual);
        if diff.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "aggregates differ from the truth:\n{}",
            diff.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Counts from the plan: what the payments service emitted, event by event type, and the fee split.
    let plan = &flows.plan;
    let h = plan.horizon;
    let by = |at: &chrono::DateTime<chrono::Utc>| *at <= h;
    let payments_all: Vec<_> = plan.invoices.iter().flat_map(|i| &i.payments).collect();
    let want_detected = payments_all.iter().filter(|p| by(&p.detected_at)).count();
    let want_confirmed = payments_all
        .iter()
        .filter(|p| p.confirmed_at.is_some_and(|a| by(&a)))
        .count();
    let want_failed = payments_all
        .iter()
        .filter(|p| p.failed.is_some_and(|(a, _)| by(&a)))
        .count();
    let want_paid = plan
        .invoices
        .iter()
        .filter(|i| i.paid.as_ref().is_some_and(|p| by(&p.at)))
        .count();
    let on_topic = flows::harness::read_topic(
        &bus.domain_topic,
        flows.events.len() + want_detected,
        Duration::from_secs(60),
    )
    .await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut fee_checked = 0;
    for m in &on_topic {
        use rdkafka::Message;
        let event = events::decode(m.payload().unwrap()).unwrap();
        *counts.entry(event.event_type().as_str()).or_default() += 1;
        if let EventData::SettlementCompleted(s) = event.data() {
            // Net of the platform fee at the merchant's rate (1 % for most), as the plan has it.
            let want = expected
                .iter()
                .find(|x| x.invoice_id == s.invoice_id)
                .expect("a settlement of the truth");
            assert_eq!(
                (s.gross_amount, s.platform_fee_amount, s.net_amount),
                (want.gross_amount, want.platform_fee_amount, want.net_amount)
            );
            assert_eq!(
                s.platform_fee_amount.checked_add(s.net_amount),
                Some(s.gross_amount)
            );
            fee_checked += 1;
        }
    }
    for (t, n) in [
        ("PaymentDetected", want_detected),
        ("PaymentConfirmed", want_confirmed),
        ("PaymentFailed", want_failed),
        ("InvoicePaid", want_paid),
    ] {
        assert_eq!(counts.get(t).copied().unwrap_or(0), n, "{t}: {counts:?}");
    }
    assert!(want_paid >= 100 && want_failed >= 10, "{counts:?}");
    assert!(fee_checked >= 50, "{fee_checked} completed settlements");
    assert!(expected.iter().any(|s| s.held), "some settlements held");

    // Nothing refused or dead-lettered anywhere.
    for group in [
        &payments.group,
        &projections.group,
        &settlement.group,
        &analytics.group,
    ] {
        let refused = flows::service::refusals(&bus, group).await;
        assert!(refused.is_empty(), "{group}: {}", refused.join("\n"));
    }
    let dead: i64 = flows::harness::end_offsets(&events::topics::dead_letter_topic(&integration))
        .await
        .iter()
        .sum();
    assert_eq!(dead, 0, "reports dead-lettered");

    analytics.stop().await;
    settlement.stop().await;
    projections.stop().await;
    payments.stop().await;
    publisher.stop().await;
}
