//! The spec's examples, and every rejection the contract promises, through `decode`/`encode`.

use events::money::{Amount, CryptoAsset, Decimal};
use events::payload::{InvoicePaid, SettlementFailureReason, SuspensionReason};
use events::{
    AggregateType, ContractErrorKind as Kind, Envelope, EventData, EventType, MAX_EVENT_BYTES,
    PaymentId, decode, encode, examples, headers, topics,
};
use serde_json::{Value, json};

use crate::helpers::{assert_rejected, decode_value, equivalent, example_json, number};

const EVT_123: &str = "evt_0194685e-4b00-7c4e-8a21-6f3b9d2c1e01";
const EVT_456: &str = "evt_0194685e-4b00-7c4e-8a21-6f3b9d2c1e02";
const INV_456: &str = "inv_0194685e-7a10-7d2f-9b43-2c8e5f1a3b02";
const MER_789: &str = "mer_0194685e-7a10-7d2f-9b43-2c8e5f1a3b03";
const SET_789: &str = "set_0194685e-7a10-7d2f-9b43-2c8e5f1a3b04";
const CORR_ABC123: &str = "corr_0194685e-7a10-7d2f-9b43-2c8e5f1a3b05";

/// The spec's InvoiceCreated example, ids made valid, nothing else changed.
fn spec_invoice_created() -> Value {
    json!({
      "event_id": EVT_123,
      "aggregate_id": INV_456,
      "aggregate_type": "Invoice",
      "event_type": "InvoiceCreated",
      "event_version": 1,
      "event_data": {
        "merchant_id": MER_789,
        "total_amount": number("16.49"),
        "currency": "USD",
        "crypto_amount": number("16.49"),
        "crypto_currency": "USDT",
        "expires_at": "2025-01-15T10:30:00Z"
      },
      "metadata": {
        "actor": "api_key:sk_live_abc123",
        "ip_address": "192.168.1.100",
        "user_agent": "MyApp/1.0",
        "request_id": "req_xyz789"
      },
      "timestamp": "2025-01-15T10:00:00Z",
      "correlation_id": CORR_ABC123
    })
}

/// The spec's SettlementCompleted example, ids made valid, nothing else changed.
fn spec_settlement_completed() -> Value {
    json!({
      "event_id": EVT_456,
      "aggregate_id": SET_789,
      "aggregate_type": "Settlement",
      "event_type": "SettlementCompleted",
      "event_version": 1,
      "event_data": {
        "invoice_id": INV_456,
        "merchant_id": MER_789,
        "gross_amount": number("16.49"),
        "platform_fee_amount": number("0.16"),
        "net_amount": number("16.33"),
        "fee_percentage": number("1.0"),
        "settled_at": "2025-01-15T10:18:30Z"
      },
      "metadata": {
        "actor": "system:settlement-processor",
        "source": "payment-confirmation"
      },
      "timestamp": "2025-01-15T10:18:30Z",
      "causation_id": EVT_123
    })
}

#[test]
fn the_specs_invoice_created_example_decodes_and_re_encodes_equivalently() {
    let spec = spec_invoice_created();
    let envelope = decode_value(&spec).unwrap();
    let EventData::InvoiceCreated(created) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(created.total_amount.as_decimal(), Decimal::new(1649, 2));
    assert_eq!(created.crypto_currency, CryptoAsset::Usdt);
    assert_eq!(envelope.partition_key(), INV_456);

    // Version 1 upcasts to version 2 without a deposit address and is written as version 2 (decision 0034).
    assert_eq!(created.deposit, None);
    let encoded: Value = serde_json::from_slice(&encode(&envelope).unwrap()).unwrap();
    let spec = set(spec, "/event_version", json!(2));
    assert!(equivalent(&spec, &encoded), "{spec}\n{encoded}");
    assert_eq!(encoded["event_data"]["total_amount"], json!("16.49"));
    assert_eq!(decode_value(&encoded).unwrap(), envelope);
}

