//! The records of `crypto-checkout.analytics-events` this group reads, and telling them from domain events.
//!
//! The spec names the topic ("Metrics and reporting", key "Date partition") but no payload. Our contract
//! (decision 0011): the checkout page reports each time a customer opens an invoice's checkout as
//!
//! ```json
//! {"event_id":"<uuid or evt_…>","event_type":"CheckoutViewed","event_version":1,
//!  "merchant_id":"mer_…","invoice_id":"inv_…","occurred_at":"2025-01-15T10:01:12Z"}
//! ```
//!
//! keyed by the UTC date (`2025-01-15`). Guarantees: [`decode`] accepts exactly that (unknown fields, other
//! versions, non-UTC times are errors — schema errors for the runtime) and every domain event through
//! [`events::decode`]; anything else is an error naming what is wrong.

use chrono::{DateTime, Utc};
use events::{Envelope, EventId, InvoiceId, MerchantId};
use serde::Deserialize;

/// The event type of a checkout page view.
pub const CHECKOUT_VIEWED: &str = "CheckoutViewed";

/// A customer opened an invoice's checkout page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutViewed {
    pub event_id: EventId,
    pub merchant_id: MerchantId,
    pub invoice_id: InvoiceId,
    pub occurred_at: DateTime<Utc>,
}

/// What the analytics group consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Domain(Box<Envelope>),
    CheckoutViewed(CheckoutViewed),
}

impl Input {
    /// The id the group de-duplicates by.
    pub fn event_id(&self) -> EventId {
        match self {
            Input::Domain(e) => e.event_id(),
            Input::CheckoutViewed(v) => v.event_id,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    event_id: EventId,
    event_type: String,
    event_version: u32,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    occurred_at: String,
}

#[derive(Deserialize)]
struct Probe {
    event_type: Option<String>,
}

/// Why a record is not something the group can consume.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Domain(#[from] events::ContractError),
    #[error("invalid {CHECKOUT_VIEWED} record: {0}")]
    CheckoutViewed(String),
}

/// Decodes a record of either topic: a `CheckoutViewed` by its `event_type`, anything else as a domain event.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    let probe: Option<Probe> = serde_json::from_slice(bytes).ok();
    if probe.and_then(|p| p.event_type).as_deref() != Some(CHECKOUT_VIEWED) {
        return Ok(Input::Domain(Box::new(events::decode(bytes)?)));
    }
    let bad = |why: String| DecodeError::CheckoutViewed(why);
    let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if wire.event_type != CHECKOUT_VIEWED || wire.event_version != 1 {
        return Err(bad(format!(
            "version {} of {} is not known",
            wire.event_version, wire.event_type
        )));
    }
    let occurred_at = events::time::parse_utc(&wire.occurred_at).map_err(bad)?;
    Ok(Input::CheckoutViewed(CheckoutViewed {
        event_id: wire.event_id,
        merchant_id: wire.merchant_id,
        invoice_id: wire.invoice_id,
        occurred_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    const VIEW: &str = r#"{"event_id":"0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","event_type":"CheckoutViewed","event_version":1,"merchant_id":"mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d","invoice_id":"inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e","occurred_at":"2025-01-15T10:01:12Z"}"#;

    #[test]
    fn reads_checkout_views_and_domain_events() {
        let Input::CheckoutViewed(view) = decode(VIEW.as_bytes()).unwrap() else {
            panic!("a view")
        };
        assert_eq!(view.occurred_at.to_rfc3339(), "2025-01-15T10:01:12+00:00");
        let event = examples::example(EventType::InvoicePaid);
        let bytes = events::encode(&event).unwrap();
        assert_eq!(decode(&bytes).unwrap(), Input::Domain(Box::new(event)));
    }

    #[test]
    fn refuses_what_the_contract_does_not_say() {
        for bad in [
            VIEW.replace("\"event_version\":1", "\"event_version\":2"),
            VIEW.replace("Z\"}", "+02:00\"}"),
            VIEW.replace("}", ",\"extra\":1}"),
            VIEW.replace("mer_", "inv_"),
            "not json".to_string(),
            r#"{"event_type":"InvoiceTeleported"}"#.to_string(),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
