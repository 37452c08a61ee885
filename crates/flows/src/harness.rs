//! Test and benchmark plumbing around the real broker and database: a private "bus" per test (fresh database,
//! its own domain-events, analytics-events and notification-events topics with their DLQs), the outbox
//! publisher in-process (or its configuration file for the binary), writers that append generated events
//! through the outbox exactly as services do, a recorder of every event committed to the outbox (the drills'
//! independent record), raw producers, and readers of topic end offsets, event ids and committed group offsets.
//!
//! Guarantees: nothing here skips; every helper panics with what it waited for when infrastructure or a
//! condition does not come (testkit's rule).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::Envelope;
use outbox::PublisherSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};
use service_kit::shutdown::CancellationToken;
use service_kit::{KafkaSettings, Settings};
use sqlx::PgPool;
use testkit::TestDb;

use crate::emit::AnalyticsRecord;

/// Partitions of the test copies of the spec's topics.
pub const DOMAIN_PARTITIONS: i32 = 12;
pub const ANALYTICS_PARTITIONS: i32 = 3;
/// Partitions of the test copy of the notification topic (the spec's 6).
pub const NOTIFICATION_PARTITIONS: i32 = 6;

/// A private event bus for one test: database, topics, DLQs.
pub struct Bus {
    pub db: TestDb,
    pub domain_topic: String,
    pub analytics_topic: String,
    /// The notification topic (6 partitions, key = recipient), to which the publisher routes
    /// `crypto-checkout.notification-events`: what the settlement and webhooks services append goes here.
    pub notification_topic: String,
}

/// The kafka settings of the test infrastructure.
pub fn kafka() -> KafkaSettings {
    let infra = testkit::infra();
    testkit::require_kafka(&infra.bootstrap_servers);
    KafkaSettings {
        bootstrap_servers: infra.bootstrap_servers.clone(),
        client: Default::default(),
    }
}

