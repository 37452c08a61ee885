//! Re-published events (the outbox publisher's crash window, an operator re-appending a slice) and redelivered
//! records change nothing: same rows, same versions.

use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn republished_events_change_nothing() {
    let flows = flows::generate(&Scenario::new(202, 20, 250));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    wait_consumed(&bus, &service.group).await;
    let before = snapshot(bus.pool()).await;

    // A slice from the middle, published again: every event of it arrives a second time, after later events
    // of the same keys (stale by then).
    let slice = &flows.events[flows.events.len() / 3..flows.events.len() / 3 + 600];
    bus.append(slice, 100).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    wait_consumed(&bus, &service.group).await;

    let duplicates = service.counter("projections_events_total", Some(("outcome", "duplicate")));
    assert_eq!(
        duplicates as usize,
        slice.len(),
        "every re-published event was recognised"
    );
    assert_eq!(
        snapshot(bus.pool()).await,
        before,
        "duplicates changed the read models"
    );
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(5)).await;

    service.stop().await;
    publisher.stop().await;
}
