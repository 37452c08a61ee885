//! The consumer's Prometheus metrics, registered once into the service's registry.
//!
//! Guarantees: every metric has a fixed label set — `group`, `topic`, and `partition` where it matters
//! (consumption and lag), `error_class` for failures — so dashboards and alerts (the spec's "Monitoring &
//! Alerting": throughput, end-to-end latency p95, lag per group, error rate, DLQ volume) never chase drifting
//! labels. Names start with `checkout_consumer_`. Lag gauges of revoked partitions are removed, so a partition
//! is reported by the one consumer that owns it.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::error::ErrorClass;

/// Every metric of one consumer instance.
#[derive(Clone)]
pub struct Metrics {
    group: String,
    /// Records handed to a partition lane. {group, topic, partition}
    pub consumed: IntCounterVec,
    /// Records whose processing is done and durable (success). {group, topic}
    pub processed: IntCounterVec,
    /// Failed attempts. {group, topic, error_class}
    pub failures: IntCounterVec,
    /// Retries scheduled. {group, topic, error_class}
    pub retried: IntCounterVec,
    /// Records written to the DLQ. {group, topic, error_class}
    pub dead_lettered: IntCounterVec,
    /// Duration of one handler call. {group, topic}
    pub processing_seconds: HistogramVec,
    /// Now minus the event's timestamp, when its processing is done. {group, topic}
    pub end_to_end_latency_seconds: HistogramVec,
    /// High watermark minus the next offset to process. {group, topic, partition}
    pub lag_messages: IntGaugeVec,
    /// 0 closed, 1 half-open, 2 open. {group}
    pub circuit_breaker_state: IntGaugeVec,
    /// Rebalance callbacks. {group, kind = assign|revoke|lost}
    pub rebalances: IntCounterVec,
    /// Partitions currently assigned. {group}
    pub assigned_partitions: IntGaugeVec,
    /// Partitions paused because their lane is behind (backpressure). {group}
    pub pauses: IntCounterVec,
    /// Offset commits. {group, kind = kafka|transaction|database, result = ok|error}
    pub commits: IntCounterVec,
    /// Pipeline rebuilds (producer and consumer re-created after a transactional failure). {group}
    pub restarts: IntCounterVec,
    /// Writes refused for a reason that does not pass by itself (e.g. a missing DLQ topic): the partition
    /// waits and tries again, the others go on. {group, topic}
    pub stalls: IntCounterVec,
    /// Records per unit of work (one handler call and its commit). {group, topic}
    pub unit_records: HistogramVec,
}

/// The children a lane updates on every record, resolved once.
#[derive(Clone)]
pub(crate) struct LaneMetrics {
    pub processed: IntCounter,
    pub processing: Histogram,
    pub latency: Histogram,
    pub unit_records: Histogram,
    pub stalls: IntCounter,
    metrics: Metrics,
    topic: String,
}

impl LaneMetrics {
    pub fn failure(&self, class: ErrorClass) {
        self.metrics
            .failures
            .with_label_values(&[&self.metrics.group, &self.topic, class.as_str()])
            .inc();
    }
    pub fn retried(&self, class: ErrorClass) {
        self.metrics
            .retried
            .with_label_values(&[&self.metrics.group, &self.topic, class.as_str()])
            .inc();
    }
    pub fn dead_lettered(&self, class: ErrorClass) {
        self.metrics
            .dead_lettered
            .with_label_values(&[&self.metrics.group, &self.topic, class.as_str()])
            .inc();
    }
}

const PREFIX: &str = "checkout_consumer_";

