//! The event contract of the crypto checkout event bus.
//!
//! Every producer and consumer speaks through this crate. It guarantees that an event on
//! `crypto-checkout.domain-events` is a [`Envelope`] whose payload is one of the typed [`EventData`]
//! variants, with exact money, typed ids and the spec's partition keys, that a record on
//! `crypto-checkout.analytics-events` is an [`AnalyticsEvent`] (a [`CheckoutViewed`], [`PaymentMethodChosen`] or
//! [`CheckoutAbandoned`]), and that anything else is refused with a
//! [`ContractError`] — permanent by nature, so the consumer runtime sends it to the DLQ without retry. Every
//! contract is [`Publishable`]: the outbox carries each record to its own topic with its own key.
//!
//! ```
//! use events::{Envelope, EventType, decode, encode, examples};
//!
//! let event: Envelope = examples::example(EventType::SettlementCompleted);
//! let bytes = encode(&event)?;                   // canonical JSON, size-checked
//! assert_eq!(decode(&bytes)?, event);            // parse + upcast + validate
//! assert_eq!(event.topic(), "crypto-checkout.domain-events");
//! assert!(event.partition_key().starts_with("mer_"));
//! # Ok::<(), events::ContractError>(())
//! ```
//!
//! Layout:
//! - [`codec`]: [`decode`] and [`encode`]; [`envelope`]: [`Envelope`], partition key, topic, headers.
//! - [`analytics`]: [`AnalyticsEvent`], the records of the analytics topic; [`publish`]: [`Publishable`], what
//!   the outbox needs of every contract.
//! - [`notification`]: [`NotificationRequested`], the record of the notification topic.
//! - [`integration`]: [`IntegrationEvent`], the blockchain scanners' records of the integration topic.
//! - [`payload`]: the payload structs; [`upcast`]: older versions and their upcasters.
//! - [`event_type`]: the catalogue (types, aggregates, versions, partition keys) as data.
//! - [`id`], [`money`], [`metadata`], [`time`]: the value types.
//! - [`schema`]: JSON Schemas; [`examples`]: valid example events; [`topics`], [`headers`]: Kafka names.
//! - [`error`]: the [`ContractError`] family.
//!
//! Decisions: `docs/decisions/0002` (id wire form), `0003` (money), `0004` (versioning), `0021` (records of
//! every topic through the outbox).

pub mod analytics;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod event_type;
pub mod examples;
pub mod headers;
pub mod id;
pub mod integration;
pub mod metadata;
pub mod money;
pub mod notification;
pub mod payload;
pub mod publish;
pub mod schema;
pub mod time;
pub mod topics;
pub mod upcast;

pub use analytics::{AnalyticsEvent, CheckoutAbandoned, CheckoutViewed, PaymentMethodChosen};
pub use codec::{MAX_EVENT_BYTES, decode, encode, peek_event_type};
pub use envelope::{Envelope, EnvelopeParts};
pub use error::{ContractError, ContractErrorKind};
pub use event_type::{AggregateType, CATALOGUE, EventSpec, EventType, PartitionKeyField};
pub use id::{
    AggregateId, CorrelationId, EventId, IdError, InvoiceId, MerchantId, NotificationId, PaymentId,
    SettlementId,
};
pub use integration::IntegrationEvent;
pub use metadata::{Actor, ActorKind, Metadata, TraceParent};
pub use notification::NotificationRequested;
pub use payload::{Event, EventData};
pub use publish::{OutboxRecord, Publishable};
