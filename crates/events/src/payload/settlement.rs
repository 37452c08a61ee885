//! Settlement events: an invoice's proceeds are paid to its merchant, minus the platform fee.
//!
//! Guarantees: a settlement's `platform_fee_amount` and `net_amount` are exactly what
//! [`crate::money::platform_fee`] gives for its `gross_amount`, `fee_percentage` and `currency` — so
//! `platform_fee_amount + net_amount == gross_amount` — and all amounts respect the currency's decimals.
//!
//! The spec's SettlementCompleted example has no `currency`. Without it neither "more decimals than the
//! currency has" nor "rounded to the minor unit" can be checked, nor can a consumer tell what was paid, so the
//! contract requires it (decision 0003).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{check_decimals, check_details, check_positive, invariant};
use crate::error::ContractError;
use crate::id::{InvoiceId, MerchantId};
use crate::money::{Amount, Currency, Percentage, platform_fee};
use crate::time::rfc3339;

/// Checks gross/fee/net against the fee function; paths name the field that is off.
fn check_split(
    currency: Currency,
    gross: Amount,
    fee: Amount,
    net: Amount,
    percentage: Percentage,
) -> Result<(), ContractError> {
    check_positive(gross, "gross_amount")?;
    check_decimals(gross, currency, "gross_amount")?;
    check_decimals(fee, currency, "platform_fee_amount")?;
    check_decimals(net, currency, "net_amount")?;
    if fee.checked_add(net) != Some(gross) {
        return Err(invariant(
            "net_amount",
            format!("platform_fee_amount {fee} + net_amount {net} must equal gross_amount {gross}"),
        ));
    }
    let expected = platform_fee(gross, percentage, currency).map_err(|e| e.at("gross_amount"))?;
    if expected.fee != fee {
        return Err(invariant(
            "platform_fee_amount",
            format!(
                "{percentage}% of {gross} {currency} is {} after rounding half to even, not {fee}",
                expected.fee
            ),
        ));
    }
    Ok(())
}

/// A settlement of an invoice's proceeds was computed and queued for payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementCreated {
    /// The settled invoice (one settlement per invoice).
    pub invoice_id: InvoiceId,
    /// The merchant being paid; the partition key.
    pub merchant_id: MerchantId,
    /// Currency of all amounts below.
    pub currency: Currency,
    /// The invoice's proceeds.
    pub gross_amount: Amount,
    /// The platform's fee: `fee_percentage` of `gross_amount`, rounded half to even to the currency's unit.
    pub platform_fee_amount: Amount,
    /// What the merchant receives: `gross_amount − platform_fee_amount`.
    pub net_amount: Amount,
    /// The merchant's fee rate, `1` meaning 1 %.
    pub fee_percentage: Percentage,
}

impl SettlementCreated {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_split(
            self.currency,
            self.gross_amount,
            self.platform_fee_amount,
            self.net_amount,
            self.fee_percentage,
        )
    }
}

/// The net amount was paid out to the merchant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementCompleted {
    /// The settled invoice.
    pub invoice_id: InvoiceId,
    /// The merchant paid; the partition key.
    pub merchant_id: MerchantId,
    /// Currency of all amounts below.
    pub currency: Currency,
    /// The invoice's proceeds.
    pub gross_amount: Amount,
    /// The platform's fee: `fee_percentage` of `gross_amount`, rounded half to even to the currency's unit.
    pub platform_fee_amount: Amount,
    /// What the merchant received: `gross_amount − platform_fee_amount`.
    pub net_amount: Amount,
    /// The merchant's fee rate, `1` meaning 1 %.
    pub fee_percentage: Percentage,
    /// When the payout completed.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub settled_at: DateTime<Utc>,
}

impl SettlementCompleted {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_split(
            self.currency,
            self.gross_amount,
            self.platform_fee_amount,
            self.net_amount,
            self.fee_percentage,
        )
    }
}

/// Why a payout failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettlementFailureReason {
    /// The merchant's payout destination (address, bank account) is invalid.
    InvalidPayoutDestination,
    /// The payout provider or chain rejected the transfer.
    PayoutRejected,
    /// Compliance holds the funds pending review.
    ComplianceHold,
    /// The merchant is suspended: the payout is held (`will_retry: true`) and completed once the merchant is
    /// reinstated (decision 0026).
    MerchantSuspended,
    /// Anything else; `details` says what.
    Other,
}

/// A payout attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementFailed {
    /// The settled invoice.
    pub invoice_id: InvoiceId,
    /// The merchant to be paid; the partition key.
    pub merchant_id: MerchantId,
    /// Currency of `net_amount`.
    pub currency: Currency,
    /// What was to be paid out.
    pub net_amount: Amount,
    /// Why it failed.
    pub reason: SettlementFailureReason,
    /// Free text, required when `reason` is `other`; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
    /// Whether settlement will try again by itself; if not, operations must act.
    pub will_retry: bool,
    /// When the attempt failed.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub failed_at: DateTime<Utc>,
}

impl SettlementFailed {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_decimals(self.net_amount, self.currency, "net_amount")?;
        if self.reason == SettlementFailureReason::MerchantSuspended && !self.will_retry {
            return Err(invariant(
                "will_retry",
                "a settlement held for a suspended merchant is retried when the merchant is reinstated",
            ));
        }
        check_details(
            self.details.as_deref(),
            self.reason == SettlementFailureReason::Other,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContractErrorKind;
    use crate::money::FiatCurrency;

    fn completed(fee: &str, net: &str) -> SettlementCompleted {
        SettlementCompleted {
            invoice_id: InvoiceId::new(),
            merchant_id: MerchantId::new(),
            currency: Currency::Fiat(FiatCurrency::USD),
            gross_amount: "16.49".parse().unwrap(),
            platform_fee_amount: fee.parse().unwrap(),
            net_amount: net.parse().unwrap(),
            fee_percentage: "1.0".parse().unwrap(),
            settled_at: Utc::now(),
        }
    }

    #[test]
    fn the_specs_numbers_hold() {
        assert!(completed("0.16", "16.33").validate().is_ok());
    }

    #[test]
    fn fee_plus_net_must_be_gross() {
        let err = completed("0.16", "16.34").validate().unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ContractErrorKind::InvariantViolated, "$.net_amount")
        );
    }

    #[test]
    fn fee_must_match_the_percentage() {
        let err = completed("0.17", "16.32").validate().unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (
                ContractErrorKind::InvariantViolated,
                "$.platform_fee_amount"
            )
        );
        assert!(err.message().contains("0.16"), "{err}");
    }

    #[test]
    fn a_suspended_merchants_settlement_is_held_for_retry() {
        let held = SettlementFailed {
            invoice_id: InvoiceId::new(),
            merchant_id: MerchantId::new(),
            currency: Currency::Fiat(FiatCurrency::USD),
            net_amount: "16.33".parse().unwrap(),
            reason: SettlementFailureReason::MerchantSuspended,
            details: None,
            will_retry: true,
            failed_at: Utc::now(),
        };
        assert!(held.validate().is_ok());
        assert_eq!(
            serde_json::to_value(held.reason).unwrap(),
            serde_json::json!("merchant_suspended")
        );
        let err = SettlementFailed {
            will_retry: false,
            ..held
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ContractErrorKind::InvariantViolated, "$.will_retry")
        );
    }

    #[test]
    fn amounts_respect_the_currency() {
        let err = completed("0.1649", "16.3251").validate().unwrap_err();
        assert_eq!(
            (err.kind(), err.path()),
            (ContractErrorKind::TooManyDecimals, "$.platform_fee_amount")
        );
    }
}