#[test]
fn the_specs_settlement_example_needs_a_currency_and_then_holds_exactly() {
    // The spec's example has no currency: decimals and fee rounding cannot be checked without one.
    let mut spec = spec_settlement_completed();
    assert_rejected(&spec, Kind::MissingField, "$.event_data.currency");

    spec["event_data"]["currency"] = json!("USD");
    let envelope = decode_value(&spec).unwrap();
    let EventData::SettlementCompleted(settled) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(settled.platform_fee_amount.to_string(), "0.16");
    assert_eq!(settled.net_amount.to_string(), "16.33");
    assert_eq!(envelope.partition_key(), MER_789);
    assert_eq!(envelope.causation_id().unwrap().to_string(), EVT_123);

    let encoded: Value = serde_json::from_slice(&encode(&envelope).unwrap()).unwrap();
    assert!(equivalent(&spec, &encoded), "{spec}\n{encoded}");
    assert_eq!(decode_value(&encoded).unwrap(), envelope);
}

/// Sets the value at a `/`-separated pointer (creating nothing).
fn set(mut value: Value, pointer: &str, new: Value) -> Value {
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = new;
    value
}

fn remove(mut value: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    value
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .expect("field exists");
    value
}

#[test]
fn malformed_json_is_rejected() {
    let trailing = format!("{}}}", example_json(EventType::InvoiceCreated));
    for bad in [
        &b"{\"event_id\":"[..],
        b"not json",
        b"",
        trailing.as_bytes(),
        b"\xff\xfe",
        b"{\"event_id\":\"\xff\"}",
    ] {
        let err = decode(bad).unwrap_err();
        assert_eq!(
            err.kind(),
            Kind::MalformedJson,
            "{:?}: {err}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn missing_required_fields_are_named() {
    let invoice = example_json(EventType::InvoiceCreated);
    for field in [
        "event_id",
        "aggregate_id",
        "aggregate_type",
        "event_type",
        "event_version",
        "event_data",
        "metadata",
        "timestamp",
    ] {
        assert_rejected(
            &remove(invoice.clone(), &format!("/{field}")),
            Kind::MissingField,
            &format!("$.{field}"),
        );
    }
    assert_rejected(
        &remove(invoice.clone(), "/event_data/merchant_id"),
        Kind::MissingField,
        "$.event_data.merchant_id",
    );
    assert_rejected(
        &remove(invoice, "/metadata/actor"),
        Kind::MissingField,
        "$.metadata.actor",
    );
}

#[test]
fn optional_ids_may_be_absent_or_null() {
    let invoice = example_json(EventType::InvoiceCreated);
    let without = remove(invoice.clone(), "/correlation_id");
    assert_eq!(decode_value(&without).unwrap().correlation_id(), None);
    let null = set(invoice, "/correlation_id", Value::Null);
    assert_eq!(decode_value(&null).unwrap().correlation_id(), None);
}

#[test]
fn wrong_field_types_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(invoice.clone(), "/event_version", json!("1")),
        Kind::WrongType,
        "$.event_version",
    );
    assert_rejected(
        &set(invoice.clone(), "/event_data/total_amount", json!(true)),
        Kind::WrongType,
        "$.event_data.total_amount",
    );
    assert_rejected(
        &set(invoice.clone(), "/event_data", json!([])),
        Kind::WrongType,
        "$.event_data",
    );
    // serde would read a struct from an array of its fields by position; the contract has only objects.
    let positional = json!(
        invoice["event_data"]
            .as_object()
            .unwrap()
            .values()
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_rejected(
        &set(invoice.clone(), "/event_data", positional),
        Kind::WrongType,
        "$.event_data",
    );
    let metadata = json!([invoice["metadata"]["actor"].clone()]);
    assert_rejected(
        &set(invoice.clone(), "/metadata", metadata),
        Kind::WrongType,
        "$.metadata",
    );
    let whole: Vec<Value> = invoice.as_object().unwrap().values().cloned().collect();
    assert_rejected(&json!(whole), Kind::WrongType, "$");
    assert_rejected(
        &set(invoice, "/metadata", json!("x")),
        Kind::WrongType,
        "$.metadata",
    );
    let confirming = example_json(EventType::PaymentConfirming);
    assert_rejected(
        &set(confirming.clone(), "/event_data/confirmations", json!(-1)),
        Kind::InvalidValue,
        "$.event_data.confirmations",
    );
    assert_rejected(
        &set(confirming, "/event_data/confirmations", number("1.5")),
        Kind::WrongType,
        "$.event_data.confirmations",
    );
}

#[test]
fn unknown_fields_are_rejected_not_dropped() {
    let invoice = example_json(EventType::InvoiceCreated);
    let mut extra = invoice.clone();
    extra["event_data"]["discount"] = json!("1");
    assert_rejected(&extra, Kind::UnknownField, "$.event_data.discount");
    let mut top = invoice;
    top["schema"] = json!("x");
    assert_rejected(&top, Kind::UnknownField, "$.schema");
}

#[test]
fn duplicate_fields_are_rejected() {
    let text = example_json(EventType::InvoiceCreated).to_string();
    let doubled = text.replacen(
        "\"currency\":\"USD\"",
        "\"currency\":\"USD\",\"currency\":\"EUR\"",
        1,
    );
    let err = decode(doubled.as_bytes()).unwrap_err();
    assert_eq!(
        (err.kind(), err.path()),
        (Kind::DuplicateField, "$.event_data.currency"),
        "{err}"
    );
}

#[test]
fn unknown_event_types_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(invoice.clone(), "/event_type", json!("InvoiceDeleted")),
        Kind::UnknownEventType,
        "$.event_type",
    );
    assert_rejected(
        &set(invoice, "/event_type", json!("invoice_created")),
        Kind::UnknownEventType,
        "$.event_type",
    );
}

