//! The typed payloads (`event_data`) of every event type.
//!
//! Guarantees: one struct per event type, named in the past tense, rejecting unknown fields; [`EventData`]
//! holds exactly one of them; [`Event`] ties each struct at compile time to its [`EventType`] and to the id
//! type of its aggregate, so an `InvoiceCreated` can only be wrapped with an `InvoiceId`. Each payload's
//! `validate` checks what serde cannot: decimals against the sibling currency, positivity, sums, confirmation
//! counts, network/asset pairs. Paths in its errors are relative to `event_data`.
//!
//! Layout: `invoice`, `payment` (with the chain types), `settlement`, `merchant`; this module holds the enum,
//! the trait and the shared checks.

mod invoice;
mod merchant;
pub(crate) mod payment;
mod settlement;

pub use invoice::{
    CancellationReason, InvoiceCancelled, InvoiceCreated, InvoiceExpired, InvoicePaid,
};
pub use merchant::{
    Change, EndpointDisabledReason, MerchantContact, MerchantCreated, MerchantReinstated,
    MerchantSuspended, SettingsChanges, SettingsUpdated, SpeedPolicy, SuspensionReason,
    WebhookEndpointDisabled,
};
pub use payment::{
    Address, Deposit, MAX_ADDRESS_CHARS, MAX_CONFIRMATIONS, Network, PaymentConfirmed,
    PaymentConfirming, PaymentCoverage, PaymentDetected, PaymentFailed, PaymentFailureReason,
    TransactionHash,
};
pub use settlement::{
    SettlementCompleted, SettlementCreated, SettlementFailed, SettlementFailureReason,
};

use serde::{Serialize, Serializer};

use crate::error::{ContractError, ContractErrorKind};
use crate::event_type::EventType;
use crate::id::{AggregateId, InvoiceId, MerchantId, PaymentId, SettlementId};
use crate::money::{Amount, Currency};

/// Longest accepted free-text `details`.
pub const MAX_DETAILS_CHARS: usize = 1000;

mod sealed {
    pub trait Sealed {}
}

/// A payload type: knows its event type and the id type of its aggregate.
pub trait Event: Into<EventData> + sealed::Sealed {
    /// The event type this payload is the `event_data` of.
    const EVENT_TYPE: EventType;
    /// The id type of the aggregate this event belongs to.
    type AggregateId: Into<AggregateId> + Copy;
}

macro_rules! event_data {
    ($($name:ident => $id:ty),* $(,)?) => {
        /// The payload of an event: one variant per event type, each holding the current version's struct.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum EventData {
            $(
                #[doc = concat!("A [`", stringify!($name), "`] payload.")]
                $name($name),
            )*
        }

        $(
            impl sealed::Sealed for $name {}
            impl Event for $name {
                const EVENT_TYPE: EventType = EventType::$name;
                type AggregateId = $id;
            }
            impl From<$name> for EventData {
                fn from(payload: $name) -> Self {
                    EventData::$name(payload)
                }
            }
        )*

        impl EventData {
            /// The event type of this payload.
            pub fn event_type(&self) -> EventType {
                match self {
                    $(EventData::$name(_) => EventType::$name,)*
                }
            }

            /// Checks the payload's invariants; paths are relative to `event_data`.
            pub(crate) fn validate(&self) -> Result<(), ContractError> {
                match self {
                    $(EventData::$name(payload) => payload.validate(),)*
                }
            }

            /// The JSON Schemas of `event_type`'s current payload and of its aggregate's id.
            pub(crate) fn payload_schemas(
                event_type: EventType,
                generator: &mut schemars::SchemaGenerator,
            ) -> (schemars::Schema, schemars::Schema) {
                match event_type {
                    $(EventType::$name => (generator.subschema_for::<$name>(), generator.subschema_for::<$id>()),)*
                }
            }

            /// Parses the current version of `event_type`'s payload.
            pub(crate) fn parse_current(event_type: EventType, raw: &str) -> Result<EventData, ContractError> {
                match event_type {
                    $(EventType::$name => crate::codec::parse::<$name>(raw).map(EventData::$name),)*
                }
            }
        }

        impl Serialize for EventData {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(EventData::$name(payload) => payload.serialize(serializer),)*
                }
            }
        }
    };
}

