//! The rules of payment ingestion, pure: a partition batch's scanner reports, applied to the rows they concern,
//! become row changes and the domain events to emit.
//!
//! Guarantees:
//! - **Forward only.** Per chain output: `PaymentDetected` once, `PaymentConfirming` only for a confirmation count
//!   above every one announced before (so 3, 2, 5 gives 3 and 5; a duplicate gives nothing), `PaymentConfirmed`
//!   once at the invoice's required confirmations, `PaymentFailed` once (dropped, reorganised out, double spent);
//!   nothing after a failure. An output dropped before it was ever seen emits nothing and is never detected.
//! - **`InvoicePaid` once**, when the confirmed, not failed payments of a not cancelled invoice cover its amount
//!   due; it counts exactly those payments (in detection order), states the over-payment and whether it was late
//!   (the last counted payment detected after `expires_at`). Each one also requests the merchant's `invoice_paid`
//!   e-mail.
//! - **Derived ids.** Every id is a UUID v5 of what it is about: a payment's of its output (network, hash,
//!   index), an event's of its payment (or invoice) and step, the e-mail's of its event — so replaying any prefix
//!   of the topics re-derives the same ids, and event times are the reports' `observed_at`, never the clock.
//! - **A payment in another asset** than its invoice's never counts towards it: `PaymentDetected` in the asset
//!   paid (`amount_due` 0, coverage `over`) and `PaymentFailed` (`other`, details naming both assets) at once, so
//!   the merchant and the customer see it; the money is returned by hand.
//! - **A paid invoice no longer covered** (a payment `InvoicePaid` counted fails — a reorganisation deeper than
//!   the required confirmations, a zero-confirmation payment dropped — and the other confirmed payments fall
//!   short): `InvoicePaid` stands (the contract has no event to retract it, and settlement acts on it at once),
//!   the `PaymentFailed` says so in its details and [`Outcomes::paid_invoice_uncovered`] counts it for the alert
//!   (decision 0034).
//! - **Refusals are typed** ([`FoldError`]): an address no invoice has (or not on that network), or a report
//!   contradicting an earlier one about the same output (another amount or address) — business errors, retried
//!   per the group's policy, then dead-lettered with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use events::integration::{DropReason, IntegrationData, IntegrationEvent, network_name};
use events::money::{Amount, CryptoAsset};
use events::notification::{Channel, NotificationRequested, Recipient};
use events::payload::{
    InvoicePaid, Network, PaymentConfirmed, PaymentConfirming, PaymentCoverage, PaymentDetected,
    PaymentFailed, PaymentFailureReason, TransactionHash,
};
use events::{
    CorrelationId, Envelope, EnvelopeParts, EventData, EventId, InvoiceId, MerchantId, Metadata,
    NotificationId, PaymentId,
};
use uuid::Uuid;

/// Namespace of payment ids (UUID v5 of `network:hash:index`): [`events::integration::PAYMENT_NAMESPACE`].
pub const PAYMENT_NAMESPACE: Uuid = events::integration::PAYMENT_NAMESPACE;
/// Namespace of the ids of the events the service emits. Never change it.
pub const PAYMENT_EVENT_NAMESPACE: Uuid =
    Uuid::from_u128(0x2e8a_6f10_c4b3_4d97_a512_8f0c_3b6e_d941);

/// The payment id of an output ([`events::integration::payment_id`]).
pub fn payment_id(network: Network, hash: &str, index: u32) -> Uuid {
    events::integration::payment_id(network, hash, index)
}

/// The id of the event emitted for `of` (a payment or an invoice) at `step` (`detected`, `confirming:3`, …).
pub fn event_id(of: Uuid, step: &str) -> EventId {
    let mut name = of.as_bytes().to_vec();
    name.push(b':');
    name.extend_from_slice(step.as_bytes());
    EventId::derived(PAYMENT_EVENT_NAMESPACE, &name)
}

/// What the service keeps of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub network: Network,
    /// Matching form ([`events::payload::Address::canonical`]).
    pub address: String,
    pub crypto_currency: CryptoAsset,
    pub crypto_amount: Amount,
    pub required_confirmations: u32,
    pub expires_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub paid_event_id: Option<Uuid>,
}

