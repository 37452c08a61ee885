//! Bad input at the edge of the domain topic (issue 18, item 5): each kind of record a consumer can never take —
//! malformed JSON, an unknown type, an unknown version, more than the contract's 1 MB, a record keyed otherwise
//! than its event's partition key, negative money, money with more decimals than its currency — lands in the DLQ
//! with a reason naming what is wrong, while the valid stream around it reaches the generator's truth.

use std::time::Duration;

use events::{EventType, examples};
use flows::Scenario;
use flows::harness::{Bus, header, kafka, read_topic};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::helpers::*;

/// `(what, key, value, a piece of the reason the DLQ must carry)`.
fn poison(key: &str) -> Vec<(&'static str, String, Vec<u8>, &'static str)> {
    let example = || serde_json::to_value(examples::example(EventType::InvoiceCreated)).unwrap();
    let own_key = examples::example(EventType::InvoiceCreated).partition_key();
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut event = example();
        change(&mut event);
        serde_json::to_vec(&event).unwrap()
    };
    // Just past the contract's limit, still under the broker's 1 MiB: only the consumer can refuse it.
    let mut huge = example();
    huge["metadata"]["user_agent"] = "x".repeat(events::MAX_EVENT_BYTES).into();
    vec![
        (
            "malformed JSON",
            key.into(),
            br#"{"event_id": "evt_"#.to_vec(),
            "malformed_json",
        ),
        (
            "unknown type",
            key.into(),
            with(&|e| e["event_type"] = "InvoiceTeleported".into()),
            "unknown_event_type",
        ),
        (
            "unknown version",
            own_key.clone(),
            with(&|e| e["event_version"] = 99.into()),
            "unknown_version",
        ),
        (
            "over 1 MB",
            own_key.clone(),
            serde_json::to_vec(&huge).unwrap(),
            "too_large",
        ),
        // Valid in every other way: only its key is wrong.
        (
            "wrong key",
            key.into(),
            with(&|_| ()),
            "is not the partition key",
        ),
        (
            "negative money",
            own_key.clone(),
            with(&|e| e["event_data"]["total_amount"] = "-16.49".into()),
            "negative_amount",
        ),
        (
            "over-precise money",
            own_key,
            with(&|e| e["event_data"]["total_amount"] = "16.499".into()),
            "too_many_decimals",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_bad_input_is_dead_lettered_with_its_reason_and_the_stream_goes_on() {
    let flows = flows::generate(&Scenario::new(305, 15, 200));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let (first, second) = flows.events.split_at(flows.events.len() / 2);
    bus.append(first, 200).await;
    bus.wait_outbox_empty(Duration::from_secs(30)).await;

    let poison = poison(&first[0].partition_key());
    // The shared producer settings cap a record at librdkafka's default 1 000 000 bytes; this one sends what a
    // foreign producer could (the broker takes up to 1 MiB).
    let producer: FutureProducer = service_kit::kafka::producer_config(&kafka())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for (what, key, value, _) in &poison {
        producer
            .send(
                FutureRecord::to(&bus.domain_topic).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing the {what} record: {e}"));
    }
    bus.append(second, 200).await;

    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    let dlq = read_topic(
        &format!("{}.dlq", bus.domain_topic),
        poison.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dlq.len(),
        poison.len(),
        "exactly the bad records are dead-lettered"
    );
    for (what, _, value, reason) in &poison {
        // Whole, or — over what the DLQ can hold — its first bytes, with its size to find the original by.
        let letter = dlq
            .iter()
            .find(|m| match rdkafka::Message::payload(*m) {
                Some(bytes) if header(m, "dlq.value.truncated").is_some() => {
                    header(m, "dlq.value.truncated") == Some(value.len().to_string())
                        && value.starts_with(bytes)
                }
                bytes => bytes == Some(value.as_slice()),
            })
            .unwrap_or_else(|| panic!("the {what} record is not in the DLQ"));
        assert_eq!(
            header(letter, "dlq.error.class").as_deref(),
            Some("schema"),
            "{what}"
        );
        assert_eq!(
            header(letter, "dlq.attempts").as_deref(),
            Some("1"),
            "{what}: not retried"
        );
        let message = header(letter, "dlq.error.message").unwrap_or_default();
        assert!(
            message.contains(reason),
            "{what}: the reason {message:?} lacks {reason:?}"
        );
    }

    service.stop().await;
    publisher.stop().await;
}