impl Metrics {
    /// Creates and registers every metric into `registry`.
    pub fn register(registry: &Registry, group: &str) -> Result<Metrics, prometheus::Error> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let histogram = |name: &str,
                         help: &str,
                         buckets: Vec<f64>|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(format!("{PREFIX}{name}"), help).buckets(buckets),
                &["group", "topic"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let gtp = &["group", "topic", "partition"];
        let gtc = &["group", "topic", "error_class"];
        let metrics = Metrics {
            group: group.to_string(),
            consumed: counter(
                "records_consumed_total",
                "Records handed to a partition lane.",
                gtp,
            )?,
            processed: counter(
                "records_processed_total",
                "Records processed successfully and durably.",
                &["group", "topic"],
            )?,
            failures: counter(
                "record_failures_total",
                "Failed handler attempts, by error class.",
                gtc,
            )?,
            retried: counter(
                "records_retried_total",
                "Retries scheduled, by error class.",
                gtc,
            )?,
            dead_lettered: counter(
                "records_dead_lettered_total",
                "Records written to the DLQ, by error class.",
                gtc,
            )?,
            processing_seconds: histogram(
                "processing_seconds",
                "Duration of one handler call (one record, or one batch).",
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                    60.0,
                ],
            )?,
            end_to_end_latency_seconds: histogram(
                "end_to_end_latency_seconds",
                "Time from the event's timestamp to the end of its processing.",
                vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ],
            )?,
            lag_messages: gauge(
                "lag_messages",
                "High watermark minus the next offset to process.",
                gtp,
            )?,
            circuit_breaker_state: gauge(
                "circuit_breaker_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                &["group"],
            )?,
            rebalances: counter(
                "rebalances_total",
                "Rebalance callbacks by kind (assign, revoke, lost).",
                &["group", "kind"],
            )?,
            assigned_partitions: gauge(
                "assigned_partitions",
                "Partitions currently assigned.",
                &["group"],
            )?,
            pauses: counter(
                "partition_pauses_total",
                "Partitions paused because their lane is behind (backpressure).",
                &["group"],
            )?,
            commits: counter(
                "offset_commits_total",
                "Offset commits by kind and result.",
                &["group", "kind", "result"],
            )?,
            restarts: counter(
                "pipeline_restarts_total",
                "Consumer and producer re-created after a transactional failure.",
                &["group"],
            )?,
            stalls: counter(
                "partition_stalls_total",
                "Writes refused for a reason that does not pass by itself (e.g. a missing topic); the partition waits and tries again.",
                &["group", "topic"],
            )?,
            unit_records: histogram(
                "unit_records",
                "Records per unit of work (one handler call and its commit).",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            )?,
        };
        // Publish the fixed label sets at zero so alerts see them before the first event.
        metrics
            .circuit_breaker_state
            .with_label_values(&[group])
            .set(0);
        metrics
            .assigned_partitions
            .with_label_values(&[group])
            .set(0);
        metrics.restarts.with_label_values(&[group]);
        metrics.pauses.with_label_values(&[group]);
        Ok(metrics)
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn lane(&self, topic: &str) -> LaneMetrics {
        let gt = [self.group.as_str(), topic];
        for class in ErrorClass::ALL {
            let gtc = [self.group.as_str(), topic, class.as_str()];
            self.failures.with_label_values(&gtc);
            self.dead_lettered.with_label_values(&gtc);
        }
        LaneMetrics {
            processed: self.processed.with_label_values(&gt),
            processing: self.processing_seconds.with_label_values(&gt),
            latency: self.end_to_end_latency_seconds.with_label_values(&gt),
            unit_records: self.unit_records.with_label_values(&gt),
            stalls: self.stalls.with_label_values(&gt),
            metrics: self.clone(),
            topic: topic.to_string(),
        }
    }

    pub(crate) fn consumed(&self, topic: &str, partition: i32) -> IntCounter {
        self.consumed
            .with_label_values(&[&self.group, topic, &partition.to_string()])
    }

    pub(crate) fn lag(&self, topic: &str, partition: i32) -> IntGauge {
        self.lag_messages
            .with_label_values(&[&self.group, topic, &partition.to_string()])
    }

    pub(crate) fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let _ = self
            .lag_messages
            .remove_label_values(&[&self.group, topic, &p]);
    }

    pub(crate) fn rebalance(&self, kind: &str) {
        self.rebalances
            .with_label_values(&[&self.group, kind])
            .inc();
    }

    pub(crate) fn commit(&self, kind: &str, ok: bool) {
        self.commits
            .with_label_values(&[self.group.as_str(), kind, if ok { "ok" } else { "error" }])
            .inc();
    }
}
