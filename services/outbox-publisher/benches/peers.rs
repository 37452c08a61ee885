//! `make bench-peers`: our outbox publisher against its peers, in one run, on the same broker and the same
//! database server; figures are printed, never asserted (decision 0043).
//!
//! 1. Ours: BENCH_EVENTS (default 1,000,000) events of ~926 bytes pre-inserted into the outbox (rows stay until
//!    published: the publisher deletes them after the broker's ack), one publisher with its defaults.
//! 2. Debezium 3.6.1.Final: its PostgreSQL connector (pgoutput) with the Outbox Event Router in the embedded engine
//!    (deploy/local/debezium/run), producing with the same producer settings; the same number of the same events,
//!    each row deleted in its writing transaction as Debezium's outbox documentation recommends. The backlog lives
//!    in the WAL: publication and replication slot are created first, then the events are written, then the engine
//!    starts with snapshot.mode=no_data, so it streams every one of the pre-existing changes from the slot.
//! 3. Kafka's own `kafka-producer-perf-test` with the same record size and producer settings.
//!
//! Both drains are measured the same way, on the broker: the sum of the topic's high watermarks, polled every
//! 100 ms, from the publisher's start until the topic holds every event ("from start") and from the first record
//! to the last ("drain"; it leaves out the JVM's and the engine's start-up). The ratios use the drain rates.
//!
//! Needs the shared broker (`make up`) and BENCH_DATABASE_URL: a PostgreSQL server with wal_level=logical, which
//! `make bench-peers` starts (deploy/local/bench-pg) and stops again. Both databases are created on it, with every
//! migration applied, and dropped at the end.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    config, env_or, fill, load_average, producer_perf_test, record_size, records_in,
    watermark_reader,
};
use service_kit::shutdown::CancellationToken;
use sqlx::Connection;
use testkit::{create_topic, fresh_database_on, infra, redact, workspace_root};

const PARTITIONS: i32 = 12;

/// How long a drain took, measured on the broker.
struct Drain {
    /// From the publisher's (or the engine's process's) start until the topic held every event.
    from_start: Duration,
    /// From the first record on the topic to the last.
    first_to_last: Duration,
    events: u64,
}

impl Drain {
    fn rate(&self) -> f64 {
        self.events as f64 / self.first_to_last.as_secs_f64()
    }
    fn rate_from_start(&self) -> f64 {
        self.events as f64 / self.from_start.as_secs_f64()
    }
    fn print(&self, label: &str) {
        println!(
            "   {label}: {} events; drain (first record → last) {:.1}s = {:.0} events/s; from start {:.1}s = {:.0} \
             events/s; load average {}",
            self.events,
            self.first_to_last.as_secs_f64(),
            self.rate(),
            self.from_start.as_secs_f64(),
            self.rate_from_start(),
            load_average()
        );
    }
}

