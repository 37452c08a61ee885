//! The settlement rules as a pure fold: the rows a batch read, the batch's events in order → the rows changed,
//! the events to emit and the ledger lines to post. No database here: given rows and events, then these effects.
//!
//! The rules (decision 0027):
//! - **When an invoice settles**: once it is paid (`InvoicePaid`) and every payment that `InvoicePaid` counts is
//!   confirmed (`PaymentConfirmed`), in whichever order those events arrive; the event that completes the
//!   conditions is the settlement's cause, and its time `T` the settlement's time. Invoices that are only partially
//!   paid, that expire unpaid or are cancelled never settle. A late payment (after expiry) settles like any other.
//! - **Amounts**: gross = the invoice's `total_amount` in its currency; fee and net =
//!   [`events::money::platform_fee`] at the merchant's fee rate; exact at the currency's minor unit.
//! - **Stage 1** (the invoice's partition): the settlement is recorded `created`, `SettlementCreated` is emitted
//!   (keyed by the merchant) and the ledger posts receipts → owed to the merchant + fee revenue. Over-paid crypto is
//!   posted as owed back to the customer (never revenue); crypto received for an invoice that expires or is
//!   cancelled unpaid too (reversed if the invoice is then paid late, the funds counting toward it).
//! - **Stage 2** (the merchant's partition, reading back its own `SettlementCreated`, in order with the merchant's
//!   `MerchantSuspended` / `MerchantReinstated`): if a suspension `[suspended_at, reinstated_at)` covers `T` the
//!   settlement is held (`SettlementFailed { merchant_suspended, will_retry: true }` at `T`) and completed at the
//!   reinstatement (`SettlementCompleted` then, immediately if the reinstatement is already known); otherwise it
//!   completes at `T`. Completion posts owed → paid out. Deciding on event time — not on what this consumer
//!   happens to know when — makes the outcome the same whatever the processing order.
//! - **Idempotent**: every change is guarded by the state it moves from (a settlement exists, a payment is already
//!   confirmed, a settlement is no longer `created`), so a redelivered, re-published or replayed event changes
//!   nothing and emits nothing; settlement events the service did not record (not its own) are ignored.
//!
//! Errors: an event about an invoice this service never saw created is [`FoldError::Unknown`] (a business error:
//! retried per the group's policy, 10 × 5 s, then the DLQ); a settlement whose merchant is not known yet (its
//! partition's lane is behind) is [`FoldError::MerchantNotYet`] (transient: waits for it, never dead-lettered).

use std::collections::btree_map::Entry;

use chrono::{DateTime, Utc};
use events::money::{Amount, Currency, Decimal, platform_fee};
use events::payload::*;
use events::{Envelope, EnvelopeParts, EventData, EventId, Metadata, SettlementId};
use uuid::Uuid;

use crate::state::*;

/// Why an event cannot be applied now.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    /// The event's invoice was never created here (its `InvoiceCreated`, on the same partition, was not
    /// applied): a business error — retried per the group's policy, then dead-lettered.
    #[error("{0}")]
    Unknown(String),
    /// The invoice is ready to settle but its merchant's `MerchantCreated` — on another partition, whose lane is
    /// behind (a catch-up, a replay) — is not applied yet: transient, retried with backoff until it is, never
    /// dead-lettered (the platform only invoices merchants that exist).
    #[error("{0}")]
    MerchantNotYet(String),
    /// An amount or an emitted event broke the contract (a bug or corrupt input): dead-lettered after retries.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The effects of a batch.
#[derive(Debug)]
pub struct Fold {
    pub rows: Rows,
    pub dirty: Dirty,
    /// Events to append to the outbox, in order.
    pub emitted: Vec<Envelope>,
    pub ledger: Vec<LedgerLine>,
    /// Completed settlements that a suspension applied in this batch covers (it arrived after them).
    pub paid_while_suspended: Vec<Uuid>,
    metadata: Metadata,
}

/// What the settlements of a batch came to, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub created: u64,
    pub completed: u64,
    pub held: u64,
}

impl Fold {
    pub fn new(rows: Rows) -> Fold {
        Fold {
            rows,
            dirty: Dirty::default(),
            emitted: Vec::new(),
            ledger: Vec::new(),
            paid_while_suspended: Vec::new(),
            metadata: Metadata {
                source: Some("settlement-processing".into()),
                ..Metadata::system("settlement-processor").expect("a valid system actor")
            },
        }
    }

