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

use anyhow::Context;
use runtime::policy::AUDIT_LOGGING;
use runtime::service::Ops;
use runtime::{GroupPolicy, RuntimeError};
use serde::{Deserialize, Serialize};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};

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

impl AuditSettings {
    /// The audit-logging policy with the configured overrides, validated.
    pub fn policy(&self) -> Result<GroupPolicy, RuntimeError> {
        self.consumer.policy(AUDIT_LOGGING)
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
    let metrics = handler::AuditMetrics::register(&ops.registry).context("registering metrics")?;
    let consumer = ops
        .consumer(
            policy,
            config.kafka.clone(),
            config.service.consumer.options.clone(),
        )
        .handler(handler::Auditor::new(pool, metrics))
        .build()
        .context("building the consumer")?;
    Ok(ops.run(SERVICE, consumer, shutdown))
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
