//! Generated flows, published through the outbox and the publisher, end in read models equal to the
//! generator's independent truth; the invoice and merchant queries read them back; the service answers
//! /health, /ready and /metrics.

use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_equal_the_truth_of_generated_flows() {
    let flows = flows::generate(&Scenario::new(101, 30, 400));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;

    // Every event was applied once; no duplicate was needed.
    let applied = service.counter("projections_events_total", Some(("outcome", "applied")));
    assert_eq!(applied as usize, flows.events.len());

    // The queries behind `checkoutctl invoice show` / `merchant show`.
    let mut conn = bus.pool().acquire().await.unwrap();
    let (id, expected) = flows
        .truth
        .invoices
        .iter()
        .find(|(_, i)| i.status == "confirmed" && i.history > 4)
        .expect("a confirmed invoice with a settlement");
    let view = projections::query::invoice(&mut conn, id.as_uuid())
        .await
        .unwrap()
        .expect("the invoice is known");
    assert_eq!(view.invoice.invoice_id, id.to_string());
    assert_eq!(view.invoice.status, expected.status);
    assert_eq!(view.history.len() as i64, expected.history);
    assert_eq!(view.history[0].event_type, "InvoiceCreated");
    assert_eq!(view.payments.len() as i32, expected.payments_detected);
    let merchant = expected.merchant_id;
    let view = projections::query::merchant(&mut conn, merchant.as_uuid())
        .await
        .unwrap()
        .expect("the merchant is known");
    let balances: Vec<_> = flows
        .truth
        .balances
        .iter()
        .filter(|((m, _), _)| *m == merchant)
        .collect();
    assert_eq!(view.balances.len(), balances.len());
    for ((_, currency), want) in balances {
        let got = view
            .balances
            .iter()
            .find(|b| &b.currency == currency)
            .unwrap();
        assert_eq!(got.settled_net.normalize(), want.settled_net);
        assert_eq!(got.pending_net.normalize(), want.pending_net);
    }
    assert!(
        projections::query::invoice(&mut conn, uuid::Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );

    // Operations endpoints.
    let metrics = service.check_ops_endpoints().await;
    assert!(metrics.contains("projections_events_total"), "{metrics}");

    service.stop().await;
    publisher.stop().await;
}
