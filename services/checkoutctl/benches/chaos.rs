//! The chaos run (`make chaos`, decision 0040, `docs/runbooks/chaos.md`; issue 18 item 1): the real service
//! binaries under random, seeded faults while the checkout simulator drives at least `CHAOS_EVENTS` records onto
//! the bus, then the proof that nothing was lost or doubled.
//!
//! Needs the 3-broker cluster of `DR_PRIMARY_ONLY=1 deploy/local/dr up --fresh` (RF 3, min ISR 2) and its
//! environment (`KAFKA_BOOTSTRAP_SERVERS` = that cluster, `DR_PRIMARY_PIDFILES`), `DATABASE_URL` (the run makes a
//! database of its own on that server) and the workspace's binaries built (`CHAOS_BIN_DIR`, default
//! `$CARGO_TARGET_DIR/debug`).
//!
//! What it does:
//! 1. A fresh database (testkit, migrations applied) with a trigger that records every event id committed to
//!    the outbox (`flows::harness::record_outbox_commits`: the independent record of what must reach the bus);
//!    the production topics (`checkoutctl topics apply --env production`); a TCP proxy in this process in front
//!    of PostgreSQL that every service's `DATABASE_URL` points at; the dev-sandbox (SMTP and SMS) and a webhook
//!    receiver in this process (`/hooks/{ok,flaky,hang,down}` as the dev-sandbox's, remembering every request).
//! 2. Every service binary as child processes: two replicas of each whose spec group has more than one consumer
//!    (projections, webhooks, settlement, notifications) and of the outbox publisher (key buckets, decision
//!    0008); one of the others (payments, analytics, audit, bus-monitor). A replica that exits by itself is
//!    restarted too (counted as a crash).
//! 3. The simulator (its library, in this process, with its truth kept) at `CHAOS_RATE` invoices/s until the
//!    bus holds `CHAOS_EVENTS` records, then it lets what is in flight play out.
//! 4. Meanwhile, from a seeded RNG (`CHAOS_SEED`, printed): SIGKILL of a random replica every few seconds (every
//!    service at least once, `CHAOS_MIN_KILLS` in total), restarted after 0.2–2 s, its RTO measured to `/ready`;
//!    one broker SIGKILLed and restarted (same command line) after 5–20 s; `CHAOS_PG_CUTS` PostgreSQL outages of
//!    10–30 s (the proxy drops every live connection and refuses new ones).
//! 5. Faults stop, every group catches up, the outbox drains, deliveries finish; then the invariants (see
//!    [`Invariant`]) and `checkoutctl verify` at grace 0.
//!
//! Prints the summary and writes it as JSON to `<target>/chaos/summary-<seed>.json`; exits 1 on any violation,
//! 2 when the run could not be carried out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkoutctl::simulate::{self, Deps, Options, Report};
use checkoutctl::verify;
use events::MerchantId;
use flows::receiver::{Behaviour, Receiver};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The replicas of each service: two where the spec's group has more than one consumer, and of the publisher.
const FLEET: &[(&str, usize)] = &[
    ("outbox-publisher", 2),
    ("payments", 1),
    ("projections", 2),
    ("webhooks", 2),
    ("settlement", 2),
    ("analytics", 1),
    ("audit", 1),
    ("notifications", 2),
    ("bus-monitor", 1),
];

