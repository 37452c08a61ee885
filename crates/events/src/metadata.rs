//! Event metadata: who did it, from where, in which trace.
//!
//! Guarantees: `actor` is always present and has the form `<kind>:<id>` with a known kind; `ip_address` is an
//! IPv4 or IPv6 address; `traceparent` is a W3C trace-context version-00 header value; free-text fields are
//! bounded and contain no control characters, so metadata can go to logs and headers as is.
//!
//! Metadata is context, not business data: consumers must not branch on it. It must never carry a secret —
//! an API key appears as its public id (`api_key:key_…`), never as the key itself.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{ContractError, ContractErrorKind, de_error};

/// Longest accepted `user_agent`.
pub const MAX_USER_AGENT_CHARS: usize = 512;
/// Longest accepted `request_id`, `source` and actor id.
pub const MAX_SHORT_TEXT_CHARS: usize = 128;

/// Context of an event (the envelope's `metadata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Who caused the event, as `<kind>:<id>` (`api_key:key_123`, `user:…`, `system:settlement-processor`).
    pub actor: Actor,
    /// Client IP address of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ip_address_schema")]
    pub ip_address: Option<IpAddr>,
    /// Client user agent of that request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub user_agent: Option<String>,
    /// Id of that request, as given by the API gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub request_id: Option<String>,
    /// What produced the event when no request did (`payment-confirmation`, `expiry-sweeper`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub source: Option<String>,
    /// W3C trace context of the producer, propagated to the Kafka `traceparent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

/// `IpAddr` as draft 2020-12 spells it (schemars' default uses a non-standard `ip` format).
fn ip_address_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "string", "format": "ipv4" },
            { "type": "string", "format": "ipv6" },
            { "type": "null" }
        ]
    })
}

impl Metadata {
    /// Metadata with only an actor.
    pub fn new(actor: Actor) -> Self {
        Metadata {
            actor,
            ip_address: None,
            user_agent: None,
            request_id: None,
            source: None,
            traceparent: None,
        }
    }

    /// Metadata for an event the platform produced on its own, e.g. `Metadata::system("settlement-processor")`.
    pub fn system(component: &str) -> Result<Self, ContractError> {
        Ok(Self::new(Actor::new(ActorKind::System, component)?))
    }

    pub(crate) fn validate(&self) -> Result<(), ContractError> {
        check_text(
            self.user_agent.as_deref(),
            MAX_USER_AGENT_CHARS,
            "user_agent",
        )?;
        check_text(
            self.request_id.as_deref(),
            MAX_SHORT_TEXT_CHARS,
            "request_id",
        )?;
        check_text(self.source.as_deref(), MAX_SHORT_TEXT_CHARS, "source")
    }
}

/// Checks a bounded free-text field: non-empty when present, at most `max` characters, no control characters.
pub(crate) fn check_text(value: Option<&str>, max: usize, path: &str) -> Result<(), ContractError> {
    let Some(value) = value else { return Ok(()) };
    let problem = if value.is_empty() {
        "is empty; omit the field instead"
    } else if value.chars().count() > max {
        "is too long"
    } else if value.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(ContractError::at(
        ContractErrorKind::InvalidValue,
        path,
        format!("{problem} (at most {max} characters)"),
    ))
}

/// The kind of actor behind an event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ActorKind {
    /// A merchant's API key, by its public id.
    ApiKey,
    /// A signed-in dashboard user.
    User,
    /// Platform staff acting through back-office tools.
    Admin,
    /// A platform component acting on its own (a scheduler, the chain watcher, settlement).
    System,
}

impl ActorKind {
    /// Every kind.
    pub const ALL: [ActorKind; 4] = [
        ActorKind::ApiKey,
        ActorKind::User,
        ActorKind::Admin,
        ActorKind::System,
    ];

    /// The wire token.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::User => "user",
            ActorKind::Admin => "admin",
            ActorKind::System => "system",
        }
    }
}

/// Who caused an event: `<kind>:<id>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    kind: ActorKind,
    id: String,
}