impl Bus {
    /// A fresh database (migrated) and fresh topics: domain events (12 partitions), analytics events (3) and
    /// notification events (6), each with its `<topic>.dlq`.
    pub async fn new() -> Bus {
        let db = testkit::fresh_database().await;
        let domain_topic =
            testkit::create_topic_with(testkit::infra(), "domain", DOMAIN_PARTITIONS, &[]).await;
        create_named_topic(&format!("{domain_topic}.dlq"), DOMAIN_PARTITIONS).await;
        let analytics_topic =
            testkit::create_topic_with(testkit::infra(), "analytics", ANALYTICS_PARTITIONS, &[])
                .await;
        create_named_topic(&format!("{analytics_topic}.dlq"), ANALYTICS_PARTITIONS).await;
        let notification_topic = testkit::create_topic_with(
            testkit::infra(),
            "notifications",
            NOTIFICATION_PARTITIONS,
            &[],
        )
        .await;
        create_named_topic(
            &format!("{notification_topic}.dlq"),
            NOTIFICATION_PARTITIONS,
        )
        .await;
        Bus {
            db,
            domain_topic,
            analytics_topic,
            notification_topic,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// Publisher configuration routing the domain, notification and analytics topics to this bus's topics, on the
    /// default cluster.
    pub fn publisher_config(&self) -> outbox_publisher::Config {
        self.publisher_config_on(kafka())
    }

    /// [`Bus::publisher_config`] on the cluster of `kafka` (a drill's cluster, not the default one).
    pub fn publisher_config_on(&self, kafka: KafkaSettings) -> outbox_publisher::Config {
        let mut service = PublisherSettings {
            batch_size: 1000,
            heartbeat_interval: Duration::from_millis(300),
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        };
        service.topic_routes.insert(
            events::topics::DOMAIN_EVENTS.to_string(),
            self.domain_topic.clone(),
        );
        service.topic_routes.insert(
            events::topics::NOTIFICATION_EVENTS.to_string(),
            self.notification_topic.clone(),
        );
        // Checkout views appended through the outbox (`checkoutctl simulate`) go to this bus's analytics topic.
        service.topic_routes.insert(
            events::topics::ANALYTICS_EVENTS.to_string(),
            self.analytics_topic.clone(),
        );
        let mut config: outbox_publisher::Config = Settings {
            kafka,
            database: Default::default(),
            http: Default::default(),
            log: Default::default(),
            service,
        };
        config.database.url = Some(self.db.url.clone().into());
        config
    }

    /// The `outbox-publisher` binary's configuration file (TOML) routing the domain, notification and analytics
    /// topics to this bus's topics, as [`Bus::publisher_config`] does in this process.
    pub fn publisher_toml(&self) -> String {
        format!(
            "[service.topic_routes]\n\"{}\" = \"{}\"\n\"{}\" = \"{}\"\n\"{}\" = \"{}\"\n",
            events::topics::DOMAIN_EVENTS,
            self.domain_topic,
            events::topics::NOTIFICATION_EVENTS,
            self.notification_topic,
            events::topics::ANALYTICS_EVENTS,
            self.analytics_topic
        )
    }

    /// Starts an outbox publisher in this process.
    pub async fn start_publisher(&self) -> Publisher {
        let shutdown = CancellationToken::new();
        let running = outbox_publisher::start(self.publisher_config(), shutdown.clone())
            .await
            .expect("the outbox publisher starts");
        Publisher { running, shutdown }
    }

    /// Appends `events` to the outbox in order, `batch` per transaction (so commit order is list order).
    pub async fn append(&self, events: &[Envelope], batch: usize) {
        for chunk in events.chunks(batch.max(1)) {
            let mut tx = self.db.pool.begin().await.expect("begin");
            outbox::append_batch(&mut tx, chunk)
                .await
                .expect("append to the outbox");
            tx.commit().await.expect("commit");
        }
    }

    /// Appends `events` at `rate` events per second in transactions of `batch`, from `writers` concurrent writers
    /// (like several API instances), and returns each event's commit time (wall clock, right after `COMMIT`
    /// returned). Each writer owns a share of the merchants — all events of a merchant and of its invoices and
    /// payments — so a merchant's events commit in their time order, as they do in production where minutes
    /// separate a suspension from the payment after it. (Sharing out by partition key instead lets the writers'
    /// skew, minutes of event time at the bench's compression of a month into minutes, commit an invoice's payment
    /// before the merchant's earlier reinstatement: an order production does not produce.)
    pub async fn append_paced(
        &self,
        events: &[Envelope],
        rate: u32,
        batch: usize,
        writers: usize,
    ) -> Vec<(uuid::Uuid, DateTime<Utc>)> {
        let writers = writers.max(1);
        let mut shares: Vec<Vec<Envelope>> = vec![Vec::new(); writers];
        for event in events {
            let key = event.merchant_id().to_string();
            let share = key
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
                % writers;
            shares[share].push(event.clone());
        }
        let mut tasks = Vec::with_capacity(writers);
        for share in shares {
            let pool = self.db.pool.clone();
            let rate = f64::from(rate) * share.len() as f64 / events.len().max(1) as f64;
            tasks.push(tokio::spawn(append_at_rate(pool, share, rate, batch)));
        }
        let mut committed = Vec::with_capacity(events.len());
        for task in tasks {
            committed.extend(task.await.expect("writer task"));
        }
        committed
    }

    /// Produces analytics records to this bus's analytics topic and waits for every acknowledgement.
    pub async fn produce_analytics(&self, records: &[AnalyticsRecord]) {
        let raw: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        produce(&self.analytics_topic, &raw).await;
    }

    /// Waits until the publisher has published (and deleted) every outbox row.
    pub async fn wait_outbox_empty(&self, timeout: Duration) {
        let pool = self.db.pool.clone();
        eventually(timeout, "the outbox to drain", || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                    .fetch_one(&pool)
                    .await
                    .expect("count outbox")
                    == 0
            }
        })
        .await;
    }
}

/// Partitions of the test copy of `crypto-checkout.integration-events` (the spec's 6, key = source system).
pub const INTEGRATION_PARTITIONS: i32 = 6;

/// A fresh integration topic (6 partitions) with its `<topic>.dlq`, for the payments service of a scanner-mode
/// test ([`crate::generate_scanned`]); not part of every [`Bus`], as most tests need none.
pub async fn create_integration_topic() -> String {
    let topic =
        testkit::create_topic_with(testkit::infra(), "integration", INTEGRATION_PARTITIONS, &[])
            .await;
    create_named_topic(&format!("{topic}.dlq"), INTEGRATION_PARTITIONS).await;
    topic
}