/// What the service keeps of a chain output paying an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub network: Network,
    pub transaction_hash: String,
    pub output_index: u32,
    pub amount: Amount,
    /// `None`: dropped before it was ever seen.
    pub detected_at: Option<DateTime<Utc>>,
    pub late: bool,
    /// The highest confirmation count announced.
    pub confirmations: u32,
    pub block_height: Option<u64>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// The rows a batch reads and may write.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub invoices: BTreeMap<Uuid, Invoice>,
    /// `(network, matching address)` → invoice.
    pub by_address: HashMap<(Network, String), Uuid>,
    pub outputs: BTreeMap<Uuid, Output>,
}

impl Rows {
    pub fn insert_invoice(&mut self, invoice: Invoice) {
        self.by_address.insert(
            (invoice.network, invoice.address.clone()),
            invoice.invoice_id,
        );
        self.invoices.insert(invoice.invoice_id, invoice);
    }
}

/// Why a report cannot be applied (business errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error(
        "no invoice has the deposit address {address} on {network}: an unknown address (or its InvoiceCreated has not \
         arrived yet)"
    )]
    UnknownAddress { network: String, address: String },
    #[error("the report on output {output} contradicts an earlier one: {why}")]
    Contradiction { output: String, why: String },
}

/// What a batch's reports came to, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub detected: u64,
    pub confirming: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub invoices_paid: u64,
    pub ignored: u64,
    /// Outputs in another asset than their invoice's: detected and failed at once (also counted there).
    pub wrong_asset: u64,
    /// Failures of a payment an `InvoicePaid` counted that leave the invoice no longer covered (also counted as
    /// failed): a reorganisation deeper than the required confirmations, or a zero-confirmation payment dropped.
    pub paid_invoice_uncovered: u64,
}

/// A batch in progress.
#[derive(Debug)]
pub struct Fold {
    pub rows: Rows,
    pub dirty_outputs: BTreeSet<Uuid>,
    pub dirty_invoices: BTreeSet<Uuid>,
    /// Events to append to the outbox, in order.
    pub emitted: Vec<Envelope>,
    /// The merchants' e-mails about paid invoices.
    pub notifications: Vec<NotificationRequested>,
    pub outcomes: Outcomes,
}

impl Fold {
    pub fn new(rows: Rows) -> Fold {
        Fold {
            rows,
            dirty_outputs: BTreeSet::new(),
            dirty_invoices: BTreeSet::new(),
            emitted: Vec::new(),
            notifications: Vec::new(),
            outcomes: Outcomes::default(),
        }
    }