impl Actor {
    /// An actor; `id` must be 1 to 128 printable ASCII characters without spaces.
    pub fn new(kind: ActorKind, id: &str) -> Result<Self, ContractError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_SHORT_TEXT_CHARS
            && id.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(ContractError::at(
                ContractErrorKind::InvalidValue,
                "actor",
                format!(
                    "actor id must be 1 to {MAX_SHORT_TEXT_CHARS} printable ASCII characters without spaces"
                ),
            ));
        }
        Ok(Actor {
            kind,
            id: id.to_owned(),
        })
    }

    /// The kind of actor.
    pub fn kind(&self) -> ActorKind {
        self.kind
    }

    /// The actor's id within its kind.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl FromStr for Actor {
    type Err = ContractError;
    fn from_str(s: &str) -> Result<Self, ContractError> {
        let (kind, id) = s.split_once(':').ok_or_else(|| {
            ContractError::at(
                ContractErrorKind::InvalidValue,
                "actor",
                format!("`{s}` is not of the form `<kind>:<id>`"),
            )
        })?;
        let kind = ActorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| {
                let known: Vec<_> = ActorKind::ALL.iter().map(|k| k.as_str()).collect();
                ContractError::at(
                    ContractErrorKind::InvalidValue,
                    "actor",
                    format!(
                        "unknown actor kind `{kind}`, expected one of {}",
                        known.join(", ")
                    ),
                )
            })?;
        Actor::new(kind, id)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.id)
    }
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Actor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse()
            .map_err(|e: ContractError| de_error(e.kind(), e.message()))
    }
}

impl JsonSchema for Actor {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Actor")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Who caused the event: `<kind>:<id>`; kind is api_key, user, admin or system.",
            "pattern": "^(api_key|user|admin|system):[!-~]{1,128}$",
            "examples": ["system:settlement-processor"]
        })
    }
}

/// A W3C trace-context `traceparent` value, version 00: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TraceParent(String);

impl TraceParent {
    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TraceParent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('-').collect();
        let hex = |p: &str, len: usize| {
            p.len() == len && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let zero = |p: &str| p.bytes().all(|b| b == b'0');
        match parts.as_slice() {
            ["00", trace, span, flags]
                if hex(trace, 32)
                    && hex(span, 16)
                    && hex(flags, 2)
                    && !zero(trace)
                    && !zero(span) =>
            {
                Ok(TraceParent(s.to_owned()))
            }
            _ => Err(format!(
                "`{s}` is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lowercase, ids not zero)"
            )),
        }
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse()
            .map_err(|e: String| de_error(ContractErrorKind::InvalidValue, e))
    }
}

impl JsonSchema for TraceParent {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("TraceParent")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "W3C trace-context traceparent, version 00.",
            "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_has_a_known_kind_and_an_id() {
        let actor: Actor = "system:settlement-processor".parse().unwrap();
        assert_eq!(actor.kind(), ActorKind::System);
        assert_eq!(actor.to_string(), "system:settlement-processor");
        for bad in ["settlement", "robot:x", "user:", "user:has space", ":x"] {
            assert!(bad.parse::<Actor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_rejects_unknown_fields_and_bad_values() {
        let ok = r#"{"actor":"api_key:key_1","ip_address":"192.168.1.100","user_agent":"MyApp/1.0","request_id":"req_xyz789"}"#;
        let metadata: Metadata = serde_json::from_str(ok).unwrap();
        assert_eq!(metadata.ip_address, Some("192.168.1.100".parse().unwrap()));
        assert!(serde_json::from_str::<Metadata>(r#"{"actor":"user:u","colour":"red"}"#).is_err());
        assert!(
            serde_json::from_str::<Metadata>(r#"{"actor":"user:u","ip_address":"300.1.1.1"}"#)
                .is_err()
        );
        let long = Metadata {
            user_agent: Some("x".repeat(513)),
            ..Metadata::new("user:u".parse().unwrap())
        };
        assert_eq!(long.validate().unwrap_err().path(), "$.user_agent");
        let control = Metadata {
            source: Some("a\nb".into()),
            ..Metadata::new("user:u".parse().unwrap())
        };
        assert!(control.validate().is_err());
    }

    #[test]
    fn traceparent_is_w3c_version_00() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(ok.parse::<TraceParent>().unwrap().as_str(), ok);
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
    }
}
