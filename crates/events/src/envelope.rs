//! The envelope every event travels in.
//!
//! Guarantees: an [`Envelope`] holds the spec's ten fields, typed. `aggregate_type`, `event_type` and
//! `event_version` are not stored but derived from the payload, so they cannot disagree with it, and the
//! version is always the current one (older versions were upcast on decode). Constructors check the whole
//! contract ([`Envelope::validate`]); [`crate::encode`] checks it again, so builder-style changes cannot
//! smuggle an invalid event onto the bus. Partition key, topic and Kafka headers are derived here, per the
//! spec's tables.

use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::error::{ContractError, ContractErrorKind};
use crate::event_type::{AggregateType, EventType, PartitionKeyField};
use crate::id::{AggregateId, CorrelationId, EventId, InvoiceId, MerchantId};
use crate::metadata::Metadata;
use crate::payload::{Event, EventData};
use crate::{headers, time, topics};

/// A domain event: a typed payload with its identity, aggregate, context and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    event_id: EventId,
    aggregate_id: AggregateId,
    data: EventData,
    metadata: Metadata,
    timestamp: DateTime<Utc>,
    correlation_id: Option<CorrelationId>,
    causation_id: Option<EventId>,
}

/// Every field of an [`Envelope`], for building one explicitly (e.g. from an outbox row) or taking one apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeParts {
    /// Unique id of the event.
    pub event_id: EventId,
    /// Id of the aggregate the event belongs to; must be of the payload's aggregate type.
    pub aggregate_id: AggregateId,
    /// The payload.
    pub event_data: EventData,
    /// Context.
    pub metadata: Metadata,
    /// When the event occurred.
    pub timestamp: DateTime<Utc>,
    /// Request correlation.
    pub correlation_id: Option<CorrelationId>,
    /// The event that caused this one.
    pub causation_id: Option<EventId>,
}

impl Envelope {
    /// A new event about `aggregate_id`, now, with a fresh time-ordered id. The payload type fixes the
    /// aggregate's id type, so an `InvoiceCreated` only takes an [`InvoiceId`](crate::InvoiceId).
    pub fn new<E: Event>(
        aggregate_id: E::AggregateId,
        event: E,
        metadata: Metadata,
    ) -> Result<Self, ContractError> {
        Self::from_parts(EnvelopeParts {
            event_id: EventId::new(),
            aggregate_id: aggregate_id.into(),
            event_data: event.into(),
            metadata,
            timestamp: time::now_micros(),
            correlation_id: None,
            causation_id: None,
        })
    }

