//! Typed identifiers.
//!
//! Guarantees: each kind of id is its own type, so an invoice id cannot be passed where a merchant id is
//! expected. Underneath every id is a UUID; new ids are UUID v7 and therefore sort by creation time. The nil
//! UUID is never a valid id (it is what a forgotten default looks like).
//!
//! Wire form (decision 0002): `<prefix>_<uuid>` with the UUID in lowercase hyphenated form, e.g.
//! `inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d`. Input also accepts the bare hyphenated UUID (either case), so
//! systems that only know the database column can still produce events. An id carrying any prefix other than
//! its own kind's — `mer_…` where an invoice id is expected — is a [`ContractErrorKind::WrongIdPrefix`].
//!
//! Deterministic ids (decision 0026): [`SettlementId::for_invoice`] and [`EventId::derived`] are UUID v5 (SHA-1
//! over a fixed namespace and a name), so a producer that derives an id from what it is about — one settlement
//! per invoice, one event per step of it — writes the same id however often it replays, and consumers
//! de-duplicate the replay. The namespaces below are part of the contract: changing one changes every id
//! derived from it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use uuid::Uuid;

use crate::error::{ContractError, ContractErrorKind, de_error};

/// Namespace of [`SettlementId::for_invoice`]: the settlement of an invoice is
/// `UUID v5(SETTLEMENT_NAMESPACE, the invoice id's 16 bytes)`.
///
/// A fixed random UUID (`30b8886a-815a-477d-a8b4-88f72549f691`), chosen once. It must never change: every
/// settlement id ever written was derived from it, and a replay after a change would create a second
/// settlement for an invoice already settled.
pub const SETTLEMENT_NAMESPACE: Uuid = Uuid::from_u128(0x30b8886a_815a_477d_a8b4_88f72549f691);

/// A namespace for [`EventId::derived`] ids of the events the settlement service writes
/// (`SettlementCreated`, `SettlementFailed`, `SettlementCompleted`); the name (e.g. the invoice id's bytes and
/// the step) is the service's choice, and must itself never change.
///
/// A fixed random UUID (`b0f03dc8-0619-49bd-853e-6ffd148083c0`), chosen once. It must never change.
pub const SETTLEMENT_EVENT_NAMESPACE: Uuid =
    Uuid::from_u128(0xb0f03dc8_0619_49bd_853e_6ffd148083c0);

/// Namespace of [`NotificationId::derived`]: a notification caused by an event is
/// `UUID v5(NOTIFICATION_NAMESPACE, the cause's 16 bytes ‖ the purpose)`, so a producer replaying the cause
/// requests the same notification again, and the notifications service sends it once.
///
/// A fixed random UUID (`5c0f3b8e-2a71-4d6e-9b4a-7e1d2c3f4a5b`), chosen once. It must never change.
pub const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x5c0f3b8e_2a71_4d6e_9b4a_7e1d2c3f4a5b);

/// Longest prefix plus `_` plus a hyphenated UUID; the stack buffer used to format ids.
const MAX_WIRE_LEN: usize = 48;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id carries a prefix other than the expected one.
    #[error("expected an id with prefix `{expected}_` or a bare UUID, found prefix `{found}_`")]
    WrongPrefix {
        /// The prefix of the expected kind.
        expected: &'static str,
        /// The prefix that was found.
        found: String,
    },
    /// The UUID part is not a hyphenated UUID.
    #[error("`{0}` is not a hyphenated UUID")]
    NotAUuid(String),
    /// The UUID is nil.
    #[error("the nil UUID is not a valid id")]
    Nil,
}

impl IdError {
    /// The contract error kind this maps to.
    pub fn kind(&self) -> ContractErrorKind {
        match self {
            IdError::WrongPrefix { .. } => ContractErrorKind::WrongIdPrefix,
            IdError::NotAUuid(_) | IdError::Nil => ContractErrorKind::InvalidId,
        }
    }

    pub(crate) fn at(&self, path: &str) -> ContractError {
        ContractError::at(self.kind(), path, self.to_string())
    }
}