    /// Applies one report. On `Err` nothing of it took effect.
    pub fn apply(&mut self, report: &IntegrationEvent) -> Result<(), FoldError> {
        let out = report.data.output();
        let key = (out.network, out.address.canonical(out.network));
        let Some(invoice_id) = self.rows.by_address.get(&key).copied() else {
            return Err(FoldError::UnknownAddress {
                network: network_name(out.network).into(),
                address: out.address.to_string(),
            });
        };
        let invoice = self.rows.invoices[&invoice_id].clone();
        if invoice.crypto_currency != out.crypto_currency {
            return self.wrong_asset(report, &invoice);
        }
        let id = payment_id(out.network, out.transaction_hash.as_str(), out.output_index);
        let at = report.observed_at;
        let existing = self.rows.outputs.get(&id).cloned();
        if let Some(o) = &existing
            && (o.amount != out.amount || o.invoice_id != invoice_id)
        {
            return Err(FoldError::Contradiction {
                output: report.output_id(),
                why: format!(
                    "{} {} to invoice {}, earlier {} to invoice {}",
                    out.amount,
                    out.crypto_currency.code(),
                    invoice_id,
                    o.amount,
                    o.invoice_id
                ),
            });
        }
        let mut o = existing.unwrap_or_else(|| Output {
            payment_id: id,
            invoice_id,
            network: out.network,
            transaction_hash: out.transaction_hash.to_string(),
            output_index: out.output_index,
            amount: out.amount,
            detected_at: None,
            late: false,
            confirmations: 0,
            block_height: None,
            confirmed_at: None,
            failed_at: None,
        });
        let new = !self.rows.outputs.contains_key(&id);
        if o.failed_at.is_some() || (!new && o.detected_at.is_none()) {
            // Failed, or dropped before it was seen: nothing moves any more.
            self.outcomes.ignored += 1;
            return Ok(());
        }
        let cause = report.event_id;
        let source = report.source.as_str();
        match &report.data {
            IntegrationData::TransactionDropped(d) => {
                o.failed_at = Some(at);
                if o.detected_at.is_some() {
                    let reason = match d.reason {
                        DropReason::Dropped => PaymentFailureReason::Dropped,
                        DropReason::Reorganized => PaymentFailureReason::ChainReorganization,
                        DropReason::DoubleSpent => PaymentFailureReason::DoubleSpent,
                    };
                    let mut details = d.details.clone();
                    if let Some(paid) = invoice.paid_event_id
                        && o.confirmed_at.is_some()
                    {
                        let covered = self.confirmed_without(invoice_id, o.payment_id);
                        if covered < invoice.crypto_amount {
                            // InvoicePaid counted it and nothing replaces it: say so on the event, count it
                            // for the alert (decision 0034: a paid invoice no longer covered).
                            details = Some(format!(
                                "paid invoice no longer covered: InvoicePaid {} counted this payment; the \
                                 confirmed payments now cover {covered} of {} {} — review the invoice's \
                                 settlement",
                                EventId::from_uuid(paid)
                                    .map(|e| e.to_string())
                                    .unwrap_or_default(),
                                invoice.crypto_amount,
                                invoice.crypto_currency.code()
                            ));
                            self.outcomes.paid_invoice_uncovered += 1;
                        }
                    }
                    let data = PaymentFailed {
                        invoice_id: inv(invoice_id),
                        merchant_id: mer(invoice.merchant_id),
                        crypto_currency: invoice.crypto_currency,
                        network: o.network,
                        transaction_hash: hash(&o.transaction_hash),
                        amount: o.amount,
                        reason,
                        details,
                        failed_at: at,
                    };
                    self.emit(
                        &invoice,
                        o.payment_id,
                        "failed",
                        data.into(),
                        at,
                        cause,
                        source,
                    );
                    self.outcomes.failed += 1;
                } else {
                    self.outcomes.ignored += 1;
                }
            }
            IntegrationData::TransactionObserved(_) | IntegrationData::ConfirmationsChanged(_) => {
                let (height, confirmations) = report.data.confirmations().expect("not a drop");
                if o.detected_at.is_none() {
                    let received = self.received(invoice_id);
                    let amount_due = invoice
                        .crypto_amount
                        .checked_sub(received)
                        .unwrap_or(Amount::ZERO);
                    let coverage = match o.amount.cmp(&amount_due) {
                        std::cmp::Ordering::Less => PaymentCoverage::Partial,
                        std::cmp::Ordering::Equal => PaymentCoverage::Full,
                        std::cmp::Ordering::Greater => PaymentCoverage::Over,
                    };
                    o.detected_at = Some(at);
                    o.late = at > invoice.expires_at;
                    let data = PaymentDetected {
                        invoice_id: inv(invoice_id),
                        merchant_id: mer(invoice.merchant_id),
                        crypto_currency: invoice.crypto_currency,
                        network: o.network,
                        transaction_hash: hash(&o.transaction_hash),
                        amount: o.amount,
                        amount_due,
                        coverage,
                        late: o.late,
                        required_confirmations: invoice.required_confirmations,
                        detected_at: at,
                    };
                    self.emit(
                        &invoice,
                        o.payment_id,
                        "detected",
                        data.into(),
                        at,
                        cause,
                        source,
                    );
                    self.outcomes.detected += 1;
                }
                let required = invoice.required_confirmations;
                if o.confirmed_at.is_some() {
                    self.outcomes.ignored += 1;
                } else if confirmations >= required {
                    o.confirmations = o.confirmations.max(confirmations);
                    o.block_height = height;
                    o.confirmed_at = Some(at);
                    let data = PaymentConfirmed {
                        invoice_id: inv(invoice_id),
                        merchant_id: mer(invoice.merchant_id),
                        crypto_currency: invoice.crypto_currency,
                        network: o.network,
                        transaction_hash: hash(&o.transaction_hash),
                        amount: o.amount,
                        confirmations,
                        required_confirmations: required,
                        block_height: height,
                        confirmed_at: at,
                    };
                    self.emit(
                        &invoice,
                        o.payment_id,
                        "confirmed",
                        data.into(),
                        at,
                        cause,
                        source,
                    );
                    self.outcomes.confirmed += 1;
                } else if confirmations > o.confirmations {
                    o.confirmations = confirmations;
                    o.block_height = height;
                    let data = PaymentConfirming {
                        invoice_id: inv(invoice_id),
                        merchant_id: mer(invoice.merchant_id),
                        crypto_currency: invoice.crypto_currency,
                        network: o.network,
                        transaction_hash: hash(&o.transaction_hash),
                        amount: o.amount,
                        confirmations,
                        required_confirmations: required,
                        block_height: height.expect("confirmations ≥ 1 come with a block height"),
                    };
                    let step = format!("confirming:{confirmations}");
                    self.emit(
                        &invoice,
                        o.payment_id,
                        &step,
                        data.into(),
                        at,
                        cause,
                        source,
                    );
                    self.outcomes.confirming += 1;
                } else {
                    self.outcomes.ignored += 1;
                }
            }
        }
        self.rows.outputs.insert(id, o);
        self.dirty_outputs.insert(id);
        self.check_paid(invoice_id, at, cause, source);
        Ok(())
    }

