//! The notification-delivery consumer: a partition's batch → its notifications recorded, then the offsets
//! committed.
//!
//! Guarantees: on `Ok` every request of the batch has its row in `notification_deliveries` (committed), so the
//! runtime may commit the offsets; recording the same batch again (a redelivery after a crash or a rebalance, a
//! producer's replay with the same derived ids) adds nothing. A record that is not a valid `NotificationRequested`
//! is a schema error at its index (dead-lettered at once); a database failure fails the whole batch (nothing
//! recorded) and is classified by the runtime (an outage opens the consumer's breaker).

use events::notification::NotificationRequested;
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};
use sqlx::PgPool;

use crate::metrics::RecordMetrics;
use crate::store::{self, Incoming};

/// The consumer's handler.
pub struct Recorder {
    pool: PgPool,
    metrics: RecordMetrics,
}

impl Recorder {
    pub fn new(pool: PgPool, metrics: RecordMetrics) -> Self {
        Recorder { pool, metrics }
    }
}

/// What is kept of `record` (whose decoded request is `request`).
pub fn incoming(record: &Record, request: NotificationRequested) -> Incoming {
    let headers = record
        .headers
        .iter()
        .map(|(k, v)| {
            serde_json::json!([
                k,
                v.as_deref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            ])
        })
        .collect();
    Incoming {
        request,
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone().unwrap_or_default(),
        headers: serde_json::Value::Array(headers),
    }
}

impl BatchHandler for Recorder {
    async fn handle_batch(
        &self,
        records: &[Record],
        _ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let mut batch = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let request = record
                .decode_with(NotificationRequested::decode)
                .map_err(|e| BatchError::at(i, e))?;
            batch.push(incoming(record, request));
        }
        let recorded = store::record(&self.pool, &batch)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        for (channel, n) in recorded {
            self.metrics
                .recorded
                .with_label_values(&[channel.as_str()])
                .inc_by(n);
        }
        Ok(())
    }
}