/// Parses `<prefix>_<uuid>` or a bare `<uuid>`.
pub(crate) fn parse_id(input: &str, prefix: &'static str) -> Result<Uuid, IdError> {
    let uuid_part = match input.split_once('_') {
        Some((found, rest)) if found == prefix => rest,
        Some((found, _)) => {
            return Err(IdError::WrongPrefix {
                expected: prefix,
                found: found.to_owned(),
            });
        }
        None => input,
    };
    // Only the hyphenated form: the simple, braced and URN forms the uuid crate also accepts are not ids here.
    if uuid_part.len() != 36 {
        return Err(IdError::NotAUuid(uuid_part.to_owned()));
    }
    let uuid = Uuid::try_parse(uuid_part).map_err(|_| IdError::NotAUuid(uuid_part.to_owned()))?;
    if uuid.is_nil() {
        return Err(IdError::Nil);
    }
    Ok(uuid)
}

/// Formats `<prefix>_<uuid>` into `buf` without allocating.
fn write_wire<'b>(buf: &'b mut [u8; MAX_WIRE_LEN], prefix: &str, uuid: &Uuid) -> &'b str {
    let p = prefix.len();
    buf[..p].copy_from_slice(prefix.as_bytes());
    buf[p] = b'_';
    uuid.hyphenated().encode_lower(&mut buf[p + 1..]);
    // Only ASCII was written.
    std::str::from_utf8(&buf[..p + 37]).expect("ids are ASCII")
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// The wire prefix of this kind of id, without the `_`.
            pub const PREFIX: &'static str = $prefix;

            /// A new time-ordered (UUID v7) id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. read from a database column. Fails on the nil UUID.
            pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
                if uuid.is_nil() { Err(IdError::Nil) } else { Ok(Self(uuid)) }
            }

            /// The UUID underneath, e.g. for a database column.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; MAX_WIRE_LEN];
                f.write_str(write_wire(&mut buf, Self::PREFIX, &self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_id(s, Self::PREFIX).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut buf = [0u8; MAX_WIRE_LEN];
                serializer.serialize_str(write_wire(&mut buf, Self::PREFIX, &self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a string ", $what, " id: `", $prefix, "_<uuid>` or a bare UUID"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(|e: IdError| de_error(e.kind(), e))
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": concat!(
                        "The ", $what, " id: `", $prefix, "_` followed by a hyphenated UUID (canonical, lowercase), ",
                        "or a bare hyphenated UUID on input."
                    ),
                    "pattern": concat!(
                        "^(", $prefix, "_)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
                    ),
                    "examples": [concat!($prefix, "_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d")]
                })
            }
        }
    };
}

typed_id!(
    /// Identifies one event; consumers de-duplicate by it.
    EventId, "evt", "event"
);
typed_id!(
    /// Identifies an invoice (the Invoice aggregate).
    InvoiceId, "inv", "invoice"
);
typed_id!(
    /// Identifies one on-chain payment towards an invoice (the Payment aggregate).
    PaymentId, "pay", "payment"
);
typed_id!(
    /// Identifies a settlement to a merchant (the Settlement aggregate).
    SettlementId, "set", "settlement"
);
typed_id!(
    /// Identifies a merchant (the Merchant aggregate).
    MerchantId, "mer", "merchant"
);
typed_id!(
    /// Identifies one notification (e-mail, SMS or webhook to one recipient); the notifications service sends
    /// each at most once after a provider accepted it.
    NotificationId, "ntf", "notification"
);
typed_id!(
    /// Ties together every event caused, directly or not, by one request.
    CorrelationId, "corr", "correlation"
);

impl SettlementId {
    /// The one settlement of `invoice`: UUID v5 over [`SETTLEMENT_NAMESPACE`] and the invoice id's 16 bytes.
    /// Deterministic, so a settlement service that replays an invoice writes the same settlement again (which
    /// every consumer de-duplicates) instead of a second one.
    pub fn for_invoice(invoice: InvoiceId) -> SettlementId {
        SettlementId(Uuid::new_v5(
            &SETTLEMENT_NAMESPACE,
            invoice.as_uuid().as_bytes(),
        ))
    }
}

impl EventId {
    /// A deterministic event id: UUID v5 over `namespace` and `name` (never nil). The same namespace and name
    /// always give the same id, so an event a producer re-derives on replay is recognised as the same event.
    /// Unlike [`EventId::new`] (v7), derived ids do not sort by time.
    pub fn derived(namespace: Uuid, name: &[u8]) -> EventId {
        EventId(Uuid::new_v5(&namespace, name))
    }
}

