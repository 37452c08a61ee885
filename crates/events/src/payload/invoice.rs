//! Invoice events: an invoice is created, then paid, expired or cancelled.
//!
//! Guarantees: a created invoice (version 2) names its deposit address, valid for its network, on a network that
//! carries its asset; amounts respect their currency's decimals; a created invoice asks for a positive amount; an
//! expired invoice was not paid in full (a partial payment is visible as `crypto_amount_paid > 0`); a paid
//! invoice was paid at least in full, its over-payment is exactly `paid − due`, and a late payment (after
//! expiry) is flagged. Every event names its merchant, so webhook delivery needs no lookup.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Deposit;
use super::{check_decimals, check_details, check_positive, check_unique, invariant};
use crate::error::ContractError;
use crate::id::{MerchantId, PaymentId};
use crate::money::{Amount, CryptoAsset, FiatCurrency};
use crate::time::rfc3339;

/// A merchant created an invoice; the customer may pay it until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceCreated {
    /// The merchant who will be paid.
    pub merchant_id: MerchantId,
    /// Price of the invoice in `currency`.
    pub total_amount: Amount,
    /// Fiat currency the invoice is priced in.
    pub currency: FiatCurrency,
    /// Amount of `crypto_currency` the customer must pay (price converted at the quoted rate).
    pub crypto_amount: Amount,
    /// Asset the customer pays in.
    pub crypto_currency: CryptoAsset,
    /// End of the payment window; must be after the event's timestamp.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub expires_at: DateTime<Utc>,
    /// Where the customer pays: the invoice's address on one network, and the confirmations a payment needs
    /// there (version 2). Absent only in upcast version 1 events: such an invoice cannot be matched to payments
    /// on chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit: Option<Deposit>,
}

impl InvoiceCreated {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_positive(self.total_amount, "total_amount")?;
        check_decimals(self.total_amount, self.currency, "total_amount")?;
        check_positive(self.crypto_amount, "crypto_amount")?;
        check_decimals(self.crypto_amount, self.crypto_currency, "crypto_amount")?;
        if let Some(deposit) = &self.deposit {
            deposit.validate(self.crypto_currency, "deposit")?;
        }
        Ok(())
    }
}

/// The payment window closed before the invoice was paid in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceExpired {
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset the invoice was to be paid in.
    pub crypto_currency: CryptoAsset,
    /// What the invoice asked for.
    pub crypto_amount_due: Amount,
    /// What had been received (detected, not failed) when it expired; above zero means partially paid, and
    /// the received amount is owed back to the customer or to the merchant by policy.
    pub crypto_amount_paid: Amount,
    /// When the window closed.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub expired_at: DateTime<Utc>,
}

impl InvoiceExpired {
    /// Whether some payment had arrived.
    pub fn is_partially_paid(&self) -> bool {
        !self.crypto_amount_paid.is_zero()
    }

    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_positive(self.crypto_amount_due, "crypto_amount_due")?;
        check_decimals(
            self.crypto_amount_due,
            self.crypto_currency,
            "crypto_amount_due",
        )?;
        check_decimals(
            self.crypto_amount_paid,
            self.crypto_currency,
            "crypto_amount_paid",
        )?;
        if self.crypto_amount_paid >= self.crypto_amount_due {
            return Err(invariant(
                "crypto_amount_paid",
                format!(
                    "an invoice paid in full ({} of {}) is paid, not expired",
                    self.crypto_amount_paid, self.crypto_amount_due
                ),
            ));
        }
        Ok(())
    }
}

/// The invoice has been paid in full (possibly over-paid, possibly late); its payments may still be
/// confirming — `PaymentConfirmed` tells when each is final.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoicePaid {
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Asset the invoice was paid in.
    pub crypto_currency: CryptoAsset,
    /// What the invoice asked for.
    pub crypto_amount_due: Amount,
    /// What was received in total; at least `crypto_amount_due`.
    pub crypto_amount_paid: Amount,
    /// `crypto_amount_paid − crypto_amount_due`; above zero for an over-payment.
    pub overpaid_amount: Amount,
    /// The payment completed after `expires_at`; the merchant's policy decides whether to honour it.
    pub late_payment: bool,
    /// Every payment that counted towards the invoice, in detection order.
    pub payment_ids: Vec<PaymentId>,
    /// When the last counted payment was detected.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub paid_at: DateTime<Utc>,
}

