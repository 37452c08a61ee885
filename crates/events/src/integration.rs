//! The contract of `crypto-checkout.integration-events` ("External system events", key "Source system"): what a
//! blockchain scanner reports about the outputs paying the addresses it watches (decision 0034).
//!
//! Three record types, each versioned on its own (all at version 1), sharing one shape:
//!
//! ```json
//! {"event_type":"TransactionObserved","event_version":1,"event_id":"evt_…","source":"scanner:tron",
//!  "observed_at":"2026-11-30T10:00:00Z","data":{"output":{"network":"tron","crypto_currency":"USDT",
//!  "transaction_hash":"…","output_index":0,"address":"T…","amount":"16.49"},"block_height":null,"confirmations":0}}
//! ```
//!
//! - `TransactionObserved`: an output paying a watched address was seen, in the mempool (`confirmations` 0, no
//!   `block_height`) or in a block.
//! - `ConfirmationsChanged`: the output's confirmation count changed (up as blocks arrive, down after a
//!   reorganisation the transaction survived, possibly back to 0 in the mempool).
//! - `TransactionDropped`: the output will not confirm — left the mempool unmined, reorganised out and not
//!   re-included, or double spent.
//!
//! Every record is **self-contained**: it names the whole output (network, asset, hash, index, address, amount),
//! so a consumer can act on any of them first — scanners resend, reorder and duplicate. Keyed by `source`, so one
//! scanner's reports keep their order.
//!
//! Guarantees (the records are untrusted input from outside the platform):
//! - [`IntegrationEvent::decode`] accepts exactly that shape, at most [`crate::MAX_EVENT_BYTES`]: unknown,
//!   missing or duplicate fields, an unknown type or version, an asset the network does not carry, a hash or an
//!   address not in the network's format, a non-positive amount or one with more decimals than the asset, more
//!   than [`MAX_CONFIRMATIONS`] confirmations, a block height without confirmations (or the reverse), a source
//!   outside `[a-z][a-z0-9-]{0,31}(:[a-z0-9._-]{1,64})?` are [`ContractError`]s naming the JSON path — schema
//!   errors for the consumer runtime.
//! - [`IntegrationEvent::encode`] validates the same rules and writes the canonical form; `decode(encode(v)) == v`.

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::codec::{check_size, not_an_object, parse};
use crate::error::{ContractError, ContractErrorKind, from_serde};
use crate::headers;
use crate::id::EventId;
use crate::money::{Amount, CryptoAsset};
use crate::payload::payment::check_chain;
use crate::payload::{Address, MAX_CONFIRMATIONS, MAX_DETAILS_CHARS, Network, TransactionHash};
use crate::time::{self, rfc3339};

/// `TransactionObserved`.
pub const TRANSACTION_OBSERVED: &str = "TransactionObserved";
/// `ConfirmationsChanged`.
pub const CONFIRMATIONS_CHANGED: &str = "ConfirmationsChanged";
/// `TransactionDropped`.
pub const TRANSACTION_DROPPED: &str = "TransactionDropped";
/// The record types of the topic, with their current version.
pub const RECORD_TYPES: [(&str, u32); 3] = [
    (TRANSACTION_OBSERVED, 1),
    (CONFIRMATIONS_CHANGED, 1),
    (TRANSACTION_DROPPED, 1),
];
/// The aggregate of the records (the outbox's `aggregate_type`, a header): the chain output.
pub const AGGREGATE_TYPE: &str = "ChainOutput";
/// Highest block height accepted (a bound on untrusted input; chains are at ~10⁸).
pub const MAX_BLOCK_HEIGHT: u64 = 10_000_000_000;
/// Highest output index accepted (log index on EVM chains).
pub const MAX_OUTPUT_INDEX: u32 = 1_000_000;

/// File name of the schema of `record_type` under `crates/events/schemas/`.
pub fn schema_file_name(record_type: &str) -> String {
    format!("{record_type}.v1.schema.json")
}