    /// Confirmed, not failed payments of `invoice` but `except`.
    fn confirmed_without(&self, invoice: Uuid, except: Uuid) -> Amount {
        self.rows
            .outputs
            .values()
            .filter(|o| {
                o.invoice_id == invoice
                    && o.payment_id != except
                    && o.confirmed_at.is_some()
                    && o.failed_at.is_none()
            })
            .fold(Amount::ZERO, |sum, o| {
                sum.checked_add(o.amount)
                    .expect("amounts stay far below the maximum")
            })
    }

    /// An output paying `invoice`'s address in another asset: it never counts towards the invoice, and the
    /// merchant and the customer must see it — `PaymentDetected` in the asset paid (nothing of it was due:
    /// `amount_due` 0, coverage `over`) and, in the same transaction, `PaymentFailed` (`other`, the details
    /// saying what was paid and what the invoice wants). Any later report on the output is ignored; a drop
    /// reported first records the output, emitting nothing (as for any output).
    fn wrong_asset(
        &mut self,
        report: &IntegrationEvent,
        invoice: &Invoice,
    ) -> Result<(), FoldError> {
        let out = report.data.output();
        let id = payment_id(out.network, out.transaction_hash.as_str(), out.output_index);
        if let Some(o) = self.rows.outputs.get(&id) {
            if o.amount != out.amount || o.invoice_id != invoice.invoice_id {
                return Err(FoldError::Contradiction {
                    output: report.output_id(),
                    why: format!(
                        "{} {} to invoice {}, earlier {} to invoice {}",
                        out.amount,
                        out.crypto_currency.code(),
                        invoice.invoice_id,
                        o.amount,
                        o.invoice_id
                    ),
                });
            }
            self.outcomes.ignored += 1;
            return Ok(());
        }
        let at = report.observed_at;
        let seen = !matches!(report.data, IntegrationData::TransactionDropped(_));
        let o = Output {
            payment_id: id,
            invoice_id: invoice.invoice_id,
            network: out.network,
            transaction_hash: out.transaction_hash.to_string(),
            output_index: out.output_index,
            amount: out.amount,
            detected_at: seen.then_some(at),
            late: at > invoice.expires_at,
            confirmations: 0,
            block_height: None,
            confirmed_at: None,
            failed_at: Some(at),
        };
        if seen {
            let (cause, source) = (report.event_id, report.source.as_str());
            let detected = PaymentDetected {
                invoice_id: inv(invoice.invoice_id),
                merchant_id: mer(invoice.merchant_id),
                crypto_currency: out.crypto_currency,
                network: out.network,
                transaction_hash: out.transaction_hash.clone(),
                amount: out.amount,
                amount_due: Amount::ZERO,
                coverage: PaymentCoverage::Over,
                late: o.late,
                required_confirmations: invoice.required_confirmations,
                detected_at: at,
            };
            self.emit(invoice, id, "detected", detected.into(), at, cause, source);
            let failed = PaymentFailed {
                invoice_id: inv(invoice.invoice_id),
                merchant_id: mer(invoice.merchant_id),
                crypto_currency: out.crypto_currency,
                network: out.network,
                transaction_hash: out.transaction_hash.clone(),
                amount: out.amount,
                reason: PaymentFailureReason::Other,
                details: Some(format!(
                    "wrong asset: {} {} paid to {} on {}, but invoice {} is priced in {} — it does not count \
                     towards the invoice and must be returned by hand",
                    out.amount,
                    out.crypto_currency.code(),
                    out.address,
                    network_name(out.network),
                    inv(invoice.invoice_id),
                    invoice.crypto_currency.code()
                )),
                failed_at: at,
            };
            self.emit(invoice, id, "failed", failed.into(), at, cause, source);
            self.outcomes.detected += 1;
            self.outcomes.failed += 1;
            self.outcomes.wrong_asset += 1;
        } else {
            self.outcomes.ignored += 1;
        }
        self.rows.outputs.insert(id, o);
        self.dirty_outputs.insert(id);
        Ok(())
    }