/// Records on the bus per simulated invoice (decision 0037: about 25), to plan the faults over the run.
const RECORDS_PER_INVOICE: f64 = 25.0;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn required(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: run `make chaos` (deploy/local/dr up writes the cluster's environment)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

// ------------------------------------------------------------------------------------------------ the fleet

struct Replica {
    service: &'static str,
    index: usize,
    port: u16,
    child: Option<Child>,
    /// When it was killed (or found dead), to restart it after `restart_at`.
    down_since: Option<Instant>,
    restart_at: Option<Instant>,
    /// A restart whose readiness is still awaited: (down since, started).
    awaiting_ready: Option<Instant>,
}

struct Fleet {
    bin_dir: PathBuf,
    logs: PathBuf,
    env: Vec<(String, String)>,
    /// The notifications service's providers (the other services reject unknown `service` keys).
    notifications_env: Vec<(String, String)>,
    replicas: Vec<Replica>,
    http: reqwest::Client,
}

#[derive(Debug, Default, Clone, Serialize)]
struct ServiceFigures {
    replicas: usize,
    kills: u32,
    crashes: u32,
    /// Kill → the restarted replica answering `/ready`, seconds.
    rto_s: Vec<f64>,
}

impl Fleet {
    fn label(&self, i: usize) -> String {
        format!("{}#{}", self.replicas[i].service, self.replicas[i].index)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let r = &self.replicas[i];
        let bin = self.bin_dir.join(r.service);
        let log = self.logs.join(format!("{}-{}.log", r.service, r.index));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if r.service == "notifications" {
            cmd.envs(
                self.notifications_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        }
        cmd.env("CHECKOUT__HTTP__LISTEN", format!("127.0.0.1:{}", r.port))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let r = &mut self.replicas[i];
        r.child = Some(child);
        r.restart_at = None;
        Ok(())
    }

    async fn ready(&self, i: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/ready", self.replicas[i].port);
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }

    async fn wait_all_ready(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let mut pending = Vec::new();
            for i in 0..self.replicas.len() {
                if !self.ready(i).await {
                    pending.push(self.label(i));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!("not ready after {limit:?}: {}", pending.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn stop_all(&mut self) {
        for r in &mut self.replicas {
            if let Some(child) = &mut r.child
                && let Some(pid) = child.id()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take()
                && tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ the broker

/// A broker of the cluster: its pidfile and the command line to start it again.
struct Broker {
    pidfile: String,
    pid: u32,
    argv: Vec<String>,
    cwd: PathBuf,
}

fn broker_of(pidfile: &str) -> Option<Broker> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    argv.iter().any(|a| a == "kafka.Kafka").then_some(())?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
    Some(Broker {
        pidfile: pidfile.to_string(),
        pid,
        argv,
        cwd,
    })
}

fn restart_broker(b: &Broker, log: &Path) -> Result<u32, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    // Its own process (not killed with this one): `deploy/local/dr down` stops it by its pidfile.
    let child = std::process::Command::new(&b.argv[0])
        .args(&b.argv[1..])
        .current_dir(&b.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("restarting the broker: {e}"))?;
    let pid = child.id();
    std::fs::write(&b.pidfile, format!("{pid}\n")).map_err(|e| e.to_string())?;
    // Reaped by a thread so that it never lingers as a zombie while this process runs.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

/// Whether every partition of `topic` has `replicas` in-sync replicas.
fn isr_full(bootstrap: &str, topic: &str, replicas: usize) -> bool {
    let Ok(c) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return false;
    };
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .is_some_and(|t| {
            !t.partitions().is_empty() && t.partitions().iter().all(|p| p.isr().len() >= replicas)
        })
}

// ------------------------------------------------------------------------------------------------ bus figures

/// Records on the bus (high watermarks of the four event topics summed; transaction markers included: an upper
/// bound while running). `None` while a partition cannot answer (a broker down).
async fn bus_records_estimate(bootstrap: &str) -> Option<i64> {
    let b = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .create()
            .ok()?;
        let mut n = 0;
        for t in [
            events::topics::DOMAIN_EVENTS,
            events::topics::INTEGRATION_EVENTS,
            events::topics::NOTIFICATION_EVENTS,
            events::topics::ANALYTICS_EVENTS,
        ] {
            let md = c.fetch_metadata(Some(t), Duration::from_secs(5)).ok()?;
            let parts = md.topics().first()?.partitions().len() as i32;
            for p in 0..parts {
                n += c.fetch_watermarks(t, p, Duration::from_secs(5)).ok()?.1;
            }
        }
        Some(n)
    })
    .await
    .ok()
    .flatten()
}

/// Every record of `topic` (read committed, beginning to the current end): (records, occurrences per event id,
/// SettlementCompleted event ids).
async fn read_events(
    bootstrap: &str,
    topic: &str,
) -> (u64, HashMap<uuid::Uuid, u32>, BTreeSet<uuid::Uuid>) {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", "chaos-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("a consumer");
        let md = c
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .expect("metadata");
        let n = md.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..n {
            let (low, high) = c
                .fetch_watermarks(&t, p, Duration::from_secs(10))
                .expect("watermarks");
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(&t, p, Offset::Offset(low))
                    .expect("partition");
            }
        }
        let (mut records, mut ids, mut settlements) = (0u64, HashMap::new(), BTreeSet::new());
        if ends.is_empty() {
            return (records, ids, settlements);
        }
        c.assign(&tpl).expect("assign");
        let started = Instant::now();
        loop {
            let position = c.position().expect("position");
            if ends.iter().all(|(p, end)| {
                matches!(position.find_partition(&t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *end)
            }) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "reading {t} did not reach its end");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.expect("read");
                records += 1;
                if let Some(envelope) = m.payload().and_then(|p| events::decode(p).ok()) {
                    let id = envelope.event_id().as_uuid();
                    *ids.entry(id).or_insert(0) += 1;
                    if envelope.event_type() == events::EventType::SettlementCompleted {
                        settlements.insert(id);
                    }
                }
            }
        }
        (records, ids, settlements)
    })
    .await
    .expect("reader task")
}

/// The largest lag (records) of each platform group now, as `checkoutctl groups describe` computes it (the lag
/// crate's tracker: transaction markers at a partition's end are not lag).
async fn lags(
    reader: &Arc<lag::Reader>,
    pool: &sqlx::PgPool,
) -> Result<BTreeMap<String, i64>, String> {
    let groups = lag::platform_groups();
    let snapshot = reader
        .snapshot(&groups, Some(pool))
        .await
        .map_err(|e| e.to_string())?;
    let mut tracker = lag::tracker::Tracker::new(lag::tracker::TrackerSettings {
        window: 1,
        ..Default::default()
    });
    let mut out = BTreeMap::new();
    for report in tracker.observe(&snapshot).groups {
        let lag = report
            .max_lag
            .ok_or_else(|| format!("{}: no lag readable", report.group))?;
        out.insert(report.group, lag);
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------ the summary

#[derive(Debug, Serialize)]
struct Invariant {
    name: &'static str,
    ok: bool,
    /// What was checked and how many held/failed.
    figures: String,
}

#[derive(Debug, Default, Serialize)]
struct Cut {
    at_s: f64,
    duration_s: f64,
    connections_dropped: u64,
}

#[derive(Debug, Default, Serialize)]
struct BrokerKill {
    node_pidfile: String,
    at_s: f64,
    down_s: f64,
    /// Restart → every partition of the domain topic with 3 in-sync replicas again.
    isr_restored_s: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    seed: u64,
    rate: f64,
    target_events: i64,
    wall_s: f64,
    traffic_s: f64,
    invoices: u64,
    bus_records: BTreeMap<String, u64>,
    bus_records_total: u64,
    services: BTreeMap<String, ServiceFigures>,
    kills_total: u32,
    broker: Option<BrokerKill>,
    pg_cuts: Vec<Cut>,
    max_lag: BTreeMap<String, i64>,
    catch_up_s: f64,
    verify_ok: bool,
    invariants: Vec<Invariant>,
    ok: bool,
}

// ------------------------------------------------------------------------------------------------ main

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: could not run: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, String> {
    let wall = Instant::now();
    let bootstrap = required("KAFKA_BOOTSTRAP_SERVERS")?;
    let pidfiles = required("DR_PRIMARY_PIDFILES")?;
    required("DATABASE_URL")?;
    if env::<i32>("KAFKA_BROKERS", 1) != 3 {
        return Err(
            "KAFKA_BROKERS is not 3: the chaos run needs the 3-broker cluster (make chaos)".into(),
        );
    }
    let target_events: i64 = env("CHAOS_EVENTS", 100_000);
    let rate: f64 = env("CHAOS_RATE", 4.0);
    let min_kills: u32 = env("CHAOS_MIN_KILLS", 20);
    let pg_cuts: usize = env("CHAOS_PG_CUTS", 2);
    let seed: u64 = env(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| testkit::workspace_root().join("target"));
    // Relative to the workspace root, like every path the Makefile names (cargo runs benches in the crate's
    // directory).
    let bin_dir = std::env::var("CHAOS_BIN_DIR")
        .map(|d| testkit::workspace_root().join(d))
        .unwrap_or_else(|_| target_dir.join("debug"));
    let out_dir = target_dir.join("chaos").join(format!("run-{seed}"));
    // A fresh directory per run: the sandbox's mail and the logs of an earlier run with the same seed must not
    // count for this one (the notification check looks e-mails up by Message-ID).
    let _ = std::fs::remove_dir_all(&out_dir);
    let logs = out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    for (name, _) in FLEET
        .iter()
        .copied()
        .chain([("checkoutctl", 0), ("dev-sandbox", 0)])
    {
        if !bin_dir.join(name).is_file() {
            return Err(format!(
                "{} is missing: build the binaries first (cargo build --workspace --bins)",
                bin_dir.join(name).display()
            ));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let expected_s = (target_events as f64 / (rate * RECORDS_PER_INVOICE)).max(30.0);
    println!(
        "chaos: seed {seed} (CHAOS_SEED={seed} repeats the faults' schedule), {target_events} events at {rate} invoices/s \
         (~{:.0} s of traffic), cluster {bootstrap}, output {}",
        expected_s,
        out_dir.display()
    );

    // 1. Database, topics, proxy, providers.
    let db = testkit::fresh_database().await;
    flows::harness::record_outbox_commits(&db.pool)
        .await
        .map_err(|e| format!("installing the outbox recorder: {e}"))?;
    println!(
        "chaos: database {} (kept for inspection; testkit drops it after 6 h)",
        db.name
    );
    let checkoutctl = bin_dir.join("checkoutctl");
    let status = Command::new(&checkoutctl)
        .args(["topics", "apply", "--env", "production"])
        // The topology file is found relative to the working directory (cargo runs benches in the crate's).
        .current_dir(testkit::workspace_root())
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "checkoutctl topics apply --env production: {status}"
        ));
    }
    let proxy = testkit::pg_proxy::PgProxy::start(&db.url).await;
    let proxied_url = proxy.url(&db.url);
    let (smtp, sms) = (free_port(), free_port());
    let sandbox_dir = out_dir.join("sandbox");
    let mut sandbox = Command::new(bin_dir.join("dev-sandbox"))
        .arg("--dir")
        .arg(&sandbox_dir)
        .args([
            "--smtp",
            &format!("127.0.0.1:{smtp}"),
            "--sms",
            &format!("127.0.0.1:{sms}"),
        ])
        .args(["--webhooks", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("dev-sandbox: {e}"))?;
    let hooks = Receiver::start().await;
    hooks.set_prefix("hooks/ok/", Behaviour::Ok);
    hooks.set_prefix("hooks/flaky/", Behaviour::FailFirst { n: 2, status: 503 });
    hooks.set_prefix("hooks/hang/", Behaviour::Hang(Duration::from_secs(30)));
    hooks.set_prefix("hooks/down/", Behaviour::Always(500));
    let hooks_base = format!("http://{}", hooks.addr);

    // 2. The fleet.
    let mut fleet = Fleet {
        bin_dir: bin_dir.clone(),
        logs: logs.clone(),
        env: vec![
            ("DATABASE_URL".into(), proxied_url.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS".into(), bootstrap.clone()),
        ],
        notifications_env: vec![
            ("CHECKOUT__SERVICE__EMAIL__PORT".into(), smtp.to_string()),
            (
                "CHECKOUT__SERVICE__SMS__BASE_URL".into(),
                format!("http://127.0.0.1:{sms}"),
            ),
        ],
        replicas: Vec::new(),
        http: reqwest::Client::new(),
    };
    let mut figures: BTreeMap<String, ServiceFigures> = BTreeMap::new();
    for (service, n) in FLEET {
        for index in 0..*n {
            fleet.replicas.push(Replica {
                service,
                index,
                port: free_port(),
                child: None,
                down_since: None,
                restart_at: None,
                awaiting_ready: None,
            });
        }
        figures.insert(
            service.to_string(),
            ServiceFigures {
                replicas: *n,
                ..Default::default()
            },
        );
    }
    for i in 0..fleet.replicas.len() {
        fleet.spawn(i)?;
    }
    fleet.wait_all_ready(Duration::from_secs(240)).await?;
    println!(
        "chaos: {} replicas ready ({}); PostgreSQL through the proxy {}",
        fleet.replicas.len(),
        FLEET
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(" "),
        proxy.addr
    );

    // 3. The simulator, in this process (its own connection, not through the proxy: it is the world outside).
    let sim_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&db.url)
        .await
        .map_err(|e| e.to_string())?;
    let kafka = service_kit::KafkaSettings {
        bootstrap_servers: bootstrap.clone(),
        client: Default::default(),
    };
    let producer = service_kit::kafka::producer_config(&kafka)
        .create()
        .map_err(|e| format!("a producer: {e}"))?;
    let wenv = webhooks::EnvOverrides::from_env();
    let wsettings = webhooks::DeliverySettings::default();
    let deps = Deps {
        pool: sim_pool,
        producer,
        webhooks: Some((
            wsettings
                .guard(&wenv)
                .map_err(|e| format!("webhook guard: {e}"))?,
            wsettings
                .secret_box(&wenv)
                .map_err(|e| format!("WEBHOOK_ENCRYPTION_KEY: {e}"))?,
        )),
    };
    let options = Options {
        rate,
        duration: None,
        seed,
        merchants: 8,
        max_merchants: 60,
        window: Duration::from_secs(60),
        webhook_receiver: Some(hooks_base.clone()),
        integration_topic: events::topics::INTEGRATION_EVENTS.to_string(),
        suspend_every: Duration::from_secs(40),
        keep_truth: true,
    };
    let (stop_tx, stop) = watch::channel(false);
    let (_abort_tx, abort) = watch::channel(false);
    // What the topics held before (a cluster reused without --fresh): the target counts this run's records.
    let baseline = bus_records_estimate(&bootstrap).await.unwrap_or(0);
    if baseline > 0 && std::env::var("CHAOS_REUSE_CLUSTER").is_err() {
        // Kafka-committed groups would resume a previous run's positions against this run's new database.
        return Err(format!(
            "the cluster's topics already hold {baseline} records: the run needs empty topics (make chaos starts \
             the cluster with deploy/local/dr up --fresh)"
        ));
    }
    let traffic_started = Instant::now();
    let sim = tokio::spawn(async move {
        let report = simulate::run(options, &deps, stop, abort, Duration::from_secs(30), |c| {
            println!(
                "  simulator {:>5.0} s: {} invoices, {} in flight, {} scanner reports",
                c.seconds, c.invoices, c.in_flight, c.scanner_reports
            )
        })
        .await;
        (report, deps)
    });

    // 4. The faults.
    let pidfiles: Vec<String> = pidfiles.split(',').map(str::to_string).collect();
    let mut broker_at = Duration::from_secs_f64(expected_s * rng.random_range(0.15..0.45));
    let broker_down = Duration::from_secs_f64(rng.random_range(5.0..20.0));
    let mut cut_plan: Vec<(Duration, Duration)> = (0..pg_cuts)
        .map(|k| {
            let lo = (k as f64 + 0.2) / pg_cuts as f64;
            let hi = (k as f64 + 0.8) / pg_cuts as f64;
            (
                Duration::from_secs_f64(expected_s * rng.random_range(lo..hi)),
                Duration::from_secs_f64(rng.random_range(10.0..30.0)),
            )
        })
        .collect();
    cut_plan.reverse(); // popped in time order
    let mean_gap = (expected_s / (min_kills as f64 * 1.5)).clamp(2.0, 30.0);
    let mut first_round: Vec<usize> = (0..fleet.replicas.len()).collect();
    first_round.shuffle(&mut rng);
    // Every service first (its first replica in the shuffled order), then any replica at random.
    let mut seen = BTreeSet::new();
    first_round.retain(|i| seen.insert(fleet.replicas[*i].service));
    first_round.reverse();
    let mut next_kill =
        traffic_started + Duration::from_secs_f64(mean_gap * rng.random_range(0.5..1.5));
    let mut broker: Option<(Broker, Instant)> = None;
    let mut broker_figures: Option<BrokerKill> = None;
    let mut broker_restarted_at: Option<Instant> = None;
    let mut cuts: Vec<Cut> = Vec::new();
    let mut cut_active: Option<(Instant, Duration, u64)> = None;
    let lag_reader = lag::Reader::new(
        {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &bootstrap);
            c
        },
        Duration::from_secs(10),
    )
    .map_err(|e| e.to_string())?;
    let lag_pool = sqlx::PgPool::connect(&db.url)
        .await
        .map_err(|e| e.to_string())?;
    let mut max_lag: BTreeMap<String, i64> = BTreeMap::new();
    let mut next_lag = Instant::now();
    let mut next_count = Instant::now();
    let mut stopped_traffic = false;
    let mut sim = Some(sim);
    let mut report: Option<Report> = None;
    let mut traffic_s = 0.0;
    let mut kills_total = 0u32;

    loop {
        let now = Instant::now();
        let elapsed = now - traffic_started;
        // Traffic: stop starting invoices once the bus holds the target.
        if !stopped_traffic && now >= next_count {
            next_count = now + Duration::from_secs(5);
            if bus_records_estimate(&bootstrap)
                .await
                .is_some_and(|n| n - baseline >= target_events)
            {
                println!(
                    "chaos: {target_events} records on the bus after {:.0} s; the simulator plays out what is in flight",
                    elapsed.as_secs_f64()
                );
                let _ = stop_tx.send(true);
                stopped_traffic = true;
            }
        }
        if sim.as_ref().is_some_and(|s| s.is_finished()) {
            let (r, _deps) = sim
                .take()
                .expect("the simulator")
                .await
                .map_err(|e| e.to_string())?;
            let r = r.map_err(|e| format!("the simulator failed: {e:#}"))?;
            traffic_s = traffic_started.elapsed().as_secs_f64();
            println!(
                "chaos: the simulator is done ({} invoices, {:.0} s)",
                r.counts.invoices, traffic_s
            );
            report = Some(r);
        }
        // Lag, sampled.
        if now >= next_lag {
            next_lag = now + Duration::from_secs(10);
            if let Ok(l) = lags(&lag_reader, &lag_pool).await {
                for (g, v) in l {
                    let e = max_lag.entry(g).or_insert(0);
                    *e = (*e).max(v);
                }
            }
        }
        // Replicas: restart the killed ones when due, notice crashes, measure readiness.
        for i in 0..fleet.replicas.len() {
            let exited = match fleet.replicas[i].child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => false,
            };
            if exited {
                let label = fleet.label(i);
                fleet.replicas[i].child = None;
                if fleet.replicas[i].down_since.is_none() {
                    println!(
                        "  {:>6.1} s  {label} exited by itself; restarting it",
                        elapsed.as_secs_f64()
                    );
                    figures
                        .get_mut(fleet.replicas[i].service)
                        .expect("service")
                        .crashes += 1;
                    fleet.replicas[i].down_since = Some(now);
                    fleet.replicas[i].restart_at = Some(now + Duration::from_secs(1));
                }
            }
            if fleet.replicas[i].child.is_none()
                && fleet.replicas[i].restart_at.is_some_and(|t| now >= t)
            {
                fleet.spawn(i)?;
                fleet.replicas[i].awaiting_ready = fleet.replicas[i].down_since.take();
            }
            if let Some(since) = fleet.replicas[i].awaiting_ready
                && fleet.ready(i).await
            {
                fleet.replicas[i].awaiting_ready = None;
                figures
                    .get_mut(fleet.replicas[i].service)
                    .expect("service")
                    .rto_s
                    .push(secs(since.elapsed()));
            }
        }
        let done_killing = kills_total >= min_kills && first_round.is_empty();
        // A service kill.
        if !done_killing && now >= next_kill {
            let candidates: Vec<usize> = (0..fleet.replicas.len())
                .filter(|i| {
                    fleet.replicas[*i].child.is_some()
                        && fleet.replicas[*i].awaiting_ready.is_none()
                })
                .collect();
            let pick = match first_round.last().copied() {
                Some(i) if candidates.contains(&i) => first_round.pop(),
                _ if !candidates.is_empty() => {
                    Some(candidates[rng.random_range(0..candidates.len())])
                }
                _ => None,
            };
            if let Some(i) = pick {
                first_round.retain(|j| fleet.replicas[*j].service != fleet.replicas[i].service);
                let label = fleet.label(i);
                let r = &mut fleet.replicas[i];
                let child = r.child.as_mut().expect("running");
                child
                    .start_kill()
                    .map_err(|e| format!("SIGKILL {label}: {e}"))?;
                let _ = child.wait().await;
                r.child = None;
                r.down_since = Some(now);
                let pause = Duration::from_secs_f64(rng.random_range(0.2..2.0));
                r.restart_at = Some(now + pause);
                kills_total += 1;
                figures.get_mut(r.service).expect("service").kills += 1;
                println!(
                    "  {:>6.1} s  SIGKILL {label} (kill {kills_total}), restart in {:.1} s",
                    elapsed.as_secs_f64(),
                    pause.as_secs_f64()
                );
            }
            // After the traffic, the kills still owed come quicker.
            let gap = if report.is_some() { 2.0 } else { mean_gap };
            next_kill = now + Duration::from_secs_f64(gap * rng.random_range(0.5..1.5));
        }
        // The broker.
        if broker_figures.is_none() && broker.is_none() && elapsed >= broker_at {
            let pidfile = &pidfiles[rng.random_range(0..pidfiles.len())];
            let b = broker_of(pidfile).ok_or_else(|| format!("no live broker in {pidfile}"))?;
            let status = std::process::Command::new("kill")
                .args(["-KILL", &b.pid.to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("kill -KILL {}: {status}", b.pid));
            }
            println!(
                "  {:>6.1} s  SIGKILL broker pid {} ({pidfile}); restart in {:.1} s",
                elapsed.as_secs_f64(),
                b.pid,
                broker_down.as_secs_f64()
            );
            broker = Some((b, now));
        }
        if let Some((b, killed)) = &broker
            && now >= *killed + broker_down
        {
            {
                let pid = restart_broker(b, &out_dir.join("broker-restart.log"))?;
                println!(
                    "  {:>6.1} s  broker restarted (pid {pid})",
                    elapsed.as_secs_f64()
                );
                broker_figures = Some(BrokerKill {
                    node_pidfile: b.pidfile.clone(),
                    at_s: secs(*killed - traffic_started),
                    down_s: secs(now - *killed),
                    isr_restored_s: None,
                });
                broker_restarted_at = Some(now);
                broker = None;
            }
        }
        if let (Some(at), Some(f)) = (broker_restarted_at, broker_figures.as_mut())
            && f.isr_restored_s.is_none()
            && now.duration_since(at) >= Duration::from_secs(1)
        {
            {
                let b = bootstrap.clone();
                let full = tokio::task::spawn_blocking(move || {
                    isr_full(&b, events::topics::DOMAIN_EVENTS, 3)
                })
                .await
                .unwrap_or(false);
                if full {
                    f.isr_restored_s = Some(secs(at.elapsed()));
                    println!(
                        "  {:>6.1} s  every domain partition has 3 in-sync replicas again",
                        elapsed.as_secs_f64()
                    );
                    broker_restarted_at = None;
                } else if at.elapsed() > Duration::from_secs(600) {
                    broker_restarted_at = None;
                }
            }
        }
        // PostgreSQL outages.
        if let Some((started, duration, dropped)) = cut_active {
            if now >= started + duration {
                proxy.restore();
                println!(
                    "  {:>6.1} s  PostgreSQL reachable again after {:.1} s",
                    elapsed.as_secs_f64(),
                    duration.as_secs_f64()
                );
                cuts.push(Cut {
                    at_s: secs(started - traffic_started),
                    duration_s: secs(now - started),
                    connections_dropped: dropped,
                });
                cut_active = None;
            }
        } else if cut_plan.last().is_some_and(|(at, _)| elapsed >= *at) {
            let (_, duration) = cut_plan.pop().expect("a planned cut");
            let dropped = proxy.cut();
            println!(
                "  {:>6.1} s  PostgreSQL cut for {:.1} s ({dropped} live connections dropped, new ones refused)",
                elapsed.as_secs_f64(),
                duration.as_secs_f64()
            );
            cut_active = Some((now, duration, dropped));
        }
        let faults_done = done_killing
            && broker_figures.is_some()
            && broker.is_none()
            && cut_plan.is_empty()
            && cut_active.is_none()
            && fleet
                .replicas
                .iter()
                .all(|r| r.child.is_some() && r.awaiting_ready.is_none());
        if report.is_some() && faults_done {
            break;
        }
        // A short run ends its traffic before the planned faults: they come at once then.
        if report.is_some() {
            broker_at = broker_at.min(elapsed);
            if let Some((at, _)) = cut_plan.last_mut() {
                *at = (*at).min(elapsed);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = report.expect("the simulator's report");
    let ok_report = !report.aborted && report.counts.in_flight == 0;
    drop(stop_tx);

    // 5. Catch up (no faults any more).
    println!("chaos: faults over; waiting for the outbox to drain and every group to catch up");
    let catch_up = Instant::now();
    let mut last = BTreeMap::new();
    let caught_up = loop {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&lag_pool)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(l) = lags(&lag_reader, &lag_pool).await {
            let behind: Vec<_> = l.iter().filter(|(_, v)| **v > 0).collect();
            if outbox == 0 && behind.is_empty() {
                break true;
            }
            last = l;
        }
        if catch_up.elapsed() > Duration::from_secs(900) {
            println!("chaos: not caught up after 900 s: outbox {outbox} rows, lags {last:?}");
            break false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Deliveries to answering endpoints and notifications leave `pending`. Webhooks keep their order per
    // (endpoint, key): a flaky endpoint's queue of a merchant's settlement webhooks drains one delivery at a time
    // through its retries (the first 100k run: ~16 deliveries a minute over 3 flaky merchants, 235 still pending
    // after 10 min). So wait while the count goes down — given up after 3 min without progress, or 45 min.
    let deliveries_done = Instant::now();
    let (mut fewest, mut progressed_at) = (i64::MAX, Instant::now());
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e USING (endpoint_id)
                      WHERE d.status = 'pending' AND e.url !~ '/hooks/(hang|down)/')
                  + (SELECT count(*) FROM notification_deliveries WHERE status = 'pending')",
        )
        .fetch_one(&lag_pool)
        .await
        .map_err(|e| e.to_string())?;
        if pending < fewest {
            (fewest, progressed_at) = (pending, Instant::now());
        }
        if pending == 0
            || progressed_at.elapsed() > Duration::from_secs(180)
            || deliveries_done.elapsed() > Duration::from_secs(2700)
        {
            println!(
                "chaos: deliveries: {pending} pending after {} s",
                secs(deliveries_done.elapsed())
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let catch_up_s = secs(catch_up.elapsed());
    println!("chaos: caught up: {caught_up} after {catch_up_s} s; checking");

    // 6. The invariants.
    let mut invariants = Vec::new();
    let pool = &lag_pool;
    // (a) verify at grace 0.
    let vopts = verify::Options {
        grace: Duration::ZERO,
        ..verify::Options::default()
    };
    let verdict = verify::verify(&db.url, &kafka, &vopts).await;
    let verify_ok = match &verdict {
        Ok(r) => {
            for c in &r.checks {
                println!(
                    "  verify {:<12} {} checked, {} violation(s)",
                    c.name, c.checked, c.violations
                );
            }
            r.ok
        }
        Err(e) => {
            println!("  verify could not run: {e}");
            false
        }
    };
    invariants.push(Invariant {
        name: "checkoutctl verify (grace 0)",
        ok: verify_ok,
        figures: match &verdict {
            Ok(r) => format!(
                "{} checks, {} violation(s)",
                r.checks.len(),
                r.checks.iter().map(|c| c.violations).sum::<u64>()
            ),
            Err(e) => format!("could not run: {e}"),
        },
    });
    invariants.push(Invariant {
        name: "caught up (outbox empty, every group at the end)",
        ok: caught_up && ok_report,
        figures: format!(
            "in {catch_up_s} s; simulator in flight at the end {}",
            report.counts.in_flight
        ),
    });
    // (b) No domain event lost, none doubled downstream.
    let committed = flows::harness::outbox_commits(pool)
        .await
        .map_err(|e| e.to_string())?;
    let committed_domain: BTreeSet<uuid::Uuid> = committed
        .iter()
        .filter(|(_, t, _)| t == events::topics::DOMAIN_EVENTS)
        .map(|(id, _, _)| *id)
        .collect();
    let mut bus_records = BTreeMap::new();
    let (domain_records, in_topic, settlement_events) =
        read_events(&bootstrap, events::topics::DOMAIN_EVENTS).await;
    bus_records.insert(events::topics::DOMAIN_EVENTS.to_string(), domain_records);
    for t in [
        events::topics::INTEGRATION_EVENTS,
        events::topics::NOTIFICATION_EVENTS,
        events::topics::ANALYTICS_EVENTS,
    ] {
        let (n, _, _) = read_events(&bootstrap, t).await;
        bus_records.insert(t.to_string(), n);
    }
    let bus_total: u64 = bus_records.values().sum();
    let lost_topic: Vec<_> = committed_domain
        .iter()
        .filter(|id| !in_topic.contains_key(id))
        .collect();
    let resent: u64 = in_topic.values().map(|n| u64::from(*n) - 1).sum();
    let not_from_outbox = in_topic
        .keys()
        .filter(|id| !committed_domain.contains(id))
        .count();
    invariants.push(Invariant {
        name: "0 domain events lost: every committed outbox event in the topic",
        ok: lost_topic.is_empty() && !committed_domain.is_empty(),
        figures: format!(
            "{} committed, {} missing from the topic{}; {} distinct in the topic, {} re-sent copies (decision 0008: a publisher killed between ack and delete; absorbed by event id), {} not from the outbox",
            committed_domain.len(),
            lost_topic.len(),
            lost_topic.first().map(|id| format!(" (first {id})")).unwrap_or_default(),
            in_topic.len(),
            resent,
            not_from_outbox
        ),
    });
    let audit: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT event_id, count(*) FROM audit_log GROUP BY event_id")
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
    let audit_twice = audit.iter().filter(|(_, n)| *n > 1).count();
    let audited: BTreeSet<uuid::Uuid> = audit.iter().map(|(id, _)| *id).collect();
    let lost_audit = committed_domain.difference(&audited).count();
    let extra_audit = audited.difference(&committed_domain).count();
    invariants.push(Invariant {
        name: "every committed domain event in the audit log exactly once",
        ok: lost_audit == 0 && audit_twice == 0 && extra_audit == 0,
        figures: format!(
            "{} audited, {lost_audit} missing, {audit_twice} more than once, {extra_audit} not committed",
            audited.len()
        ),
    });
    // (c) Settlements: one per paid-and-confirmed invoice of the truth, none twice.
    let settled: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT invoice_id, count(*) FROM settlements GROUP BY invoice_id")
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
    let twice = settled.iter().filter(|(_, n)| *n > 1).count();
    let settled_set: BTreeSet<uuid::Uuid> = settled.iter().map(|(id, _)| *id).collect();
    let confirmed: BTreeSet<uuid::Uuid> = report
        .invoices
        .iter()
        .filter(|t| t.status == "confirmed")
        .map(|t| t.invoice_id.as_uuid())
        .collect();
    let unsettled = confirmed.difference(&settled_set).count();
    let wrongly = settled_set.difference(&confirmed).count();
    invariants.push(Invariant {
        name: "0 duplicate settlements; settlements equal the truth",
        ok: twice == 0 && unsettled == 0 && wrongly == 0 && settlement_events.len() == settled_set.len(),
        figures: format!(
            "{} settled of {} confirmed in the truth, {twice} settled twice, {unsettled} missing, {wrongly} not due; {} SettlementCompleted event ids on the bus",
            settled_set.len(),
            confirmed.len(),
            settlement_events.len()
        ),
    });
    // (d) Read models and analytics equal the truth.
    let seen = flows::check::projections(pool)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut differ = 0usize;
    let mut first = None;
    for t in &report.invoices {
        let same = seen.invoices.get(&t.invoice_id).is_some_and(|r| {
            (
                r.status,
                r.amount_paid.normalize(),
                r.overpaid_amount.normalize(),
                r.late_payment,
                r.payments_detected,
                r.payments_failed,
                r.merchant_id,
            ) == (
                t.status,
                t.amount_paid.normalize(),
                t.overpaid_amount.normalize(),
                t.late_payment,
                t.payments_detected,
                t.payments_failed,
                t.merchant_id,
            )
        });
        if !same {
            differ += 1;
            first.get_or_insert(t.invoice_id);
        }
    }
    invariants.push(Invariant {
        name: "read models equal the truth",
        ok: differ == 0 && seen.invoices.len() == report.invoices.len(),
        figures: format!(
            "{} invoices in the truth, {} in the read models, {differ} differ{}",
            report.invoices.len(),
            seen.invoices.len(),
            first.map(|f| format!(" (first {f})")).unwrap_or_default()
        ),
    });
    let daily = flows::check::analytics(pool)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let mut views: BTreeMap<MerchantId, u64> = BTreeMap::new();
    for ((merchant, _), d) in &daily.daily {
        if d.checkout_views > 0 {
            *views.entry(*merchant).or_default() += d.checkout_views as u64;
        }
    }
    let views_total: u64 = views.values().sum();
    let truth_views: u64 = report.views.values().sum();
    invariants.push(Invariant {
        name: "analytics equal the truth (checkout views per merchant)",
        ok: views == report.views,
        figures: format!(
            "{views_total} views counted for {} merchants, {truth_views} in the truth for {}",
            views.len(),
            report.views.len()
        ),
    });
    // (e) Webhooks: every delivery to an answering endpoint delivered, received under its one webhook id.
    let rows: Vec<(String, String, String, uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT d.msg_id, d.status, e.url, d.endpoint_id, d.event_id FROM webhook_deliveries d
           JOIN webhook_endpoints e USING (endpoint_id) WHERE d.redelivery_of IS NULL",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let received = hooks.received(None);
    let mut by_id: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in &received {
        if let Some(id) = &r.webhook_id {
            by_id.entry(id.clone()).or_default().insert(r.path.clone());
        }
    }
    let answering: Vec<_> = rows
        .iter()
        .filter(|r| r.2.contains("/hooks/ok/") || r.2.contains("/hooks/flaky/"))
        .collect();
    let undelivered = answering.iter().filter(|r| r.1 != "delivered").count();
    let unreceived = answering
        .iter()
        .filter(|r| {
            !by_id.get(&r.0).is_some_and(|paths| {
                r.2.ends_with(paths.iter().next().map_or("", |p| p.as_str()))
            })
        })
        .count();
    let mut per_pair: HashMap<(uuid::Uuid, uuid::Uuid), BTreeSet<&str>> = HashMap::new();
    for r in &rows {
        per_pair.entry((r.3, r.4)).or_default().insert(r.0.as_str());
    }
    let unstable = per_pair.values().filter(|s| s.len() > 1).count()
        + by_id.values().filter(|paths| paths.len() > 1).count();
    let hanging_failed = rows
        .iter()
        .filter(|r| r.2.contains("/hooks/hang/") && r.1 == "failed")
        .count();
    invariants.push(Invariant {
        name: "every webhook delivered at least once with a stable id",
        ok: undelivered == 0 && unreceived == 0 && unstable == 0 && !answering.is_empty(),
        figures: format!(
            "{} deliveries to answering endpoints: {undelivered} not delivered, {unreceived} never received under their webhook-id, {unstable} ids not stable; {} requests received; {hanging_failed} to hanging endpoints dead-lettered as designed",
            answering.len(),
            received.len()
        ),
    });
    // (f) Notifications: every one sent; every e-mail in the sandbox under its Message-ID, every SMS there.
    let ntf: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT channel, status, provider_id FROM notification_deliveries")
            .fetch_all(pool)
            .await
            .map_err(|e| e.to_string())?;
    let unsent: Vec<_> = ntf.iter().filter(|n| n.1 != "sent").collect();
    let mut message_ids = BTreeSet::new();
    let mut sms_files = 0usize;
    if let Ok(dir) = std::fs::read_dir(sandbox_dir.join("mail")) {
        for f in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(f.path()) {
                for line in text.lines() {
                    if let Some(v) = line
                        .strip_prefix("Message-ID:")
                        .or_else(|| line.strip_prefix("Message-Id:"))
                    {
                        message_ids.insert(v.trim().trim_matches(['<', '>']).to_string());
                    }
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(sandbox_dir.join("sms")) {
        sms_files = dir.flatten().count();
    }
    let emails: Vec<_> = ntf
        .iter()
        .filter(|n| n.0 == "email" && n.1 == "sent")
        .collect();
    let emails_missing = emails
        .iter()
        .filter(|n| {
            !n.2.as_deref()
                .is_some_and(|p| message_ids.contains(p.trim_matches(['<', '>'])))
        })
        .count();
    let sms_sent = ntf.iter().filter(|n| n.0 == "sms" && n.1 == "sent").count();
    invariants.push(Invariant {
        name: "every notification delivered at least once with a stable id",
        ok: unsent.is_empty() && emails_missing == 0 && sms_files >= sms_sent && !ntf.is_empty(),
        figures: format!(
            "{} notifications: {} not sent{}; {} e-mails sent, {emails_missing} not in the SMTP sandbox under their Message-ID ({} distinct ids there); {sms_sent} SMS sent, {sms_files} requests at the SMS sandbox",
            ntf.len(),
            unsent.len(),
            unsent.first().map(|n| format!(" (first: {} {})", n.0, n.1)).unwrap_or_default(),
            emails.len(),
            message_ids.len()
        ),
    });
    // (g) The faults themselves.
    let every_service_killed = figures.values().all(|f| f.kills > 0);
    invariants.push(Invariant {
        name: "faults as required (>= kills, each service, one broker, PostgreSQL cuts 10-30 s)",
        ok: kills_total >= min_kills
            && every_service_killed
            && broker_figures.is_some()
            && cuts.len() == pg_cuts
            && cuts.iter().all(|c| (9.5..=31.0).contains(&c.duration_s)),
        figures: format!(
            "{kills_total} SIGKILLs (min {min_kills}), every service: {every_service_killed}; broker: {}; {} cuts",
            broker_figures.is_some(),
            cuts.len()
        ),
    });

    // 7. Stop and report.
    fleet.stop_all().await;
    let _ = sandbox.kill().await;
    let ok = invariants.iter().all(|i| i.ok);
    let summary = Summary {
        seed,
        rate,
        target_events,
        wall_s: secs(wall.elapsed()),
        traffic_s: (traffic_s * 10.0).round() / 10.0,
        invoices: report.counts.invoices,
        bus_records,
        bus_records_total: bus_total,
        services: figures,
        kills_total,
        broker: broker_figures,
        pg_cuts: cuts,
        max_lag,
        catch_up_s,
        verify_ok,
        invariants,
        ok,
    };
    print_summary(&summary);
    let json = target_dir
        .join("chaos")
        .join(format!("summary-{seed}.json"));
    if let Ok(text) = serde_json::to_string_pretty(&summary) {
        let _ = std::fs::write(&json, text);
        let _ = std::fs::write(
            target_dir.join("chaos").join("summary.json"),
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        );
        println!("summary: {}", json.display());
    }
    Ok(ok)
}

fn print_summary(s: &Summary) {
    println!("\n=== chaos run: seed {} ===", s.seed);
    println!(
        "traffic: {} invoices at {}/s in {:.0} s; {} records on the bus (target {}): {}",
        s.invoices,
        s.rate,
        s.traffic_s,
        s.bus_records_total,
        s.target_events,
        s.bus_records
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("SIGKILLs: {} in total", s.kills_total);
    for (name, f) in &s.services {
        let (min, max) = f
            .rto_s
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!(
            "  {:<17} x{}  {:>3} kills  {:>2} crashes  RTO to /ready {}",
            name,
            f.replicas,
            f.kills,
            f.crashes,
            if f.rto_s.is_empty() {
                "-".into()
            } else {
                format!("{min:.1}–{max:.1} s")
            }
        );
    }
    match &s.broker {
        Some(b) => println!(
            "broker: {} SIGKILLed at {:.0} s, down {:.1} s, ISR of every domain partition full again {}",
            b.node_pidfile,
            b.at_s,
            b.down_s,
            b.isr_restored_s.map_or("never seen".into(), |v| format!(
                "{v:.1} s after the restart"
            ))
        ),
        None => println!("broker: not killed"),
    }
    for c in &s.pg_cuts {
        println!(
            "PostgreSQL cut at {:.0} s for {:.1} s ({} connections dropped)",
            c.at_s, c.duration_s, c.connections_dropped
        );
    }
    println!(
        "max lag (records): {}",
        s.max_lag
            .iter()
            .map(|(g, v)| format!("{g} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "caught up in {:.0} s after the faults; wall time {:.0} s",
        s.catch_up_s, s.wall_s
    );
    for i in &s.invariants {
        println!(
            "  [{}] {}: {}",
            if i.ok { "PASS" } else { "FAIL" },
            i.name,
            i.figures
        );
    }
    println!(
        "verify: {}; result: {}",
        if s.verify_ok { "PASS" } else { "FAIL" },
        if s.ok { "PASS" } else { "FAIL" }
    );
}
