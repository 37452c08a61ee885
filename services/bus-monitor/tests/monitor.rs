//! bus-monitor against the real broker and database, in-process: lag in messages and seconds, Burrow status
//! for a stopped (STOP), a live but stuck (STALL) and a caught-up (OK) group, a mode (b) group read from
//! `consumer_offsets`, every series on `/metrics`, the canary's round trip, and `/ready` while the broker is
//! unreachable.

use std::time::{Duration, Instant};

use bus_monitor::{Config, MonitorSettings, settings::CanarySettings};
use lag::{GroupSpec, OffsetSource};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use service_kit::shutdown::CancellationToken;
use service_kit::{KafkaSettings, Settings};

fn config(bootstrap: &str, service: MonitorSettings) -> Config {
    Settings {
        kafka: KafkaSettings {
            bootstrap_servers: bootstrap.to_string(),
            client: Default::default(),
        },
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    }
}

fn produce(topic: &str, partition: i32, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .unwrap();
    for i in 0..n {
        let payload = format!("record {i}");
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(partition)
                    .payload(&payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Commits `offsets` for `group` without joining it (the group stays Empty).
fn commit(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// A member of `group` that stays in the group (polls) while `live`, commits offset 5 of partition 0 once it is
/// assigned, and never commits again.
fn stuck_member(group: &str, topic: &str, live: &std::sync::atomic::AtomicBool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut committed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while live.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(100));
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if !committed && assigned > 0 {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Offset(5))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Sync).unwrap();
            committed = true;
        }
    }
    assert!(committed, "the stuck member never got its partitions");
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the series whose line starts with `series` (name and labels exactly as rendered).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `check` passes, or panics with the last page.
async fn wait_metrics(
    base: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        if check(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}; last /metrics:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_status_database_groups_and_canary_on_the_real_broker() {
    let topic = testkit::create_topic(2).await;
    let canary_topic = testkit::create_topic(2).await;
    let db = testkit::fresh_database().await;
    let stopped = testkit::unique_name("stopped");
    let caught_up = testkit::unique_name("caught-up");
    let mode_b = testkit::unique_name("mode-b");
    let stuck = testkit::unique_name("stuck");

    // 20 records on partition 0, 10 on partition 1; the stopped group committed 5 and 10 and left.
    produce(&topic, 0, 20);
    produce(&topic, 1, 10);
    commit(&stopped, &topic, &[(0, 5), (1, 10)]);
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, 0, 12)",
    )
    .bind(&mode_b)
    .bind(&topic)
    .execute(&db.pool)
    .await
    .unwrap();

    // A live member that committed 5 on partition 0 and makes no progress (a record blocking it).
    let live = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let member = {
        let (live, group, topic) = (live.clone(), stuck.clone(), topic.clone());
        std::thread::spawn(move || stuck_member(&group, &topic, &live))
    };

    let group = |name: &str, offsets| GroupSpec {
        group: name.to_string(),
        topics: vec![topic.clone()],
        offsets,
    };
    let service = MonitorSettings {
        poll_interval: Duration::from_millis(500),
        platform_groups: false,
        groups: vec![
            group(&stopped, OffsetSource::Kafka),
            group(&caught_up, OffsetSource::Kafka),
            group(&mode_b, OffsetSource::Database),
            group(&stuck, OffsetSource::Kafka),
        ],
        canary: CanarySettings {
            topic: canary_topic.clone(),
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut config = config(&testkit::infra().bootstrap_servers, service);
    config.database.url = Some(db.url.clone().into());
    let shutdown = CancellationToken::new();
    let running = bus_monitor::start(config, shutdown.clone())
        .await
        .expect("bus-monitor starts");
    let base = format!("http://{}", running.ops_addr);

    let lag = |g: &str, p: i32| {
        format!(r#"kafka_consumergroup_group_lag{{group="{g}",partition="{p}",topic="{topic}"}}"#)
    };
    let lag_seconds = |g: &str, p: i32| {
        format!(
            r#"kafka_consumergroup_group_lag_seconds{{group="{g}",partition="{p}",topic="{topic}"}}"#
        )
    };
    let status = |g: &str| format!(r#"kafka_consumergroup_status{{group="{g}"}}"#);

    // First poll: lag in messages, no lag in seconds yet (one end-offset sample per partition).
    let first = wait_metrics(&base, "first poll", Duration::from_secs(20), |m| {
        value(m, &lag(&stopped, 0)).is_some()
    })
    .await;
    assert_eq!(value(&first, &lag(&stopped, 0)), Some(15.0), "{first}");
    assert_eq!(value(&first, &lag(&stopped, 1)), Some(0.0), "{first}");
    assert_eq!(get(&format!("{base}/ready")).await.0, 200);

    // The topic moves on: 5 more records; the caught-up group commits the new ends.
    produce(&topic, 0, 5);
    commit(&caught_up, &topic, &[(0, 25), (1, 10)]);

    let text = wait_metrics(
        &base,
        "lag 20 with lag seconds, STOP, caught-up OK",
        Duration::from_secs(30),
        |m| {
            value(m, &lag(&stopped, 0)) == Some(20.0)
                && value(m, &lag_seconds(&stopped, 0)).is_some_and(|s| s > 0.0)
                && value(m, &status(&stopped)).is_some_and(|s| s == 3.0 || s == 2.0)
                && value(m, &status(&caught_up)) == Some(0.0)
                && value(m, &lag(&mode_b, 0)) == Some(13.0)
                && value(m, &status(&stuck)) == Some(2.0)
        },
    )
    .await;
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.contains(&topic) || l.contains("status"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        value(&text, &status(&stopped)),
        Some(3.0),
        "a dead consumer with lag is STOP:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_consumergroup_group_max_lag{{group="{stopped}"}}"#)
        ),
        Some(20.0)
    );
    // Never absurd: the records waiting were produced during this test, well under a minute ago.
    let max_lag_seconds = value(
        &text,
        &format!(r#"kafka_consumergroup_group_max_lag_seconds{{group="{stopped}"}}"#),
    )
    .unwrap();
    assert!(
        max_lag_seconds > 0.0 && max_lag_seconds < 60.0,
        "{max_lag_seconds}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_consumergroup_members{{group="{stopped}"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"kafka_consumergroup_group_offset{{group="{stopped}",partition="0",topic="{topic}"}}"#
            )
        ),
        Some(5.0)
    );
    // The live member stuck at 5: STALL, not STOP.
    assert_eq!(value(&text, &lag(&stuck, 0)), Some(20.0));
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_consumergroup_members{{group="{stuck}"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, &lag(&caught_up, 0)), Some(0.0));
    assert_eq!(value(&text, &lag_seconds(&caught_up, 0)), Some(0.0));
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_consumergroup_group_max_lag{{group="{caught_up}"}}"#)
        ),
        Some(0.0)
    );
    // Mode (b): the offset is the database's; partition 1 has no row, so it lags from the earliest offset.
    assert_eq!(
        value(
            &text,
            &format!(
                r#"kafka_consumergroup_group_offset{{group="{mode_b}",partition="0",topic="{topic}"}}"#
            )
        ),
        Some(12.0)
    );
    assert_eq!(value(&text, &lag(&mode_b, 1)), Some(10.0));
    assert_eq!(
        value(
            &text,
            &format!(r#"bus_monitor_group_info{{group="{mode_b}",offsets="database"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_partition_latest_offset{{partition="0",topic="{topic}"}}"#)
        ),
        Some(25.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"kafka_partition_earliest_offset{{partition="0",topic="{topic}"}}"#)
        ),
        Some(0.0)
    );
    assert!(value(&text, "bus_monitor_poll_seconds_count").unwrap() >= 2.0);
    assert!(text.contains("bus_monitor_poll_errors_total"));

    // The canary: probes come back, none lost.
    let text = wait_metrics(&base, "canary round trips", Duration::from_secs(30), |m| {
        value(m, "canary_probes_received_total").is_some_and(|n| n >= 10.0)
    })
    .await;
    let (sent, received, lost) = (
        value(&text, "canary_probes_sent_total").unwrap(),
        value(&text, "canary_probes_received_total").unwrap(),
        value(&text, "canary_probes_lost_total").unwrap(),
    );
    eprintln!(
        "canary: sent {sent} received {received} lost {lost}; round trip sum {:?} s over {:?}; ack sum {:?} s",
        value(&text, "canary_roundtrip_seconds_sum"),
        value(&text, "canary_roundtrip_seconds_count"),
        value(&text, "canary_produce_ack_seconds_sum")
    );
    assert_eq!(lost, 0.0, "{text}");
    assert!(value(&text, "canary_produce_ack_seconds_count").unwrap() > 0.0);
    assert!(value(&text, "canary_roundtrip_seconds_count").unwrap() >= 10.0);

    live.store(false, std::sync::atomic::Ordering::Relaxed);
    member.join().unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("bus-monitor stops within 30 s")
        .expect("bus-monitor stops cleanly");
}

#[tokio::test]
async fn not_ready_and_err_while_the_broker_is_unreachable() {
    let service = MonitorSettings {
        poll_interval: Duration::from_millis(300),
        kafka_timeout: Duration::from_secs(1),
        platform_groups: false,
        groups: vec![GroupSpec {
            group: "some-group".into(),
            topics: vec!["some-topic".into()],
            offsets: OffsetSource::Kafka,
        }],
        canary: CanarySettings {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    // Nothing listens on port 1.
    let config = config("127.0.0.1:1", service);
    let shutdown = CancellationToken::new();
    let running = bus_monitor::start(config, shutdown.clone())
        .await
        .expect("starts without a broker");
    let base = format!("http://{}", running.ops_addr);
    let text = wait_metrics(
        &base,
        "ERR while unreachable",
        Duration::from_secs(20),
        |m| value(m, r#"kafka_consumergroup_status{group="some-group"}"#) == Some(5.0),
    )
    .await;
    assert!(value(&text, "bus_monitor_poll_errors_total").unwrap() >= 1.0);
    let (code, body) = get(&format!("{base}/ready")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("kafka:"), "{body}");
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
    shutdown.cancel();
    running.wait().await.unwrap();
}
