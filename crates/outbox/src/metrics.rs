//! The publisher's Prometheus metrics, registered once into the service's registry. Label sets are fixed:
//! `topic` on published counts, `kind` on errors.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub backlog_rows: IntGauge,
    pub oldest_unpublished_seconds: Gauge,
    pub quarantined_rows: IntGauge,
    pub blocked_rows: IntGauge,
    pub published: IntCounterVec,
    pub errors: IntCounterVec,
    pub batch_seconds: HistogramVec,
    pub commit_to_ack_seconds: HistogramVec,
    pub owned_buckets: IntGauge,
}

impl Metrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            backlog_rows: IntGauge::new(
                "outbox_backlog_rows",
                "Rows in the outbox not yet published: exact up to 1,000, above that an upper bound (the id span)",
            )?,
            oldest_unpublished_seconds: Gauge::new(
                "outbox_oldest_unpublished_seconds",
                "Age of the oldest unpublished outbox row",
            )?,
            quarantined_rows: IntGauge::new(
                "outbox_quarantined_rows",
                "Poison rows set aside, awaiting an operator",
            )?,
            blocked_rows: IntGauge::new(
                "outbox_blocked_rows",
                "Rows waiting behind a quarantined row of the same partition key",
            )?,
            published: IntCounterVec::new(
                Opts::new(
                    "outbox_published_total",
                    "Events acknowledged by the broker and removed from the outbox",
                ),
                &["topic"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("outbox_publish_errors_total", "Publishing failures by kind"),
                &["kind"],
            )?,
            batch_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "outbox_batch_publish_seconds",
                    "Time to produce a batch and receive every ack",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
                &["topic"],
            )?,
            commit_to_ack_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "outbox_commit_to_ack_seconds",
                    "From the row's insertion to the broker's acknowledgement",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
                &["topic"],
            )?,
            owned_buckets: IntGauge::new(
                "outbox_owned_buckets",
                "Key buckets this replica publishes",
            )?,
        };
        registry.register(Box::new(m.backlog_rows.clone()))?;
        registry.register(Box::new(m.oldest_unpublished_seconds.clone()))?;
        registry.register(Box::new(m.quarantined_rows.clone()))?;
        registry.register(Box::new(m.blocked_rows.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.commit_to_ack_seconds.clone()))?;
        registry.register(Box::new(m.owned_buckets.clone()))?;
        Ok(m)
    }
}
