//! What the settlement service keeps, as plain rows (the `stl_*` tables, `settlements`, `ledger_entries`), and
//! the ids it derives.
//!
//! Guarantees: every id the service creates is derived from what it is about — the settlement's from the invoice
//! ([`events::SettlementId::for_invoice`]), an emitted event's and a ledger journal's from the settlement or the
//! invoice and what happened ([`event_id`], [`journal_id`]) — so replaying any prefix of the topic, in any consumer
//! group, can only ever produce the same settlement, the same events and the same journals again, which the
//! service's checks (and, last, the unique constraints) turn away.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use events::money::{Amount, CryptoAsset, Decimal, FiatCurrency, Percentage};
use events::{EventId, InvoiceId, SettlementId};
use uuid::Uuid;

/// Namespace of ledger journal ids (UUID v5). Never change it.
pub const JOURNAL_NAMESPACE: Uuid = Uuid::from_u128(0x1f0e_8b7d_3c2a_4b19_8e5f_6a7d_9c0b_2e43);

/// What an emitted event or a journal records, for its derived id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Created,
    Held,
    Completed,
    Overpayment,
    RefundOwed,
    RefundReversed,
}

impl Step {
    fn tag(self) -> &'static [u8] {
        match self {
            Step::Created => b"created",
            Step::Held => b"held",
            Step::Completed => b"completed",
            Step::Overpayment => b"overpayment",
            Step::RefundOwed => b"refund-owed",
            Step::RefundReversed => b"refund-reversed",
        }
    }
}

fn name(of: Uuid, step: Step) -> Vec<u8> {
    let mut name = of.as_bytes().to_vec();
    name.push(b':');
    name.extend_from_slice(step.tag());
    name
}

/// The id of the event the service emits for `invoice`'s settlement at `step`.
pub fn event_id(invoice: Uuid, step: Step) -> EventId {
    EventId::derived(events::id::SETTLEMENT_EVENT_NAMESPACE, &name(invoice, step))
}

/// The id of the journal the service posts for `of` (a settlement or an invoice) at `step`.
pub fn journal_id(of: Uuid, step: Step) -> Uuid {
    Uuid::new_v5(&JOURNAL_NAMESPACE, &name(of, step))
}

/// The settlement id of `invoice`.
pub fn settlement_id(invoice: Uuid) -> Uuid {
    let invoice = InvoiceId::from_uuid(invoice).expect("invoice ids are never nil");
    SettlementId::for_invoice(invoice).as_uuid()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub merchant_id: Uuid,
    pub fee_percentage: Percentage,
    pub created_at: DateTime<Utc>,
}

/// A suspension: `[suspended_at, reinstated_at)` in event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub merchant_id: Uuid,
    pub suspended_at: DateTime<Utc>,
    pub reinstated_at: Option<DateTime<Utc>>,
}

impl Suspension {
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.suspended_at <= at && self.reinstated_at.is_none_or(|r| at < r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub currency: FiatCurrency,
    pub total_amount: Amount,
    pub crypto_currency: CryptoAsset,
    pub correlation_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub paid_event_id: Option<Uuid>,
    pub counted_payments: Vec<Uuid>,
    pub overpaid_amount: Amount,
    pub late_payment: bool,
    pub closed_at: Option<DateTime<Utc>>,
    pub refund_amount: Amount,
    pub settlement_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_event_id: Option<Uuid>,
    pub failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Held,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Held => "held",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "created" => Some(Status::Created),
            "held" => Some(Status::Held),
            "completed" => Some(Status::Completed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub settlement_id: Uuid,
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub currency: FiatCurrency,
    pub gross_amount: Amount,
    pub platform_fee_amount: Amount,
    pub net_amount: Amount,
    pub fee_percentage: Percentage,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub held_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
    pub causation_event_id: Uuid,
    pub correlation_id: Option<Uuid>,
}

/// Ledger accounts (see the migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Account {
    CustomerReceipts,
    MerchantPayable,
    MerchantPaidOut,
    PlatformFees,
    CustomerRefunds,
}

impl Account {
    pub fn as_str(self) -> &'static str {
        match self {
            Account::CustomerReceipts => "customer_receipts",
            Account::MerchantPayable => "merchant_payable",
            Account::MerchantPaidOut => "merchant_paid_out",
            Account::PlatformFees => "platform_fees",
            Account::CustomerRefunds => "customer_refunds",
        }
    }
}

/// What a journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    /// A settlement decided: receipts → owed to the merchant and fee revenue.
    Settlement,
    /// The merchant was paid: owed → paid out.
    Payout,
    /// Crypto received above the invoice's due amount: receipts → owed back to the customer.
    Overpayment,
    /// Crypto received for an invoice that expired or was cancelled unpaid: receipts → owed back.
    RefundOwed,
    /// That invoice was paid late after all: what was owed back counts toward it again.
    RefundReversed,
}

impl JournalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalKind::Settlement => "settlement",
            JournalKind::Payout => "payout",
            JournalKind::Overpayment => "overpayment",
            JournalKind::RefundOwed => "refund_owed",
            JournalKind::RefundReversed => "refund_reversed",
        }
    }
}

/// One line of a journal; a journal's lines sum to zero per currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    pub journal_id: Uuid,
    pub line: i16,
    pub kind: JournalKind,
    pub account: Account,
    pub merchant_id: Option<Uuid>,
    pub invoice_id: Uuid,
    pub settlement_id: Option<Uuid>,
    pub currency: String,
    /// Signed: positive credits the account's balance, negative debits it.
    pub amount: Decimal,
    pub posted_at: DateTime<Utc>,
}

/// The rows a batch reads and may write, by key.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub merchants: BTreeMap<Uuid, Merchant>,
    /// Every suspension of the loaded merchants.
    pub suspensions: BTreeMap<(Uuid, DateTime<Utc>), Suspension>,
    pub invoices: BTreeMap<Uuid, Invoice>,
    pub payments: BTreeMap<Uuid, Payment>,
    pub settlements: BTreeMap<Uuid, Settlement>,
}

/// Keys of the rows a batch changed.
#[derive(Debug, Clone, Default)]
pub struct Dirty {
    pub merchants: BTreeSet<Uuid>,
    pub suspensions: BTreeSet<(Uuid, DateTime<Utc>)>,
    pub invoices: BTreeSet<Uuid>,
    pub payments: BTreeSet<Uuid>,
    pub settlements: BTreeSet<Uuid>,
}
