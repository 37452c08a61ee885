//! `checkoutctl topics backup` / `topics restore` end to end: the real binary against the real broker and
//! database (decision 0041). Every expectation comes from what the test itself produced (the broker's delivery
//! reports: partition and offset of each record) and reads back from Kafka, never from the backup code; the
//! backup's files are read here with a plain JSON parser, following the documented format.

mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// What a consumer sees of a record: key, value, headers, timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

/// Per partition, (source offset, record) in offset order.
type Produced = BTreeMap<i32, Vec<(i64, Seen)>>;

fn bootstrap() -> String {
    testkit::infra().bootstrap_servers.clone()
}

fn run(database_url: &str, args: &[&str]) -> (i32, String, String) {
    runner::on_stack(database_url, &[&["topics"], args].concat())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(testkit::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first record's timestamp: an hour ago, so every explicit timestamp stays inside the topic's retention
/// (168 h). Timestamps from 2023 made the broker's retention check (every 5 min) delete the records between
/// produce and backup whenever the suite ran long: the backup then reported a gap that was really there.
fn base_timestamp() -> i64 {
    static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_millis() as i64 - 3_600_000
    });
    *BASE
}

/// Produces `n` records (keys spread over the partitions, some null values, headers incl. a null one, explicit
/// timestamps) in transactions of `per_tx`, aborting every `abort_every`-th transaction (0: never); returns what
/// the broker acknowledged of the committed ones.
fn produce(topic: &str, start: usize, n: usize, per_tx: usize, abort_every: usize) -> Produced {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", testkit::unique_name("backup-test-tx"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let mut sent: Vec<(String, Seen)> = Vec::new();
    let mut tx: usize = 0;
    let mut i = start;
    while i < start + n {
        producer.begin_transaction().unwrap();
        let mut batch = Vec::new();
        for _ in 0..per_tx.min(start + n - i) {
            let seen = Seen {
                key: Some(format!("key-{}", i % 17).into_bytes()),
                value: (!i.is_multiple_of(11))
                    .then(|| format!("value-{i}-\u{e9}\n\0").into_bytes()),
                headers: vec![
                    ("event-id".into(), Some(format!("e-{i}").into_bytes())),
                    ("empty".into(), None),
                ],
                timestamp: Some(base_timestamp() + i as i64 * 1000),
            };
            let mut headers = OwnedHeaders::new();
            for (k, v) in &seen.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .key(seen.key.as_deref().unwrap())
                .headers(headers)
                .timestamp(seen.timestamp.unwrap());
            if let Some(v) = &seen.value {
                record = record.payload(v);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
            batch.push((format!("e-{i}"), seen));
            i += 1;
        }
        tx += 1;
        if abort_every > 0 && tx.is_multiple_of(abort_every) {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        } else {
            producer
                .commit_transaction(Duration::from_secs(30))
                .unwrap();
            sent.extend(batch);
        }
    }
    // Where each committed record landed: read back from the broker by event id.
    let by_id: BTreeMap<String, Seen> = sent.into_iter().collect();
    let mut out: Produced = BTreeMap::new();
    for (p, offset, seen) in read_all(topic) {
        let id = seen
            .headers
            .iter()
            .find(|(k, _)| k == "event-id")
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v).unwrap())
            .unwrap();
        if let Some(expected) = by_id.get(&id) {
            assert_eq!(&seen, expected, "the broker returned another record");
            out.entry(p).or_default().push((offset, seen));
        }
    }
    out
}

/// Merges two productions (the second produced after the first).
fn merge(mut a: Produced, b: Produced) -> Produced {
    for (p, rs) in b {
        let v = a.entry(p).or_default();
        v.extend(rs);
        v.sort_by_key(|(o, _)| *o);
        v.dedup_by_key(|(o, _)| *o);
    }
    a
}

/// Every committed record of `topic` as (partition, offset, record), read_committed, to the end.
fn read_all(topic: &str) -> Vec<(i32, i64, Seen)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "backup-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut eof = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while eof.len() < n as usize {
        assert!(std::time::Instant::now() < deadline, "reading {topic}");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("{e}"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    Seen {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp: m.timestamp().to_millis(),
                    },
                ));
            }
        }
    }
    out.sort_by_key(|(p, o, _)| (*p, *o));
    out
}

/// The records of `topic` per partition, in offset order, without offsets.
fn contents(topic: &str) -> BTreeMap<i32, Vec<Seen>> {
    let mut out: BTreeMap<i32, Vec<Seen>> = BTreeMap::new();
    for (p, _, seen) in read_all(topic) {
        out.entry(p).or_default().push(seen);
    }
    out
}

