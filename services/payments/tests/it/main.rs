//! The payments service against the real broker and database: every payment path with outcomes computed from
//! the scenario (never from the service), SIGKILLs of the process, and an unknown address dead-lettered with its
//! reason. Kafka and PostgreSQL must be running (`make up`); a test that cannot reach them fails.

mod flows_e2e;
mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use events::EventData;
use flows::harness::{Bus, create_named_topic, header, produce, read_topic};
use flows::service::{InProcess, fast_options, settings};
use payments::Payments;
use payments::simulate::{Chaos, Fate};
use runtime::{Backoff, RetryPolicy};
use scenario::{Expected, Kind, Scenario};

const INTEGRATION_PARTITIONS: i32 = 6;

/// The integration topic of a test (6 partitions, key = source) and its DLQ.
async fn integration_topic() -> String {
    let topic =
        testkit::create_topic_with(testkit::infra(), "integration", INTEGRATION_PARTITIONS, &[])
            .await;
    create_named_topic(&format!("{topic}.dlq"), INTEGRATION_PARTITIONS).await;
    topic
}

/// Produces the scenario: its invoices to the domain topic, then the scanners' reports to `integration`.
async fn produce_scenario(bus: &Bus, integration: &str, scenario: &Scenario) {
    let invoices: Vec<(String, Vec<u8>)> = scenario
        .invoice_events()
        .iter()
        .map(|e| (e.partition_key(), events::encode(e).unwrap()))
        .collect();
    produce(&bus.domain_topic, &invoices).await;
    let reports: Vec<(String, Vec<u8>)> = scenario
        .reports()
        .iter()
        .map(|r| (r.partition_key(), r.encode().unwrap()))
        .collect();
    produce(integration, &reports).await;
}

/// What the outbox holds, per invoice: (event type → event ids), the InvoicePaid payloads and the notifications.
#[derive(Debug, Default)]
struct Outbox {
    by_invoice: BTreeMap<uuid::Uuid, BTreeMap<String, BTreeSet<uuid::Uuid>>>,
    paid: BTreeMap<uuid::Uuid, events::payload::InvoicePaid>,
    confirming: BTreeMap<uuid::Uuid, Vec<u32>>,
    notifications: usize,
    rows: usize,
}

async fn outbox(bus: &Bus) -> Outbox {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT topic, payload::text FROM outbox ORDER BY id")
            .fetch_all(bus.pool())
            .await
            .expect("read the outbox");
    let mut out = Outbox {
        rows: rows.len(),
        ..Default::default()
    };
    for (topic, payload) in rows {
        if topic == events::topics::NOTIFICATION_EVENTS {
            let n = events::NotificationRequested::decode(payload.as_bytes()).unwrap();
            assert_eq!(n.template, "invoice_paid");
            out.notifications += 1;
            continue;
        }
        let event = events::decode(payload.as_bytes()).expect("the service emits valid events");
        let invoice = match event.data().invoice_id() {
            Some(i) => i.as_uuid(),
            None => event.aggregate_id().as_uuid(),
        };
        out.by_invoice
            .entry(invoice)
            .or_default()
            .entry(event.event_type().as_str().to_string())
            .or_default()
            .insert(event.event_id().as_uuid());
        match event.data() {
            EventData::InvoicePaid(p) => {
                out.paid.insert(invoice, p.clone());
            }
            EventData::PaymentConfirming(c) => {
                out.confirming
                    .entry(event.aggregate_id().as_uuid())
                    .or_default()
                    .push(c.confirmations);
            }
            _ => {}
        }
    }
    out
}

fn count(o: &Outbox, invoice: uuid::Uuid, event_type: &str) -> usize {
    o.by_invoice
        .get(&invoice)
        .and_then(|t| t.get(event_type))
        .map_or(0, BTreeSet::len)
}