    /// What was decided, counted from the emitted events.
    pub fn outcomes(&self) -> Outcomes {
        let mut o = Outcomes::default();
        for e in &self.emitted {
            match e.data() {
                EventData::SettlementCreated(_) => o.created += 1,
                EventData::SettlementCompleted(_) => o.completed += 1,
                EventData::SettlementFailed(_) => o.held += 1,
                _ => {}
            }
        }
        o
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &Envelope) -> Result<(), FoldError> {
        let at = event.timestamp();
        let id = event.event_id();
        match event.data() {
            EventData::InvoiceCreated(e) => {
                let invoice = event.aggregate_id().as_uuid();
                if let Entry::Vacant(row) = self.rows.invoices.entry(invoice) {
                    row.insert(Invoice {
                        invoice_id: invoice,
                        merchant_id: e.merchant_id.as_uuid(),
                        currency: e.currency,
                        total_amount: e.total_amount,
                        crypto_currency: e.crypto_currency,
                        correlation_id: event.correlation_id().map(|c| c.as_uuid()),
                        created_at: at,
                        paid_at: None,
                        paid_event_id: None,
                        counted_payments: Vec::new(),
                        overpaid_amount: Amount::ZERO,
                        late_payment: false,
                        closed_at: None,
                        refund_amount: Amount::ZERO,
                        settlement_id: None,
                    });
                    self.dirty.invoices.insert(invoice);
                }
            }
            EventData::PaymentDetected(e) => {
                self.payment(event.aggregate_id().as_uuid(), e.invoice_id.as_uuid());
            }
            EventData::PaymentConfirmed(e) => {
                let invoice = e.invoice_id.as_uuid();
                let payment_id = event.aggregate_id().as_uuid();
                let payment = self.payment(payment_id, invoice);
                if payment.confirmed_at.is_none() && payment.failed_at.is_none() {
                    payment.confirmed_at = Some(at);
                    payment.confirmed_event_id = Some(id.as_uuid());
                    self.dirty.payments.insert(payment_id);
                    self.try_settle(invoice, id)?;
                }
            }
            EventData::PaymentFailed(e) => {
                let payment_id = event.aggregate_id().as_uuid();
                let payment = self.payment(payment_id, e.invoice_id.as_uuid());
                if payment.failed_at.is_none() && payment.confirmed_at.is_none() {
                    payment.failed_at = Some(at);
                    self.dirty.payments.insert(payment_id);
                }
            }
            EventData::InvoicePaid(e) => {
                let invoice_id = event.aggregate_id().as_uuid();
                let invoice = self.invoice(invoice_id)?;
                if invoice.paid_at.is_none() {
                    invoice.paid_at = Some(at);
                    invoice.paid_event_id = Some(id.as_uuid());
                    invoice.counted_payments = e.payment_ids.iter().map(|p| p.as_uuid()).collect();
                    invoice.overpaid_amount = e.overpaid_amount;
                    invoice.late_payment = e.late_payment;
                    let refund = std::mem::take(&mut invoice.refund_amount);
                    let asset = invoice.crypto_currency;
                    self.dirty.invoices.insert(invoice_id);
                    if !refund.is_zero() {
                        // Paid late after all: what was owed back counts toward the invoice again.
                        self.transfer(
                            Journal {
                                id: journal_id(invoice_id, Step::RefundReversed),
                                kind: JournalKind::RefundReversed,
                                invoice_id,
                                settlement_id: None,
                                at,
                                currency: asset.code(),
                            },
                            (Account::CustomerRefunds, None),
                            (Account::CustomerReceipts, None),
                            refund.as_decimal(),
                        );
                    }
                    self.try_settle(invoice_id, id)?;
                }
            }
            EventData::InvoiceExpired(e) => {
                self.closed_unpaid(event.aggregate_id().as_uuid(), at, e.crypto_amount_paid)?;
            }
            EventData::InvoiceCancelled(e) => {
                self.closed_unpaid(event.aggregate_id().as_uuid(), at, e.crypto_amount_paid)?;
            }
            EventData::PaymentConfirming(_) | EventData::SettingsUpdated(_) => {}
            EventData::MerchantCreated(e) => {
                let merchant = event.aggregate_id().as_uuid();
                if let Entry::Vacant(row) = self.rows.merchants.entry(merchant) {
                    row.insert(Merchant {
                        merchant_id: merchant,
                        fee_percentage: e.fee_percentage,
                        created_at: at,
                    });
                    self.dirty.merchants.insert(merchant);
                }
            }
            EventData::MerchantSuspended(e) => {
                let key = (event.aggregate_id().as_uuid(), e.suspended_at);
                if let Entry::Vacant(row) = self.rows.suspensions.entry(key) {
                    row.insert(Suspension {
                        merchant_id: key.0,
                        suspended_at: key.1,
                        reinstated_at: None,
                    });
                    // Settlements this suspension covers but that completed before it was known here: the money
                    // left; operations must look (decision 0027).
                    self.paid_while_suspended.extend(
                        self.rows
                            .settlements
                            .values()
                            .filter(|s| {
                                s.merchant_id == key.0
                                    && s.status == Status::Completed
                                    && s.created_at >= key.1
                            })
                            .map(|s| s.settlement_id),
                    );
                    self.dirty.suspensions.insert(key);
                }
            }
            EventData::MerchantReinstated(e) => {
                self.reinstated(event.aggregate_id().as_uuid(), e.reinstated_at, id)?;
            }
            EventData::SettlementCreated(_) => {
                self.decide(event.aggregate_id().as_uuid(), id)?;
            }
            // Their effects were applied when the service emitted them (or they are not the service's).
            EventData::SettlementCompleted(_) | EventData::SettlementFailed(_) => {}
            // Webhook endpoints have nothing to do with money.
            EventData::WebhookEndpointDisabled(_) => {}
        }
        Ok(())
    }