    /// Detected, not failed payments of `invoice` so far.
    fn received(&self, invoice: Uuid) -> Amount {
        self.rows
            .outputs
            .values()
            .filter(|o| o.invoice_id == invoice && o.detected_at.is_some() && o.failed_at.is_none())
            .fold(Amount::ZERO, |sum, o| {
                sum.checked_add(o.amount)
                    .expect("amounts stay far below the maximum")
            })
    }

    fn check_paid(&mut self, invoice_id: Uuid, at: DateTime<Utc>, cause: EventId, source: &str) {
        let invoice = self.rows.invoices[&invoice_id].clone();
        if invoice.paid_event_id.is_some() || invoice.cancelled_at.is_some() {
            return;
        }
        let mut counted: Vec<&Output> = self
            .rows
            .outputs
            .values()
            .filter(|o| {
                o.invoice_id == invoice_id && o.confirmed_at.is_some() && o.failed_at.is_none()
            })
            .collect();
        counted.sort_by_key(|o| (o.detected_at, o.payment_id));
        let paid = counted.iter().fold(Amount::ZERO, |sum, o| {
            sum.checked_add(o.amount)
                .expect("amounts stay far below the maximum")
        });
        let Some(overpaid) = paid.checked_sub(invoice.crypto_amount) else {
            return;
        };
        let paid_at = counted
            .iter()
            .filter_map(|o| o.detected_at)
            .max()
            .expect("a paid invoice has counted payments");
        let data = InvoicePaid {
            merchant_id: mer(invoice.merchant_id),
            crypto_currency: invoice.crypto_currency,
            crypto_amount_due: invoice.crypto_amount,
            crypto_amount_paid: paid,
            overpaid_amount: overpaid,
            late_payment: paid_at > invoice.expires_at,
            payment_ids: counted
                .iter()
                .map(|o| PaymentId::from_uuid(o.payment_id).expect("derived ids are never nil"))
                .collect(),
            paid_at,
        };
        let parameters = [
            ("invoice_id", inv(invoice_id).to_string()),
            ("amount_due", data.crypto_amount_due.to_string()),
            ("amount_paid", data.crypto_amount_paid.to_string()),
            ("overpaid_amount", data.overpaid_amount.to_string()),
            ("crypto_currency", data.crypto_currency.code().to_string()),
            (
                "late_payment",
                if data.late_payment { "yes" } else { "no" }.to_string(),
            ),
        ];
        let event = self.emit(&invoice, invoice_id, "paid", data.into(), at, cause, source);
        self.notifications.push(NotificationRequested {
            notification_id: NotificationId::derived(event, "invoice_paid.email"),
            requested_at: at,
            recipient: Recipient::merchant(mer(invoice.merchant_id)),
            channel: Channel::Email,
            template: "invoice_paid".into(),
            locale: "en".into(),
            parameters: parameters
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            destination: None,
            causation_id: Some(event),
        });
        let row = self
            .rows
            .invoices
            .get_mut(&invoice_id)
            .expect("loaded with the batch");
        row.paid_event_id = Some(event.as_uuid());
        self.dirty_invoices.insert(invoice_id);
        self.outcomes.invoices_paid += 1;
    }

