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

use std::net::SocketAddr;

use anyhow::Context;
use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS};
use runtime::{Consumer, ConsumerOptions, GroupPolicy, RuntimeError};
use serde::{Deserialize, Serialize};
use service_kit::ops::{OpsServer, Readiness};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};
use tokio::task::JoinHandle;

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

/// The group is fixed by the service (read-model-projections); `policy.group` only renames it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    pub policy: PolicyOverrides,
    pub options: ConsumerOptions,
}

impl ProjectionsSettings {
    /// The spec's read-model-projections policy with the configured overrides, validated.
    pub fn policy(&self) -> Result<GroupPolicy, RuntimeError> {
        let policy = GroupPolicy::resolve(READ_MODEL_PROJECTIONS, &self.consumer.policy)?;
        self.consumer.options.validate(&policy)?;
        Ok(policy)
    }
}

/// A started service.
pub struct Running {
    pub ops_addr: SocketAddr,
    pub registry: prometheus::Registry,
    pub readiness: Readiness,
    consumer: JoinHandle<Result<(), RuntimeError>>,
    ops: OpsServer,
}

/// Binds the operations server, connects to PostgreSQL and starts consuming until `shutdown`.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let policy = config.service.policy().context("invalid consumer policy")?;
    let registry = prometheus::Registry::new();
    let readiness = Readiness::default();
    let ops = OpsServer::start(
        config.http.listen,
        registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let pool = db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    let metrics = handler::ProjectorMetrics::register(&registry).context("registering metrics")?;
    let consumer = Consumer::builder(policy.clone(), config.kafka.clone())
        .handler(handler::Projector::new(pool, metrics))
        .registry(&registry)
        .readiness(readiness.clone())
        .options(config.service.consumer.options.clone())
        .build()
        .context("building the consumer")?;
    tracing::info!(ops = %ops.addr, group = %policy.group, topics = ?policy.topics, "{SERVICE} started");
    let consumer = tokio::spawn(consumer.run(shutdown));
    Ok(Running {
        ops_addr: ops.addr,
        registry,
        readiness,
        consumer,
        ops,
    })
}

impl Running {
    /// Waits for the consumer to stop (after the shutdown token fired) and the operations server to close.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.consumer.await.context("consumer task panicked")?;
        let _ = self.ops.task.await;
        result.context("the consumer failed")
    }
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
