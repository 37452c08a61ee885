//! The contract of `crypto-checkout.analytics-events` ("Metrics and reporting", key "Date partition").
//!
//! The spec names the topic but no payload. Our contract (decision 0011; moved here from the analytics service
//! by decision 0021): the checkout page reports each time a customer opens an invoice's checkout as a
//! [`CheckoutViewed`]:
//!
//! ```json
//! {"event_id":"0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","event_type":"CheckoutViewed","event_version":1,
//!  "invoice_id":"inv_…","merchant_id":"mer_…","occurred_at":"2025-01-15T10:01:12Z"}
//! ```
//!
//! keyed by the UTC date of `occurred_at` (`2025-01-15`).
//!
//! Guarantees:
//! - [`CheckoutViewed::decode`] accepts exactly that shape, fields in any order, `event_id` bare or `evt_…`:
//!   unknown, missing or duplicate fields, another type or version, non-UTC times, ids of the wrong kind, more
//!   than [`crate::MAX_EVENT_BYTES`] are [`ContractError`]s naming the JSON path (schema errors for the runtime).
//! - [`CheckoutViewed::encode`] writes the canonical form, byte for byte what the checkout page's producer
//!   writes today: compact JSON, keys in the order above, `event_id` as a bare UUID, ids of the merchant and
//!   invoice prefixed, `occurred_at` in UTC with `Z`. `decode(encode(v)) == v`.
//! - Every field is typed, so a constructed value is always valid; the only rules beyond types are the wire
//!   form's.

use chrono::{DateTime, Utc};
use schemars::{Schema, json_schema};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::codec::{check_size, not_an_object, parse};
use crate::error::{ContractError, ContractErrorKind, from_serde};
use crate::id::{EventId, InvoiceId, MerchantId};
use crate::time::{self, rfc3339};
use crate::{AggregateType, headers};

/// The record type of a checkout page view.
pub const CHECKOUT_VIEWED: &str = "CheckoutViewed";
/// Its only version.
pub const CHECKOUT_VIEWED_VERSION: u32 = 1;

/// A customer opened an invoice's checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutViewed {
    /// Unique id of the record; the analytics group de-duplicates by it.
    pub event_id: EventId,
    pub merchant_id: MerchantId,
    pub invoice_id: InvoiceId,
    /// When the page was opened (UTC); its date is the partition key.
    pub occurred_at: DateTime<Utc>,
}

/// The record as it comes off the wire.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    event_id: EventId,
    event_type: String,
    event_version: u32,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    occurred_at: DateTime<Utc>,
}

impl CheckoutViewed {
    /// A view of `invoice_id`'s checkout at `occurred_at`, with a fresh time-ordered id.
    pub fn new(merchant_id: MerchantId, invoice_id: InvoiceId, occurred_at: DateTime<Utc>) -> Self {
        CheckoutViewed {
            event_id: EventId::new(),
            merchant_id,
            invoice_id,
            occurred_at,
        }
    }

    /// Decodes and validates one record.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContractError> {
        check_size(bytes.len())?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ContractError::new(
                ContractErrorKind::MalformedJson,
                "$",
                format!("not UTF-8: {e}"),
            )
        })?;
        if text.trim_start().starts_with('[') {
            return Err(not_an_object("$"));
        }
        let wire: Wire = parse(text)?;
        if wire.event_type != CHECKOUT_VIEWED {
            return Err(ContractError::new(
                ContractErrorKind::UnknownEventType,
                "$.event_type",
                format!(
                    "`{}` is not a record of {}; expected {CHECKOUT_VIEWED}",
                    wire.event_type,
                    crate::topics::ANALYTICS_EVENTS
                ),
            ));
        }
        if wire.event_version != CHECKOUT_VIEWED_VERSION {
            return Err(ContractError::new(
                ContractErrorKind::UnknownVersion,
                "$.event_version",
                format!(
                    "{CHECKOUT_VIEWED} has only version {CHECKOUT_VIEWED_VERSION}, not {}",
                    wire.event_version
                ),
            ));
        }
        Ok(CheckoutViewed {
            event_id: wire.event_id,
            merchant_id: wire.merchant_id,
            invoice_id: wire.invoice_id,
            occurred_at: wire.occurred_at,
        })
    }

    /// The canonical encoding (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        let mut out = Vec::with_capacity(256);
        serde_json::to_writer(&mut out, self).map_err(|e| from_serde(&e, "$".to_owned()))?;
        check_size(out.len())?;
        Ok(out)
    }

    /// The Kafka key: the UTC date of `occurred_at`, `YYYY-MM-DD` (the spec's "Date partition").
    pub fn partition_key(&self) -> String {
        self.occurred_at.date_naive().format("%Y-%m-%d").to_string()
    }

    /// Kafka headers, named like a domain event's: the record is about its invoice.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (headers::EVENT_ID, self.event_id.to_string()),
            (headers::EVENT_TYPE, CHECKOUT_VIEWED.to_owned()),
            (headers::EVENT_VERSION, CHECKOUT_VIEWED_VERSION.to_string()),
            (
                headers::AGGREGATE_TYPE,
                AggregateType::Invoice.as_str().to_owned(),
            ),
            (headers::AGGREGATE_ID, self.invoice_id.to_string()),
            (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
        ]
    }
}