    /// Appends one event about `of` (a payment, or the invoice for `InvoicePaid`) and returns its id.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        invoice: &Invoice,
        of: Uuid,
        step: &str,
        data: EventData,
        at: DateTime<Utc>,
        cause: EventId,
        source: &str,
    ) -> EventId {
        let id = event_id(of, step);
        let aggregate_id = match data {
            EventData::InvoicePaid(_) => inv(of).into(),
            _ => PaymentId::from_uuid(of)
                .expect("derived ids are never nil")
                .into(),
        };
        let metadata = Metadata {
            source: Some(source.to_string()),
            ..Metadata::system("payment-ingestion").expect("a valid system actor")
        };
        let envelope = Envelope::from_parts(EnvelopeParts {
            event_id: id,
            aggregate_id,
            event_data: data,
            metadata,
            timestamp: at,
            correlation_id: invoice
                .correlation_id
                .map(|c| CorrelationId::from_uuid(c).expect("stored ids are never nil")),
            causation_id: Some(cause),
        })
        .expect("the fold builds valid events");
        self.emitted.push(envelope);
        id
    }
}

fn inv(id: Uuid) -> InvoiceId {
    InvoiceId::from_uuid(id).expect("stored ids are never nil")
}

fn mer(id: Uuid) -> MerchantId {
    MerchantId::from_uuid(id).expect("stored ids are never nil")
}

fn hash(text: &str) -> TransactionHash {
    TransactionHash::parse(text).expect("stored hashes were valid")
}

#[cfg(test)]
mod tests {
    use events::payload::Address;

    use super::*;
    use crate::simulate::{Chaos, Fate, SimPayment, play};

    const ADDRESS: &str = events::examples::TRON_ADDRESS;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rows(due: &str, required: u32) -> Rows {
        let mut rows = Rows::default();
        rows.insert_invoice(Invoice {
            invoice_id: Uuid::from_u128(1),
            merchant_id: Uuid::from_u128(2),
            network: Network::Tron,
            address: ADDRESS.into(),
            crypto_currency: CryptoAsset::Usdt,
            crypto_amount: due.parse().unwrap(),
            required_confirmations: required,
            expires_at: at("2026-11-30T10:30:00Z"),
            correlation_id: None,
            cancelled_at: None,
            paid_event_id: None,
        });
        rows
    }

    fn pay(amount: &str, minute: u32, fate: Fate) -> SimPayment {
        SimPayment {
            network: Network::Tron,
            asset: CryptoAsset::Usdt,
            address: Address(ADDRESS.into()),
            amount: amount.parse().unwrap(),
            required_confirmations: 5,
            at: at(&format!("2026-11-30T10:{minute:02}:00Z")),
            fate,
        }
    }

    fn run(rows: Rows, reports: &[IntegrationEvent]) -> Fold {
        let mut fold = Fold::new(rows);
        for r in reports {
            fold.apply(r).unwrap();
        }
        fold
    }

    fn types(fold: &Fold) -> Vec<String> {
        fold.emitted
            .iter()
            .map(|e| match e.data() {
                EventData::PaymentConfirming(c) => format!("Confirming({})", c.confirmations),
                d => d
                    .event_type()
                    .as_str()
                    .trim_start_matches("Payment")
                    .to_string(),
            })
            .collect()
    }

    #[test]
    fn an_exact_payment_is_detected_confirms_in_steps_and_pays_the_invoice_once() {
        let reports = play(
            1,
            "scanner:tron",
            &[pay("16.49", 5, Fate::Confirms)],
            Chaos::default(),
        );
        let fold = run(rows("16.49", 5), &reports);
        assert_eq!(
            types(&fold),
            [
                "Detected",
                "Confirming(1)",
                "Confirming(2)",
                "Confirming(3)",
                "Confirming(4)",
                "Confirmed",
                "InvoicePaid"
            ]
        );
        let EventData::InvoicePaid(paid) = fold.emitted.last().unwrap().data() else {
            unreachable!()
        };
        assert_eq!(paid.overpaid_amount, Amount::ZERO);
        assert!(!paid.late_payment);
        assert_eq!(fold.notifications.len(), 1);
        assert_eq!(fold.notifications[0].template, "invoice_paid");
    }

