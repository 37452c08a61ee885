//! `projections`: the read-model-projections consumer group — the runtime, this crate's handler, and the group's
//! policy from the spec (at-least-once, batch 500, 3 retries at 1 s / 2 s / 4 s, then the DLQ).
//!
//! Guarantees: read models of invoices (status lifecycle with partial, over- and late payment, amounts,
//! confirmations), payments, merchants (status, settings), settlements (gross, fee, net, status) and merchant
//! balances in PostgreSQL, each row keyed by its aggregate and stamped with the last event applied. A
//! partition's batch is applied in one transaction with a handful of statements (all or nothing); applying is
//! idempotent (a redelivered or re-published event changes nothing) and every row has a single writer at a
//! time (advisory locks per partition key), so the state after any number of crashes, rebalances and
//! redeliveries is the state of applying each event once (decisions 0009, 0022). [`rebuild`] replays the topic
//! into fresh tables and swaps them in atomically.
//!
//! Layout: [`apply`] (a batch of events → a handful of statements), [`fold`] (the read models' rules as pure
//! functions over rows), [`handler`] (the runtime's batch handler), [`query`] (what `checkoutctl
//! invoice|merchant show` read), [`rebuild`]; this file is the service.

pub mod apply;
pub mod fold;
pub mod handler;
pub mod query;
pub mod rebuild;

use runtime::service::{ConsumerOnly, ConsumerService, ServiceContext};

pub use apply::{Applied, ApplyError, BatchApplied, BatchFailed, apply, apply_batch};

/// The read-model-projections service (operations port 9102).
pub struct Projections;

impl ConsumerService for Projections {
    const NAME: &'static str = "projections";
    const GROUP: &'static str = runtime::policy::READ_MODEL_PROJECTIONS;
    const ABOUT: &'static str = "Keeps the read models (invoices, payments, merchants, settlements, balances) up to \
        date from crypto-checkout.domain-events (at-least-once, idempotent). Read them with `checkoutctl invoice \
        show` and `checkoutctl merchant show`.";
    type Settings = ConsumerOnly;
    type Handler = runtime::Batched<handler::Projector>;

    async fn handler(ctx: ServiceContext<'_, ConsumerOnly>) -> anyhow::Result<Self::Handler> {
        let metrics = handler::ProjectorMetrics::register(ctx.registry)?;
        Ok(runtime::Batched(handler::Projector::new(
            ctx.pool.clone(),
            metrics,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_specs_read_model_projections_row() {
        let policy = runtime::service::policy::<Projections>(&ConsumerOnly::default()).unwrap();
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
        let settings: ConsumerOnly = serde_json::from_value(serde_json::json!({
            "consumer": { "policy": { "group": "rm-blue", "topics": ["t"] },
                          "options": { "instance_id": "p-0" } }
        }))
        .unwrap();
        let policy = runtime::service::policy::<Projections>(&settings).unwrap();
        assert_eq!(
            (policy.group.as_str(), policy.topics.as_slice()),
            ("rm-blue", &["t".to_string()][..])
        );
        assert_eq!(policy.batch_size, 500);
        let typo = serde_json::from_value::<ConsumerOnly>(serde_json::json!({ "consumr": {} }));
        assert!(typo.is_err());
    }
}
