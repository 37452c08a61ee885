//! How long a partition that becomes fetchable waits for its next record while the consumer's only other
//! partition is idle — the wait behind a fetch the broker holds (`fetch.wait.max.ms`), librdkafka's default of
//! 500 ms against the runtime's (decision 0055). Against the real broker (`make up`); prints figures, asserts
//! nothing.
//!
//! ```sh
//! cargo bench -p runtime --bench resume
//! ```
//!
//! For each setting, twice (alternating): a fresh plain librdkafka consumer of a fresh, empty 2-partition topic
//! polls for 3 s, then eight times pauses partition 1, produces one record to it, keeps polling partition 0 alone
//! for 30–290 ms (so that a fetch for the idle partition is held by the broker), resumes partition 1 and times its
//! record.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runtime::ConsumerOptions;

fn consumer(wait_ms: u128) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", testkit::unique_name("bench-resume"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .create()
        .expect("consumer")
}

async fn produce_one(producer: &FutureProducer, topic: &str, value: &str) {
    producer
        .send(
            FutureRecord::<str, str>::to(topic)
                .partition(1)
                .payload(value),
            Duration::from_secs(10),
        )
        .await
        .expect("acknowledged");
}

/// Milliseconds from each resume to the resumed partition's record.
async fn waits(wait_ms: u128, producer: &FutureProducer) -> Vec<u128> {
    let topic = testkit::create_topic_with(testkit::infra(), "bench-resume", 2, &[]).await;
    let c = consumer(wait_ms);
    let mut both = TopicPartitionList::new();
    both.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    both.add_partition_offset(&topic, 1, Offset::Beginning)
        .unwrap();
    c.assign(&both).expect("assign");
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        let _ = c.poll(Duration::from_millis(50));
    }
    let mut one = TopicPartitionList::new();
    one.add_partition(&topic, 1);
    let mut waits = Vec::new();
    for i in 0..8u64 {
        c.pause(&one).expect("pause");
        produce_one(producer, &topic, &format!("v{i}")).await;
        let until = Instant::now() + Duration::from_millis(30 + 37 * i);
        while Instant::now() < until {
            let _ = c.poll(Duration::from_millis(5));
        }
        c.resume(&one).expect("resume");
        let resumed = Instant::now();
        loop {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(5)) {
                break;
            }
            assert!(
                resumed.elapsed() < Duration::from_secs(10),
                "no record 10 s after the resume"
            );
        }
        waits.push(resumed.elapsed().as_millis());
    }
    waits
}

#[tokio::main]
async fn main() {
    let ours = ConsumerOptions::default().fetch_wait_max.as_millis();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .create()
        .expect("producer");
    let (mut default, mut runtime) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        default.extend(waits(500, &producer).await);
        runtime.extend(waits(ours, &producer).await);
    }
    for (name, mut w) in [
        ("librdkafka's default, 500 ms", default),
        ("the runtime's", runtime),
    ] {
        println!("fetch.wait.max.ms {name}: a resumed partition's record after {w:?} ms");
        w.sort_unstable();
        println!(
            "  median {} ms, max {} ms over {} resumes",
            w[w.len() / 2],
            w[w.len() - 1],
            w.len()
        );
    }
    println!("(runtime's fetch_wait_max: {ours} ms)");
}
