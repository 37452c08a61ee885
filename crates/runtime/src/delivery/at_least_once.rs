//! At-least-once: work is done when the handler succeeded and the broker acknowledged its outputs; the poll
//! thread then commits the lane's position to Kafka.
//!
//! Guarantees: a record's offset is committed (by the poll thread, from the lane's position) only after every
//! output record of its unit and every DLQ record before it was acknowledged (`acks=all`); a crash before that
//! redelivers the records (handlers de-duplicate with [`crate::idempotency`]). Records applied past a held-back
//! one are redelivered after a crash too (Kafka keeps one offset per partition); that is at-least-once.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sqlx::PgConnection;

use super::{Assigned, Delivery, LaneSink, Position, Seek, SinkError, classify};
use crate::produce;
use crate::record::OutputRecord;

pub(crate) struct AtLeastOnce {
    pub producer: FutureProducer,
    pub produce_timeout: Duration,
}

impl Delivery for AtLeastOnce {
    type Sink = Sink;

    fn commits_to_kafka(&self) -> bool {
        true
    }

    fn assign(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Assigned<Sink>>, String> {
        Ok(partitions
            .iter()
            .map(|(topic, partition)| Assigned {
                topic: topic.clone(),
                partition: *partition,
                seek: Seek::Committed,
                skip: Vec::new(),
                sink: Sink {
                    producer: self.producer.clone(),
                    produce_timeout: self.produce_timeout,
                },
            })
            .collect())
    }
}

pub(crate) struct Sink {
    producer: FutureProducer,
    produce_timeout: Duration,
}

impl LaneSink for Sink {
    type Unit = ();

    fn gaps(&self) -> bool {
        true
    }

    fn keeps_partial(&self) -> bool {
        true
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn db(_unit: &mut ()) -> Option<&mut PgConnection> {
        None
    }

    async fn commit(
        &mut self,
        _unit: (),
        outputs: Vec<OutputRecord>,
        _position: &Position,
    ) -> Result<(), SinkError> {
        produce::send_all(&self.producer, &outputs, self.produce_timeout)
            .await
            .map_err(classify)
    }

    async fn abort(&mut self, _unit: ()) {}

    async fn dead_letter(
        &mut self,
        letter: OutputRecord,
        _position: &Position,
    ) -> Result<(), SinkError> {
        produce::send_all(&self.producer, &[letter], self.produce_timeout)
            .await
            .map_err(classify)
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        None
    }

    async fn flush(&mut self, _position: &Position) -> Result<(), SinkError> {
        Ok(())
    }

    async fn close(&mut self, _position: &Position, _graceful: bool) {}
}