fn without_offsets(produced: &Produced) -> BTreeMap<i32, Vec<Seen>> {
    produced
        .iter()
        .map(|(p, rs)| (*p, rs.iter().map(|(_, s)| s.clone()).collect()))
        .collect()
}

/// Source offsets in the backup of `topic` per partition, read from the files as the format documents them
/// (only the bytes the manifest counts).
fn backed_up_offsets(dir: &Path, topic: &str) -> BTreeMap<i32, Vec<i64>> {
    let tdir = dir.join(topic);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(tdir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], "checkoutctl-topic-backup");
    assert_eq!(manifest["version"], 1);
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, state) in manifest["state"].as_object().unwrap() {
        let p: i32 = p.parse().unwrap();
        let entry = out.entry(p).or_default();
        for seg in state["segments"].as_array().unwrap() {
            let bytes = std::fs::read(tdir.join(seg["file"].as_str().unwrap())).unwrap();
            let counted = &bytes[..seg["bytes"].as_u64().unwrap() as usize];
            for line in counted.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let r: Value = serde_json::from_slice(line).unwrap();
                assert_eq!(r["partition"], p);
                entry.push(r["offset"].as_i64().unwrap());
            }
        }
    }
    out
}

fn offsets_of(produced: &Produced) -> BTreeMap<i32, Vec<i64>> {
    produced
        .iter()
        .map(|(p, rs)| (*p, rs.iter().map(|(o, _)| *o).collect()))
        .collect()
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn backup_delete_restore_preserves_every_record_in_partition_order() {
    let topic = testkit::create_topic(3).await;
    // Aborted transactions must not be backed up (read_committed); their offsets leave holes.
    let produced = produce(&topic, 0, 600, 7, 5);
    let dir = temp_dir("backup-roundtrip");
    let db = &testkit::infra().database_url;
    let (code, stdout, stderr) = run(
        db,
        &[
            "backup",
            "--dir",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--once",
            "--segment-bytes",
            "4096",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = json(&stdout);
    let total: usize = produced.values().map(Vec::len).sum();
    assert_eq!(summary["records"], total as u64, "{stdout}");
    assert_eq!(backed_up_offsets(&dir, &topic), offsets_of(&produced));

    // The corruption: the topic's data is gone.
    testkit::delete_topic(&topic).await;
    testkit::create_named_topic(&topic, 3).await;
    let (code, stdout, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let summary = json(&stdout);
    assert_eq!(summary["records"], total as u64);
    assert_eq!(contents(&topic), without_offsets(&produced));
    // The offset map: every source offset once, to a dense target offset per partition.
    let map = std::fs::read_to_string(summary["offset_map"].as_str().unwrap()).unwrap();
    let mut mapped: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for line in map.lines().skip(1) {
        let f: Vec<i64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        mapped.entry(f[0] as i32).or_default().push((f[1], f[2]));
    }
    for (p, rs) in &produced {
        let want: Vec<(i64, i64)> = rs
            .iter()
            .enumerate()
            .map(|(i, (o, _))| (*o, i as i64))
            .collect();
        assert_eq!(mapped[p], want, "offset map of partition {p}");
    }
}

#[tokio::test]
async fn a_killed_backup_resumes_without_gaps_or_duplicates() {
    let topic = testkit::create_topic(2).await;
    let dir = temp_dir("backup-resume");
    let first = produce(&topic, 0, 3000, 50, 0);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .args([
            "topics",
            "backup",
            "--dir",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--flush-interval",
            "50ms",
            "--segment-bytes",
            "20000",
        ])
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed (no chance to flush) once a first manifest is there, while it is still copying.
    let manifest = dir.join(&topic).join("manifest.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !manifest.exists() {
        assert!(std::time::Instant::now() < deadline, "no manifest written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = produce(&topic, 3000, 500, 50, 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let third = produce(&topic, 3500, 500, 50, 0);
    let produced = merge(merge(first, second), third);
    let (code, stdout, stderr) = run(
        &testkit::infra().database_url,
        &[
            "backup",
            "--dir",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--once",
            "--segment-bytes",
            "20000",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(backed_up_offsets(&dir, &topic), offsets_of(&produced));
    // And it restores to exactly what was produced.
    let into = format!("{topic}.restored");
    let (code, stdout, stderr) = run(
        &testkit::infra().database_url,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--into",
            &into,
            "--file",
            testkit::workspace_root()
                .join("deploy/kafka/topics.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(contents(&into), without_offsets(&produced));
}

#[tokio::test]
async fn restore_refuses_a_target_that_holds_records_and_a_missing_backup() {
    let topic = testkit::create_topic(2).await;
    let produced = produce(&topic, 0, 40, 10, 0);
    let dir = temp_dir("backup-refuse");
    let db = &testkit::infra().database_url;
    let (code, stdout, stderr) = run(
        db,
        &[
            "backup",
            "--dir",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--once",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Restoring over the topic itself (which still holds its records) is refused.
    let (code, stdout, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--json",
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("target topic {topic} is not empty")),
        "{stderr}"
    );
    assert_eq!(json(&stdout)["refused"], true);
    assert_eq!(contents(&topic), without_offsets(&produced), "changed");
    // A topic with another partition count is refused too.
    let other = testkit::create_topic(3).await;
    let (code, _, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--into",
            &other,
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("3 partition(s), the backup 2"), "{stderr}");
    // No backup of that topic / no directory: a clear error, exit 2.
    let (code, _, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            "crypto-checkout.nothing-here",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no backup of crypto-checkout.nothing-here"),
        "{stderr}"
    );
    let (code, _, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            "/nonexistent/backup",
            "--topic",
            &topic,
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    // A damaged segment refuses the restore before anything is written.
    let seg = std::fs::read_dir(dir.join(&topic))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() / 2]).unwrap();
    let fresh = format!("{topic}.fresh");
    let (code, _, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--into",
            &fresh,
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    // With --force the records are appended after those already there.
    std::fs::write(&seg, &bytes).unwrap();
    let (code, stdout, stderr) = run(
        db,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--force",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let doubled: BTreeMap<i32, Vec<Seen>> = without_offsets(&produced)
        .into_iter()
        .map(|(p, rs)| (p, rs.iter().chain(rs.iter()).cloned().collect()))
        .collect();
    assert_eq!(contents(&topic), doubled);
}

fn commit(group: &str, topic: &str, positions: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in positions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// The target offset a source position must land on: the number of restored records before it (targets are
/// dense from 0 in a fresh topic), i.e. the first record at or after the position.
fn expected_target(produced: &Produced, p: i32, position: i64) -> i64 {
    produced[&p].iter().filter(|(o, _)| *o < position).count() as i64
}

#[tokio::test]
async fn repointed_groups_land_on_the_translated_offsets_and_active_groups_are_refused() {
    let topic = testkit::create_topic(2).await;
    // Transactions of 3: every 4th offset is a commit marker, so source and target offsets differ.
    let produced = produce(&topic, 0, 120, 3, 0);
    let db = testkit::fresh_database().await;
    let kafka_group = testkit::unique_name("restore-kafka-group");
    let db_group = testkit::unique_name("restore-db-group");
    // Positions inside the partitions, on a marker, and at the end.
    let kafka_positions = [(0, 9i64), (1, produced[&1][5].0 + 1)];
    commit(&kafka_group, &topic, &kafka_positions);
    let db_positions = [(0, 3i64), (1, produced[&1].last().unwrap().0 + 2)];
    for (p, o) in db_positions {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)",
        )
        .bind(&db_group)
        .bind(&topic)
        .bind(p)
        .bind(o)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let dir = temp_dir("backup-groups");
    let (code, stdout, stderr) = run(
        &db.url,
        &[
            "backup",
            "--dir",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--group",
            &kafka_group,
            "--once",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    testkit::delete_topic(&topic).await;
    testkit::create_named_topic(&topic, 2).await;

    // An active member of a group refuses the move, before anything is written.
    let active = testkit::unique_name("restore-active-group");
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &active)
        .create()
        .unwrap();
    member.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while member.assignment().unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "never joined");
        member.poll(Duration::from_millis(100));
    }
    let (code, stdout, stderr) = run(
        &db.url,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--repoint-groups",
            "--group",
            &active,
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("group {active} has 1 active member(s)")),
        "{stderr}"
    );
    assert!(read_all(&topic).is_empty(), "written despite the refusal");
    drop(member);

    let (code, stdout, stderr) = run(
        &db.url,
        &[
            "restore",
            "--from",
            dir.to_str().unwrap(),
            "--topic",
            &topic,
            "--repoint-groups",
            "--actor",
            "test",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(json(&stdout)["repointed"], true);
    let want: Vec<i64> = kafka_positions
        .iter()
        .map(|(p, o)| expected_target(&produced, *p, *o))
        .collect();
    assert_eq!(committed(&kafka_group, &topic, 2), want);
    assert!(
        want[0] > 0 && want[0] < 9,
        "the case must translate: {want:?}"
    );
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 ORDER BY 1",
    )
    .bind(&db_group)
    .bind(&topic)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let want_db: Vec<(i32, i64)> = db_positions
        .iter()
        .map(|(p, o)| (*p, expected_target(&produced, *p, *o)))
        .collect();
    assert_eq!(rows, want_db);
    assert_eq!(
        want_db[1].1,
        produced[&1].len() as i64,
        "a position at the end stays at the end"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operator_actions WHERE action = 'topics.restore' AND subject = $1 AND actor = 'test'",
    )
    .bind(&topic)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1);
}
