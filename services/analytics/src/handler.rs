//! The analytics handler: decode, de-duplicate, aggregate — all in the consumer's transaction (mode b).
//!
//! Guarantees: the record's writes, its `processed_events` entry ([`runtime::idempotency`]) and the consumer's
//! offset commit together or not at all, so each event counts exactly once however often it is delivered or
//! published. Undecodable records are schema errors (DLQ); an aggregate that needs an unseen invoice is a
//! business error (the spec's 2 retries, 10 s apart, then the DLQ).

use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{Handler, HandlerCtx, HandlerError, Record};

use crate::aggregate::{Shard, aggregate};
use crate::checkout_events::{Input, decode};

/// Aggregated and duplicate records by type.
#[derive(Clone)]
pub struct AnalyticsMetrics {
    events: IntCounterVec,
}

impl AnalyticsMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "analytics_events_total",
                "Events the daily aggregates took in, by type and outcome (aggregated | duplicate).",
            ),
            &["event_type", "outcome"],
        )?;
        registry.register(Box::new(events.clone()))?;
        Ok(AnalyticsMetrics { events })
    }

    fn record(&self, input: &Input, outcome: &'static str) {
        let event_type = match input {
            Input::Domain(e) => e.event_type().as_str(),
            Input::CheckoutViewed(_) => crate::checkout_events::CHECKOUT_VIEWED,
        };
        self.events.with_label_values(&[event_type, outcome]).inc();
    }
}

/// The analytics-aggregation handler.
pub struct Aggregator {
    metrics: AnalyticsMetrics,
}

impl Aggregator {
    pub fn new(metrics: AnalyticsMetrics) -> Self {
        Aggregator { metrics }
    }
}

impl Handler for Aggregator {
    async fn handle(&self, record: &Record, ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let input = record.decode_with(decode)?;
        let group = ctx.group().to_string();
        let db = ctx.db().ok_or_else(|| {
            HandlerError::business("analytics aggregates exactly-once into the database: the group's guarantee must be exactly_once_db")
        })?;
        let first =
            runtime::idempotency::first_time(db, &group, input.event_id().as_uuid()).await?;
        if !first {
            self.metrics.record(&input, "duplicate");
            return Ok(());
        }
        let shard = Shard {
            topic: record.topic.to_string(),
            partition: record.partition,
        };
        aggregate(db, &shard, &input).await?;
        self.metrics.record(&input, "aggregated");
        Ok(())
    }
}
