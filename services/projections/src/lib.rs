//! `projections`: the read-model-projections consumer group — the runtime, this crate's handler, and the group's
//! policy from the spec (at-least-once, batch 500, 3 retries at 1 s / 2 s / 4 s, then the DLQ).
//!
//! Guarantees: read models of invoices (status lifecycle with partial, over- and late payment, amounts,
//! confirmations), payments, merchants (status, settings), settlements (gross, fee, net, status) and merchant
//! balances in PostgreSQL, each row keyed by its aggregate and stamped with the last event applied; applying is
//! idempotent (a redelivered or re-published event changes nothing) and every row has a single writer at a
//! time, so the state after any number of crashes and redeliveries is the state of applying each event once
//! (decision 0009). [`rebuild`] replays the topic into fresh tables and swaps them in atomically.
//!
//! Layout: [`apply`] (event → SQL), [`handler`] (the runtime's [`runtime::Handler`]), [`query`] (what
//! `checkoutctl invoice|merchant show` read), [`rebuild`]; this file is the service: settings and [`start`].

pub mod apply;
pub mod handler;
pub mod query;
pub mod rebuild;

use anyhow::Context;
use runtime::policy::READ_MODEL_PROJECTIONS;
use runtime::service::Ops;
use runtime::{GroupPolicy, RuntimeError};
use serde::{Deserialize, Serialize};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};

pub use apply::{Applied, ApplyError, apply};

/// The binary's name and its row in the services table (operations port 9102).
pub const SERVICE: &str = "projections";

/// The service's configuration: the common sections plus [`ProjectionsSettings`] under `service`.
pub type Config = Settings<ProjectionsSettings>;

/// `[service]`: the consumer's policy overrides and operational options.
///
/// ```toml
/// [service.consumer.policy]        # overrides of the spec's read-model-projections policy (optional)
/// topics = ["crypto-checkout.domain-events"]
/// [service.consumer.options]       # runtime options (optional)
/// instance_id = "projections-0"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionsSettings {
    pub consumer: ConsumerSettings,
}

impl ProjectionsSettings {
    /// The spec's read-model-projections policy with the configured overrides, validated.
    pub fn policy(&self) -> Result<GroupPolicy, RuntimeError> {
        self.consumer.policy(READ_MODEL_PROJECTIONS)
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
        handler::ProjectorMetrics::register(&ops.registry).context("registering metrics")?;
    let consumer = ops
        .consumer(
            policy,
            config.kafka.clone(),
            config.service.consumer.options.clone(),
        )
        .handler(handler::Projector::new(pool, metrics))
        .build()
        .context("building the consumer")?;
    Ok(ops.run(SERVICE, consumer, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_specs_read_model_projections_row() {
        let policy = ProjectionsSettings::default().policy().unwrap();
        assert_eq!(policy.group, "read-model-projections");
        assert_eq!(policy.topics, [events::topics::DOMAIN_EVENTS]);
        assert_eq!(policy.guarantee, runtime::Guarantee::AtLeastOnce);
        assert_eq!(
            policy.retry.schedule(),
            [1, 2, 4].map(std::time::Duration::from_secs)
        );
    }

    #[test]
    fn overrides_come_from_the_service_section() {
        let settings: ProjectionsSettings = serde_json::from_value(serde_json::json!({
            "consumer": { "policy": { "group": "rm-blue", "topics": ["t"] },
                          "options": { "instance_id": "p-0" } }
        }))
        .unwrap();
        let policy = settings.policy().unwrap();
        assert_eq!(
            (policy.group.as_str(), policy.topics.as_slice()),
            ("rm-blue", &["t".to_string()][..])
        );
        assert_eq!(policy.batch_size, 500);
        let typo =
            serde_json::from_value::<ProjectionsSettings>(serde_json::json!({ "consumr": {} }));
        assert!(typo.is_err());
    }
}
