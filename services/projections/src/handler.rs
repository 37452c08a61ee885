//! The projections handler: decode a partition's batch, apply it in a transaction of its own, commit.
//!
//! Guarantees: the batch is applied all or nothing by [`crate::apply::apply_batch`] (a handful of statements
//! per batch, advisory locks on its partition keys, duplicates recognised by event id), and the runtime marks
//! its records done only after the transaction committed (at-least-once). When the batch fails the handler names
//! the record to blame when it can — a record that cannot be decoded (a schema error: straight to the DLQ), an
//! event about an unknown aggregate (a business error: the spec's 1 s, 2 s, 4 s retries, then the DLQ) — and
//! otherwise (a database error) leaves it to the runtime to bisect; a lost database is an infrastructure error
//! (circuit breaker). `projections_events_total{event_type, outcome}` counts each event once, after the commit.

use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};
use sqlx::PgPool;

use crate::apply::{Applied, BatchFailed, apply_batch};

/// Counts applied and duplicate events by type; the log line and the metric come from one place.
#[derive(Clone)]
pub struct ProjectorMetrics {
    events: IntCounterVec,
}

impl ProjectorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "projections_events_total",
                "Domain events the read models took in, by type and outcome (applied | duplicate).",
            ),
            &["event_type", "outcome"],
        )?;
        registry.register(Box::new(events.clone()))?;
        Ok(ProjectorMetrics { events })
    }

    fn record(&self, event: &events::Envelope, outcome: Applied) {
        self.events
            .with_label_values(&[event.event_type().as_str(), outcome.as_str()])
            .inc();
        if outcome == Applied::Duplicate {
            tracing::debug!(event_id = %event.event_id(), event_type = %event.event_type(), "duplicate event ignored");
        }
    }
}

/// The read-model-projections handler.
pub struct Projector {
    pool: PgPool,
    metrics: ProjectorMetrics,
}

impl Projector {
    pub fn new(pool: PgPool, metrics: ProjectorMetrics) -> Self {
        Projector { pool, metrics }
    }
}

impl BatchHandler for Projector {
    async fn handle_batch(
        &self,
        records: &[Record],
        _ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        if records.is_empty() {
            return Ok(());
        }
        let events = records
            .iter()
            .enumerate()
            .map(|(i, record)| record.decode_event().map_err(|e| BatchError::at(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        let applied = match apply_batch(&mut tx, &events).await {
            Ok(applied) => applied,
            Err(BatchFailed { index, error }) => {
                // Dropping the transaction would roll it back too; say so explicitly, and ignore a failure to
                // (the connection is then discarded by the pool).
                let _ = tx.rollback().await;
                return Err(match index {
                    Some(i) => BatchError::at(i, error),
                    None => BatchError::unknown(error),
                });
            }
        };
        tx.commit()
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        for (event, outcome) in events.iter().zip(applied.outcomes) {
            self.metrics.record(event, outcome);
        }
        Ok(())
    }
}
