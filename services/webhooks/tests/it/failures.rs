//! Failing receivers: the spec's retry schedule, the last attempt dead-lettered with provenance, 410 disabling
//! the endpoint, redirects not followed, and the operator's redeliver and recover.

use std::time::Duration;

use events::payload::EndpointDisabledReason;
use flows::Scenario;
use flows::receiver::Behaviour;
use webhooks::endpoints::{self, DeliveryId};
use webhooks::store;

use crate::helpers::{self, Setup};

/// One `invoice.paid` event of a fresh scenario's first merchant, and that merchant.
fn one_paid(seed: u64) -> (flows::Flows, events::MerchantId, usize) {
    let flows = flows::generate(&Scenario::new(seed, 1, 10));
    let merchant = helpers::merchants(&flows)[0];
    let n = helpers::expected(&flows, merchant, &["invoice.paid"]).len();
    assert!(n >= 2, "the scenario pays at least two invoices");
    (flows, merchant, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_twice_then_answering_delivers_on_the_third_attempt_after_2_and_4_seconds() {
    let setup = Setup::new().await;
    let (flows, merchant, _) = one_paid(7201);
    let (endpoint, secret) = setup.endpoint(merchant, "flaky", &["invoice.paid"]).await;
    setup
        .receiver
        .set("flaky", Behaviour::FailFirst { n: 2, status: 503 });
    let service = setup.start(|_| {}).await; // the spec's schedule: 2, 4, 8, 16, 32 s
    let publisher = setup.bus.start_publisher().await;
    let paid = helpers::expected(&flows, merchant, &["invoice.paid"]);
    helpers::append(&setup.bus, &paid[..1]).await;

    let got = helpers::wait_delivered(&setup.receiver, "flaky", 1, Duration::from_secs(30)).await;
    helpers::check_requests(&got, &[&secret]);
    assert_eq!(got.len(), 3, "three attempts");
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [Some(503), Some(503), Some(200)]
    );
    assert!(
        got.iter().all(|r| r.webhook_id == got[0].webhook_id),
        "one webhook id for every attempt"
    );
    let gaps: Vec<f64> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    assert!(
        (1.9..3.5).contains(&gaps[0]),
        "first retry after ~2 s: {gaps:?}"
    );
    assert!(
        (3.9..6.0).contains(&gaps[1]),
        "second retry after ~4 s: {gaps:?}"
    );

    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows == [("delivered".into(), 3, Some(200), None)]
    })
    .await;
    let attempts: Vec<(i32, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT attempt, status_code, response_excerpt FROM webhook_attempts ORDER BY attempt",
    )
    .fetch_all(setup.bus.pool())
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [
            (1, Some(503), Some("answered 503".into())),
            (2, Some(503), Some("answered 503".into())),
            (3, Some(200), Some("answered 200".into()))
        ]
    );
    publisher.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn always_failing_makes_six_attempts_then_fails_and_dead_letters_with_provenance() {
    let setup = Setup::new().await;
    let (flows, merchant, _) = one_paid(7202);
    let (endpoint, _) = setup.endpoint(merchant, "down", &["invoice.paid"]).await;
    setup.receiver.set("down", Behaviour::Always(500));
    let service = setup.start(helpers::quick_retries).await;
    let publisher = setup.bus.start_publisher().await;
    let paid = helpers::expected(&flows, merchant, &["invoice.paid"]);
    helpers::append(&setup.bus, &paid[..1]).await;

    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 1 && rows[0].0 == "failed"
    })
    .await;
    let rows = helpers::delivery_rows(&setup.bus, endpoint).await;
    assert_eq!(rows, [("failed".into(), 6, Some(500), None)]);
    assert_eq!(
        setup.receiver.received(Some("down")).len(),
        6,
        "1 attempt + 5 retries"
    );
    let dlq = format!("{}.dlq", setup.bus.domain_topic);
    let letters = flows::harness::read_topic(&dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let header = |name| flows::harness::header(letter, name);
    use rdkafka::Message;
    assert_eq!(
        letter.payload(),
        Some(events::encode(paid[0]).unwrap().as_slice()),
        "the original record"
    );
    assert_eq!(
        header(runtime::dlq::ORIGINAL_TOPIC).as_deref(),
        Some(setup.bus.domain_topic.as_str())
    );
    assert_eq!(
        header(runtime::dlq::CONSUMER_GROUP).as_deref(),
        Some(service.group.as_str())
    );
    assert_eq!(header(runtime::dlq::ATTEMPTS).as_deref(), Some("6"));
    assert!(
        header(runtime::dlq::ERROR_MESSAGE)
            .unwrap()
            .contains("HTTP 500")
    );
    assert_eq!(
        header(webhooks::dispatch::DLQ_ENDPOINT_ID),
        Some(endpoint.to_string())
    );
    let webhook_id = setup.receiver.received(Some("down"))[0].webhook_id.clone();
    assert_eq!(header(webhooks::dispatch::DLQ_WEBHOOK_ID), webhook_id);
    helpers::counted(
        &service,
        "webhook_deliveries_total",
        ("outcome", "failed"),
        1.0,
    )
    .await;
    publisher.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_disables_the_endpoint_and_recover_sends_the_failed_ones_again_with_their_ids() {
    let setup = Setup::new().await;
    let (flows, merchant, n) = one_paid(7203);
    let (endpoint, secret) = setup.endpoint(merchant, "gone", &["invoice.paid"]).await;
    setup.receiver.set("gone", Behaviour::Always(410));
    let since = chrono::Utc::now();
    let service = setup.start(helpers::quick_retries).await;
    let publisher = setup.bus.start_publisher().await;
    let paid = helpers::expected(&flows, merchant, &["invoice.paid"]);
    helpers::append(&setup.bus, &paid[..1]).await;

    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 1 && rows[0].0 == "failed"
    })
    .await;
    let shown = endpoints::show(setup.bus.pool(), endpoint).await.unwrap();
    assert_eq!(
        (shown.status.as_str(), shown.disabled_reason.as_deref()),
        ("disabled", Some("the endpoint answered 410 Gone"))
    );
    assert_eq!(
        setup.receiver.received(Some("gone")).len(),
        1,
        "410 is not retried"
    );
    // Events for a disabled endpoint are recorded as failed, not sent.
    helpers::append(&setup.bus, &paid[1..]).await;
    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == n && rows.iter().all(|r| r.0 == "failed")
    })
    .await;
    assert_eq!(setup.receiver.received(Some("gone")).len(), 1);
    // A disabled endpoint refuses a recovery until it is enabled.
    assert!(
        store::recover(setup.bus.pool(), endpoint, since)
            .await
            .is_err()
    );

    setup.receiver.set("gone", Behaviour::Ok);
    endpoints::enable(setup.bus.pool(), endpoint).await.unwrap();
    let requeued = store::recover(setup.bus.pool(), endpoint, since)
        .await
        .unwrap();
    assert_eq!(requeued.len(), n);
    let got = helpers::wait_delivered(&setup.receiver, "gone", n, Duration::from_secs(30)).await;
    helpers::check_requests(&got, &[&secret]);
    // Every failed one was sent again; the first (410) request and its recovery share the webhook id.
    let recovered: std::collections::BTreeSet<String> =
        got[1..].iter().map(helpers::event_id).collect();
    let want: std::collections::BTreeSet<String> =
        paid.iter().map(|e| e.event_id().to_string()).collect();
    assert_eq!(recovered, want);
    let again = got[1..]
        .iter()
        .find(|r| helpers::event_id(r) == helpers::event_id(&got[0]))
        .unwrap();
    assert_eq!(got[0].webhook_id, again.webhook_id);
    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 2 * n
            && rows[..n].iter().all(|r| r.0 == "failed" && r.3.is_none())
            && rows[n..]
                .iter()
                .all(|r| r.0 == "delivered" && r.3.is_some())
    })
    .await;
    // Recovering again finds nothing failed whose chain has not been delivered since.
    assert!(
        store::recover(setup.bus.pool(), endpoint, since)
            .await
            .unwrap()
            .is_empty()
    );
    helpers::counted(
        &service,
        "webhook_endpoints_disabled_total",
        ("reason", "gone"),
        1.0,
    )
    .await;
    // The merchant and the audit log were told, through the outbox, once.
    let told = helpers::disabled_events(&setup.bus, 1).await;
    assert_eq!(told.len(), 1);
    let events::EventData::WebhookEndpointDisabled(e) = told[0].data() else {
        unreachable!()
    };
    assert_eq!(
        (e.endpoint_id.as_str(), e.reason),
        (endpoint.to_string().as_str(), EndpointDisabledReason::Gone)
    );
    assert_eq!(told[0].merchant_id(), merchant);
    publisher.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_failing_for_the_auto_disable_period_is_disabled_and_the_merchant_told() {
    let setup = Setup::new().await;
    let (flows, merchant, n) = one_paid(7205);
    let (endpoint, _) = setup.endpoint(merchant, "dead", &["invoice.paid"]).await;
    let (healthy, _) = setup.endpoint(merchant, "alive", &["invoice.paid"]).await;
    setup.receiver.set("dead", Behaviour::Always(503));
    let service = setup
        .start(|s| {
            helpers::quick_retries(s);
            s.delivery.auto_disable_after = Duration::from_secs(2);
        })
        .await;
    let publisher = setup.bus.start_publisher().await;
    let paid = helpers::expected(&flows, merchant, &["invoice.paid"]);
    // Paced so that failures go on for longer than the period: 1 attempt + 5 retries of 100 ms × 2ⁿ ≈ 3 s each.
    for event in &paid {
        helpers::append(&setup.bus, &[*event]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let disabled = helpers::disabled_events(&setup.bus, 1).await;
    let events::EventData::WebhookEndpointDisabled(e) = disabled[0].data() else {
        unreachable!()
    };
    assert_eq!(
        (e.endpoint_id.clone(), e.reason),
        (endpoint.to_string(), EndpointDisabledReason::Failing)
    );
    assert!(
        e.details
            .as_deref()
            .unwrap()
            .contains("every attempt failed since"),
        "{e:?}"
    );
    let shown = endpoints::show(setup.bus.pool(), endpoint).await.unwrap();
    assert_eq!(shown.status, "disabled");
    // Its deliveries are kept as failed; the healthy endpoint of the same merchant got everything.
    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == n && rows.iter().all(|r| r.0 == "failed")
    })
    .await;
    helpers::eventually_rows(&setup, healthy, |rows| {
        rows.len() == n && rows.iter().all(|r| r.0 == "delivered")
    })
    .await;
    helpers::counted(
        &service,
        "webhook_endpoints_disabled_total",
        ("reason", "failing"),
        1.0,
    )
    .await;
    publisher.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_not_followed_and_redeliver_sends_a_delivered_one_again() {
    let setup = Setup::new().await;
    let (flows, merchant, _) = one_paid(7204);
    let (endpoint, _) = setup.endpoint(merchant, "moved", &["invoice.paid"]).await;
    setup.receiver.set("moved", Behaviour::Redirect);
    let service = setup.start(helpers::quick_retries).await;
    let publisher = setup.bus.start_publisher().await;
    let paid = helpers::expected(&flows, merchant, &["invoice.paid"]);
    helpers::append(&setup.bus, &paid[..1]).await;

    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 1 && rows[0].0 == "failed"
    })
    .await;
    assert_eq!(
        helpers::delivery_rows(&setup.bus, endpoint).await[0].2,
        Some(302)
    );
    assert!(
        setup.receiver.received(Some("ok")).is_empty(),
        "the redirect was not followed"
    );

    setup.receiver.set("moved", Behaviour::Ok);
    let delivery: uuid::Uuid = sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries")
        .fetch_one(setup.bus.pool())
        .await
        .unwrap();
    let again = store::redeliver(setup.bus.pool(), DeliveryId(delivery))
        .await
        .unwrap();
    let got = helpers::wait_delivered(&setup.receiver, "moved", 1, Duration::from_secs(30)).await;
    assert!(
        got.iter().all(|r| r.webhook_id == got[0].webhook_id),
        "the redelivery keeps the webhook id"
    );
    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 2 && rows[1].0 == "delivered"
    })
    .await;
    // A delivered one can be redelivered too; a pending one cannot.
    let third = store::redeliver(setup.bus.pool(), again).await.unwrap();
    helpers::eventually_rows(&setup, endpoint, |rows| {
        rows.len() == 3 && rows[2].0 == "delivered"
    })
    .await;
    let got = setup.receiver.received(Some("moved"));
    assert_eq!(got.iter().filter(|r| r.answered == Some(200)).count(), 2);
    assert!(got.iter().all(|r| r.webhook_id == got[0].webhook_id));
    let rows = helpers::delivery_rows(&setup.bus, endpoint).await;
    assert_eq!(
        rows[2].3,
        Some(delivery),
        "a redelivery names the first delivery of its chain"
    );
    assert_ne!(third, again);
    publisher.stop().await;
    service.stop().await;
}
