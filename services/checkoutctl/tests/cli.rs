//! `checkoutctl events …` end to end: the real binary, its exit codes and its output.

use std::io::Write;
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;
use checkoutctl::events_cmd::{Summary, validate_stream};
use events::{EventType, encode, examples};
use predicates::prelude::*;

fn checkoutctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
}

/// Runs `checkoutctl args…` with `stdin`, returning (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = checkoutctl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap(),
        text(output.stdout),
        text(output.stderr),
    )
}

fn all_examples_ndjson() -> String {
    examples::all()
        .iter()
        .map(|e| String::from_utf8(encode(e).unwrap()).unwrap() + "\n")
        .collect()
}

#[test]
fn validates_an_ndjson_stream_of_every_example() {
    let (code, stdout, stderr) = run(&["events", "validate"], all_examples_ndjson().as_bytes());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains(&format!(
        "{} events: {} valid, 0 invalid",
        EventType::ALL.len(),
        EventType::ALL.len()
    )));
}

#[test]
fn reports_each_invalid_line_with_its_number_and_path_and_fails() {
    let mut input = all_examples_ndjson()
        .lines()
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    input.push('\n'); // a blank line 3 is skipped but counted
    input.push_str(
        &String::from_utf8(encode(&examples::example(EventType::InvoiceCreated)).unwrap())
            .unwrap()
            .replace("\"16.49\"", "\"-16.49\""),
    );
    input.push_str("\n{not json}\n");
    let (code, stdout, stderr) = run(&["events", "validate", "-"], input.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("line 4: $.event_data.total_amount: negative_amount:"),
        "{stderr}"
    );
    assert!(stderr.contains("line 5: $: malformed_json:"), "{stderr}");
    assert!(stderr.contains("4 events: 2 valid, 2 invalid"), "{stderr}");
}

#[test]
fn canonical_prints_valid_events_in_canonical_form() {
    let loose = r#"{"event_type":"SettlementCompleted","event_id":"0194685e-4b00-7c4e-8a21-6f3b9d2c1e02","aggregate_id":"set_0194685e-7a10-7d2f-9b43-2c8e5f1a3b04","aggregate_type":"Settlement","event_version":1,"event_data":{"invoice_id":"inv_0194685e-7a10-7d2f-9b43-2c8e5f1a3b02","merchant_id":"mer_0194685e-7a10-7d2f-9b43-2c8e5f1a3b03","currency":"USD","gross_amount":16.49,"platform_fee_amount":0.16,"net_amount":16.33,"fee_percentage":1.0,"settled_at":"2025-01-15T10:18:30+00:00"},"metadata":{"actor":"system:settlement-processor"},"timestamp":"2025-01-15T10:18:30Z"}"#;
    let (code, stdout, stderr) = run(
        &["events", "validate", "--canonical"],
        format!("{loose}\n").as_bytes(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "{\"event_id\":\"evt_0194685e-4b00-7c4e-8a21-6f3b9d2c1e02\",\"aggregate_id\":\"set_0194685e-7a10-7d2f-9b43-2c8e5f1a3b04\",\
         \"aggregate_type\":\"Settlement\",\"event_type\":\"SettlementCompleted\",\"event_version\":1,\"event_data\":{\
         \"invoice_id\":\"inv_0194685e-7a10-7d2f-9b43-2c8e5f1a3b02\",\"merchant_id\":\"mer_0194685e-7a10-7d2f-9b43-2c8e5f1a3b03\",\
         \"currency\":\"USD\",\"gross_amount\":\"16.49\",\"platform_fee_amount\":\"0.16\",\"net_amount\":\"16.33\",\
         \"fee_percentage\":\"1\",\"settled_at\":\"2025-01-15T10:18:30Z\"},\"metadata\":{\"actor\":\"system:settlement-processor\"},\
         \"timestamp\":\"2025-01-15T10:18:30Z\"}\n"
    );
}

#[test]
fn a_pretty_printed_example_is_one_valid_document() {
    for event_type in EventType::ALL {
        let example = checkoutctl()
            .args(["events", "example", event_type.as_str(), "--pretty"])
            .output()
            .unwrap();
        assert!(example.status.success());
        assert!(
            example.stdout.iter().filter(|b| **b == b'\n').count() > 5,
            "pretty output spans lines"
        );
        let (code, _, stderr) = run(&["events", "validate"], &example.stdout);
        assert_eq!(code, 0, "{event_type}: {stderr}");
    }
}

#[test]
fn a_broken_document_is_reported_once_at_its_first_line() {
    let pretty = "\n\n{\n  \"event_id\": \"evt_123\",\n  \"aggregate_id\": 5\n}\n";
    let (code, _, stderr) = run(&["events", "validate"], pretty.as_bytes());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 3: $.event_id: invalid_id:"),
        "{stderr}"
    );
    assert!(stderr.contains("1 events: 0 valid, 1 invalid"), "{stderr}");
}

