//! The notification metrics (rendered on `/metrics`), every one per channel (`email`, `sms`, `webhook`):
//!
//! - `notification_requests_recorded_total{channel}`: new requests recorded by the consumer (duplicates are not
//!   counted);
//! - `notification_attempts_total{channel,outcome}`: attempts by outcome: `accepted`, `rejected` (the provider
//!   refused it for good: 4xx, SMTP 5yz), `failed` (5xx, SMTP 4yz, timeouts: retried), `unreachable` (no answer from
//!   the channel's provider: not an attempt, the channel's breaker opens), `invalid` (nothing to send: no
//!   destination on file, a template that does not render);
//! - `notification_sent_total{channel}`: notifications a provider accepted;
//! - `notification_failed_total{channel,reason}`: notifications dead-lettered, by reason: `rejected`,
//!   `retries_exhausted`, `no_destination`, `template`;
//! - `notification_send_seconds{channel}`: one attempt, connection to the provider's answer;
//! - `notification_sms_segments_total`: SMS segments sent (GSM-7: 160 characters, 153 per part of a long one;
//!   UCS-2: 70 / 67);
//! - `notification_channel_breaker_state{channel}`: 0 closed, 1 half-open (probing), 2 open (channel paused);
//! - `notification_pending{channel}`: rows waiting (all replicas; refreshed every few seconds).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The channel labels.
pub const CHANNELS: [&str; 3] = ["email", "sms", "webhook"];
/// Every `outcome` of `notification_attempts_total`.
pub const OUTCOMES: [&str; 5] = ["accepted", "rejected", "failed", "unreachable", "invalid"];
/// Every `reason` of `notification_failed_total`.
pub const REASONS: [&str; 4] = [
    "rejected",
    "retries_exhausted",
    "no_destination",
    "template",
];

/// The consumer's metrics.
#[derive(Clone)]
pub struct RecordMetrics {
    pub recorded: IntCounterVec,
}

impl RecordMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let recorded = IntCounterVec::new(
            Opts::new(
                "notification_requests_recorded_total",
                "New notification requests recorded by the consumer, by channel.",
            ),
            &["channel"],
        )?;
        registry.register(Box::new(recorded.clone()))?;
        for c in CHANNELS {
            recorded.with_label_values(&[c]);
        }
        Ok(RecordMetrics { recorded })
    }
}

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct DispatchMetrics {
    pub attempts: IntCounterVec,
    pub sent: IntCounterVec,
    pub failed: IntCounterVec,
    pub send_seconds: HistogramVec,
    pub sms_segments: IntCounter,
    pub breaker: IntGaugeVec,
    pub pending: IntGaugeVec,
}

impl DispatchMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "notification_attempts_total",
                "Notification attempts by channel and outcome (accepted | rejected | failed | unreachable | invalid).",
            ),
            &["channel", "outcome"],
        )?;
        let sent = IntCounterVec::new(
            Opts::new(
                "notification_sent_total",
                "Notifications a provider accepted, by channel.",
            ),
            &["channel"],
        )?;
        let failed = IntCounterVec::new(
            Opts::new(
                "notification_failed_total",
                "Notifications dead-lettered, by channel and reason (rejected | retries_exhausted | \
                 no_destination | template).",
            ),
            &["channel", "reason"],
        )?;
        let send_seconds = HistogramVec::new(
            HistogramOpts::new(
                "notification_send_seconds",
                "One notification attempt: connection to the provider's answer, by channel.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ]),
            &["channel"],
        )?;
        let sms_segments = IntCounter::new(
            "notification_sms_segments_total",
            "SMS segments sent (GSM-7 160/153 characters, UCS-2 70/67).",
        )?;
        let breaker = IntGaugeVec::new(
            Opts::new(
                "notification_channel_breaker_state",
                "Circuit breaker of each channel: 0 closed, 1 half-open, 2 open (the channel is paused).",
            ),
            &["channel"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "notification_pending",
                "Notifications waiting to be sent, by channel.",
            ),
            &["channel"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(send_seconds.clone()))?;
        registry.register(Box::new(sms_segments.clone()))?;
        registry.register(Box::new(breaker.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        for c in CHANNELS {
            for o in OUTCOMES {
                attempts.with_label_values(&[c, o]);
            }
            for r in REASONS {
                failed.with_label_values(&[c, r]);
            }
            sent.with_label_values(&[c]);
            send_seconds.with_label_values(&[c]);
            breaker.with_label_values(&[c]);
            pending.with_label_values(&[c]);
        }
        Ok(DispatchMetrics {
            attempts,
            sent,
            failed,
            send_seconds,
            sms_segments,
            breaker,
            pending,
        })
    }
}
