//! `checkoutctl dlq …` end to end: the real binary against the real broker and PostgreSQL, with records
//! dead-lettered by the real consumer runtime. Two groups fail scripted records (schema errors for one, business
//! errors for the other); `list` counts them by class and group; a dry-run replay changes nothing; `--execute
//! --max` replays exactly the cap to the original topic, the group now processes them, and the one that fails
//! again is parked in `<dlq>.parked`, not dead-lettered again; `purge` moves the cursor (list shows 0) and
//! deletes nothing; both actions are in operator_actions.
//!
//! The expected records come from the test's script (which numbers each group fails, before and after the "fix"),
//! never from the command's own output.

mod runner;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use runtime::{
    Backoff, ConsumerOptions, Guarantee, Handler, HandlerCtx, HandlerError, PolicyOverrides,
    Record, RetryPolicy,
};
use service_kit::KafkaSettings;
use tokio_util::sync::CancellationToken;

const RECORDS: u32 = 10;

fn run(database_url: &str, args: &[&str]) -> (i32, String, String) {
    runner::on_stack(database_url, &[&["dlq"], args].concat())
}

fn json(database_url: &str, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = run(database_url, args);
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Fails the records whose number is in `failing` with an error of `class`; remembers every call.
#[derive(Clone)]
struct Flaky {
    failing: Arc<Mutex<BTreeSet<u64>>>,
    schema: bool,
    /// (number, replayed, succeeded)
    calls: Arc<Mutex<Vec<(u64, bool, bool)>>>,
}

impl Flaky {
    fn new(failing: impl IntoIterator<Item = u64>, schema: bool) -> Flaky {
        Flaky {
            failing: Arc::new(Mutex::new(failing.into_iter().collect())),
            schema,
            calls: Default::default(),
        }
    }

    fn replayed_ok(&self) -> BTreeSet<u64> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, replayed, ok)| *replayed && *ok)
            .map(|(n, _, _)| *n)
            .collect()
    }
}

impl Handler for Flaky {
    async fn handle(&self, record: &Record, _ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let value: serde_json::Value =
            serde_json::from_slice(record.value_bytes()?).map_err(HandlerError::schema)?;
        let n = value["n"].as_u64().unwrap();
        let replayed = record.header(runtime::dlq::REPLAY_ID).is_some();
        let fails = self.failing.lock().unwrap().contains(&n);
        self.calls.lock().unwrap().push((n, replayed, !fails));
        match (fails, self.schema) {
            (false, _) => Ok(()),
            (true, true) => Err(HandlerError::schema(format!("record {n} is unreadable"))),
            (true, false) => Err(HandlerError::business(format!("record {n} is refused"))),
        }
    }
}

fn start(
    base: &str,
    topic: &str,
    handler: Flaky,
    pool: sqlx::PgPool,
) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
    let overrides = PolicyOverrides {
        group: Some(testkit::unique_name("ctl-dlq")),
        topics: Some(vec![topic.to_string()]),
        guarantee: Some(Guarantee::AtLeastOnce),
        retry: Some(RetryPolicy {
            max_retries: 1,
            backoff: Backoff::Fixed {
                interval: Duration::from_millis(100),
            },
        }),
        ..Default::default()
    };
    let policy = runtime::GroupPolicy::resolve(base, &overrides).unwrap();
    let group = policy.group.clone();
    let kafka = KafkaSettings {
        bootstrap_servers: testkit::infra().bootstrap_servers.clone(),
        client: Default::default(),
    };
    let consumer = runtime::Consumer::builder(policy, kafka)
        .handler(handler)
        .database(pool)
        .options(ConsumerOptions {
            commit_interval: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        consumer.run(token).await.expect("consumer run");
    });
    (group, shutdown, task)
}

