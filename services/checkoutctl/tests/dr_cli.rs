//! `checkoutctl dr failover` end to end: the real binary against the real broker and database. MirrorMaker 2's
//! internal topics are written here with records in MirrorMaker's own format (the encoder below reproduces the
//! bytes captured from Kafka's `Checkpoint`/`OffsetSync` classes, checked in `encoder_matches_mirror_maker`), and
//! the expected positions follow MirrorMaker's documented translation rule, computed by hand.

mod runner;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

fn run(database_url: &str, args: &[&str]) -> (i32, String, String) {
    runner::checkoutctl(
        &[&["dr", "failover"], args].concat(),
        &[
            ("DATABASE_URL", Some(database_url)),
            ("DR_BOOTSTRAP_SERVERS", None),
        ],
    )
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// MirrorMaker's `Checkpoint` record: key {group, topic, partition}, value {version 0}{upstream, downstream, metadata}.
fn checkpoint(
    group: &str,
    topic: &str,
    partition: i32,
    upstream: i64,
    downstream: i64,
) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::new();
    string(&mut key, group);
    string(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&upstream.to_be_bytes());
    value.extend_from_slice(&downstream.to_be_bytes());
    string(&mut value, "");
    (key, value)
}

/// MirrorMaker's `OffsetSync` record: key {topic, partition}, value {upstream, downstream}.
fn sync(topic: &str, partition: i32, upstream: i64, downstream: i64) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::new();
    string(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    let mut value = upstream.to_be_bytes().to_vec();
    value.extend_from_slice(&downstream.to_be_bytes());
    (key, value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn encoder_matches_mirror_maker() {
    // Captured from connect-mirror-client 4.3.1 (see dr_cmd's unit tests).
    let (k, v) = checkpoint(
        "settlement-processing",
        "crypto-checkout.domain-events",
        7,
        1500,
        1234,
    );
    assert_eq!(
        hex(&k),
        "0015736574746c656d656e742d70726f63657373696e67001d63727970746f2d636865636b6f75742e646f6d61696e2d6576656e747300000007"
    );
    assert_eq!(hex(&v), "000000000000000005dc00000000000004d20000");
    let (k, v) = sync("crypto-checkout.domain-events", 7, 1400, 1150);
    assert_eq!(
        hex(&k),
        "001d63727970746f2d636865636b6f75742e646f6d61696e2d6576656e747300000007"
    );
    assert_eq!(hex(&v), "0000000000000578000000000000047e");
}

fn produce(topic: &str, partition: Option<i32>, records: &[(Vec<u8>, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .unwrap();
    for (k, v) in records {
        let mut record = BaseRecord::to(topic).key(k).payload(v);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match tpl.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// `(topic, partition) → (upstream, target, source)` of `group` in the JSON plan.
fn moves(plan: &Value, group: &str) -> Vec<(i64, i64, i64, String)> {
    let g = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("group {group} in the plan: {plan}"));
    g["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["partition"].as_i64().unwrap(),
                m["upstream"].as_i64().unwrap(),
                m["target"].as_i64().unwrap(),
                m["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn failover_translates_checkpoints_and_database_positions() {
    let infra = testkit::infra();
    let bootstrap = infra.bootstrap_servers.as_str();
    let alias = testkit::unique_name("drtest");
    // The mirrored topic on the "DR" cluster: 10 records in partition 0, 5 in 1, none in 2.
    let topic = testkit::create_topic(3).await;
    let filler = |n: usize| -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| (b"k".to_vec(), format!("{i}").into_bytes()))
            .collect()
    };
    produce(&topic, Some(0), &filler(10));
    produce(&topic, Some(1), &filler(5));
    let checkpoints = format!("{alias}.checkpoints.internal");
    let syncs = format!("mm2-offset-syncs.{alias}.internal");
    flows::harness::create_named_topic(&checkpoints, 1).await;
    flows::harness::create_named_topic(&syncs, 1).await;

    let kafka_group = testkit::unique_name("drtest-kafka");
    let db_group = testkit::unique_name("drtest-db");
    // An older checkpoint of partition 0 first: the last one per partition wins.
    produce(
        &checkpoints,
        None,
        &[
            checkpoint(&kafka_group, &topic, 0, 10, 3),
            checkpoint(&kafka_group, &topic, 0, 20, 7),
            checkpoint(&kafka_group, &topic, 1, 9, 4),
        ],
    );
    produce(
        &syncs,
        None,
        &[
            sync(&topic, 0, 0, 0),
            sync(&topic, 0, 12, 5),
            sync(&topic, 0, 18, 6),
            sync(&topic, 1, 0, 0),
        ],
    );
    let db = testkit::fresh_database().await;
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, ahead) VALUES \
         ($1, $2, 0, 15, '{16,17}'), ($1, $2, 1, 0, '{}'), ($1, $2, 2, 3, '{}')",
    )
    .bind(&db_group)
    .bind(&topic)
    .execute(&db.pool)
    .await
    .unwrap();

    let common = [
        "--dr-bootstrap-servers",
        bootstrap,
        "--source-alias",
        &alias,
        "--group",
        &kafka_group,
        "--group",
        &db_group,
    ];
    // Dry run: the plan, nothing changed.
    let (code, out, err) = run(&db.url, &[&common[..], &["--json"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["ok"], true);
    // Kafka group: the checkpoints' downstream offsets; partition 2 had none: earliest (0), upstream unknown.
    assert_eq!(
        moves(&plan, &kafka_group),
        [
            (0, 20, 7, "checkpoint".into()),
            (1, 9, 4, "checkpoint".into()),
            (2, -1, 0, "earliest".into())
        ]
    );
    // Database group: 15 is past the sync 12→5, so 6 (13..14 replayed, never skipped); 0 is the sync 0→0;
    // partition 2 has no sync: earliest.
    assert_eq!(
        moves(&plan, &db_group),
        [
            (0, 15, 6, "offset_sync".into()),
            (1, 0, 0, "offset_sync".into()),
            (2, 3, 0, "earliest".into())
        ]
    );
    assert_eq!(committed(&kafka_group, &topic, 3), [-1, -1, -1]);

    // Execute: committed on the broker, rewritten in the database, recorded.
    let (code, out, err) = run(
        &db.url,
        &[&common[..], &["--execute", "--actor", "drill"]].concat(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied:"), "{out}");
    assert!(
        out.contains(&format!("KAFKA_BOOTSTRAP_SERVERS={bootstrap}")),
        "{out}"
    );
    assert_eq!(committed(&kafka_group, &topic, 3), [7, 4, 0]);
    let stored: Vec<(i32, i64, Vec<i64>)> = sqlx::query_as(
        "SELECT partition, next_offset, ahead FROM consumer_offsets WHERE consumer_group = $1 ORDER BY 1",
    )
    .bind(&db_group)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored, [(0, 6, vec![]), (1, 0, vec![]), (2, 0, vec![])]);
    let actions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operator_actions WHERE action = 'dr.failover' AND subject = $1 AND actor = 'drill'",
    )
    .bind(&alias)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(actions, 1);

    // A second execute would translate DR positions again: refused, exit 1, nothing moved.
    let (code, out, err) = run(&db.url, &[&common[..], &["--execute", "--json"]].concat());
    assert_eq!(code, 1, "{out}{err}");
    let refused: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(refused["ok"], false);
    assert!(
        refused["refused"]
            .as_str()
            .unwrap()
            .contains("already failed over")
    );
    let next: i64 = sqlx::query_scalar(
        "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND partition = 0",
    )
    .bind(&db_group)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(next, 6);
}

#[tokio::test]
async fn without_mirror_maker_it_cannot_run() {
    let infra = testkit::infra();
    let alias = testkit::unique_name("drtest-none");
    let (code, out, err) = run(
        &infra.database_url,
        &[
            "--dr-bootstrap-servers",
            &infra.bootstrap_servers,
            "--source-alias",
            &alias,
            "--json",
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{alias}.checkpoints.internal does not exist")),
        "{v}"
    );
    let (code, out, err) = run(
        &infra.database_url,
        &[
            "--dr-bootstrap-servers",
            &infra.bootstrap_servers,
            "--source-alias",
            &alias,
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is MirrorMaker 2 replicating"), "{err}");
}

#[test]
fn help_explains_the_command() {
    let (code, help, _) = runner::checkoutctl(&["dr", "failover", "--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "checkpoints.internal",
        "mm2-offset-syncs",
        "--execute",
        "--json",
        "Exit codes",
        "--dr-bootstrap-servers",
    ] {
        assert!(help.contains(needle), "`{needle}` in:\n{help}");
    }
}
