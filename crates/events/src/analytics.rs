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
//! keyed by the UTC date of `occurred_at` (`2025-01-15`). Beside it, in the same shape and with the same key
//! (issue 14, decision 0011 amended): [`PaymentMethodChosen`] (`crypto_currency` and `network` chosen; the network
//! must carry the asset) and [`CheckoutAbandoned`] (`stage`: `choosing_method` | `awaiting_payment`; `reason`:
//! `left_page` | `expired`). [`AnalyticsEvent`] decodes any record of the topic by its `event_type`;
//! [`RECORD_TYPES`] lists them with their versions, [`record_schema`] gives their JSON Schemas.
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
use schemars::{JsonSchema, Schema, json_schema};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::codec::{check_size, not_an_object, parse};
use crate::error::{ContractError, ContractErrorKind, from_serde};
use crate::id::{EventId, InvoiceId, MerchantId};
use crate::money::CryptoAsset;
use crate::payload::Network;
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

// ---------------------------------------------------------------------------------------------------------------
// The other records of the checkout page (issue 14; decision 0011, amended): a payment method chosen, a checkout
// abandoned. Same envelope-less shape as `CheckoutViewed` (`event_id`, `event_type`, `event_version`, the invoice
// and its merchant, what happened, `occurred_at`), same key (the UTC date of `occurred_at`), same strictness.
// ---------------------------------------------------------------------------------------------------------------

/// The record type of a payment method chosen on the checkout page.
pub const PAYMENT_METHOD_CHOSEN: &str = "PaymentMethodChosen";
/// Its only version.
pub const PAYMENT_METHOD_CHOSEN_VERSION: u32 = 1;
/// The record type of a checkout abandoned without payment.
pub const CHECKOUT_ABANDONED: &str = "CheckoutAbandoned";
/// Its only version.
pub const CHECKOUT_ABANDONED_VERSION: u32 = 1;

/// Every record type of the analytics topic with its current (and only) version.
pub const RECORD_TYPES: [(&str, u32); 3] = [
    (CHECKOUT_VIEWED, CHECKOUT_VIEWED_VERSION),
    (PAYMENT_METHOD_CHOSEN, PAYMENT_METHOD_CHOSEN_VERSION),
    (CHECKOUT_ABANDONED, CHECKOUT_ABANDONED_VERSION),
];

/// File name of the schema of `record_type` under `crates/events/schemas/` (`CheckoutViewed.v1.schema.json`, …).
pub fn schema_file_name(record_type: &str) -> String {
    let version = RECORD_TYPES
        .iter()
        .find(|(t, _)| *t == record_type)
        .map_or(1, |(_, v)| *v);
    format!("{record_type}.v{version}.schema.json")
}

/// The JSON Schema of a record type of the analytics topic; `None` for any other name.
pub fn record_schema(record_type: &str) -> Option<Schema> {
    match record_type {
        CHECKOUT_VIEWED => Some(checkout_viewed_schema()),
        PAYMENT_METHOD_CHOSEN => Some(payment_method_chosen_schema()),
        CHECKOUT_ABANDONED => Some(checkout_abandoned_schema()),
        _ => None,
    }
}

/// The customer picked what to pay with: an asset on a network (the invoice's deposit is then shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodChosen {
    /// Unique id of the record; the analytics group de-duplicates by it.
    pub event_id: EventId,
    pub merchant_id: MerchantId,
    pub invoice_id: InvoiceId,
    /// The asset chosen.
    pub crypto_currency: CryptoAsset,
    /// The network chosen; it carries `crypto_currency` ([`Network::carries`]).
    pub network: Network,
    /// When it was chosen (UTC); its date is the partition key.
    pub occurred_at: DateTime<Utc>,
}

/// How far the customer had come when the checkout was abandoned.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AbandonStage {
    /// On the page, no payment method chosen yet.
    ChoosingMethod,
    /// A method chosen and its deposit shown, nothing paid.
    AwaitingPayment,
}

/// Why the checkout counts as abandoned.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AbandonReason {
    /// The customer left (closed or navigated away from) the page before paying.
    LeftPage,
    /// The invoice expired while the page was still open.
    Expired,
}

impl AbandonStage {
    pub const fn as_str(self) -> &'static str {
        match self {
            AbandonStage::ChoosingMethod => "choosing_method",
            AbandonStage::AwaitingPayment => "awaiting_payment",
        }
    }
}

