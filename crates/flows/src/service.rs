//! The consumer services under test, written once for every service: configuration on a private [`Bus`], the
//! service in this process ([`InProcess`]), the service as processes SIGKILLed while events flow
//! ([`KillRun`]), reading its metrics, and what a group refused ([`refusals`]: dead letters, business failures).
//!
//! Guarantees: each run has its own consumer group ([`testkit::unique_name`]); options keep tests quick (commits
//! every 200 ms, short breaker probes and drains); every wait panics naming what it waited for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prometheus::Registry;
use rand::Rng;
use runtime::ConsumerOptions;
use runtime::service::{ConsumerService, Running, ServiceSettings};
use service_kit::Settings;
use service_kit::shutdown::CancellationToken;

use crate::Flows;
use crate::harness::{Bus, Publisher};

/// Runtime options that keep tests quick: frequent commits, short breaker probes and drains.
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

/// The settings of service `S` on `bus`: group `group` reading `topics`, with `options`.
pub fn settings<S: ConsumerService>(
    bus: &Bus,
    group: &str,
    topics: &[String],
    options: ConsumerOptions,
) -> Settings<S::Settings> {
    let mut service = S::Settings::default();
    let consumer = service.consumer_mut();
    consumer.policy.group = Some(group.to_string());
    consumer.policy.topics = Some(topics.to_vec());
    consumer.options = options;
    let mut settings = Settings {
        kafka: crate::harness::kafka(),
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service,
    };
    settings.database.url = Some(bus.db.url.clone().into());
    settings
}

/// Service `S` running in this process.
pub struct InProcess {
    pub running: Running,
    pub shutdown: CancellationToken,
    pub group: String,
}

impl InProcess {
    /// Starts `S` on `bus` under a fresh group reading `topics`, with [`fast_options`].
    pub async fn start<S: ConsumerService>(bus: &Bus, topics: &[String]) -> InProcess {
        let group = testkit::unique_name(S::NAME);
        let settings = settings::<S>(bus, &group, topics, fast_options());
        InProcess::start_with::<S>(settings, group).await
    }

    /// Starts `S` with `settings` (whose group is `group`).
    pub async fn start_with<S: ConsumerService>(
        settings: Settings<S::Settings>,
        group: String,
    ) -> InProcess {
        let shutdown = CancellationToken::new();
        let running = runtime::service::start::<S>(settings, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("{} starts: {e:#}", S::NAME));
        InProcess {
            running,
            shutdown,
            group,
        }
    }

    /// Graceful stop; panics if it fails or takes more than 30 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.wait())
            .await
            .expect("stops within 30s")
            .expect("stops cleanly");
    }

    /// Waits until the consumer has partitions and its breaker is closed.
    pub async fn wait_ready(&self) {
        let readiness = self.running.readiness.clone();
        crate::harness::eventually(Duration::from_secs(60), "the service to be ready", || {
            let ready = readiness.check().is_ok();
            async move { ready }
        })
        .await;
    }

    /// A counter of the service's registry, summed over the label sets that have `label`.
    pub fn counter(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        counter(&self.running.registry, name, label)
    }

    /// Checks the operations endpoints over HTTP — `/health` and `/ready` answer 200 and `/metrics` renders the
    /// runtime's metrics — and returns the `/metrics` text.
    pub async fn check_ops_endpoints(&self) -> String {
        let base = format!("http://{}", self.running.ops_addr);
        for path in ["/health", "/ready"] {
            let status = reqwest::get(format!("{base}{path}"))
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"))
                .status();
            assert_eq!(status, 200, "GET {path}");
        }
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body");
        assert!(
            metrics.contains("checkout_consumer_records_processed_total"),
            "{metrics}"
        );
        metrics
    }
}

/// Waits for the one dead letter of `bus`'s domain topic and checks it is `event`, dead-lettered as a business
/// error after `attempts` attempts that waited at least `waited` between the first and the last; returns it.
pub async fn expect_business_dead_letter(
    bus: &Bus,
    event: &events::Envelope,
    attempts: u32,
    waited: Duration,
) -> rdkafka::message::OwnedMessage {
    use crate::harness::header;
    let dlq = crate::harness::read_topic(
        &events::topics::dead_letter_topic(&bus.domain_topic),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dlq.len(), 1, "one dead letter");
    let letter = dlq.into_iter().next().expect("one dead letter");
    assert_eq!(
        header(&letter, "dlq.error.class").as_deref(),
        Some("business")
    );
    assert_eq!(
        header(&letter, "dlq.attempts"),
        Some(attempts.to_string()),
        "every attempt of the policy"
    );
    let time = |name: &str| {
        chrono::DateTime::parse_from_rfc3339(&header(&letter, name).expect(name)).expect(name)
    };
    let between = (time("dlq.last.failure") - time("dlq.first.failure"))
        .to_std()
        .unwrap_or_default();
    assert!(
        between + Duration::from_millis(100) >= waited,
        "the retries waited {between:?}, not the policy's {waited:?}"
    );
    assert_eq!(
        crate::harness::event_id_of(&letter),
        Some(event.event_id().as_uuid())
    );
    letter
}

/// What `group` refused on `bus`: records dead-lettered to the domain topic's DLQ (by any group), and records of
/// `group` failing as business errors (waiting for their retries). Empty when nothing was refused; a guard that
/// turned a duplicate away by failing would show here.
pub async fn refusals(bus: &Bus, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let dlq = events::topics::dead_letter_topic(&bus.domain_topic);
    let dead: i64 = crate::harness::end_offsets(&dlq).await.iter().sum();
    if dead != 0 {
        out.push(format!("{dead} records were dead-lettered to {dlq}"));
    }
    let failing: Vec<(i32, i64, String)> = sqlx::query_as(
        "SELECT partition, \"offset\", last_class FROM consumer_retry_attempts \
         WHERE consumer_group = $1 AND business_failures > 0",
    )
    .bind(group)
    .fetch_all(bus.pool())
    .await
    .expect("read consumer_retry_attempts");
    if !failing.is_empty() {
        out.push(format!(
            "records of {group} failing as business errors (partition, offset, class): {failing:?}"
        ));
    }
    out
}

