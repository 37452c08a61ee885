//! The read models' rules as pure functions: rows as they are + events in order → rows as they must become.
//!
//! [`crate::apply::apply_batch`] loads the rows a batch touches, folds the batch's new events over them here and
//! writes back the rows marked dirty. Nothing here touches a database, so every rule is unit-tested on plain
//! structs (given rows, when events, then rows).
//!
//! Guarantees — the semantics the per-event SQL had (decision 0009), event by event, in batch order:
//! - **Every row an applied event touches** gets `version + 1`, `last_event_id` and `last_event_at` of that event,
//!   even when nothing else changes (a repeated confirmation still counts as an event applied to the row).
//!   A creation of an aggregate that exists already (another event id) touches nothing.
//! - **Monotonic facts**: confirmations only grow, first times are kept (`paid_at`, `confirmed_at`, `expired_at`,
//!   `cancelled_at`, `failed_at`, `block_height`, …), a failed payment stays failed, a completed settlement stays
//!   completed.
//! - **Amounts**: a new detection adds the payment's amount to the invoice and a first failure subtracts it;
//!   `InvoicePaid`, `InvoiceExpired` and `InvoiceCancelled` state the platform's figure (the latter two only while
//!   the invoice is not paid). Exact decimals throughout (their scale behaves like `numeric`'s: a sum keeps the
//!   larger scale).
//! - **Confirmation**: an invoice is confirmed (at the confirming event's time) when it is paid and every payment
//!   `InvoicePaid` counted is confirmed — whichever comes last, the payments or the `InvoicePaid`.
//! - **Merchants**: a suspension sets `suspended`; a reinstatement sets `active` again and `reinstated_at` (the
//!   last one), keeping the last suspension's `suspended_at`/`suspension_reason`/`suspension_details` as history.
//!   Stale facts cannot move the status back: a suspension at or before the last reinstatement, or a
//!   reinstatement before the current suspension's start, changes nothing but the version (decision 0009).
//! - **Balances** move by what a settlement contributes in its new status minus what it contributed before, so
//!   they always equal the sum over the merchant's settlements.
//! - **Orphans are refused**: an event about an invoice, payment, settlement or merchant that is neither among
//!   the loaded rows nor created earlier in the fold is [`ApplyError::Unknown`]; the fold stops there and the
//!   caller discards everything (the batch is all-or-nothing). An event that fails changes no row.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events::money::{Amount, Decimal};
use events::payload::*;
use events::{Envelope, EventData};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apply::ApplyError;

/// The wire spelling of a payload enum (`double_spent`, `low_speed`, …).
pub(crate) fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<unserialisable: {e}>"),
    }
}

fn dec(amount: Amount) -> Decimal {
    amount.as_decimal()
}

/// `a + b` as PostgreSQL's `numeric` computes it: exact, with the larger scale of the two (`16.33 + -16.33` is
/// `0.00`, where `rust_decimal` would say `0`), so that a row written back is the row the SQL would have written.
pub(crate) fn numeric_add(a: Decimal, b: Decimal) -> Decimal {
    let mut sum = a + b;
    sum.rescale(a.scale().max(b.scale()));
    if sum.is_zero() {
        sum.set_sign_positive(true);
    }
    sum
}

/// Identity of the event being applied, written into every row it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub event_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Stamp {
    pub fn of(event: &Envelope) -> Stamp {
        Stamp {
            event_id: event.event_id().as_uuid(),
            at: event.timestamp(),
        }
    }
}

/// A row of `proj_invoices` (every column but the generated `status`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Invoice {
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub currency: String,
    pub total_amount: Decimal,
    pub crypto_currency: String,
    pub crypto_amount_due: Decimal,
    pub amount_paid: Decimal,
    pub overpaid_amount: Decimal,
    pub late_payment: bool,
    pub payment_ids: Vec<Uuid>,
    pub payments_detected: i32,
    pub payments_confirmed: i32,
    pub payments_failed: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<String>,
    pub version: i32,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// A row of `proj_payments`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Payment {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub crypto_currency: String,
    pub network: String,
    pub transaction_hash: String,
    pub amount: Decimal,
    pub amount_due: Decimal,
    pub coverage: String,
    pub late: bool,
    pub required_confirmations: i32,
    pub confirmations: i32,
    pub block_height: Option<i64>,
    /// `detected`, `confirming`, `confirmed` or `failed`.
    pub status: String,
    pub detected_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub version: i32,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// A row of `proj_merchants`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Merchant {
    pub merchant_id: Uuid,
    pub business_name: String,
    /// `active` or `suspended`.
    pub status: String,
    pub default_currency: String,
    pub settlement_currency: String,
    pub fee_percentage: Decimal,
    pub accepted_crypto_currencies: Vec<String>,
    pub speed_policy: String,
    pub invoice_expiry_minutes: Option<i32>,
    pub payment_tolerance_percentage: Option<Decimal>,
    pub created_at: DateTime<Utc>,
    /// Start of the last suspension (kept after a reinstatement, as history).
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspension_reason: Option<String>,
    pub suspension_details: Option<String>,
    /// The last reinstatement.
    pub reinstated_at: Option<DateTime<Utc>>,
    /// Where its notifications go (MerchantCreated and SettingsUpdated v2); `None`: nothing on file.
    pub contact_email: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_locale: Option<String>,
    pub version: i32,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// A row of `proj_settlements`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Settlement {
    pub settlement_id: Uuid,
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
    pub fee_percentage: Decimal,
    /// `pending`, `retrying`, `completed` or `failed`.
    pub status: String,
    pub failures: i32,
    pub failure_reason: Option<String>,
    pub failure_details: Option<String>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// A row of `proj_merchant_balances`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Balance {
    pub merchant_id: Uuid,
    pub currency: String,
    pub pending_net: Decimal,
    pub settled_gross: Decimal,
    pub settled_fees: Decimal,
    pub settled_net: Decimal,
    pub failed_net: Decimal,
    pub settlements_completed: i32,
    pub version: i32,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// The rows a batch may read or write, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub invoices: BTreeMap<Uuid, Invoice>,
    pub payments: BTreeMap<Uuid, Payment>,
    pub merchants: BTreeMap<Uuid, Merchant>,
    pub settlements: BTreeMap<Uuid, Settlement>,
    /// By merchant and settlement currency.
    pub balances: BTreeMap<(Uuid, String), Balance>,
}

/// The keys of the rows the fold created or changed: what must be written back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub invoices: BTreeSet<Uuid>,
    pub payments: BTreeSet<Uuid>,
    pub merchants: BTreeSet<Uuid>,
    pub settlements: BTreeSet<Uuid>,
    pub balances: BTreeSet<(Uuid, String)>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.invoices.is_empty()
            && self.payments.is_empty()
            && self.merchants.is_empty()
            && self.settlements.is_empty()
            && self.balances.is_empty()
    }
}

/// Rows being folded over, and which of them changed.
#[derive(Debug, Clone, Default)]
pub struct Fold {
    pub rows: Rows,
    pub dirty: Dirty,
}

