//! `checkoutctl simulate` against the real broker and database with the real services in this process (the
//! outbox publisher; projections, settlement, audit, payments, analytics under fresh groups on private topics):
//! the simulator is the only source of traffic, and once it has played out and the groups caught up, the read
//! models equal the simulator's own record of what it did (its truth, computed from its plan, never from a
//! service), every paid-and-confirmed invoice has exactly one settlement, and `verify` passes with no grace.

mod system;

use std::collections::BTreeMap;
use std::time::Duration;

use checkoutctl::simulate::{self, Deps, Options};
use checkoutctl::verify;
use events::MerchantId;
use flows::harness::{create_named_topic, wait_stored};
use flows::service::InProcess;
use tokio::sync::watch;

/// The scanners' topic of a test (the spec's 6 partitions) and its DLQ.
async fn integration_topic() -> String {
    let topic = testkit::create_topic_with(testkit::infra(), "integration", 6, &[]).await;
    create_named_topic(&format!("{topic}.dlq"), 6).await;
    topic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_run_leaves_read_models_equal_to_the_simulators_truth_and_verify_passes() {
    let system = system::System::start().await;
    let bus = &system.bus;
    let integration = integration_topic().await;
    let payments = InProcess::start::<payments::Payments>(
        bus,
        &[integration.clone(), bus.domain_topic.clone()],
    )
    .await;
    let analytics = InProcess::start::<analytics::Analytics>(
        bus,
        &[bus.domain_topic.clone(), bus.analytics_topic.clone()],
    )
    .await;

    let producer = service_kit::kafka::producer_config(&flows::harness::kafka())
        .create()
        .expect("a producer");
    let deps = Deps {
        pool: bus.pool().clone(),
        producer,
        webhooks: None,
    };
    let options = Options {
        rate: 3.0,
        duration: Some(Duration::from_secs(20)),
        seed: 0x5eed,
        merchants: 4,
        max_merchants: 10,
        window: Duration::from_secs(30),
        webhook_receiver: None,
        integration_topic: integration.clone(),
        suspend_every: Duration::from_secs(6),
        keep_truth: true,
    };
    let (_stop_tx, stop) = watch::channel(false);
    let (_abort_tx, abort) = watch::channel(false);
    let report = simulate::run(options, &deps, stop, abort, Duration::from_secs(5), |c| {
        eprintln!("{c:?}")
    })
    .await
    .expect("the simulator runs");
    assert!(!report.aborted, "everything in flight played out");
    let c = &report.counts;
    assert_eq!(c.in_flight, 0);
    assert_eq!(report.invoices.len() as u64, c.invoices);
    assert!(c.invoices >= 40, "about 3/s for 20 s: {c:?}");
    assert!(
        c.suspensions >= 1 && c.reinstatements == c.suspensions,
        "{c:?}"
    );
    assert!(c.expected_confirmed > 0 && c.expiries > 0, "{c:?}");

    // Catch up: the payments group read every report, then the outbox and the domain groups drain.
    let timeout = Duration::from_secs(180);
    wait_stored(
        bus.pool(),
        &payments.group,
        &[integration.as_str()],
        timeout,
    )
    .await;
    system.wait_quiescent(timeout).await;
    wait_stored(
        bus.pool(),
        &analytics.group,
        &[bus.domain_topic.as_str(), bus.analytics_topic.as_str()],
        timeout,
    )
    .await;

    // No report was dead-lettered (unknown address, wrong asset, contradiction).
    let dlq = events::topics::dead_letter_topic(&integration);
    assert_eq!(
        flows::harness::end_offsets(&dlq).await.iter().sum::<i64>(),
        0,
        "reports in {dlq}"
    );

    // The read models, invoice by invoice, against the simulator's truth.
    let seen = flows::check::projections(bus.pool())
        .await
        .expect("read models");
    let mut differences = Vec::new();
    for t in &report.invoices {
        let Some(r) = seen.invoices.get(&t.invoice_id) else {
            differences.push(format!(
                "{} ({:?}) is not in the read models",
                t.invoice_id, t.fate
            ));
            continue;
        };
        let expected = (
            t.status,
            t.amount_paid.normalize(),
            t.overpaid_amount.normalize(),
            t.late_payment,
            t.payments_detected,
            t.payments_failed,
            t.merchant_id,
        );
        let actual = (
            r.status,
            r.amount_paid.normalize(),
            r.overpaid_amount.normalize(),
            r.late_payment,
            r.payments_detected,
            r.payments_failed,
            r.merchant_id,
        );
        if expected != actual {
            differences.push(format!(
                "{} ({:?}): expected {expected:?}, found {actual:?}",
                t.invoice_id, t.fate
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} invoices differ:\n{}",
        differences.len(),
        report.invoices.len(),
        differences.join("\n")
    );
    assert_eq!(
        seen.invoices.len(),
        report.invoices.len(),
        "no other invoice"
    );
    for (merchant, status) in &report.merchants {
        assert_eq!(
            seen.merchants.get(merchant).map(|m| m.status),
            Some(*status),
            "merchant {merchant}"
        );
    }

    // One settlement per paid-and-confirmed invoice, none for the others.
    let settled: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT invoice_id FROM settlements")
        .fetch_all(bus.pool())
        .await
        .expect("settlements");
    let mut confirmed: Vec<uuid::Uuid> = report
        .invoices
        .iter()
        .filter(|t| t.status == "confirmed")
        .map(|t| t.invoice_id.as_uuid())
        .collect();
    confirmed.sort();
    let mut settled_sorted = settled.clone();
    settled_sorted.sort();
    assert_eq!(settled_sorted, confirmed);
    assert_eq!(confirmed.len() as u64, c.expected_confirmed);

    // Checkout views per merchant, as the analytics group counted them.
    let daily = flows::check::analytics(bus.pool())
        .await
        .expect("analytics");
    let mut views: BTreeMap<MerchantId, u64> = BTreeMap::new();
    for ((merchant, _), d) in &daily.daily {
        if d.checkout_views > 0 {
            *views.entry(*merchant).or_default() += d.checkout_views as u64;
        }
    }
    assert_eq!(views, report.views);
    // Methods chosen and checkouts abandoned per merchant, likewise.
    let mut methods: BTreeMap<MerchantId, u64> = BTreeMap::new();
    let mut abandoned: BTreeMap<MerchantId, u64> = BTreeMap::new();
    for ((merchant, _), d) in &daily.daily {
        let chosen: i64 = d.methods_chosen.values().sum();
        if chosen > 0 {
            *methods.entry(*merchant).or_default() += chosen as u64;
        }
        let left = d.checkouts_abandoned_left + d.checkouts_abandoned_expired;
        if left > 0 {
            *abandoned.entry(*merchant).or_default() += left as u64;
        }
    }
    assert_eq!(methods, report.methods_chosen);
    assert_eq!(abandoned, report.abandoned);
    assert!(
        report.counts.payment_methods_chosen > 0 && report.counts.checkouts_abandoned > 0,
        "{:?}",
        report.counts
    );

    // And the platform's own check, on a quiescent system: no grace at all.
    let options = verify::Options {
        grace: Duration::ZERO,
        topic: bus.domain_topic.clone(),
        projections_group: system.projections_group.clone(),
        audit_group: system.audit_group.clone(),
        settlement_group: system.settlement_group.clone(),
        ..verify::Options::default()
    };
    let verdict = verify::verify(&bus.db.url, &flows::harness::kafka(), &options)
        .await
        .expect("verify runs");
    assert!(verdict.ok, "verify: {:?}", verdict.violations);

    payments.stop().await;
    analytics.stop().await;
    system.stop().await;
}