/// The end offset of partition 0 of `topic` (every topic of this test has one partition).
fn end(topic: &str) -> i64 {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .unwrap();
    client
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_within_the_cap_parked_on_refailure_and_purged() {
    let db = testkit::fresh_database().await;
    let topic = testkit::create_topic(1).await;
    let dlq = events::topics::dead_letter_topic(&topic);
    let parked = events::topics::parked_topic(&dlq);
    testkit::create_named_topic(&dlq, 1).await;
    testkit::create_named_topic(&parked, 1).await;

    // Records 0..10 on one partition (so the DLQ holds each group's failures in order).
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .unwrap();
    for n in 0..RECORDS {
        let (key, value) = (format!("k{n}"), format!("{{\"n\":{n}}}"));
        producer
            .send(BaseRecord::to(&topic).key(&key).payload(&value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Group A fails 0..6 (schema: straight to the DLQ); group B fails 6 and 7 (business: one retry, then the DLQ).
    let a = Flaky::new(0..6, true);
    let b = Flaky::new(6..8, false);
    let (group_a, stop_a, task_a) = start(
        runtime::policy::NOTIFICATION_DELIVERY,
        &topic,
        a.clone(),
        db.pool.clone(),
    );
    let (group_b, stop_b, task_b) = start(
        runtime::policy::WEBHOOK_DELIVERY,
        &topic,
        b.clone(),
        db.pool.clone(),
    );
    wait_until("8 records dead-lettered", || end(&dlq) == 8).await;
    assert_eq!(end(&topic), RECORDS as i64);

    // list: 8 pending, by class and by group.
    let listed = json(
        &db.url,
        &["list", "--topic", &dlq, "--topic", &parked, "--json"],
    );
    let row = &listed[0];
    assert_eq!(row["topic"], dlq.as_str());
    assert_eq!(row["pending"], 8, "{listed:#}");
    assert_eq!(row["by_error_class"]["schema"], 6, "{listed:#}");
    assert_eq!(row["by_error_class"]["business"], 2, "{listed:#}");
    assert_eq!(row["by_group"][&group_a], 6, "{listed:#}");
    assert_eq!(row["by_group"][&group_b], 2, "{listed:#}");
    assert!(row["oldest"].is_string() && row["newest"].is_string());
    assert_eq!(listed[1]["kind"], "parked");
    assert_eq!(listed[1]["pending"], 0);

    // show: provenance headers and the value as JSON.
    let shown = json(&db.url, &["show", &dlq, "0:0", "--json"]);
    let header = |doc: &serde_json::Value, name: &str| {
        doc["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .map(|h| h["value"].clone())
    };
    assert_eq!(
        header(&shown, runtime::dlq::ORIGINAL_TOPIC),
        Some(topic.as_str().into())
    );
    assert_eq!(
        header(&shown, runtime::dlq::CONSUMER_GROUP),
        Some(group_a.as_str().into())
    );
    assert_eq!(shown["value"]["n"], 0);
    assert_eq!(shown["key"], "k0");
    let (code, text, _) = run(&db.url, &["show", &dlq, "0:0"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("dlq.error.class: schema") && text.contains("\"n\": 0"),
        "{text}"
    );

    // Dry run: prints group A's 6 records, produces nothing, records nothing.
    let (code, text, stderr) = run(&db.url, &["replay", &dlq, "--group", &group_a]);
    assert_eq!(code, 0, "{text}{stderr}");
    assert!(text.contains("dry run: would replay 6 record(s)"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains(&group_a)).count(), 6);
    assert_eq!(end(&topic), RECORDS as i64, "a dry run produces nothing");
    let actions: i64 = sqlx::query_scalar("SELECT count(*) FROM operator_actions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(actions, 0);

    // The fix is deployed for everything but record 0; replay group A's failures, at most 4.
    *a.failing.lock().unwrap() = BTreeSet::from([0]);
    let (code, text, stderr) = run(
        &db.url,
        &[
            "replay",
            &dlq,
            "--group",
            &group_a,
            "--execute",
            "--max",
            "4",
            "--rate",
            "50",
            "--operator",
            "dlq-test",
        ],
    );
    assert_eq!(code, 0, "{text}{stderr}");
    assert!(text.contains("replayed 4 record(s)"), "{text}");
    assert!(text.contains("2 more matched beyond --max 4"), "{text}");
    assert_eq!(end(&topic), RECORDS as i64 + 4, "exactly the cap replayed");

    // Group A processes 1, 2 and 3; 0 fails again and is parked, not dead-lettered again.
    wait_until("records 1..4 processed after the replay", || {
        a.replayed_ok() == BTreeSet::from([1, 2, 3])
    })
    .await;
    wait_until("record 0 parked", || end(&parked) == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        end(&dlq),
        8,
        "no loop: the refailure did not go back to the DLQ"
    );
    assert_eq!(end(&parked), 1);
    // Group B saw the replayed records too and had nothing against them.
    assert!(b.replayed_ok().is_superset(&BTreeSet::from([0, 1, 2, 3])));

    let parked_record = json(&db.url, &["show", &parked, "0:0", "--json"]);
    assert_eq!(parked_record["value"]["n"], 0);
    assert_eq!(
        header(&parked_record, runtime::dlq::REPLAY_COUNT),
        Some("1".into())
    );
    assert_eq!(
        header(&parked_record, runtime::dlq::REPLAY_OPERATOR),
        Some("dlq-test".into())
    );
    assert_eq!(
        header(&parked_record, runtime::dlq::REPLAY_FROM_TOPIC),
        Some(dlq.as_str().into())
    );
    assert_eq!(
        header(&parked_record, runtime::dlq::CONSUMER_GROUP),
        Some(group_a.as_str().into())
    );
    let listed = json(&db.url, &["list", "--topic", &parked, "--json"]);
    assert_eq!(listed[0]["pending"], 1);
    assert_eq!(listed[0]["by_group"][&group_a], 1);

    let (actor, subject, produced): (String, String, i64) = sqlx::query_as(
        "SELECT actor, subject, (details->>'produced')::bigint FROM operator_actions WHERE action = 'dlq.replay'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), subject.as_str(), produced),
        ("dlq-test", dlq.as_str(), 4)
    );

    // Purge: a dry run first (nothing moves), then everything; the records stay.
    let (code, text, _) = run(&db.url, &["purge", &dlq, "--all"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("dry run: would move the cursor past 8"),
        "{text}"
    );
    assert_eq!(
        json(&db.url, &["list", "--topic", &dlq, "--json"])[0]["pending"],
        8
    );
    let (code, text, stderr) = run(
        &db.url,
        &[
            "purge",
            &dlq,
            "--all",
            "--execute",
            "--operator",
            "dlq-test",
        ],
    );
    assert_eq!(code, 0, "{text}{stderr}");
    let listed = json(&db.url, &["list", "--topic", &dlq, "--json"]);
    assert_eq!(listed[0]["pending"], 0, "{listed:#}");
    assert_eq!(listed[0]["purged"], 8, "{listed:#}");
    assert_eq!(end(&dlq), 8, "purge deletes nothing");
    assert_eq!(
        json(&db.url, &["show", &dlq, "0:0", "--json"])["purged"],
        true
    );
    // Nothing left to replay past the cursor.
    let (_, text, _) = run(&db.url, &["replay", &dlq]);
    assert!(text.contains("would replay 0 record(s)"), "{text}");
    let purges: Vec<(String, i64)> = sqlx::query_as(
        "SELECT actor, (details->>'records')::bigint FROM operator_actions WHERE action = 'dlq.purge'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(purges, [("dlq-test".to_string(), 8)]);

    stop_a.cancel();
    stop_b.cancel();
    task_a.await.unwrap();
    task_b.await.unwrap();
}

#[test]
fn bad_selections_and_unknown_topics_fail_with_a_clear_error() {
    let url = &testkit::infra().database_url;
    let (code, _, stderr) = run(url, &["replay", "x.dlq", "--offsets", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("PARTITION:FROM-TO"), "{stderr}");
    let (code, _, stderr) = run(url, &["replay", "not-a-dlq"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("neither a dead-letter topic"), "{stderr}");
    let missing = testkit::unique_name("nothing") + ".dlq";
    let (code, _, stderr) = run(url, &["show", &missing, "0:0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (code, _, stderr) = run(url, &["purge", &missing]);
    assert_eq!(
        code, 2,
        "one of --all, --through, --before is required: {stderr}"
    );
}