    fn invoice(&mut self, invoice: Uuid) -> Result<&mut Invoice, FoldError> {
        self.rows.invoices.get_mut(&invoice).ok_or_else(|| {
            FoldError::Unknown(format!(
                "invoice {invoice} is unknown to settlement (its InvoiceCreated was never applied)"
            ))
        })
    }

    fn payment(&mut self, payment: Uuid, invoice: Uuid) -> &mut Payment {
        let dirty = &mut self.dirty.payments;
        self.rows.payments.entry(payment).or_insert_with(|| {
            dirty.insert(payment);
            Payment {
                payment_id: payment,
                invoice_id: invoice,
                confirmed_at: None,
                confirmed_event_id: None,
                failed_at: None,
            }
        })
    }

    /// An invoice expired or was cancelled: if it was never paid, crypto received for it is owed back.
    fn closed_unpaid(
        &mut self,
        invoice_id: Uuid,
        at: DateTime<Utc>,
        received: Amount,
    ) -> Result<(), FoldError> {
        let invoice = self.invoice(invoice_id)?;
        if invoice.paid_at.is_some() || invoice.closed_at.is_some() {
            return Ok(());
        }
        invoice.closed_at = Some(at);
        invoice.refund_amount = received;
        let asset = invoice.crypto_currency;
        self.dirty.invoices.insert(invoice_id);
        if !received.is_zero() {
            self.transfer(
                Journal {
                    id: journal_id(invoice_id, Step::RefundOwed),
                    kind: JournalKind::RefundOwed,
                    invoice_id,
                    settlement_id: None,
                    at,
                    currency: asset.code(),
                },
                (Account::CustomerReceipts, None),
                (Account::CustomerRefunds, None),
                received.as_decimal(),
            );
        }
        Ok(())
    }

    /// Stage 1: settles `invoice_id` if it is paid and every counted payment is confirmed; `cause` completed it.
    fn try_settle(&mut self, invoice_id: Uuid, cause: EventId) -> Result<(), FoldError> {
        let invoice = self.invoice(invoice_id)?.clone();
        let Some(paid_at) = invoice.paid_at else {
            return Ok(());
        };
        if invoice.settlement_id.is_some() {
            return Ok(());
        }
        let mut at = paid_at;
        for payment in &invoice.counted_payments {
            match self.rows.payments.get(payment) {
                Some(Payment {
                    confirmed_at: Some(confirmed),
                    failed_at: None,
                    ..
                }) => at = at.max(*confirmed),
                _ => return Ok(()),
            }
        }
        let merchant = self.rows.merchants.get(&invoice.merchant_id).ok_or_else(|| {
            FoldError::MerchantNotYet(format!(
                "invoice {invoice_id} is ready to settle but its merchant {} is unknown to settlement yet",
                invoice.merchant_id
            ))
        })?;
        let fee_percentage = merchant.fee_percentage;
        let currency = Currency::Fiat(invoice.currency);
        let split = platform_fee(invoice.total_amount, fee_percentage, currency)
            .map_err(|e| FoldError::Invalid(format!("settling invoice {invoice_id}: {e}")))?;
        let settlement_id = settlement_id(invoice_id);
        let settlement = Settlement {
            settlement_id,
            invoice_id,
            merchant_id: invoice.merchant_id,
            currency: invoice.currency,
            gross_amount: invoice.total_amount,
            platform_fee_amount: split.fee,
            net_amount: split.net,
            fee_percentage,
            status: Status::Created,
            created_at: at,
            held_at: None,
            settled_at: None,
            causation_event_id: cause.as_uuid(),
            correlation_id: invoice.correlation_id,
        };
        let created = SettlementCreated {
            invoice_id: id_of(invoice_id),
            merchant_id: merchant_id_of(invoice.merchant_id),
            currency,
            gross_amount: settlement.gross_amount,
            platform_fee_amount: settlement.platform_fee_amount,
            net_amount: settlement.net_amount,
            fee_percentage,
        };
        self.emit(&settlement, Step::Created, created.into(), at, cause)?;
        self.post(
            Journal {
                id: journal_id(settlement_id, Step::Created),
                kind: JournalKind::Settlement,
                invoice_id,
                settlement_id: Some(settlement_id),
                at,
                currency: currency.code(),
            },
            &[
                (
                    Account::CustomerReceipts,
                    None,
                    -settlement.gross_amount.as_decimal(),
                ),
                (
                    Account::MerchantPayable,
                    Some(settlement.merchant_id),
                    settlement.net_amount.as_decimal(),
                ),
                (
                    Account::PlatformFees,
                    None,
                    settlement.platform_fee_amount.as_decimal(),
                ),
            ],
        );
        if !invoice.overpaid_amount.is_zero() {
            self.transfer(
                Journal {
                    id: journal_id(invoice_id, Step::Overpayment),
                    kind: JournalKind::Overpayment,
                    invoice_id,
                    settlement_id: Some(settlement_id),
                    at,
                    currency: invoice.crypto_currency.code(),
                },
                (Account::CustomerReceipts, None),
                (Account::CustomerRefunds, None),
                invoice.overpaid_amount.as_decimal(),
            );
        }
        self.rows
            .invoices
            .get_mut(&invoice_id)
            .expect("loaded above")
            .settlement_id = Some(settlement_id);
        self.dirty.invoices.insert(invoice_id);
        self.rows.settlements.insert(settlement_id, settlement);
        self.dirty.settlements.insert(settlement_id);
        Ok(())
    }

