//! The contract of `crypto-checkout.notification-events` ("Email/SMS/webhook events", key "Recipient ID").
//!
//! The spec names the topic but no payload. Ours (decision 0031) is one record, [`NotificationRequested`]: a
//! producer asks for one message to one recipient over one channel, rendered from a named template:
//!
//! ```json
//! {"event_type":"NotificationRequested","event_version":1,"notification_id":"ntf_…",
//!  "requested_at":"2026-11-30T10:00:00Z","recipient":{"kind":"merchant","id":"mer_…"},"channel":"email",
//!  "template":"settlement_completed","locale":"en","parameters":{"net_amount":"99.00","currency":"USD"},
//!  "destination":"ops@merchant.example","causation_id":"evt_…"}
//! ```
//!
//! keyed by the recipient's id. `destination` (an address, an E.164 number, a URL) is optional: without it the
//! notifications service uses the recipient's contact on file (`notification_contacts`). What happens to a
//! notification afterwards is the notifications service's state (`notification_deliveries`, `checkoutctl
//! notifications list`), not a record on the topic: nothing consumes delivery outcomes today.
//!
//! Guarantees:
//! - [`NotificationRequested::decode`] accepts exactly that shape, fields in any order: unknown, missing or
//!   duplicate fields, another type or version, a merchant recipient whose id is not a merchant id, a template,
//!   locale or parameter name outside its pattern, a destination that does not fit its channel, more than
//!   [`crate::MAX_EVENT_BYTES`] are [`ContractError`]s naming the JSON path (schema errors for the runtime).
//! - [`NotificationRequested::encode`] validates the same rules and writes the canonical form (keys in the order
//!   above, ids prefixed, time in UTC with `Z`); `decode(encode(v)) == v`.
//! - Ids derived with [`NotificationId::derived`] make a replayed producer request the same notification.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, json_schema};
use serde::{Deserialize, Serialize};

use crate::codec::{check_size, not_an_object, parse};
use crate::error::{ContractError, ContractErrorKind, from_serde};
use crate::headers;
use crate::id::{EventId, MerchantId, NotificationId};
use crate::time::{self, rfc3339};

/// The record type.
pub const NOTIFICATION_REQUESTED: &str = "NotificationRequested";
/// Its only version.
pub const NOTIFICATION_REQUESTED_VERSION: u32 = 1;
/// The aggregate of the record (the outbox's `aggregate_type`): the notification itself.
pub const AGGREGATE_TYPE: &str = "Notification";
/// File name of [`notification_requested_schema`] under `crates/events/schemas/`.
pub const NOTIFICATION_REQUESTED_SCHEMA_FILE: &str = "NotificationRequested.v1.schema.json";

/// Most template parameters in one notification.
pub const MAX_PARAMETERS: usize = 50;
/// Longest parameter value (characters).
pub const MAX_PARAMETER_CHARS: usize = 1000;

/// Who receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    Merchant,
    Customer,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Merchant => "merchant",
            RecipientKind::Customer => "customer",
        }
    }
}

/// The recipient: a merchant (`id` is its `mer_…` id) or a customer (`id` is the producer's customer reference,
/// 1–128 characters of `[A-Za-z0-9_.:@+-]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub kind: RecipientKind,
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
}

impl Recipient {
    /// A merchant recipient.
    pub fn merchant(merchant: MerchantId) -> Recipient {
        Recipient {
            kind: RecipientKind::Merchant,
            id: merchant.to_string(),
        }
    }
}

/// How it is delivered.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// E-mail over SMTP; destination an address.
    Email,
    /// SMS through the provider's API; destination an E.164 number (`+15551234567`).
    Sms,
    /// A signed (Standard Webhooks) POST; destination an `https` (or, in development, `http`) URL.
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Webhook => "webhook",
        }
    }

    /// Parses `email`, `sms` or `webhook`.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Why `destination` cannot be an address of this channel (None: it can).
    pub fn check_destination(self, destination: &str) -> Option<String> {
        match self {
            Channel::Email => {
                let ok = destination.len() <= 254
                    && destination.split_once('@').is_some_and(|(local, domain)| {
                        !local.is_empty()
                            && !domain.is_empty()
                            && !domain.contains('@')
                            && domain.contains('.')
                            && !destination
                                .chars()
                                .any(|c| c.is_whitespace() || c.is_control())
                    });
                (!ok).then(|| format!("`{destination}` is not an e-mail address"))
            }
            Channel::Sms => {
                let digits = destination.strip_prefix('+').unwrap_or("");
                let ok = (7..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0');
                (!ok).then(|| {
                    format!("`{destination}` is not an E.164 phone number (+ and 7–15 digits)")
                })
            }
            Channel::Webhook => {
                let ok = destination.len() <= 2048
                    && (destination.starts_with("https://") || destination.starts_with("http://"))
                    && !destination
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control());
                (!ok).then(|| format!("`{destination}` is not an http(s) URL"))
            }
        }
    }
}

