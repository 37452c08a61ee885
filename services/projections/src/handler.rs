//! The projections handler: decode, apply in a transaction of its own, commit.
//!
//! Guarantees: an event is applied at most once however often it is delivered (see [`crate::apply`]); the runtime
//! marks the record done only after the transaction committed (at-least-once); a record that cannot be decoded is
//! a schema error (straight to the DLQ), an event about an unknown aggregate a business error (the spec's 1 s,
//! 2 s, 4 s retries, then the DLQ), a lost database an infrastructure error (circuit breaker).

use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{Handler, HandlerCtx, HandlerError, Record};
use sqlx::PgPool;

use crate::apply::{Applied, apply};

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

impl Handler for Projector {
    async fn handle(&self, record: &Record, _ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let event = record.decode_with(events::decode)?;
        let mut tx = self.pool.begin().await?;
        let outcome = apply(&mut tx, &event).await?;
        tx.commit().await?;
        self.metrics.record(&event, outcome);
        Ok(())
    }
}
