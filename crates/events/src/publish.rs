//! What a record needs to travel through the transactional outbox to its own topic: [`Publishable`].
//!
//! Guarantees:
//! - **Only this crate's contracts are publishable.** The trait is sealed: every implementation lives here, next
//!   to its decoder, so anything the outbox carries has passed a contract of this crate. Today: domain events
//!   ([`crate::Envelope`], on [`crate::topics::DOMAIN_EVENTS`]) and the analytics records
//!   ([`crate::analytics::CheckoutViewed`], [`crate::analytics::PaymentMethodChosen`],
//!   [`crate::analytics::CheckoutAbandoned`] or any [`crate::analytics::AnalyticsEvent`], on
//!   [`crate::topics::ANALYTICS_EVENTS`]) and notification requests
//!   ([`crate::notification::NotificationRequested`], on [`crate::topics::NOTIFICATION_EVENTS`]) and the scanners'
//!   reports ([`crate::integration::IntegrationEvent`], on [`crate::topics::INTEGRATION_EVENTS`]).
//! - **Valid or nothing.** [`Publishable::to_outbox_record`] encodes (validating the whole contract, size
//!   included) before it gathers anything, so an [`OutboxRecord`] only exists for a valid record, and its key,
//!   headers and metadata are derived from the same value as its bytes.
//! - **Each record names its own topic and key** (the spec's key strategy for that topic), from
//!   [`crate::topics`]; a test checks every implementation's topic is one of [`crate::topics::CORE_TOPICS`].
//!
//! The trait is object-safe, and `&T` is publishable when `T` is, so one outbox batch can mix contracts:
//! `outbox::append_batch(&mut tx, &[&envelope as &dyn Publishable, &view])`.

use crate::error::ContractError;
use crate::id::EventId;

mod sealed {
    /// Implemented only in this crate: see the module documentation.
    pub trait Sealed {}
}

/// A record of the event contract that can be appended to the outbox and published to its topic.
///
/// For an [`crate::Envelope`] the methods return what its inherent methods do, as text where those return
/// typed values (`event_type`, `aggregate_type`, `aggregate_id`); in generic code call them through the trait.
pub trait Publishable: sealed::Sealed {
    /// The topic the record belongs on (a constant of [`crate::topics`]).
    fn topic(&self) -> &'static str;
    /// The Kafka message key, per the topic's key strategy; records with the same key keep their order.
    fn partition_key(&self) -> String;
    /// Unique id of the record; consumers de-duplicate by it.
    fn event_id(&self) -> EventId;
    /// The record's type name (`InvoiceCreated`, `CheckoutViewed`).
    fn event_type(&self) -> &'static str;
    /// The version of that type the record is encoded in.
    fn event_version(&self) -> u32;
    /// The type of the aggregate the record is about (`Invoice`, …).
    fn aggregate_type(&self) -> &'static str;
    /// That aggregate's id, in its wire form (`inv_…`).
    fn aggregate_id(&self) -> String;
    /// Validates the whole contract and returns the canonical bytes (at most [`crate::MAX_EVENT_BYTES`]).
    fn encode(&self) -> Result<Vec<u8>, ContractError>;
    /// Kafka headers (names in [`crate::headers`]).
    fn kafka_headers(&self) -> Vec<(&'static str, String)>;

    /// Everything the outbox stores for this record, derived from a validated encoding.
    fn to_outbox_record(&self) -> Result<OutboxRecord, ContractError> {
        let value = self.encode()?;
        Ok(OutboxRecord {
            topic: self.topic(),
            key: self.partition_key(),
            event_id: self.event_id(),
            event_type: self.event_type(),
            event_version: self.event_version(),
            aggregate_type: self.aggregate_type(),
            aggregate_id: self.aggregate_id(),
            value,
            headers: self.kafka_headers(),
        })
    }
}

/// A validated record, ready for the outbox table: see [`Publishable::to_outbox_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub topic: &'static str,
    pub key: String,
    pub event_id: EventId,
    pub event_type: &'static str,
    pub event_version: u32,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// The canonical encoding: UTF-8 JSON, byte for byte what is published.
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl<T: Publishable + ?Sized> sealed::Sealed for &T {}

impl<T: Publishable + ?Sized> Publishable for &T {
    fn topic(&self) -> &'static str {
        (**self).topic()
    }
    fn partition_key(&self) -> String {
        (**self).partition_key()
    }
    fn event_id(&self) -> EventId {
        (**self).event_id()
    }
    fn event_type(&self) -> &'static str {
        (**self).event_type()
    }
    fn event_version(&self) -> u32 {
        (**self).event_version()
    }
    fn aggregate_type(&self) -> &'static str {
        (**self).aggregate_type()
    }
    fn aggregate_id(&self) -> String {
        (**self).aggregate_id()
    }
    fn encode(&self) -> Result<Vec<u8>, ContractError> {
        (**self).encode()
    }
    fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        (**self).kafka_headers()
    }
}