impl Bus {
    /// Scanner mode: feeds `phases` ([`crate::Flows::scanner_phases`]) — each phase's generator events through
    /// the outbox (published, and read by the payments service in `payments_group`), then its reports to
    /// `integration` (until the group stored its position past them, with its own events in the outbox) — so that
    /// every invoice's and merchant's events reach the domain topic in the order they happened. Needs a running
    /// publisher and payments service; panics naming what it waited for after `timeout` per wait.
    pub async fn feed_scanned(
        &self,
        integration: &str,
        payments_group: &str,
        phases: &[crate::scanner::Phase],
        timeout: Duration,
    ) {
        for phase in phases {
            if !phase.events.is_empty() {
                self.append(&phase.events, 500).await;
                self.wait_outbox_empty(timeout).await;
            }
            if phase.reports.is_empty() {
                continue;
            }
            // Their invoices known to the service first.
            wait_stored(
                self.pool(),
                payments_group,
                &[self.domain_topic.as_str()],
                timeout,
            )
            .await;
            let records: Vec<(String, Vec<u8>)> = phase
                .reports
                .iter()
                .map(|r| (r.partition_key(), r.encode().expect("valid reports")))
                .collect();
            produce(integration, &records).await;
            wait_stored(self.pool(), payments_group, &[integration], timeout).await;
        }
        self.wait_outbox_empty(timeout).await;
    }
}

/// Appends `events` to the outbox of `pool` in order, `batch` per transaction, at `rate` events/s (no burst to
/// catch up a late start beyond the schedule); returns each event's commit time (wall clock, right after
/// `COMMIT` returned). One writer: [`Bus::append_paced`] runs several.
pub async fn append_at_rate(
    pool: PgPool,
    events: Vec<Envelope>,
    rate: f64,
    batch: usize,
) -> Vec<(uuid::Uuid, DateTime<Utc>)> {
    let batch = batch.max(1);
    let started = Instant::now();
    let mut committed = Vec::with_capacity(events.len());
    for (n, chunk) in events.chunks(batch).enumerate() {
        let due = Duration::from_secs_f64((n * batch) as f64 / rate.max(1.0));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut tx = pool.begin().await.expect("begin");
        outbox::append_batch(&mut tx, chunk)
            .await
            .expect("append to the outbox");
        tx.commit().await.expect("commit");
        let at = Utc::now();
        committed.extend(chunk.iter().map(|e| (e.event_id().as_uuid(), at)));
    }
    committed
}

/// Installs on `pool`'s database a trigger recording every event id appended to the outbox, with its topic (as
/// written, before the publisher's routes) and the insertion time, in the table `outbox_committed`: the
/// independent record of what must reach the bus that drills compare the topics with (the rows of a rolled-back
/// transaction vanish with it). Read it with [`outbox_commits`].
pub async fn record_outbox_commits(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TABLE outbox_committed (event_id uuid NOT NULL, topic text NOT NULL, \
           committed_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE FUNCTION outbox_committed_record() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO outbox_committed (event_id, topic) VALUES (NEW.event_id, NEW.topic); RETURN NEW; END $$;
         CREATE TRIGGER outbox_committed_record AFTER INSERT ON outbox FOR EACH ROW
           EXECUTE FUNCTION outbox_committed_record();",
    )
    .execute(pool)
    .await
    .map(|_| ())
}

/// What [`record_outbox_commits`] recorded so far: event id, topic as written, insertion time (at or before the
/// commit, so an age computed from it is an upper bound).
pub async fn outbox_commits(
    pool: &PgPool,
) -> Result<Vec<(uuid::Uuid, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT event_id, topic, committed_at FROM outbox_committed")
        .fetch_all(pool)
        .await
}

/// A publisher running in this process.
pub struct Publisher {
    pub running: outbox_publisher::Running,
    pub shutdown: CancellationToken,
}

impl Publisher {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running
            .wait()
            .await
            .expect("the publisher stops cleanly");
    }
}

