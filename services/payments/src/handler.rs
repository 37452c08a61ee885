//! The payment-ingestion handler: a partition's batch → decode, load, fold, write — in the consumer's
//! transaction (mode (b)).
//!
//! Guarantees: a batch is one partition of one topic. A batch of `integration-events` (scanners' reports) is
//! (every record of the policy's first topic) applied by [`crate::fold`] on the rows [`crate::store::load`] read in two statements, and its row changes, the
//! events it emits and the merchants' notification requests are written with the consumer's position in one
//! transaction, or not at all. A batch of `domain-events` keeps the invoices the reports are matched against
//! (`InvoiceCreated` v2 with a deposit; `InvoiceCancelled`), every other event type is skipped without decoding
//! it fully. A record that does not decode is a schema error at its index (DLQ at once); a report the fold refuses
//! ([`crate::fold::FoldError`]: unknown address, contradiction) is a business error at its index (the
//! group's retries, then the DLQ with the reason); a database failure is classified by the runtime (lost
//! connection: circuit breaker; serialization failure: transient).

use events::integration::IntegrationEvent;
use events::{EventData, EventType};
use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};

use crate::fold::{Fold, FoldError, Invoice};
use crate::store::{self, StoreError};

/// What the consumer decided, by outcome.
#[derive(Clone)]
pub struct PaymentMetrics {
    outcomes: IntCounterVec,
}

impl PaymentMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "payments_reports_total",
                "Scanner reports applied by payment ingestion, by what they caused (detected | confirming | confirmed \
                 | failed | invoice_paid | ignored: a duplicate, a step backwards, a report after a failure; and, \
                 also counted above, wrong_asset: a payment in another asset than its invoice's, \
                 paid_invoice_uncovered: a failure leaving a paid invoice no longer covered); counted when the \
                 unit is handed back for commit.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        for o in [
            "detected",
            "confirming",
            "confirmed",
            "failed",
            "invoice_paid",
            "ignored",
            "wrong_asset",
            "paid_invoice_uncovered",
        ] {
            outcomes.with_label_values(&[o]);
        }
        Ok(PaymentMetrics { outcomes })
    }
}

impl From<FoldError> for HandlerError {
    fn from(error: FoldError) -> Self {
        HandlerError::business(error)
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

/// The payment-ingestion handler.
pub struct Ingestor {
    metrics: PaymentMetrics,
    /// The topic of the scanners' reports (the group policy's first topic); every record of it must be one.
    integration_topic: String,
}

impl Ingestor {
    pub fn new(metrics: PaymentMetrics, integration_topic: impl Into<String>) -> Self {
        Ingestor {
            metrics,
            integration_topic: integration_topic.into(),
        }
    }
}

impl BatchHandler for Ingestor {
    async fn handle_batch(
        &self,
        records: &[Record],
        ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let db = ctx.db().ok_or_else(|| {
            BatchError::unknown(HandlerError::infrastructure(
                "payments runs exactly-once into PostgreSQL: the group's guarantee must be exactly_once_db",
            ))
        })?;
        let mut reports = Vec::new();
        let mut report_index = Vec::new();
        let mut created = Vec::new();
        let mut cancelled = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let bytes = record.value_bytes().map_err(|e| BatchError::at(i, e))?;
            if *record.topic == *self.integration_topic {
                let report = record
                    .decode_with(IntegrationEvent::decode)
                    .map_err(|e| BatchError::at(i, e))?;
                reports.push(report);
                report_index.push(i);
                continue;
            }
            let wanted = events::peek_event_type(bytes).is_some_and(|t| {
                t == EventType::InvoiceCreated.as_str() || t == EventType::InvoiceCancelled.as_str()
            });
            if !wanted {
                continue; // another event of the domain topic: not ours to judge
            }
            let event = record.decode_event().map_err(|e| BatchError::at(i, e))?;
            let invoice_id = event.aggregate_id().as_uuid();
            match event.data() {
                EventData::InvoiceCreated(c) => {
                    // A version 1 invoice has no deposit address: nothing can be matched to it.
                    if let Some(d) = &c.deposit {
                        created.push(Invoice {
                            invoice_id,
                            merchant_id: c.merchant_id.as_uuid(),
                            network: d.network,
                            address: d.address.canonical(d.network),
                            crypto_currency: c.crypto_currency,
                            crypto_amount: c.crypto_amount,
                            required_confirmations: d.required_confirmations,
                            expires_at: c.expires_at,
                            correlation_id: event.correlation_id().map(|c| c.as_uuid()),
                            cancelled_at: None,
                            paid_event_id: None,
                        });
                    }
                }
                EventData::InvoiceCancelled(c) => cancelled.push((invoice_id, c.cancelled_at)),
                _ => {}
            }
        }
        store::record_invoices(&mut *db, &created, &cancelled)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        if reports.is_empty() {
            return Ok(());
        }
        let rows = store::load(&mut *db, &reports)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        let mut fold = Fold::new(rows);
        for (report, i) in reports.iter().zip(&report_index) {
            fold.apply(report).map_err(|e| BatchError::at(*i, e))?;
        }
        store::write(&mut *db, &fold)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        let o = fold.outcomes;
        for (outcome, n) in [
            ("detected", o.detected),
            ("confirming", o.confirming),
            ("confirmed", o.confirmed),
            ("failed", o.failed),
            ("invoice_paid", o.invoices_paid),
            ("ignored", o.ignored),
            ("wrong_asset", o.wrong_asset),
            ("paid_invoice_uncovered", o.paid_invoice_uncovered),
        ] {
            if n > 0 {
                self.metrics
                    .outcomes
                    .with_label_values(&[outcome])
                    .inc_by(n);
            }
        }
        Ok(())
    }
}
