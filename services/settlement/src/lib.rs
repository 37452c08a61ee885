//! `settlement`: the settlement-processing consumer group — the runtime in exactly-once mode (b), this crate's
//! rules, and the group's policy from the spec (batch 50, session 45 s, 10 retries 5 s apart, then the DLQ).
//!
//! Guarantees: every invoice that is paid and whose counted payments are all confirmed settles exactly once —
//! one `settlements` row, one `SettlementCreated` then one `SettlementCompleted` (or `SettlementFailed {
//! merchant_suspended }` until the merchant is reinstated), balanced double-entry ledger journals — whatever is
//! redelivered, re-published, replayed or killed, because state, ledger, emitted events (through the outbox) and
//! the consumer's position commit in one PostgreSQL transaction and every id is derived from the invoice
//! (decision 0027). Nothing else settles. Each completed or held settlement also requests one e-mail to the
//! merchant, in the same transaction, with an id derived from its event (decision 0031).
//!
//! Layout: [`state`] (rows, derived ids), [`fold`] (the rules, pure), [`store`] (load and write), [`notify`]
//! (the merchant's notification requests), [`handler`]; this file is the service.

pub mod fold;
pub mod handler;
pub mod notify;
pub mod state;
pub mod store;

use runtime::service::{ConsumerOnly, ConsumerService, ServiceContext};
use runtime::{GroupPolicy, Guarantee};

/// The settlement-processing service (operations port 9104).
pub struct Settlement;

impl ConsumerService for Settlement {
    const NAME: &'static str = "settlement";
    const GROUP: &'static str = runtime::policy::SETTLEMENT_PROCESSING;
    const ABOUT: &'static str = "Settles paid and confirmed invoices exactly once: settlements, a double-entry \
        ledger and SettlementCreated / SettlementCompleted / SettlementFailed through the outbox, all committed with \
        the consumer's position in one PostgreSQL transaction. Check the money with `checkoutctl verify`.";
    type Settings = ConsumerOnly;
    type Handler = runtime::Batched<handler::Settler>;

    async fn handler(ctx: ServiceContext<'_, ConsumerOnly>) -> anyhow::Result<Self::Handler> {
        let metrics = handler::SettlementMetrics::register(ctx.registry)?;
        Ok(runtime::Batched(handler::Settler::new(metrics)))
    }

    /// Exactly-once end to end needs the emitted events in the consumer's transaction: mode (b) only.
    fn check_policy(policy: &GroupPolicy) -> Result<(), String> {
        match policy.guarantee {
            Guarantee::ExactlyOnceDb => Ok(()),
            other => Err(format!(
                "settlement commits its writes, its events and its position together: the guarantee must be \
                 exactly_once_db, not {}",
                other.as_str()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use runtime::service::ConsumerService;
    use runtime::{GroupPolicy, Guarantee};

    use super::Settlement;

    #[test]
    fn only_the_database_transaction_mode_is_accepted() {
        let mut policy = GroupPolicy::spec(Settlement::GROUP).expect("a group of the spec");
        assert_eq!(
            policy.guarantee,
            Guarantee::ExactlyOnceDb,
            "the spec's settings table"
        );
        assert_eq!(
            (policy.batch_size, policy.session_timeout.as_secs()),
            (50, 45)
        );
        assert!(Settlement::check_policy(&policy).is_ok());
        for other in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnceKafka] {
            policy.guarantee = other;
            let err = Settlement::check_policy(&policy).unwrap_err();
            assert!(err.contains("exactly_once_db"), "{err}");
        }
    }
}