/// A counter's value summed over the label sets that have `label`.
pub fn counter(registry: &Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    registry
        .gather()
        .into_iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().to_vec())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Several processes of one service binary on a bus, SIGKILLed at random while a flow's events (and, when the
/// group reads the bus's analytics topic, its checkout views) are written.
pub struct KillRun {
    pub group: String,
    pub kills: usize,
    /// Where the processes' logs are (kept when a check fails; [`KillRun::finish`] removes them).
    pub log: PathBuf,
    dir: PathBuf,
    children: Vec<Child>,
    publisher: Option<Publisher>,
}

impl KillRun {
    /// Starts `processes` copies of `binary` (group reading `topics`, a 6 s session so a killed member's
    /// partitions move on quickly), writes `flows` through the outbox over ~8 s while one random process is
    /// SIGKILLed every 0.7–1.5 s and started again, `kills` times; returns when the writing is done.
    pub async fn run(
        bus: &Bus,
        binary: &Path,
        topics: &[String],
        flows: &Flows,
        processes: usize,
        kills: usize,
    ) -> KillRun {
        Self::run_with(
            bus,
            binary,
            topics,
            flows,
            processes,
            kills,
            &Extra::default(),
        )
        .await
    }

    /// [`KillRun::run`] with `extra` configuration and environment for the processes.
    pub async fn run_with(
        bus: &Bus,
        binary: &Path,
        topics: &[String],
        flows: &Flows,
        processes: usize,
        kills: usize,
        extra: &Extra,
    ) -> KillRun {
        let name = binary
            .file_name()
            .map_or("service".into(), |n| n.to_string_lossy().into_owned());
        let group = testkit::unique_name(&format!("{name}-kill"));
        let dir = testkit::workspace_root().join(".dev/tmp").join(&group);
        std::fs::create_dir_all(&dir).expect("test directory");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            consumer_toml(
                &group,
                topics,
                "session_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n",
                "commit_interval = \"200ms\"\ndrain_timeout = \"3s\"\n",
                &extra.toml,
            ),
        )
        .expect("write the configuration");
        let log = dir.join(format!("{name}.log"));
        let spawn = || spawn_process(binary, &config, bus, &log, &extra.env);
        let mut children: Vec<Child> = (0..processes).map(|_| spawn()).collect();
        let publisher = bus.start_publisher().await;
        let views = topics.contains(&bus.analytics_topic).then(|| {
            let (topic, records) = (bus.analytics_topic.clone(), flows.analytics.clone());
            tokio::spawn(async move {
                for chunk in records.chunks(records.len().div_ceil(8).max(1)) {
                    let raw: Vec<(String, Vec<u8>)> = chunk
                        .iter()
                        .map(|r| (r.key.clone(), r.value.clone()))
                        .collect();
                    crate::harness::produce(&topic, &raw).await;
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
            })
        });
        let writer = {
            let events = flows.events.clone();
            let pool = bus.pool().clone();
            tokio::spawn(async move {
                let chunks = events.len().div_ceil(60).max(1);
                for chunk in events.chunks(60) {
                    let mut tx = pool.begin().await.expect("begin");
                    outbox::append_batch(&mut tx, chunk)
                        .await
                        .expect("append to the outbox");
                    tx.commit().await.expect("commit");
                    tokio::time::sleep(Duration::from_millis(8000 / chunks as u64)).await;
                }
            })
        };
        for _ in 0..kills {
            let pause = rand::rng().random_range(700..1500);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let victim = rand::rng().random_range(0..children.len());
            children[victim].kill().expect("SIGKILL");
            children[victim].wait().expect("reap the killed process");
            children[victim] = spawn();
        }
        writer.await.expect("writer task");
        if let Some(views) = views {
            views.await.expect("views task");
        }
        KillRun {
            group,
            kills,
            log,
            dir,
            children,
            publisher: Some(publisher),
        }
    }

    /// Stops the processes and the publisher and removes the logs.
    pub async fn finish(mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.stop().await;
        }
        println!(
            "{} SIGKILLs; logs were in {}",
            self.kills,
            self.log.display()
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for KillRun {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a [`KillRun`]'s processes get besides the consumer's settings.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// TOML appended to the configuration file (e.g. a `[service.delivery]` table).
    pub toml: String,
    /// Environment variables.
    pub env: Vec<(String, String)>,
}

/// A consumer service's configuration file: its group and topics, then `policy` lines (e.g. session timeouts)
/// in `[service.consumer.policy]`, `options` lines in `[service.consumer.options]`, and `extra` TOML tables.
pub fn consumer_toml(
    group: &str,
    topics: &[String],
    policy: &str,
    options: &str,
    extra: &str,
) -> String {
    let topics_toml = topics
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[service.consumer.policy]\ngroup = \"{group}\"\ntopics = [{topics_toml}]\n{policy}\
         [service.consumer.options]\n{options}{extra}"
    )
}

/// Starts `binary --config config` on `bus` (the test broker, the bus's database, an ephemeral ops port), its
/// output appended to `log`, with `env` added to the environment.
pub fn spawn_process(
    binary: &Path,
    config: &Path,
    bus: &Bus,
    log: &Path,
    env: &[(String, String)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log");
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .env("DATABASE_URL", &bus.db.url)
        .env("CHECKOUT__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn,runtime=info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}