impl sealed::Sealed for crate::Envelope {}

impl Publishable for crate::Envelope {
    fn topic(&self) -> &'static str {
        crate::Envelope::topic(self)
    }
    fn partition_key(&self) -> String {
        crate::Envelope::partition_key(self)
    }
    fn event_id(&self) -> EventId {
        crate::Envelope::event_id(self)
    }
    fn event_type(&self) -> &'static str {
        crate::Envelope::event_type(self).as_str()
    }
    fn event_version(&self) -> u32 {
        crate::Envelope::event_version(self)
    }
    fn aggregate_type(&self) -> &'static str {
        crate::Envelope::aggregate_type(self).as_str()
    }
    fn aggregate_id(&self) -> String {
        crate::Envelope::aggregate_id(self).to_string()
    }
    fn encode(&self) -> Result<Vec<u8>, ContractError> {
        crate::encode(self)
    }
    fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        crate::Envelope::kafka_headers(self)
    }
}

impl sealed::Sealed for crate::analytics::CheckoutViewed {}

impl Publishable for crate::analytics::CheckoutViewed {
    fn topic(&self) -> &'static str {
        crate::topics::ANALYTICS_EVENTS
    }
    fn partition_key(&self) -> String {
        crate::analytics::CheckoutViewed::partition_key(self)
    }
    fn event_id(&self) -> EventId {
        self.event_id
    }
    fn event_type(&self) -> &'static str {
        crate::analytics::CHECKOUT_VIEWED
    }
    fn event_version(&self) -> u32 {
        crate::analytics::CHECKOUT_VIEWED_VERSION
    }
    fn aggregate_type(&self) -> &'static str {
        crate::AggregateType::Invoice.as_str()
    }
    fn aggregate_id(&self) -> String {
        self.invoice_id.to_string()
    }
    fn encode(&self) -> Result<Vec<u8>, ContractError> {
        crate::analytics::CheckoutViewed::encode(self)
    }
    fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        crate::analytics::CheckoutViewed::kafka_headers(self)
    }
}

/// The analytics topic's other records (and any of them as an [`crate::analytics::AnalyticsEvent`]): the same
/// topic, key (the UTC date), aggregate (the invoice) and headers as a `CheckoutViewed`.
macro_rules! analytics_publishable {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}

        impl Publishable for $ty {
            fn topic(&self) -> &'static str {
                crate::topics::ANALYTICS_EVENTS
            }
            fn partition_key(&self) -> String {
                <$ty>::partition_key(self)
            }
            fn event_id(&self) -> EventId {
                crate::analytics::AnalyticsEvent::from(self.clone()).event_id()
            }
            fn event_type(&self) -> &'static str {
                crate::analytics::AnalyticsEvent::from(self.clone()).event_type()
            }
            fn event_version(&self) -> u32 {
                crate::analytics::AnalyticsEvent::from(self.clone()).event_version()
            }
            fn aggregate_type(&self) -> &'static str {
                crate::AggregateType::Invoice.as_str()
            }
            fn aggregate_id(&self) -> String {
                crate::analytics::AnalyticsEvent::from(self.clone()).invoice_id().to_string()
            }
            fn encode(&self) -> Result<Vec<u8>, ContractError> {
                <$ty>::encode(self)
            }
            fn kafka_headers(&self) -> Vec<(&'static str, String)> {
                <$ty>::kafka_headers(self)
            }
        }
    )*};
}

analytics_publishable!(
    crate::analytics::PaymentMethodChosen,
    crate::analytics::CheckoutAbandoned,
    crate::analytics::AnalyticsEvent
);

