//! The broker behaves as the rest of the bus assumes: keyed records keep their per-key order through a consumer
//! group, keys land on the partition Java's murmur2 partitioner picks, and a read_committed consumer never sees
//! an aborted transaction.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use service_kit::KafkaSettings;
use testkit::{create_topic, infra, unique_name};

fn settings() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: infra().bootstrap_servers.clone(),
        client: Default::default(),
    }
}

/// Java's `Utils.murmur2` (the default partitioner's hash), written independently of librdkafka.
fn java_murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn java_partition(key: &str, partitions: i32) -> i32 {
    (java_murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_the_java_clients_test_vectors() {
    // From Kafka's UtilsTest.testMurmur2.
    let cases: &[(&str, i32)] = &[
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ];
    for (input, expected) in cases {
        assert_eq!(
            java_murmur2(input.as_bytes()),
            *expected,
            "murmur2({input})"
        );
    }
}

fn consumer(group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &infra().bootstrap_servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keyed_records_keep_per_key_order_through_a_consumer_group() {
    const KEYS: usize = 250;
    const PER_KEY: usize = 40;
    const PARTITIONS: i32 = 12;
    let topic = create_topic(PARTITIONS).await;
    let producer: FutureProducer = service_kit::kafka::producer_config(&settings())
        .create()
        .expect("producer");

    // Interleave keys so that order per key is not a side effect of writing one key at a time. All sends are
    // queued first and their delivery reports awaited together (linger.ms=10 batches them).
    let mut deliveries = Vec::with_capacity(KEYS * PER_KEY);
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            let key = format!("inv_{k:04}");
            let payload = format!("{key}:{seq}");
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queue record");
            deliveries.push((key, delivery));
        }
    }
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    for (key, delivery) in deliveries {
        let delivered = delivery
            .await
            .expect("delivery report")
            .expect("broker acknowledged");
        assert_eq!(
            delivered.partition,
            java_partition(&key, PARTITIONS),
            "{key} not on Java's partition"
        );
        let previous = partition_of_key.insert(key.clone(), delivered.partition);
        assert!(
            previous.is_none_or(|p| p == delivered.partition),
            "{key} landed on two partitions"
        );
    }

    let group = unique_name("smoke-group");
    let received = tokio::task::spawn_blocking(move || {
        let consumer = consumer(&group, "read_committed");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
        let mut total = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while total < KEYS * PER_KEY {
            assert!(
                Instant::now() < deadline,
                "only {total} of {} records arrived within 60s",
                KEYS * PER_KEY
            );
            let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let msg = msg.expect("consume");
            let value = std::str::from_utf8(msg.payload().expect("payload")).unwrap();
            let (key, seq) = value.split_once(':').unwrap();
            assert_eq!(msg.key(), Some(key.as_bytes()));
            seen.entry(key.to_string())
                .or_default()
                .push(seq.parse().unwrap());
            total += 1;
        }
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit");
        // Nothing beyond the 10k: one more poll round finds no record.
        assert!(
            consumer.poll(Duration::from_millis(500)).is_none(),
            "more records than were produced"
        );
        seen
    })
    .await
    .unwrap();

    assert_eq!(received.len(), KEYS);
    for (key, seqs) in received {
        assert_eq!(seqs, (0..PER_KEY).collect::<Vec<_>>(), "order of {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_consumers_see_committed_transactions_only() {
    let topic = create_topic(3).await;
    let transactional_id = unique_name("smoke-txn");
    let topic_for_producer = topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut config = service_kit::kafka::producer_config(&settings());
        config.set("transactional.id", &transactional_id);
        let producer: rdkafka::producer::BaseProducer =
            config.create().expect("transactional producer");
        let timeout = Duration::from_secs(30);
        producer
            .init_transactions(timeout)
            .expect("init_transactions");

        producer.begin_transaction().expect("begin");
        for i in 0..3 {
            let payload = format!("committed-{i}");
            producer
                .send(
                    rdkafka::producer::BaseRecord::to(&topic_for_producer)
                        .key("k")
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.commit_transaction(timeout).expect("commit");

        producer.begin_transaction().expect("begin");
        for i in 0..3 {
            let payload = format!("aborted-{i}");
            producer
                .send(
                    rdkafka::producer::BaseRecord::to(&topic_for_producer)
                        .key("k")
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer
            .flush(timeout)
            .expect("flush: the aborted records reach the log");
        producer.abort_transaction(timeout).expect("abort");
    })
    .await
    .unwrap();

    let read = |isolation: &'static str| {
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || read_to_end(&topic, 3, isolation))
    };
    let committed = read("read_committed").await.unwrap();
    assert_eq!(committed, vec!["committed-0", "committed-1", "committed-2"]);
    // The aborted records were really written: an uncommitted reader sees them, so the check above can fail.
    let everything = read("read_uncommitted").await.unwrap();
    assert_eq!(everything.len(), 6, "{everything:?}");
}

/// Reads every partition from the start until its position reaches the end offset (past control records).
fn read_to_end(topic: &str, partitions: i32, isolation: &str) -> Vec<String> {
    let consumer = consumer(&unique_name("smoke-reader"), isolation);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg.expect("consume");
            values.push(String::from_utf8(msg.payload().unwrap().to_vec()).unwrap());
            continue;
        }
        let at_end = (0..partitions).all(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .expect("watermarks");
            let position = consumer.position().unwrap();
            let pos = position.find_partition(topic, p).map(|e| e.offset());
            high == 0 || pos == Some(Offset::Offset(high))
        });
        if at_end {
            return values;
        }
        assert!(
            Instant::now() < deadline,
            "did not reach the end of {topic} within 30s"
        );
    }
}
