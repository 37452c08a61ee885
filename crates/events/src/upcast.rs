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
use crate::payload::{EventData, MAX_DETAILS_CHARS, MerchantSuspended, SuspensionReason};
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
    fn zero_future_and_retired_versions_are_unknown() {
        for version in [0, 3, u32::MAX] {
            let err = check_version(EventType::MerchantSuspended, version).unwrap_err();
            assert_eq!(
                (err.kind(), err.path()),
                (ContractErrorKind::UnknownVersion, "$.event_version")
            );
        }
        assert!(check_version(EventType::MerchantSuspended, 1).is_ok());
        let err = check_version(EventType::InvoiceCreated, 2).unwrap_err();
        assert!(err.message().contains("newer"), "{err}");
    }
}
