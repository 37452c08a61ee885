//! The webhook body merchants receive, and the webhook type names.
//!
//! Guarantees: the body follows Standard Webhooks' shape — `type` (full-stop delimited: `invoice.paid`),
//! `timestamp` (when the event happened, RFC 3339 UTC) and `data` — and `data` carries the event's identity
//! (`event_id`, `event_type`, `event_version`, `aggregate_type`, `aggregate_id`, `correlation_id`) and the event's
//! payload unchanged as `object`, at its current contract version (older events are upcast first). The same
//! event always renders the same bytes. Its JSON Schema is [`schema`], published as
//! `services/webhooks/schemas/webhook.schema.json` (a test keeps the file in sync).

use chrono::{DateTime, SecondsFormat, Utc};
use events::{Envelope, EventType};
use schemars::JsonSchema;
use serde::Serialize;

/// The webhook type of `event_type`: the aggregate and the rest of the name in snake case, full-stop
/// delimited (`InvoicePaid` → `invoice.paid`, `SettingsUpdated` → `merchant.settings_updated`).
pub fn webhook_type(event_type: EventType) -> String {
    let aggregate = event_type.aggregate_type().as_str();
    let name = event_type.as_str();
    let rest = name.strip_prefix(aggregate).unwrap_or(name);
    let mut out = aggregate.to_ascii_lowercase();
    out.push('.');
    for (i, c) in rest.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The event type a subscription names: a webhook type (`invoice.paid`) or a contract name (`InvoicePaid`).
pub fn parse_subscription(name: &str) -> Result<EventType, String> {
    EventType::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == name || webhook_type(*t) == name)
        .ok_or_else(|| {
            format!(
                "unknown event type `{name}`; known: {}",
                EventType::ALL
                    .iter()
                    .map(|t| webhook_type(*t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A webhook's body.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "Crypto checkout webhook", deny_unknown_fields)]
pub struct WebhookBody {
    /// Full-stop delimited type, e.g. `invoice.paid`, `settlement.completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: String,
    pub data: WebhookData,
}

/// What happened: the event's identity and its payload.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookData {
    /// The event's id (`evt_…`); one event may reach an endpoint more than once (at-least-once): de-duplicate on the
    /// `webhook-id` header.
    pub event_id: String,
    /// The contract's event type, e.g. `InvoicePaid`.
    pub event_type: String,
    pub event_version: u32,
    /// `Invoice`, `Payment`, `Settlement` or `Merchant`.
    pub aggregate_type: String,
    /// The id of the invoice, payment, settlement or merchant.
    pub aggregate_id: String,
    /// Ties together every event of one checkout flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The event's payload as the event contract defines it (`crates/events/schemas/<type>.v<version>.schema.json`).
    pub object: serde_json::Map<String, serde_json::Value>,
}

/// Renders the body of `event`.
pub fn render(event: &Envelope) -> Result<Vec<u8>, serde_json::Error> {
    let object = match serde_json::to_value(event.data())? {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("value".into(), other);
            map
        }
    };
    let body = WebhookBody {
        kind: webhook_type(event.event_type()),
        timestamp: rfc3339(event.timestamp()),
        data: WebhookData {
            event_id: event.event_id().to_string(),
            event_type: event.event_type().as_str().to_string(),
            event_version: event.event_version(),
            aggregate_type: event.aggregate_type().as_str().to_string(),
            aggregate_id: event.aggregate_id().to_string(),
            correlation_id: event.correlation_id().map(|c| c.to_string()),
            object,
        },
    };
    serde_json::to_vec(&body)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The JSON Schema of the body, pretty-printed.
pub fn schema() -> String {
    let schema = schemars::schema_for!(WebhookBody);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_types_are_full_stop_delimited_and_unique() {
        assert_eq!(webhook_type(EventType::InvoicePaid), "invoice.paid");
        assert_eq!(
            webhook_type(EventType::SettingsUpdated),
            "merchant.settings_updated"
        );
        assert_eq!(
            webhook_type(EventType::PaymentConfirming),
            "payment.confirming"
        );
        let mut all: Vec<String> = EventType::ALL.iter().map(|t| webhook_type(*t)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), EventType::ALL.len());
        assert_eq!(
            parse_subscription("invoice.paid"),
            Ok(EventType::InvoicePaid)
        );
        assert_eq!(
            parse_subscription("SettlementCompleted"),
            Ok(EventType::SettlementCompleted)
        );
        assert!(
            parse_subscription("invoice.nope")
                .unwrap_err()
                .contains("invoice.paid")
        );
    }

    #[test]
    fn every_example_renders_a_body_valid_against_the_published_schema() {
        let schema: serde_json::Value = serde_json::from_str(&schema()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for event_type in EventType::ALL {
            let event = events::examples::example(*event_type);
            let body: serde_json::Value = serde_json::from_slice(&render(&event).unwrap()).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{event_type}: {errors:?}");
            assert_eq!(body["type"], webhook_type(*event_type));
            assert_eq!(body["data"]["event_id"], event.event_id().to_string());
            assert_eq!(
                render(&event).unwrap(),
                render(&event).unwrap(),
                "stable bytes"
            );
        }
    }

    #[test]
    fn the_published_schema_is_in_sync() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/webhook.schema.json");
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(path, schema()).unwrap();
        }
        let published = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            published,
            schema(),
            "{path} is stale: run `UPDATE_SCHEMAS=1 cargo test -p webhooks body` and commit it"
        );
    }
}