    /// Stage 2: the service's own `SettlementCreated` read back on the merchant's partition.
    fn decide(&mut self, settlement_id: Uuid, cause: EventId) -> Result<(), FoldError> {
        let Some(settlement) = self.rows.settlements.get(&settlement_id).cloned() else {
            tracing::warn!(%settlement_id, "a SettlementCreated this service did not record; ignored");
            return Ok(());
        };
        if settlement.status != Status::Created {
            return Ok(()); // decided before: a redelivery or a replay
        }
        let at = settlement.created_at;
        let covering = self
            .rows
            .suspensions
            .values()
            .find(|s| s.merchant_id == settlement.merchant_id && s.covers(at))
            .cloned();
        match covering {
            None => self.complete(settlement_id, at, cause),
            Some(suspension) => {
                self.hold(settlement_id, at, cause)?;
                match suspension.reinstated_at {
                    Some(reinstated) => self.complete(settlement_id, reinstated, cause),
                    None => Ok(()),
                }
            }
        }
    }

    /// The merchant is reinstated at `at`: its open suspension ends, and every held settlement no open
    /// suspension covers completes — at the end of the (now closed) suspension that covers its time `T`, or at
    /// `T` if none does: a settlement held because this reinstatement was not known yet when it was decided
    /// (events of the merchant committed out of their time order) is released too, never left held for ever.
    fn reinstated(
        &mut self,
        merchant: Uuid,
        at: DateTime<Utc>,
        cause: EventId,
    ) -> Result<(), FoldError> {
        let open: Vec<(Uuid, DateTime<Utc>)> = self
            .rows
            .suspensions
            .iter()
            .filter(|(_, s)| {
                s.merchant_id == merchant && s.reinstated_at.is_none() && s.suspended_at <= at
            })
            .map(|(k, _)| *k)
            .collect();
        for key in open {
            if let Some(s) = self.rows.suspensions.get_mut(&key) {
                s.reinstated_at = Some(at);
                self.dirty.suspensions.insert(key);
            }
        }
        let suspensions = &self.rows.suspensions;
        let released: Vec<(Uuid, DateTime<Utc>)> = self
            .rows
            .settlements
            .values()
            .filter(|s| s.merchant_id == merchant && s.status == Status::Held)
            .filter_map(|s| {
                let covering = suspensions
                    .values()
                    .filter(|x| x.merchant_id == merchant && x.covers(s.created_at));
                let mut completed_at = s.created_at;
                for x in covering {
                    completed_at = completed_at.max(x.reinstated_at?); // an open one keeps it held
                }
                Some((s.settlement_id, completed_at))
            })
            .collect();
        for (settlement, completed_at) in released {
            self.complete(settlement, completed_at, cause)?;
        }
        Ok(())
    }

    fn hold(
        &mut self,
        settlement_id: Uuid,
        at: DateTime<Utc>,
        cause: EventId,
    ) -> Result<(), FoldError> {
        let settlement = self.rows.settlements[&settlement_id].clone();
        let failed = SettlementFailed {
            invoice_id: id_of(settlement.invoice_id),
            merchant_id: merchant_id_of(settlement.merchant_id),
            currency: Currency::Fiat(settlement.currency),
            net_amount: settlement.net_amount,
            reason: SettlementFailureReason::MerchantSuspended,
            details: Some("the merchant is suspended; paid out when it is reinstated".into()),
            will_retry: true,
            failed_at: at,
        };
        self.emit(&settlement, Step::Held, failed.into(), at, cause)?;
        let row = self
            .rows
            .settlements
            .get_mut(&settlement_id)
            .expect("present");
        row.status = Status::Held;
        row.held_at = Some(at);
        self.dirty.settlements.insert(settlement_id);
        Ok(())
    }

    fn complete(
        &mut self,
        settlement_id: Uuid,
        at: DateTime<Utc>,
        cause: EventId,
    ) -> Result<(), FoldError> {
        let settlement = self.rows.settlements[&settlement_id].clone();
        let currency = Currency::Fiat(settlement.currency);
        let completed = SettlementCompleted {
            invoice_id: id_of(settlement.invoice_id),
            merchant_id: merchant_id_of(settlement.merchant_id),
            currency,
            gross_amount: settlement.gross_amount,
            platform_fee_amount: settlement.platform_fee_amount,
            net_amount: settlement.net_amount,
            fee_percentage: settlement.fee_percentage,
            settled_at: at,
        };
        self.emit(&settlement, Step::Completed, completed.into(), at, cause)?;
        self.transfer(
            Journal {
                id: journal_id(settlement_id, Step::Completed),
                kind: JournalKind::Payout,
                invoice_id: settlement.invoice_id,
                settlement_id: Some(settlement_id),
                at,
                currency: currency.code(),
            },
            (Account::MerchantPayable, Some(settlement.merchant_id)),
            (Account::MerchantPaidOut, Some(settlement.merchant_id)),
            settlement.net_amount.as_decimal(),
        );
        let row = self
            .rows
            .settlements
            .get_mut(&settlement_id)
            .expect("present");
        row.status = Status::Completed;
        row.settled_at = Some(at);
        self.dirty.settlements.insert(settlement_id);
        Ok(())
    }

