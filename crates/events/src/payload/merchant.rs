//! Merchant events: an account is created, its settings change, it may be suspended and reinstated.
//!
//! Guarantees: a merchant accepts at least one asset and lists each once; a settings change names every
//! changed setting with its old and new value, typed per setting, and changes something; a suspension has a
//! reason code (version 2; version 1 had free text and is upcast, see [`crate::upcast`]); a reinstatement says
//! when, with bounded optional free text (decision 0026). Contact details — where the merchant's e-mail and SMS
//! notifications go, and in which language — arrive with `MerchantCreated` and change with `SettingsUpdated`, both
//! at version 2 (version 1 had none and is upcast to "no contact on file"; decision 0031); each address fits its
//! channel by the notification contract's own rules.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{check_details, check_unique, invariant};
use crate::error::{ContractError, ContractErrorKind};
use crate::money::{CryptoAsset, Currency, FiatCurrency, Percentage};
use crate::time::rfc3339;

/// Longest accepted business name.
pub const MAX_BUSINESS_NAME_CHARS: usize = 200;
/// Accepted invoice expiry windows, in minutes: one minute to one week.
pub const INVOICE_EXPIRY_MINUTES: std::ops::RangeInclusive<u32> = 1..=10_080;

/// How many confirmations a payment needs before it counts, as in BTCPay's speed policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpeedPolicy {
    /// 0 confirmations: accepted as soon as seen.
    HighSpeed,
    /// 1 confirmation.
    MediumSpeed,
    /// 2 confirmations.
    LowMediumSpeed,
    /// 6 confirmations.
    LowSpeed,
}

impl SpeedPolicy {
    /// Confirmations required on Bitcoin; other networks scale this in the chain watcher.
    pub const fn bitcoin_confirmations(self) -> u32 {
        match self {
            SpeedPolicy::HighSpeed => 0,
            SpeedPolicy::MediumSpeed => 1,
            SpeedPolicy::LowMediumSpeed => 2,
            SpeedPolicy::LowSpeed => 6,
        }
    }
}

fn check_accepted(assets: &[CryptoAsset], path: &str) -> Result<(), ContractError> {
    if assets.is_empty() {
        return Err(invariant(path, "a merchant accepts at least one asset"));
    }
    check_unique(assets, path)
}

/// Where a merchant's notifications go when a request names no destination; every field is optional.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantContact {
    /// E-mail address for account notifications (at most 254 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Mobile number for SMS, E.164 (`+15551234567`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Language of the notifications, a BCP 47 tag such as `en` or `de`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl MerchantContact {
    /// Each present field fits: the e-mail and SMS channels' destination rules, a locale tag.
    pub(crate) fn validate(&self, path: &str) -> Result<(), ContractError> {
        use crate::notification::Channel;
        for (channel, value, field) in [
            (Channel::Email, &self.email, "email"),
            (Channel::Sms, &self.phone, "phone"),
        ] {
            if let Some(why) = value.as_deref().and_then(|v| channel.check_destination(v)) {
                return Err(ContractError::at(
                    ContractErrorKind::InvalidValue,
                    &format!("{path}.{field}"),
                    why,
                ));
            }
        }
        if let Some(locale) = &self.locale
            && !crate::notification::is_locale(locale)
        {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                &format!("{path}.locale"),
                format!("`{locale}` is not a locale (`en`, `pt-BR`)"),
            ));
        }
        Ok(())
    }
}

/// A merchant account was opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantCreated {
    /// Name shown to customers at checkout; 1 to 200 characters.
    #[schemars(length(min = 1, max = 200))]
    pub business_name: String,
    /// Currency new invoices are priced in unless they say otherwise.
    pub default_currency: FiatCurrency,
    /// Currency settlements are paid in.
    pub settlement_currency: Currency,
    /// The platform fee rate agreed with the merchant, `1` meaning 1 %.
    pub fee_percentage: Percentage,
    /// Assets customers may pay with.
    pub accepted_crypto_currencies: Vec<CryptoAsset>,
    /// Confirmations a payment needs.
    pub speed_policy: SpeedPolicy,
    /// Where its notifications go (version 2; version 1 events upcast to an empty contact).
    pub contact: MerchantContact,
}

impl MerchantCreated {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        self.contact.validate("contact")?;
        crate::metadata::check_text(
            Some(&self.business_name),
            MAX_BUSINESS_NAME_CHARS,
            "business_name",
        )?;
        check_accepted(
            &self.accepted_crypto_currencies,
            "accepted_crypto_currencies",
        )
    }
}

