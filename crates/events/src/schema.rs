//! JSON Schemas (draft 2020-12) of every event, generated from the Rust types.
//!
//! Guarantees: [`event_schema`] describes the envelope of one version of one event type — `event_type`,
//! `aggregate_type` and `event_version` as constants, `aggregate_id` with its aggregate's prefix, and the
//! payload's schema derived from its struct; [`combined_schema`] accepts any decodable event. The files under
//! `crates/events/schemas/` are the output of [`all_schema_files`]; a test fails when they are stale.
//!
//! The schemas say what JSON Schema can: structure, types, formats, enums, patterns, bounds. Rules that span
//! fields — decimals per currency, fee arithmetic, confirmation counts — are the decoder's alone; a document
//! that passes the schema can still be refused by [`crate::decode`], never the other way round for canonical
//! output.

use chrono::{DateTime, Utc};
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::event_type::{CATALOGUE, EventType};
use crate::id::{CorrelationId, EventId};
use crate::metadata::Metadata;
use crate::payload::EventData;

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

pub(crate) fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// Schemas of the payload and aggregate id of `version` of `event_type`, or `None` if it is not decodable.
fn parts(
    generator: &mut SchemaGenerator,
    event_type: EventType,
    version: u32,
) -> Option<(Schema, Schema)> {
    let spec = event_type.spec();
    if version == spec.current_version {
        return Some(EventData::payload_schemas(event_type, generator));
    }
    if !(spec.oldest_version..spec.current_version).contains(&version) {
        return None;
    }
    crate::upcast::legacy_schemas(event_type, version, generator)
}

fn envelope(
    generator: &mut SchemaGenerator,
    event_type: EventType,
    version: u32,
) -> Option<Schema> {
    let (payload, aggregate_id) = parts(generator, event_type, version)?;
    let event_id = generator.subschema_for::<EventId>();
    let correlation_id = generator.subschema_for::<CorrelationId>();
    let metadata = generator.subschema_for::<Metadata>();
    let mut timestamp = generator.subschema_for::<DateTime<Utc>>();
    timestamp.insert(
        "description".into(),
        "RFC 3339 in UTC (`Z` or `+00:00`).".into(),
    );
    let aggregate = event_type.aggregate_type();
    Some(json_schema!({
        "title": format!("{event_type} v{version}"),
        "description": format!(
            "{event_type} event, version {version}, of the {aggregate} aggregate; partitioned by {:?}.",
            aggregate.partition_key()
        ),
        "type": "object",
        "additionalProperties": false,
        "required": [
            "event_id", "aggregate_id", "aggregate_type", "event_type", "event_version",
            "event_data", "metadata", "timestamp"
        ],
        "properties": {
            "event_id": event_id.clone(),
            "aggregate_id": aggregate_id,
            "aggregate_type": { "const": aggregate.as_str() },
            "event_type": { "const": event_type.as_str() },
            "event_version": { "const": version },
            "event_data": payload,
            "metadata": metadata,
            "timestamp": timestamp,
            "correlation_id": correlation_id,
            "causation_id": event_id
        }
    }))
}

fn with_root(mut schema: Schema, id: &str, definitions: Map<String, Value>) -> Schema {
    let mut root = Map::new();
    root.insert("$schema".into(), DRAFT_2020_12.into());
    root.insert("$id".into(), id.into());
    root.append(schema.ensure_object());
    if !definitions.is_empty() {
        root.insert("$defs".into(), Value::Object(definitions));
    }
    Schema::from(root)
}

/// A schema as a standalone document with its `$id` and definitions (for the other record contracts).
pub(crate) fn standalone(schema: Schema, id: &str, definitions: Map<String, Value>) -> Schema {
    with_root(schema, id, definitions)
}

/// File name of the schema of `version` of `event_type`.
pub fn schema_file_name(event_type: EventType, version: u32) -> String {
    format!("{event_type}.v{version}.schema.json")
}

/// File name of [`combined_schema`].
pub const COMBINED_SCHEMA_FILE: &str = "event.schema.json";