/// A producer asks for one notification (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRequested {
    pub notification_id: NotificationId,
    /// When it was requested (UTC): the time of the change that caused it.
    pub requested_at: DateTime<Utc>,
    pub recipient: Recipient,
    pub channel: Channel,
    /// The template's name (`settlement_completed`): `[a-z][a-z0-9_]{0,63}`.
    pub template: String,
    /// `en`, `de`, `pt-BR`: the service falls back to the language, then to `en`.
    pub locale: String,
    /// The template's variables, as text (amounts exact, as the events write them).
    pub parameters: BTreeMap<String, String>,
    /// Where to send it; `None`: the recipient's contact on file for the channel.
    pub destination: Option<String>,
    /// The event that caused it.
    pub causation_id: Option<EventId>,
}

/// The record on the wire, both ways.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    event_type: String,
    event_version: u32,
    notification_id: NotificationId,
    #[serde(
        serialize_with = "serialize_utc",
        deserialize_with = "rfc3339::deserialize"
    )]
    requested_at: DateTime<Utc>,
    recipient: Recipient,
    channel: Channel,
    template: String,
    locale: String,
    parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<EventId>,
}

fn serialize_utc<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time::format_utc(t))
}

fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub(crate) fn is_locale(s: &str) -> bool {
    let (lang, region) = s.split_once('-').map_or((s, None), |(l, r)| (l, Some(r)));
    lang.len() == 2
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

fn invalid(path: &str, message: String) -> ContractError {
    ContractError::new(ContractErrorKind::InvalidValue, path, message)
}

impl NotificationRequested {
    /// Checks the rules beyond types (see the module documentation); normalises a merchant recipient's id to
    /// its canonical `mer_…` form.
    pub fn validate(&mut self) -> Result<(), ContractError> {
        match self.recipient.kind {
            RecipientKind::Merchant => {
                let id: MerchantId = self
                    .recipient
                    .id
                    .parse()
                    .map_err(|e: crate::IdError| e.at("recipient.id"))?;
                self.recipient.id = id.to_string();
            }
            RecipientKind::Customer => {
                let id = &self.recipient.id;
                let ok = (1..=128).contains(&id.len())
                    && id.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'_' | b'.' | b':' | b'@' | b'+' | b'-')
                    });
                if !ok {
                    return Err(invalid(
                        "$.recipient.id",
                        format!("`{id}` is not a customer reference (1–128 of [A-Za-z0-9_.:@+-])"),
                    ));
                }
            }
        }
        if !is_name(&self.template) {
            return Err(invalid(
                "$.template",
                format!(
                    "`{}` is not a template name ([a-z][a-z0-9_]{{0,63}})",
                    self.template
                ),
            ));
        }
        if !is_locale(&self.locale) {
            return Err(invalid(
                "$.locale",
                format!("`{}` is not a locale (`en`, `pt-BR`)", self.locale),
            ));
        }
        if self.parameters.len() > MAX_PARAMETERS {
            return Err(invalid(
                "$.parameters",
                format!(
                    "{} parameters; at most {MAX_PARAMETERS}",
                    self.parameters.len()
                ),
            ));
        }
        for (name, value) in &self.parameters {
            if !is_name(name) {
                return Err(invalid(
                    &format!("$.parameters.{name}"),
                    format!("`{name}` is not a parameter name ([a-z][a-z0-9_]{{0,63}})"),
                ));
            }
            if value.chars().count() > MAX_PARAMETER_CHARS {
                return Err(invalid(
                    &format!("$.parameters.{name}"),
                    format!("longer than {MAX_PARAMETER_CHARS} characters"),
                ));
            }
        }
        if let Some(destination) = &self.destination
            && let Some(why) = self.channel.check_destination(destination)
        {
            return Err(invalid("$.destination", why));
        }
        Ok(())
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
        if !text.trim_start().starts_with('{')
            && serde_json::from_str::<serde_json::Value>(text).is_ok()
        {
            return Err(not_an_object("$"));
        }
        let wire: Wire = parse(text)?;
        if wire.event_type != NOTIFICATION_REQUESTED {
            return Err(ContractError::new(
                ContractErrorKind::UnknownEventType,
                "$.event_type",
                format!(
                    "`{}` is not a record of {}; expected {NOTIFICATION_REQUESTED}",
                    wire.event_type,
                    crate::topics::NOTIFICATION_EVENTS
                ),
            ));
        }
        if wire.event_version != NOTIFICATION_REQUESTED_VERSION {
            return Err(ContractError::new(
                ContractErrorKind::UnknownVersion,
                "$.event_version",
                format!(
                    "{NOTIFICATION_REQUESTED} has only version {NOTIFICATION_REQUESTED_VERSION}, not {}",
                    wire.event_version
                ),
            ));
        }
        let mut record = NotificationRequested {
            notification_id: wire.notification_id,
            requested_at: wire.requested_at,
            recipient: wire.recipient,
            channel: wire.channel,
            template: wire.template,
            locale: wire.locale,
            parameters: wire.parameters,
            destination: wire.destination,
            causation_id: wire.causation_id,
        };
        record.validate()?;
        Ok(record)
    }

    /// Validates and writes the canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        let mut checked = self.clone();
        checked.validate()?;
        let wire = Wire {
            event_type: NOTIFICATION_REQUESTED.to_owned(),
            event_version: NOTIFICATION_REQUESTED_VERSION,
            notification_id: checked.notification_id,
            requested_at: checked.requested_at,
            recipient: checked.recipient,
            channel: checked.channel,
            template: checked.template,
            locale: checked.locale,
            parameters: checked.parameters,
            destination: checked.destination,
            causation_id: checked.causation_id,
        };
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, &wire).map_err(|e| from_serde(&e, "$".to_owned()))?;
        check_size(out.len())?;
        Ok(out)
    }

    /// The Kafka key: the recipient's id (the spec's "Recipient ID").
    pub fn partition_key(&self) -> String {
        self.recipient.id.clone()
    }

    /// The record's event id: the notification id's UUID (consumers de-duplicate by it).
    pub fn event_id(&self) -> EventId {
        EventId::from_uuid(self.notification_id.as_uuid()).expect("a notification id is never nil")
    }

    /// Kafka headers, named like a domain event's.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::EVENT_ID, self.event_id().to_string()),
            (headers::EVENT_TYPE, NOTIFICATION_REQUESTED.to_owned()),
            (
                headers::EVENT_VERSION,
                NOTIFICATION_REQUESTED_VERSION.to_string(),
            ),
            (headers::AGGREGATE_TYPE, AGGREGATE_TYPE.to_owned()),
            (headers::AGGREGATE_ID, self.notification_id.to_string()),
            (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
        ];
        if let Some(cause) = self.causation_id {
            out.push((headers::CAUSATION_ID, cause.to_string()));
        }
        out
    }
}

