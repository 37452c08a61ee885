//! Every domain event is logged once with its metadata; duplicates and invalid records leave no trace in the
//! chain; the chain verifies.

use std::time::Duration;

use flows::Scenario;
use flows::harness::{Bus, header, produce, read_topic};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_logged_once_with_its_metadata_and_the_chain_verifies() {
    let flows = flows::generate(&Scenario::new(606, 20, 300));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    wait_for_rows(bus.pool(), flows.events.len(), Duration::from_secs(90)).await;
    flows::harness::wait_consumed(&service.group, &bus.domain_topic, Duration::from_secs(60)).await;
    assert_log_matches(bus.pool(), &flows.events).await;
    let verification = verify(bus.pool()).await;
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.rows as usize, flows.events.len());
    assert_eq!(verification.head_seq as usize, flows.events.len());

    // Re-published events are recognised and append nothing.
    let slice = &flows.events[100..400];
    bus.append(slice, 100).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    flows::harness::wait_consumed(&service.group, &bus.domain_topic, Duration::from_secs(60)).await;
    assert_eq!(rows(bus.pool()).await as usize, flows.events.len());
    assert!(verify(bus.pool()).await.intact());

    let metrics = service.check_ops_endpoints().await;
    assert!(
        metrics.contains("audit_events_total{event_type=\"InvoiceCreated\",outcome=\"duplicate\"}")
    );

    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_invalid_record_goes_to_the_dlq_and_the_log_continues() {
    let flows = flows::generate(&Scenario::new(607, 5, 60));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let (first, second) = flows.events.split_at(flows.events.len() / 2);
    bus.append(first, 100).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;
    let poison = vec![(
        first[0].partition_key(),
        br#"{"event_id":"evt_nope"}"#.to_vec(),
    )];
    produce(&bus.domain_topic, &poison).await;
    bus.append(second, 100).await;
    wait_for_rows(bus.pool(), flows.events.len(), Duration::from_secs(60)).await;
    let dlq = read_topic(
        &format!("{}.dlq", bus.domain_topic),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        header(&dlq[0], "dlq.error.class").as_deref(),
        Some("schema")
    );
    assert_eq!(
        header(&dlq[0], "dlq.consumer.group").as_deref(),
        Some(service.group.as_str())
    );
    assert_log_matches(bus.pool(), &flows.events).await;
    assert!(verify(bus.pool()).await.intact());
    service.stop().await;
    publisher.stop().await;
}
