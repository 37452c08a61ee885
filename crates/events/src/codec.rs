//! Bytes ⇄ [`Envelope`].
//!
//! Guarantees: [`decode`] accepts exactly what the contract allows — size, JSON syntax, fields, types,
//! catalogue, version, ids, money, invariants — upcasts older versions, and otherwise fails with a
//! [`ContractError`] naming the JSON path at fault. [`encode`] writes the canonical form (compact JSON, fields
//! in the spec's order, amounts as decimal strings, prefixed lowercase ids, UTC timestamps with `Z`) of a
//! valid envelope, and fails if it exceeds [`MAX_EVENT_BYTES`]. `decode(encode(e)) == e` for every valid `e`.
//!
//! How: the envelope is parsed with `event_data` kept as raw JSON (the payload's type depends on
//! `event_type` and `event_version`, which may come after it), then the payload is parsed into its versioned
//! struct. The happy path runs plain serde_json; only on failure is the input parsed again with path
//! tracking, so paths cost nothing for valid events.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::envelope::Envelope;
use crate::error::{ContractError, ContractErrorKind, from_serde, json_path};
use crate::event_type::{AggregateType, EventType};
use crate::id::{AggregateId, CorrelationId, EventId};
use crate::metadata::Metadata;
use crate::time::rfc3339;
use crate::{EnvelopeParts, upcast};

/// Largest encoded event: the spec's 1 MB maximum message size, as 1 000 000 bytes. Brokers' limit is
/// usually 1 MiB (1 048 576) for the whole record batch, so the decimal reading leaves room for key, headers
/// and batch overhead.
pub const MAX_EVENT_BYTES: usize = 1_000_000;

/// The envelope as it comes off the wire, before the payload is typed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    event_id: EventId,
    #[serde(borrow)]
    aggregate_id: Cow<'a, str>,
    aggregate_type: AggregateType,
    event_type: EventType,
    event_version: u32,
    #[serde(borrow)]
    event_data: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    timestamp: DateTime<Utc>,
    #[serde(default)]
    correlation_id: Option<CorrelationId>,
    #[serde(default)]
    causation_id: Option<EventId>,
}

/// Decodes, upcasts and validates one event.
pub fn decode(bytes: &[u8]) -> Result<Envelope, ContractError> {
    check_size(bytes.len())?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(error) => locate::<serde::de::IgnoredAny>(bytes, error),
                Ok(_) => not_an_object("$"),
            },
        );
    }
    let raw: RawEnvelope<'_> = match serde_json::from_slice(bytes) {
        Ok(raw) => raw,
        Err(error) => return Err(locate::<RawEnvelope<'_>>(bytes, error)),
    };
    upcast::check_version(raw.event_type, raw.event_version)?;
    let expected = raw.event_type.aggregate_type();
    if raw.aggregate_type != expected {
        return Err(ContractError::new(
            ContractErrorKind::AggregateMismatch,
            "$.aggregate_type",
            format!(
                "{} belongs to the {expected} aggregate, not {}",
                raw.event_type, raw.aggregate_type
            ),
        ));
    }
    let aggregate_id =
        AggregateId::parse(expected, &raw.aggregate_id).map_err(|e| e.at("aggregate_id"))?;
    let metadata: Metadata = parse_object(raw.metadata, "$.metadata")?;
    if !raw.event_data.get().starts_with('{') {
        return Err(not_an_object("$.event_data"));
    }
    let event_data =
        upcast::decode_payload(raw.event_type, raw.event_version, raw.event_data.get())
            .map_err(|e| e.within("$.event_data"))?;
    Envelope::from_parts(EnvelopeParts {
        event_id: raw.event_id,
        aggregate_id,
        event_data,
        metadata,
        timestamp: raw.timestamp,
        correlation_id: raw.correlation_id,
        causation_id: raw.causation_id,
    })
}

/// The `event_type` a record claims, read without validating anything else: which contract's decoder to
/// use for a record of a topic that carries several (the analytics group reads domain events and
/// [`crate::analytics::CheckoutViewed`]). `None` when the bytes are not a JSON object with a string
/// `event_type`.
pub fn peek_event_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        event_type: Option<String>,
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.event_type
}

/// Encodes a valid envelope in canonical form.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, ContractError> {
    envelope.validate()?;
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, envelope).map_err(|e| from_serde(&e, "$".to_owned()))?;
    check_size(out.len())?;
    Ok(out)
}

pub(crate) fn check_size(len: usize) -> Result<(), ContractError> {
    if len > MAX_EVENT_BYTES {
        return Err(ContractError::new(
            ContractErrorKind::TooLarge,
            "$",
            format!("{len} bytes is above the {MAX_EVENT_BYTES}-byte maximum message size"),
        ));
    }
    Ok(())
}

/// serde's derived structs also accept JSON arrays (fields by position); the contract only has objects. The
/// envelope, `metadata` and `event_data` are checked here. Objects nested deeper in a payload (only
/// `SettingsUpdated.changes`) would still be read from a positional array; no producer writes one.
pub(crate) fn not_an_object(path: &str) -> ContractError {
    ContractError::new(ContractErrorKind::WrongType, path, "expected a JSON object")
}

fn parse_object<T: DeserializeOwned>(raw: &RawValue, path: &str) -> Result<T, ContractError> {
    if !raw.get().starts_with('{') {
        return Err(not_an_object(path));
    }
    parse(raw.get()).map_err(|e| e.within(path))
}

/// Parses a payload (or any part) from raw JSON; errors carry `$`-rooted paths within `raw`.
pub(crate) fn parse<T: DeserializeOwned>(raw: &str) -> Result<T, ContractError> {
    serde_json::from_str(raw).map_err(|error| locate::<T>(raw.as_bytes(), error))
}

/// The slow path: parse again as `T`, tracking the path, to say where the first pass failed.
fn locate<'de, T: Deserialize<'de>>(bytes: &'de [u8], error: serde_json::Error) -> ContractError {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(tracked) => from_serde(tracked.inner(), json_path(tracked.path())),
        // The value parsed, so the first pass failed on what follows it.
        Ok(_) => from_serde(&de.end().err().unwrap_or(error), String::from("$")),
    }
}
