//! The committed JSON Schemas are current, valid draft 2020-12, and agree with the codec.
//!
//! To regenerate after changing a payload: `UPDATE_SCHEMAS=1 cargo test -p events --test it schemas`.

use std::path::PathBuf;
use std::sync::LazyLock;

use events::schema::{COMBINED_SCHEMA_FILE, all_schema_files, event_schema, schema_file_name};
use events::{EventType, encode, examples};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::helpers::example_json;
use crate::strategies::envelope;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

#[test]
fn committed_schemas_are_up_to_date() {
    let dir = schema_dir();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let files = all_schema_files();
    let mut stale = Vec::new();
    for (name, schema) in &files {
        let path = dir.join(name);
        let generated = schema.as_value();
        let committed: Option<Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        // Compared as JSON values, so key order (serde_json's `preserve_order`) does not matter.
        if committed.as_ref() != Some(generated) {
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(generated).unwrap() + "\n",
                )
                .unwrap();
            } else {
                stale.push(name.clone());
            }
        }
    }
    let expected: Vec<_> = files.iter().map(|(name, _)| name.clone()).collect();
    let mut extra: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json") && !expected.contains(name))
        .collect();
    extra.sort();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "schemas under {} are stale {stale:?} or unexpected {extra:?}; run UPDATE_SCHEMAS=1 cargo test -p events --test it schemas (and delete unexpected files)",
        dir.display()
    );
}

#[test]
fn every_schema_is_valid_draft_2020_12() {
    for (name, schema) in all_schema_files() {
        if let Err(error) = jsonschema::meta::validate(schema.as_value()) {
            panic!("{name}: {error}");
        }
        assert_eq!(
            schema.get("$schema"),
            Some(&json!("https://json-schema.org/draft/2020-12/schema"))
        );
    }
}

/// Compiled validators: one per (type, current version), and the combined one.
struct Validators {
    per_type: Vec<(EventType, jsonschema::Validator)>,
    combined: jsonschema::Validator,
}

static VALIDATORS: LazyLock<Validators> = LazyLock::new(|| Validators {
    per_type: EventType::ALL
        .iter()
        .map(|t| {
            let schema = event_schema(*t, t.current_version()).unwrap();
            (*t, jsonschema::validator_for(schema.as_value()).unwrap())
        })
        .collect(),
    combined: jsonschema::validator_for(events::schema::combined_schema().as_value()).unwrap(),
});

fn validator(event_type: EventType) -> &'static jsonschema::Validator {
    &VALIDATORS
        .per_type
        .iter()
        .find(|(t, _)| *t == event_type)
        .unwrap()
        .1
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn examples_validate_against_their_schema_and_the_combined_one() {
    for event_type in EventType::ALL {
        let json = example_json(*event_type);
        assert_eq!(
            schema_errors(validator(*event_type), &json),
            Vec::<String>::new(),
            "{event_type}"
        );
        assert_eq!(
            schema_errors(&VALIDATORS.combined, &json),
            Vec::<String>::new(),
            "{event_type}"
        );
    }
    let file = schema_file_name(EventType::InvoiceCreated, 1);
    assert!(schema_dir().join(file).exists());
    assert!(schema_dir().join(COMBINED_SCHEMA_FILE).exists());
}