/// One output of one transaction paying a watched address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainOutput {
    pub network: Network,
    /// The asset transferred (the token for ERC-20/TRC-20 transfers).
    pub crypto_currency: CryptoAsset,
    pub transaction_hash: TransactionHash,
    /// The output's index in the transaction (Bitcoin vout; the transfer's log index on EVM chains and Tron).
    #[schemars(range(max = 1_000_000))]
    pub output_index: u32,
    /// The receiving address.
    pub address: Address,
    /// Amount transferred, exact, in the asset's units.
    pub amount: Amount,
}

impl ChainOutput {
    fn validate(&self) -> Result<(), ContractError> {
        let within = |e: ContractError| e.within("$.data.output");
        check_chain(self.crypto_currency, self.network, &self.transaction_hash).map_err(within)?;
        if self.output_index > MAX_OUTPUT_INDEX {
            return Err(invalid(
                "$.data.output.output_index",
                format!("at most {MAX_OUTPUT_INDEX}"),
            ));
        }
        if let Some(why) = self.address.check(self.network) {
            return Err(invalid("$.data.output.address", why));
        }
        if self.amount.is_zero() {
            return Err(invalid(
                "$.data.output.amount",
                "must be greater than zero".into(),
            ));
        }
        self.amount
            .check_decimals(self.crypto_currency.into())
            .map_err(|e| e.at("amount"))
            .map_err(within)
    }

    /// The output's identity: network, transaction hash, output index.
    pub fn key(&self) -> (Network, &str, u32) {
        (
            self.network,
            self.transaction_hash.as_str(),
            self.output_index,
        )
    }
}

/// The output was seen: in the mempool (`confirmations` 0, no `block_height`) or in a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionObserved {
    pub output: ChainOutput,
    /// Height of the including block; absent (`null`) while in the mempool.
    #[serde(default)]
    pub block_height: Option<u64>,
    /// Blocks on top of (and including) the including block; 0 in the mempool.
    #[schemars(range(max = 10000))]
    pub confirmations: u32,
}

/// The output's confirmation count changed (down after a reorganisation it survived; 0: back in the mempool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationsChanged {
    pub output: ChainOutput,
    #[serde(default)]
    pub block_height: Option<u64>,
    #[schemars(range(max = 10000))]
    pub confirmations: u32,
}

/// Why an output will not confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Left the mempool without being mined.
    Dropped,
    /// A reorganisation removed its block and it was not included again.
    Reorganized,
    /// A conflicting transaction spent the same inputs.
    DoubleSpent,
}

/// The output will not confirm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionDropped {
    pub output: ChainOutput,
    pub reason: DropReason,
    /// Free text, at most 1000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub details: Option<String>,
}

/// What a record reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegrationData {
    TransactionObserved(TransactionObserved),
    ConfirmationsChanged(ConfirmationsChanged),
    TransactionDropped(TransactionDropped),
}

impl IntegrationData {
    /// The record type's name.
    pub fn record_type(&self) -> &'static str {
        match self {
            IntegrationData::TransactionObserved(_) => TRANSACTION_OBSERVED,
            IntegrationData::ConfirmationsChanged(_) => CONFIRMATIONS_CHANGED,
            IntegrationData::TransactionDropped(_) => TRANSACTION_DROPPED,
        }
    }

    /// The output reported on.
    pub fn output(&self) -> &ChainOutput {
        match self {
            IntegrationData::TransactionObserved(o) => &o.output,
            IntegrationData::ConfirmationsChanged(c) => &c.output,
            IntegrationData::TransactionDropped(d) => &d.output,
        }
    }

    /// `(block height, confirmations)` of an observation or a change; `None` for a drop.
    pub fn confirmations(&self) -> Option<(Option<u64>, u32)> {
        match self {
            IntegrationData::TransactionObserved(o) => Some((o.block_height, o.confirmations)),
            IntegrationData::ConfirmationsChanged(c) => Some((c.block_height, c.confirmations)),
            IntegrationData::TransactionDropped(_) => None,
        }
    }

    fn validate(&self) -> Result<(), ContractError> {
        self.output().validate()?;
        if let Some((height, confirmations)) = self.confirmations() {
            if confirmations > MAX_CONFIRMATIONS {
                return Err(invalid(
                    "$.data.confirmations",
                    format!("at most {MAX_CONFIRMATIONS}"),
                ));
            }
            if height.is_some() != (confirmations > 0) {
                return Err(ContractError::new(
                    ContractErrorKind::InvariantViolated,
                    "$.data.block_height",
                    "present exactly when the output has confirmations (absent in the mempool)",
                ));
            }
            if height.is_some_and(|h| h > MAX_BLOCK_HEIGHT) {
                return Err(invalid(
                    "$.data.block_height",
                    format!("at most {MAX_BLOCK_HEIGHT}"),
                ));
            }
        }
        if let IntegrationData::TransactionDropped(d) = self {
            crate::metadata::check_text(d.details.as_deref(), MAX_DETAILS_CHARS, "details")
                .map_err(|e| e.within("$.data"))?;
        }
        Ok(())
    }
}

