//! `payments`: the payment-ingestion consumer group — blockchain scanners' reports (`integration-events`) matched
//! to invoices become `PaymentDetected` → `PaymentConfirming` → `PaymentConfirmed` / `PaymentFailed` and
//! `InvoicePaid` (with the merchant's `invoice_paid` e-mail), exactly once, in the runtime's mode (b).
//!
//! Guarantees: every report about an output paying an invoice's deposit address moves that payment forward at most
//! once per step, never backwards, whatever scanners duplicate or reorder, and an invoice is paid once, when its
//! confirmed payments cover it ([`fold`]); its state, the events it emits (appended to the outbox) and the
//! consumer's position commit in one PostgreSQL transaction, and every id is derived from what it is about, so a
//! redelivery, a replay or a SIGKILL can only reproduce what is already there. The invoices it matches against come
//! from the same group reading `domain-events` (`InvoiceCreated` v2, `InvoiceCancelled`): a report that arrives
//! before its invoice is a business error, retried by the group's policy, then dead-lettered with the reason
//! (decision 0034).
//!
//! Layout: [`fold`] (the rules, pure; derived ids), [`store`] (load and write), [`handler`], [`simulate`] (a
//! scanner simulator for tests, benchmarks and `make run`); this file is the service.

pub mod fold;
pub mod handler;
pub mod simulate;
pub mod store;

use runtime::service::{ConsumerOnly, ConsumerService, ServiceContext};
use runtime::{GroupPolicy, Guarantee};

/// The payment-ingestion service (operations port 9109).
pub struct Payments;

impl ConsumerService for Payments {
    const NAME: &'static str = "payments";
    const GROUP: &'static str = runtime::policy::PAYMENT_INGESTION;
    const ABOUT: &'static str = "Turns blockchain scanners' reports (integration-events) into payment and invoice \
        domain events exactly once: PaymentDetected, PaymentConfirming, PaymentConfirmed, PaymentFailed and \
        InvoicePaid through the outbox, committed with the consumer's position in one PostgreSQL transaction.";
    type Settings = ConsumerOnly;
    type Handler = runtime::Batched<handler::Ingestor>;

    async fn handler(ctx: ServiceContext<'_, ConsumerOnly>) -> anyhow::Result<Self::Handler> {
        let metrics = handler::PaymentMetrics::register(ctx.registry)?;
        let integration = ctx
            .policy
            .topics
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the payment-ingestion policy names no topic"))?;
        Ok(runtime::Batched(handler::Ingestor::new(
            metrics,
            integration,
        )))
    }

    /// Exactly-once end to end needs the emitted events in the consumer's transaction (mode (b)), and the
    /// scanners' topic first, the invoices' second.
    fn check_policy(policy: &GroupPolicy) -> Result<(), String> {
        if policy.guarantee != Guarantee::ExactlyOnceDb {
            return Err(format!(
                "payments commits its writes, its events and its position together: the guarantee must be \
                 exactly_once_db, not {}",
                policy.guarantee.as_str()
            ));
        }
        if policy.topics.len() != 2 {
            return Err(format!(
                "payments reads two topics, the scanners' reports first and the domain events second, not {:?}",
                policy.topics
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use runtime::service::ConsumerService;
    use runtime::{GroupPolicy, Guarantee};

    use super::Payments;

    #[test]
    fn the_groups_policy_is_exactly_once_into_the_database_over_both_topics() {
        let mut policy = GroupPolicy::spec(Payments::GROUP).expect("a group of the runtime");
        assert_eq!(policy.guarantee, Guarantee::ExactlyOnceDb);
        assert_eq!(
            policy.topics,
            [
                events::topics::INTEGRATION_EVENTS,
                events::topics::DOMAIN_EVENTS
            ]
        );
        assert!(Payments::check_policy(&policy).is_ok());
        policy.guarantee = Guarantee::AtLeastOnce;
        assert!(Payments::check_policy(&policy).is_err());
    }
}
