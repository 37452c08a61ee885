//! `settlement`: the settlement-processing consumer group — the runtime in exactly-once mode (b), this crate's
//! rules, and the group's policy from the spec (batch 50, session 45 s, 10 retries 5 s apart, then the DLQ).
//!
//! Guarantees: every invoice that is paid and whose counted payments are all confirmed settles exactly once —
//! one `settlements` row, one `SettlementCreated` then one `SettlementCompleted` (or `SettlementFailed {
//! merchant_suspended }` until the merchant is reinstated), balanced double-entry ledger journals — whatever is
//! redelivered, re-published, replayed or killed, because state, ledger, emitted events (through the outbox) and
//! the consumer's position commit in one PostgreSQL transaction and every id is derived from the invoice
//! (decision 0027). Nothing else settles.
//!
//! Layout: [`state`] (rows, derived ids), [`fold`] (the rules, pure), [`store`] (load and write), [`handler`];
//! this file is the service.

pub mod fold;
pub mod handler;
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
