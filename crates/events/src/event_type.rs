//! The event catalogue, as data.
//!
//! Guarantees: [`CATALOGUE`] mirrors the spec's "Event Types by Aggregate" and "Partition Key Selection"
//! tables — every event type with its aggregate, its partition key and its current and oldest decodable
//! version — and everything else (the codec, partition keys, schemas, the CLI) reads it from here.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::{ContractErrorKind, de_error};

/// The aggregates of the domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum AggregateType {
    /// An invoice a merchant created.
    Invoice,
    /// One on-chain payment towards an invoice.
    Payment,
    /// Paying an invoice's proceeds, minus the platform fee, to the merchant.
    Settlement,
    /// A merchant account.
    Merchant,
}

/// Which id an event is partitioned by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PartitionKeyField {
    /// All events of one invoice, including its payments, stay in order.
    InvoiceId,
    /// All settlements and account changes of one merchant stay in order.
    MerchantId,
}

impl AggregateType {
    /// Every aggregate.
    pub const ALL: [AggregateType; 4] = [
        AggregateType::Invoice,
        AggregateType::Payment,
        AggregateType::Settlement,
        AggregateType::Merchant,
    ];

    /// The wire name (`aggregate_type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            AggregateType::Invoice => "Invoice",
            AggregateType::Payment => "Payment",
            AggregateType::Settlement => "Settlement",
            AggregateType::Merchant => "Merchant",
        }
    }

    /// The partition key of this aggregate's events, per the spec's "Partition Key Selection" table.
    pub const fn partition_key(self) -> PartitionKeyField {
        match self {
            AggregateType::Invoice | AggregateType::Payment => PartitionKeyField::InvoiceId,
            AggregateType::Settlement | AggregateType::Merchant => PartitionKeyField::MerchantId,
        }
    }
}

/// One row of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct EventSpec {
    /// The event type.
    pub event_type: EventType,
    /// Its aggregate.
    pub aggregate_type: AggregateType,
    /// The version producers write and handlers see.
    pub current_version: u32,
    /// The oldest version the decoder still upcasts; older ones are [`ContractErrorKind::UnknownVersion`].
    pub oldest_version: u32,
}

macro_rules! catalogue {
    ($($variant:ident: $aggregate:ident, versions $oldest:literal..=$current:literal;)*) => {
        /// The type of an event (`event_type`); past tense, one per fact the domain records.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        pub enum EventType {
            $(
                #[doc = concat!("`", stringify!($variant), "`, an event of the ", stringify!($aggregate), " aggregate.")]
                $variant,
            )*
        }

        /// Every event type with its aggregate and versions.
        pub const CATALOGUE: &[EventSpec] = &[
            $(EventSpec {
                event_type: EventType::$variant,
                aggregate_type: AggregateType::$aggregate,
                current_version: $current,
                oldest_version: $oldest,
            },)*
        ];

        impl EventType {
            /// Every event type, in catalogue order.
            pub const ALL: &[EventType] = &[$(EventType::$variant),*];

            /// The wire name (`event_type`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

// Invoice and Payment events are keyed by invoice id, Settlement and Merchant events by merchant id
// (see `AggregateType::partition_key`). MerchantSuspended, MerchantCreated, SettingsUpdated and InvoiceCreated
// (deposit address, decision 0034) are at version 2;
// see `crate::upcast`. New types are
// appended (MerchantReinstated, decision 0026; WebhookEndpointDisabled, decision 0029), so that existing variants
// keep their position.
catalogue! {
    InvoiceCreated: Invoice, versions 1..=2;
    InvoiceExpired: Invoice, versions 1..=1;
    InvoicePaid: Invoice, versions 1..=1;
    InvoiceCancelled: Invoice, versions 1..=1;
    PaymentDetected: Payment, versions 1..=1;
    PaymentConfirming: Payment, versions 1..=1;
    PaymentConfirmed: Payment, versions 1..=1;
    PaymentFailed: Payment, versions 1..=1;
    SettlementCreated: Settlement, versions 1..=1;
    SettlementCompleted: Settlement, versions 1..=1;
    SettlementFailed: Settlement, versions 1..=1;
    MerchantCreated: Merchant, versions 1..=2;
    MerchantSuspended: Merchant, versions 1..=2;
    SettingsUpdated: Merchant, versions 1..=2;
    MerchantReinstated: Merchant, versions 1..=1;
    WebhookEndpointDisabled: Merchant, versions 1..=1;
}

impl EventType {
    /// This type's row of the catalogue.
    pub const fn spec(self) -> &'static EventSpec {
        // The catalogue lists the variants in declaration order.
        &CATALOGUE[self as usize]
    }

    /// The aggregate this event belongs to.
    pub const fn aggregate_type(self) -> AggregateType {
        self.spec().aggregate_type
    }

    /// The version producers write and handlers see.
    pub const fn current_version(self) -> u32 {
        self.spec().current_version
    }

    /// The oldest version the decoder accepts.
    pub const fn oldest_version(self) -> u32 {
        self.spec().oldest_version
    }
}

/// Why a string is not an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, UnknownEventType> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

impl FromStr for AggregateType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AggregateType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown aggregate type `{s}`"))
    }
}

