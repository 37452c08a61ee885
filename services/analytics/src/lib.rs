//! `analytics`: the analytics-aggregation consumer group — the runtime in exactly-once mode (b), this crate's
//! handler, and the group's policy from the spec (domain-events and analytics-events, batch 1000, 2 retries
//! 10 s apart, then the DLQ).
//!
//! Guarantees: per merchant and UTC day — invoices created, paid, expired, cancelled; the day's conversion
//! cohort; checkout views; gross volume per currency; fees and net settled; median and p95 time from
//! `InvoiceCreated` to `PaymentConfirmed` — each event counted exactly once: the aggregates, the event-id
//! de-duplication and the consumer's offsets commit in one PostgreSQL transaction (decision 0011).
//!
//! The handler is batch-native ([`runtime::BatchHandler`]): a partition's batch (up to 1000 records) costs at most
//! six statements in the consumer's transaction — event-id de-duplication, the invoice rows it needs, and one
//! multi-row upsert per aggregate table — with the aggregation itself a pure fold in Rust.
//!
//! Layout: [`checkout_events`] (the analytics-events contract and decoding), [`aggregate`] (batch → deltas →
//! SQL), [`handler`], [`query`] (what `checkoutctl analytics daily` reads); this file is the service.

pub mod aggregate;
pub mod checkout_events;
pub mod handler;
pub mod query;

use runtime::service::{ConsumerOnly, ConsumerService, ServiceContext};
use runtime::{GroupPolicy, Guarantee};

/// The analytics-aggregation service (operations port 9105).
pub struct Analytics;

impl ConsumerService for Analytics {
    const NAME: &'static str = "analytics";
    const GROUP: &'static str = runtime::policy::ANALYTICS_AGGREGATION;
    const ABOUT: &'static str = "Aggregates crypto-checkout.domain-events and crypto-checkout.analytics-events \
        into per-merchant, per-UTC-day analytics in PostgreSQL (exactly-once: the aggregates and the consumer's \
        offsets commit in one database transaction). Read them with `checkoutctl analytics daily`.";
    type Settings = ConsumerOnly;
    type Handler = runtime::Batched<handler::Aggregator>;

    async fn handler(ctx: ServiceContext<'_, ConsumerOnly>) -> anyhow::Result<Self::Handler> {
        Ok(runtime::Batched(handler::Aggregator::new(
            handler::AnalyticsMetrics::register(ctx.registry)?,
        )))
    }

    /// The aggregates are only exactly-once in mode (b).
    fn check_policy(policy: &GroupPolicy) -> Result<(), String> {
        match policy.guarantee {
            Guarantee::ExactlyOnceDb => Ok(()),
            other => Err(format!(
                "analytics aggregates exactly-once into PostgreSQL: the guarantee must be exactly_once_db, not {}",
                other.as_str()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_specs_analytics_aggregation_row() {
        let policy = runtime::service::policy::<Analytics>(&ConsumerOnly::default()).unwrap();
        assert_eq!(policy.group, "analytics-aggregation");
        assert_eq!(
            policy.topics,
            [
                events::topics::DOMAIN_EVENTS,
                events::topics::ANALYTICS_EVENTS
            ]
        );
        assert_eq!(policy.guarantee, Guarantee::ExactlyOnceDb);
        assert_eq!(
            policy.retry.schedule(),
            [std::time::Duration::from_secs(10); 2]
        );
    }

    #[test]
    fn a_weaker_guarantee_is_refused() {
        let mut settings = ConsumerOnly::default();
        settings.consumer.policy.guarantee = Some(Guarantee::AtLeastOnce);
        let err = runtime::service::policy::<Analytics>(&settings).unwrap_err();
        assert!(format!("{err:#}").contains("exactly_once_db"), "{err:#}");
    }
}