impl AbandonReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            AbandonReason::LeftPage => "left_page",
            AbandonReason::Expired => "expired",
        }
    }
}

/// The customer abandoned an invoice's checkout without paying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutAbandoned {
    /// Unique id of the record; the analytics group de-duplicates by it.
    pub event_id: EventId,
    pub merchant_id: MerchantId,
    pub invoice_id: InvoiceId,
    pub stage: AbandonStage,
    pub reason: AbandonReason,
    /// When the page was left, or the invoice expired with it open (UTC); its date is the partition key.
    pub occurred_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodWire {
    event_id: EventId,
    event_type: String,
    event_version: u32,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    crypto_currency: CryptoAsset,
    network: Network,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    occurred_at: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbandonedWire {
    event_id: EventId,
    event_type: String,
    event_version: u32,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    stage: AbandonStage,
    reason: AbandonReason,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    occurred_at: DateTime<Utc>,
}

/// The checks every analytics record shares before its fields: size, UTF-8, an object; then the parse.
fn read<W: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<W, ContractError> {
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
    parse(text)
}

/// `event_type` and `event_version` are exactly `(expected, version)`.
fn check_kind(
    event_type: &str,
    event_version: u32,
    expected: &str,
    version: u32,
) -> Result<(), ContractError> {
    if event_type != expected {
        return Err(ContractError::new(
            ContractErrorKind::UnknownEventType,
            "$.event_type",
            format!(
                "`{event_type}` is not a record of {}; expected {expected}",
                crate::topics::ANALYTICS_EVENTS
            ),
        ));
    }
    if event_version != version {
        return Err(ContractError::new(
            ContractErrorKind::UnknownVersion,
            "$.event_version",
            format!("{expected} has only version {version}, not {event_version}"),
        ));
    }
    Ok(())
}

fn encode_record<T: Serialize>(record: &T) -> Result<Vec<u8>, ContractError> {
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, record).map_err(|e| from_serde(&e, "$".to_owned()))?;
    check_size(out.len())?;
    Ok(out)
}

fn date_key(at: &DateTime<Utc>) -> String {
    at.date_naive().format("%Y-%m-%d").to_string()
}

fn headers_of(
    event_id: EventId,
    event_type: &str,
    version: u32,
    invoice: InvoiceId,
) -> Vec<(&'static str, String)> {
    vec![
        (headers::EVENT_ID, event_id.to_string()),
        (headers::EVENT_TYPE, event_type.to_owned()),
        (headers::EVENT_VERSION, version.to_string()),
        (
            headers::AGGREGATE_TYPE,
            AggregateType::Invoice.as_str().to_owned(),
        ),
        (headers::AGGREGATE_ID, invoice.to_string()),
        (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
    ]
}

impl PaymentMethodChosen {
    /// Decodes and validates one record: the network must carry the asset.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContractError> {
        let wire: MethodWire = read(bytes)?;
        check_kind(
            &wire.event_type,
            wire.event_version,
            PAYMENT_METHOD_CHOSEN,
            PAYMENT_METHOD_CHOSEN_VERSION,
        )?;
        let chosen = PaymentMethodChosen {
            event_id: wire.event_id,
            merchant_id: wire.merchant_id,
            invoice_id: wire.invoice_id,
            crypto_currency: wire.crypto_currency,
            network: wire.network,
            occurred_at: wire.occurred_at,
        };
        chosen.validate()?;
        Ok(chosen)
    }

    fn validate(&self) -> Result<(), ContractError> {
        if self.network.carries(self.crypto_currency) {
            Ok(())
        } else {
            Err(ContractError::new(
                ContractErrorKind::InvalidValue,
                "$.network",
                format!(
                    "{} does not carry {}",
                    crate::integration::network_name(self.network),
                    self.crypto_currency.code()
                ),
            ))
        }
    }

    /// The canonical encoding: compact JSON, keys in the order `event_id` (bare UUID), `event_type`,
    /// `event_version`, `invoice_id`, `merchant_id`, `crypto_currency`, `network`, `occurred_at` (UTC, `Z`).
    /// Validates first (the network must carry the asset).
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        self.validate()?;
        encode_record(self)
    }

    /// The Kafka key: the UTC date of `occurred_at`, `YYYY-MM-DD`.
    pub fn partition_key(&self) -> String {
        date_key(&self.occurred_at)
    }

    /// Kafka headers, named like a domain event's: the record is about its invoice.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        headers_of(
            self.event_id,
            PAYMENT_METHOD_CHOSEN,
            PAYMENT_METHOD_CHOSEN_VERSION,
            self.invoice_id,
        )
    }
}