    #[test]
    fn duplicates_and_reordering_never_repeat_or_reverse_a_step() {
        let payments = [pay("16.49", 5, Fate::SurvivesReorg { peak: 3 })];
        let calm = run(
            rows("16.49", 5),
            &play(1, "scanner:tron", &payments, Chaos::default()),
        );
        let chaos = Chaos {
            duplicates: true,
            reorder: true,
        };
        let wild = run(rows("16.49", 5), &play(1, "scanner:tron", &payments, chaos));
        for fold in [&calm, &wild] {
            let t = types(fold);
            assert_eq!(t.iter().filter(|t| *t == "Detected").count(), 1, "{t:?}");
            assert_eq!(t.iter().filter(|t| *t == "Confirmed").count(), 1, "{t:?}");
            assert_eq!(t.iter().filter(|t| *t == "InvoicePaid").count(), 1, "{t:?}");
            let steps: Vec<u32> = fold
                .emitted
                .iter()
                .filter_map(|e| match e.data() {
                    EventData::PaymentConfirming(c) => Some(c.confirmations),
                    _ => None,
                })
                .collect();
            assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
            let ids: BTreeSet<EventId> = fold.emitted.iter().map(|e| e.event_id()).collect();
            assert_eq!(ids.len(), fold.emitted.len(), "unique event ids");
        }
        // 1, 2, 3, (2, 3 again), 4 in the calm chain.
        assert_eq!(
            types(&calm),
            [
                "Detected",
                "Confirming(1)",
                "Confirming(2)",
                "Confirming(3)",
                "Confirming(4)",
                "Confirmed",
                "InvoicePaid"
            ]
        );
    }

    #[test]
    fn a_replay_rederives_the_same_events() {
        let reports = play(
            3,
            "scanner:tron",
            &[pay("16.49", 5, Fate::Confirms)],
            Chaos::default(),
        );
        let once = run(rows("16.49", 5), &reports);
        let twice = run(rows("16.49", 5), &reports);
        assert_eq!(once.emitted, twice.emitted);
        assert_eq!(once.notifications, twice.notifications);
    }