#[test]
fn unknown_versions_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    for version in [0, 3, 99] {
        assert_rejected(
            &set(invoice.clone(), "/event_version", json!(version)),
            Kind::UnknownVersion,
            "$.event_version",
        );
    }
    let suspended = example_json(EventType::MerchantSuspended);
    assert_rejected(
        &set(suspended, "/event_version", json!(3)),
        Kind::UnknownVersion,
        "$.event_version",
    );
}

#[test]
fn aggregate_type_must_match_the_event_type() {
    for event_type in EventType::ALL {
        let json = example_json(*event_type);
        let other = AggregateType::ALL
            .into_iter()
            .find(|a| *a != event_type.aggregate_type())
            .unwrap();
        assert_rejected(
            &set(json, "/aggregate_type", json!(other.as_str())),
            Kind::AggregateMismatch,
            "$.aggregate_type",
        );
    }
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(invoice, "/aggregate_type", json!("Order")),
        Kind::InvalidValue,
        "$.aggregate_type",
    );
}

#[test]
fn ids_with_another_kinds_prefix_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    let uuid = "0194685e-7a10-7d2f-9b43-2c8e5f1a3b02";
    assert_rejected(
        &set(
            invoice.clone(),
            "/aggregate_id",
            json!(format!("mer_{uuid}")),
        ),
        Kind::WrongIdPrefix,
        "$.aggregate_id",
    );
    assert_rejected(
        &set(
            invoice.clone(),
            "/event_data/merchant_id",
            json!(format!("inv_{uuid}")),
        ),
        Kind::WrongIdPrefix,
        "$.event_data.merchant_id",
    );
    assert_rejected(
        &set(invoice.clone(), "/event_id", json!(format!("set_{uuid}"))),
        Kind::WrongIdPrefix,
        "$.event_id",
    );
    assert_rejected(
        &set(invoice.clone(), "/event_id", json!("evt_123")),
        Kind::InvalidId,
        "$.event_id",
    );
    let settlement = example_json(EventType::SettlementCompleted);
    assert_rejected(
        &set(settlement, "/causation_id", json!(format!("corr_{uuid}"))),
        Kind::WrongIdPrefix,
        "$.causation_id",
    );
    let paid = example_json(EventType::InvoicePaid);
    assert_rejected(
        &set(
            paid,
            "/event_data/payment_ids/0",
            json!(format!("inv_{uuid}")),
        ),
        Kind::WrongIdPrefix,
        "$.event_data.payment_ids[0]",
    );
}

#[test]
fn bare_uuids_are_accepted_and_prefixed_on_output() {
    let invoice = example_json(EventType::InvoiceCreated);
    let bare = |v: &Value| {
        json!(
            v.as_str()
                .unwrap()
                .split_once('_')
                .unwrap()
                .1
                .to_uppercase()
        )
    };
    let mut relaxed = invoice.clone();
    for pointer in [
        "/event_id",
        "/aggregate_id",
        "/event_data/merchant_id",
        "/correlation_id",
    ] {
        let id = bare(relaxed.pointer(pointer).unwrap());
        relaxed = set(relaxed, pointer, id);
    }
    let envelope = decode_value(&relaxed).unwrap();
    assert_eq!(envelope, examples::example(EventType::InvoiceCreated));
    assert_eq!(
        serde_json::from_slice::<Value>(&encode(&envelope).unwrap()).unwrap(),
        invoice
    );
}

