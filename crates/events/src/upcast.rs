//! Upcasting: older payload versions become the current one at decode time.
//!
//! Guarantees (decision 0004): handlers only ever see current payload types. For each event type the decoder
//! accepts versions `oldest_version..=current_version` of [`crate::CATALOGUE`]; an older version is parsed
//! into its own frozen struct, checked against that version's rules, and converted step by step (`v1 → v2 →
//! …`) by pure functions that lose no information. Version 0, versions newer than this build knows, and
//! versions retired from the catalogue are [`ContractErrorKind::UnknownVersion`].
//!
//! Frozen structs live here, named `<Event>V<n>`, and never change once released.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::codec::parse;
use crate::error::{ContractError, ContractErrorKind};
use crate::event_type::EventType;
use crate::money::{Amount, CryptoAsset, Currency, FiatCurrency, Percentage};
use crate::payload::{
    Change, EventData, InvoiceCreated, MAX_DETAILS_CHARS, MerchantContact, MerchantCreated,
    MerchantSuspended, SettingsChanges, SettingsUpdated, SpeedPolicy, SuspensionReason,
};
use crate::time::rfc3339;

/// `MerchantSuspended` version 1: the reason was free text only.
///
/// Version 2 replaced it with a reason code consumers can branch on, plus optional details. Upcasting keeps
/// the text: `reason: other`, `details: <v1 reason>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantSuspendedV1 {
    /// Why, in words; 1 to 1000 characters.
    #[schemars(length(min = 1, max = 1000))]
    pub reason: String,
    /// When the suspension took effect.
    #[serde(
        serialize_with = "rfc3339::serialize",
        deserialize_with = "rfc3339::deserialize"
    )]
    pub suspended_at: DateTime<Utc>,
}

impl MerchantSuspendedV1 {
    fn validate(&self) -> Result<(), ContractError> {
        crate::metadata::check_text(Some(&self.reason), MAX_DETAILS_CHARS, "reason")
    }
}

impl From<MerchantSuspendedV1> for MerchantSuspended {
    fn from(v1: MerchantSuspendedV1) -> Self {
        MerchantSuspended {
            reason: SuspensionReason::Other,
            details: Some(v1.reason),
            suspended_at: v1.suspended_at,
        }
    }
}

/// `MerchantCreated` version 1: no contact details.
///
/// Version 2 added `contact`; upcasting gives an empty one (no contact on file), which is what version 1 meant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantCreatedV1 {
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
}

impl From<MerchantCreatedV1> for MerchantCreated {
    fn from(v1: MerchantCreatedV1) -> Self {
        MerchantCreated {
            business_name: v1.business_name,
            default_currency: v1.default_currency,
            settlement_currency: v1.settlement_currency,
            fee_percentage: v1.fee_percentage,
            accepted_crypto_currencies: v1.accepted_crypto_currencies,
            speed_policy: v1.speed_policy,
            contact: MerchantContact::default(),
        }
    }
}

/// `SettingsUpdated` version 1's changes: no contact details.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChangesV1 {
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
}

/// `SettingsUpdated` version 1: its changes could not name contact details. Upcasting keeps every change and
/// adds none; version 2's rules (which include version 1's) are checked after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdatedV1 {
    /// What changed, each with old and new value.
    pub changes: SettingsChangesV1,
}

impl From<SettingsUpdatedV1> for SettingsUpdated {
    fn from(v1: SettingsUpdatedV1) -> Self {
        let c = v1.changes;
        SettingsUpdated {
            changes: SettingsChanges {
                default_currency: c.default_currency,
                settlement_currency: c.settlement_currency,
                invoice_expiry_minutes: c.invoice_expiry_minutes,
                speed_policy: c.speed_policy,
                payment_tolerance_percentage: c.payment_tolerance_percentage,
                accepted_crypto_currencies: c.accepted_crypto_currencies,
                contact: None,
            },
        }
    }
}