    /// An event about `settlement`: keyed by its merchant, id derived from the invoice and the step.
    fn emit(
        &mut self,
        settlement: &Settlement,
        step: Step,
        data: EventData,
        at: DateTime<Utc>,
        cause: EventId,
    ) -> Result<(), FoldError> {
        let envelope = Envelope::from_parts(EnvelopeParts {
            event_id: event_id(settlement.invoice_id, step),
            aggregate_id: SettlementId::from_uuid(settlement.settlement_id)
                .expect("derived ids are never nil")
                .into(),
            event_data: data,
            metadata: self.metadata.clone(),
            timestamp: at,
            correlation_id: settlement
                .correlation_id
                .map(|c| events::CorrelationId::from_uuid(c).expect("stored ids are never nil")),
            causation_id: Some(cause),
        })
        .map_err(|e| {
            FoldError::Invalid(format!(
                "the {step:?} event of settlement {}: {e}",
                settlement.settlement_id
            ))
        })?;
        self.emitted.push(envelope);
        Ok(())
    }

    /// Posts a two-line journal moving `amount` from account `from` to account `to` (each with its merchant,
    /// for the merchant's own accounts): `from` −amount, `to` +amount.
    fn transfer(
        &mut self,
        journal: Journal<'_>,
        from: (Account, Option<Uuid>),
        to: (Account, Option<Uuid>),
        amount: Decimal,
    ) {
        self.post(journal, &[(from.0, from.1, -amount), (to.0, to.1, amount)]);
    }

    /// Posts a journal; zero lines are left out (a 0 % fee), and the lines must balance.
    fn post(&mut self, journal: Journal<'_>, lines: &[(Account, Option<Uuid>, Decimal)]) {
        let Journal {
            id: journal_id,
            kind,
            invoice_id,
            settlement_id,
            at,
            currency,
        } = journal;
        debug_assert_eq!(
            lines.iter().map(|l| l.2).sum::<Decimal>(),
            Decimal::ZERO,
            "a journal balances"
        );
        let mut n = 0;
        for (account, merchant_id, amount) in lines {
            if amount.is_zero() {
                continue;
            }
            n += 1;
            self.ledger.push(LedgerLine {
                journal_id,
                line: n,
                kind,
                account: *account,
                merchant_id: *merchant_id,
                invoice_id,
                settlement_id,
                currency: currency.to_string(),
                amount: *amount,
                posted_at: at,
            });
        }
    }
}

/// What a journal records: its (derived) id and kind, the invoice and settlement it belongs to, when, and in
/// which currency or asset.
struct Journal<'a> {
    id: Uuid,
    kind: JournalKind,
    invoice_id: Uuid,
    settlement_id: Option<Uuid>,
    at: DateTime<Utc>,
    currency: &'a str,
}

fn id_of(invoice: Uuid) -> events::InvoiceId {
    events::InvoiceId::from_uuid(invoice).expect("stored ids are never nil")
}

fn merchant_id_of(merchant: Uuid) -> events::MerchantId {
    events::MerchantId::from_uuid(merchant).expect("stored ids are never nil")
}

#[cfg(test)]
mod tests {
    //! Given rows and events, then these effects: the rules without a database.

    use chrono::Duration;
    use events::examples::{self, example};
    use events::money::{FiatCurrency, Percentage};
    use events::{AggregateId, EventType};

    use super::*;

    /// The example story's event of `kind`, `seconds` after the story's invoice was created.
    fn ev(kind: EventType, seconds: i64) -> Envelope {
        let mut parts = example(kind).into_parts();
        parts.timestamp =
            example(EventType::InvoiceCreated).timestamp() + Duration::seconds(seconds);
        parts.event_id = EventId::new();
        Envelope::from_parts(parts).unwrap()
    }

    /// `envelope` with its payload changed by `edit`.
    fn with(envelope: Envelope, edit: impl FnOnce(&mut EventData)) -> Envelope {
        let mut parts = envelope.into_parts();
        edit(&mut parts.event_data);
        Envelope::from_parts(parts).unwrap()
    }

    fn invoice() -> Uuid {
        examples::invoice_id().as_uuid()
    }

    fn merchant() -> Uuid {
        examples::merchant_id().as_uuid()
    }

    fn run(events: &[Envelope]) -> Fold {
        let mut fold = Fold::new(Rows::default());
        for e in events {
            fold.apply(e).unwrap();
        }
        fold
    }

    fn kinds(fold: &Fold) -> Vec<EventType> {
        fold.emitted.iter().map(|e| e.event_type()).collect()
    }

    /// Sum of the ledger per currency: zero for every currency.
    fn assert_balanced(fold: &Fold) {
        let mut sums: std::collections::BTreeMap<&str, Decimal> = Default::default();
        for l in &fold.ledger {
            *sums.entry(l.currency.as_str()).or_default() += l.amount;
        }
        assert!(sums.values().all(Decimal::is_zero), "unbalanced: {sums:?}");
    }