impl Serialize for PaymentMethodChosen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("PaymentMethodChosen", 8)?;
        s.serialize_field("event_id", &self.event_id.as_uuid())?;
        s.serialize_field("event_type", PAYMENT_METHOD_CHOSEN)?;
        s.serialize_field("event_version", &PAYMENT_METHOD_CHOSEN_VERSION)?;
        s.serialize_field("invoice_id", &self.invoice_id)?;
        s.serialize_field("merchant_id", &self.merchant_id)?;
        s.serialize_field("crypto_currency", &self.crypto_currency)?;
        s.serialize_field("network", &self.network)?;
        s.serialize_field("occurred_at", &time::format_utc(&self.occurred_at))?;
        s.end()
    }
}

impl CheckoutAbandoned {
    /// Decodes and validates one record.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContractError> {
        let wire: AbandonedWire = read(bytes)?;
        check_kind(
            &wire.event_type,
            wire.event_version,
            CHECKOUT_ABANDONED,
            CHECKOUT_ABANDONED_VERSION,
        )?;
        Ok(CheckoutAbandoned {
            event_id: wire.event_id,
            merchant_id: wire.merchant_id,
            invoice_id: wire.invoice_id,
            stage: wire.stage,
            reason: wire.reason,
            occurred_at: wire.occurred_at,
        })
    }

    /// The canonical encoding: compact JSON, keys in the order `event_id` (bare UUID), `event_type`,
    /// `event_version`, `invoice_id`, `merchant_id`, `stage`, `reason`, `occurred_at` (UTC, `Z`).
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        encode_record(self)
    }

    /// The Kafka key: the UTC date of `occurred_at`, `YYYY-MM-DD`.
    pub fn partition_key(&self) -> String {
        date_key(&self.occurred_at)
    }

    /// Kafka headers, named like a domain event's: the record is about its invoice.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        headers_of(
            self.event_id,
            CHECKOUT_ABANDONED,
            CHECKOUT_ABANDONED_VERSION,
            self.invoice_id,
        )
    }
}

impl Serialize for CheckoutAbandoned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CheckoutAbandoned", 8)?;
        s.serialize_field("event_id", &self.event_id.as_uuid())?;
        s.serialize_field("event_type", CHECKOUT_ABANDONED)?;
        s.serialize_field("event_version", &CHECKOUT_ABANDONED_VERSION)?;
        s.serialize_field("invoice_id", &self.invoice_id)?;
        s.serialize_field("merchant_id", &self.merchant_id)?;
        s.serialize_field("stage", &self.stage)?;
        s.serialize_field("reason", &self.reason)?;
        s.serialize_field("occurred_at", &time::format_utc(&self.occurred_at))?;
        s.end()
    }
}

/// Any record of the analytics topic, told apart by `event_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalyticsEvent {
    Viewed(CheckoutViewed),
    MethodChosen(PaymentMethodChosen),
    Abandoned(CheckoutAbandoned),
}