/// The standalone schema of `version` of `event_type`, or `None` if that version is not decodable.
pub fn event_schema(event_type: EventType, version: u32) -> Option<Schema> {
    let mut generator = generator();
    let schema = envelope(&mut generator, event_type, version)?;
    let definitions = generator.take_definitions(true);
    Some(with_root(
        schema,
        &schema_file_name(event_type, version),
        definitions,
    ))
}

/// Every decodable (event type, version) pair, in catalogue order.
pub fn decodable_versions() -> impl Iterator<Item = (EventType, u32)> {
    CATALOGUE
        .iter()
        .flat_map(|spec| (spec.oldest_version..=spec.current_version).map(|v| (spec.event_type, v)))
}

/// One schema accepting any decodable event: `oneOf` the per-event schemas.
pub fn combined_schema() -> Schema {
    let mut generator = generator();
    let mut envelopes = Map::new();
    let mut refs = Vec::new();
    for (event_type, version) in decodable_versions() {
        let name = format!("{event_type}EnvelopeV{version}");
        let schema = envelope(&mut generator, event_type, version)
            .expect("catalogue versions are decodable");
        refs.push(json_schema!({ "$ref": format!("#/$defs/{name}") }));
        envelopes.insert(name, schema.to_value());
    }
    let mut definitions = generator.take_definitions(true);
    for (name, schema) in envelopes {
        assert!(
            definitions.insert(name.clone(), schema).is_none(),
            "definition name clash: {name}"
        );
    }
    let root = json_schema!({
        "title": "Crypto checkout domain event",
        "description": "Any event on crypto-checkout.domain-events, in any version the decoder accepts.",
        "oneOf": refs
    });
    with_root(root, COMBINED_SCHEMA_FILE, definitions)
}

/// Every schema file as (file name, schema): one per decodable version, the combined one, then the analytics
/// records' ([`crate::analytics::record_schema`]), the notification record's and the integration topic's.
pub fn all_schema_files() -> Vec<(String, Schema)> {
    let mut files: Vec<_> = decodable_versions()
        .map(|(t, v)| {
            (
                schema_file_name(t, v),
                event_schema(t, v).expect("catalogue versions are decodable"),
            )
        })
        .collect();
    files.push((COMBINED_SCHEMA_FILE.to_owned(), combined_schema()));
    for (record_type, _) in crate::analytics::RECORD_TYPES {
        files.push((
            crate::analytics::schema_file_name(record_type),
            crate::analytics::record_schema(record_type).expect("a record type of the topic"),
        ));
    }
    files.push((
        crate::notification::NOTIFICATION_REQUESTED_SCHEMA_FILE.to_owned(),
        crate::notification::notification_requested_schema(),
    ));
    for (record_type, _) in crate::integration::RECORD_TYPES {
        files.push((
            crate::integration::schema_file_name(record_type),
            crate::integration::record_schema(record_type).expect("a record type of the topic"),
        ));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_schema_pins_its_type_and_version() {
        for (event_type, version) in decodable_versions() {
            let schema = event_schema(event_type, version).unwrap();
            assert_eq!(
                schema.pointer("/properties/event_type/const"),
                Some(&Value::from(event_type.as_str()))
            );
            assert_eq!(
                schema.pointer("/properties/event_version/const"),
                Some(&Value::from(version))
            );
            assert_eq!(schema.get("$schema"), Some(&Value::from(DRAFT_2020_12)));
        }
        assert!(event_schema(EventType::InvoiceCreated, 3).is_none());
        assert!(event_schema(EventType::MerchantSuspended, 0).is_none());
    }

    #[test]
    fn combined_schema_references_every_version() {
        let schema = combined_schema();
        let one_of = schema.get("oneOf").and_then(Value::as_array).unwrap();
        assert_eq!(one_of.len(), decodable_versions().count());
        assert!(
            schema
                .pointer("/$defs/MerchantSuspendedEnvelopeV1")
                .is_some()
        );
        assert!(
            schema
                .pointer("/$defs/MerchantSuspendedEnvelopeV2")
                .is_some()
        );
    }
}