macro_rules! name_serde {
    ($ty:ty, $expecting:literal, $kind:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(|e| de_error($kind, e))
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

name_serde!(
    EventType,
    "an event type name",
    ContractErrorKind::UnknownEventType
);
name_serde!(
    AggregateType,
    "an aggregate type name",
    ContractErrorKind::InvalidValue
);

impl JsonSchema for EventType {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("EventType")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}

impl JsonSchema for AggregateType {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("AggregateType")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<_> = AggregateType::ALL.iter().map(|t| t.as_str()).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_indexed_by_variant() {
        for (index, spec) in CATALOGUE.iter().enumerate() {
            assert_eq!(spec.event_type as usize, index);
            assert_eq!(spec.event_type.spec().event_type, spec.event_type);
            assert!(spec.oldest_version >= 1 && spec.oldest_version <= spec.current_version);
        }
        assert_eq!(EventType::ALL.len(), CATALOGUE.len());
    }

    #[test]
    fn matches_the_specs_tables() {
        let of = |aggregate| -> Vec<&str> {
            CATALOGUE
                .iter()
                .filter(|s| s.aggregate_type == aggregate)
                .map(|s| s.event_type.as_str())
                .collect()
        };
        assert_eq!(
            of(AggregateType::Invoice),
            [
                "InvoiceCreated",
                "InvoiceExpired",
                "InvoicePaid",
                "InvoiceCancelled"
            ]
        );
        assert_eq!(
            of(AggregateType::Payment),
            [
                "PaymentDetected",
                "PaymentConfirming",
                "PaymentConfirmed",
                "PaymentFailed"
            ]
        );
        assert_eq!(
            of(AggregateType::Settlement),
            [
                "SettlementCreated",
                "SettlementCompleted",
                "SettlementFailed"
            ]
        );
        assert_eq!(
            of(AggregateType::Merchant),
            [
                "MerchantCreated",
                "MerchantSuspended",
                "SettingsUpdated",
                "MerchantReinstated",
                "WebhookEndpointDisabled"
            ]
        );
        assert_eq!(
            AggregateType::Invoice.partition_key(),
            PartitionKeyField::InvoiceId
        );
        assert_eq!(
            AggregateType::Payment.partition_key(),
            PartitionKeyField::InvoiceId
        );
        assert_eq!(
            AggregateType::Settlement.partition_key(),
            PartitionKeyField::MerchantId
        );
        assert_eq!(
            AggregateType::Merchant.partition_key(),
            PartitionKeyField::MerchantId
        );
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), *t);
        }
        assert!("InvoiceDeleted".parse::<EventType>().is_err());
        assert!("invoicecreated".parse::<EventType>().is_err());
    }
}
