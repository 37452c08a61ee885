//! Test plumbing: events with a per-key sequence number, writers, in-process publishers, and a reader that
//! checks completeness and per-key order of what reached Kafka.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use events::{Envelope, EventId, EventType, InvoiceId};
use outbox::PublisherSettings;
use outbox_publisher::{Config, Running};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use service_kit::shutdown::CancellationToken;
use service_kit::{KafkaSettings, Settings};
use sqlx::PgPool;

/// An event of `invoice` carrying `seq` (in `metadata.request_id`), so readers can check order.
pub fn invoice_event(invoice: InvoiceId, seq: u64) -> Envelope {
    let mut parts = events::examples::example(EventType::InvoiceCreated).into_parts();
    parts.event_id = EventId::new();
    parts.aggregate_id = invoice.into();
    parts.metadata.request_id = Some(format!("seq-{seq}"));
    Envelope::from_parts(parts).expect("valid event")
}

/// Publisher configuration against `bootstrap`, `db`, routing domain events to `topic`.
pub fn config(bootstrap: &str, db_url: &str, topic: &str) -> Config {
    let mut service = PublisherSettings {
        batch_size: 500,
        heartbeat_interval: Duration::from_millis(300),
        poll_interval: Duration::from_millis(500),
        ..Default::default()
    };
    service
        .topic_routes
        .insert(events::topics::DOMAIN_EVENTS.to_string(), topic.to_string());
    let mut config: Config = Settings {
        kafka: KafkaSettings {
            bootstrap_servers: bootstrap.to_string(),
            client: Default::default(),
        },
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    };
    config.database.url = Some(db_url.to_string().into());
    config
}

pub struct Publisher {
    pub running: Running,
    pub shutdown: CancellationToken,
}

pub async fn start_publisher(config: Config) -> Publisher {
    let shutdown = CancellationToken::new();
    let running = outbox_publisher::start(config, shutdown.clone())
        .await
        .expect("publisher starts");
    Publisher { running, shutdown }
}

impl Publisher {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("publisher stops cleanly");
    }
}

/// A table the writers lock per key, so "commit order per key" is observable: each transaction takes the
/// key's row lock, increments it, and writes events carrying the new value.
pub async fn create_sequences(pool: &PgPool) {
    sqlx::query("CREATE TABLE test_sequences (key uuid PRIMARY KEY, n bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
}

/// One writer transaction: takes the key's lock, appends `count` events with the next sequence numbers,
/// optionally lingers (a long transaction), commits.
pub async fn write_events(
    pool: &PgPool,
    invoice: InvoiceId,
    count: u64,
    linger: Duration,
) -> Vec<EventId> {
    let mut tx = pool.begin().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "INSERT INTO test_sequences (key, n) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET n = test_sequences.n + $2 RETURNING n",
    )
    .bind(invoice.as_uuid())
    .bind(count as i64)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let first = n as u64 - count + 1;
    let envelopes: Vec<Envelope> = (first..=n as u64)
        .map(|seq| invoice_event(invoice, seq))
        .collect();
    outbox::append_batch(&mut tx, &envelopes).await.unwrap();
    if !linger.is_zero() {
        tokio::time::sleep(linger).await;
    }
    tx.commit().await.unwrap();
    envelopes.iter().map(|e| e.event_id()).collect()
}

/// The sequence each key reached, from the writers' table.
pub async fn sequences(pool: &PgPool) -> HashMap<String, u64> {
    let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as("SELECT key, n FROM test_sequences")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(k, n)| (InvoiceId::from_uuid(k).unwrap().to_string(), n as u64))
        .collect()
}

/// One record as read back from Kafka.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub event_id: String,
    pub seq: u64,
    pub partition: i32,
}

/// Reads `topic` from the beginning until `distinct` different event ids were seen (or panics after
/// `timeout`), then drains what is left up to the end offsets.
pub fn read_all(bootstrap: &str, topic: &str, distinct: usize, timeout: Duration) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", testkit::unique_name("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let deadline = Instant::now() + timeout;
    while ids.len() < distinct {
        assert!(
            Instant::now() < deadline,
            "only {} of {distinct} events reached {topic} within {timeout:?}",
            ids.len()
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let received = parse(&msg);
        ids.insert(received.event_id.clone());
        out.push(received);
    }
    // Whatever else is there (duplicates) up to the end.
    while let Some(msg) = consumer.poll(Duration::from_millis(1000)) {
        out.push(parse(&msg.unwrap()));
    }
    out
}

fn parse(msg: &rdkafka::message::BorrowedMessage<'_>) -> Received {
    let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
    let envelope = events::decode(msg.payload().unwrap()).expect("published events decode");
    let header = |name: &str| {
        use rdkafka::message::Headers;
        msg.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        })
    };
    assert_eq!(
        header(events::headers::EVENT_ID).as_deref(),
        Some(envelope.event_id().to_string().as_str())
    );
    let seq = envelope
        .metadata()
        .request_id
        .as_deref()
        .unwrap()
        .strip_prefix("seq-")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(key, envelope.partition_key());
    Received {
        key,
        event_id: envelope.event_id().to_string(),
        seq,
        partition: msg.partition(),
    }
}

/// Checks that every key's events arrived complete (1..=expected[key]) and, counting first occurrences only,
/// in sequence order, each key on one partition. Returns the number of duplicates.
pub fn assert_complete_and_ordered(
    received: &[Received],
    expected: &HashMap<String, u64>,
) -> usize {
    let mut seen = HashSet::new();
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut duplicates = 0;
    for r in received {
        if !seen.insert(r.event_id.as_str()) {
            duplicates += 1;
            continue;
        }
        let want = next.entry(r.key.as_str()).or_insert(1);
        assert_eq!(
            r.seq, *want,
            "key {}: event {} arrived out of order (expected seq {want})",
            r.key, r.seq
        );
        *want += 1;
        let p = *partition_of.entry(r.key.as_str()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {} on two partitions", r.key);
    }
    for (key, n) in expected {
        assert_eq!(
            next.get(key.as_str()).copied().unwrap_or(1) - 1,
            *n,
            "key {key}: events missing"
        );
    }
    assert_eq!(
        next.len(),
        expected.len(),
        "events for keys that were never written"
    );
    duplicates
}

pub async fn outbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}