/// Waits until the outbox holds as many rows as the scenario expects, then compares per invoice.
async fn wait_and_check(bus: &Bus, scenario: &Scenario, timeout: Duration) -> Outbox {
    let expected_rows = scenario.expected_rows();
    let started = Instant::now();
    loop {
        let o = outbox(bus).await;
        if o.rows >= expected_rows {
            break;
        }
        assert!(
            started.elapsed() < timeout,
            "{} of {expected_rows} expected outbox rows after {timeout:?}",
            o.rows
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A little longer: nothing more may come.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let o = outbox(bus).await;
    assert_eq!(o.rows, expected_rows, "no extra event");
    let mut diff = Vec::new();
    for (invoice, e) in scenario.expected() {
        let Expected {
            detected,
            confirmed,
            failed,
            paid,
            overpaid,
            late,
            confirming,
            ..
        } = e.clone();
        for (t, n) in [
            ("PaymentDetected", detected),
            ("PaymentConfirmed", confirmed),
            ("PaymentFailed", failed),
            ("InvoicePaid", usize::from(paid)),
        ] {
            if count(&o, invoice, t) != n {
                diff.push(format!(
                    "{:?} invoice {invoice}: {t} expected {n}, found {}",
                    e.kind,
                    count(&o, invoice, t)
                ));
            }
        }
        if let Some(n) = confirming
            && count(&o, invoice, "PaymentConfirming") != n
        {
            diff.push(format!(
                "{:?} invoice {invoice}: PaymentConfirming expected {n}, found {}",
                e.kind,
                count(&o, invoice, "PaymentConfirming")
            ));
        }
        if let Some(p) = o.paid.get(&invoice) {
            if p.overpaid_amount.to_string() != overpaid {
                diff.push(format!(
                    "{:?} invoice {invoice}: overpaid expected {overpaid}, found {}",
                    e.kind, p.overpaid_amount
                ));
            }
            if p.late_payment != late {
                diff.push(format!(
                    "{:?} invoice {invoice}: late expected {late}",
                    e.kind
                ));
            }
        }
    }
    for (payment, steps) in &o.confirming {
        if !steps.windows(2).all(|w| w[0] < w[1]) {
            diff.push(format!(
                "payment {payment}: confirmations went backwards or repeated: {steps:?}"
            ));
        }
    }
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    assert_eq!(
        o.notifications,
        scenario.expected().values().filter(|e| e.paid).count(),
        "one invoice_paid e-mail per paid invoice"
    );
    o
}

async fn assert_no_dead_letters(integration: &str) {
    let dlq = events::topics::dead_letter_topic(integration);
    let dead: i64 = flows::harness::end_offsets(&dlq).await.iter().sum();
    assert_eq!(dead, 0, "records were dead-lettered to {dlq}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_payment_path_gives_the_scenarios_events_once() {
    let bus = Bus::new().await;
    let integration = integration_topic().await;
    let scenario = Scenario::every_path(11);
    produce_scenario(&bus, &integration, &scenario).await;
    let service =
        InProcess::start::<Payments>(&bus, &[integration.clone(), bus.domain_topic.clone()]).await;
    wait_and_check(&bus, &scenario, Duration::from_secs(90)).await;
    // The wrong asset and the paid invoice that lost its cover are counted for their alerts, once each.
    for outcome in ["wrong_asset", "paid_invoice_uncovered"] {
        assert_eq!(
            service.counter("payments_reports_total", Some(("outcome", outcome))),
            1.0,
            "{outcome}"
        );
    }
    let refused = flows::service::refusals(&bus, &service.group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert_no_dead_letters(&integration).await;
    // Replayed from the start under a new group: the same ids, nothing new (the outbox's unique event ids would
    // refuse a duplicate, which would show as a refusal).
    let before = outbox(&bus).await;
    service.stop().await;
    let again =
        InProcess::start::<Payments>(&bus, &[integration.clone(), bus.domain_topic.clone()]).await;
    flows::harness::wait_stored(
        bus.pool(),
        &again.group,
        &[integration.as_str()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        outbox(&bus).await.rows,
        before.rows,
        "a replay adds nothing"
    );
    let refused = flows::service::refusals(&bus, &again.group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert_no_dead_letters(&integration).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_address_is_dead_lettered_with_the_reason() {
    let bus = Bus::new().await;
    let integration = integration_topic().await;
    let scenario = Scenario::unknown_address(5);
    produce_scenario(&bus, &integration, &scenario).await;
    let group = testkit::unique_name("payments");
    let mut config = settings::<Payments>(
        &bus,
        &group,
        &[integration.clone(), bus.domain_topic.clone()],
        fast_options(),
    );
    config.service.consumer.policy.retry = Some(RetryPolicy {
        max_retries: 2,
        backoff: Backoff::Fixed {
            interval: Duration::from_millis(300),
        },
    });
    let service = InProcess::start_with::<Payments>(config, group).await;
    // Both reports on the stray output (its sighting and its drop) are dead-lettered with the reason.
    let dlq = read_topic(
        &events::topics::dead_letter_topic(&integration),
        2,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dlq.len(), 2, "two dead letters");
    for letter in &dlq {
        assert_eq!(
            header(letter, "dlq.error.class").as_deref(),
            Some("business")
        );
        assert_eq!(header(letter, "dlq.attempts").as_deref(), Some("3"));
        let message = header(letter, "dlq.error.message").unwrap_or_default();
        assert!(
            message.contains("no invoice has the deposit address")
                && message.contains(scenario::UNKNOWN_ADDRESS),
            "{message}"
        );
    }
    // The known invoice's payment went through all the same.
    wait_and_check(&bus, &scenario, Duration::from_secs(60)).await;
    service.stop().await;
}

fn spawn(binary: &str, config: &std::path::Path, bus: &Bus, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log");
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .env("DATABASE_URL", &bus.db.url)
        .env("CHECKOUT__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn,runtime=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn payments")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkills_lose_and_duplicate_no_domain_event() {
    let bus = Bus::new().await;
    let integration = integration_topic().await;
    let scenario = Scenario::many(23, 60);
    let group = testkit::unique_name("payments-kill");
    let dir = testkit::workspace_root().join(".dev/tmp").join(&group);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("payments.toml");
    std::fs::write(
        &config,
        format!(
            "[service.consumer.policy]\ngroup = \"{group}\"\ntopics = [\"{integration}\", \"{}\"]\n\
             batch_size = 20\nsession_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n\
             [service.consumer.options]\ncommit_interval = \"200ms\"\ndrain_timeout = \"3s\"\n",
            bus.domain_topic
        ),
    )
    .unwrap();
    let log = dir.join("payments.log");
    let binary = env!("CARGO_BIN_EXE_payments");
    let mut child = spawn(binary, &config, &bus, &log);
    // The invoices first, then the reports in four parts, each followed by a SIGKILL while the service works on it.
    let invoices: Vec<(String, Vec<u8>)> = scenario
        .invoice_events()
        .iter()
        .map(|e| (e.partition_key(), events::encode(e).unwrap()))
        .collect();
    produce(&bus.domain_topic, &invoices).await;
    let reports: Vec<(String, Vec<u8>)> = scenario
        .reports()
        .iter()
        .map(|r| (r.partition_key(), r.encode().unwrap()))
        .collect();
    let mut kills = 0;
    for part in reports.chunks(reports.len().div_ceil(4)) {
        produce(&integration, part).await;
        tokio::time::sleep(Duration::from_millis(700 + 300 * kills)).await;
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().expect("reaped");
        kills += 1;
        child = spawn(binary, &config, &bus, &log);
    }
    let result =
        std::panic::AssertUnwindSafe(wait_and_check(&bus, &scenario, Duration::from_secs(120)));
    let checked = futures_lite(result).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = checked {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        eprintln!("payments log (last lines, newest first):\n{tail}");
        std::panic::resume_unwind(panic);
    }
    assert_eq!(kills, 4);
    let refused = flows::service::refusals(&bus, &group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// Runs `f`, catching a panic so the test can clean up its child process first.
async fn futures_lite<F: std::future::Future<Output = T> + std::panic::UnwindSafe, T>(
    f: F,
) -> std::thread::Result<T> {
    use futures_util::FutureExt;
    f.catch_unwind().await
}

#[test]
fn the_scenarios_cover_every_path() {
    let kinds: BTreeSet<Kind> = Scenario::every_path(1)
        .expected()
        .values()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.len(), Kind::ALL.len());
    let _ = (Chaos::default(), Fate::Confirms);
}

/// The events of a payment in the wrong asset and of a paid invoice that lost its cover are accepted downstream:
/// the read models show the wrong-asset payment detected and failed, nothing received; the projections refuse
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_asset_and_uncovered_payments_reach_the_read_models() {
    let bus = Bus::new().await;
    let integration = integration_topic().await;
    let scenario = Scenario::every_path(13);
    let publisher = bus.start_publisher().await;
    let payments =
        InProcess::start::<Payments>(&bus, &[integration.clone(), bus.domain_topic.clone()]).await;
    let projections =
        InProcess::start::<projections::Projections>(&bus, std::slice::from_ref(&bus.domain_topic))
            .await;
    produce_scenario(&bus, &integration, &scenario).await;
    let expected = scenario.expected();
    let wrong = scenario
        .invoices
        .iter()
        .find(|i| i.kind == Kind::WrongAsset)
        .unwrap();
    let started = Instant::now();
    loop {
        let actual = flows::check::projections(bus.pool()).await.unwrap();
        let detected: i32 = actual.invoices.values().map(|i| i.payments_detected).sum();
        let want: usize = expected.values().map(|e| e.detected).sum();
        if detected as usize == want
            && actual
                .invoices
                .get(&wrong.id)
                .is_some_and(|i| i.payments_failed == 1)
        {
            let row = &actual.invoices[&wrong.id];
            assert_eq!(
                (row.status, row.amount_paid.is_zero(), row.payments_detected),
                ("new", true, 1),
                "{row:?}"
            );
            let payment = actual
                .payments
                .values()
                .find(|p| p.invoice_id == wrong.id)
                .expect("the wrong-asset payment's row");
            assert_eq!(payment.status, "failed");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the read models did not show every payment: {detected} of {want} detected"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let refused = flows::service::refusals(&bus, &projections.group).await;
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    projections.stop().await;
    payments.stop().await;
    publisher.stop().await;
}
