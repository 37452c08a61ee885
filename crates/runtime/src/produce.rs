//! Producing the handlers' output records and DLQ records.
//!
//! Guarantees: [`enqueue`] hands a record to librdkafka without awaiting anything (so a batch of records is in
//! flight together, and — in mode (a) — the enqueue happens inside a synchronous critical section that a task
//! abort cannot split); [`send_all`] enqueues a batch, then awaits every delivery report, and fails as an
//! infrastructure error if any record was not acknowledged within the timeout.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::error::HandlerError;
use crate::record::OutputRecord;

/// How long [`enqueue`] waits for room in librdkafka's queue before failing.
const QUEUE_FULL_PATIENCE: Duration = Duration::from_secs(10);

/// Enqueues `out`; when librdkafka's local queue is full, waits (blocking, briefly: the queue drains on
/// librdkafka's own threads) for room.
pub(crate) fn enqueue(
    producer: &FutureProducer,
    out: &OutputRecord,
) -> Result<DeliveryFuture, KafkaError> {
    let started = Instant::now();
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
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// Produces `outputs` and waits until the broker acknowledged every one of them.
pub(crate) async fn send_all(
    producer: &FutureProducer,
    outputs: &[OutputRecord],
    timeout: Duration,
) -> Result<(), HandlerError> {
    let mut deliveries = Vec::with_capacity(outputs.len());
    for out in outputs {
        let delivery = enqueue(producer, out).map_err(|e| {
            HandlerError::infrastructure(ProduceError {
                topic: out.topic.clone(),
                cause: e.to_string(),
            })
        })?;
        deliveries.push((delivery, &out.topic));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for (delivery, topic) in deliveries {
        let cause = match tokio::time::timeout_at(deadline, delivery).await {
            Ok(Ok(Ok(_))) => continue,
            Ok(Ok(Err((err, _)))) => err.to_string(),
            Ok(Err(_canceled)) => "the producer was dropped".to_string(),
            Err(_) => format!("no acknowledgement within {timeout:?}"),
        };
        return Err(HandlerError::infrastructure(ProduceError {
            topic: topic.clone(),
            cause,
        }));
    }
    Ok(())
}

/// A record could not be written to Kafka.
#[derive(Debug, thiserror::Error)]
#[error("producing to {topic} failed: {cause}")]
pub struct ProduceError {
    pub topic: String,
    pub cause: String,
}