    fn story() -> Vec<Envelope> {
        vec![
            ev(EventType::MerchantCreated, 0),
            ev(EventType::InvoiceCreated, 0),
            ev(EventType::PaymentDetected, 0),
        ]
    }

    #[test]
    fn a_paid_invoice_settles_when_its_payment_confirms_with_the_platform_fee() {
        let mut events = story();
        let paid = ev(EventType::InvoicePaid, 10);
        let confirmed = ev(EventType::PaymentConfirmed, 20);
        events.extend([paid.clone(), confirmed.clone()]);
        let fold = run(&events);
        assert_eq!(kinds(&fold), [EventType::SettlementCreated]);
        let created = &fold.emitted[0];
        assert_eq!(
            created.causation_id(),
            Some(confirmed.event_id()),
            "the completing event"
        );
        assert_eq!(
            created.timestamp(),
            confirmed.timestamp(),
            "the settlement's time is the cause's"
        );
        assert_eq!(created.partition_key(), examples::merchant_id().to_string());
        assert_eq!(created.event_id(), event_id(invoice(), Step::Created));
        let EventData::SettlementCreated(s) = created.data() else {
            panic!()
        };
        assert_eq!(
            (
                s.gross_amount.to_string(),
                s.platform_fee_amount.to_string(),
                s.net_amount.to_string()
            ),
            ("16.49".into(), "0.16".into(), "16.33".into())
        );
        let settlement = &fold.rows.settlements[&settlement_id(invoice())];
        assert_eq!(settlement.status, Status::Created);
        assert_balanced(&fold);
        let accounts: Vec<(Account, String)> = fold
            .ledger
            .iter()
            .filter(|l| l.kind == JournalKind::Settlement)
            .map(|l| (l.account, l.amount.to_string()))
            .collect();
        assert_eq!(
            accounts,
            [
                (Account::CustomerReceipts, "-16.49".into()),
                (Account::MerchantPayable, "16.33".into()),
                (Account::PlatformFees, "0.16".into()),
            ]
        );
    }

    #[test]
    fn a_confirmation_before_the_payment_is_counted_settles_at_invoice_paid() {
        let mut events = story();
        let confirmed = ev(EventType::PaymentConfirmed, 5);
        let paid = ev(EventType::InvoicePaid, 10);
        events.extend([confirmed, paid.clone()]);
        let fold = run(&events);
        assert_eq!(kinds(&fold), [EventType::SettlementCreated]);
        assert_eq!(fold.emitted[0].causation_id(), Some(paid.event_id()));
    }

    #[test]
    fn every_counted_payment_must_confirm_and_a_failed_one_never_does() {
        let second = events::PaymentId::new();
        let mut events = story();
        events.push(with(ev(EventType::InvoicePaid, 10), |d| {
            if let EventData::InvoicePaid(p) = d {
                p.payment_ids.push(second);
            }
        }));
        events.push(ev(EventType::PaymentConfirmed, 20));
        let fold = run(&events);
        assert!(
            fold.emitted.is_empty(),
            "one counted payment is still unconfirmed"
        );
        let mut more = events.clone();
        let mut failed = ev(EventType::PaymentFailed, 25).into_parts();
        failed.aggregate_id = AggregateId::Payment(second);
        more.push(Envelope::from_parts(failed).unwrap());
        assert!(
            run(&more).emitted.is_empty(),
            "a counted payment failed: never settles"
        );
        let mut confirmed = ev(EventType::PaymentConfirmed, 30).into_parts();
        confirmed.aggregate_id = AggregateId::Payment(second);
        events.push(Envelope::from_parts(confirmed).unwrap());
        assert_eq!(kinds(&run(&events)), [EventType::SettlementCreated]);
    }

    #[test]
    fn an_over_payment_is_owed_back_in_its_asset_never_kept() {
        let mut events = story();
        events.push(with(ev(EventType::InvoicePaid, 10), |d| {
            if let EventData::InvoicePaid(p) = d {
                p.crypto_amount_paid = "17.49".parse().unwrap();
                p.overpaid_amount = "1".parse().unwrap();
            }
        }));
        events.push(ev(EventType::PaymentConfirmed, 20));
        let fold = run(&events);
        let owed: Vec<_> = fold
            .ledger
            .iter()
            .filter(|l| l.kind == JournalKind::Overpayment)
            .map(|l| (l.account, l.currency.clone(), l.amount.to_string()))
            .collect();
        assert_eq!(
            owed,
            [
                (Account::CustomerReceipts, "USDT".into(), "-1".into()),
                (Account::CustomerRefunds, "USDT".into(), "1".into()),
            ]
        );
        assert_balanced(&fold);
    }

