//! `checkoutctl groups …` end to end: the real binary against the real broker — a group that committed part of
//! a topic is listed and described with its lag, through the same library as bus-monitor.

mod runner;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn run(args: &[&str]) -> (i32, String, String) {
    run_on(&testkit::infra().database_url, args)
}

fn run_on(database_url: &str, args: &[&str]) -> (i32, String, String) {
    runner::on_stack(database_url, &[&["groups"], args].concat())
}

#[tokio::test]
async fn describe_prints_the_lag_of_a_real_group() {
    let topic = testkit::create_topic(2).await;
    let group = testkit::unique_name("ctl-group");
    let bootstrap = &testkit::infra().bootstrap_servers;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in 0..10 {
        let payload = format!("r{i}");
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .partition(0)
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(3))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();

    let (code, stdout, stderr) = run(&[
        "describe",
        &group,
        "--topic",
        &topic,
        "--samples",
        "2",
        "--interval",
        "200ms",
    ]);
    eprintln!("{stdout}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&topic) && l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or_else(|| panic!("no row for partition 0:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // TOPIC PARTITION COMMITTED END LAG LAG_SECONDS STATUS
    assert_eq!(&cells[1..5], ["0", "3", "10", "7"], "{row}");
    assert!(stdout.contains("max lag 7 messages"), "{stdout}");

    let (code, stdout, _) = run(&[
        "describe",
        &group,
        "--topic",
        &topic,
        "--samples",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["max_lag"], 7);
    assert_eq!(json["offsets"], "kafka");
    let p1 = &json["partitions"][1];
    assert_eq!(
        (
            p1["partition"].as_i64(),
            p1["lag"].as_i64(),
            p1["committed"].is_null()
        ),
        (Some(1), Some(0), true)
    );

    let (code, stdout, _) = run(&["list"]);
    assert_eq!(code, 0);
    assert!(stdout.lines().any(|l| l.starts_with(&group)), "{stdout}");
    assert!(
        stdout.contains("settlement-processing"),
        "platform groups are listed:\n{stdout}"
    );

    let (code, stdout, _) = run(&[
        "describe",
        "no-such-group-anywhere",
        "--topic",
        &topic,
        "--samples",
        "1",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("status ERR") && stdout.contains("group not found"),
        "{stdout}"
    );
}

/// Produces `n` records to partition 0 of a new 2-partition topic.
async fn topic_with_records(n: usize) -> String {
    let topic = testkit::create_topic(2).await;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("r{i}");
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .partition(0)
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    topic
}

fn group_client(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn committed(group: &str, topic: &str) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = group_client(group)
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match got.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test]
async fn reset_offsets_plans_by_default_refuses_a_live_group_and_moves_an_empty_one() {
    let db = testkit::fresh_database().await;
    let topic = topic_with_records(10).await;
    let group = testkit::unique_name("ctl-reset");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(3))
        .unwrap();
    group_client(&group).commit(&tpl, CommitMode::Sync).unwrap();
    let partition_0 = format!("{topic}:0");

    // Dry run: the plan, nothing moved.
    let (code, stdout, stderr) = run_on(
        &db.url,
        &[
            "reset-offsets",
            &group,
            "--topic",
            &partition_0,
            "--to-offset",
            "7",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with(&topic))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..5], ["0", "3", "7", "+4"], "{stdout}");
    assert!(stdout.contains("dry run"), "{stdout}");
    assert_eq!(committed(&group, &topic), Some(3));

    // A live member: refused, nothing moved.
    let member = group_client(&group);
    member.subscribe(&[&topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while member.assignment().unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "never assigned");
        let _ = member.poll(Duration::from_millis(200));
    }
    let (code, stdout, stderr) = run_on(
        &db.url,
        &[
            "reset-offsets",
            &group,
            "--topic",
            &partition_0,
            "--to-offset",
            "7",
            "--execute",
        ],
    );
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("active member"), "{stderr}");
    assert_eq!(committed(&group, &topic), Some(3));
    drop(member);

    // Empty again: applied, and recorded.
    let export = std::env::temp_dir().join(format!("{group}.csv"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, stdout, stderr) = run_on(
            &db.url,
            &[
                "reset-offsets",
                &group,
                "--topic",
                &partition_0,
                "--to-offset",
                "7",
                "--execute",
                "--actor",
                "runbook-test",
                "--export",
                export.to_str().unwrap(),
            ],
        );
        if code == 0 {
            assert!(stdout.contains("applied"), "{stdout}");
            break;
        }
        // The member's leave may take a moment to register.
        assert!(
            stderr.contains("active member") && std::time::Instant::now() < deadline,
            "{stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(committed(&group, &topic), Some(7));
    let csv = std::fs::read_to_string(&export).unwrap();
    assert_eq!(
        csv,
        format!("topic,partition,current,target\n{topic},0,3,7\n")
    );
    let (actor, subject): (String, String) = sqlx::query_as(
        "SELECT actor, subject FROM operator_actions WHERE action = 'groups.reset-offsets'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), subject.as_str()),
        ("runbook-test", group.as_str())
    );
}

#[tokio::test]
async fn reset_offsets_of_a_mode_b_group_moves_its_positions_in_postgresql() {
    let db = testkit::fresh_database().await;
    let topic = topic_with_records(10).await;
    let group = testkit::unique_name("ctl-reset-db");
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 2)",
    )
    .bind(&group)
    .bind(&topic)
    .execute(&db.pool)
    .await
    .unwrap();
    let (code, stdout, stderr) = run_on(
        &db.url,
        &[
            "reset-offsets",
            &group,
            "--topic",
            &topic,
            "--offsets",
            "database",
            "--to-latest",
            "--execute",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["executed"], true);
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 ORDER BY partition",
    )
    .bind(&group)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows, [(0, 10), (1, 0)]);
    // Kafka's commits of the group are not its positions: untouched.
    assert_eq!(committed(&group, &topic), None);
}