    #[test]
    fn split_partial_over_and_late_payments() {
        // Split: 10 + 6.49 covers 16.49.
        let split = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[pay("10", 5, Fate::Confirms), pay("6.49", 6, Fate::Confirms)],
                Chaos::default(),
            ),
        );
        let detected: Vec<(String, PaymentCoverage)> = split
            .emitted
            .iter()
            .filter_map(|e| match e.data() {
                EventData::PaymentDetected(d) => Some((d.amount_due.to_string(), d.coverage)),
                _ => None,
            })
            .collect();
        assert_eq!(
            detected,
            [
                ("16.49".to_string(), PaymentCoverage::Partial),
                ("6.49".to_string(), PaymentCoverage::Full)
            ]
        );
        let EventData::InvoicePaid(paid) = split.emitted.last().unwrap().data() else {
            panic!("{:?}", types(&split))
        };
        assert_eq!(paid.payment_ids.len(), 2);
        // Partial: never paid.
        let partial = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[pay("10", 5, Fate::Confirms)],
                Chaos::default(),
            ),
        );
        assert!(!types(&partial).contains(&"InvoicePaid".to_string()));
        // Over: paid, over-payment stated.
        let over = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[pay("20", 5, Fate::Confirms)],
                Chaos::default(),
            ),
        );
        let EventData::InvoicePaid(paid) = over.emitted.last().unwrap().data() else {
            unreachable!()
        };
        assert_eq!(paid.overpaid_amount.to_string(), "3.51");
        // Late: detected after expires_at (10:30).
        let late = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[pay("16.49", 45, Fate::Confirms)],
                Chaos::default(),
            ),
        );
        let EventData::InvoicePaid(paid) = late.emitted.last().unwrap().data() else {
            unreachable!()
        };
        assert!(paid.late_payment);
    }

    #[test]
    fn dropped_and_reorganised_payments_fail_once_and_never_count() {
        let fold = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[
                    pay("16.49", 5, Fate::Dropped),
                    pay("16.49", 6, Fate::ReorganizedOut { after: 2 }),
                ],
                Chaos {
                    duplicates: true,
                    reorder: false,
                },
            ),
        );
        let failed: Vec<PaymentFailureReason> = fold
            .emitted
            .iter()
            .filter_map(|e| match e.data() {
                EventData::PaymentFailed(f) => Some(f.reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            [
                PaymentFailureReason::Dropped,
                PaymentFailureReason::ChainReorganization
            ]
        );
        assert!(!types(&fold).contains(&"InvoicePaid".to_string()));
        assert!(!types(&fold).contains(&"Confirmed".to_string()));
    }

    #[test]
    fn unknown_addresses_are_refused_with_the_reason() {
        let mut other = pay("16.49", 5, Fate::Confirms);
        other.address = Address("TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf".into());
        let reports = play(1, "scanner:tron", &[other], Chaos::default());
        let err = Fold::new(rows("16.49", 5)).apply(&reports[0]).unwrap_err();
        assert!(matches!(err, FoldError::UnknownAddress { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf")
        );
    }

    #[test]
    fn a_payment_in_the_wrong_asset_is_detected_and_failed_at_once_and_never_counts() {
        let mut usdc = rows("16.49", 5);
        usdc.invoices
            .get_mut(&Uuid::from_u128(1))
            .unwrap()
            .crypto_currency = CryptoAsset::Usdc;
        let chaos = Chaos {
            duplicates: true,
            reorder: true,
        };
        let fold = run(
            usdc,
            &play(1, "scanner:tron", &[pay("16.49", 5, Fate::Confirms)], chaos),
        );
        assert_eq!(
            types(&fold),
            ["Detected", "Failed"],
            "once, whatever follows"
        );
        let EventData::PaymentDetected(d) = fold.emitted[0].data() else {
            unreachable!()
        };
        assert_eq!(d.crypto_currency, CryptoAsset::Usdt, "the asset paid");
        assert_eq!(
            (d.amount_due, d.coverage),
            (Amount::ZERO, PaymentCoverage::Over)
        );
        let EventData::PaymentFailed(f) = fold.emitted[1].data() else {
            unreachable!()
        };
        assert_eq!(f.reason, PaymentFailureReason::Other);
        let details = f.details.as_deref().unwrap();
        assert!(
            details.contains("wrong asset") && details.contains("USDT") && details.contains("USDC"),
            "{details}"
        );
        assert_eq!(fold.outcomes.wrong_asset, 1);
        assert!(fold.notifications.is_empty());
    }

    #[test]
    fn a_reorganisation_after_invoice_paid_says_the_invoice_is_no_longer_covered() {
        // Confirmed at 5, paid, then reorganised out after 6 confirmations.
        let fold = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[pay("16.49", 5, Fate::ReorganizedOut { after: 6 })],
                Chaos::default(),
            ),
        );
        let t = types(&fold);
        assert_eq!(
            &t[t.len() - 3..],
            ["Confirmed", "InvoicePaid", "Failed"],
            "{t:?}"
        );
        let EventData::PaymentFailed(f) = fold.emitted.last().unwrap().data() else {
            unreachable!()
        };
        assert_eq!(f.reason, PaymentFailureReason::ChainReorganization);
        let details = f.details.as_deref().unwrap();
        assert!(
            details.contains("no longer covered") && details.contains("cover 0 of 16.49 USDT"),
            "{details}"
        );
        assert_eq!(fold.outcomes.paid_invoice_uncovered, 1);
        assert_eq!(fold.outcomes.invoices_paid, 1, "InvoicePaid stands, once");

        // Another confirmed payment still covers it: a plain failure, no alert.
        let fold = run(
            rows("16.49", 5),
            &play(
                1,
                "scanner:tron",
                &[
                    pay("16.49", 5, Fate::Confirms),
                    pay("16.49", 5, Fate::ReorganizedOut { after: 6 }),
                ],
                Chaos::default(),
            ),
        );
        assert!(types(&fold).contains(&"Failed".to_string()));
        assert_eq!(fold.outcomes.paid_invoice_uncovered, 0);
        let f = fold
            .emitted
            .iter()
            .find_map(|e| match e.data() {
                EventData::PaymentFailed(f) => Some(f),
                _ => None,
            })
            .unwrap();
        assert_eq!(f.details, None);
    }

    #[test]
    fn a_cancelled_invoice_records_payments_but_is_never_paid() {
        let mut r = rows("16.49", 5);
        r.invoices
            .get_mut(&Uuid::from_u128(1))
            .unwrap()
            .cancelled_at = Some(at("2026-11-30T10:01:00Z"));
        let fold = run(
            r,
            &play(
                1,
                "scanner:tron",
                &[pay("16.49", 5, Fate::Confirms)],
                Chaos::default(),
            ),
        );
        assert!(types(&fold).contains(&"Confirmed".to_string()));
        assert!(!types(&fold).contains(&"InvoicePaid".to_string()));
    }
}