#[test]
fn empty_input_is_not_a_success() {
    let (code, _, stderr) = run(&["events", "validate"], b"\n  \n");
    assert_eq!(code, 1);
    assert!(stderr.contains("no event in the input"), "{stderr}");
}

#[test]
fn an_unreadable_file_is_a_failure_with_context() {
    checkoutctl()
        .args(["events", "validate", "/nonexistent/events.ndjson"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "cannot open /nonexistent/events.ndjson",
        ));
}

#[test]
fn validates_a_file_argument() {
    let path = std::env::temp_dir().join(format!("checkoutctl-test-{}.ndjson", std::process::id()));
    std::fs::write(&path, all_examples_ndjson()).unwrap();
    let result = checkoutctl()
        .args(["events", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn example_prints_the_canonical_example() {
    for event_type in EventType::ALL {
        let output = checkoutctl()
            .args(["events", "example", event_type.as_str()])
            .output()
            .unwrap();
        assert!(output.status.success());
        let expected = encode(&examples::example(*event_type)).unwrap();
        assert_eq!(
            output.stdout,
            [expected, b"\n".to_vec()].concat(),
            "{event_type}"
        );
    }
    checkoutctl()
        .args(["events", "example", "InvoiceDeleted"])
        .assert()
        .code(2);
}

#[test]
fn schema_prints_the_committed_schemas() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/events/schemas");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let printed = |args: &[&str]| -> serde_json::Value {
        let output = checkoutctl().args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(printed(&["events", "schema"]), read("event.schema.json"));
    assert_eq!(
        printed(&["events", "schema", "InvoiceCreated"]),
        read("InvoiceCreated.v2.schema.json")
    );
    assert_eq!(
        printed(&["events", "schema", "InvoiceCreated", "--version", "1"]),
        read("InvoiceCreated.v1.schema.json")
    );
    assert_eq!(
        printed(&["events", "schema", "MerchantSuspended", "--version", "1"]),
        read("MerchantSuspended.v1.schema.json")
    );
    checkoutctl()
        .args(["events", "schema", "InvoiceCreated", "--version", "3"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("InvoiceCreated has no version 3"));
    checkoutctl()
        .args(["events", "schema", "--list"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "PaymentDetected      Payment     invoice_id    1..=1",
        ));
}

#[test]
fn help_explains_every_command() {
    checkoutctl()
        .args(["events", "--help"])
        .assert()
        .success()
        .stdout(
            predicates::str::contains("validate")
                .and(predicates::str::contains("schema"))
                .and(predicates::str::contains("example")),
        );
    checkoutctl()
        .args(["events", "validate", "--help"])
        .assert()
        .success()
        .stdout(predicates::str::contains("NDJSON").and(predicates::str::contains("--canonical")));
}

#[test]
fn validate_stream_reports_non_utf8_lines_instead_of_stopping() {
    let good = encode(&examples::example(EventType::PaymentFailed)).unwrap();
    let mut input = good.clone();
    input.extend_from_slice(b"\n{\"event_id\":\"\xff\"}\r\n");
    input.extend_from_slice(&good);
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let summary = validate_stream(&mut input.as_slice(), true, &mut out, &mut errors).unwrap();
    assert_eq!(
        summary,
        Summary {
            valid: 2,
            invalid: 1
        }
    );
    assert!(
        String::from_utf8(errors)
            .unwrap()
            .starts_with("line 2: $.event_id: malformed_json:")
    );
    assert_eq!(
        out,
        [good.clone(), b"\n".to_vec(), good, b"\n".to_vec()].concat()
    );
}

#[test]
fn checkout_viewed_records_have_an_example_a_schema_and_are_validated_by_their_contract() {
    let view = examples::checkout_viewed();
    let canonical = view.encode().unwrap();
    let output = checkoutctl()
        .args(["events", "example", "CheckoutViewed"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, [canonical.clone(), b"\n".to_vec()].concat());

    // Mixed with domain events; the canonical output is each record's own canonical form.
    let reordered = {
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&canonical).unwrap();
        let fields: Vec<String> = value
            .iter()
            .rev()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    assert_ne!(reordered.as_bytes(), canonical, "keys in another order");
    let input = format!("{}{reordered}\n", all_examples_ndjson());
    let (code, stdout, stderr) = run(&["events", "validate", "--canonical"], input.as_bytes());
    assert_eq!(code, 0, "{stderr}");
    let last = stdout.lines().last().unwrap();
    assert_eq!(last.as_bytes(), canonical);
    assert!(
        stderr.contains(&format!("{} valid", EventType::ALL.len() + 1)),
        "{stderr}"
    );

    let wrong = String::from_utf8(canonical.clone())
        .unwrap()
        .replace("\"event_version\":1", "\"event_version\":3");
    let (code, _, stderr) = run(&["events", "validate"], wrong.as_bytes());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1: $.event_version: unknown_version"),
        "{stderr}"
    );

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/events/schemas");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("CheckoutViewed.v1.schema.json")).unwrap(),
    )
    .unwrap();
    let output = checkoutctl()
        .args(["events", "schema", "CheckoutViewed"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
        committed
    );
    checkoutctl()
        .args(["events", "schema", "CheckoutViewed", "--version", "2"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("CheckoutViewed has no version 2"));
    checkoutctl()
        .args(["events", "schema", "--list"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "CheckoutViewed       Invoice     date          1..=1",
        ));
}

#[test]
fn the_checkout_pages_other_records_have_an_example_a_schema_a_listing_and_are_validated() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/events/schemas");
    let mut ndjson = Vec::new();
    for (record, name) in [
        (
            events::AnalyticsEvent::from(examples::payment_method_chosen()),
            "PaymentMethodChosen",
        ),
        (examples::checkout_abandoned().into(), "CheckoutAbandoned"),
    ] {
        let canonical = record.encode().unwrap();
        let output = checkoutctl()
            .args(["events", "example", name])
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}");
        assert_eq!(output.stdout, [canonical.clone(), b"\n".to_vec()].concat());
        ndjson.extend_from_slice(&output.stdout);
        let committed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.v1.schema.json"))).unwrap(),
        )
        .unwrap();
        let output = checkoutctl()
            .args(["events", "schema", name])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
            committed
        );
        checkoutctl()
            .args(["events", "schema", "--list"])
            .assert()
            .success()
            .stdout(predicates::str::contains(format!(
                "{name:<20} Invoice     date          1..=1"
            )));
    }
    let (code, stdout, stderr) = run(&["events", "validate", "--canonical"], &ndjson);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.as_bytes(), ndjson);
    // The asset must be carried by the network: the contract's rule, not just the schema's enumerations.
    let wrong = String::from_utf8(ndjson)
        .unwrap()
        .replace("\"network\":\"tron\"", "\"network\":\"bitcoin\"");
    let (code, _, stderr) = run(&["events", "validate"], wrong.as_bytes());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("line 1: $.network: invalid_value"),
        "{stderr}"
    );
}

