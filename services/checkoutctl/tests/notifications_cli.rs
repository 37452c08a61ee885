//! `checkoutctl notifications …` end to end: the real binary against a fresh real database — contacts checked
//! and set (the webhook secret shown once, never listed), deliveries listed and filtered as the service records
//! them.

use std::process::Command;

use testkit::fresh_database;

/// Runs `checkoutctl notifications args…`; returns (exit code, stdout, stderr).
fn run(database_url: &str, key: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkoutctl"));
    command
        .arg("notifications")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env_remove(webhooks::ENCRYPTION_KEY_ENV);
    if let Some(key) = key {
        command.env(webhooks::ENCRYPTION_KEY_ENV, key);
    }
    let output = command.output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap(),
        text(output.stdout),
        text(output.stderr),
    )
}

const MERCHANT: &str = "mer_01946967-d500-7111-9111-111111111111";

#[tokio::test]
async fn contacts_are_checked_and_deliveries_are_listed_by_recipient() {
    let db = fresh_database().await;
    let key = webhooks::signing::SecretBox::generate_key();

    let (code, _, stderr) = run(
        &db.url,
        None,
        &["contact", "set", MERCHANT, "--phone", "555"],
    );
    assert_eq!(code, 1, "not E.164");
    assert!(stderr.contains("not an E.164 phone number"), "{stderr}");
    let (code, _, stderr) = run(
        &db.url,
        None,
        &[
            "contact",
            "set",
            MERCHANT,
            "--webhook-url",
            "https://merchant.example/hook",
        ],
    );
    assert_eq!(code, 1, "a webhook contact needs the key");
    assert!(stderr.contains(webhooks::ENCRYPTION_KEY_ENV), "{stderr}");

    let (code, stdout, stderr) = run(
        &db.url,
        Some(&key),
        &[
            "contact",
            "set",
            MERCHANT,
            "--email",
            "ops@merchant.example",
            "--phone",
            "+15551234567",
            "--webhook-url",
            "https://merchant.example/hook",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("webhook signing secret (shown this once): "))
        .expect("the secret, once");
    assert!(secret.starts_with("whsec_"));
    let (code, stdout, _) = run(&db.url, None, &["contact", "list", "--json"]);
    assert_eq!(code, 0);
    assert!(!stdout.contains(secret), "never listed");
    let contacts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(contacts[0]["email"], "ops@merchant.example");
    assert_eq!(contacts[0]["phone"], "+15551234567");

    // Two recorded requests, as the service's consumer records them.
    let mut requests = Vec::new();
    for (recipient, channel) in [(MERCHANT, "email"), ("cus_42", "sms")] {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO notification_deliveries (notification_id, recipient_kind, recipient_id, channel, template,
                 locale, requested_at, source_topic, source_partition, source_offset, record_value, record_headers)
             VALUES ($1, $2, $3, $4, 'settlement_completed', 'en', now(), 't', 0, 0, '\\x7b7d', '[]')",
        )
        .bind(id)
        .bind(if recipient == MERCHANT { "merchant" } else { "customer" })
        .bind(recipient)
        .bind(channel)
        .execute(&db.pool)
        .await
        .unwrap();
        requests.push(id);
    }
    let (code, stdout, stderr) = run(&db.url, None, &["list", "--recipient", MERCHANT, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["notification_id"], requests[0].to_string());
    assert_eq!(listed[0]["status"], "pending");
    let (code, stdout, _) = run(&db.url, None, &["list"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("NOTIFICATION"), "{stdout}");
    assert!(
        stdout.contains("cus_42") && stdout.contains(MERCHANT),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("ntf_{}", requests[1])), "{stdout}");
    let (_, stdout, _) = run(&db.url, None, &["list", "--status", "sent"]);
    assert_eq!(stdout.trim(), "no notifications");
}
