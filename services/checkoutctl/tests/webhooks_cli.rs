//! `checkoutctl webhooks …` end to end: the real binary against a fresh real database (and, for deliveries, the
//! webhooks service on a private bus with a real receiver on loopback).

use std::process::Command;
use std::time::Duration;

use flows::receiver::{Behaviour, Receiver};
use testkit::fresh_database;

/// Runs `checkoutctl webhooks args…` with exactly these webhook variables; returns (exit code, stdout, stderr).
fn run(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkoutctl"));
    command
        .arg("webhooks")
        .args(args)
        .env("DATABASE_URL", database_url);
    for var in [
        webhooks::ENCRYPTION_KEY_ENV,
        webhooks::ALLOWED_NETWORKS_ENV,
        webhooks::ENVIRONMENT_ENV,
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap(),
        text(output.stdout),
        text(output.stderr),
    )
}

const MERCHANT: &str = "mer_01946967-d500-7111-9111-111111111111";

fn dev(key: &str) -> Vec<(&'static str, String)> {
    vec![
        (webhooks::ENCRYPTION_KEY_ENV, key.to_string()),
        (webhooks::ALLOWED_NETWORKS_ENV, "127.0.0.0/8".to_string()),
        (webhooks::ENVIRONMENT_ENV, "development".to_string()),
    ]
}