impl NotificationId {
    /// The notification `purpose` (e.g. `settlement_completed.email`) of the event `cause`: UUID v5 over
    /// [`NOTIFICATION_NAMESPACE`], the cause's UUID bytes and the purpose. Deterministic, so replaying the cause
    /// requests the same notification.
    pub fn derived(cause: EventId, purpose: &str) -> NotificationId {
        let mut name = cause.as_uuid().as_bytes().to_vec();
        name.extend_from_slice(purpose.as_bytes());
        NotificationId(Uuid::new_v5(&NOTIFICATION_NAMESPACE, &name))
    }
}

/// The id of an event's aggregate, whichever aggregate that is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AggregateId {
    /// An invoice.
    Invoice(InvoiceId),
    /// A payment.
    Payment(PaymentId),
    /// A settlement.
    Settlement(SettlementId),
    /// A merchant.
    Merchant(MerchantId),
}

impl AggregateId {
    /// The UUID underneath.
    pub fn as_uuid(&self) -> Uuid {
        match self {
            AggregateId::Invoice(id) => id.as_uuid(),
            AggregateId::Payment(id) => id.as_uuid(),
            AggregateId::Settlement(id) => id.as_uuid(),
            AggregateId::Merchant(id) => id.as_uuid(),
        }
    }

    /// The aggregate this id belongs to.
    pub fn aggregate_type(&self) -> crate::AggregateType {
        use crate::AggregateType;
        match self {
            AggregateId::Invoice(_) => AggregateType::Invoice,
            AggregateId::Payment(_) => AggregateType::Payment,
            AggregateId::Settlement(_) => AggregateType::Settlement,
            AggregateId::Merchant(_) => AggregateType::Merchant,
        }
    }

    /// Parses the id of an aggregate of type `aggregate`.
    pub fn parse(aggregate: crate::AggregateType, input: &str) -> Result<Self, IdError> {
        use crate::AggregateType;
        Ok(match aggregate {
            AggregateType::Invoice => AggregateId::Invoice(input.parse()?),
            AggregateType::Payment => AggregateId::Payment(input.parse()?),
            AggregateType::Settlement => AggregateId::Settlement(input.parse()?),
            AggregateType::Merchant => AggregateId::Merchant(input.parse()?),
        })
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateId::Invoice(id) => id.fmt(f),
            AggregateId::Payment(id) => id.fmt(f),
            AggregateId::Settlement(id) => id.fmt(f),
            AggregateId::Merchant(id) => id.fmt(f),
        }
    }
}

impl Serialize for AggregateId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AggregateId::Invoice(id) => id.serialize(serializer),
            AggregateId::Payment(id) => id.serialize(serializer),
            AggregateId::Settlement(id) => id.serialize(serializer),
            AggregateId::Merchant(id) => id.serialize(serializer),
        }
    }
}