#[test]
fn notification_requests_have_an_example_a_schema_and_are_validated_by_their_contract() {
    let request = examples::notification_requested();
    let canonical = request.encode().unwrap();
    let output = checkoutctl()
        .args(["events", "example", "NotificationRequested"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, [canonical.clone(), b"\n".to_vec()].concat());

    let input = format!(
        "{}{}\n",
        all_examples_ndjson(),
        String::from_utf8(canonical.clone()).unwrap()
    );
    let (code, stdout, stderr) = run(&["events", "validate", "--canonical"], input.as_bytes());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().last().unwrap().as_bytes(), canonical);

    let bad = String::from_utf8(canonical.clone())
        .unwrap()
        .replace("\"channel\":\"email\"", "\"channel\":\"sms\"");
    let (code, _, stderr) = run(&["events", "validate"], bad.as_bytes());
    assert_eq!(code, 1, "an e-mail address is not a phone number");
    assert!(
        stderr.contains("line 1: $.destination: invalid_value"),
        "{stderr}"
    );

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/events/schemas");
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("NotificationRequested.v1.schema.json")).unwrap(),
    )
    .unwrap();
    let output = checkoutctl()
        .args(["events", "schema", "NotificationRequested"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
        committed
    );
    checkoutctl()
        .args(["events", "schema", "--list"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "NotificationRequested Notification recipient.id  1..=1",
        ));
}

