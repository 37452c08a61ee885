//! Helpers for the runtime's integration tests: real broker and database (from `testkit`), topics and groups of
//! each test's own, a scripted handler, readers of topics and committed offsets, a cuttable database proxy, and
//! the testbed process.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};
use runtime::policy::PolicyOverrides;
use runtime::{
    Consumer, ConsumerOptions, GroupPolicy, Handler, HandlerCtx, HandlerError, OutputRecord,
    Processor, Record, RuntimeError,
};
use service_kit::KafkaSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn kafka() -> KafkaSettings {
    let infra = testkit::infra();
    testkit::require_kafka(&infra.bootstrap_servers);
    KafkaSettings {
        bootstrap_servers: infra.bootstrap_servers.clone(),
        client: Default::default(),
    }
}

/// Creates `name` with `partitions` partitions (and waits for leaders).
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
    let probe = plain_consumer(None, "read_uncommitted");
    eventually(
        Duration::from_secs(30),
        &format!("leaders for {name}"),
        || {
            probe
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .is_ok_and(|md| {
                    md.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
        },
    );
}

/// A fresh topic with `partitions` partitions, and its `<topic>.dlq` (one partition): a consumer refuses to
/// start without the dead-letter topics of what it reads.
pub async fn topic(prefix: &str, partitions: i32) -> String {
    let name = testkit::create_topic_with(testkit::infra(), prefix, partitions, &[]).await;
    create_named_topic(&format!("{name}.dlq"), 1).await;
    name
}

/// A fresh database (migrated) for the consumer's bookkeeping.
pub async fn database() -> sqlx::PgPool {
    testkit::fresh_database().await.pool
}

/// The policy of spec group `base` for a fresh group reading `topic`, with `overrides` on top.
pub fn policy(base: &str, topic: &str, overrides: PolicyOverrides) -> GroupPolicy {
    let overrides = PolicyOverrides {
        group: Some(testkit::unique_name(base)),
        topics: Some(vec![topic.to_string()]),
        ..overrides
    };
    GroupPolicy::resolve(base, &overrides).expect("valid policy")
}

/// Options that keep tests quick: frequent commits and lag samples, short breaker probes.
pub fn fast_options() -> ConsumerOptions {
    ConsumerOptions {
        commit_interval: Duration::from_millis(200),
        lag_interval: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(5),
        breaker_probe_initial: Duration::from_millis(200),
        breaker_probe_max: Duration::from_secs(1),
        restart_backoff: Duration::from_millis(200),
        ..Default::default()
    }
}

pub fn producer() -> FutureProducer {
    service_kit::kafka::producer_config(&kafka())
        .create()
        .expect("producer")
}

/// One record to produce.
#[derive(Clone, Debug)]
pub struct In {
    pub partition: Option<i32>,
    pub key: String,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

pub fn rec(partition: i32, key: &str, value: &str) -> In {
    In {
        partition: Some(partition),
        key: key.into(),
        value: value.into(),
        headers: Vec::new(),
    }
}

/// Produces `records` and waits for every acknowledgement.
pub async fn produce(topic: &str, records: &[In]) {
    let producer = producer();
    let mut deliveries = Vec::new();
    for r in records {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(&r.key)
            .payload(&r.value)
            .headers(headers);
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for d in deliveries {
        d.await.expect("delivery").expect("acknowledged");
    }
}

/// Produces `count` records `prefix-i` keyed by `i` (spread over partitions by key).
pub async fn produce_numbered(topic: &str, from: usize, count: usize) {
    let records: Vec<In> = (from..from + count)
        .map(|i| In {
            partition: None,
            key: i.to_string(),
            value: i.to_string(),
            headers: Vec::new(),
        })
        .collect();
    for chunk in records.chunks(5000) {
        produce(topic, chunk).await;
    }
}

pub fn plain_consumer(group: Option<&str>, isolation: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation);
    if let Some(group) = group {
        config.set("group.id", group);
    }
    config.create().expect("consumer")
}

/// The committed offsets of `group` for partitions `0..partitions` of `topic` (`-1` when none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer = plain_consumer(Some(group), "read_committed");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match tpl.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// Like [`committed`], but `None` while the group's offsets cannot be read (e.g. unstable behind an open
/// transaction) instead of failing.
pub fn committed_or_unstable(group: &str, topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let consumer = plain_consumer(Some(group), "read_committed");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, Duration::from_secs(2))
        .ok()?;
    Some(
        (0..partitions)
            .map(|p| match tpl.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect(),
    )
}

/// Commits `offset` for `group` on `topic`/`partition` from outside the group (as an operator tool would).
pub fn commit_offset(group: &str, topic: &str, partition: i32, offset: i64) {
    let consumer = plain_consumer(Some(group), "read_committed");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit an offset for the group");
}

/// The high watermarks of partitions `0..partitions`.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer = plain_consumer(None, "read_uncommitted");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// Reads `topic` from the beginning until `expected` records arrived and then `quiet` passed without more
/// (or `timeout`). `isolation`: `read_committed` or `read_uncommitted`.
pub fn read_topic(
    topic: &str,
    isolation: &str,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    // librdkafka wants a group id even for manual assignment; nothing is committed.
    let consumer = plain_consumer(Some(&testkit::unique_name("reader")), isolation);
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while started.elapsed() < timeout {
        if out.len() >= expected && last.elapsed() >= quiet {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(m.detach());
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The committed records of `<topic>.dlq`: waits for `expected` of them, then 1 s more for any extra.
pub async fn dead_letters(topic: &str, expected: usize) -> Vec<OwnedMessage> {
    let dlq = format!("{topic}.dlq");
    blocking(move || {
        read_topic(
            &dlq,
            "read_committed",
            expected,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
    })
    .await
}

pub fn value(m: &OwnedMessage) -> String {
    String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap()
}

pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `check` every `every` until it is `Ok`, for at most `timeout` after `since`, off the runtime's workers;
/// `Err` carries the last state it reported, for the failure message.
pub async fn poll_until(
    since: Instant,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    blocking(move || {
        let mut last = String::from("never checked");
        while since.elapsed() < timeout {
            match check() {
                Ok(()) => return Ok(()),
                Err(state) => last = state,
            }
            std::thread::sleep(every);
        }
        Err(last)
    })
    .await
}

/// Numbered records ([`produce_numbered`]) produced to a topic, `batch` at a time with `pause` between, until
/// [`Feeder::stop`]: records keep flowing while members are killed.
pub struct Feeder {
    feeding: Arc<AtomicBool>,
    task: JoinHandle<usize>,
}

impl Feeder {
    pub fn start(topic: &str, batch: usize, pause: Duration) -> Feeder {
        let feeding = Arc::new(AtomicBool::new(true));
        let (topic, flag) = (topic.to_string(), feeding.clone());
        let task = tokio::spawn(async move {
            let mut next = 0;
            while flag.load(Ordering::Relaxed) {
                produce_numbered(&topic, next, batch).await;
                next += batch;
                tokio::time::sleep(pause).await;
            }
            next
        });
        Feeder { feeding, task }
    }

    /// Stops feeding; how many records were produced.
    pub async fn stop(self) -> usize {
        self.feeding.store(false, Ordering::Relaxed);
        self.task.await.expect("the feeder task")
    }
}

/// [`eventually`] from an async test without blocking the runtime's other tasks.
pub async fn wait_for(timeout: Duration, what: &str, check: impl FnMut() -> bool + Send + 'static) {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || eventually(timeout, &what, check))
        .await
        .unwrap();
}

/// Runs blocking test code (Kafka admin calls, topic reads) off the runtime's workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Async version of [`eventually`].
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
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

/// A consumer running in this process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), RuntimeError>>,
}

impl Running {
    pub fn start<P: Processor>(consumer: Consumer<P>) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        Running { shutdown, task }
    }

    /// Graceful shutdown; panics if it fails or takes more than 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown within 30s")
            .expect("run task")
            .expect("run returned Ok");
    }
}

/// One handler call, as recorded by [`Scripted`].
#[derive(Clone, Debug)]
pub struct Call {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
    pub attempt: u32,
    pub at: Instant,
}

pub type Behaviour = Arc<dyn Fn(&Record, u32) -> Result<(), HandlerError> + Send + Sync>;

/// A handler whose outcome per record is scripted; it records every call, may copy records to an output topic,
/// and may insert a row per record into table `sink` through the mode (b) transaction.
#[derive(Clone)]
pub struct Scripted {
    pub calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Behaviour,
    output: Option<String>,
    /// Which values are copied to `output` (all when `None`).
    output_only: Option<fn(&str) -> bool>,
    db_sink: bool,
}

impl Scripted {
    pub fn new(
        behaviour: impl Fn(&Record, u32) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Scripted {
        Scripted {
            calls: Default::default(),
            behaviour: Arc::new(behaviour),
            output: None,
            output_only: None,
            db_sink: false,
        }
    }

    pub fn ok() -> Scripted {
        Scripted::new(|_, _| Ok(()))
    }

    /// Copies every successful record (key, value) to `topic`.
    pub fn with_output(mut self, topic: &str) -> Scripted {
        self.output = Some(topic.to_string());
        self
    }

    /// Copies only the successful records whose value `only` accepts to `topic`.
    pub fn with_output_of(mut self, topic: &str, only: fn(&str) -> bool) -> Scripted {
        self.output = Some(topic.to_string());
        self.output_only = Some(only);
        self
    }

    pub fn with_db_sink(mut self) -> Scripted {
        self.db_sink = true;
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_for(&self, value: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.value == value)
            .collect()
    }
}

impl Handler for Scripted {
    async fn handle(&self, record: &Record, ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let value =
            String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
        self.calls.lock().unwrap().push(Call {
            partition: record.partition,
            offset: record.offset,
            value: value.clone(),
            attempt: ctx.attempt(),
            at: Instant::now(),
        });
        (self.behaviour)(record, ctx.attempt())?;
        if self.db_sink {
            let db = ctx.db().expect("mode (b) gives a transaction");
            sqlx::query("INSERT INTO sink (value, partition, \"offset\") VALUES ($1, $2, $3)")
                .bind(&value)
                .bind(record.partition)
                .bind(record.offset)
                .execute(db)
                .await?;
        }
        if let Some(output) = &self.output
            && self.output_only.is_none_or(|only| only(&value))
        {
            ctx.produce(OutputRecord::new(
                output,
                record.key.clone().unwrap_or_default(),
                value.into_bytes(),
            ));
        }
        Ok(())
    }
}

/// The members of `group` as the coordinator sees them: client id → assigned (topic, partition)s.
pub fn group_members(group: &str) -> HashMap<String, Vec<(String, i32)>> {
    let consumer = plain_consumer(None, "read_uncommitted");
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list");
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return HashMap::new();
    };
    info.members()
        .iter()
        .map(|m| {
            (
                format!("{}/{}", m.client_id(), m.id()),
                m.assignment().map(parse_assignment).unwrap_or_default(),
            )
        })
        .collect()
}

/// Parses a classic `ConsumerProtocolAssignment` (version, [topic, [partition]], user data).
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    if bytes.len() < 6 {
        return out;
    }
    let mut at = 2; // version
    let read_i32 = |b: &[u8], at: &mut usize| {
        let v = i32::from_be_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    };
    let topics = read_i32(bytes, &mut at);
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
        at += 2;
        let topic = String::from_utf8_lossy(&bytes[at..at + len]).into_owned();
        at += len;
        let partitions = read_i32(bytes, &mut at);
        for _ in 0..partitions.max(0) {
            out.push((topic.clone(), read_i32(bytes, &mut at)));
        }
    }
    out
}

pub use testkit::pg_proxy::PgProxy;

/// The testbed process (`src/bin/runtime-testbed.rs`).
pub struct Testbed {
    pub child: Child,
    ready: Arc<AtomicBool>,
}

impl Testbed {
    /// Starts the testbed with `args` (after `--bootstrap-servers`).
    pub fn spawn(args: &[String]) -> Testbed {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-testbed"))
            .arg("--bootstrap-servers")
            .arg(&testkit::infra().bootstrap_servers)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start runtime-testbed");
        let ready = Arc::new(AtomicBool::new(false));
        let stdout = child.stdout.take().unwrap();
        let flag = ready.clone();
        // `TESTBED_LOGS=<dir>` keeps each testbed's log (its stdout) in `<dir>/testbed-<pid>.log`.
        let mut log = std::env::var_os("TESTBED_LOGS").map(|dir| {
            let path = std::path::Path::new(&dir).join(format!("testbed-{}.log", child.id()));
            std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
        });
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(file) = log.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                if line.trim() == "READY" {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
        Testbed { child, ready }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub async fn wait_ready_async(&self, timeout: Duration) {
        let started = Instant::now();
        while !self.is_ready() {
            assert!(
                started.elapsed() < timeout,
                "the testbed got no partitions within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no drain, no commit, no leaving the group.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a successful exit (graceful shutdown).
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the testbed exited with {status} after SIGTERM"
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the testbed did not stop within 30s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
