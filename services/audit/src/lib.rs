//! `audit`: the audit-logging consumer group — the runtime, this crate's handler, and the group's policy
//! (at-least-once; decision 0007's 20 retries 15 s apart before the DLQ: a compliance log does not skip lightly).
//!
//! Guarantees: every domain event is appended once to `audit_log` with its actor, IP address, user agent and
//! request id from the metadata (duplicates ignored by event id); the log is a SHA-256 hash chain, so a deleted,
//! modified or reordered row is detected by [`verify::verify`] (`checkoutctl audit verify`), and the database
//! refuses UPDATE, DELETE and TRUNCATE on it (decision 0010).
//!
//! Layout: [`chain`] (rows, canonical encoding, hashes), [`handler`] (append), [`verify`]; this file is the
//! service: settings and [`start`].

pub mod chain;
pub mod handler;
pub mod verify;

use std::net::SocketAddr;

use anyhow::Context;
use runtime::policy::{AUDIT_LOGGING, PolicyOverrides};
use runtime::{Consumer, ConsumerOptions, GroupPolicy, RuntimeError};
use serde::{Deserialize, Serialize};
use service_kit::ops::{OpsServer, Readiness};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};
use tokio::task::JoinHandle;

/// The binary's name and its row in the services table (operations port 9106).
pub const SERVICE: &str = "audit";

/// The service's configuration: the common sections plus [`AuditSettings`] under `service`.
pub type Config = Settings<AuditSettings>;

/// `[service]`: the consumer's policy overrides (`[service.consumer.policy]`) and runtime options
/// (`[service.consumer.options]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub consumer: ConsumerSettings,
}

/// The group is fixed by the service (audit-logging); `policy.group` only renames it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    pub policy: PolicyOverrides,
    pub options: ConsumerOptions,
}

impl AuditSettings {
    /// The audit-logging policy with the configured overrides, validated.
    pub fn policy(&self) -> Result<GroupPolicy, RuntimeError> {
        let policy = GroupPolicy::resolve(AUDIT_LOGGING, &self.consumer.policy)?;
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
    let metrics = handler::AuditMetrics::register(&registry).context("registering metrics")?;
    let consumer = Consumer::builder(policy.clone(), config.kafka.clone())
        .handler(handler::Auditor::new(pool, metrics))
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
    fn the_default_policy_is_the_audit_logging_group() {
        let policy = AuditSettings::default().policy().unwrap();
        assert_eq!(policy.group, "audit-logging");
        assert_eq!(policy.topics, [events::topics::DOMAIN_EVENTS]);
        assert_eq!(policy.guarantee, runtime::Guarantee::AtLeastOnce);
    }
}