    /// An envelope from explicit parts, checked against the whole contract.
    pub fn from_parts(parts: EnvelopeParts) -> Result<Self, ContractError> {
        let envelope = Envelope {
            event_id: parts.event_id,
            aggregate_id: parts.aggregate_id,
            data: parts.event_data,
            metadata: parts.metadata,
            timestamp: parts.timestamp,
            correlation_id: parts.correlation_id,
            causation_id: parts.causation_id,
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// Takes the envelope apart.
    pub fn into_parts(self) -> EnvelopeParts {
        EnvelopeParts {
            event_id: self.event_id,
            aggregate_id: self.aggregate_id,
            event_data: self.data,
            metadata: self.metadata,
            timestamp: self.timestamp,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, correlation_id: CorrelationId) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, causation_id: EventId) -> Self {
        self.causation_id = Some(causation_id);
        self
    }

    /// Marks this event as caused by `cause`: causation is `cause`'s id, correlation is inherited.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.causation_id = Some(cause.event_id);
        self.correlation_id = cause.correlation_id.or(self.correlation_id);
        self
    }

    /// Checks the whole contract: the aggregate id's kind, the payload's invariants, the metadata, and the
    /// rules that span envelope and payload. Error paths are `$`-rooted at the envelope.
    pub fn validate(&self) -> Result<(), ContractError> {
        let expected = self.data.event_type().aggregate_type();
        if self.aggregate_id.aggregate_type() != expected {
            return Err(ContractError::new(
                ContractErrorKind::AggregateMismatch,
                "$.aggregate_id",
                format!(
                    "{} events belong to a {expected} aggregate, not to {}",
                    self.data.event_type(),
                    self.aggregate_id
                ),
            ));
        }
        self.data.validate().map_err(|e| e.within("$.event_data"))?;
        self.metadata
            .validate()
            .map_err(|e| e.within("$.metadata"))?;
        if let EventData::InvoiceCreated(created) = &self.data
            && created.expires_at <= self.timestamp
        {
            return Err(ContractError::new(
                ContractErrorKind::InvariantViolated,
                "$.event_data.expires_at",
                "an invoice must expire after it is created (the event's timestamp)",
            ));
        }
        if self.causation_id == Some(self.event_id) {
            return Err(ContractError::new(
                ContractErrorKind::InvariantViolated,
                "$.causation_id",
                "an event cannot cause itself",
            ));
        }
        Ok(())
    }

    /// Unique id of the event; consumers de-duplicate by it.
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// Id of the aggregate the event belongs to.
    pub fn aggregate_id(&self) -> AggregateId {
        self.aggregate_id
    }

    /// Type of that aggregate.
    pub fn aggregate_type(&self) -> AggregateType {
        self.data.event_type().aggregate_type()
    }

    /// The event type.
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The payload's version: always the current one.
    pub fn event_version(&self) -> u32 {
        self.data.event_type().current_version()
    }

    /// The payload.
    pub fn data(&self) -> &EventData {
        &self.data
    }

    /// The payload, by value.
    pub fn into_data(self) -> EventData {
        self.data
    }

    /// Context.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the event occurred.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// Request correlation.
    pub fn correlation_id(&self) -> Option<CorrelationId> {
        self.correlation_id
    }

    /// The event that caused this one.
    pub fn causation_id(&self) -> Option<EventId> {
        self.causation_id
    }

    /// The invoice this event concerns: the aggregate for Invoice events, the payload's `invoice_id` for
    /// Payment and Settlement events, none for Merchant events.
    pub fn invoice_id(&self) -> Option<InvoiceId> {
        match self.aggregate_id {
            AggregateId::Invoice(id) => Some(id),
            _ => self.data.invoice_id(),
        }
    }

    /// The merchant this event concerns; every event has one.
    pub fn merchant_id(&self) -> MerchantId {
        match (self.aggregate_id, self.data.merchant_id()) {
            (AggregateId::Merchant(id), _) | (_, Some(id)) => id,
            // Every non-Merchant payload carries `merchant_id` and `validate` ties the aggregate id to the
            // payload type, so this is a Merchant event whose aggregate id is not a merchant id.
            (other, None) => unreachable!("validated envelope with {other} and no merchant id"),
        }
    }

    /// The Kafka message key, per the spec's partition key table: `invoice_id` for Invoice and Payment
    /// events, `merchant_id` for Settlement and Merchant events, in the ids' canonical wire form.
    pub fn partition_key(&self) -> String {
        match self.aggregate_type().partition_key() {
            PartitionKeyField::InvoiceId => match self.invoice_id() {
                Some(id) => id.to_string(),
                None => unreachable!("Invoice and Payment events always concern an invoice"),
            },
            PartitionKeyField::MerchantId => self.merchant_id().to_string(),
        }
    }

    /// The topic: every domain event goes to [`topics::DOMAIN_EVENTS`].
    pub fn topic(&self) -> &'static str {
        topics::DOMAIN_EVENTS
    }

    /// Kafka headers derived from the envelope (names in [`crate::headers`]); optional ones only when set.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(9);
        out.push((headers::EVENT_ID, self.event_id.to_string()));
        out.push((headers::EVENT_TYPE, self.event_type().as_str().to_owned()));
        out.push((headers::EVENT_VERSION, self.event_version().to_string()));
        out.push((
            headers::AGGREGATE_TYPE,
            self.aggregate_type().as_str().to_owned(),
        ));
        out.push((headers::AGGREGATE_ID, self.aggregate_id.to_string()));
        out.push((headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()));
        if let Some(id) = self.correlation_id {
            out.push((headers::CORRELATION_ID, id.to_string()));
        }
        if let Some(id) = self.causation_id {
            out.push((headers::CAUSATION_ID, id.to_string()));
        }
        if let Some(traceparent) = &self.metadata.traceparent {
            out.push((headers::TRACEPARENT, traceparent.as_str().to_owned()));
        }
        out
    }
}

/// The canonical wire form: fields in the spec's order, optional ids omitted when absent. Serialising does
/// not validate; [`crate::encode`] does, and checks the size.
impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let optional =
            usize::from(self.correlation_id.is_some()) + usize::from(self.causation_id.is_some());
        let mut s = serializer.serialize_struct("Envelope", 8 + optional)?;
        s.serialize_field("event_id", &self.event_id)?;
        s.serialize_field("aggregate_id", &self.aggregate_id)?;
        s.serialize_field("aggregate_type", &self.aggregate_type())?;
        s.serialize_field("event_type", &self.event_type())?;
        s.serialize_field("event_version", &self.event_version())?;
        s.serialize_field("event_data", &self.data)?;
        s.serialize_field("metadata", &self.metadata)?;
        s.serialize_field("timestamp", &time::format_utc(&self.timestamp))?;
        if let Some(id) = &self.correlation_id {
            s.serialize_field("correlation_id", id)?;
        }
        if let Some(id) = &self.causation_id {
            s.serialize_field("causation_id", id)?;
        }
        s.end()
    }
}
