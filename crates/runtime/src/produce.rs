//! Producing the handlers' output records and DLQ records.
//!
//! Guarantees: [`enqueue`] hands a record to librdkafka, and when librdkafka's local queue is full it waits
//! with the async timer — never by blocking a runtime worker; [`send_all`] enqueues a batch, then awaits every
//! delivery report, and fails if any record was not acknowledged within the timeout. Failures are classified:
//! what the broker refuses for good (an unknown topic, a record too large, an invalid record, no authorisation)
//! is a [`HandlerError::Business`] (a sink reports it as permanent), anything else infrastructure.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::error::HandlerError;
use crate::record::OutputRecord;

/// How long [`enqueue`] waits for room in librdkafka's queue before failing.
const QUEUE_FULL_PATIENCE: Duration = Duration::from_secs(10);

/// Enqueues `out`; when librdkafka's local queue is full, waits (asynchronously: the queue drains on
/// librdkafka's own threads) for room.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    out: &OutputRecord,
) -> Result<DeliveryFuture, HandlerError> {
    let started = tokio::time::Instant::now();
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&out.topic).headers(out.owned_headers());
        if let Some(key) = out.key.as_deref() {
            record = record.key(key);
        }
        if let Some(value) = out.value.as_deref() {
            record = record.payload(value);
        }
        if let Some(partition) = out.partition {
            record = record.partition(partition);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if started.elapsed() < QUEUE_FULL_PATIENCE =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((err, _)) => return Err(produce_error(&out.topic, &err)),
        }
    }
}

/// Produces `outputs` and waits until the broker acknowledged every one of them.
pub async fn send_all(
    producer: &FutureProducer,
    outputs: &[OutputRecord],
    timeout: Duration,
) -> Result<(), HandlerError> {
    let mut deliveries = Vec::with_capacity(outputs.len());
    for out in outputs {
        deliveries.push((enqueue(producer, out).await?, &out.topic));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (delivery, topic) in deliveries {
        match tokio::time::timeout_at(deadline, delivery).await {
            Ok(Ok(Ok(_))) => continue,
            Ok(Ok(Err((err, _)))) => return Err(produce_error(topic, &err)),
            Ok(Err(_canceled)) => {
                return Err(HandlerError::infrastructure(ProduceError {
                    topic: topic.clone(),
                    cause: "the producer was dropped".into(),
                }));
            }
            Err(_) => {
                return Err(HandlerError::infrastructure(ProduceError {
                    topic: topic.clone(),
                    cause: format!("no acknowledgement within {timeout:?}"),
                }));
            }
        }
    }
    Ok(())
}

/// A produce failure, classified (see the module documentation).
pub(crate) fn produce_error(topic: &str, err: &KafkaError) -> HandlerError {
    use RDKafkaErrorCode as C;
    let cause = ProduceError {
        topic: topic.to_string(),
        cause: err.to_string(),
    };
    match err.rdkafka_error_code() {
        Some(
            C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::MessageSizeTooLarge
            | C::InvalidRecord
            | C::InvalidMessage
            | C::TopicAuthorizationFailed,
        ) => HandlerError::business(cause),
        _ => HandlerError::infrastructure(cause),
    }
}

/// A record could not be written to Kafka.
#[derive(Debug, thiserror::Error)]
#[error("producing to {topic} failed: {cause}")]
pub struct ProduceError {
    pub topic: String,
    pub cause: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A producer whose local queue holds one record and whose broker never answers: the second record finds
    /// the queue full.
    fn full_producer() -> FutureProducer {
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("queue.buffering.max.messages", "1")
            .set("message.timeout.ms", "60000")
            .create()
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_is_waited_out_without_blocking_the_runtime() {
        let producer = full_producer();
        let record = OutputRecord::new("t", b"k".to_vec(), b"v".to_vec());
        let _first = enqueue(&producer, &record).await.expect("room for one");
        // On a single-threaded runtime a blocking wait would starve this ticker until the enqueue gives up.
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let waited =
            tokio::time::timeout(Duration::from_millis(500), enqueue(&producer, &record)).await;
        assert!(
            waited.is_err(),
            "the queue stayed full, so the enqueue was still waiting"
        );
        assert!(
            ticks.load(Ordering::Relaxed) >= 20,
            "other tasks ran while it waited: {} ticks in 500 ms",
            ticks.load(Ordering::Relaxed)
        );
        ticker.abort();
    }
}