fn unknown(what: &str, id: Uuid) -> ApplyError {
    ApplyError::Unknown(format!(
        "{what} {id} is unknown to the read models (its creation was never applied)"
    ))
}

/// Counts one more applied event on a row.
macro_rules! touch {
    ($row:expr, $stamp:expr) => {{
        let row = $row;
        row.version += 1;
        row.last_event_id = $stamp.event_id;
        row.last_event_at = $stamp.at;
    }};
}

/// What one settlement adds to its merchant's balance in a given status.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Contribution {
    pending_net: Decimal,
    settled_gross: Decimal,
    settled_fees: Decimal,
    settled_net: Decimal,
    failed_net: Decimal,
    completed: i32,
}

impl Contribution {
    fn of(status: &str, gross: Decimal, fee: Decimal, net: Decimal) -> Contribution {
        match status {
            "completed" => Contribution {
                settled_gross: gross,
                settled_fees: fee,
                settled_net: net,
                completed: 1,
                ..Default::default()
            },
            "failed" => Contribution {
                failed_net: net,
                ..Default::default()
            },
            // pending, retrying
            _ => Contribution {
                pending_net: net,
                ..Default::default()
            },
        }
    }

    fn minus(self, before: Contribution) -> Contribution {
        Contribution {
            pending_net: self.pending_net - before.pending_net,
            settled_gross: self.settled_gross - before.settled_gross,
            settled_fees: self.settled_fees - before.settled_fees,
            settled_net: self.settled_net - before.settled_net,
            failed_net: self.failed_net - before.failed_net,
            completed: self.completed - before.completed,
        }
    }
}

enum SettlementChange<'a> {
    Completed {
        settled_at: DateTime<Utc>,
    },
    Failed {
        at: DateTime<Utc>,
        reason: String,
        details: &'a Option<String>,
        will_retry: bool,
    },
}

impl Fold {
    /// A fold over `rows` (as loaded), nothing dirty yet.
    pub fn new(rows: Rows) -> Fold {
        Fold {
            rows,
            dirty: Dirty::default(),
        }
    }

    /// Applies one event (not a duplicate: de-duplication is the caller's) to the rows. On error no row changed.
    pub fn apply(&mut self, event: &Envelope) -> Result<(), ApplyError> {
        let stamp = Stamp::of(event);
        let id = event.aggregate_id().as_uuid();
        match event.data() {
            EventData::InvoiceCreated(e) => {
                self.invoice_created(stamp, id, e);
                Ok(())
            }
            EventData::InvoicePaid(e) => self.invoice_paid(stamp, id, e),
            EventData::InvoiceExpired(e) => {
                let invoice = self.invoice(id)?;
                invoice.expired_at = invoice.expired_at.or(Some(e.expired_at));
                // `crypto_amount_paid` is the sweeper's statement, not a fact of this fold: the payment events
                // that make it up come from another producer and may arrive after it (decision 0045).
                touch!(invoice, stamp);
                Ok(())
            }
            EventData::InvoiceCancelled(e) => {
                let invoice = self.invoice(id)?;
                invoice.cancelled_at = invoice.cancelled_at.or(Some(e.cancelled_at));
                if invoice.cancellation_reason.is_none() {
                    invoice.cancellation_reason = Some(wire(&e.reason));
                }
                // As for expiry, the stated amount paid is not applied (decision 0045).
                touch!(invoice, stamp);
                Ok(())
            }
            EventData::PaymentDetected(e) => self.payment_detected(stamp, id, e),
            EventData::PaymentConfirming(e) => self.payment_confirming(stamp, id, e),
            EventData::PaymentConfirmed(e) => self.payment_confirmed(stamp, id, e),
            EventData::PaymentFailed(e) => self.payment_failed(stamp, id, e),
            EventData::SettlementCreated(e) => {
                self.settlement_created(stamp, id, e);
                Ok(())
            }
            EventData::SettlementCompleted(e) => {
                let change = SettlementChange::Completed {
                    settled_at: e.settled_at,
                };
                self.settlement_changed(stamp, id, change)
            }
            EventData::SettlementFailed(e) => {
                let change = SettlementChange::Failed {
                    at: e.failed_at,
                    reason: wire(&e.reason),
                    details: &e.details,
                    will_retry: e.will_retry,
                };
                self.settlement_changed(stamp, id, change)
            }
            EventData::MerchantCreated(e) => {
                self.merchant_created(stamp, id, e);
                Ok(())
            }
            EventData::SettingsUpdated(e) => {
                let c = &e.changes;
                let merchant = self.merchant(id)?;
                if let Some(x) = &c.default_currency {
                    merchant.default_currency = x.new.code().to_string();
                }
                if let Some(x) = &c.settlement_currency {
                    merchant.settlement_currency = x.new.code().to_string();
                }
                if let Some(x) = &c.invoice_expiry_minutes {
                    merchant.invoice_expiry_minutes = Some(x.new as i32);
                }
                if let Some(x) = &c.speed_policy {
                    merchant.speed_policy = wire(&x.new);
                }
                if let Some(x) = &c.payment_tolerance_percentage {
                    merchant.payment_tolerance_percentage = Some(x.new.as_decimal());
                }
                if let Some(x) = &c.accepted_crypto_currencies {
                    merchant.accepted_crypto_currencies =
                        x.new.iter().map(|a| a.code().to_string()).collect();
                }
                if let Some(x) = &c.contact {
                    merchant.contact_email = x.new.email.clone();
                    merchant.contact_phone = x.new.phone.clone();
                    merchant.contact_locale = x.new.locale.clone();
                }
                touch!(merchant, stamp);
                Ok(())
            }
            EventData::MerchantSuspended(e) => {
                let merchant = self.merchant(id)?;
                // A suspension the merchant was reinstated from since (a stale fact) changes nothing.
                let lifted = merchant.reinstated_at.is_some_and(|r| e.suspended_at <= r);
                if !lifted {
                    // An ongoing suspension keeps its start; a new one (after a reinstatement) starts now.
                    merchant.suspended_at = match merchant.status.as_str() {
                        "suspended" => merchant.suspended_at.or(Some(e.suspended_at)),
                        _ => Some(e.suspended_at),
                    };
                    merchant.status = "suspended".into();
                    merchant.suspension_reason = Some(wire(&e.reason));
                    merchant.suspension_details = e.details.clone();
                }
                touch!(merchant, stamp);
                Ok(())
            }
            EventData::MerchantReinstated(e) => {
                let merchant = self.merchant(id)?;
                // Active again, unless the merchant was suspended after this reinstatement (a stale fact); the
                // last suspension's columns stay as history.
                if merchant.suspended_at.is_none_or(|s| e.reinstated_at >= s) {
                    merchant.status = "active".into();
                }
                merchant.reinstated_at = merchant.reinstated_at.max(Some(e.reinstated_at));
                touch!(merchant, stamp);
                Ok(())
            }
            // No read model holds webhook endpoints (`webhook_endpoints` is their state); recorded as applied.
            EventData::WebhookEndpointDisabled(_) => Ok(()),
        }
    }

