//! `checkoutctl groups …` end to end: the real binary against the real broker — a group that committed part of
//! a topic is listed and described with its lag, through the same library as bus-monitor.

use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .arg("groups")
        .args(args)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .env("DATABASE_URL", &testkit::infra().database_url)
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap(),
        text(output.stdout),
        text(output.stderr),
    )
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