const TOPICS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/kafka/topics.yaml"
);

/// `checkoutctl topics plan` with one `CHECKOUT__KAFKA__CLIENT__…` variable: (exit code, stderr).
fn topics_plan_with(variable: &str, value: &str) -> (Option<i32>, String) {
    let output = checkoutctl()
        .args(["topics", "plan", "--env", "development"])
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("CHECKOUT_TOPICS_FILE", TOPICS_FILE)
        .env(variable, value)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `checkoutctl topics plan|apply` builds its admin client with the properties a service would use
/// (`CHECKOUT__KAFKA__CLIENT__…`, e.g. SASL credentials in the Kubernetes job): an unknown librdkafka property
/// reaches the client and is refused by it, and a property that would break delivery is refused by name.
#[test]
fn topics_commands_pass_the_services_client_properties_to_the_admin_client() {
    let (code, stderr) = topics_plan_with("CHECKOUT__KAFKA__CLIENT__NO__SUCH__PROPERTY", "1");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no.such.property"),
        "librdkafka names the property it was given: {stderr}"
    );
    let (code, stderr) = topics_plan_with("CHECKOUT__KAFKA__CLIENT__ENABLE__AUTO__COMMIT", "true");
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("enable.auto.commit"), "{stderr}");
}

#[test]
fn integration_records_have_examples_schemas_and_are_validated_by_their_contract() {
    for record in examples::integration_events() {
        let name = record.record_type();
        let canonical = record.encode().unwrap();
        let output = checkoutctl()
            .args(["events", "example", name])
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}");
        assert_eq!(output.stdout, [canonical.clone(), b"\n".to_vec()].concat());

        let (code, stdout, stderr) = run(&["events", "validate", "--canonical"], &canonical);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.trim_end().as_bytes(), canonical);

        let bad = String::from_utf8(canonical.clone())
            .unwrap()
            .replace("\"network\":\"tron\"", "\"network\":\"bitcoin\"");
        let (code, _, stderr) = run(&["events", "validate"], bad.as_bytes());
        assert_eq!(code, 1, "USDT is not paid on Bitcoin");
        assert!(
            stderr.contains("line 1: $.data.output.network: invalid_value"),
            "{stderr}"
        );

        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/events/schemas");
        let committed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.v1.schema.json"))).unwrap(),
        )
        .unwrap();
        let output = checkoutctl()
            .args(["events", "schema", name])
            .output()
            .unwrap();
        assert!(output.status.success());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
            committed
        );
    }
    checkoutctl()
        .args(["events", "schema", "--list"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "TransactionObserved  ChainOutput source        1..=1",
        ));
}

#[test]
fn the_scanner_simulator_prints_valid_reports_that_validate_prints() {
    let args = [
        "scanner",
        "simulate",
        "--address",
        events::examples::TRON_ADDRESS,
        "--amount",
        "10",
        "--amount",
        "6.49",
        "--required",
        "5",
        "--fate",
        "survives",
        "--duplicates",
        "--reorder",
        "--at",
        "2026-11-30T10:00:00Z",
    ];
    let output = checkoutctl().args(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let again = checkoutctl().args(args).output().unwrap();
    assert_eq!(output.stdout, again.stdout, "deterministic");
    let lines = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(lines.lines().count() > 18, "{lines}");
    let (code, _, stderr) = run(&["events", "validate"], &output.stdout);
    assert_eq!(code, 0, "{stderr}");
    let bad = checkoutctl()
        .args([
            "scanner",
            "simulate",
            "--address",
            "0xnope",
            "--amount",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