    /// The invoice `id`, marked dirty; unknown if it was never created.
    fn invoice(&mut self, id: Uuid) -> Result<&mut Invoice, ApplyError> {
        let invoice = self
            .rows
            .invoices
            .get_mut(&id)
            .ok_or_else(|| unknown("invoice", id))?;
        self.dirty.invoices.insert(id);
        Ok(invoice)
    }

    fn merchant(&mut self, id: Uuid) -> Result<&mut Merchant, ApplyError> {
        let merchant = self
            .rows
            .merchants
            .get_mut(&id)
            .ok_or_else(|| unknown("merchant", id))?;
        self.dirty.merchants.insert(id);
        Ok(merchant)
    }

    /// For a payment event: the payment must exist, then its invoice (the payload's).
    fn check_payment(&self, payment: Uuid, invoice: Uuid) -> Result<(), ApplyError> {
        if !self.rows.payments.contains_key(&payment) {
            return Err(unknown("payment", payment));
        }
        if !self.rows.invoices.contains_key(&invoice) {
            return Err(unknown("invoice", invoice));
        }
        Ok(())
    }

    fn payment(&mut self, id: Uuid) -> &mut Payment {
        self.dirty.payments.insert(id);
        self.rows
            .payments
            .get_mut(&id)
            .expect("checked by check_payment")
    }

    fn is_confirmed(&self, payment: &Uuid) -> bool {
        self.rows
            .payments
            .get(payment)
            .is_some_and(|p| p.status == "confirmed")
    }

    fn invoice_created(&mut self, stamp: Stamp, id: Uuid, e: &InvoiceCreated) {
        // An invoice is created once; a second InvoiceCreated for the same id (another event id) is stale.
        if self.rows.invoices.contains_key(&id) {
            return;
        }
        self.rows.invoices.insert(
            id,
            Invoice {
                invoice_id: id,
                merchant_id: e.merchant_id.as_uuid(),
                currency: e.currency.code().to_string(),
                total_amount: dec(e.total_amount),
                crypto_currency: e.crypto_currency.code().to_string(),
                crypto_amount_due: dec(e.crypto_amount),
                amount_paid: Decimal::ZERO,
                overpaid_amount: Decimal::ZERO,
                late_payment: false,
                payment_ids: Vec::new(),
                payments_detected: 0,
                payments_confirmed: 0,
                payments_failed: 0,
                created_at: stamp.at,
                expires_at: e.expires_at,
                paid_at: None,
                confirmed_at: None,
                expired_at: None,
                cancelled_at: None,
                cancellation_reason: None,
                version: 1,
                last_event_id: stamp.event_id,
                last_event_at: stamp.at,
            },
        );
        self.dirty.invoices.insert(id);
    }

    fn invoice_paid(&mut self, stamp: Stamp, id: Uuid, e: &InvoicePaid) -> Result<(), ApplyError> {
        let ids: Vec<Uuid> = e.payment_ids.iter().map(|p| p.as_uuid()).collect();
        // Confirmed at once when every counted payment already is (zero-confirmation payments).
        let all_confirmed = ids.iter().all(|p| self.is_confirmed(p));
        let invoice = self.invoice(id)?;
        invoice.paid_at = invoice.paid_at.or(Some(e.paid_at));
        invoice.amount_paid = dec(e.crypto_amount_paid);
        invoice.overpaid_amount = dec(e.overpaid_amount);
        invoice.late_payment = e.late_payment;
        invoice.payment_ids = ids;
        if invoice.confirmed_at.is_none() && all_confirmed {
            invoice.confirmed_at = Some(stamp.at);
        }
        touch!(invoice, stamp);
        Ok(())
    }

    fn payment_detected(
        &mut self,
        stamp: Stamp,
        id: Uuid,
        e: &PaymentDetected,
    ) -> Result<(), ApplyError> {
        let invoice_id = e.invoice_id.as_uuid();
        if !self.rows.invoices.contains_key(&invoice_id) {
            return Err(unknown("invoice", invoice_id));
        }
        // A detection repeated under another event id adds nothing (the payment row exists).
        let new = !self.rows.payments.contains_key(&id);
        if new {
            self.rows.payments.insert(
                id,
                Payment {
                    payment_id: id,
                    invoice_id,
                    merchant_id: e.merchant_id.as_uuid(),
                    crypto_currency: e.crypto_currency.code().to_string(),
                    network: wire(&e.network),
                    transaction_hash: e.transaction_hash.as_str().to_string(),
                    amount: dec(e.amount),
                    amount_due: dec(e.amount_due),
                    coverage: wire(&e.coverage),
                    late: e.late,
                    required_confirmations: e.required_confirmations as i32,
                    confirmations: 0,
                    block_height: None,
                    status: "detected".into(),
                    detected_at: e.detected_at,
                    confirmed_at: None,
                    failed_at: None,
                    failure_reason: None,
                    version: 1,
                    last_event_id: stamp.event_id,
                    last_event_at: stamp.at,
                },
            );
            self.dirty.payments.insert(id);
        }
        let invoice = self.invoice(invoice_id)?;
        if new {
            invoice.amount_paid = numeric_add(invoice.amount_paid, dec(e.amount));
            invoice.payments_detected += 1;
        }
        touch!(invoice, stamp);
        Ok(())
    }

    fn payment_confirming(
        &mut self,
        stamp: Stamp,
        id: Uuid,
        e: &PaymentConfirming,
    ) -> Result<(), ApplyError> {
        let invoice_id = e.invoice_id.as_uuid();
        self.check_payment(id, invoice_id)?;
        let payment = self.payment(id);
        payment.confirmations = payment.confirmations.max(e.confirmations as i32);
        payment.block_height = payment.block_height.or(Some(e.block_height as i64));
        if payment.status == "detected" {
            payment.status = "confirming".into();
        }
        touch!(payment, stamp);
        touch!(self.invoice(invoice_id)?, stamp);
        Ok(())
    }

    fn payment_confirmed(
        &mut self,
        stamp: Stamp,
        id: Uuid,
        e: &PaymentConfirmed,
    ) -> Result<(), ApplyError> {
        let invoice_id = e.invoice_id.as_uuid();
        self.check_payment(id, invoice_id)?;
        // The payment becomes confirmed (a failed one stays failed), the invoice counts it once, and a paid
        // invoice is confirmed when this was the last of its counted payments to confirm.
        let others_confirmed = self.rows.invoices[&invoice_id]
            .payment_ids
            .iter()
            .filter(|p| **p != id)
            .all(|p| self.is_confirmed(p));
        let payment = self.payment(id);
        let old = std::mem::take(&mut payment.status);
        let failed = old == "failed";
        payment.status = if failed {
            old.clone()
        } else {
            "confirmed".into()
        };
        payment.confirmations = payment.confirmations.max(e.confirmations as i32);
        payment.block_height = payment.block_height.or(e.block_height.map(|h| h as i64));
        if !failed {
            payment.confirmed_at = payment.confirmed_at.or(Some(e.confirmed_at));
        }
        touch!(payment, stamp);
        let invoice = self.invoice(invoice_id)?;
        if old == "detected" || old == "confirming" {
            invoice.payments_confirmed += 1;
        }
        if invoice.paid_at.is_some()
            && invoice.confirmed_at.is_none()
            && !failed
            && others_confirmed
        {
            invoice.confirmed_at = Some(stamp.at);
        }
        touch!(invoice, stamp);
        Ok(())
    }