impl AnalyticsEvent {
    /// Decodes a record of the analytics topic with the decoder its `event_type` names; any other type is an
    /// [`ContractErrorKind::UnknownEventType`] at `$.event_type`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContractError> {
        match crate::peek_event_type(bytes).as_deref() {
            Some(CHECKOUT_VIEWED) => CheckoutViewed::decode(bytes).map(AnalyticsEvent::Viewed),
            Some(PAYMENT_METHOD_CHOSEN) => {
                PaymentMethodChosen::decode(bytes).map(AnalyticsEvent::MethodChosen)
            }
            Some(CHECKOUT_ABANDONED) => {
                CheckoutAbandoned::decode(bytes).map(AnalyticsEvent::Abandoned)
            }
            Some(other) => Err(ContractError::new(
                ContractErrorKind::UnknownEventType,
                "$.event_type",
                format!(
                    "`{other}` is not a record of {}; expected one of {}",
                    crate::topics::ANALYTICS_EVENTS,
                    RECORD_TYPES.map(|(t, _)| t).join(", ")
                ),
            )),
            // Not an object with a string event_type: let the view's decoder name what is wrong.
            None => CheckoutViewed::decode(bytes).map(AnalyticsEvent::Viewed),
        }
    }

    /// Whether `event_type` names a record of the analytics topic.
    pub fn is_record_type(event_type: &str) -> bool {
        RECORD_TYPES.iter().any(|(t, _)| *t == event_type)
    }

    /// The canonical encoding of the record.
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        match self {
            AnalyticsEvent::Viewed(r) => r.encode(),
            AnalyticsEvent::MethodChosen(r) => r.encode(),
            AnalyticsEvent::Abandoned(r) => r.encode(),
        }
    }

    pub fn event_id(&self) -> EventId {
        match self {
            AnalyticsEvent::Viewed(r) => r.event_id,
            AnalyticsEvent::MethodChosen(r) => r.event_id,
            AnalyticsEvent::Abandoned(r) => r.event_id,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            AnalyticsEvent::Viewed(_) => CHECKOUT_VIEWED,
            AnalyticsEvent::MethodChosen(_) => PAYMENT_METHOD_CHOSEN,
            AnalyticsEvent::Abandoned(_) => CHECKOUT_ABANDONED,
        }
    }

    pub fn event_version(&self) -> u32 {
        match self {
            AnalyticsEvent::Viewed(_) => CHECKOUT_VIEWED_VERSION,
            AnalyticsEvent::MethodChosen(_) => PAYMENT_METHOD_CHOSEN_VERSION,
            AnalyticsEvent::Abandoned(_) => CHECKOUT_ABANDONED_VERSION,
        }
    }

    pub fn merchant_id(&self) -> MerchantId {
        match self {
            AnalyticsEvent::Viewed(r) => r.merchant_id,
            AnalyticsEvent::MethodChosen(r) => r.merchant_id,
            AnalyticsEvent::Abandoned(r) => r.merchant_id,
        }
    }

    pub fn invoice_id(&self) -> InvoiceId {
        match self {
            AnalyticsEvent::Viewed(r) => r.invoice_id,
            AnalyticsEvent::MethodChosen(r) => r.invoice_id,
            AnalyticsEvent::Abandoned(r) => r.invoice_id,
        }
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            AnalyticsEvent::Viewed(r) => r.occurred_at,
            AnalyticsEvent::MethodChosen(r) => r.occurred_at,
            AnalyticsEvent::Abandoned(r) => r.occurred_at,
        }
    }

    /// The Kafka key: the UTC date of `occurred_at`.
    pub fn partition_key(&self) -> String {
        date_key(&self.occurred_at())
    }

    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        headers_of(
            self.event_id(),
            self.event_type(),
            self.event_version(),
            self.invoice_id(),
        )
    }
}

impl From<CheckoutViewed> for AnalyticsEvent {
    fn from(r: CheckoutViewed) -> Self {
        AnalyticsEvent::Viewed(r)
    }
}

impl From<PaymentMethodChosen> for AnalyticsEvent {
    fn from(r: PaymentMethodChosen) -> Self {
        AnalyticsEvent::MethodChosen(r)
    }
}

impl From<CheckoutAbandoned> for AnalyticsEvent {
    fn from(r: CheckoutAbandoned) -> Self {
        AnalyticsEvent::Abandoned(r)
    }
}

/// The fields every analytics record shares, as schema properties (ids and the time).
fn common_properties(
    generator: &mut schemars::SchemaGenerator,
    occurred_at_description: &str,
) -> (Schema, Schema, Schema, Schema) {
    let event_id = generator.subschema_for::<EventId>();
    let merchant_id = generator.subschema_for::<MerchantId>();
    let invoice_id = generator.subschema_for::<InvoiceId>();
    let mut occurred_at = generator.subschema_for::<DateTime<Utc>>();
    occurred_at.insert("description".into(), occurred_at_description.into());
    (event_id, merchant_id, invoice_id, occurred_at)
}