#[test]
fn the_checkout_viewed_example_validates_and_the_schema_refuses_what_the_decoder_refuses() {
    let validator =
        jsonschema::validator_for(events::analytics::checkout_viewed_schema().as_value()).unwrap();
    let view = examples::checkout_viewed();
    let json: Value = serde_json::from_slice(&view.encode().unwrap()).unwrap();
    assert_eq!(schema_errors(&validator, &json), Vec::<String>::new());
    assert!(!VALIDATORS.combined.is_valid(&json), "not a domain event");
    for (field, value) in [
        ("event_version", json!(2)),
        ("event_type", json!("InvoiceCreated")),
        (
            "merchant_id",
            json!("inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
        ),
        ("extra", json!(1)),
    ] {
        let mut bad = json.clone();
        bad[field] = value;
        assert!(!validator.is_valid(&bad), "{field}");
        assert!(
            events::CheckoutViewed::decode(bad.to_string().as_bytes()).is_err(),
            "{field}"
        );
    }
    assert!(
        schema_dir()
            .join(events::analytics::CHECKOUT_VIEWED_SCHEMA_FILE)
            .exists()
    );
}

#[test]
fn the_notification_example_validates_and_the_schema_refuses_what_the_decoder_refuses() {
    let validator =
        jsonschema::validator_for(events::notification::notification_requested_schema().as_value())
            .unwrap();
    let request = examples::notification_requested();
    let json: Value = serde_json::from_slice(&request.encode().unwrap()).unwrap();
    assert_eq!(schema_errors(&validator, &json), Vec::<String>::new());
    assert!(!VALIDATORS.combined.is_valid(&json), "not a domain event");
    for (field, value) in [
        ("event_version", json!(2)),
        ("event_type", json!("InvoiceCreated")),
        ("channel", json!("fax")),
        ("template", json!("Bad Name")),
        ("locale", json!("english")),
        ("parameters", json!({"amount": 12})),
        (
            "notification_id",
            json!("evt_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
        ),
        ("extra", json!(1)),
    ] {
        let mut bad = json.clone();
        bad[field] = value;
        assert!(!validator.is_valid(&bad), "{field}");
        assert!(
            events::NotificationRequested::decode(bad.to_string().as_bytes()).is_err(),
            "{field}"
        );
    }
    assert!(
        schema_dir()
            .join(events::notification::NOTIFICATION_REQUESTED_SCHEMA_FILE)
            .exists()
    );
}

#[test]
fn the_integration_examples_validate_and_the_schemas_refuse_what_the_decoder_refuses() {
    for record in examples::integration_events() {
        let schema = events::integration::record_schema(record.record_type()).unwrap();
        let validator = jsonschema::validator_for(schema.as_value()).unwrap();
        let json: Value = serde_json::from_slice(&record.encode().unwrap()).unwrap();
        assert_eq!(schema_errors(&validator, &json), Vec::<String>::new());
        assert!(!VALIDATORS.combined.is_valid(&json), "not a domain event");
        for (pointer, value) in [
            ("/event_version", json!(2)),
            ("/event_type", json!("InvoiceCreated")),
            ("/source", json!("Scanner Tron")),
            ("/data/output/network", json!("dogechain")),
            ("/data/output/amount", json!("-1")),
            ("/data/output/address", json!("short")),
            ("/extra", json!(1)),
        ] {
            let mut bad = json.clone();
            match bad.pointer_mut(pointer) {
                Some(slot) => *slot = value,
                None => bad["extra"] = value,
            }
            assert!(!validator.is_valid(&bad), "{pointer}");
            assert!(
                events::IntegrationEvent::decode(bad.to_string().as_bytes()).is_err(),
                "{pointer}"
            );
        }
        assert!(
            schema_dir()
                .join(events::integration::schema_file_name(record.record_type()))
                .exists()
        );
    }
}

#[test]
fn a_version_1_suspension_validates_against_the_combined_schema() {
    let mut v1 = example_json(EventType::MerchantSuspended);
    v1["event_version"] = json!(1);
    v1["event_data"] =
        json!({ "reason": "repeated underpayments", "suspended_at": "2025-01-16T10:00:00Z" });
    assert!(VALIDATORS.combined.is_valid(&v1));
    assert!(
        !validator(EventType::MerchantSuspended).is_valid(&v1),
        "the current schema is version 2"
    );
}

#[test]
fn schemas_refuse_what_the_decoder_refuses_structurally() {
    let invoice = example_json(EventType::InvoiceCreated);
    let check = validator(EventType::InvoiceCreated);
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "unknown payload field",
            Box::new(|v| v["event_data"]["discount"] = json!("1")),
        ),
        (
            "unknown envelope field",
            Box::new(|v| v["schema"] = json!(1)),
        ),
        (
            "missing metadata",
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("metadata"))),
        ),
        (
            "other event type",
            Box::new(|v| v["event_type"] = json!("InvoicePaid")),
        ),
        ("other version", Box::new(|v| v["event_version"] = json!(3))),
        (
            "other aggregate type",
            Box::new(|v| v["aggregate_type"] = json!("Merchant")),
        ),
        (
            "merchant id as aggregate",
            Box::new(|v| v["aggregate_id"] = v["event_data"]["merchant_id"].clone()),
        ),
        (
            "amount with a sign",
            Box::new(|v| v["event_data"]["total_amount"] = json!("-1")),
        ),
        (
            "unknown currency",
            Box::new(|v| v["event_data"]["currency"] = json!("XYZ")),
        ),
        (
            "unknown asset",
            Box::new(|v| v["event_data"]["crypto_currency"] = json!("DOGE")),
        ),
        (
            "wrong version type",
            Box::new(|v| v["event_version"] = json!("1")),
        ),
    ];
    for (name, mutate) in mutations {
        let mut mutated = invoice.clone();
        mutate(&mut mutated);
        assert!(!check.is_valid(&mutated), "schema accepted: {name}");
        assert!(
            events::decode(mutated.to_string().as_bytes()).is_err(),
            "decoder accepted: {name}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Canonical output of any valid event validates: the schema never refuses what the encoder writes.
    #[test]
    fn canonical_output_validates(
        e in proptest::sample::select(EventType::ALL.to_vec()).prop_flat_map(envelope)
    ) {
        let json: Value = serde_json::from_slice(&encode(&e).unwrap()).unwrap();
        prop_assert_eq!(schema_errors(validator(e.event_type()), &json), Vec::<String>::new());
        prop_assert!(VALIDATORS.combined.is_valid(&json));
    }
}

#[test]
fn examples_module_and_schema_files_cover_the_same_types() {
    let files: Vec<_> = all_schema_files()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for envelope in examples::all() {
        assert!(files.contains(&schema_file_name(
            envelope.event_type(),
            envelope.event_version()
        )));
    }
}

#[test]
fn the_checkout_page_examples_validate_and_the_schemas_refuse_what_the_decoder_refuses() {
    for record in examples::analytics_events() {
        let schema = events::analytics::record_schema(record.event_type()).unwrap();
        let validator = jsonschema::validator_for(schema.as_value()).unwrap();
        let json: Value = serde_json::from_slice(&record.encode().unwrap()).unwrap();
        assert_eq!(
            schema_errors(&validator, &json),
            Vec::<String>::new(),
            "{}",
            record.event_type()
        );
        assert!(!VALIDATORS.combined.is_valid(&json), "not a domain event");
        let mut bads = vec![
            ("event_version", json!(2)),
            ("event_type", json!("InvoiceCreated")),
            (
                "invoice_id",
                json!("mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
            ),
            ("extra", json!(1)),
        ];
        match record {
            events::AnalyticsEvent::MethodChosen(_) => {
                bads.push(("crypto_currency", json!("DOGE")));
                bads.push(("network", json!("solana")));
            }
            events::AnalyticsEvent::Abandoned(_) => {
                bads.push(("stage", json!("paying")));
                bads.push(("reason", json!("bored")));
            }
            events::AnalyticsEvent::Viewed(_) => {}
        }
        for (field, value) in bads {
            let mut bad = json.clone();
            bad[field] = value;
            assert!(!validator.is_valid(&bad), "{field}");
            assert!(
                events::AnalyticsEvent::decode(bad.to_string().as_bytes()).is_err(),
                "{field}"
            );
        }
        assert!(
            schema_dir()
                .join(events::analytics::schema_file_name(record.event_type()))
                .exists()
        );
    }
}
