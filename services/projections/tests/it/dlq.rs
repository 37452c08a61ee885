//! Records the read models can never take go to `<topic>.dlq` and the rest of the stream is processed: schema
//! errors at once, an event about an unknown invoice after the spec's retries (1 s, 2 s, 4 s).

use std::time::Duration;

use events::{EventType, examples};
use flows::Scenario;
use flows::harness::{Bus, header, produce, read_topic};
use flows::service::expect_business_dead_letter;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_invalid_events_go_to_the_dlq_and_the_stream_continues() {
    let flows = flows::generate(&Scenario::new(303, 15, 200));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let (first, second) = flows.events.split_at(flows.events.len() / 2);
    bus.append(first, 200).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;

    // Keyed like the invoices around them, so they sit in the partitions among valid events.
    let key = first[0].partition_key();
    let mut bad_fee =
        serde_json::to_value(examples::example(EventType::SettlementCompleted)).unwrap();
    bad_fee["event_data"]["platform_fee_amount"] = "0.17".into();
    let mut unknown_type =
        serde_json::to_value(examples::example(EventType::InvoiceCreated)).unwrap();
    unknown_type["event_type"] = "InvoiceTeleported".into();
    let poison: Vec<(String, Vec<u8>)> = vec![
        (key.clone(), b"not json at all".to_vec()),
        (key.clone(), serde_json::to_vec(&bad_fee).unwrap()),
        (key, serde_json::to_vec(&unknown_type).unwrap()),
    ];
    produce(&bus.domain_topic, &poison).await;
    bus.append(second, 200).await;

    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    let dlq = read_topic(
        &format!("{}.dlq", bus.domain_topic),
        3,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dlq.len(),
        3,
        "exactly the three invalid records are dead-lettered"
    );
    for message in &dlq {
        assert_eq!(
            header(message, "dlq.error.class").as_deref(),
            Some("schema")
        );
        assert_eq!(
            header(message, "dlq.consumer.group").as_deref(),
            Some(service.group.as_str())
        );
        assert_eq!(
            header(message, "dlq.original.topic").as_deref(),
            Some(bus.domain_topic.as_str())
        );
        assert_eq!(
            header(message, "dlq.attempts").as_deref(),
            Some("1"),
            "schema errors are not retried"
        );
    }
    let mut values: Vec<Vec<u8>> = dlq
        .iter()
        .map(|m| rdkafka::Message::payload(m).unwrap().to_vec())
        .collect();
    let mut sent: Vec<Vec<u8>> = poison.into_iter().map(|(_, v)| v).collect();
    values.sort();
    sent.sort();
    assert_eq!(values, sent, "the DLQ keeps the original bytes");

    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_about_an_unknown_invoice_is_retried_per_the_spec_then_dead_lettered() {
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    // A payment for an invoice the read models never saw created, then a valid flow on the same key.
    let orphan = examples::example(EventType::PaymentDetected);
    let flows = flows::generate(&Scenario::new(304, 2, 5));
    bus.append(std::slice::from_ref(&orphan), 1).await;
    bus.append(&flows.events, 100).await;

    // 1 attempt + 3 retries waiting 1 s + 2 s + 4 s.
    let letter = expect_business_dead_letter(&bus, &orphan, 4, Duration::from_millis(7000)).await;
    assert!(
        header(&letter, "dlq.error.message")
            .unwrap()
            .contains("unknown")
    );
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(60)).await;

    service.stop().await;
    publisher.stop().await;
}