/// The canonical wire form. Serialising does not check the size; [`CheckoutViewed::encode`] does.
impl Serialize for CheckoutViewed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CheckoutViewed", 6)?;
        // The bare UUID, as the checkout page has always written it (both forms decode).
        s.serialize_field("event_id", &self.event_id.as_uuid())?;
        s.serialize_field("event_type", CHECKOUT_VIEWED)?;
        s.serialize_field("event_version", &CHECKOUT_VIEWED_VERSION)?;
        s.serialize_field("invoice_id", &self.invoice_id)?;
        s.serialize_field("merchant_id", &self.merchant_id)?;
        s.serialize_field("occurred_at", &time::format_utc(&self.occurred_at))?;
        s.end()
    }
}

/// File name of [`checkout_viewed_schema`] under `crates/events/schemas/`.
pub const CHECKOUT_VIEWED_SCHEMA_FILE: &str = "CheckoutViewed.v1.schema.json";

/// The JSON Schema (draft 2020-12) of a `CheckoutViewed` record.
pub fn checkout_viewed_schema() -> Schema {
    let mut generator = crate::schema::generator();
    let event_id = generator.subschema_for::<EventId>();
    let merchant_id = generator.subschema_for::<MerchantId>();
    let invoice_id = generator.subschema_for::<InvoiceId>();
    let mut occurred_at = generator.subschema_for::<DateTime<Utc>>();
    occurred_at.insert(
        "description".into(),
        "When the checkout page was opened: RFC 3339 in UTC (`Z` or `+00:00`); its date is the key.".into(),
    );
    let schema = json_schema!({
        "title": format!("{CHECKOUT_VIEWED} v{CHECKOUT_VIEWED_VERSION}"),
        "description": format!(
            "A customer opened an invoice's checkout page; on {}, keyed by the UTC date of occurred_at.",
            crate::topics::ANALYTICS_EVENTS
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "event_id", "event_type", "event_version", "invoice_id", "merchant_id", "occurred_at"
        ],
        "properties": {
            "event_id": event_id,
            "event_type": { "const": CHECKOUT_VIEWED },
            "event_version": { "const": CHECKOUT_VIEWED_VERSION },
            "invoice_id": invoice_id,
            "merchant_id": merchant_id,
            "occurred_at": occurred_at
        }
    });
    crate::schema::standalone(
        schema,
        CHECKOUT_VIEWED_SCHEMA_FILE,
        generator.take_definitions(true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of the old analytics decoder's tests, in the order the checkout page writes keys.
    const VIEW: &str = r#"{"event_id":"0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","event_type":"CheckoutViewed","event_version":1,"invoice_id":"inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e","merchant_id":"mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","occurred_at":"2025-01-15T10:01:12Z"}"#;

    #[test]
    fn the_canonical_form_round_trips_byte_for_byte() {
        let view = CheckoutViewed::decode(VIEW.as_bytes()).unwrap();
        assert_eq!(view.occurred_at.to_rfc3339(), "2025-01-15T10:01:12+00:00");
        assert_eq!(String::from_utf8(view.encode().unwrap()).unwrap(), VIEW);
        assert_eq!(view.partition_key(), "2025-01-15");
    }

    #[test]
    fn field_order_and_the_prefixed_event_id_are_accepted() {
        let reordered = r#"{"merchant_id":"mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","invoice_id":"0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e","occurred_at":"2025-01-15T10:01:12+00:00","event_version":1,"event_type":"CheckoutViewed","event_id":"evt_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"}"#;
        assert_eq!(
            CheckoutViewed::decode(reordered.as_bytes()).unwrap(),
            CheckoutViewed::decode(VIEW.as_bytes()).unwrap()
        );
    }

    #[test]
    fn refuses_what_the_contract_does_not_say_naming_the_path() {
        for (bad, kind, path) in [
            (
                VIEW.replace("\"event_version\":1", "\"event_version\":2"),
                ContractErrorKind::UnknownVersion,
                "$.event_version",
            ),
            (
                VIEW.replace("Z\"}", "+02:00\"}"),
                ContractErrorKind::InvalidTimestamp,
                "$.occurred_at",
            ),
            (
                VIEW.replace('}', ",\"extra\":1}"),
                ContractErrorKind::UnknownField,
                "$.extra",
            ),
            (
                VIEW.replace("\"merchant_id\":\"mer_", "\"merchant_id\":\"inv_"),
                ContractErrorKind::WrongIdPrefix,
                "$.merchant_id",
            ),
            (
                VIEW.replace(
                    ",\"invoice_id\":\"inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e\"",
                    "",
                ),
                ContractErrorKind::MissingField,
                "$.invoice_id",
            ),
            (
                VIEW.replace("CheckoutViewed", "CheckoutClosed"),
                ContractErrorKind::UnknownEventType,
                "$.event_type",
            ),
            (
                "not json".to_string(),
                ContractErrorKind::MalformedJson,
                "$",
            ),
            ("[1,2]".to_string(), ContractErrorKind::WrongType, "$"),
        ] {
            let err = CheckoutViewed::decode(bad.as_bytes()).expect_err(&bad);
            assert_eq!((err.kind(), err.path()), (kind, path), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_is_the_utc_date_and_headers_name_the_record() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T23:59:59.999999Z")
            .unwrap()
            .with_timezone(&Utc);
        let view = CheckoutViewed::new(MerchantId::new(), InvoiceId::new(), at);
        assert_eq!(view.partition_key(), "2026-03-01");
        let decoded = CheckoutViewed::decode(&view.encode().unwrap()).unwrap();
        assert_eq!(decoded, view);
        let headers = view.kafka_headers();
        assert!(headers.contains(&(headers::EVENT_TYPE, CHECKOUT_VIEWED.to_owned())));
        assert!(headers.contains(&(headers::AGGREGATE_ID, view.invoice_id.to_string())));
    }
}