    #[test]
    fn crypto_received_for_an_invoice_that_expires_unpaid_is_owed_back_and_reversed_if_paid_late() {
        let mut events = story();
        events.push(with(ev(EventType::InvoiceExpired, 0), |d| {
            if let EventData::InvoiceExpired(e) = d {
                e.crypto_amount_paid = "5".parse().unwrap();
            }
        }));
        let fold = run(&events);
        assert!(fold.emitted.is_empty(), "an expired invoice never settles");
        assert_eq!(fold.ledger.len(), 2);
        assert_eq!(fold.ledger[0].kind, JournalKind::RefundOwed);
        // Paid late after all: the refund is reversed and the invoice settles.
        events.push(with(ev(EventType::InvoicePaid, 3600), |d| {
            if let EventData::InvoicePaid(p) = d {
                p.late_payment = true;
            }
        }));
        events.push(ev(EventType::PaymentConfirmed, 3700));
        let fold = run(&events);
        assert_eq!(kinds(&fold), [EventType::SettlementCreated]);
        let refunds: Decimal = fold
            .ledger
            .iter()
            .filter(|l| l.account == Account::CustomerRefunds && l.kind != JournalKind::Overpayment)
            .map(|l| l.amount)
            .sum();
        assert!(refunds.is_zero(), "nothing is owed back any more");
        assert_balanced(&fold);
    }

    #[test]
    fn a_cancelled_unpaid_invoice_never_settles_and_owes_nothing() {
        let mut events = story();
        events.push(ev(EventType::InvoiceCancelled, 0));
        events.push(ev(EventType::PaymentConfirmed, 20));
        let fold = run(&events);
        assert!(
            fold.emitted.is_empty()
                && fold
                    .ledger
                    .iter()
                    .all(|l| l.kind == JournalKind::RefundOwed)
        );
    }

    #[test]
    fn redelivered_and_republished_events_change_nothing_and_emit_nothing() {
        let mut events = story();
        events.extend([
            ev(EventType::InvoicePaid, 10),
            ev(EventType::PaymentConfirmed, 20),
        ]);
        let once = run(&events);
        let mut twice = events.clone();
        twice.extend(events.iter().cloned());
        twice.push(ev(EventType::PaymentConfirmed, 40));
        let fold = run(&twice);
        assert_eq!(fold.emitted, once.emitted);
        assert_eq!(fold.ledger, once.ledger);
    }

    /// The fold of stage 1, then stage 2 reading back `created` with the merchant's `history` before it.
    fn stage_two(history: Vec<Envelope>) -> Fold {
        let mut events = story();
        events.extend([
            ev(EventType::InvoicePaid, 10),
            ev(EventType::PaymentConfirmed, 20),
        ]);
        let stage_one = run(&events);
        let created = stage_one.emitted[0].clone();
        let mut fold = Fold::new(stage_one.rows);
        for e in history.iter().chain([&created]) {
            fold.apply(e).unwrap();
        }
        fold
    }

    fn suspended(seconds: i64) -> Envelope {
        with(ev(EventType::MerchantSuspended, seconds), |d| {
            if let EventData::MerchantSuspended(s) = d {
                s.suspended_at = examples::example(EventType::InvoiceCreated).timestamp()
                    + Duration::seconds(seconds);
            }
        })
    }

    fn reinstated(seconds: i64) -> Envelope {
        let at =
            examples::example(EventType::InvoiceCreated).timestamp() + Duration::seconds(seconds);
        let mut parts = ev(EventType::MerchantSuspended, seconds).into_parts();
        parts.event_data = MerchantReinstated {
            reinstated_at: at,
            details: None,
        }
        .into();
        Envelope::from_parts(parts).unwrap()
    }

    #[test]
    fn an_active_merchants_settlement_completes_at_its_time_and_is_paid_out() {
        let fold = stage_two(vec![]);
        assert_eq!(kinds(&fold), [EventType::SettlementCompleted]);
        let EventData::SettlementCompleted(c) = fold.emitted[0].data() else {
            panic!()
        };
        assert_eq!(
            c.settled_at,
            fold.rows.settlements.values().next().unwrap().created_at
        );
        assert_eq!(
            fold.rows.settlements.values().next().unwrap().status,
            Status::Completed
        );
        let payout: Vec<_> = fold
            .ledger
            .iter()
            .map(|l| (l.account, l.amount.to_string()))
            .collect();
        assert_eq!(
            payout,
            [
                (Account::MerchantPayable, "-16.33".into()),
                (Account::MerchantPaidOut, "16.33".into())
            ]
        );
        assert!(
            fold.ledger
                .iter()
                .all(|l| l.merchant_id == Some(merchant())),
            "the merchant's own accounts"
        );
        assert_balanced(&fold);
        // Read back again (a replay): decided already, nothing more.
        let settlement = fold.rows.settlements.keys().next().copied().unwrap();
        let mut again = Fold::new(fold.rows.clone());
        let mut created = example(EventType::SettlementCreated).into_parts();
        created.aggregate_id =
            AggregateId::Settlement(SettlementId::from_uuid(settlement).unwrap());
        again
            .apply(&Envelope::from_parts(created).unwrap())
            .unwrap();
        assert!(again.emitted.is_empty());
    }

    #[test]
    fn a_hold_the_reinstatement_would_have_prevented_is_released_when_it_arrives() {
        // Suspended at 5 s; the reinstatement at 15 s is committed after the settlement of 20 s was decided:
        // held then, it must complete at its own time once the reinstatement is known — not stay held for ever.
        let mut fold = stage_two(vec![suspended(5)]);
        assert_eq!(kinds(&fold), [EventType::SettlementFailed]);
        fold.apply(&reinstated(15)).unwrap();
        assert_eq!(
            kinds(&fold),
            [EventType::SettlementFailed, EventType::SettlementCompleted]
        );
        let settlement = fold.rows.settlements.values().next().unwrap().clone();
        assert_eq!(settlement.status, Status::Completed);
        let EventData::SettlementCompleted(c) = fold.emitted[1].data() else {
            panic!()
        };
        assert_eq!(
            c.settled_at, settlement.created_at,
            "at T, after the reinstatement"
        );
        assert_balanced(&fold);
        // A second suspension still covering the settlement keeps it held.
        let mut fold = stage_two(vec![suspended(5), suspended(18)]);
        fold.apply(&reinstated(15)).unwrap();
        assert_eq!(kinds(&fold), [EventType::SettlementFailed]);
    }