/// One record of the integration topic (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationEvent {
    /// Unique per report; a scanner resending a report may reuse it or not — consumers rely on the output's
    /// identity, not on this id.
    pub event_id: EventId,
    /// The reporting system, the partition key: `scanner:tron`.
    pub source: String,
    /// When the scanner saw what it reports (its clock, UTC).
    pub observed_at: DateTime<Utc>,
    pub data: IntegrationData,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    event_type: String,
    event_version: u32,
    event_id: EventId,
    source: String,
    #[serde(deserialize_with = "rfc3339::deserialize")]
    observed_at: DateTime<Utc>,
    data: Box<RawValue>,
}

#[derive(Serialize)]
struct WireOut<'a, T: Serialize> {
    event_type: &'static str,
    event_version: u32,
    event_id: EventId,
    source: &'a str,
    observed_at: String,
    data: &'a T,
}

fn invalid(path: &str, message: String) -> ContractError {
    ContractError::new(ContractErrorKind::InvalidValue, path, message)
}

/// Whether `source` names a source system: `[a-z][a-z0-9-]{0,31}`, optionally `:` and `[a-z0-9._-]{1,64}`.
pub fn is_source(source: &str) -> bool {
    let (system, instance) = source
        .split_once(':')
        .map_or((source, None), |(s, i)| (s, Some(i)));
    let mut bytes = system.bytes();
    system.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && instance.is_none_or(|i| {
            (1..=64).contains(&i.len())
                && i.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        })
}