#[test]
fn negative_amounts_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(
            invoice.clone(),
            "/event_data/total_amount",
            number("-16.49"),
        ),
        Kind::NegativeAmount,
        "$.event_data.total_amount",
    );
    assert_rejected(
        &set(invoice, "/event_data/crypto_amount", json!("-1")),
        Kind::NegativeAmount,
        "$.event_data.crypto_amount",
    );
    let settlement = example_json(EventType::SettlementCompleted);
    assert_rejected(
        &set(settlement, "/event_data/fee_percentage", number("-1")),
        Kind::NegativeAmount,
        "$.event_data.fee_percentage",
    );
}

#[test]
fn more_decimals_than_the_currency_has_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(
            invoice.clone(),
            "/event_data/total_amount",
            number("16.499"),
        ),
        Kind::TooManyDecimals,
        "$.event_data.total_amount",
    );
    assert_rejected(
        &set(
            invoice.clone(),
            "/event_data/crypto_amount",
            json!("16.4900001"),
        ),
        Kind::TooManyDecimals,
        "$.event_data.crypto_amount",
    );
    // Trailing zeros are not extra precision.
    assert!(
        decode_value(&set(
            invoice.clone(),
            "/event_data/total_amount",
            json!("16.4900")
        ))
        .is_ok()
    );
    // 29 decimals cannot be held exactly at all.
    let tiny = number("0.00000000000000000000000000001");
    assert_rejected(
        &set(invoice, "/event_data/total_amount", tiny),
        Kind::TooManyDecimals,
        "$.event_data.total_amount",
    );
}

#[test]
fn an_18_decimal_eth_amount_given_as_a_json_number_stays_exact() {
    let mut invoice = example_json(EventType::InvoiceCreated);
    invoice["event_data"]["crypto_currency"] = json!("ETH");
    invoice["event_data"]["crypto_amount"] = number("0.004938271604938271");
    invoice["event_data"]["deposit"] = json!({"network": "ethereum",
        "address": "0x52908400098527886e0f7030069857d2e4169ee7", "required_confirmations": 3});
    let envelope = decode_value(&invoice).unwrap();
    let EventData::InvoiceCreated(created) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(
        created.crypto_amount.as_decimal(),
        Decimal::from_i128_with_scale(4_938_271_604_938_271, 18)
    );
    let out: Value = serde_json::from_slice(&encode(&envelope).unwrap()).unwrap();
    assert_eq!(
        out["event_data"]["crypto_amount"],
        json!("0.004938271604938271")
    );
    invoice["event_data"]["crypto_amount"] = number("0.0049382716049382711");
    assert_rejected(
        &invoice,
        Kind::TooManyDecimals,
        "$.event_data.crypto_amount",
    );
}

#[test]
fn unknown_currencies_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(invoice.clone(), "/event_data/currency", json!("XYZ")),
        Kind::UnknownCurrency,
        "$.event_data.currency",
    );
    assert_rejected(
        &set(invoice.clone(), "/event_data/currency", json!("USDT")),
        Kind::UnknownCurrency,
        "$.event_data.currency",
    );
    assert_rejected(
        &set(
            invoice.clone(),
            "/event_data/crypto_currency",
            json!("DOGE"),
        ),
        Kind::UnknownCurrency,
        "$.event_data.crypto_currency",
    );
    assert_rejected(
        &set(invoice, "/event_data/crypto_currency", json!("EUR")),
        Kind::UnknownCurrency,
        "$.event_data.crypto_currency",
    );
}

#[test]
fn bad_timestamps_are_rejected() {
    let invoice = example_json(EventType::InvoiceCreated);
    for bad in [
        "2025-01-15 10:00",
        "2025-01-15T12:00:00+02:00",
        "1736935200",
        "2025-02-30T10:00:00Z",
    ] {
        assert_rejected(
            &set(invoice.clone(), "/timestamp", json!(bad)),
            Kind::InvalidTimestamp,
            "$.timestamp",
        );
    }
    assert_rejected(
        &set(invoice, "/event_data/expires_at", json!("tomorrow")),
        Kind::InvalidTimestamp,
        "$.event_data.expires_at",
    );
}