/// `InvoiceCreated` version 1: no deposit address.
///
/// Version 2 added `deposit` (network, address, required confirmations; decision 0034). Upcasting gives none:
/// version 1 named no address, and inventing one would send customers' money nowhere. Such an invoice cannot be
/// matched to on-chain payments (the payments service ignores it); everything else about it is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceCreatedV1 {
    /// The merchant who will be paid.
    pub merchant_id: crate::id::MerchantId,
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
}

impl From<InvoiceCreatedV1> for InvoiceCreated {
    fn from(v1: InvoiceCreatedV1) -> Self {
        InvoiceCreated {
            merchant_id: v1.merchant_id,
            total_amount: v1.total_amount,
            currency: v1.currency,
            crypto_amount: v1.crypto_amount,
            crypto_currency: v1.crypto_currency,
            expires_at: v1.expires_at,
            deposit: None,
        }
    }
}

/// Fails unless the catalogue says `version` of `event_type` is decodable; the path is `$.event_version`.
pub(crate) fn check_version(event_type: EventType, version: u32) -> Result<(), ContractError> {
    let spec = event_type.spec();
    if (spec.oldest_version..=spec.current_version).contains(&version) {
        return Ok(());
    }
    let why = if version > spec.current_version {
        "is newer than this build knows; deploy consumers before producers"
    } else if version == 0 {
        "is not a version; versions start at 1"
    } else {
        "is no longer decoded"
    };
    Err(ContractError::new(
        ContractErrorKind::UnknownVersion,
        "$.event_version",
        format!(
            "{event_type} version {version} {why} (accepted: {}..={})",
            spec.oldest_version, spec.current_version
        ),
    ))
}

/// Parses `raw` as version `version` of `event_type` (already accepted by [`check_version`]) and upcasts it
/// to the current version. Errors carry paths relative to `event_data`.
pub(crate) fn decode_payload(
    event_type: EventType,
    version: u32,
    raw: &str,
) -> Result<EventData, ContractError> {
    if version == event_type.current_version() {
        return EventData::parse_current(event_type, raw);
    }
    match (event_type, version) {
        (EventType::MerchantSuspended, 1) => {
            let v1: MerchantSuspendedV1 = parse(raw)?;
            v1.validate()?;
            Ok(EventData::MerchantSuspended(v1.into()))
        }
        (EventType::MerchantCreated, 1) => {
            let current: MerchantCreated = parse::<MerchantCreatedV1>(raw)?.into();
            current.validate()?;
            Ok(EventData::MerchantCreated(current))
        }
        (EventType::SettingsUpdated, 1) => {
            let current: SettingsUpdated = parse::<SettingsUpdatedV1>(raw)?.into();
            current.validate()?;
            Ok(EventData::SettingsUpdated(current))
        }
        (EventType::InvoiceCreated, 1) => {
            let current: InvoiceCreated = parse::<InvoiceCreatedV1>(raw)?.into();
            current.validate()?;
            Ok(EventData::InvoiceCreated(current))
        }
        // `has_upcaster` and its test keep the catalogue and this match in step.
        _ => Err(ContractError::new(
            ContractErrorKind::UnknownVersion,
            "$",
            format!("{event_type} version {version} has no upcaster"),
        )),
    }
}