/// Why a merchant was suspended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionReason {
    /// Risk checks suspect fraud.
    SuspectedFraud,
    /// Compliance (KYB, sanctions) review pending or failed.
    ComplianceReview,
    /// The merchant broke the terms of service.
    TermsViolation,
    /// The merchant asked to pause the account.
    MerchantRequest,
    /// Anything else; `details` says what. Version 1 events, which had only free text, upcast to this.
    Other,
}

/// A merchant's account was suspended: no new invoices, settlements held. Version 2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantSuspended {
    /// Why, as a code consumers can branch on.
    pub reason: SuspensionReason,
    /// Free text, required when `reason` is `other`; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
    /// When the suspension took effect.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub suspended_at: DateTime<Utc>,
}

impl MerchantSuspended {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_details(
            self.details.as_deref(),
            self.reason == SuspensionReason::Other,
        )
    }
}

/// A suspended merchant's account was reinstated: it takes invoices again and its held settlements are
/// released. Version 1 (decision 0026).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantReinstated {
    /// When the reinstatement took effect.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub reinstated_at: DateTime<Utc>,
    /// Free text, e.g. what the review found; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
}

impl MerchantReinstated {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_details(self.details.as_deref(), false)
    }
}

/// Why a webhook endpoint was disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointDisabledReason {
    /// The endpoint answered 410 Gone.
    Gone,
    /// Every attempt to reach it failed for the auto-disable period.
    Failing,
    /// An operator disabled (or removed) it.
    Operator,
}

/// One of the merchant's webhook endpoints was disabled: nothing more is sent to it, its deliveries are kept as
/// failed for a recovery once it is enabled again. Written by the webhooks service or `checkoutctl webhooks` in
/// the transaction that disabled it. Version 1 (decision 0029).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointDisabled {
    /// The endpoint, `ep_<uuid>`.
    #[schemars(regex(
        pattern = r"^ep_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ))]
    pub endpoint_id: String,
    pub reason: EndpointDisabledReason,
    /// When it was disabled.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub disabled_at: DateTime<Utc>,
    /// Free text, e.g. the last error; at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
}

impl WebhookEndpointDisabled {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        let ok = self
            .endpoint_id
            .strip_prefix("ep_")
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
            .is_some_and(|u| !u.is_nil() && self.endpoint_id == format!("ep_{u}"));
        if !ok {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                "endpoint_id",
                format!(
                    "`{}` is not an endpoint id (ep_<lowercase uuid>)",
                    self.endpoint_id
                ),
            ));
        }
        check_details(self.details.as_deref(), false)
    }
}

/// One setting's old and new value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Change<T> {
    /// Value before the update.
    pub old: T,
    /// Value after the update.
    pub new: T,
}

/// The settings an update changed; absent settings did not change.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChanges {
    /// Currency new invoices are priced in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_currency: Option<Change<FiatCurrency>>,
    /// Currency settlements are paid in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_currency: Option<Change<Currency>>,
    /// Payment window of new invoices, in minutes (1 to 10080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_expiry_minutes: Option<Change<u32>>,
    /// Confirmations a payment needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_policy: Option<Change<SpeedPolicy>>,
    /// Under-payment still accepted as full payment, in percent of the invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_tolerance_percentage: Option<Change<Percentage>>,
    /// Assets customers may pay with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_crypto_currencies: Option<Change<Vec<CryptoAsset>>>,
    /// Where its notifications go (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Change<MerchantContact>>,
}

/// A merchant changed settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdated {
    /// What changed, each with old and new value.
    pub changes: SettingsChanges,
}

fn check_changed<T: PartialEq>(
    change: &Option<Change<T>>,
    path: &str,
    any: &mut bool,
) -> Result<(), ContractError> {
    if let Some(change) = change {
        if change.old == change.new {
            return Err(invariant(
                path,
                "old and new value are equal; an unchanged setting is left out",
            ));
        }
        *any = true;
    }
    Ok(())
}