impl IntegrationEvent {
    /// The record type's name.
    pub fn record_type(&self) -> &'static str {
        self.data.record_type()
    }

    /// Checks every rule of the contract.
    pub fn validate(&self) -> Result<(), ContractError> {
        if !is_source(&self.source) {
            return Err(invalid(
                "$.source",
                format!(
                    "`{}` is not a source system ([a-z][a-z0-9-]{{0,31}}, optionally :instance)",
                    self.source
                ),
            ));
        }
        self.data.validate()
    }

    /// Decodes and validates one record.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContractError> {
        check_size(bytes.len())?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ContractError::new(
                ContractErrorKind::MalformedJson,
                "$",
                format!("not UTF-8: {e}"),
            )
        })?;
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => not_an_object("$"),
                Err(_) => parse::<serde::de::IgnoredAny>(text)
                    .err()
                    .unwrap_or_else(|| not_an_object("$")),
            });
        }
        let raw: RawRecord = parse(text)?;
        let Some((_, current)) = RECORD_TYPES.iter().find(|(t, _)| *t == raw.event_type) else {
            return Err(ContractError::new(
                ContractErrorKind::UnknownEventType,
                "$.event_type",
                format!(
                    "`{}` is not a record of {}; expected one of {TRANSACTION_OBSERVED}, {CONFIRMATIONS_CHANGED}, \
                     {TRANSACTION_DROPPED}",
                    raw.event_type,
                    crate::topics::INTEGRATION_EVENTS
                ),
            ));
        };
        if raw.event_version != *current {
            return Err(ContractError::new(
                ContractErrorKind::UnknownVersion,
                "$.event_version",
                format!(
                    "{} version {} is not decoded (accepted: 1..={current})",
                    raw.event_type, raw.event_version
                ),
            ));
        }
        let body = raw.data.get();
        if !body.starts_with('{') {
            return Err(not_an_object("$.data"));
        }
        let within = |e: ContractError| e.within("$.data");
        let data = match raw.event_type.as_str() {
            TRANSACTION_OBSERVED => {
                IntegrationData::TransactionObserved(parse(body).map_err(within)?)
            }
            CONFIRMATIONS_CHANGED => {
                IntegrationData::ConfirmationsChanged(parse(body).map_err(within)?)
            }
            _ => IntegrationData::TransactionDropped(parse(body).map_err(within)?),
        };
        let record = IntegrationEvent {
            event_id: raw.event_id,
            source: raw.source,
            observed_at: raw.observed_at,
            data,
        };
        record.validate()?;
        Ok(record)
    }

    /// Validates and writes the canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ContractError> {
        self.validate()?;
        let mut out = Vec::with_capacity(512);
        let observed_at = time::format_utc(&self.observed_at);
        let result = match &self.data {
            IntegrationData::TransactionObserved(d) => {
                serde_json::to_writer(&mut out, &self.wire(d, observed_at))
            }
            IntegrationData::ConfirmationsChanged(d) => {
                serde_json::to_writer(&mut out, &self.wire(d, observed_at))
            }
            IntegrationData::TransactionDropped(d) => {
                serde_json::to_writer(&mut out, &self.wire(d, observed_at))
            }
        };
        result.map_err(|e| from_serde(&e, "$".to_owned()))?;
        check_size(out.len())?;
        Ok(out)
    }

    fn wire<'a, T: Serialize>(&'a self, data: &'a T, observed_at: String) -> WireOut<'a, T> {
        WireOut {
            event_type: self.record_type(),
            event_version: 1,
            event_id: self.event_id,
            source: &self.source,
            observed_at,
            data,
        }
    }

    /// The Kafka key: the source system (the spec's key of the topic).
    pub fn partition_key(&self) -> String {
        self.source.clone()
    }

    /// The output's identity as text, `network:hash:index` (the aggregate id header).
    pub fn output_id(&self) -> String {
        let (network, hash, index) = self.data.output().key();
        format!("{}:{hash}:{index}", network_name(network))
    }

    /// Kafka headers, named like a domain event's.
    pub fn kafka_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (headers::EVENT_ID, self.event_id.to_string()),
            (headers::EVENT_TYPE, self.record_type().to_owned()),
            (headers::EVENT_VERSION, "1".to_owned()),
            (headers::AGGREGATE_TYPE, AGGREGATE_TYPE.to_owned()),
            (headers::AGGREGATE_ID, self.output_id()),
            (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
        ]
    }
}

/// The wire name of a network (`tron`).
pub fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bitcoin",
        Network::Ethereum => "ethereum",
        Network::Tron => "tron",
        Network::Polygon => "polygon",
    }
}

/// Namespace of payment ids: the payment of a chain output is UUID v5 of `network:hash:index` under it, so the
/// payments service and anyone predicting its events (the flow generator's scanner mode) derive the same id.
/// Never change it.
pub const PAYMENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7b1c_44e2_9a0d_4f53_8c61_2d9e_5a3f_0b17);

/// The payment id of the output `index` of transaction `hash` on `network` (UUID v5 under [`PAYMENT_NAMESPACE`]).
pub fn payment_id(network: Network, hash: &str, index: u32) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &PAYMENT_NAMESPACE,
        format!("{}:{hash}:{index}", network_name(network)).as_bytes(),
    )
}

