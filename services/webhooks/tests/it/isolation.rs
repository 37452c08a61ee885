//! One failing merchant does not delay the others: while an endpoint hangs on every attempt, every healthy
//! endpoint's webhooks arrive — before the hanging endpoint's first attempts have even timed out — and the hanging
//! endpoint never holds more attempts than its share.

use std::time::Duration;

use flows::Scenario;
use flows::receiver::Behaviour;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_endpoint_does_not_hold_up_the_others() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7301, 5, 60));
    let merchants = helpers::merchants(&flows);
    let (hanging, _) = setup.endpoint(merchants[0], "hang", &[]).await;
    setup
        .receiver
        .set("hang", Behaviour::Hang(Duration::from_secs(120)));
    let others: Vec<_> = merchants.iter().copied().enumerate().skip(1).collect();
    let healthy = helpers::healthy_endpoints(&setup, &others).await;
    let service = setup
        .start(|s| {
            s.delivery.timeout = Duration::from_secs(15); // the spec's
            s.delivery.lease = Duration::from_secs(20);
            s.delivery.per_endpoint = 2;
            s.delivery.concurrency = 8;
        })
        .await;
    let publisher = setup.bus.start_publisher().await;
    helpers::append(&setup.bus, &flows.events.iter().collect::<Vec<_>>()).await;

    helpers::wait_healthy_delivered(&setup, &flows, &healthy).await;
    let hung = setup.receiver.received(Some("hang"));
    // Every healthy webhook arrived before the hanging endpoint's first attempts timed out: none of its deliveries
    // has a finished attempt yet (an order of events, not a clock).
    let (pending, attempted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'pending'), coalesce(max(attempts), 0)::bigint
           FROM webhook_deliveries WHERE endpoint_id = $1",
    )
    .bind(hanging.0)
    .fetch_one(setup.bus.pool())
    .await
    .unwrap();
    assert_eq!(
        attempted, 0,
        "an attempt to the hanging endpoint timed out before every healthy webhook arrived \
         (concurrency 8, 2 slots for the hanging endpoint)"
    );
    assert!(
        !hung.is_empty() && hung.len() <= 2,
        "the hanging endpoint holds at most its 2 slots: {} requests",
        hung.len()
    );
    assert_eq!(
        pending as usize,
        helpers::expected(&flows, merchants[0], &[]).len()
    );
    publisher.stop().await;
    service.stop().await;
}
