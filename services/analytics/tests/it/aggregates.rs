//! Generated flows and checkout views end in exactly the daily aggregates the generator expects; the query of
//! `checkoutctl analytics daily` reads them back; duplicates count nothing; invalid records go to the DLQs.

use std::time::Duration;

use flows::Scenario;
use flows::harness::{Bus, header, produce, read_topic};
use flows::service::expect_business_dead_letter;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_aggregates_equal_the_truth_and_duplicates_count_nothing() {
    let flows = flows::generate(&Scenario::new(707, 30, 400));
    // The checkout page's methods chosen and abandonments of both reasons are in the plan, so the comparison with
    // the truth below covers them.
    let (methods, left, expired) = flows.truth.daily.values().fold((0, 0, 0), |(m, l, e), d| {
        (
            m + d.methods_chosen.values().sum::<i64>(),
            l + d.checkouts_abandoned_left,
            e + d.checkouts_abandoned_expired,
        )
    });
    assert!(
        methods >= 20 && left >= 10 && expired >= 5,
        "methods {methods}, abandoned left {left} / expired {expired}"
    );
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    bus.produce_analytics(&flows.analytics).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    wait_consumed(&bus, &service.group).await;

    // The query behind `checkoutctl analytics daily`, for the busiest merchant.
    let merchant = flows.plan.merchants[0].id;
    let mut conn = bus.pool().acquire().await.unwrap();
    let days = analytics::query::daily(&mut conn, merchant.as_uuid(), None, None)
        .await
        .unwrap();
    let expected: Vec<_> = flows
        .truth
        .daily
        .iter()
        .filter(|((m, _), _)| *m == merchant)
        .collect();
    assert_eq!(days.len(), expected.len());
    for (((_, day), want), got) in expected.into_iter().zip(&days) {
        assert_eq!(got.day, *day);
        assert_eq!(got.invoices_created, want.invoices_created);
        assert_eq!(got.invoices_converted, want.invoices_converted);
        assert_eq!(got.checkout_views, want.checkout_views);
        assert_eq!(
            (
                got.checkouts_abandoned_left,
                got.checkouts_abandoned_expired
            ),
            (
                want.checkouts_abandoned_left,
                want.checkouts_abandoned_expired
            )
        );
        let methods: std::collections::BTreeMap<(String, String), i64> = got
            .methods
            .iter()
            .map(|m| ((m.crypto_currency.clone(), m.network.clone()), m.choices))
            .collect();
        assert_eq!(methods, want.methods_chosen, "methods chosen on {day}");
        assert_eq!(got.confirmations as usize, want.confirmation_millis.len());
        assert_eq!(
            got.median_confirmation_ms,
            flows::percentile(&want.confirmation_millis, 50)
        );
        assert_eq!(
            got.p95_confirmation_ms,
            flows::percentile(&want.confirmation_millis, 95)
        );
        if want.invoices_created > 0 {
            let rate = got
                .conversion_rate
                .expect("a rate when invoices were created");
            let exact = events::money::Decimal::from(want.invoices_converted)
                / events::money::Decimal::from(want.invoices_created);
            assert!((rate - exact).abs() <= "0.00005".parse().unwrap());
        }
    }
    drop(conn);

    // Re-published domain events and re-sent views count nothing.
    let before = snapshot(bus.pool()).await;
    let slice = &flows.events[flows.events.len() / 4..flows.events.len() / 4 + 500];
    bus.append(slice, 100).await;
    bus.produce_analytics(&flows.analytics[..100]).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    wait_consumed(&bus, &service.group).await;
    assert_eq!(
        snapshot(bus.pool()).await,
        before,
        "duplicates changed the aggregates"
    );
    // Each re-sent record counted as a duplicate of its own type (the first 100 records mix the page's types).
    let metrics = service.check_ops_endpoints().await;
    let mut resent = std::collections::BTreeMap::<&str, usize>::new();
    for record in &flows.analytics[..100] {
        let event = events::AnalyticsEvent::decode(&record.value).unwrap();
        *resent.entry(event.event_type()).or_default() += 1;
    }
    assert!(resent.len() >= 2, "{resent:?}");
    for (event_type, n) in resent {
        assert!(
            metrics.contains(&format!(
                "analytics_events_total{{event_type=\"{event_type}\",outcome=\"duplicate\"}} {n}\n"
            )),
            "{event_type} {n}: {metrics}"
        );
    }

    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_records_of_either_topic_go_to_its_dlq_and_the_rest_is_aggregated() {
    let flows = flows::generate(&Scenario::new(708, 10, 150));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let (first, second) = flows.events.split_at(flows.events.len() / 2);
    bus.append(first, 100).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    produce(
        &bus.domain_topic,
        &[(
            first[0].partition_key(),
            b"{\"event_type\":\"InvoicePaid\"}".to_vec(),
        )],
    )
    .await;
    let mut bad_view = String::from_utf8(flows.analytics[0].value.clone()).unwrap();
    bad_view = bad_view.replace("\"event_version\":1", "\"event_version\":9");
    produce(
        &bus.analytics_topic,
        &[(flows.analytics[0].key.clone(), bad_view.into_bytes())],
    )
    .await;
    bus.append(second, 100).await;
    bus.produce_analytics(&flows.analytics).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    for topic in [&bus.domain_topic, &bus.analytics_topic] {
        let dlq = read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(30)).await;
        assert_eq!(dlq.len(), 1, "{topic}");
        assert_eq!(
            header(&dlq[0], "dlq.error.class").as_deref(),
            Some("schema")
        );
        assert_eq!(
            header(&dlq[0], "dlq.consumer.group").as_deref(),
            Some(service.group.as_str())
        );
    }
    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confirmation_of_an_unknown_invoice_is_retried_twice_10s_apart_then_dead_lettered() {
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let orphan = events::examples::example(events::EventType::PaymentConfirmed);
    let flows = flows::generate(&Scenario::new(709, 2, 5));
    bus.append(std::slice::from_ref(&orphan), 1).await;
    bus.append(&flows.events, 100).await;
    bus.produce_analytics(&flows.analytics).await;
    // 1 attempt + 2 retries waiting 10 s + 10 s.
    expect_business_dead_letter(&bus, &orphan, 3, Duration::from_secs(20)).await;
    // Nothing of the refused event was counted; the rest of the stream was.
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = $1")
            .bind(orphan.event_id().as_uuid())
            .fetch_one(bus.pool())
            .await
            .unwrap();
    assert_eq!(processed, 0);
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(60)).await;
    service.stop().await;
    publisher.stop().await;
}
