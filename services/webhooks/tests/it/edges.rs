//! Receivers that misbehave at the HTTP level (issue 18, item 5): one answers 200 with a 10 MB body, one answers
//! 200 and then sends its body one byte at a time (slow loris). The first is delivered and read no further than
//! the delivery log's excerpt (1 KiB); the second's attempts end at the timeout with that reason in the log and
//! are retried; every healthy endpoint's webhooks arrive meanwhile.

use std::time::Duration;

use flows::Scenario;
use flows::receiver::Behaviour;

use crate::helpers::{self, Setup};

/// `(status code, response excerpt bytes, error, latency ms)` of each attempt to `endpoint`'s deliveries.
async fn attempts(
    setup: &Setup,
    endpoint: webhooks::endpoints::EndpointId,
) -> Vec<(Option<i32>, Option<i32>, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT a.status_code, octet_length(a.response_excerpt), a.error, a.latency_ms
           FROM webhook_attempts a JOIN webhook_deliveries d USING (delivery_id)
          WHERE d.endpoint_id = $1 ORDER BY a.started_at",
    )
    .bind(endpoint.0)
    .fetch_all(setup.bus.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_10_mb_answer_and_a_slow_loris_neither_hold_the_service_nor_the_others() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7311, 6, 60));
    let merchants = helpers::merchants(&flows);
    let (huge, _) = setup.endpoint(merchants[0], "huge", &[]).await;
    setup
        .receiver
        .set("huge", Behaviour::Huge(10 * 1024 * 1024));
    let (loris, _) = setup.endpoint(merchants[1], "loris", &[]).await;
    setup
        .receiver
        .set("loris", Behaviour::Trickle(Duration::from_millis(500)));
    let others: Vec<_> = merchants.iter().copied().enumerate().skip(2).collect();
    let healthy = helpers::healthy_endpoints(&setup, &others).await;
    let timeout = Duration::from_secs(5);
    let service = setup
        .start(|s| {
            s.delivery.timeout = timeout;
            s.delivery.lease = Duration::from_secs(10);
            s.delivery.per_endpoint = 2;
            s.delivery.concurrency = 8;
        })
        .await;
    let publisher = setup.bus.start_publisher().await;
    helpers::append(&setup.bus, &flows.events.iter().collect::<Vec<_>>()).await;

    helpers::wait_healthy_delivered(&setup, &flows, &healthy).await;

    // The 10 MB answer: a 200, so delivered; the log keeps 1 KiB of it.
    let n = helpers::expected(&flows, merchants[0], &[]).len();
    assert!(n > 0, "the plan gives the first merchant webhooks");
    helpers::eventually_rows(&setup, huge, |rows| {
        rows.len() == n && rows.iter().all(|r| r.0 == "delivered")
    })
    .await;
    for (code, excerpt, error, _) in attempts(&setup, huge).await {
        assert_eq!(code, Some(200));
        assert_eq!(excerpt, Some(1024), "the excerpt is the first KiB, no more");
        assert_eq!(error, None);
    }

    // The slow loris: each attempt ends at the timeout, with the reason, and nothing is marked delivered.
    let started = std::time::Instant::now();
    let loris_attempts = loop {
        let rows = attempts(&setup, loris).await;
        if !rows.is_empty() {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no attempt to the slow loris was logged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (code, _, error, latency_ms) in &loris_attempts {
        let error = error.as_deref().unwrap_or_default();
        assert!(
            error.contains("no complete answer within"),
            "{error:?} (status {code:?})"
        );
        let latency = Duration::from_millis(*latency_ms as u64);
        assert!(
            latency >= timeout && latency < timeout + Duration::from_secs(3),
            "an attempt lasts the timeout, not the body: {latency:?}"
        );
    }
    assert!(
        helpers::delivery_rows(&setup.bus, loris)
            .await
            .iter()
            .all(|r| r.0 != "delivered"),
        "a body that never ends is not a delivery"
    );

    publisher.stop().await;
    service.stop().await;
}
