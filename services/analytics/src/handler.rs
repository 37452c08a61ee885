//! The analytics handler: decode a partition's batch, then de-duplicate and aggregate it — all in the consumer's
//! transaction (mode b), in a handful of statements whatever the batch size.
//!
//! Guarantees: every record of the batch is decoded first (one that does not decode fails the batch at its index
//! as a schema error: DLQ); then [`aggregate_batch`] records the batch's event ids in `processed_events`
//! ([`crate::aggregate::first_times`], the batch form of [`runtime::idempotency::first_time`]) and adds the
//! first sight of each to the aggregates. Those writes and the consumer's offset commit together or not at all,
//! so each event counts exactly once however often it is delivered or published. An aggregate that needs an
//! unseen invoice fails the batch at that record as a business error (the spec's 2 retries, 10 s apart, then
//! the DLQ; the runtime applies the rest of the batch without it). Without the runtime's transaction (a guarantee
//! other than `exactly_once_db`) nothing is written: an infrastructure error, so consumption pauses rather than
//! dead-letters.

use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};

use crate::aggregate::{Outcome, Shard, aggregate_batch};
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

    fn record(&self, input: &Input, outcome: Outcome) {
        let event_type = input.event_type();
        let outcome = match outcome {
            Outcome::Aggregated => "aggregated",
            Outcome::Duplicate => "duplicate",
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

impl BatchHandler for Aggregator {
    /// Yes: a lane writes only rows no other lane writes — aggregates keyed by its own topic and partition,
    /// invoices whose events all come through its partition (keyed by invoice), `processed_events` by event id —
    /// in sorted order within a batch, and appends nothing to the outbox; so holding them across units makes no
    /// other transaction wait, and none can deadlock with it (decision 0056).
    fn shares_transactions(&self) -> bool {
        true
    }

    async fn handle_batch(
        &self,
        records: &[Record],
        ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let inputs = records
            .iter()
            .enumerate()
            .map(|(i, record)| record.decode_with(decode).map_err(|e| BatchError::at(i, e)))
            .collect::<Result<Vec<Input>, _>>()?;
        let group = ctx.group().to_string();
        let db = ctx.db().ok_or_else(|| {
            BatchError::unknown(HandlerError::infrastructure(
                "analytics aggregates exactly-once into the database and got no transaction: the group's \
                 guarantee must be exactly_once_db",
            ))
        })?;
        let mut outcomes = Vec::with_capacity(inputs.len());
        // A batch is one partition's, so one shard; should it ever mix partitions, each run is its own shard.
        let mut start = 0;
        while start < records.len() {
            let shard = Shard {
                topic: records[start].topic.to_string(),
                partition: records[start].partition,
            };
            let end = records[start..]
                .iter()
                .position(|r| *r.topic != *shard.topic || r.partition != shard.partition)
                .map_or(records.len(), |n| start + n);
            let run = aggregate_batch(db, &group, &shard, &inputs[start..end])
                .await
                .map_err(|mut failure| {
                    failure.index = failure.index.map(|i| start + i);
                    BatchError::from(failure)
                })?;
            outcomes.extend(run);
            start = end;
        }
        for (input, outcome) in inputs.iter().zip(outcomes) {
            self.metrics.record(input, outcome);
        }
        Ok(())
    }
}