fn borrow<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn endpoints_are_guarded_their_secret_is_shown_once_and_they_can_be_rotated_disabled_and_removed()
 {
    let db = fresh_database().await;
    let key = webhooks::signing::SecretBox::generate_key();
    let dev = dev(&key);
    let dev = borrow(&dev);
    let add = |url: &str, extra: &[&str]| {
        let mut args = vec!["endpoint", "add", "--merchant", MERCHANT, "--url", url];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let call = |env: &[(&str, &str)], args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&db.url, env, &args)
    };

    // Refused: no key; http outside development; private and metadata addresses; unknown event types.
    let (code, _, stderr) = call(&borrow(&[]), add("https://example.com/hook", &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("WEBHOOK_ENCRYPTION_KEY"), "{stderr}");
    let production = [(webhooks::ENCRYPTION_KEY_ENV, key.as_str())];
    let (code, _, stderr) = call(&production, add("http://127.0.0.1:1/hook", &[]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("scheme must be https"), "{stderr}");
    for (url, class) in [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.1.2.3/hook", "private"),
        ("https://[::1]/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
    ] {
        let (code, _, stderr) = call(&production, add(url, &[]));
        assert_eq!(code, 1, "{url}: {stderr}");
        assert!(stderr.contains(class), "{url}: {stderr}");
    }
    let (code, _, stderr) = call(
        &dev,
        add("http://127.0.0.1:1/hook", &["--events", "invoice.nope"]),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unknown event type `invoice.nope`"),
        "{stderr}"
    );

    // Accepted in development with loopback allowed: id and secret printed once.
    let (code, stdout, stderr) = call(
        &dev,
        add(
            "http://127.0.0.1:1/hook",
            &["--events", "invoice.paid,SettlementCompleted"],
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    let field = |name: &str, text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    let endpoint = field("endpoint", &stdout);
    let secret = field("secret", &stdout);
    assert!(
        endpoint.starts_with("ep_") && secret.starts_with("whsec_"),
        "{stdout}"
    );
    assert!(stderr.contains("shown this once"));
    let secret_b64 = &secret["whsec_".len()..];

    // Never again: not in list, show or their JSON, not in the table in plain text.
    for args in [
        vec!["endpoint", "list"],
        vec!["endpoint", "list", "--json", "--merchant", MERCHANT],
        vec!["endpoint", "show", &endpoint],
        vec!["endpoint", "show", &endpoint, "--json"],
    ] {
        let (code, stdout, _) = run(&db.url, &dev, &args);
        assert_eq!(code, 0);
        assert!(stdout.contains(&endpoint), "{args:?}: {stdout}");
        assert!(!stdout.contains(secret_b64), "{args:?} shows the secret");
    }
    let sealed: Vec<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM webhook_endpoint_secrets")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let plain = webhooks::signing::SigningSecret::parse(&secret).unwrap();
    assert_eq!(sealed.len(), 1);
    assert!(
        !String::from_utf8_lossy(&sealed[0]).contains(secret_b64),
        "stored encrypted"
    );
    let opened = webhooks::signing::SecretBox::from_base64(&key)
        .unwrap()
        .open(
            endpoint
                .parse::<webhooks::endpoints::EndpointId>()
                .unwrap()
                .0,
            &sealed[0],
        )
        .unwrap();
    assert_eq!(opened, plain);

    let show = |env: &[(&str, &str)]| {
        let (code, stdout, stderr) = run(&db.url, env, &["endpoint", "show", &endpoint, "--json"]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let shown = show(&dev);
    assert_eq!(
        shown["event_types"],
        serde_json::json!(["invoice.paid", "settlement.completed"])
    );
    assert_eq!(shown["active_secrets"], 1);

    // Rotation: a new secret, printed once; both sign during the grace period.
    let (code, stdout, _) = run(
        &db.url,
        &dev,
        &[
            "endpoint",
            "rotate-secret",
            &endpoint,
            "--grace",
            "1h",
            "--json",
        ],
    );
    assert_eq!(code, 0);
    let rotated: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_ne!(rotated["secret"].as_str().unwrap(), secret);
    assert_eq!(show(&dev)["active_secrets"], 2);

    // Disable, enable, remove.
    let (code, stdout, _) = run(
        &db.url,
        &dev,
        &["endpoint", "disable", &endpoint, "--reason", "maintenance"],
    );
    assert_eq!(
        (code, stdout.trim()),
        (0, format!("{endpoint} disabled").as_str())
    );
    assert_eq!(show(&dev)["disabled_reason"], "maintenance");
    let told: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload::jsonb FROM outbox WHERE event_type = 'WebhookEndpointDisabled'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        told.len(),
        1,
        "the merchant and the audit log are told through the outbox"
    );
    assert_eq!(told[0]["event_data"]["reason"], "operator");
    assert_eq!(told[0]["event_data"]["details"], "maintenance");
    assert_eq!(told[0]["aggregate_id"], MERCHANT);
    let (code, _, _) = run(&db.url, &dev, &["endpoint", "enable", &endpoint]);
    assert_eq!(code, 0);
    assert_eq!(show(&dev)["status"], "enabled");
    let (code, _, _) = run(&db.url, &dev, &["endpoint", "remove", &endpoint]);
    assert_eq!(code, 0);
    let (_, stdout, _) = run(&db.url, &dev, &["endpoint", "list"]);
    assert_eq!(stdout, "no endpoints\n");
    assert!(show(&dev)["removed_at"].is_string());
    let (code, _, stderr) = run(&db.url, &dev, &["endpoint", "enable", &endpoint]);
    assert_eq!(code, 1);
    assert!(stderr.contains("was removed"), "{stderr}");
    let (code, _, stderr) = run(&db.url, &dev, &["endpoint", "show", "ep_not-an-id"]);
    assert_eq!(code, 2, "clap refuses a malformed id: {stderr}");
    let (code, _, stderr) = run(
        &db.url,
        &dev,
        &["redeliver", "dlv_0194696c-68e0-7333-b333-333333333333"],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("no webhook delivery"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_list_every_attempt_and_redeliver_and_recover_send_failed_ones_again() {
    use flows::harness::Bus;
    let bus = Bus::new().await;
    let receiver = Receiver::start().await;
    receiver.set("hook", Behaviour::Always(500));
    let key = webhooks::signing::SecretBox::generate_key();
    let dev = dev(&key);
    let dev = borrow(&dev);
    let flows = flows::generate(&flows::Scenario::new(7501, 1, 10));
    let merchant = flows.events[0].merchant_id().to_string();
    let url = receiver.url("hook");
    let (code, stdout, stderr) = run(
        &bus.db.url,
        &dev,
        &[
            "endpoint",
            "add",
            "--merchant",
            &merchant,
            "--url",
            &url,
            "--events",
            "invoice.paid",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let endpoint =
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["endpoint"]["endpoint_id"]
            .as_str()
            .unwrap()
            .to_string();

    let group = testkit::unique_name("webhooks-cli");
    let mut settings = flows::service::settings::<webhooks::Webhooks>(
        &bus,
        &group,
        std::slice::from_ref(&bus.domain_topic),
        flows::service::fast_options(),
    );
    settings.service.delivery.encryption_key = Some(key.clone().into());
    settings.service.delivery.allowed_networks = vec!["127.0.0.0/8".into()];
    settings.service.delivery.allow_http = true;
    settings.service.consumer.policy.retry = Some(runtime::RetryPolicy {
        max_retries: 5,
        backoff: runtime::Backoff::Fixed {
            interval: Duration::from_millis(50),
        },
    });
    let service =
        flows::service::InProcess::start_with::<webhooks::Webhooks>(settings, group).await;
    let publisher = bus.start_publisher().await;
    let since = chrono::Utc::now().to_rfc3339();
    let paid: Vec<events::Envelope> = flows
        .events
        .iter()
        .filter(|e| e.event_type() == events::EventType::InvoicePaid)
        .take(1)
        .cloned()
        .collect();
    bus.append(&paid, 1).await;

    let failed =
        flows::harness::eventually(Duration::from_secs(30), "a failed delivery", || async {
            let (_, stdout, _) = run(
                &bus.db.url,
                &dev,
                &["deliveries", "--status", "failed", "--json"],
            );
            serde_json::from_str::<Vec<serde_json::Value>>(&stdout).is_ok_and(|l| l.len() == 1)
        });
    failed.await;
    let (_, stdout, _) = run(
        &bus.db.url,
        &dev,
        &["deliveries", "--endpoint", &endpoint, "--json"],
    );
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let delivery = &list[0];
    assert_eq!(delivery["attempts"], 6);
    let log = delivery["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 6);
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["status_code"], 500);
        assert_eq!(a["response_excerpt"], "answered 500");
        assert!(a["latency_ms"].as_i64().unwrap() >= 0);
    }
    let (_, table, _) = run(&bus.db.url, &dev, &["deliveries", "--merchant", &merchant]);
    assert!(
        table.contains("failed") && table.contains("invoice.paid"),
        "{table}"
    );

    receiver.set("hook", Behaviour::Ok);
    let id = delivery["delivery_id"].as_str().unwrap();
    let (code, stdout, stderr) = run(&bus.db.url, &dev, &["redeliver", id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("a redelivery of {id}")),
        "{stdout}"
    );
    flows::harness::eventually(
        Duration::from_secs(30),
        "the redelivery delivered",
        || async {
            let (_, stdout, _) = run(
                &bus.db.url,
                &dev,
                &["deliveries", "--status", "delivered", "--json"],
            );
            serde_json::from_str::<Vec<serde_json::Value>>(&stdout).is_ok_and(|l| l.len() == 1)
        },
    )
    .await;
    let requests = receiver.received(Some("hook"));
    assert_eq!(requests.len(), 7);
    assert!(
        requests
            .iter()
            .all(|r| r.webhook_id == requests[0].webhook_id),
        "one webhook id"
    );
    // Nothing left to recover: the chain's latest delivery was delivered.
    let (code, stdout, _) = run(
        &bus.db.url,
        &dev,
        &["recover", "--endpoint", &endpoint, "--since", &since],
    );
    assert_eq!(
        (code, stdout.split_whitespace().next()),
        (0, Some("0")),
        "{stdout}"
    );
    publisher.stop().await;
    service.stop().await;
}