impl From<InvoiceId> for AggregateId {
    fn from(id: InvoiceId) -> Self {
        AggregateId::Invoice(id)
    }
}
impl From<PaymentId> for AggregateId {
    fn from(id: PaymentId) -> Self {
        AggregateId::Payment(id)
    }
}
impl From<SettlementId> for AggregateId {
    fn from(id: SettlementId) -> Self {
        AggregateId::Settlement(id)
    }
}
impl From<MerchantId> for AggregateId {
    fn from(id: MerchantId) -> Self {
        AggregateId::Merchant(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: &str = "0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d";

    #[test]
    fn accepts_prefixed_and_bare_and_prints_prefixed_lowercase() {
        let prefixed: InvoiceId = format!("inv_{UUID}").parse().unwrap();
        let bare: InvoiceId = UUID.to_uppercase().parse().unwrap();
        assert_eq!(prefixed, bare);
        assert_eq!(bare.to_string(), format!("inv_{UUID}"));
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            format!("\"inv_{UUID}\"")
        );
    }

    #[test]
    fn another_kinds_prefix_is_a_wrong_prefix() {
        let err = format!("mer_{UUID}").parse::<InvoiceId>().unwrap_err();
        assert_eq!(err.kind(), ContractErrorKind::WrongIdPrefix);
        let err = format!("xyz_{UUID}").parse::<InvoiceId>().unwrap_err();
        assert_eq!(err.kind(), ContractErrorKind::WrongIdPrefix);
    }

    #[test]
    fn rejects_non_uuids_nil_and_non_hyphenated_forms() {
        for bad in [
            "evt_123",
            "evt_456",
            "",
            "0194b3c25d1e7a8b9c0d1e2f3a4b5c6d",
            &format!("{{{UUID}}}"),
        ] {
            assert_eq!(
                bad.parse::<EventId>().map_err(|e| e.kind()),
                Err(ContractErrorKind::InvalidId),
                "{bad}"
            );
        }
        let nil = "evt_00000000-0000-0000-0000-000000000000"
            .parse::<EventId>()
            .unwrap_err();
        assert_eq!(nil, IdError::Nil);
        assert!(EventId::from_uuid(Uuid::nil()).is_err());
    }

    #[test]
    fn new_ids_are_v7_and_sort_by_creation() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn settlement_ids_are_derived_from_the_invoice_and_never_change() {
        // Known values (computed independently: SHA-1 of the namespace's bytes and the invoice's 16 bytes). If
        // this fails, a namespace or the derivation changed: every settlement id ever written would change.
        let invoice: InvoiceId = UUID.parse().unwrap();
        let settlement = SettlementId::for_invoice(invoice);
        assert_eq!(
            settlement.to_string(),
            "set_25e6af53-ab6a-53d7-843d-29a34df5874d"
        );
        assert_eq!(settlement.as_uuid().get_version_num(), 5);
        assert_eq!(SettlementId::for_invoice(invoice), settlement);
        let next: InvoiceId = "0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e".parse().unwrap();
        assert_eq!(
            SettlementId::for_invoice(next).to_string(),
            "set_233598d8-6ff1-5016-b825-2fe39ee583be"
        );
        assert_eq!(
            SETTLEMENT_NAMESPACE.to_string(),
            "30b8886a-815a-477d-a8b4-88f72549f691"
        );
        assert_eq!(
            SETTLEMENT_EVENT_NAMESPACE.to_string(),
            "b0f03dc8-0619-49bd-853e-6ffd148083c0"
        );
    }

    #[test]
    fn derived_event_ids_are_stable_and_differ_by_name_and_namespace() {
        let created = EventId::derived(SETTLEMENT_EVENT_NAMESPACE, b"SettlementCreated");
        assert_eq!(
            created.to_string(),
            "evt_8cd52d7e-2506-5849-93ef-2c40e80962c4"
        );
        let invoice: InvoiceId = UUID.parse().unwrap();
        let mut name = invoice.as_uuid().as_bytes().to_vec();
        name.extend_from_slice(b"SettlementCreated");
        assert_eq!(
            EventId::derived(SETTLEMENT_EVENT_NAMESPACE, &name).to_string(),
            "evt_d7247421-c8bc-5e9e-82d1-e492fa9b311b"
        );
        assert_eq!(created.as_uuid().get_version_num(), 5);
        assert_ne!(
            EventId::derived(SETTLEMENT_NAMESPACE, b"SettlementCreated"),
            created
        );
        assert_ne!(
            EventId::derived(SETTLEMENT_EVENT_NAMESPACE, b"SettlementCompleted"),
            created
        );
        assert!(EventId::derived(SETTLEMENT_EVENT_NAMESPACE, b"").as_uuid() != Uuid::nil());
    }

    proptest! {
        #[test]
        fn different_invoices_have_different_settlements(a in any::<u128>(), b in any::<u128>()) {
            prop_assume!(a != 0 && b != 0 && a != b);
            let (a, b) = (
                InvoiceId::from_uuid(Uuid::from_u128(a)).unwrap(),
                InvoiceId::from_uuid(Uuid::from_u128(b)).unwrap(),
            );
            prop_assert_ne!(SettlementId::for_invoice(a), SettlementId::for_invoice(b));
            prop_assert_eq!(SettlementId::for_invoice(a), SettlementId::for_invoice(a));
        }

        #[test]
        fn display_parse_round_trip(bytes in any::<[u8; 16]>()) {
            prop_assume!(bytes != [0; 16]);
            let id = SettlementId::from_uuid(Uuid::from_bytes(bytes)).unwrap();
            prop_assert_eq!(id.to_string().parse::<SettlementId>().unwrap(), id);
            prop_assert_eq!(id.as_uuid().to_string().parse::<SettlementId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<SettlementId>(&json).unwrap(), id);
        }
    }
}