    #[test]
    fn a_suspended_merchants_settlement_is_held_then_paid_out_on_reinstatement() {
        let fold = stage_two(vec![suspended(5)]);
        assert_eq!(kinds(&fold), [EventType::SettlementFailed]);
        let EventData::SettlementFailed(f) = fold.emitted[0].data() else {
            panic!()
        };
        assert_eq!(f.reason, SettlementFailureReason::MerchantSuspended);
        assert!(f.will_retry);
        assert!(fold.ledger.is_empty(), "still owed, not paid out");
        let mut later = Fold::new(fold.rows.clone());
        later.apply(&reinstated(600)).unwrap();
        assert_eq!(kinds(&later), [EventType::SettlementCompleted]);
        let EventData::SettlementCompleted(c) = later.emitted[0].data() else {
            panic!()
        };
        assert_eq!(c.settled_at, reinstated(600).timestamp());
        assert_balanced(&later);
    }

    #[test]
    fn a_suspension_known_only_afterwards_gives_the_same_outcome() {
        // The reinstatement was read before the settlement: held at T, paid out at the reinstatement, at once.
        let fold = stage_two(vec![suspended(5), reinstated(600)]);
        assert_eq!(
            kinds(&fold),
            [EventType::SettlementFailed, EventType::SettlementCompleted]
        );
        // A suspension that ended before T, or began after it, does not hold it.
        assert_eq!(
            kinds(&stage_two(vec![suspended(1), reinstated(2)])),
            [EventType::SettlementCompleted]
        );
        assert_eq!(
            kinds(&stage_two(vec![suspended(60)])),
            [EventType::SettlementCompleted]
        );
    }

    #[test]
    fn a_suspension_that_arrives_after_a_payout_it_covers_is_reported_not_undone() {
        let paid = stage_two(vec![]);
        assert_eq!(kinds(&paid), [EventType::SettlementCompleted]);
        let mut late = Fold::new(paid.rows.clone());
        late.apply(&suspended(5)).unwrap();
        assert_eq!(
            late.paid_while_suspended,
            paid.rows.settlements.keys().copied().collect::<Vec<_>>()
        );
        assert!(
            late.emitted.is_empty() && late.ledger.is_empty(),
            "nothing is reversed"
        );
        // Again (a replay): known already, not reported twice; one after the payout covers nothing.
        let mut again = Fold::new(late.rows.clone());
        again.apply(&suspended(5)).unwrap();
        again.apply(&suspended(60)).unwrap();
        assert!(again.paid_while_suspended.is_empty());
    }

    #[test]
    fn a_merchant_not_known_yet_is_waited_for() {
        let mut events = story();
        events.remove(0);
        events.extend([ev(EventType::InvoicePaid, 10)]);
        let mut fold = run(&events);
        let err = fold
            .apply(&ev(EventType::PaymentConfirmed, 20))
            .unwrap_err();
        assert!(matches!(err, FoldError::MerchantNotYet(_)), "{err}");
    }

    #[test]
    fn amounts_are_exact_in_the_invoices_currency() {
        for (currency, total, fee, net, rate) in [
            (
                FiatCurrency::from_code("JPY").unwrap(),
                "1650",
                "16",
                "1634",
                "1",
            ),
            (
                FiatCurrency::from_code("BHD").unwrap(),
                "16.495",
                "0.165",
                "16.330",
                "1",
            ),
            (
                FiatCurrency::from_code("USD").unwrap(),
                "16.49",
                "0.41",
                "16.08",
                "2.5",
            ),
        ] {
            let mut events = vec![with(ev(EventType::MerchantCreated, 0), |d| {
                if let EventData::MerchantCreated(m) = d {
                    m.fee_percentage = Percentage::new(rate.parse().unwrap()).unwrap();
                }
            })];
            events.push(with(ev(EventType::InvoiceCreated, 0), |d| {
                if let EventData::InvoiceCreated(i) = d {
                    i.currency = currency;
                    i.total_amount = total.parse().unwrap();
                }
            }));
            events.extend([
                ev(EventType::InvoicePaid, 10),
                ev(EventType::PaymentConfirmed, 20),
            ]);
            let fold = run(&events);
            let EventData::SettlementCreated(s) = fold.emitted[0].data() else {
                panic!()
            };
            assert_eq!(s.currency.code(), currency.code());
            assert_eq!(
                (
                    s.platform_fee_amount.as_decimal(),
                    s.net_amount.as_decimal()
                ),
                (fee.parse().unwrap(), net.parse().unwrap()),
                "{currency}"
            );
            assert_balanced(&fold);
        }
    }
}
