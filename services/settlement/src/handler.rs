//! The settlement handler: a partition's batch → load, fold, write — in the consumer's transaction (mode (b)).
//!
//! Guarantees: the batch's state changes, its ledger lines, the events it emits (appended to the outbox) and the
//! consumer's position commit in one database transaction or not at all (the runtime rolls back on any error), so
//! exactly-once holds end to end — from the consumed event to the emitted one. A record that does not decode is a
//! schema error at its index (DLQ at once); an event about an unknown invoice is a business error at its index
//! (the spec's 10 retries, 5 s apart, then the DLQ); a settlement waiting for its merchant's lane is transient at
//! its index (backoff from the group's 500 ms, never dead-lettered; the rest of the batch goes on); a database
//! failure is classified by the runtime (lost connection: circuit breaker).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};

use crate::fold::{Fold, FoldError};
use crate::store::{self, StoreError, Wanted};

/// Settlements created, completed and held; payouts a late suspension covered.
#[derive(Clone)]
pub struct SettlementMetrics {
    settlements: IntCounterVec,
    paid_while_suspended: IntCounter,
}

impl SettlementMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let settlements = IntCounterVec::new(
            Opts::new(
                "settlement_settlements_total",
                "Settlement steps decided by this consumer (created | completed | held); counted when the unit \
                 is handed back for commit.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(settlements.clone()))?;
        for outcome in ["created", "completed", "held"] {
            settlements.with_label_values(&[outcome]);
        }
        let paid_while_suspended = IntCounter::new(
            "settlement_paid_while_suspended_total",
            "Completed settlements that a merchant suspension covers but that were paid out before the suspension \
             reached the merchant's partition (a back-dated suspension): not reversed; alert on any increase.",
        )?;
        registry.register(Box::new(paid_while_suspended.clone()))?;
        Ok(SettlementMetrics {
            settlements,
            paid_while_suspended,
        })
    }
}

impl From<FoldError> for HandlerError {
    fn from(error: FoldError) -> Self {
        match error {
            FoldError::MerchantNotYet(_) => HandlerError::transient(error),
            FoldError::Unknown(_) | FoldError::Invalid(_) => HandlerError::business(error),
        }
    }
}

impl From<StoreError> for HandlerError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Db(db) => HandlerError::from(db),
            StoreError::Outbox(outbox::OutboxError::Database(db)) => HandlerError::from(db),
            StoreError::Outbox(e) if e.is_retriable() => HandlerError::transient(e),
            other => HandlerError::business(other),
        }
    }
}

/// The settlement-processing handler.
pub struct Settler {
    metrics: SettlementMetrics,
}

impl Settler {
    pub fn new(metrics: SettlementMetrics) -> Self {
        Settler { metrics }
    }
}

impl BatchHandler for Settler {
    async fn handle_batch(
        &self,
        records: &[Record],
        ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let mut events = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            events.push(record.decode_event().map_err(|e| BatchError::at(i, e))?);
        }
        let db = ctx.db().ok_or_else(|| {
            BatchError::unknown(HandlerError::infrastructure(
                "settlement runs exactly-once into PostgreSQL: the group's guarantee must be exactly_once_db",
            ))
        })?;
        let rows = store::load(db, &Wanted::of(&events))
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        let mut fold = Fold::new(rows);
        for (i, event) in events.iter().enumerate() {
            fold.apply(event).map_err(|e| BatchError::at(i, e))?;
        }
        store::write(db, &fold)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        for settlement_id in &fold.paid_while_suspended {
            tracing::error!(
                %settlement_id,
                "a merchant suspension covers this settlement, which was already paid out when the suspension \
                 arrived on the merchant's partition: not reversed, operations must look"
            );
        }
        let o = fold.outcomes();
        for (outcome, n) in [
            ("created", o.created),
            ("completed", o.completed),
            ("held", o.held),
        ] {
            if n > 0 {
                self.metrics
                    .settlements
                    .with_label_values(&[outcome])
                    .inc_by(n);
            }
        }
        self.metrics
            .paid_while_suspended
            .inc_by(fold.paid_while_suspended.len() as u64);
        Ok(())
    }
}
