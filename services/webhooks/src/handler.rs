//! The webhook-delivery consumer: a partition's batch → its deliveries recorded, then the offsets committed.
//!
//! Guarantees: on `Ok` every event of the batch that some live endpoint of its merchant subscribes to has one
//! delivery per such endpoint in `webhook_deliveries` (committed), so the runtime may commit the offsets; recording
//! the same batch again (a redelivery after a crash or a rebalance) adds nothing. A record that does not decode is a
//! schema error at its index (dead-lettered at once); a database failure fails the whole batch (nothing recorded)
//! and is classified by the runtime.

use chrono::Utc;
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};
use sqlx::PgPool;

use crate::metrics::FanOutMetrics;
use crate::store::{self, Incoming, StoredRecord};

/// The consumer's handler.
pub struct FanOut {
    pool: PgPool,
    metrics: FanOutMetrics,
}

impl FanOut {
    pub fn new(pool: PgPool, metrics: FanOutMetrics) -> Self {
        FanOut { pool, metrics }
    }
}

/// What is kept of `record` (whose decoded event is `event`).
pub fn incoming(record: &Record, event: &events::Envelope) -> Incoming {
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
        event_id: event.event_id().as_uuid(),
        merchant_id: event.merchant_id().as_uuid(),
        webhook_type: crate::body::webhook_type(event.event_type()),
        occurred_at: event.timestamp().with_timezone(&Utc),
        order_key: record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_else(|| event.partition_key()),
        record: StoredRecord {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone().unwrap_or_default(),
            headers: serde_json::Value::Array(headers),
        },
    }
}

impl BatchHandler for FanOut {
    async fn handle_batch(
        &self,
        records: &[Record],
        _ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let mut batch = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let event = record.decode_event().map_err(|e| BatchError::at(i, e))?;
            batch.push(incoming(record, &event));
        }
        let recorded = store::fan_out(&self.pool, &batch)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        self.metrics
            .recorded
            .with_label_values(&["pending"])
            .inc_by(recorded.pending);
        self.metrics
            .recorded
            .with_label_values(&["endpoint_disabled"])
            .inc_by(recorded.to_disabled);
        if recorded.pending > 0 {
            crate::dispatch::recorded();
        }
        Ok(())
    }
}
