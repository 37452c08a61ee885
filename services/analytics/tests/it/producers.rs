//! The checkout page's producer API (`outbox::checkout`) end to end: views appended through the outbox, published
//! to the analytics topic and counted by analytics-aggregation exactly as the generator's truth says (its plan's
//! views, never this service's output) — a producer retrying the same views counts nothing twice, and a view made
//! by `record_view` in the producer's own transaction counts once however often the producer retries it.

use std::time::Duration;

use chrono::TimeDelta;
use flows::Scenario;
use flows::harness::Bus;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn views_recorded_through_the_outbox_are_counted_once() {
    let flows = flows::generate(&Scenario::new(1717, 12, 300));
    // Every record of the checkout page (views, methods chosen, abandonments), as the plan has them.
    let views = flows::emit::checkout_events(&flows.plan);
    assert!(views.len() > 200, "{} records", views.len());
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    // A producer that retries a whole batch after an unknown outcome appends every view twice.
    assert_eq!(
        outbox::checkout::record_events(bus.pool(), &views)
            .await
            .unwrap(),
        views.len()
    );
    let again = outbox::checkout::record_events(bus.pool(), &views[..views.len() / 2])
        .await
        .unwrap();
    assert!(
        again <= views.len() / 2,
        "views still in the outbox are skipped"
    );
    // The same view twice in one call: once.
    let twice = [views[0].clone(), views[0].clone()];
    outbox::checkout::record_events(bus.pool(), &twice)
        .await
        .unwrap();
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    wait_consumed(&bus, &service.group).await;
    let before = snapshot(bus.pool()).await;

    // One more view of an invoice, in the producer's transaction, retried: one view more on its day, once.
    let invoice = &flows.plan.invoices[0];
    let merchant = flows.plan.merchants[invoice.merchant].id;
    let at = invoice.created_at + TimeDelta::seconds(3);
    let mut appended = Vec::new();
    for _ in 0..3 {
        let mut tx = bus.pool().begin().await.unwrap();
        appended.push(
            outbox::checkout::record_view(&mut tx, merchant, invoice.id, at)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    assert!(
        appended.windows(2).all(|w| w[0] == w[1]),
        "the same record on every retry"
    );
    assert_eq!(appended[0].partition_key(), at.date_naive().to_string());
    // A rolled-back transaction appends nothing.
    {
        let mut tx = bus.pool().begin().await.unwrap();
        outbox::checkout::record_view(&mut tx, merchant, invoice.id, at + TimeDelta::seconds(1))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    let mut truth = flows.truth.clone();
    truth
        .daily
        .entry((merchant, at.date_naive()))
        .or_default()
        .checkout_views += 1;
    wait_for_truth(bus.pool(), &truth, Duration::from_secs(60)).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    wait_consumed(&bus, &service.group).await;
    assert_ne!(snapshot(bus.pool()).await, before);
    let refused = flows::service::refusals(&bus, &service.group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    service.stop().await;
    publisher.stop().await;
}