/// JSON Schemas of a frozen older version's payload and aggregate id, for [`crate::schema`].
pub(crate) fn legacy_schemas(
    event_type: EventType,
    version: u32,
    generator: &mut schemars::SchemaGenerator,
) -> Option<(schemars::Schema, schemars::Schema)> {
    match (event_type, version) {
        (EventType::MerchantSuspended, 1) => Some((
            generator.subschema_for::<MerchantSuspendedV1>(),
            generator.subschema_for::<crate::id::MerchantId>(),
        )),
        (EventType::MerchantCreated, 1) => Some((
            generator.subschema_for::<MerchantCreatedV1>(),
            generator.subschema_for::<crate::id::MerchantId>(),
        )),
        (EventType::SettingsUpdated, 1) => Some((
            generator.subschema_for::<SettingsUpdatedV1>(),
            generator.subschema_for::<crate::id::MerchantId>(),
        )),
        (EventType::InvoiceCreated, 1) => Some((
            generator.subschema_for::<InvoiceCreatedV1>(),
            generator.subschema_for::<crate::id::InvoiceId>(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_in_the_catalogue_can_be_decoded() {
        for spec in crate::CATALOGUE {
            for version in spec.oldest_version..spec.current_version {
                let mut generator = schemars::SchemaGenerator::default();
                assert!(
                    legacy_schemas(spec.event_type, version, &mut generator).is_some(),
                    "{} v{version} has no frozen struct",
                    spec.event_type
                );
                let err = decode_payload(spec.event_type, version, "{}").unwrap_err();
                assert_ne!(
                    err.kind(),
                    ContractErrorKind::UnknownVersion,
                    "{} v{version} has no upcaster",
                    spec.event_type
                );
            }
        }
    }

    #[test]
    fn v1_suspension_keeps_its_text() {
        let raw = r#"{"reason":"chargeback pattern","suspended_at":"2025-01-15T10:00:00Z"}"#;
        let EventData::MerchantSuspended(v2) =
            decode_payload(EventType::MerchantSuspended, 1, raw).unwrap()
        else {
            panic!("wrong variant");
        };
        assert_eq!(v2.reason, SuspensionReason::Other);
        assert_eq!(v2.details.as_deref(), Some("chargeback pattern"));
    }

    #[test]
    fn v1_rules_still_apply_before_upcasting() {
        let raw = r#"{"reason":"","suspended_at":"2025-01-15T10:00:00Z"}"#;
        let err = decode_payload(EventType::MerchantSuspended, 1, raw).unwrap_err();
        assert_eq!(err.path(), "$.reason");
        // A v2 payload sent with version 1 is refused, not half-read.
        let v2 = r#"{"reason":"other","details":"x","suspended_at":"2025-01-15T10:00:00Z"}"#;
        assert_eq!(
            decode_payload(EventType::MerchantSuspended, 1, v2)
                .unwrap_err()
                .kind(),
            ContractErrorKind::UnknownField
        );
    }

    #[test]
    fn v1_merchant_created_has_no_contact_and_v2_fields_are_refused_in_v1() {
        let raw = r#"{"business_name":"Coffee Corner","default_currency":"USD","settlement_currency":"USD",
            "fee_percentage":"1","accepted_crypto_currencies":["BTC"],"speed_policy":"medium_speed"}"#;
        let EventData::MerchantCreated(v2) =
            decode_payload(EventType::MerchantCreated, 1, raw).unwrap()
        else {
            panic!("wrong variant");
        };
        assert_eq!(v2.contact, MerchantContact::default());
        assert_eq!(v2.business_name, "Coffee Corner");
        let with_contact = raw.replace("}", r#","contact":{}}"#);
        assert_eq!(
            decode_payload(EventType::MerchantCreated, 1, &with_contact)
                .unwrap_err()
                .kind(),
            ContractErrorKind::UnknownField
        );
        // Version 1's rules still hold after upcasting.
        let no_assets = raw.replace(r#"["BTC"]"#, "[]");
        assert_eq!(
            decode_payload(EventType::MerchantCreated, 1, &no_assets)
                .unwrap_err()
                .path(),
            "$.accepted_crypto_currencies"
        );
    }

    #[test]
    fn v1_settings_update_keeps_its_changes() {
        let raw = r#"{"changes":{"invoice_expiry_minutes":{"old":15,"new":30}}}"#;
        let EventData::SettingsUpdated(v2) =
            decode_payload(EventType::SettingsUpdated, 1, raw).unwrap()
        else {
            panic!("wrong variant");
        };
        assert_eq!(
            v2.changes.invoice_expiry_minutes,
            Some(Change { old: 15, new: 30 })
        );
        assert_eq!(v2.changes.contact, None);
        let contact = r#"{"changes":{"contact":{"old":{},"new":{"email":"a@b.example"}}}}"#;
        assert_eq!(
            decode_payload(EventType::SettingsUpdated, 1, contact)
                .unwrap_err()
                .kind(),
            ContractErrorKind::UnknownField
        );
        assert!(decode_payload(EventType::SettingsUpdated, 2, contact).is_ok());
    }

    #[test]
    fn contact_addresses_follow_the_channel_rules() {
        // Version 2 is the current one: parsed here, checked by the envelope's validation.
        for (new, path) in [
            (
                r#"{"email":"not an address"}"#,
                "$.changes.contact.new.email",
            ),
            (r#"{"phone":"555-1234"}"#, "$.changes.contact.new.phone"),
            (r#"{"locale":"english"}"#, "$.changes.contact.new.locale"),
        ] {
            let raw = format!(r#"{{"changes":{{"contact":{{"old":{{}},"new":{new}}}}}}}"#);
            let EventData::SettingsUpdated(update) =
                decode_payload(EventType::SettingsUpdated, 2, &raw).unwrap()
            else {
                panic!("wrong variant");
            };
            assert_eq!(update.validate().unwrap_err().path(), path);
        }
    }

    #[test]
    fn v1_invoice_created_has_no_deposit_and_v2_fields_are_refused_in_v1() {
        let raw = r#"{"merchant_id":"mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","total_amount":"16.49",
            "currency":"USD","crypto_amount":"16.49","crypto_currency":"USDT","expires_at":"2025-01-15T10:30:00Z"}"#;
        let EventData::InvoiceCreated(v2) =
            decode_payload(EventType::InvoiceCreated, 1, raw).unwrap()
        else {
            panic!("wrong variant");
        };
        assert_eq!(v2.deposit, None);
        assert_eq!(v2.crypto_amount.to_string(), "16.49");
        let deposit = r#","deposit":{"network":"tron","address":"TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7","required_confirmations":5}}"#;
        let with_deposit = raw.trim_end_matches('}').to_string() + deposit;
        assert_eq!(
            decode_payload(EventType::InvoiceCreated, 1, &with_deposit)
                .unwrap_err()
                .kind(),
            ContractErrorKind::UnknownField
        );
        let EventData::InvoiceCreated(current) =
            decode_payload(EventType::InvoiceCreated, 2, &with_deposit).unwrap()
        else {
            panic!("wrong variant");
        };
        assert!(current.validate().is_ok());
        // Version 1's rules still hold after upcasting.
        let zero = raw.replace(r#""crypto_amount":"16.49""#, r#""crypto_amount":"0""#);
        assert_eq!(
            decode_payload(EventType::InvoiceCreated, 1, &zero)
                .unwrap_err()
                .path(),
            "$.crypto_amount"
        );
        // A deposit on a network that does not carry the asset, or an address of another network, is refused.
        for (bad, path) in [
            (
                with_deposit.replace(r#""network":"tron""#, r#""network":"bitcoin""#),
                "$.deposit.network",
            ),
            (
                with_deposit.replace(
                    "TLa2f6VPqDgRE67v1736s7bJ8Ray5wYjU7",
                    "0x52908400098527886e0f7030069857d2e4169ee7",
                ),
                "$.deposit.address",
            ),
        ] {
            let EventData::InvoiceCreated(c) =
                decode_payload(EventType::InvoiceCreated, 2, &bad).unwrap()
            else {
                panic!("wrong variant");
            };
            assert_eq!(c.validate().unwrap_err().path(), path, "{bad}");
        }
    }

    #[test]
    fn zero_future_and_retired_versions_are_unknown() {
        for version in [0, 3, u32::MAX] {
            let err = check_version(EventType::MerchantSuspended, version).unwrap_err();
            assert_eq!(
                (err.kind(), err.path()),
                (ContractErrorKind::UnknownVersion, "$.event_version")
            );
        }
        assert!(check_version(EventType::MerchantSuspended, 1).is_ok());
        let err = check_version(EventType::InvoiceCreated, 3).unwrap_err();
        assert!(err.message().contains("newer"), "{err}");
    }
}
