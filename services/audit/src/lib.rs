//! `audit`: the audit-logging consumer group — the runtime, this crate's handler, and the group's policy
//! (at-least-once; decision 0007's 20 retries 15 s apart before the DLQ: a compliance log does not skip lightly).
//!
//! Guarantees: every domain event is appended once to `audit_log` with its actor, IP address, user agent and
//! request id from the metadata (duplicates ignored by event id); the log is a SHA-256 hash chain, so a deleted,
//! modified or reordered row is detected by [`verify::verify`] (`checkoutctl audit verify`), and the database
//! refuses UPDATE, DELETE and TRUNCATE on it (decision 0010).
//!
//! The handler is batch-native ([`runtime::BatchHandler`]): a partition's batch (up to 500 records) is appended
//! with one statement under one take of the appenders' lock (`audit_append_batch`), whatever its size.
//!
//! Layout: [`chain`] (rows, canonical encoding, hashes), [`handler`] (batch append), [`verify`]; this file is the
//! service.

pub mod chain;
pub mod handler;
pub mod verify;

use runtime::service::{ConsumerOnly, ConsumerService, ServiceContext};

/// The audit-logging service (operations port 9106).
pub struct Audit;

impl ConsumerService for Audit {
    const NAME: &'static str = "audit";
    const GROUP: &'static str = runtime::policy::AUDIT_LOGGING;
    const ABOUT: &'static str = "Appends every domain event of crypto-checkout.domain-events once to the \
        tamper-evident audit log (a SHA-256 hash chain in PostgreSQL), with its actor, IP address, user agent and \
        request id. Verify it with `checkoutctl audit verify`.";
    type Settings = ConsumerOnly;
    type Handler = runtime::Batched<handler::Auditor>;

    async fn handler(ctx: ServiceContext<'_, ConsumerOnly>) -> anyhow::Result<Self::Handler> {
        let metrics = handler::AuditMetrics::register(ctx.registry)?;
        Ok(runtime::Batched(handler::Auditor::new(
            ctx.pool.clone(),
            metrics,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_audit_logging_group() {
        let policy = runtime::service::policy::<Audit>(&ConsumerOnly::default()).unwrap();
        assert_eq!(policy.group, "audit-logging");
        assert_eq!(policy.topics, [events::topics::DOMAIN_EVENTS]);
        assert_eq!(policy.guarantee, runtime::Guarantee::AtLeastOnce);
    }
}
