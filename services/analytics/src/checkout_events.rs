//! What the analytics-aggregation group consumes — domain events and the records of
//! `crypto-checkout.analytics-events` — and telling them apart.
//!
//! The analytics topic's contract — [`CheckoutViewed`], [`PaymentMethodChosen`], [`CheckoutAbandoned`] — lives in
//! the `events` crate with every other contract (`events::analytics`, decision 0021; the format is decision
//! 0011's). Guarantees: [`decode`] reads a record whose `event_type` is one of the analytics topic's
//! (`events::analytics::RECORD_TYPES`) with [`events::AnalyticsEvent::decode`] and anything else with
//! [`events::decode`]; whatever either refuses is an [`events::ContractError`] naming the JSON path (a schema
//! error for the runtime: straight to the DLQ).

use events::{Envelope, EventId};

pub use events::analytics::{
    AnalyticsEvent, CHECKOUT_ABANDONED, CHECKOUT_VIEWED, CheckoutAbandoned, CheckoutViewed,
    PAYMENT_METHOD_CHOSEN, PaymentMethodChosen,
};

/// What the analytics group consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Domain(Box<Envelope>),
    CheckoutViewed(CheckoutViewed),
    MethodChosen(PaymentMethodChosen),
    Abandoned(CheckoutAbandoned),
}

impl Input {
    /// The id the group de-duplicates by.
    pub fn event_id(&self) -> EventId {
        match self {
            Input::Domain(e) => e.event_id(),
            Input::CheckoutViewed(v) => v.event_id,
            Input::MethodChosen(v) => v.event_id,
            Input::Abandoned(v) => v.event_id,
        }
    }

    /// The record's type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Input::Domain(e) => e.event_type().as_str(),
            Input::CheckoutViewed(_) => CHECKOUT_VIEWED,
            Input::MethodChosen(_) => PAYMENT_METHOD_CHOSEN,
            Input::Abandoned(_) => CHECKOUT_ABANDONED,
        }
    }
}

impl From<AnalyticsEvent> for Input {
    fn from(event: AnalyticsEvent) -> Self {
        match event {
            AnalyticsEvent::Viewed(v) => Input::CheckoutViewed(v),
            AnalyticsEvent::MethodChosen(v) => Input::MethodChosen(v),
            AnalyticsEvent::Abandoned(v) => Input::Abandoned(v),
        }
    }
}

/// Why a record is not something the group can consume: a violation of the domain-event or of the
/// `CheckoutViewed` contract.
pub type DecodeError = events::ContractError;

/// Decodes a record of either topic: an analytics record by its `event_type`, anything else as a domain event.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    if events::peek_event_type(bytes)
        .as_deref()
        .is_some_and(AnalyticsEvent::is_record_type)
    {
        Ok(AnalyticsEvent::decode(bytes)?.into())
    } else {
        Ok(Input::Domain(Box::new(events::decode(bytes)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    /// A record as decision 0011 documents it (its key order, not the canonical one).
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
        for (bad, path) in [
            (
                VIEW.replace("\"event_version\":1", "\"event_version\":2"),
                "$.event_version",
            ),
            (VIEW.replace("Z\"}", "+02:00\"}"), "$.occurred_at"),
            (VIEW.replace('}', ",\"extra\":1}"), "$.extra"),
            (VIEW.replace("mer_", "inv_"), "$.merchant_id"),
            ("not json".to_string(), "$"),
            (
                r#"{"event_type":"InvoiceTeleported"}"#.to_string(),
                "$.event_type",
            ),
        ] {
            let err = decode(bad.as_bytes()).expect_err(&bad);
            assert_eq!(err.path(), path, "{bad}: {err}");
        }
    }

    /// The checkout page's records (as the flow generator writes them, `crates/flows`) are byte for byte the
    /// canonical encoding of the contract, so producing through the outbox changes nothing on the topic.
    #[test]
    fn the_contracts_encoding_is_byte_identical_to_the_checkout_pages_records() {
        let flows = flows::generate(&flows::Scenario::new(11, 3, 20));
        assert!(!flows.analytics.is_empty());
        let mut types = std::collections::BTreeSet::new();
        for record in &flows.analytics {
            let event = AnalyticsEvent::decode(&record.value).unwrap();
            assert_eq!(Input::from(event.clone()), decode(&record.value).unwrap());
            assert_eq!(event.encode().unwrap(), record.value);
            assert_eq!(event.partition_key(), record.key);
            types.insert(event.event_type());
        }
        assert_eq!(types.len(), 3, "every record type: {types:?}");
    }
}