/// The JSON Schema (draft 2020-12) of a `PaymentMethodChosen` record. Whether the network carries the asset is
/// checked by the decoder (the schema lists both enumerations).
pub fn payment_method_chosen_schema() -> Schema {
    let mut generator = crate::schema::generator();
    let (event_id, merchant_id, invoice_id, occurred_at) = common_properties(
        &mut generator,
        "When the method was chosen: RFC 3339 in UTC (`Z` or `+00:00`); its date is the key.",
    );
    let crypto_currency = generator.subschema_for::<CryptoAsset>();
    let network = generator.subschema_for::<Network>();
    let schema = json_schema!({
        "title": format!("{PAYMENT_METHOD_CHOSEN} v{PAYMENT_METHOD_CHOSEN_VERSION}"),
        "description": format!(
            "The customer chose an asset on a network to pay an invoice with, on its checkout page; on {}, keyed by \
             the UTC date of occurred_at. The network must carry the asset.",
            crate::topics::ANALYTICS_EVENTS
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "event_id", "event_type", "event_version", "invoice_id", "merchant_id", "crypto_currency", "network",
            "occurred_at"
        ],
        "properties": {
            "event_id": event_id,
            "event_type": { "const": PAYMENT_METHOD_CHOSEN },
            "event_version": { "const": PAYMENT_METHOD_CHOSEN_VERSION },
            "invoice_id": invoice_id,
            "merchant_id": merchant_id,
            "crypto_currency": crypto_currency,
            "network": network,
            "occurred_at": occurred_at
        }
    });
    crate::schema::standalone(
        schema,
        &schema_file_name(PAYMENT_METHOD_CHOSEN),
        generator.take_definitions(true),
    )
}