/// The JSON Schema (draft 2020-12) of a `NotificationRequested` record.
pub fn notification_requested_schema() -> Schema {
    let mut generator = crate::schema::generator();
    let notification_id = generator.subschema_for::<NotificationId>();
    let event_id = generator.subschema_for::<EventId>();
    let recipient = generator.subschema_for::<Recipient>();
    let channel = generator.subschema_for::<Channel>();
    let requested_at = generator.subschema_for::<DateTime<Utc>>();
    let name = "^[a-z][a-z0-9_]{0,63}$";
    let schema = json_schema!({
        "title": format!("{NOTIFICATION_REQUESTED} v{NOTIFICATION_REQUESTED_VERSION}"),
        "description": format!(
            "A request for one notification to one recipient over one channel; on {}, keyed by recipient.id.",
            crate::topics::NOTIFICATION_EVENTS
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "event_type", "event_version", "notification_id", "requested_at", "recipient", "channel", "template",
            "locale", "parameters"
        ],
        "properties": {
            "event_type": { "const": NOTIFICATION_REQUESTED },
            "event_version": { "const": NOTIFICATION_REQUESTED_VERSION },
            "notification_id": notification_id,
            "requested_at": requested_at,
            "recipient": recipient,
            "channel": channel,
            "template": { "type": "string", "pattern": name },
            "locale": { "type": "string", "pattern": "^[a-z]{2}(-[A-Z]{2})?$" },
            "parameters": {
                "type": "object",
                "maxProperties": MAX_PARAMETERS,
                "propertyNames": { "pattern": name },
                "additionalProperties": { "type": "string", "maxLength": MAX_PARAMETER_CHARS }
            },
            "destination": {
                "type": "string",
                "description": "An e-mail address (email), an E.164 number (sms) or an http(s) URL (webhook); \
                                absent: the recipient's contact on file."
            },
            "causation_id": event_id
        }
    });
    crate::schema::standalone(
        schema,
        NOTIFICATION_REQUESTED_SCHEMA_FILE,
        generator.take_definitions(true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;

    #[test]
    fn the_example_round_trips_and_is_keyed_by_its_recipient() {
        let record = examples::notification_requested();
        let bytes = record.encode().unwrap();
        assert_eq!(NotificationRequested::decode(&bytes).unwrap(), record);
        assert_eq!(record.partition_key(), record.recipient.id);
        assert!(record.partition_key().starts_with("mer_"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(
                r#"{"event_type":"NotificationRequested","event_version":1,"notification_id":"ntf_"#
            ),
            "{text}"
        );
    }

    #[test]
    fn refuses_what_the_contract_does_not_say_naming_the_path() {
        let good = String::from_utf8(examples::notification_requested().encode().unwrap()).unwrap();
        let merchant = examples::notification_requested().recipient.id;
        for (bad, kind, path) in [
            (
                good.replace("\"event_version\":1", "\"event_version\":2"),
                ContractErrorKind::UnknownVersion,
                "$.event_version",
            ),
            (
                good.replace("\"channel\":\"email\"", "\"channel\":\"fax\""),
                ContractErrorKind::InvalidValue,
                "$.channel",
            ),
            (
                good.replace(&merchant, "inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
                ContractErrorKind::WrongIdPrefix,
                "$.recipient.id",
            ),
            (
                good.replace("\"locale\":\"en\"", "\"locale\":\"english\""),
                ContractErrorKind::InvalidValue,
                "$.locale",
            ),
            (
                good.replace(
                    "\"template\":\"settlement_completed\"",
                    "\"template\":\"../etc\"",
                ),
                ContractErrorKind::InvalidValue,
                "$.template",
            ),
            (
                good.replace("merchant@example.com", "not-an-address"),
                ContractErrorKind::InvalidValue,
                "$.destination",
            ),
            (
                good.replacen('{', "{\"extra\":1,", 1),
                ContractErrorKind::UnknownField,
                "$.extra",
            ),
            (
                good.replace("NotificationRequested", "NotificationSent"),
                ContractErrorKind::UnknownEventType,
                "$.event_type",
            ),
        ] {
            let err = NotificationRequested::decode(bad.as_bytes()).expect_err(&bad);
            assert_eq!((err.kind(), err.path()), (kind, path), "{bad}: {err}");
        }
    }

    #[test]
    fn destinations_are_checked_per_channel() {
        assert!(Channel::Sms.check_destination("+15551234567").is_none());
        assert!(Channel::Sms.check_destination("15551234567").is_some());
        assert!(Channel::Sms.check_destination("+0555123").is_some());
        assert!(Channel::Email.check_destination("a@b.example").is_none());
        assert!(Channel::Email.check_destination("a@b@c.example").is_some());
        assert!(
            Channel::Webhook
                .check_destination("https://h.example/x")
                .is_none()
        );
        assert!(
            Channel::Webhook
                .check_destination("ftp://h.example/x")
                .is_some()
        );
    }

    #[test]
    fn derived_ids_are_stable_per_cause_and_purpose() {
        let cause = EventId::new();
        assert_eq!(
            NotificationId::derived(cause, "settlement_completed.email"),
            NotificationId::derived(cause, "settlement_completed.email")
        );
        assert_ne!(
            NotificationId::derived(cause, "settlement_completed.email"),
            NotificationId::derived(cause, "settlement_completed.sms")
        );
    }
}
