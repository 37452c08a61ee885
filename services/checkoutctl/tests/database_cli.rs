//! `checkoutctl db …` and `checkoutctl outbox …` end to end: the real binary against a fresh real database.

use std::io::Write;
use std::process::{Command, Stdio};

use events::{EventType, encode, examples};
use testkit::fresh_database;

/// Runs `checkoutctl args…` against `database_url` with `stdin`; returns (exit code, stdout, stderr).
fn run(database_url: &str, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .args(args)
        .env("DATABASE_URL", database_url)
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

fn ndjson(types: &[EventType]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in types {
        out.extend(encode(&examples::example(*t)).unwrap());
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn db_migrate_is_idempotent_and_status_reports_every_migration() {
    let db = fresh_database().await;
    let (code, _, stderr) = run(&db.url, &["db", "migrate"], b"");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 applied now"), "{stderr}");
    let (code, stdout, _) = run(&db.url, &["db", "status"], b"");
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("applied")).count(),
        service_kit::db::MIGRATOR.iter().count()
    );
}

#[tokio::test]
async fn outbox_append_writes_valid_batches_and_stops_before_a_batch_with_an_invalid_event() {
    let db = fresh_database().await;
    let valid = ndjson(&[
        EventType::InvoiceCreated,
        EventType::PaymentDetected,
        EventType::MerchantCreated,
    ]);
    let (code, _, stderr) = run(&db.url, &["outbox", "append", "--batch-size", "2"], &valid);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("appended 3 event(s) in 2 transaction(s)"),
        "{stderr}"
    );

    // Batch 1 (lines 1–2) is valid, batch 2 (lines 3–4) holds a broken line: only batch 1 is appended.
    let mut mixed = ndjson(&[
        EventType::InvoiceExpired,
        EventType::InvoicePaid,
        EventType::InvoiceCancelled,
    ]);
    mixed.extend(b"{\"event_id\": 1}\n");
    let (code, _, stderr) = run(&db.url, &["outbox", "append", "--batch-size", "2"], &mixed);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("line 4: $"), "{stderr}");
    assert!(
        stderr.contains("Appended before it: 2 event(s)"),
        "{stderr}"
    );

    let (code, stdout, _) = run(&db.url, &["outbox", "status", "--json"], b"");
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["rows"], 5, "{status}");
    assert_eq!(status["quarantined"], 0);
    let event_types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        event_types,
        [
            "InvoiceCreated",
            "PaymentDetected",
            "MerchantCreated",
            "InvoiceExpired",
            "InvoicePaid"
        ]
    );
}

#[tokio::test]
async fn releasing_or_dropping_a_row_that_is_not_quarantined_is_refused() {
    let db = fresh_database().await;
    run(
        &db.url,
        &["outbox", "append"],
        &ndjson(&[EventType::InvoiceCreated]),
    );
    let event_id = examples::example(EventType::InvoiceCreated)
        .event_id()
        .as_uuid()
        .to_string();
    let (code, _, stderr) = run(&db.url, &["outbox", "release", &event_id], b"");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no quarantined outbox row"), "{stderr}");
    let (code, _, stderr) = run(
        &db.url,
        &["outbox", "drop", &event_id, "--reason", "test"],
        b"",
    );
    assert_eq!(code, 2, "{stderr}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "nothing was removed");
}