/// Polls `topic`'s high watermarks until it holds `events` records; `alive` is asked before each poll, and a `false`
/// followed by a poll short of `events` ends the wait with a panic naming `what`.
async fn watch_drain(
    topic: &str,
    events: u64,
    started: Instant,
    what: &str,
    mut alive: impl FnMut() -> bool,
) -> Drain {
    let consumer = watermark_reader();
    let mut first: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        // Asked before the poll: a runner that exits once its last record was acknowledged (acks=all: the high
        // watermark already covers it) is not mistaken for one that stopped early.
        let was_alive = alive();
        let held = records_in(&consumer, topic, PARTITIONS);
        let now = Instant::now();
        if held > 0 && first.is_none() {
            first = Some(now);
        }
        if held as u64 >= events {
            return Drain {
                from_start: now - started,
                first_to_last: now - first.unwrap(),
                events,
            };
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {what}: {held}/{events} on the topic after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            was_alive,
            "{what} stopped with {held} of {events} records on the topic"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `postgres://user:password@host:port/db` → (host, port, user, password, db).
fn url_parts(url: &str) -> (String, String, String, String, String) {
    let rest = url.split_once("://").expect("a postgres:// URL").1;
    let (creds, rest) = rest.rsplit_once('@').expect("credentials in the URL");
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (hostport, db) = rest.split_once('/').expect("a database in the URL");
    let db = db.split('?').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    (
        host.into(),
        port.into(),
        user.into(),
        password.into(),
        db.into(),
    )
}

async fn drop_database(server_url: &str, name: &str) {
    let mut admin = sqlx::PgConnection::connect(server_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    service_kit::telemetry::init(&service_kit::LogSettings {
        filter: "warn".into(),
        ..Default::default()
    });
    let server = std::env::var("BENCH_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "BENCH_DATABASE_URL is not set: run `make bench-peers`, which starts a PostgreSQL with wal_level=logical \
             for this benchmark (deploy/local/bench-pg) and stops it afterwards"
        )
    });
    let events = env_or("BENCH_EVENTS", 1_000_000);
    let record_size = record_size();
    println!(
        "peers benchmark: {events} events of {record_size} bytes; broker {}; database server {} (wal_level=logical, \
         of its own); load average {}",
        infra().bootstrap_servers,
        redact(&server),
        load_average()
    );

    // The server is this benchmark's own: what an interrupted run left (a slot holds WAL back) goes first.
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    let leftovers: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    for name in leftovers {
        drop_database(&server, &name).await; // its replication slots go with it
    }
    drop(admin);

    // 1. Ours.
    println!(
        "1. outbox publisher (rows pre-inserted, deleted by the publisher after the broker's ack)"
    );
    let db = fresh_database_on(&server).await;
    let topic = create_topic(PARTITIONS).await;
    fill(&db.pool, events, false).await;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = outbox_publisher::start(config(&db.url, &topic), shutdown.clone())
        .await
        .unwrap();
    let ours = watch_drain(&topic, events, started, "outbox publisher", || true).await;
    shutdown.cancel();
    running.wait().await.unwrap();
    ours.print("ours");
    db.pool.close().await;
    drop_database(&server, &db.name).await;

    // 2. Debezium.
    println!(
        "2. Debezium PostgreSQL connector + Outbox Event Router (embedded engine, pgoutput; rows deleted in the \
         writing transaction)"
    );
    let db = fresh_database_on(&server).await;
    let topic = create_topic(PARTITIONS).await;
    // The slot and the publication first, then the backlog: every change below is in the slot's WAL, and the engine
    // (snapshot.mode=no_data, no stored offsets) starts streaming from the slot's position, before the backlog.
    let slot = format!("peers_{}", db.name);
    sqlx::query("CREATE PUBLICATION bench_outbox FOR TABLE outbox")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&slot)
        .execute(&db.pool)
        .await
        .unwrap();
    fill(&db.pool, events, true).await;
    let (host, port, user, password, dbname) = url_parts(&db.url);
    let dev = workspace_root().join(".dev");
    std::fs::create_dir_all(dev.join("bench")).unwrap();
    std::fs::create_dir_all(dev.join("logs")).unwrap();
    let offsets = dev.join(format!("bench/{slot}.offsets"));
    let _ = std::fs::remove_file(&offsets);
    let log_path = dev.join("logs/bench-peers-debezium.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut runner = Command::new(workspace_root().join("deploy/local/debezium/run"))
        .arg(format!("bootstrap={}", infra().bootstrap_servers))
        .args([
            format!("db.host={host}"),
            format!("db.port={port}"),
            format!("db.name={dbname}"),
            format!("db.user={user}"),
            format!("db.password={password}"),
            format!("slot={slot}"),
            "publication=bench_outbox".into(),
            format!("topic={topic}"),
            format!("expect={events}"),
            format!("offsets={}", offsets.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start deploy/local/debezium/run");
    let debezium = watch_drain(&topic, events, started, "Debezium", || {
        matches!(runner.try_wait(), Ok(None))
    })
    .await;
    let status = runner.wait().unwrap();
    let mut own = String::new();
    runner
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut own)
        .unwrap();
    debezium.print("Debezium");
    let own = own.lines().last().unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(own) {
        Ok(v) => {
            let ms = |k: &str| v[k].as_i64().unwrap_or(0);
            println!(
                "   Debezium's runner ({status}): {} records acknowledged, {} change events dropped by the router; \
                 first ack {:.1}s after its start, last ack {:.1}s after the first (log: {})",
                v["records"],
                v["ignored"],
                (ms("first_ack_ms") - ms("started_ms")) as f64 / 1e3,
                (ms("last_ack_ms") - ms("first_ack_ms")) as f64 / 1e3,
                log_path.display()
            );
        }
        Err(_) => println!(
            "   Debezium's runner ({status}) printed no summary (log: {})",
            log_path.display()
        ),
    }
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&db.pool)
        .await
        .unwrap();
    let _ = std::fs::remove_file(&offsets);
    db.pool.close().await;
    drop_database(&server, &db.name).await;

    // 3. Kafka's own producer.
    let perf_topic = create_topic(PARTITIONS).await;
    let perf = tokio::task::spawn_blocking(move || {
        producer_perf_test(&perf_topic, events.min(1_000_000), record_size)
    })
    .await
    .unwrap();
    println!(
        "3. kafka-producer-perf-test: {}; load average {}",
        perf.summary,
        load_average()
    );

    println!(
        "ratios (drain rates): ours / Debezium = {:.0} / {:.0} = {:.2} (target >= 1.5)",
        ours.rate(),
        debezium.rate(),
        ours.rate() / debezium.rate()
    );
    match perf.rate {
        Some(rate) => println!(
            "                      ours / kafka-producer-perf-test = {:.0} / {rate:.0} = {:.2} (target >= 0.6)",
            ours.rate(),
            ours.rate() / rate
        ),
        None => println!("   could not read the perf-test rate: {}", perf.stderr),
    }
    println!(
        "from start (incl. start-up): ours / Debezium = {:.0} / {:.0} = {:.2}",
        ours.rate_from_start(),
        debezium.rate_from_start(),
        ours.rate_from_start() / debezium.rate_from_start()
    );
}