    fn payment_failed(
        &mut self,
        stamp: Stamp,
        id: Uuid,
        e: &PaymentFailed,
    ) -> Result<(), ApplyError> {
        let invoice_id = e.invoice_id.as_uuid();
        self.check_payment(id, invoice_id)?;
        // The first failure takes the payment's amount back out of the invoice (and its confirmation, if it had
        // one).
        let payment = self.payment(id);
        let old = std::mem::replace(&mut payment.status, "failed".into());
        let amount = payment.amount;
        payment.failed_at = payment.failed_at.or(Some(e.failed_at));
        if payment.failure_reason.is_none() {
            payment.failure_reason = Some(wire(&e.reason));
        }
        touch!(payment, stamp);
        let invoice = self.invoice(invoice_id)?;
        if old != "failed" {
            invoice.amount_paid = numeric_add(invoice.amount_paid, -amount);
            invoice.payments_failed += 1;
        }
        if old == "confirmed" {
            invoice.payments_confirmed -= 1;
        }
        touch!(invoice, stamp);
        Ok(())
    }

    fn settlement_created(&mut self, stamp: Stamp, id: Uuid, e: &SettlementCreated) {
        // A new settlement is pending: its net is owed to the merchant. Created twice (another event id): nothing.
        if self.rows.settlements.contains_key(&id) {
            return;
        }
        let settlement = Settlement {
            settlement_id: id,
            invoice_id: e.invoice_id.as_uuid(),
            merchant_id: e.merchant_id.as_uuid(),
            currency: e.currency.code().to_string(),
            gross_amount: dec(e.gross_amount),
            platform_fee_amount: dec(e.platform_fee_amount),
            net_amount: dec(e.net_amount),
            fee_percentage: e.fee_percentage.as_decimal(),
            status: "pending".into(),
            failures: 0,
            failure_reason: None,
            failure_details: None,
            created_at: stamp.at,
            settled_at: None,
            failed_at: None,
            version: 1,
            last_event_id: stamp.event_id,
            last_event_at: stamp.at,
        };
        let key = (settlement.merchant_id, settlement.currency.clone());
        let owed = Contribution {
            pending_net: settlement.net_amount,
            ..Default::default()
        };
        self.rows.settlements.insert(id, settlement);
        self.dirty.settlements.insert(id);
        self.balance_moves(stamp, key, owed);
    }

    fn settlement_changed(
        &mut self,
        stamp: Stamp,
        id: Uuid,
        change: SettlementChange<'_>,
    ) -> Result<(), ApplyError> {
        let settlement = self
            .rows
            .settlements
            .get_mut(&id)
            .ok_or_else(|| unknown("settlement", id))?;
        self.dirty.settlements.insert(id);
        let old = std::mem::take(&mut settlement.status);
        // A completed settlement is final; anything after it about the payout is stale.
        let new = match (&change, old.as_str()) {
            (_, "completed") => "completed",
            (SettlementChange::Completed { .. }, _) => "completed",
            (
                SettlementChange::Failed {
                    will_retry: true, ..
                },
                _,
            ) => "retrying",
            (SettlementChange::Failed { .. }, _) => "failed",
        };
        settlement.status = new.to_string();
        match change {
            SettlementChange::Completed { settled_at } => {
                settlement.settled_at = settlement.settled_at.or(Some(settled_at));
            }
            SettlementChange::Failed {
                at,
                reason,
                details,
                ..
            } => {
                if old != "completed" {
                    settlement.failures += 1;
                    settlement.failure_reason = Some(reason);
                    settlement.failure_details = details.clone();
                    settlement.failed_at = Some(at);
                }
            }
        }
        touch!(&mut *settlement, stamp);
        let (gross, fee, net) = (
            settlement.gross_amount,
            settlement.platform_fee_amount,
            settlement.net_amount,
        );
        let key = (settlement.merchant_id, settlement.currency.clone());
        let d =
            Contribution::of(new, gross, fee, net).minus(Contribution::of(&old, gross, fee, net));
        self.balance_moves(stamp, key, d);
        Ok(())
    }

    /// Adds `d` to the balance `key` (a new row if it has none yet), counting the event on it.
    fn balance_moves(&mut self, stamp: Stamp, key: (Uuid, String), d: Contribution) {
        self.dirty.balances.insert(key.clone());
        match self.rows.balances.get_mut(&key) {
            Some(b) => {
                b.pending_net = numeric_add(b.pending_net, d.pending_net);
                b.settled_gross = numeric_add(b.settled_gross, d.settled_gross);
                b.settled_fees = numeric_add(b.settled_fees, d.settled_fees);
                b.settled_net = numeric_add(b.settled_net, d.settled_net);
                b.failed_net = numeric_add(b.failed_net, d.failed_net);
                b.settlements_completed += d.completed;
                touch!(b, stamp);
            }
            None => {
                let (merchant_id, currency) = key.clone();
                self.rows.balances.insert(
                    key,
                    Balance {
                        merchant_id,
                        currency,
                        pending_net: d.pending_net,
                        settled_gross: d.settled_gross,
                        settled_fees: d.settled_fees,
                        settled_net: d.settled_net,
                        failed_net: d.failed_net,
                        settlements_completed: d.completed,
                        version: 1,
                        last_event_id: stamp.event_id,
                        last_event_at: stamp.at,
                    },
                );
            }
        }
    }