#[test]
fn violated_payload_invariants_are_rejected() {
    let settlement = example_json(EventType::SettlementCompleted);
    assert_rejected(
        &set(settlement.clone(), "/event_data/net_amount", json!("16.34")),
        Kind::InvariantViolated,
        "$.event_data.net_amount",
    );
    let wrong_fee = set(
        set(settlement, "/event_data/net_amount", json!("16.32")),
        "/event_data/platform_fee_amount",
        json!("0.17"),
    );
    assert_rejected(
        &wrong_fee,
        Kind::InvariantViolated,
        "$.event_data.platform_fee_amount",
    );
    let invoice = example_json(EventType::InvoiceCreated);
    assert_rejected(
        &set(
            invoice,
            "/event_data/expires_at",
            json!("2025-01-15T09:59:59Z"),
        ),
        Kind::InvariantViolated,
        "$.event_data.expires_at",
    );
    let confirmed = example_json(EventType::PaymentConfirmed);
    assert_rejected(
        &set(confirmed, "/event_data/confirmations", json!(3)),
        Kind::InvariantViolated,
        "$.event_data.confirmations",
    );
    let mut caused_by_itself = example_json(EventType::SettlementCompleted);
    caused_by_itself["causation_id"] = caused_by_itself["event_id"].clone();
    assert_rejected(&caused_by_itself, Kind::InvariantViolated, "$.causation_id");
}

#[test]
fn oversized_events_are_rejected_on_decode_and_encode() {
    // Whitespace padding keeps the JSON valid: size alone is the reason.
    let mut text = example_json(EventType::InvoiceCreated).to_string();
    text.push_str(&" ".repeat(MAX_EVENT_BYTES + 1 - text.len()));
    assert_eq!(decode(text.as_bytes()).unwrap_err().kind(), Kind::TooLarge);
    text.pop();
    assert!(
        decode(text.as_bytes()).is_ok(),
        "exactly the maximum is allowed"
    );

    let mut parts = examples::example(EventType::InvoicePaid).into_parts();
    let EventData::InvoicePaid(paid) = &mut parts.event_data else {
        panic!("wrong payload")
    };
    *paid = InvoicePaid {
        payment_ids: (0..25_000).map(|_| PaymentId::new()).collect(),
        ..paid.clone()
    };
    let huge = Envelope::from_parts(parts).expect("valid apart from its size");
    let err = encode(&huge).unwrap_err();
    assert_eq!((err.kind(), err.path()), (Kind::TooLarge, "$"));
}

#[test]
fn version_1_suspensions_are_upcast_on_decode() {
    let mut v1 = example_json(EventType::MerchantSuspended);
    v1["event_version"] = json!(1);
    v1["event_data"] =
        json!({ "reason": "repeated underpayments", "suspended_at": "2025-01-16T10:00:00Z" });
    let envelope = decode_value(&v1).unwrap();
    assert_eq!(envelope.event_version(), 2);
    let EventData::MerchantSuspended(suspended) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(suspended.reason, SuspensionReason::Other);
    assert_eq!(suspended.details.as_deref(), Some("repeated underpayments"));
    let out: Value = serde_json::from_slice(&encode(&envelope).unwrap()).unwrap();
    assert_eq!(out["event_version"], json!(2));
    assert_eq!(out["event_data"]["reason"], json!("other"));
}

#[test]
fn reinstatements_are_merchant_events_with_a_time_and_bounded_details() {
    let reinstated = example_json(EventType::MerchantReinstated);
    let envelope = decode_value(&reinstated).unwrap();
    let EventData::MerchantReinstated(payload) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(
        events::time::format_utc(&payload.reinstated_at),
        "2025-01-17T10:00:00Z"
    );
    assert_eq!(envelope.aggregate_type(), AggregateType::Merchant);
    assert_eq!(envelope.event_version(), 1);
    assert_eq!(
        envelope.partition_key(),
        examples::merchant_id().to_string()
    );
    // Details are optional, bounded like a suspension's.
    assert!(decode_value(&remove(reinstated.clone(), "/event_data/details")).is_ok());
    assert_rejected(
        &set(
            reinstated.clone(),
            "/event_data/details",
            json!("x".repeat(1001)),
        ),
        Kind::InvalidValue,
        "$.event_data.details",
    );
    assert_rejected(
        &remove(reinstated.clone(), "/event_data/reinstated_at"),
        Kind::MissingField,
        "$.event_data.reinstated_at",
    );
    assert_rejected(
        &set(
            reinstated.clone(),
            "/event_data/reinstated_at",
            json!("2025-01-17T12:00:00+02:00"),
        ),
        Kind::InvalidTimestamp,
        "$.event_data.reinstated_at",
    );
    let mut with_reason = reinstated.clone();
    with_reason["event_data"]["reason"] = json!("other");
    assert_rejected(&with_reason, Kind::UnknownField, "$.event_data.reason");
    assert_rejected(
        &set(reinstated.clone(), "/event_version", json!(2)),
        Kind::UnknownVersion,
        "$.event_version",
    );
    assert_rejected(
        &set(
            reinstated,
            "/aggregate_id",
            json!(examples::invoice_id().to_string()),
        ),
        Kind::WrongIdPrefix,
        "$.aggregate_id",
    );
}