impl sealed::Sealed for crate::notification::NotificationRequested {}

impl Publishable for crate::notification::NotificationRequested {
    fn topic(&self) -> &'static str {
        crate::topics::NOTIFICATION_EVENTS
    }
    fn partition_key(&self) -> String {
        crate::notification::NotificationRequested::partition_key(self)
    }
    fn event_id(&self) -> EventId {
        crate::notification::NotificationRequested::event_id(self)
    }
    fn event_type(&self) -> &'static str {
        crate::notification::NOTIFICATION_REQUESTED
    }
    fn event_version(&self) -> u32 {
        crate::notification::NOTIFICATION_REQUESTED_VERSION
    }
    fn aggregate_type(&self) -> &'static str {
        crate::notification::AGGREGATE_TYPE
    }
    fn aggregate_id(&self) -> String {
        self.notification_id.to_string()
    }
    fn encode(&self) -> Result<Vec<u8>, ContractError> {
        crate::notification::NotificationRequested::encode(self)
    }
    fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        crate::notification::NotificationRequested::kafka_headers(self)
    }
}

impl sealed::Sealed for crate::integration::IntegrationEvent {}

impl Publishable for crate::integration::IntegrationEvent {
    fn topic(&self) -> &'static str {
        crate::topics::INTEGRATION_EVENTS
    }
    fn partition_key(&self) -> String {
        crate::integration::IntegrationEvent::partition_key(self)
    }
    fn event_id(&self) -> EventId {
        self.event_id
    }
    fn event_type(&self) -> &'static str {
        self.record_type()
    }
    fn event_version(&self) -> u32 {
        1
    }
    fn aggregate_type(&self) -> &'static str {
        crate::integration::AGGREGATE_TYPE
    }
    fn aggregate_id(&self) -> String {
        self.output_id()
    }
    fn encode(&self) -> Result<Vec<u8>, ContractError> {
        crate::integration::IntegrationEvent::encode(self)
    }
    fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        crate::integration::IntegrationEvent::kafka_headers(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventType, examples, topics};

    fn every_kind() -> Vec<Box<dyn Publishable>> {
        let mut out: Vec<Box<dyn Publishable>> = examples::all()
            .into_iter()
            .map(|e| Box::new(e) as Box<dyn Publishable>)
            .collect();
        out.push(Box::new(examples::checkout_viewed()));
        out.push(Box::new(examples::notification_requested()));
        for record in examples::integration_events() {
            out.push(Box::new(record));
        }
        out
    }

    #[test]
    fn every_publishable_names_a_core_topic_and_a_key() {
        for record in every_kind() {
            let record = record.to_outbox_record().unwrap();
            assert!(
                topics::CORE_TOPICS.contains(&record.topic),
                "{}",
                record.topic
            );
            assert!(!record.key.is_empty(), "{}", record.event_type);
        }
    }

    #[test]
    fn an_envelope_publishes_as_itself() {
        let envelope = examples::example(EventType::SettlementCompleted);
        fn by_value<P: Publishable>(record: P) -> OutboxRecord {
            record.to_outbox_record().unwrap()
        }
        let as_object: &dyn Publishable = &envelope;
        assert_eq!(by_value(as_object), by_value(&envelope));
        let record = by_value(&envelope);
        assert_eq!(record.topic, topics::DOMAIN_EVENTS);
        assert_eq!(record.key, envelope.partition_key());
        assert_eq!(record.event_id, envelope.event_id());
        assert_eq!(record.event_type, "SettlementCompleted");
        assert_eq!(record.event_version, envelope.event_version());
        assert_eq!(record.aggregate_type, "Settlement");
        assert!(
            record.aggregate_id.starts_with("set_"),
            "{}",
            record.aggregate_id
        );
        assert_eq!(record.value, crate::encode(&envelope).unwrap());
        assert_eq!(record.headers, envelope.kafka_headers());
    }

    #[test]
    fn an_invalid_record_has_no_outbox_record() {
        let envelope = examples::example(EventType::InvoicePaid);
        let own_id = envelope.event_id();
        let invalid = envelope.with_causation_id(own_id);
        let err = Publishable::to_outbox_record(&invalid).unwrap_err();
        assert_eq!(err.path(), "$.causation_id");
    }
}