/// The JSON Schema (draft 2020-12) of a `CheckoutAbandoned` record.
pub fn checkout_abandoned_schema() -> Schema {
    let mut generator = crate::schema::generator();
    let (event_id, merchant_id, invoice_id, occurred_at) = common_properties(
        &mut generator,
        "When the page was left, or the invoice expired with it open: RFC 3339 in UTC (`Z` or `+00:00`); its \
         date is the key.",
    );
    let stage = generator.subschema_for::<AbandonStage>();
    let reason = generator.subschema_for::<AbandonReason>();
    let schema = json_schema!({
        "title": format!("{CHECKOUT_ABANDONED} v{CHECKOUT_ABANDONED_VERSION}"),
        "description": format!(
            "The customer abandoned an invoice's checkout without paying; on {}, keyed by the UTC date of \
             occurred_at.",
            crate::topics::ANALYTICS_EVENTS
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "event_id", "event_type", "event_version", "invoice_id", "merchant_id", "stage", "reason",
            "occurred_at"
        ],
        "properties": {
            "event_id": event_id,
            "event_type": { "const": CHECKOUT_ABANDONED },
            "event_version": { "const": CHECKOUT_ABANDONED_VERSION },
            "invoice_id": invoice_id,
            "merchant_id": merchant_id,
            "stage": stage,
            "reason": reason,
            "occurred_at": occurred_at
        }
    });
    crate::schema::standalone(
        schema,
        &schema_file_name(CHECKOUT_ABANDONED),
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

    #[test]
    fn the_other_records_round_trip_refuse_what_the_contract_does_not_say_and_are_told_apart() {
        let chosen = crate::examples::payment_method_chosen();
        let bytes = chosen.encode().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(r#"{"event_id":""#), "{text}");
        assert!(
            text.contains(r#""crypto_currency":"USDT","network":"tron","occurred_at":"#),
            "{text}"
        );
        assert_eq!(PaymentMethodChosen::decode(&bytes).unwrap(), chosen);
        assert_eq!(
            AnalyticsEvent::decode(&bytes).unwrap(),
            AnalyticsEvent::MethodChosen(chosen.clone())
        );
        let abandoned = crate::examples::checkout_abandoned();
        let bytes = abandoned.encode().unwrap();
        assert_eq!(CheckoutAbandoned::decode(&bytes).unwrap(), abandoned);
        assert_eq!(
            AnalyticsEvent::decode(&bytes).unwrap().partition_key(),
            abandoned.partition_key()
        );
        let view = crate::examples::checkout_viewed();
        assert_eq!(
            AnalyticsEvent::decode(&view.encode().unwrap()).unwrap(),
            AnalyticsEvent::Viewed(view)
        );
        let chosen_text = String::from_utf8(chosen.encode().unwrap()).unwrap();
        let abandoned_text = String::from_utf8(abandoned.encode().unwrap()).unwrap();
        for (bad, kind, path) in [
            (
                chosen_text.replace("\"network\":\"tron\"", "\"network\":\"bitcoin\""),
                ContractErrorKind::InvalidValue,
                "$.network",
            ),
            (
                chosen_text.replace("\"USDT\"", "\"DOGE\""),
                ContractErrorKind::UnknownCurrency,
                "$.crypto_currency",
            ),
            (
                chosen_text.replace("\"event_version\":1", "\"event_version\":2"),
                ContractErrorKind::UnknownVersion,
                "$.event_version",
            ),
            (
                abandoned_text.replace("left_page", "bored"),
                ContractErrorKind::InvalidValue,
                "$.reason",
            ),
            (
                abandoned_text.replace('}', ",\"extra\":1}"),
                ContractErrorKind::UnknownField,
                "$.extra",
            ),
            (
                abandoned_text.replace("Z\"}", "+02:00\"}"),
                ContractErrorKind::InvalidTimestamp,
                "$.occurred_at",
            ),
            (
                abandoned_text.replace("CheckoutAbandoned", "CheckoutClosed"),
                ContractErrorKind::UnknownEventType,
                "$.event_type",
            ),
        ] {
            let err = AnalyticsEvent::decode(bad.as_bytes()).expect_err(&bad);
            assert_eq!((err.kind(), err.path()), (kind, path), "{bad}: {err}");
        }
        // A wrong pairing is refused on the way out too.
        let mut wrong = chosen;
        wrong.network = Network::Bitcoin;
        assert!(wrong.encode().is_err());
    }

    #[test]
    fn the_page_records_refuse_unknown_methods_stages_dates_and_oversized_input() {
        let chosen =
            String::from_utf8(crate::examples::payment_method_chosen().encode().unwrap()).unwrap();
        let abandoned =
            String::from_utf8(crate::examples::checkout_abandoned().encode().unwrap()).unwrap();
        let date = |text: &str| {
            let at = &text[text.find("\"occurred_at\":\"").unwrap() + 15..];
            at[..at.find('"').unwrap()].to_string()
        };
        let (chosen_at, abandoned_at) = (date(&chosen), date(&abandoned));
        // Far more than a record may hold (valid JSON otherwise: padded with white space).
        let huge = chosen.replacen('{', &format!("{{{}", " ".repeat(crate::MAX_EVENT_BYTES)), 1);
        for (bad, kind, path) in [
            (
                chosen.replace("\"network\":\"tron\"", "\"network\":\"solana\""),
                ContractErrorKind::InvalidValue,
                "$.network",
            ),
            (
                chosen.replace("\"USDT\"", "\"usdt\""),
                ContractErrorKind::UnknownCurrency,
                "$.crypto_currency",
            ),
            (
                chosen.replace("\"USDT\"", "7"),
                ContractErrorKind::WrongType,
                "$.crypto_currency",
            ),
            (
                chosen.replace("\"merchant_id\":\"mer_", "\"merchant_id\":\"inv_"),
                ContractErrorKind::WrongIdPrefix,
                "$.merchant_id",
            ),
            (
                chosen.replace(&chosen_at, "2026-02-30T10:00:00Z"),
                ContractErrorKind::InvalidTimestamp,
                "$.occurred_at",
            ),
            (
                chosen.replace(&chosen_at, "2026-03-01"),
                ContractErrorKind::InvalidTimestamp,
                "$.occurred_at",
            ),
            (
                abandoned.replace("choosing_method", "paying"),
                ContractErrorKind::InvalidValue,
                "$.stage",
            ),
            (
                abandoned.replace("\"left_page\"", "\"LEFT_PAGE\""),
                ContractErrorKind::InvalidValue,
                "$.reason",
            ),
            (
                abandoned.replace(",\"stage\":\"choosing_method\"", ""),
                ContractErrorKind::MissingField,
                "$.stage",
            ),
            (
                abandoned.replace(&abandoned_at, "2025-01-15T23:30:00-01:00"),
                ContractErrorKind::InvalidTimestamp,
                "$.occurred_at",
            ),
            (huge, ContractErrorKind::TooLarge, "$"),
        ] {
            let shown = &bad[..bad.len().min(200)];
            let err = AnalyticsEvent::decode(bad.as_bytes()).expect_err(shown);
            assert_eq!((err.kind(), err.path()), (kind, path), "{shown}: {err}");
        }
        // The key is the UTC date of the record's own time, to the last microsecond of the day.
        let mut late = crate::examples::checkout_abandoned();
        late.occurred_at = "2026-03-01T23:59:59.999999Z".parse().unwrap();
        assert_eq!(late.partition_key(), "2026-03-01");
        late.occurred_at += chrono::TimeDelta::microseconds(1);
        assert_eq!(late.partition_key(), "2026-03-02");
        assert_eq!(
            AnalyticsEvent::from(late.clone()).partition_key(),
            "2026-03-02"
        );
        assert_eq!(
            CheckoutAbandoned::decode(&late.encode().unwrap()).unwrap(),
            late
        );
    }
}