    fn merchant_created(&mut self, stamp: Stamp, id: Uuid, e: &MerchantCreated) {
        if self.rows.merchants.contains_key(&id) {
            return;
        }
        self.rows.merchants.insert(
            id,
            Merchant {
                merchant_id: id,
                business_name: e.business_name.clone(),
                status: "active".into(),
                default_currency: e.default_currency.code().to_string(),
                settlement_currency: e.settlement_currency.code().to_string(),
                fee_percentage: e.fee_percentage.as_decimal(),
                accepted_crypto_currencies: e
                    .accepted_crypto_currencies
                    .iter()
                    .map(|a| a.code().to_string())
                    .collect(),
                speed_policy: wire(&e.speed_policy),
                invoice_expiry_minutes: None,
                payment_tolerance_percentage: None,
                created_at: stamp.at,
                suspended_at: None,
                suspension_reason: None,
                suspension_details: None,
                reinstated_at: None,
                contact_email: e.contact.email.clone(),
                contact_phone: e.contact.phone.clone(),
                contact_locale: e.contact.locale.clone(),
                version: 1,
                last_event_id: stamp.event_id,
                last_event_at: stamp.at,
            },
        );
        self.dirty.merchants.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use events::{EnvelopeParts, EventId, EventType, PaymentId, SettlementId, examples};

    /// An example event of type `t` with a fresh event id, happening `minute` minutes after the invoice was
    /// created, edited by `edit`.
    fn event(t: EventType, minute: i64, edit: impl FnOnce(&mut EnvelopeParts)) -> Envelope {
        let mut parts = examples::example(t).into_parts();
        parts.event_id = EventId::new();
        parts.timestamp = base() + TimeDelta::minutes(minute);
        edit(&mut parts);
        Envelope::from_parts(parts).expect("valid event")
    }

    fn base() -> DateTime<Utc> {
        examples::example(EventType::InvoiceCreated).timestamp()
    }

    fn at(minute: i64) -> DateTime<Utc> {
        base() + TimeDelta::minutes(minute)
    }

    fn amount(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// `t` about the example payment `payment` instead (payment events only).
    fn about_payment(t: EventType, minute: i64, payment: PaymentId) -> Envelope {
        event(t, minute, |p| p.aggregate_id = payment.into())
    }

    fn paid_by(minute: i64, payments: &[PaymentId]) -> Envelope {
        event(EventType::InvoicePaid, minute, |p| {
            if let EventData::InvoicePaid(e) = &mut p.event_data {
                e.payment_ids = payments.to_vec();
            }
        })
    }

    fn confirmed(minute: i64, payment: PaymentId) -> Envelope {
        about_payment(EventType::PaymentConfirmed, minute, payment)
    }

    fn detected(minute: i64, payment: PaymentId, amount: &str) -> Envelope {
        event(EventType::PaymentDetected, minute, |p| {
            p.aggregate_id = payment.into();
            if let EventData::PaymentDetected(e) = &mut p.event_data {
                e.amount = amount.parse().unwrap();
                e.coverage = match e.amount.cmp(&e.amount_due) {
                    std::cmp::Ordering::Less => PaymentCoverage::Partial,
                    std::cmp::Ordering::Equal => PaymentCoverage::Full,
                    std::cmp::Ordering::Greater => PaymentCoverage::Over,
                };
            }
        })
    }

    /// Folds `events` over `rows`; the index of the failing event on error.
    fn fold(rows: Rows, events: &[Envelope]) -> Result<Fold, (usize, ApplyError)> {
        let mut fold = Fold::new(rows);
        for (i, e) in events.iter().enumerate() {
            fold.apply(e).map_err(|err| (i, err))?;
        }
        Ok(fold)
    }

    /// The rows after `events`, as a later batch would load them.
    fn given(events: &[Envelope]) -> Rows {
        fold(Rows::default(), events)
            .expect("given events apply")
            .rows
    }

    fn stamp_of(e: &Envelope) -> (i32, Uuid, DateTime<Utc>) {
        (0, e.event_id().as_uuid(), e.timestamp())
    }

    fn invoice(rows: &Rows) -> &Invoice {
        &rows.invoices[&examples::invoice_id().as_uuid()]
    }

    fn payment(rows: &Rows, id: PaymentId) -> &Payment {
        &rows.payments[&id.as_uuid()]
    }

    fn last(row_version: i32, id: Uuid, at: DateTime<Utc>) -> (i32, Uuid, DateTime<Utc>) {
        (row_version, id, at)
    }

    fn created() -> Envelope {
        event(EventType::InvoiceCreated, 0, |_| {})
    }

    #[test]
    fn an_invoice_is_created_once_with_every_column() {
        let create = created();
        let f = fold(Rows::default(), std::slice::from_ref(&create)).unwrap();
        let id = examples::invoice_id().as_uuid();
        let expected = Invoice {
            invoice_id: id,
            merchant_id: examples::merchant_id().as_uuid(),
            currency: "USD".into(),
            total_amount: amount("16.49"),
            crypto_currency: "USDT".into(),
            crypto_amount_due: amount("16.49"),
            amount_paid: Decimal::ZERO,
            overpaid_amount: Decimal::ZERO,
            late_payment: false,
            payment_ids: vec![],
            payments_detected: 0,
            payments_confirmed: 0,
            payments_failed: 0,
            created_at: at(0),
            expires_at: examples::example(EventType::InvoiceCreated)
                .data()
                .clone()
                .into_invoice_created_expires_at(),
            paid_at: None,
            confirmed_at: None,
            expired_at: None,
            cancelled_at: None,
            cancellation_reason: None,
            version: 1,
            last_event_id: create.event_id().as_uuid(),
            last_event_at: at(0),
        };
        assert_eq!(invoice(&f.rows), &expected);
        assert_eq!(f.dirty.invoices, BTreeSet::from([id]));

        // Created again under another event id: stale, nothing changes, nothing to write.
        let rows = f.rows.clone();
        let again = fold(rows.clone(), &[event(EventType::InvoiceCreated, 1, |_| {})]).unwrap();
        assert_eq!(again.rows, rows);
        assert!(again.dirty.is_empty());
    }

    trait ExpiresAt {
        fn into_invoice_created_expires_at(self) -> DateTime<Utc>;
    }
    impl ExpiresAt for EventData {
        fn into_invoice_created_expires_at(self) -> DateTime<Utc> {
            match self {
                EventData::InvoiceCreated(e) => e.expires_at,
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn detections_add_once_and_every_event_counts_on_the_rows_it_touches() {
        let pay = examples::payment_id();
        let first = detected(5, pay, "10");
        let rows = given(&[created()]);
        let f = fold(rows, std::slice::from_ref(&first)).unwrap();
        let i = invoice(&f.rows);
        assert_eq!((i.amount_paid, i.payments_detected), (amount("10"), 1));
        assert_eq!(
            (i.version, i.last_event_id),
            (2, first.event_id().as_uuid())
        );
        let p = payment(&f.rows, pay);
        assert_eq!(
            (p.status.as_str(), p.amount, p.confirmations, p.block_height),
            ("detected", amount("10"), 0, None)
        );
        assert_eq!(
            (p.network.as_str(), p.coverage.as_str()),
            ("tron", "partial")
        );
        assert_eq!(p.required_confirmations, 19);
        assert_eq!(stamp_of(&first).1, p.last_event_id);
        assert_eq!(f.dirty.payments, BTreeSet::from([pay.as_uuid()]));

        // The same detection under another event id: the payment stays as it is, the invoice counts the event.
        let repeat = detected(6, pay, "10");
        let g = fold(f.rows.clone(), std::slice::from_ref(&repeat)).unwrap();
        assert_eq!(payment(&g.rows, pay), payment(&f.rows, pay));
        assert!(g.dirty.payments.is_empty());
        let i = invoice(&g.rows);
        assert_eq!((i.amount_paid, i.payments_detected), (amount("10"), 1));
        assert_eq!(
            last(i.version, i.last_event_id, i.last_event_at),
            last(3, repeat.event_id().as_uuid(), at(6))
        );
        // Exact decimals: a second payment adds up without rounding; a loaded amount keeps its scale (numeric's
        // rule: a sum has the larger scale of its terms).
        let h = fold(g.rows, &[detected(7, PaymentId::new(), "6.49")]).unwrap();
        assert_eq!(invoice(&h.rows).amount_paid.to_string(), "16.49");
        let mut rows = h.rows.clone();
        rows.invoices
            .values_mut()
            .for_each(|i| i.amount_paid = amount("16.490"));
        let k = fold(rows, &[detected(8, PaymentId::new(), "0.01")]).unwrap();
        assert_eq!(invoice(&k.rows).amount_paid.to_string(), "16.500");
    }

    #[test]
    fn confirmations_only_grow_and_the_first_block_height_is_kept() {
        let pay = examples::payment_id();
        let rows = given(&[created(), detected(5, pay, "16.5")]);
        let confirming = |minute, confirmations, height| {
            event(EventType::PaymentConfirming, minute, |p| {
                if let EventData::PaymentConfirming(e) = &mut p.event_data {
                    e.confirmations = confirmations;
                    e.block_height = height;
                }
            })
        };
        let f = fold(rows, &[confirming(6, 3, 100), confirming(7, 2, 101)]).unwrap();
        let p = payment(&f.rows, pay);
        assert_eq!(
            (
                p.status.as_str(),
                p.confirmations,
                p.block_height,
                p.version
            ),
            ("confirming", 3, Some(100), 3)
        );
        let i = invoice(&f.rows);
        assert_eq!((i.version, i.last_event_at), (4, at(7)));
        assert_eq!(i.payments_confirmed, 0);
    }

    #[test]
    fn an_invoice_is_confirmed_when_paid_and_all_counted_payments_are_in_any_order() {
        let (a, b) = (examples::payment_id(), PaymentId::new());
        let setup = || vec![created(), detected(1, a, "8.25"), detected(2, b, "8.25")];
        // Payments confirmed first, then InvoicePaid: confirmed at InvoicePaid's time.
        let mut events = setup();
        events.extend([confirmed(3, a), confirmed(4, b), paid_by(5, &[a, b])]);
        let f = fold(Rows::default(), &events).unwrap();
        let i = invoice(&f.rows);
        assert_eq!((i.paid_at.is_some(), i.confirmed_at), (true, Some(at(5))));
        assert_eq!(i.payments_confirmed, 2);
        assert_eq!(i.payment_ids, vec![a.as_uuid(), b.as_uuid()]);
        assert_eq!(i.version, 6);

        // Paid first, then the payments confirm: confirmed when the last one does.
        let mut events = setup();
        events.extend([paid_by(3, &[a, b]), confirmed(4, b)]);
        let f = fold(Rows::default(), &events).unwrap();
        assert_eq!(invoice(&f.rows).confirmed_at, None);
        let g = fold(f.rows, &[confirmed(6, a)]).unwrap();
        assert_eq!(invoice(&g.rows).confirmed_at, Some(at(6)));
        // A later confirmation (another event id) keeps the first time and counts nothing twice.
        let h = fold(g.rows, &[confirmed(9, a)]).unwrap();
        let i = invoice(&h.rows);
        assert_eq!(
            (i.confirmed_at, i.payments_confirmed, i.version),
            (Some(at(6)), 2, 7)
        );
        let p = payment(&h.rows, a);
        assert_eq!(
            (p.status.as_str(), p.confirmed_at, p.version),
            ("confirmed", Some(at(17)), 3),
            "the payment keeps its first confirmation time (the payload's confirmed_at)"
        );

        // Only the payments InvoicePaid counted matter: an uncounted unconfirmed payment does not hold it back.
        let mut events = setup();
        events.extend([paid_by(3, &[a]), confirmed(4, a)]);
        let f = fold(Rows::default(), &events).unwrap();
        assert_eq!(invoice(&f.rows).confirmed_at, Some(at(4)));

        // Not paid yet: a confirmation does not confirm the invoice.
        let mut events = setup();
        events.extend([confirmed(3, a), confirmed(4, b)]);
        let f = fold(Rows::default(), &events).unwrap();
        assert_eq!(invoice(&f.rows).confirmed_at, None);
    }

    #[test]
    fn a_failed_payment_gives_its_amount_back_once_and_stays_failed() {
        let (a, b) = (examples::payment_id(), PaymentId::new());
        let failed = |minute, payment| about_payment(EventType::PaymentFailed, minute, payment);
        let rows = given(&[
            created(),
            detected(1, a, "10"),
            detected(2, b, "6.49"),
            confirmed(3, a),
        ]);
        assert_eq!(invoice(&rows).payments_confirmed, 1);
        let f = fold(rows, &[failed(4, a), failed(5, a)]).unwrap();
        let i = invoice(&f.rows);
        assert_eq!(
            (
                i.amount_paid,
                i.payments_failed,
                i.payments_confirmed,
                i.version
            ),
            (amount("6.49"), 1, 0, 6)
        );
        let p = payment(&f.rows, a);
        assert_eq!(
            (p.status.as_str(), p.failed_at, p.failure_reason.as_deref()),
            ("failed", Some(at(7)), Some("chain_reorganization"))
        );
        assert_eq!(
            p.confirmed_at,
            Some(at(17)),
            "its confirmation time is kept"
        );
        assert_eq!(p.version, 4);

        // A late confirmation of a failed payment: the payment stays failed, the invoice is not confirmed.
        let g = fold(f.rows, &[paid_by(6, &[a]), confirmed(7, a)]).unwrap();
        let p = payment(&g.rows, a);
        assert_eq!((p.status.as_str(), p.version), ("failed", 5));
        let i = invoice(&g.rows);
        assert_eq!((i.confirmed_at, i.payments_confirmed), (None, 0));
        assert_eq!(i.version, 8);
    }

    #[test]
    fn expiry_and_cancellation_keep_first_facts_and_never_count_a_payment_twice() {
        // The sweeper states 10 paid; the payment of 10 behind that figure is another producer's event and may
        // reach the bus before or after the expiry (the chaos run saw it after: the amount was counted twice).
        let expired = |minute| {
            event(EventType::InvoiceExpired, minute, |p| {
                if let EventData::InvoiceExpired(e) = &mut p.event_data {
                    e.crypto_amount_paid = "10".parse().unwrap();
                }
            })
        };
        let pay = examples::payment_id();
        let f = fold(given(&[created()]), &[expired(30), expired(31)]).unwrap();
        let i = invoice(&f.rows);
        assert_eq!(
            (i.expired_at, i.amount_paid, i.version),
            (Some(at(30)), Decimal::ZERO, 3),
            "a stated amount is not a payment"
        );
        let after = fold(f.rows, &[detected(1, pay, "10")]).unwrap();
        let before = fold(given(&[created(), detected(1, pay, "10")]), &[expired(30)]).unwrap();
        for (order, rows) in [
            ("expiry first", &after.rows),
            ("payment first", &before.rows),
        ] {
            let i = invoice(rows);
            assert_eq!(
                (i.expired_at, i.amount_paid, i.payments_detected),
                (Some(at(30)), amount("10"), 1),
                "{order}"
            );
        }

        let cancel = |minute, reason| {
            event(EventType::InvoiceCancelled, minute, |p| {
                if let EventData::InvoiceCancelled(e) = &mut p.event_data {
                    e.reason = reason;
                    e.cancelled_at = at(minute);
                }
            })
        };
        let pay = examples::payment_id();
        let rows = given(&[created(), detected(1, pay, "16.5"), paid_by(2, &[pay])]);
        let f = fold(
            rows,
            &[
                cancel(3, CancellationReason::MerchantRequest),
                cancel(4, CancellationReason::Duplicate),
            ],
        )
        .unwrap();
        let i = invoice(&f.rows);
        assert_eq!(i.cancelled_at, Some(at(3)));
        assert_eq!(i.cancellation_reason.as_deref(), Some("merchant_request"));
        assert_eq!(i.amount_paid, amount("16.5"), "paid: the paid amount stays");
        assert_eq!(i.version, 5);
    }

    fn settlement_event(t: EventType, minute: i64, edit: impl FnOnce(&mut EventData)) -> Envelope {
        event(t, minute, |p| edit(&mut p.event_data))
    }

    fn settlement_failed(minute: i64, will_retry: bool) -> Envelope {
        settlement_event(EventType::SettlementFailed, minute, |d| {
            if let EventData::SettlementFailed(e) = d {
                e.will_retry = will_retry;
                e.failed_at = at(minute);
            }
        })
    }

    fn balance(rows: &Rows) -> &Balance {
        &rows.balances[&(examples::merchant_id().as_uuid(), "USD".to_string())]
    }

    fn settlement(rows: &Rows) -> &Settlement {
        &rows.settlements[&examples::settlement_id().as_uuid()]
    }

    #[test]
    fn settlements_move_their_net_between_balance_columns() {
        let create = settlement_event(EventType::SettlementCreated, 0, |_| {});
        let f = fold(Rows::default(), std::slice::from_ref(&create)).unwrap();
        let b = balance(&f.rows);
        assert_eq!(
            (b.pending_net, b.settled_net, b.version),
            (amount("16.33"), Decimal::ZERO, 1)
        );
        assert_eq!(b.last_event_id, create.event_id().as_uuid());
        assert_eq!(settlement(&f.rows).status, "pending");

        // Failed, will retry: retrying, still pending in the balance (which counts the event all the same).
        let g = fold(f.rows, &[settlement_failed(1, true)]).unwrap();
        let s = settlement(&g.rows);
        assert_eq!((s.status.as_str(), s.failures), ("retrying", 1));
        assert_eq!(s.failure_details.as_deref(), Some("bank returned R03"));
        let b = balance(&g.rows);
        assert_eq!((b.pending_net, b.version), (amount("16.33"), 2));

        // Completed: pending → settled gross, fees, net.
        let done = settlement_event(EventType::SettlementCompleted, 2, |_| {});
        let h = fold(g.rows, std::slice::from_ref(&done)).unwrap();
        let b = balance(&h.rows);
        assert_eq!(b.pending_net, Decimal::ZERO);
        assert_eq!(
            (b.settled_gross, b.settled_fees, b.settled_net),
            (amount("16.49"), amount("0.16"), amount("16.33"))
        );
        assert_eq!((b.settlements_completed, b.version), (1, 3));
        let s = settlement(&h.rows);
        assert_eq!(s.status, "completed");
        assert!(s.settled_at.is_some());

        // Completed is final: a late failure changes nothing but the versions.
        let before = h.rows.clone();
        let late = settlement_failed(3, false);
        let k = fold(h.rows, std::slice::from_ref(&late)).unwrap();
        let (s, old) = (settlement(&k.rows), settlement(&before));
        assert_eq!(
            (s.status.as_str(), s.failures, &s.failed_at),
            ("completed", 1, &old.failed_at)
        );
        assert_eq!(s.version, old.version + 1);
        let (b, old) = (balance(&k.rows), balance(&before));
        assert_eq!(
            (b.settled_net, b.pending_net, b.failed_net),
            (old.settled_net, old.pending_net, old.failed_net)
        );
        assert_eq!(
            (b.version, b.last_event_id),
            (old.version + 1, late.event_id().as_uuid())
        );

        // Created again (another event id): nothing.
        let again = settlement_event(EventType::SettlementCreated, 4, |_| {});
        let m = fold(k.rows.clone(), &[again]).unwrap();
        assert_eq!(m.rows, k.rows);
        assert!(m.dirty.is_empty());
    }

    #[test]
    fn a_final_failure_moves_the_net_to_failed_and_balances_sum_the_settlements() {
        let other = SettlementId::new();
        let create_other = event(EventType::SettlementCreated, 1, |p| {
            p.aggregate_id = other.into()
        });
        let complete_other = event(EventType::SettlementCompleted, 3, |p| {
            p.aggregate_id = other.into()
        });
        let f = fold(
            Rows::default(),
            &[
                settlement_event(EventType::SettlementCreated, 0, |_| {}),
                create_other,
                settlement_failed(2, false),
                complete_other,
            ],
        )
        .unwrap();
        let b = balance(&f.rows);
        assert_eq!(b.failed_net, amount("16.33"));
        assert_eq!(b.settled_net, amount("16.33"));
        assert_eq!(b.pending_net, Decimal::ZERO);
        assert_eq!((b.settlements_completed, b.version), (1, 4));
        // The balance is the sum of what each settlement contributes in its status.
        let sum = f
            .rows
            .settlements
            .values()
            .fold(Contribution::default(), |acc, s| {
                let c = Contribution::of(
                    &s.status,
                    s.gross_amount,
                    s.platform_fee_amount,
                    s.net_amount,
                );
                Contribution {
                    pending_net: acc.pending_net + c.pending_net,
                    settled_gross: acc.settled_gross + c.settled_gross,
                    settled_fees: acc.settled_fees + c.settled_fees,
                    settled_net: acc.settled_net + c.settled_net,
                    failed_net: acc.failed_net + c.failed_net,
                    completed: acc.completed + c.completed,
                }
            });
        assert_eq!(
            (
                sum.pending_net,
                sum.settled_net,
                sum.failed_net,
                sum.completed
            ),
            (
                b.pending_net,
                b.settled_net,
                b.failed_net,
                b.settlements_completed
            )
        );
    }

    #[test]
    fn sums_keep_numerics_scale() {
        let sum = |a: &str, b: &str| numeric_add(amount(a), amount(b)).to_string();
        assert_eq!(sum("16.33", "-16.33"), "0.00");
        assert_eq!(sum("-16.33", "16.33"), "0.00");
        assert_eq!(sum("1.10", "1.1"), "2.20");
        assert_eq!(sum("0", "6.49"), "6.49");
        assert_eq!(sum("10", "-3.5"), "6.5");
        assert!(numeric_add(amount("-1.5"), amount("1.5")).is_sign_positive());
    }

    #[test]
    fn a_settlement_moves_between_balance_columns_without_losing_money() {
        let (gross, fee, net) = (amount("16.49"), amount("0.16"), amount("16.33"));
        let pending = Contribution::of("pending", gross, fee, net);
        let completed = Contribution::of("completed", gross, fee, net);
        let d = completed.minus(pending);
        assert_eq!(d.pending_net, -net);
        assert_eq!(d.settled_net, net);
        assert_eq!(d.settled_fees + d.settled_net, gross);
        assert_eq!(d.completed, 1);
        let retrying = Contribution::of("retrying", gross, fee, net);
        assert_eq!(retrying.minus(pending), Contribution::default());
    }

    #[test]
    fn merchants_are_created_once_updated_by_what_changed_and_suspended() {
        let create = event(EventType::MerchantCreated, 0, |_| {});
        let f = fold(Rows::default(), std::slice::from_ref(&create)).unwrap();
        let id = examples::merchant_id().as_uuid();
        let m = &f.rows.merchants[&id];
        assert_eq!(
            (m.status.as_str(), m.speed_policy.as_str(), m.version),
            ("active", "medium_speed", 1)
        );
        assert_eq!(m.accepted_crypto_currencies, ["BTC", "USDT", "USDC"]);
        assert_eq!(
            (m.invoice_expiry_minutes, m.payment_tolerance_percentage),
            (None, None)
        );
        assert_eq!(m.created_at, at(0));

        let settings = event(EventType::SettingsUpdated, 1, |_| {});
        let suspend = event(EventType::MerchantSuspended, 2, |_| {});
        let again = event(EventType::MerchantCreated, 3, |_| {});
        let g = fold(f.rows, &[settings, suspend.clone(), again]).unwrap();
        let m = &g.rows.merchants[&id];
        assert_eq!(
            (m.speed_policy.as_str(), m.invoice_expiry_minutes),
            ("low_speed", Some(30))
        );
        assert_eq!(m.default_currency, "USD", "unchanged settings stay");
        assert_eq!(m.status, "suspended");
        assert_eq!(m.suspension_reason.as_deref(), Some("compliance_review"));
        assert_eq!(
            m.suspension_details.as_deref(),
            Some("KYB documents expired")
        );
        assert_eq!(
            (m.version, m.last_event_id),
            (3, suspend.event_id().as_uuid()),
            "the second creation changed nothing"
        );
        assert_eq!(g.dirty.merchants, BTreeSet::from([id]));
    }

    fn suspended(minute: i64) -> Envelope {
        event(EventType::MerchantSuspended, minute, |p| {
            if let EventData::MerchantSuspended(e) = &mut p.event_data {
                e.suspended_at = at(minute);
            }
        })
    }

    fn reinstated(minute: i64) -> Envelope {
        event(EventType::MerchantReinstated, minute, |p| {
            if let EventData::MerchantReinstated(e) = &mut p.event_data {
                e.reinstated_at = at(minute);
            }
        })
    }

    #[test]
    fn a_reinstatement_makes_the_merchant_active_and_keeps_the_suspension_as_history() {
        let id = examples::merchant_id().as_uuid();
        let rows = given(&[event(EventType::MerchantCreated, 0, |_| {}), suspended(10)]);
        let back = reinstated(20);
        let f = fold(rows, std::slice::from_ref(&back)).unwrap();
        let m = &f.rows.merchants[&id];
        assert_eq!(m.status, "active");
        assert_eq!(m.reinstated_at, Some(at(20)));
        assert_eq!(
            (m.suspended_at, m.suspension_reason.as_deref()),
            (Some(at(10)), Some("compliance_review")),
            "the last suspension stays as history"
        );
        assert_eq!((m.version, m.last_event_id), (3, back.event_id().as_uuid()));
        assert_eq!(f.dirty.merchants, BTreeSet::from([id]));

        // Stale facts: the suspension it was reinstated from, restated, and the reinstatement again.
        let g = fold(f.rows, &[suspended(10), reinstated(20)]).unwrap();
        let m = &g.rows.merchants[&id];
        assert_eq!(
            (m.status.as_str(), m.suspended_at, m.reinstated_at),
            ("active", Some(at(10)), Some(at(20)))
        );
        assert_eq!(m.version, 5, "stale facts still count as applied events");

        // Suspended again later: a new suspension starts; the earlier reinstatement, restated, cannot lift it.
        let h = fold(g.rows, &[suspended(30), reinstated(20), suspended(31)]).unwrap();
        let m = &h.rows.merchants[&id];
        assert_eq!(
            (m.status.as_str(), m.suspended_at, m.reinstated_at),
            ("suspended", Some(at(30)), Some(at(20))),
            "an ongoing suspension keeps its start"
        );
        // Reinstated again: active, the last reinstatement recorded.
        let k = fold(h.rows, &[reinstated(40)]).unwrap();
        let m = &k.rows.merchants[&id];
        assert_eq!(
            (m.status.as_str(), m.suspended_at, m.reinstated_at),
            ("active", Some(at(30)), Some(at(40)))
        );

        // A merchant never suspended stays active; the reinstatement is recorded.
        let n = fold(
            Rows::default(),
            &[event(EventType::MerchantCreated, 0, |_| {}), reinstated(5)],
        )
        .unwrap();
        let m = &n.rows.merchants[&id];
        assert_eq!(
            (m.status.as_str(), m.suspended_at, m.reinstated_at),
            ("active", None, Some(at(5)))
        );
    }

    #[test]
    fn events_about_aggregates_never_created_are_refused_where_they_are() {
        let pay = examples::payment_id();
        let unknown_kind = |r: Result<Fold, (usize, ApplyError)>| match r {
            Err((i, ApplyError::Unknown(why))) => (i, why.split(' ').next().unwrap().to_string()),
            other => panic!("expected an unknown aggregate, got {other:?}"),
        };
        // Created earlier in the same fold counts as existing; the failing event is named by position.
        let events = [
            created(),
            detected(1, pay, "16.5"),
            confirmed(2, pay),
            confirmed(3, PaymentId::new()),
        ];
        assert_eq!(
            unknown_kind(fold(Rows::default(), &events)),
            (3, "payment".into())
        );
        assert_eq!(
            unknown_kind(fold(Rows::default(), &[detected(1, pay, "1")])),
            (0, "invoice".into())
        );
        assert_eq!(
            unknown_kind(fold(Rows::default(), &[paid_by(1, &[pay])])),
            (0, "invoice".into())
        );
        assert_eq!(
            unknown_kind(fold(
                Rows::default(),
                &[event(EventType::InvoiceExpired, 1, |_| {})]
            )),
            (0, "invoice".into())
        );
        assert_eq!(
            unknown_kind(fold(Rows::default(), &[settlement_failed(1, true)])),
            (0, "settlement".into())
        );
        assert_eq!(
            unknown_kind(fold(
                Rows::default(),
                &[event(EventType::MerchantSuspended, 1, |_| {})]
            )),
            (0, "merchant".into())
        );
        assert_eq!(
            unknown_kind(fold(Rows::default(), &[reinstated(1)])),
            (0, "merchant".into())
        );
        // A payment whose invoice the read models do not know (the payment row exists).
        let mut rows = given(&[created(), detected(1, pay, "16.5")]);
        rows.invoices.clear();
        assert_eq!(
            unknown_kind(fold(rows.clone(), &[confirmed(2, pay)])),
            (0, "invoice".into())
        );
        // A failing event changes no row.
        let mut f = Fold::new(rows.clone());
        assert!(f.apply(&confirmed(2, pay)).is_err());
        assert_eq!(f.rows, rows);
        // Neither settlement creation nor merchant-less settlements need a merchant row.
        assert!(
            fold(
                Rows::default(),
                &[settlement_event(EventType::SettlementCreated, 0, |_| {})]
            )
            .is_ok()
        );
    }
}