#[test]
fn a_suspended_merchants_settlement_fails_held_for_retry() {
    let failed = example_json(EventType::SettlementFailed);
    let held = set(failed, "/event_data/reason", json!("merchant_suspended"));
    let envelope = decode_value(&held).unwrap();
    let EventData::SettlementFailed(payload) = envelope.data() else {
        panic!("wrong payload")
    };
    assert_eq!(payload.reason, SettlementFailureReason::MerchantSuspended);
    assert!(payload.will_retry);
    assert_rejected(
        &set(held, "/event_data/will_retry", json!(false)),
        Kind::InvariantViolated,
        "$.event_data.will_retry",
    );
}

#[test]
fn partition_keys_follow_the_spec() {
    let invoice = examples::invoice_id().to_string();
    let merchant = examples::merchant_id().to_string();
    for envelope in examples::all() {
        let expected = match envelope.aggregate_type() {
            AggregateType::Invoice | AggregateType::Payment => &invoice,
            AggregateType::Settlement | AggregateType::Merchant => &merchant,
        };
        assert_eq!(
            &envelope.partition_key(),
            expected,
            "{}",
            envelope.event_type()
        );
        assert_eq!(envelope.topic(), topics::DOMAIN_EVENTS);
    }
    // A payment's aggregate is the payment, but its key is the invoice.
    let detected = examples::example(EventType::PaymentDetected);
    assert_ne!(
        detected.aggregate_id().to_string(),
        detected.partition_key()
    );
}

#[test]
fn kafka_headers_mirror_the_envelope() {
    let created = examples::example(EventType::InvoiceCreated);
    let headers: std::collections::HashMap<_, _> = created.kafka_headers().into_iter().collect();
    assert_eq!(headers[headers::EVENT_ID], created.event_id().to_string());
    assert_eq!(headers[headers::EVENT_TYPE], "InvoiceCreated");
    assert_eq!(headers[headers::EVENT_VERSION], "2");
    assert_eq!(headers[headers::AGGREGATE_TYPE], "Invoice");
    assert_eq!(headers[headers::CONTENT_TYPE], "application/json");
    assert_eq!(
        headers[headers::CORRELATION_ID],
        created.correlation_id().unwrap().to_string()
    );
    assert_eq!(
        headers[headers::TRACEPARENT],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(!headers.contains_key(headers::CAUSATION_ID));

    let settled = examples::example(EventType::SettlementCompleted);
    let names: Vec<_> = settled
        .kafka_headers()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(names.contains(&headers::CAUSATION_ID));
    assert!(!names.contains(&headers::TRACEPARENT));
}

#[test]
fn constructors_fill_identity_and_check_the_contract() {
    let EventData::InvoicePaid(paid) = examples::example(EventType::InvoicePaid).into_data() else {
        panic!()
    };
    let metadata = examples::example(EventType::InvoicePaid).metadata().clone();
    let envelope = Envelope::new(examples::invoice_id(), paid.clone(), metadata.clone()).unwrap();
    assert_eq!(envelope.event_type(), EventType::InvoicePaid);
    assert_eq!(envelope.event_id().as_uuid().get_version_num(), 7);
    assert_eq!(envelope.timestamp().timestamp_subsec_nanos() % 1_000, 0);
    let cause = examples::example(EventType::PaymentConfirmed)
        .with_correlation_id(examples::correlation_id());
    let effect = envelope.caused_by(&cause);
    assert_eq!(effect.causation_id(), Some(cause.event_id()));
    assert_eq!(effect.correlation_id(), Some(examples::correlation_id()));

    let broken = InvoicePaid {
        overpaid_amount: Amount::ZERO,
        ..paid
    };
    let err = Envelope::new(examples::invoice_id(), broken, metadata).unwrap_err();
    assert_eq!(
        (err.kind(), err.path()),
        (Kind::InvariantViolated, "$.event_data.overpaid_amount")
    );
}