impl SettingsUpdated {
    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        let c = &self.changes;
        let mut any = false;
        check_changed(&c.default_currency, "changes.default_currency", &mut any)?;
        check_changed(
            &c.settlement_currency,
            "changes.settlement_currency",
            &mut any,
        )?;
        check_changed(
            &c.invoice_expiry_minutes,
            "changes.invoice_expiry_minutes",
            &mut any,
        )?;
        check_changed(&c.speed_policy, "changes.speed_policy", &mut any)?;
        check_changed(
            &c.payment_tolerance_percentage,
            "changes.payment_tolerance_percentage",
            &mut any,
        )?;
        check_changed(
            &c.accepted_crypto_currencies,
            "changes.accepted_crypto_currencies",
            &mut any,
        )?;
        check_changed(&c.contact, "changes.contact", &mut any)?;
        if !any {
            return Err(invariant(
                "changes",
                "a settings update changes at least one setting",
            ));
        }
        if let Some(minutes) = &c.invoice_expiry_minutes {
            for (value, side) in [(minutes.old, "old"), (minutes.new, "new")] {
                if !INVOICE_EXPIRY_MINUTES.contains(&value) {
                    return Err(ContractError::at(
                        ContractErrorKind::InvalidValue,
                        &format!("changes.invoice_expiry_minutes.{side}"),
                        format!("{value} minutes is outside {INVOICE_EXPIRY_MINUTES:?}"),
                    ));
                }
            }
        }
        if let Some(assets) = &c.accepted_crypto_currencies {
            check_accepted(&assets.old, "changes.accepted_crypto_currencies.old")?;
            check_accepted(&assets.new, "changes.accepted_crypto_currencies.new")?;
        }
        if let Some(contact) = &c.contact {
            contact.old.validate("changes.contact.old")?;
            contact.new.validate("changes.contact.new")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_must_change_something() {
        let empty = SettingsUpdated {
            changes: SettingsChanges::default(),
        };
        assert_eq!(empty.validate().unwrap_err().path(), "$.changes");
        let same = SettingsUpdated {
            changes: SettingsChanges {
                speed_policy: Some(Change {
                    old: SpeedPolicy::LowSpeed,
                    new: SpeedPolicy::LowSpeed,
                }),
                ..Default::default()
            },
        };
        assert_eq!(
            same.validate().unwrap_err().path(),
            "$.changes.speed_policy"
        );
    }

    #[test]
    fn typed_old_and_new_values_are_checked() {
        let update = SettingsUpdated {
            changes: SettingsChanges {
                invoice_expiry_minutes: Some(Change { old: 30, new: 0 }),
                ..Default::default()
            },
        };
        assert_eq!(
            update.validate().unwrap_err().path(),
            "$.changes.invoice_expiry_minutes.new"
        );
        let json = r#"{"changes":{"default_currency":{"old":"USD","new":"EUR"}}}"#;
        let parsed: SettingsUpdated = serde_json::from_str(json).unwrap();
        assert!(parsed.validate().is_ok());
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
    }

    #[test]
    fn a_reinstatement_has_a_time_and_bounded_optional_details() {
        let json = r#"{"reinstated_at":"2025-01-17T10:00:00Z"}"#;
        let parsed: MerchantReinstated = serde_json::from_str(json).unwrap();
        assert!(parsed.validate().is_ok());
        assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        let long = MerchantReinstated {
            details: Some("x".repeat(1001)),
            ..parsed.clone()
        };
        assert_eq!(long.validate().unwrap_err().path(), "$.details");
        let ok = MerchantReinstated {
            details: Some("x".repeat(1000)),
            ..parsed
        };
        assert!(ok.validate().is_ok());
        assert!(
            serde_json::from_str::<MerchantReinstated>(
                r#"{"reinstated_at":"2025-01-17T10:00:00Z","reason":"other"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn accepted_assets_are_a_non_empty_set() {
        let created = MerchantCreated {
            business_name: "Coffee Corner".into(),
            default_currency: FiatCurrency::USD,
            settlement_currency: Currency::Fiat(FiatCurrency::USD),
            fee_percentage: "1".parse().unwrap(),
            accepted_crypto_currencies: vec![CryptoAsset::Btc, CryptoAsset::Btc],
            speed_policy: SpeedPolicy::MediumSpeed,
            contact: MerchantContact::default(),
        };
        assert_eq!(
            created.validate().unwrap_err().path(),
            "$.accepted_crypto_currencies[1]"
        );
        assert!(
            MerchantCreated {
                accepted_crypto_currencies: vec![],
                ..created
            }
            .validate()
            .is_err()
        );
    }
}