event_data! {
    InvoiceCreated => InvoiceId,
    InvoiceExpired => InvoiceId,
    InvoicePaid => InvoiceId,
    InvoiceCancelled => InvoiceId,
    PaymentDetected => PaymentId,
    PaymentConfirming => PaymentId,
    PaymentConfirmed => PaymentId,
    PaymentFailed => PaymentId,
    SettlementCreated => SettlementId,
    SettlementCompleted => SettlementId,
    SettlementFailed => SettlementId,
    MerchantCreated => MerchantId,
    MerchantSuspended => MerchantId,
    SettingsUpdated => MerchantId,
    MerchantReinstated => MerchantId,
    WebhookEndpointDisabled => MerchantId,
}

impl EventData {
    /// The invoice the event concerns, for every Invoice, Payment and Settlement event.
    pub fn invoice_id(&self) -> Option<InvoiceId> {
        match self {
            EventData::PaymentDetected(p) => Some(p.invoice_id),
            EventData::PaymentConfirming(p) => Some(p.invoice_id),
            EventData::PaymentConfirmed(p) => Some(p.invoice_id),
            EventData::PaymentFailed(p) => Some(p.invoice_id),
            EventData::SettlementCreated(p) => Some(p.invoice_id),
            EventData::SettlementCompleted(p) => Some(p.invoice_id),
            EventData::SettlementFailed(p) => Some(p.invoice_id),
            // The aggregate id is the invoice id for Invoice events; Merchant events concern no invoice.
            EventData::InvoiceCreated(_)
            | EventData::InvoiceExpired(_)
            | EventData::InvoicePaid(_)
            | EventData::InvoiceCancelled(_)
            | EventData::MerchantCreated(_)
            | EventData::MerchantSuspended(_)
            | EventData::SettingsUpdated(_)
            | EventData::MerchantReinstated(_)
            | EventData::WebhookEndpointDisabled(_) => None,
        }
    }

    /// The merchant the event concerns, for every event but Merchant events (whose aggregate id it is).
    pub fn merchant_id(&self) -> Option<MerchantId> {
        match self {
            EventData::InvoiceCreated(p) => Some(p.merchant_id),
            EventData::InvoiceExpired(p) => Some(p.merchant_id),
            EventData::InvoicePaid(p) => Some(p.merchant_id),
            EventData::InvoiceCancelled(p) => Some(p.merchant_id),
            EventData::PaymentDetected(p) => Some(p.merchant_id),
            EventData::PaymentConfirming(p) => Some(p.merchant_id),
            EventData::PaymentConfirmed(p) => Some(p.merchant_id),
            EventData::PaymentFailed(p) => Some(p.merchant_id),
            EventData::SettlementCreated(p) => Some(p.merchant_id),
            EventData::SettlementCompleted(p) => Some(p.merchant_id),
            EventData::SettlementFailed(p) => Some(p.merchant_id),
            EventData::MerchantCreated(_)
            | EventData::MerchantSuspended(_)
            | EventData::SettingsUpdated(_)
            | EventData::MerchantReinstated(_)
            | EventData::WebhookEndpointDisabled(_) => None,
        }
    }
}

/// `amount` must not have more decimals than `currency`.
pub(crate) fn check_decimals(
    amount: Amount,
    currency: impl Into<Currency>,
    path: &str,
) -> Result<(), ContractError> {
    amount
        .check_decimals(currency.into())
        .map_err(|e| e.at(path))
}

/// `amount` must be above zero.
pub(crate) fn check_positive(amount: Amount, path: &str) -> Result<(), ContractError> {
    if amount.is_zero() {
        return Err(ContractError::at(
            ContractErrorKind::InvalidValue,
            path,
            "must be greater than zero",
        ));
    }
    Ok(())
}

/// A violated invariant at `path`.
pub(crate) fn invariant(path: &str, message: impl Into<String>) -> ContractError {
    ContractError::at(ContractErrorKind::InvariantViolated, path, message)
}

/// Free text explaining a reason: bounded, and required when the reason is `other`.
pub(crate) fn check_details(
    details: Option<&str>,
    reason_is_other: bool,
) -> Result<(), ContractError> {
    crate::metadata::check_text(details, MAX_DETAILS_CHARS, "details")?;
    if reason_is_other && details.is_none() {
        return Err(invariant("details", "a reason of `other` needs details"));
    }
    Ok(())
}

/// Deduplication check for lists that are sets on the wire.
pub(crate) fn check_unique<T: PartialEq>(items: &[T], path: &str) -> Result<(), ContractError> {
    for (index, item) in items.iter().enumerate() {
        if items[..index].contains(item) {
            return Err(invariant(&format!("{path}[{index}]"), "duplicate entry"));
        }
    }
    Ok(())
}
