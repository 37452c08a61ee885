//! `analytics`: the analytics-aggregation consumer group — the runtime in exactly-once mode (b), this crate's
//! handler, and the group's policy from the spec (domain-events and analytics-events, batch 1000, 2 retries
//! 10 s apart, then the DLQ).
//!
//! Guarantees: per merchant and UTC day — invoices created, paid, expired, cancelled; the day's conversion
//! cohort; checkout views; gross volume per currency; fees and net settled; median and p95 time from
//! `InvoiceCreated` to `PaymentConfirmed` — each event counted exactly once: the aggregates, the event-id
//! de-duplication and the consumer's offsets commit in one PostgreSQL transaction (decision 0011).
//!
//! Layout: [`checkout_events`] (the analytics-events contract and decoding), [`aggregate`] (event → SQL),
//! [`handler`], [`query`] (what `checkoutctl analytics daily` reads); this file is the service.

pub mod aggregate;
pub mod checkout_events;
pub mod handler;
pub mod query;

use anyhow::Context;
use runtime::policy::ANALYTICS_AGGREGATION;
use runtime::service::Ops;
use runtime::{GroupPolicy, Guarantee, RuntimeError};
use serde::{Deserialize, Serialize};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};

/// The binary's name and its row in the services table (operations port 9105).
pub const SERVICE: &str = "analytics";

/// The service's configuration: the common sections plus [`AnalyticsSettings`] under `service`.
pub type Config = Settings<AnalyticsSettings>;

/// `[service]`: the consumer's policy overrides (`[service.consumer.policy]`) and runtime options
/// (`[service.consumer.options]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    pub consumer: ConsumerSettings,
}

impl AnalyticsSettings {
    /// The analytics-aggregation policy with the configured overrides, validated. The aggregates are only
    /// exactly-once in mode (b), so another guarantee is refused.
    pub fn policy(&self) -> Result<GroupPolicy, RuntimeError> {
        let policy = self.consumer.policy(ANALYTICS_AGGREGATION)?;
        if policy.guarantee != Guarantee::ExactlyOnceDb {
            return Err(RuntimeError::Config(format!(
                "analytics aggregates exactly-once into PostgreSQL: the guarantee must be exactly_once_db, not {}",
                policy.guarantee.as_str()
            )));
        }
        Ok(policy)
    }
}

/// A started service (see [`runtime::service`]).
pub use runtime::service::{ConsumerSettings, Running};

/// Binds the operations server, connects to PostgreSQL and starts consuming until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let policy = config.service.policy().context("invalid consumer policy")?;
    let ops = Ops::start(config.http.listen, shutdown.clone()).await?;
    let pool = db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    let metrics =
        handler::AnalyticsMetrics::register(&ops.registry).context("registering metrics")?;
    let consumer = ops
        .consumer(
            policy,
            config.kafka.clone(),
            config.service.consumer.options.clone(),
        )
        .handler(handler::Aggregator::new(metrics))
        .database(pool)
        .build()
        .context("building the consumer")?;
    Ok(ops.run(SERVICE, consumer, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_specs_analytics_aggregation_row() {
        let policy = AnalyticsSettings::default().policy().unwrap();
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
        let mut settings = AnalyticsSettings::default();
        settings.consumer.policy.guarantee = Some(Guarantee::AtLeastOnce);
        assert!(
            settings
                .policy()
                .unwrap_err()
                .to_string()
                .contains("exactly_once_db")
        );
    }
}