/// Creates topic `name` with `partitions` partitions (replication from the infrastructure) and waits for
/// leaders.
pub async fn create_named_topic(name: &str, partitions: i32) {
    let infra = testkit::infra();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &infra.bootstrap_servers)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(infra.brokers));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&topic], &opts)
        .await
        .expect("create_topics")
    {
        if let Err((topic, code)) = result {
            panic!("creating topic {topic} failed: {code}");
        }
    }
    let name = name.to_string();
    let (started, what) = (Instant::now(), format!("leaders of {name}"));
    let probe = reader();
    loop {
        let ready = probe
            .fetch_metadata(Some(&name), Duration::from_secs(5))
            .is_ok_and(|md| {
                md.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
        if ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reader() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka().bootstrap_servers)
        .set("group.id", testkit::unique_name("flows-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

/// Produces `(key, value)` records to `topic` (spec producer settings) and waits for every acknowledgement.
pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = service_kit::kafka::producer_config(&kafka())
        .create()
        .expect("producer");
    for chunk in records.chunks(5000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for (key, value) in chunk {
            let record = FutureRecord::to(topic).key(key).payload(value);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for delivery in deliveries {
            delivery
                .await
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("acknowledged");
        }
    }
}

/// The high watermarks of every partition of `topic`.
pub async fn end_offsets(topic: &str) -> Vec<i64> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = reader();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    })
    .await
    .expect("watermarks task")
}

/// The offsets `group` committed to Kafka for every partition of `topic` (`-1`: none).
pub async fn committed_offsets(group: &str, topic: &str) -> Vec<i64> {
    let (group, topic) = (group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka().bootstrap_servers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let tpl = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(
                |p| match tpl.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect()
    })
    .await
    .expect("committed offsets task")
}

/// Every event id in `topic` on the cluster at `bootstrap`, with the number of records carrying it (read
/// committed, from the beginning to each partition's end as of the call, transaction markers included). Panics
/// when the end is not reached within 5 min.
pub async fn event_ids_on(bootstrap: &str, topic: &str) -> BTreeMap<uuid::Uuid, usize> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", testkit::unique_name("flows-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .expect("watermarks");
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(&topic, p, Offset::Offset(low))
                    .expect("partition");
            }
        }
        let mut ids = BTreeMap::new();
        if ends.is_empty() {
            return ids;
        }
        consumer.assign(&tpl).expect("assign");
        let started = Instant::now();
        loop {
            // Done when the position of every partition reached its end (markers included).
            let position = consumer.position().expect("position");
            let done = ends.iter().all(|(p, end)| {
                matches!(position.find_partition(&topic, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *end)
            });
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "reading {topic} on {bootstrap} did not reach its end within 5 min"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("read").detach();
                if let Some(id) = event_id_of(&m) {
                    *ids.entry(id).or_insert(0) += 1;
                }
            }
        }
        ids
    })
    .await
    .expect("reader task")
}

/// Waits until the positions `group` stored in the database (exactly-once mode b, table `consumer_offsets`)
/// reach the end of every partition of each of `topics`.
pub async fn wait_stored(pool: &PgPool, group: &str, topics: &[&str], timeout: Duration) {
    for topic in topics {
        let ends = end_offsets(topic).await;
        let what = format!("group {group} to store positions of {topic} up to {ends:?}");
        eventually(timeout, &what, || {
            let ends = ends.clone();
            async move {
                let stored: Vec<(i32, i64)> = sqlx::query_as(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
                )
                .bind(group)
                .bind(*topic)
                .fetch_all(pool)
                .await
                .expect("read consumer_offsets");
                ends.iter().enumerate().all(|(p, end)| {
                    *end == 0 || stored.iter().any(|(q, next)| *q == p as i32 && next >= end)
                })
            }
        })
        .await;
    }
}

/// Waits until `group` has committed the end of every partition of `topic`.
pub async fn wait_consumed(group: &str, topic: &str, timeout: Duration) {
    let ends = end_offsets(topic).await;
    let what = format!("group {group} to commit {topic} up to {ends:?}");
    eventually(timeout, &what, || {
        let ends = ends.clone();
        async move {
            let committed = committed_offsets(group, topic).await;
            committed.iter().zip(&ends).all(|(c, e)| *e == 0 || c >= e)
        }
    })
    .await;
}

/// Every record of `topic` from the beginning, until `expected` arrived and `quiet` passed without more.
pub async fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = reader();
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in 0..md.topics()[0].partitions().len() as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let started = Instant::now();
        let mut last = Instant::now();
        let mut out = Vec::new();
        while started.elapsed() < timeout {
            if out.len() >= expected && last.elapsed() >= Duration::from_secs(1) {
                break;
            }
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                out.push(message.expect("read").detach());
                last = Instant::now();
            }
        }
        out
    })
    .await
    .expect("reader task")
}

/// The value of header `name` of `message`, as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F: Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sorted copy of `values` and its p50 / p99 / max, for printing latency figures.
pub fn summary(mut values: Vec<f64>) -> (f64, f64, f64, usize) {
    values.sort_by(|a, b| a.partial_cmp(b).expect("finite latencies"));
    let at = |q: f64| {
        if values.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    (
        at(0.50),
        at(0.99),
        values.last().copied().unwrap_or(f64::NAN),
        values.len(),
    )
}

/// The event ids of `message` values that decode as envelopes (for tests that check a DLQ or a topic).
pub fn event_id_of(message: &OwnedMessage) -> Option<uuid::Uuid> {
    let envelope = events::decode(message.payload()?).ok()?;
    Some(envelope.event_id().as_uuid())
}