/// The JSON Schema (draft 2020-12) of one record type of the topic, or `None` for another name.
pub fn record_schema(record_type: &str) -> Option<Schema> {
    let mut generator = crate::schema::generator();
    let data = match record_type {
        TRANSACTION_OBSERVED => generator.subschema_for::<TransactionObserved>(),
        CONFIRMATIONS_CHANGED => generator.subschema_for::<ConfirmationsChanged>(),
        TRANSACTION_DROPPED => generator.subschema_for::<TransactionDropped>(),
        _ => return None,
    };
    let event_id = generator.subschema_for::<EventId>();
    let observed_at = generator.subschema_for::<DateTime<Utc>>();
    let schema = json_schema!({
        "title": format!("{record_type} v1"),
        "description": format!(
            "A blockchain scanner's report on {}, keyed by source. Cross-field rules (the network carries the \
             asset, the address and hash fit the network, decimals, block height present exactly with \
             confirmations) are the decoder's.",
            crate::topics::INTEGRATION_EVENTS
        ),
        "type": "object",
        "additionalProperties": false,
        "required": ["event_type", "event_version", "event_id", "source", "observed_at", "data"],
        "properties": {
            "event_type": { "const": record_type },
            "event_version": { "const": 1 },
            "event_id": event_id,
            "source": { "type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}(:[a-z0-9._-]{1,64})?$" },
            "observed_at": observed_at,
            "data": data
        }
    });
    Some(crate::schema::standalone(
        schema,
        &schema_file_name(record_type),
        generator.take_definitions(true),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples;

    #[test]
    fn the_examples_round_trip_and_are_keyed_by_their_source() {
        for record in examples::integration_events() {
            let bytes = record.encode().unwrap();
            assert_eq!(IntegrationEvent::decode(&bytes).unwrap(), record);
            assert_eq!(record.partition_key(), "scanner:tron");
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.starts_with(&format!(
                    r#"{{"event_type":"{}","event_version":1,"event_id":"evt_"#,
                    record.record_type()
                )),
                "{text}"
            );
            assert!(record_schema(record.record_type()).is_some());
        }
    }

    #[test]
    fn refuses_what_the_contract_does_not_say_naming_the_path() {
        let observed = &examples::integration_events()[0];
        let good = String::from_utf8(observed.encode().unwrap()).unwrap();
        let address = examples::TRON_ADDRESS;
        for (bad, kind, path) in [
            (
                good.replace("\"event_version\":1", "\"event_version\":2"),
                ContractErrorKind::UnknownVersion,
                "$.event_version",
            ),
            (
                good.replace("TransactionObserved", "TransactionSeen"),
                ContractErrorKind::UnknownEventType,
                "$.event_type",
            ),
            (
                good.replace("\"network\":\"tron\"", "\"network\":\"bitcoin\""),
                ContractErrorKind::InvalidValue,
                "$.data.output.network",
            ),
            (
                good.replace(address, "0x52908400098527886e0f7030069857d2e4169ee7"),
                ContractErrorKind::InvalidValue,
                "$.data.output.address",
            ),
            (
                good.replace("\"amount\":\"16.49\"", "\"amount\":\"16.4900001\""),
                ContractErrorKind::TooManyDecimals,
                "$.data.output.amount",
            ),
            (
                good.replace("\"amount\":\"16.49\"", "\"amount\":\"0\""),
                ContractErrorKind::InvalidValue,
                "$.data.output.amount",
            ),
            (
                good.replace("\"confirmations\":0", "\"confirmations\":3"),
                ContractErrorKind::InvariantViolated,
                "$.data.block_height",
            ),
            (
                good.replace("\"confirmations\":0", "\"confirmations\":99999"),
                ContractErrorKind::InvalidValue,
                "$.data.confirmations",
            ),
            (
                good.replace("scanner:tron", "Scanner Tron"),
                ContractErrorKind::InvalidValue,
                "$.source",
            ),
            (
                good.replacen('{', "{\"extra\":1,", 1),
                ContractErrorKind::UnknownField,
                "$.extra",
            ),
            (
                good.replace(
                    "\"output_index\":0",
                    "\"output_index\":0,\"output_index\":1",
                ),
                ContractErrorKind::DuplicateField,
                "$.data.output.output_index",
            ),
        ] {
            let err = IntegrationEvent::decode(bad.as_bytes()).expect_err(&bad);
            assert_eq!((err.kind(), err.path()), (kind, path), "{bad}: {err}");
        }
        assert!(IntegrationEvent::decode(b"[1]").is_err());
        assert!(IntegrationEvent::decode(&vec![b' '; crate::MAX_EVENT_BYTES + 1]).is_err());
    }

    #[test]
    fn sources_follow_their_pattern() {
        for ok in ["scanner", "scanner:tron", "scanner-2:eth.main_1"] {
            assert!(is_source(ok), "{ok}");
        }
        for bad in [
            "",
            "Scanner",
            "scanner:",
            "scanner:TRON",
            "1scanner",
            "a:b:c",
        ] {
            assert!(!is_source(bad), "{bad}");
        }
    }
}