impl InvoicePaid {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_positive(self.crypto_amount_due, "crypto_amount_due")?;
        check_decimals(
            self.crypto_amount_due,
            self.crypto_currency,
            "crypto_amount_due",
        )?;
        check_decimals(
            self.crypto_amount_paid,
            self.crypto_currency,
            "crypto_amount_paid",
        )?;
        check_decimals(
            self.overpaid_amount,
            self.crypto_currency,
            "overpaid_amount",
        )?;
        let Some(overpaid) = self.crypto_amount_paid.checked_sub(self.crypto_amount_due) else {
            return Err(invariant(
                "crypto_amount_paid",
                format!(
                    "{} paid is less than {} due; that is not paid",
                    self.crypto_amount_paid, self.crypto_amount_due
                ),
            ));
        };
        if overpaid != self.overpaid_amount {
            return Err(invariant(
                "overpaid_amount",
                format!(
                    "must be crypto_amount_paid − crypto_amount_due = {overpaid}, not {}",
                    self.overpaid_amount
                ),
            ));
        }
        if self.payment_ids.is_empty() {
            return Err(invariant(
                "payment_ids",
                "an invoice is paid by at least one payment",
            ));
        }
        check_unique(&self.payment_ids, "payment_ids")
    }
}

/// Why an invoice was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// The merchant cancelled it (order withdrawn, price changed).
    MerchantRequest,
    /// The customer abandoned checkout explicitly.
    CustomerRequest,
    /// Risk checks flagged it.
    SuspectedFraud,
    /// A duplicate of another invoice.
    Duplicate,
    /// Anything else; `details` says what.
    Other,
}

/// The invoice was cancelled before being paid; anything already received must be refunded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceCancelled {
    /// The invoice's merchant.
    pub merchant_id: MerchantId,
    /// Why.
    pub reason: CancellationReason,
    /// Free text, required when `reason` is `other`; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
    /// Asset the invoice was to be paid in.
    pub crypto_currency: CryptoAsset,
    /// What had been received and must be refunded; zero if nothing.
    pub crypto_amount_paid: Amount,
    /// When it was cancelled.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub cancelled_at: DateTime<Utc>,
}

impl InvoiceCancelled {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_details(
            self.details.as_deref(),
            self.reason == CancellationReason::Other,
        )?;
        check_decimals(
            self.crypto_amount_paid,
            self.crypto_currency,
            "crypto_amount_paid",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContractErrorKind;

    fn paid() -> InvoicePaid {
        InvoicePaid {
            merchant_id: MerchantId::new(),
            crypto_currency: CryptoAsset::Btc,
            crypto_amount_due: "0.001".parse().unwrap(),
            crypto_amount_paid: "0.0012".parse().unwrap(),
            overpaid_amount: "0.0002".parse().unwrap(),
            late_payment: false,
            payment_ids: vec![PaymentId::new(), PaymentId::new()],
            paid_at: Utc::now(),
        }
    }

    #[test]
    fn over_payment_must_be_paid_minus_due() {
        assert!(paid().validate().is_ok());
        let wrong = InvoicePaid {
            overpaid_amount: "0.0001".parse().unwrap(),
            ..paid()
        };
        let err = wrong.validate().unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ContractErrorKind::InvariantViolated, "$.overpaid_amount")
        );
    }

    #[test]
    fn under_payment_is_not_paid() {
        let short = InvoicePaid {
            crypto_amount_paid: "0.0009".parse().unwrap(),
            overpaid_amount: Amount::ZERO,
            ..paid()
        };
        assert_eq!(short.validate().unwrap_err().path(), "$.crypto_amount_paid");
    }

    #[test]
    fn the_same_payment_cannot_count_twice() {
        let id = PaymentId::new();
        let twice = InvoicePaid {
            payment_ids: vec![id, id],
            ..paid()
        };
        assert_eq!(twice.validate().unwrap_err().path(), "$.payment_ids[1]");
        let none = InvoicePaid {
            payment_ids: vec![],
            ..paid()
        };
        assert!(none.validate().is_err());
    }

    #[test]
    fn an_expired_invoice_was_not_paid_in_full() {
        let expired = InvoiceExpired {
            merchant_id: MerchantId::new(),
            crypto_currency: CryptoAsset::Usdt,
            crypto_amount_due: "16.49".parse().unwrap(),
            crypto_amount_paid: "10".parse().unwrap(),
            expired_at: Utc::now(),
        };
        assert!(expired.validate().is_ok() && expired.is_partially_paid());
        let full = InvoiceExpired {
            crypto_amount_paid: "16.49".parse().unwrap(),
            ..expired
        };
        assert_eq!(
            full.validate().unwrap_err().kind(),
            ContractErrorKind::InvariantViolated
        );
    }

    #[test]
    fn other_reasons_need_details() {
        let cancelled = InvoiceCancelled {
            merchant_id: MerchantId::new(),
            reason: CancellationReason::Other,
            details: None,
            crypto_currency: CryptoAsset::Eth,
            crypto_amount_paid: Amount::ZERO,
            cancelled_at: Utc::now(),
        };
        assert_eq!(cancelled.validate().unwrap_err().path(), "$.details");
        let explained = InvoiceCancelled {
            details: Some("store closed".into()),
            ..cancelled
        };
        assert!(explained.validate().is_ok());
    }
}
