//! The webhook metrics (rendered on `/metrics`); names and labels are documented here and in the README.
//!
//! - `webhook_fanout_deliveries_total{status}`: deliveries recorded by the consumer (`pending`, or
//!   `endpoint_disabled` when recorded as failed because the endpoint is disabled);
//! - `webhook_attempts_total{status_class}`: attempts by outcome: `2xx`, `3xx` (redirects are not followed),
//!   `4xx`, `5xx`, `timeout`, `connect`, `refused` (the SSRF guard), `error`;
//! - `webhook_attempt_duration_seconds`: one attempt, connection to the response's first KiB;
//! - `webhook_deliveries_total{outcome}`: deliveries finished: `delivered`, `failed` (after the last retry:
//!   dead-lettered), `gone` (410: endpoint disabled);
//! - `webhook_event_to_delivered_seconds`: from the event's Kafka timestamp to its delivery's 2xx;
//! - `webhook_endpoints_disabled_total{reason}`: `gone` or `failing` (the auto-disable rule);
//! - `webhook_oldest_pending_delivery_seconds`: age of the oldest pending delivery (all replicas; refreshed every
//!   few seconds by each).

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// The consumer's metrics.
#[derive(Clone)]
pub struct FanOutMetrics {
    pub recorded: IntCounterVec,
}

impl FanOutMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let recorded = IntCounterVec::new(
            Opts::new(
                "webhook_fanout_deliveries_total",
                "Webhook deliveries recorded by the consumer, by status (pending | endpoint_disabled).",
            ),
            &["status"],
        )?;
        registry.register(Box::new(recorded.clone()))?;
        for s in ["pending", "endpoint_disabled"] {
            recorded.with_label_values(&[s]);
        }
        Ok(FanOutMetrics { recorded })
    }
}

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct DispatchMetrics {
    pub attempts: IntCounterVec,
    pub attempt_duration: Histogram,
    pub deliveries: IntCounterVec,
    pub event_to_delivered: Histogram,
    pub endpoints_disabled: IntCounterVec,
    pub oldest_pending: Gauge,
}

/// Every status class of `webhook_attempts_total`.
pub const STATUS_CLASSES: [&str; 8] = [
    "2xx", "3xx", "4xx", "5xx", "timeout", "connect", "refused", "error",
];

impl DispatchMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "webhook_attempts_total",
                "Webhook delivery attempts by status class (2xx | 3xx | 4xx | 5xx | timeout | connect | refused | \
                 error).",
            ),
            &["status_class"],
        )?;
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_attempt_duration_seconds",
                "One webhook attempt: connection to the first KiB of the response (or the error).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ]),
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook deliveries finished by outcome (delivered | failed | gone).",
            ),
            &["outcome"],
        )?;
        let event_to_delivered = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_event_to_delivered_seconds",
                "From the event's Kafka timestamp to its webhook's 2xx answer.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )?;
        let endpoints_disabled = IntCounterVec::new(
            Opts::new(
                "webhook_endpoints_disabled_total",
                "Endpoints disabled by the dispatcher, by reason (gone | failing).",
            ),
            &["reason"],
        )?;
        let oldest_pending = Gauge::new(
            "webhook_oldest_pending_delivery_seconds",
            "Age of the oldest pending webhook delivery (0 when none is pending).",
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(event_to_delivered.clone()))?;
        registry.register(Box::new(endpoints_disabled.clone()))?;
        registry.register(Box::new(oldest_pending.clone()))?;
        for c in STATUS_CLASSES {
            attempts.with_label_values(&[c]);
        }
        for o in ["delivered", "failed", "gone"] {
            deliveries.with_label_values(&[o]);
        }
        for r in ["gone", "failing"] {
            endpoints_disabled.with_label_values(&[r]);
        }
        Ok(DispatchMetrics {
            attempts,
            attempt_duration,
            deliveries,
            event_to_delivered,
            endpoints_disabled,
            oldest_pending,
        })
    }
}
