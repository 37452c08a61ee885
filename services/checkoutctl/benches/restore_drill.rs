//! The topic-corruption drill (`make restore-drill`; issue 18 item 4, decision 0041, runbook
//! `docs/runbooks/topic-restore.md`): the domain-events topic is deleted under traffic and restored from the
//! continuous backup, following the runbook; the figures are checked against the spec's "Topic Corruption →
//! restore from backup" row (RTO < 2 h, RPO < 15 min).
//!
//! Runs on the dev stack of `make up` (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`) without touching what others
//! use there: a fresh database and fresh, uniquely named topics (`flows::harness::Bus`) and consumer groups
//! (`restore-drill-<service>-<hex>`). Needs the debug binaries of the outbox publisher and the settlement,
//! projections and audit services (`RESTORE_DRILL_BIN_DIR`, default `$CARGO_TARGET_DIR/debug`; the make target
//! builds them).
//!
//! What it does, in order:
//! 1. The four service binaries as processes on the private bus, `checkoutctl topics backup` (long-running,
//!    `--flush-interval RESTORE_DRILL_FLUSH`, 2s) on the domain topic, and the flow generator's by-service
//!    scenario (`RESTORE_DRILL_INVOICES` 1000 invoices of `RESTORE_DRILL_MERCHANTS` 30 merchants, ~5k events)
//!    appended through the outbox at `RESTORE_DRILL_RATE` (50) events/s, the truth kept.
//! 2. Once `RESTORE_DRILL_CORRUPT_AFTER` (20) seconds passed, the backup flushed records and every group consumed
//!    some: the topic is deleted (T0). The writers keep appending to the outbox.
//! 3. The runbook: the publisher and the consumers are stopped (SIGTERM; SIGKILL after 30 s), the backup too
//!    (SIGTERM: a last flush; `RESTORE_DRILL_KILL_BACKUP=1` SIGKILLs it at T0 instead, the worst case:
//!    everything since its last flush is lost); `checkoutctl topics restore --repoint-groups` re-creates the
//!    topic from the backup and moves the three groups; the consumers start again, then the publisher.
//! 4. RTO: T0 → the publisher's first write into the restored topic and every group's position moving past
//!    where the restore put it (detection and decision are not in it: the drill acts at once).
//!    RPO: the domain events (the generator's and the settlement service's, every one recorded by a trigger
//!    on the outbox: `flows::harness::record_outbox_commits`) that had left the outbox — so the topic had
//!    acknowledged them — when the publisher was stopped, but are not in the restored topic: counted, and in
//!    time, the age at T0 of the oldest and of the newest of them (from their outbox insertion times: upper
//!    bounds). Also the recovery point: the age at T0 of the newest record in the backup.
//! 5. The domain events still in the outbox when the publisher stopped, or committed later, must all reach the
//!    restored topic (the publisher sends them after the restart): each missing one is a silent loss, a
//!    violation. Counted, with the outbox rows the publisher tried against the deleted topic meanwhile.
//! 6. Once the traffic is done and every group is at the end: `checkoutctl verify --grace 0` (the replayed
//!    records absorbed: no double settlement) and the settlements against the generator's truth (differences
//!    are expected only when events were lost).
//!
//! Prints a summary and writes it as JSON to `<target>/restore-drill/summary.json` (and beside the run's logs
//! and backup in `<target>/restore-drill/<topic>/`); exits 1 on a violation (RTO, RPO, a silent loss, verify,
//! an unexplained settlement difference, a failed restore), 2 when the drill cannot run.

#[path = "../tests/system/mod.rs"]
mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use checkoutctl::backup_format;
use chrono::{DateTime, Utc};
use flows::Scenario;
use flows::harness::{Bus, append_at_rate, committed_offsets, end_offsets};
use flows::service::{consumer_toml, spawn_process};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use system::env;

const RTO_LIMIT: Duration = Duration::from_secs(2 * 3600);
const RPO_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How long a stopped process gets to exit after SIGTERM before it is SIGKILLed.
const STOP_LIMIT: Duration = Duration::from_secs(30);
const CONSUMERS: [&str; 3] = ["settlement", "projections", "audit"];
const PUBLISHER: &str = "outbox-publisher";
/// A member's session: a SIGKILLed consumer leaves its group after this (the restore refuses active groups).
const POLICY: &str = "session_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n";
const OPTIONS: &str = "commit_interval = \"200ms\"\ndrain_timeout = \"3s\"\n";

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// `to - from` as a duration, 0 when negative.
fn age(to: DateTime<Utc>, from: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// One service binary: its configuration (written once: a restart is the same group) and its process.
struct Service {
    name: &'static str,
    group: Option<String>,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// SIGTERMs every child, waits up to [`STOP_LIMIT`] for each, SIGKILLs the rest; returns the names SIGKILLed.
async fn stop(children: Vec<(&'static str, Child)>) -> Vec<&'static str> {
    for (_, child) in &children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let started = Instant::now();
    let mut killed = Vec::new();
    for (name, mut child) in children {
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if started.elapsed() > STOP_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                killed.push(name);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    killed
}

/// The Kafka-committed (projections, audit) or stored (settlement) positions of `group`, summed (none: 0).
async fn position(pool: &sqlx::PgPool, service: &str, group: &str, topic: &str) -> i64 {
    if service == "settlement" {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_one(pool)
        .await
        .expect("read consumer_offsets")
    } else {
        committed_offsets(group, topic)
            .await
            .iter()
            .map(|o| (*o).max(0))
            .sum()
    }
}

/// Active members of `group` on the dev cluster.
async fn members(group: &str) -> usize {
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
            .create()
            .expect("a Kafka client");
        consumer
            .fetch_group_list(Some(&group), Duration::from_secs(10))
            .expect("describe the group")
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum()
    })
    .await
    .expect("group task")
}

/// Runs `checkoutctl ARGS` on the dev cluster and `database_url`; returns (exit code, stdout, stderr).
fn run_checkoutctl(args: &[&str], database_url: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_checkoutctl"))
        .args(args)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .env("DATABASE_URL", database_url)
        .output()
        .expect("run checkoutctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The event ids in the backup of `topic` under `dir` and the newest record timestamp (ms), as the manifest
/// counts them.
fn backup_contents(dir: &Path, topic: &str) -> (BTreeSet<uuid::Uuid>, Option<i64>) {
    let tdir = backup_format::topic_dir(dir, topic);
    let manifest = backup_format::read_manifest(&tdir)
        .expect("a readable manifest")
        .expect("a manifest");
    let (mut ids, mut newest) = (BTreeSet::new(), None::<i64>);
    for p in 0..manifest.partitions {
        backup_format::read_partition(&tdir, &manifest, p, |r| {
            if let Some(id) = r
                .value
                .as_deref()
                .and_then(|v| events::decode(v).ok())
                .map(|e| e.event_id().as_uuid())
            {
                ids.insert(id);
            }
            newest = newest.max(r.timestamp);
            Ok(())
        })
        .expect("a readable backup");
    }
    (ids, newest)
}

/// Starts `checkoutctl topics backup` of `topic` into `dir` (long-running), keeping the Kafka-committed positions
/// of `groups`, flushing every `flush`; its output appended to `log`.
fn spawn_backup(dir: &Path, topic: &str, groups: &[&str], flush: &str, log: &Path) -> Child {
    let file = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the backup's log")
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkoutctl"));
    command.args(["topics", "backup", "--dir"]).arg(dir).args([
        "--topic",
        topic,
        "--flush-interval",
        flush,
        "--progress-interval",
        "5s",
    ]);
    for g in groups {
        command.args(["--group", g]);
    }
    command
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .stdin(Stdio::null())
        .stdout(file())
        .stderr(file())
        .spawn()
        .expect("start checkoutctl topics backup")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let invoices: usize = env("RESTORE_DRILL_INVOICES", 1000);
    let merchants: usize = env("RESTORE_DRILL_MERCHANTS", 30);
    let rate: u32 = env("RESTORE_DRILL_RATE", 50);
    let corrupt_after = Duration::from_secs(env("RESTORE_DRILL_CORRUPT_AFTER", 20));
    let flush: String = env("RESTORE_DRILL_FLUSH", "2s".to_string());
    let kill_backup = std::env::var("RESTORE_DRILL_KILL_BACKUP").is_ok_and(|v| v == "1");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| testkit::workspace_root().join("target"));
    let bins = std::env::var("RESTORE_DRILL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir.join("debug"));
    for name in CONSUMERS.iter().chain([&PUBLISHER]) {
        if !bins.join(name).is_file() {
            eprintln!(
                "{} is missing: build the services first (`make restore-drill` runs `cargo build -p {name} --bins`)",
                bins.join(name).display()
            );
            return ExitCode::from(2);
        }
    }

    let flows = flows::generate(&Scenario::new(0x7e57, merchants, invoices).settled_by_service());
    let traffic_secs = flows.events.len() as f64 / f64::from(rate.max(1));
    // The restore must happen while traffic still flows: the publisher's first write is part of the RTO.
    if traffic_secs < corrupt_after.as_secs_f64() + 60.0 {
        eprintln!(
            "{} events at {rate}/s last {traffic_secs:.0}s: less than RESTORE_DRILL_CORRUPT_AFTER ({}s) + 60s; \
             raise RESTORE_DRILL_INVOICES or lower RESTORE_DRILL_RATE",
            flows.events.len(),
            corrupt_after.as_secs()
        );
        return ExitCode::from(2);
    }
    let bus = Bus::new().await;
    let topic = bus.domain_topic.clone();
    let pool = bus.pool().clone();
    flows::harness::record_outbox_commits(&pool)
        .await
        .expect("install the outbox recorder");
    let run_dir = target_dir.join("restore-drill").join(&topic);
    let backup_dir = run_dir.join("backup");
    std::fs::create_dir_all(&backup_dir).expect("the drill's directory");
    println!(
        "restore drill on {} (topic {topic}, database {}): {merchants} merchants, {invoices} invoices, {} domain \
         events at {rate}/s (~{traffic_secs:.0}s); backup flush every {flush}{}; files in {}",
        testkit::infra().bootstrap_servers,
        bus.db.name,
        flows.events.len(),
        if kill_backup { ", SIGKILLed at T0" } else { "" },
        run_dir.display()
    );

    // 1. The services, the backup, the traffic.
    let mut services: Vec<Service> = CONSUMERS
        .iter()
        .chain([&PUBLISHER])
        .map(|name| {
            let config = run_dir.join(format!("{name}.toml"));
            let group = (*name != PUBLISHER)
                .then(|| testkit::unique_name(&format!("restore-drill-{name}")));
            let text = match &group {
                Some(g) => consumer_toml(g, std::slice::from_ref(&topic), POLICY, OPTIONS, ""),
                None => bus.publisher_toml(),
            };
            std::fs::write(&config, text).expect("a configuration file");
            Service {
                name,
                group,
                config,
                log: run_dir.join(format!("{name}.log")),
                child: None,
            }
        })
        .collect();
    let group_of = |services: &[Service], name: &str| -> String {
        services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.group.clone())
            .expect("a consumer")
    };
    let (settlement_group, projections_group, audit_group) = (
        group_of(&services, "settlement"),
        group_of(&services, "projections"),
        group_of(&services, "audit"),
    );
    let start = |services: &mut [Service], names: &[&str]| {
        for s in services.iter_mut().filter(|s| names.contains(&s.name)) {
            s.child = Some(spawn_process(
                &bins.join(s.name),
                &s.config,
                &bus,
                &s.log,
                &[],
            ));
        }
    };
    start(&mut services, &CONSUMERS);
    start(&mut services, &[PUBLISHER]);
    let backup_log = run_dir.join("backup.log");
    let backup_groups = [projections_group.as_str(), audit_group.as_str()];
    let mut backup = spawn_backup(&backup_dir, &topic, &backup_groups, &flush, &backup_log);
    let started = Instant::now();
    let traffic = tokio::spawn(append_at_rate(
        pool.clone(),
        flows.events.clone(),
        f64::from(rate),
        20,
    ));

    // Until the corruption: time passed, the backup flushed records, every group consumed some.
    let topic_dir = backup_format::topic_dir(&backup_dir, &topic);
    loop {
        for s in &mut services {
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited ({status}); see {}", s.name, s.log.display());
            }
        }
        if let Some(status) = backup.try_wait().expect("the backup's status") {
            panic!("the backup exited ({status}); see {}", backup_log.display());
        }
        let backed_up = backup_format::read_manifest(&topic_dir)
            .ok()
            .flatten()
            .map_or(0, |m| m.records());
        let mut consumed = true;
        for (name, group) in [
            ("settlement", &settlement_group),
            ("projections", &projections_group),
            ("audit", &audit_group),
        ] {
            consumed &= position(&pool, name, group, &topic).await > 0;
        }
        if started.elapsed() >= corrupt_after && backed_up > 0 && consumed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "after 300 s: backed up {backed_up} record(s), every group consumed: {consumed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 2. The corruption: the topic's data is deleted.
    let before: i64 = end_offsets(&topic).await.iter().sum();
    let t0_wall = Utc::now();
    let t0 = Instant::now();
    if kill_backup {
        let _ = backup.kill();
    }
    testkit::delete_topic(&topic).await;
    let deleted = t0.elapsed();
    println!(
        "CORRUPTION at {t0_wall} (+{}s): {topic} deleted ({before} records; the name was free after {}s)",
        secs(started.elapsed()),
        secs(deleted)
    );

    // 3. The runbook. Step 1: stop the publisher and the consumers, and the backup (SIGTERM: a last flush).
    let fleet: Vec<(&'static str, Child)> = services
        .iter_mut()
        .filter_map(|s| s.child.take().map(|c| (s.name, c)))
        .collect();
    let (mut sigkilled, backup_killed) = tokio::join!(stop(fleet), stop(vec![("backup", backup)]));
    sigkilled.extend(backup_killed);
    let stopped = t0.elapsed();
    // Every domain event committed so far either left the outbox — acknowledged by the topic before its
    // deletion (nothing else could take it: the broker does not create topics on demand) — or is still held
    // there and must reach the restored topic. One statement: one snapshot.
    let at_stop: Vec<(uuid::Uuid, bool)> = sqlx::query_as(
        "SELECT c.event_id, o.event_id IS NOT NULL FROM outbox_committed c \
         LEFT JOIN outbox o ON o.event_id = c.event_id WHERE c.topic = $1",
    )
    .bind(events::topics::DOMAIN_EVENTS)
    .fetch_all(&pool)
    .await
    .expect("read the outbox");
    let acknowledged: BTreeSet<uuid::Uuid> = at_stop
        .iter()
        .filter(|(_, h)| !h)
        .map(|(id, _)| *id)
        .collect();
    let held = at_stop.len() - acknowledged.len();
    let tried: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE attempts > 0")
        .fetch_one(&pool)
        .await
        .expect("read the outbox");
    println!(
        "stopped at +{}s{}: {held} domain event(s) held in the outbox ({tried} outbox row(s) tried against the \
         deleted topic), {} acknowledged before",
        secs(stopped),
        if sigkilled.is_empty() {
            String::new()
        } else {
            format!(
                " (SIGKILLed after {}s: {sigkilled:?})",
                STOP_LIMIT.as_secs()
            )
        },
        acknowledged.len()
    );
    // `restore --repoint-groups` refuses groups with members; a SIGKILLed member leaves after its session.
    for group in [&settlement_group, &projections_group, &audit_group] {
        let waited = Instant::now();
        while members(group).await > 0 {
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "{group} still has members 60 s after its consumers stopped"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Step 3: restore into the topic itself (its name is free) and repoint the groups.
    let restore_started = t0.elapsed();
    let topics_file = testkit::workspace_root().join("deploy/kafka/topics.yaml");
    let (from, file) = (
        backup_dir.to_string_lossy().into_owned(),
        topics_file.to_string_lossy().into_owned(),
    );
    let restore_args = [
        "topics",
        "restore",
        "--from",
        from.as_str(),
        "--topic",
        topic.as_str(),
        "--file",
        file.as_str(),
        "--repoint-groups",
        "--group",
        projections_group.as_str(),
        "--group",
        audit_group.as_str(),
        "--actor",
        "restore-drill",
        "--json",
    ]
    .map(String::from);
    let (code, stdout, stderr) = {
        let (args, url) = (restore_args.clone(), bus.db.url.clone());
        tokio::task::spawn_blocking(move || {
            run_checkoutctl(&args.iter().map(String::as_str).collect::<Vec<_>>(), &url)
        })
        .await
        .expect("restore task")
    };
    std::fs::write(run_dir.join("restore.log"), &stderr).expect("the restore's log");
    std::fs::write(run_dir.join("restore.json"), &stdout).expect("the restore's summary");
    let restored = t0.elapsed();
    let restore: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    if code != 0 || restore["ok"] != true {
        println!("RESTORE FAILED (exit {code}):\n{stdout}{stderr}");
        return ExitCode::FAILURE;
    }
    let restored_records = restore["records"].as_i64().unwrap_or(-1);
    // Where the restore put each group (the sum of its partitions' positions in the restored topic).
    let mut starts: BTreeMap<&str, i64> = BTreeMap::new();
    let mut sources: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for (name, group) in [
        ("settlement", &settlement_group),
        ("projections", &projections_group),
        ("audit", &audit_group),
    ] {
        let Some(plan) = restore["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group"] == group.as_str()))
        else {
            println!("RESTORE did not repoint {group}:\n{stdout}");
            return ExitCode::FAILURE;
        };
        let moves = plan["moves"].as_array().cloned().unwrap_or_default();
        starts.insert(
            name,
            moves.iter().filter_map(|m| m["target"].as_i64()).sum(),
        );
        for m in &moves {
            *sources
                .entry(name)
                .or_default()
                .entry(m["from"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    let restored_end: i64 = end_offsets(&topic).await.iter().sum();
    println!(
        "restored at +{}s: {restored_records} record(s) in {}s; groups placed at {starts:?} of {restored_end} \
         (positions from {sources:?})",
        secs(restored),
        restore["seconds"].as_f64().unwrap_or(f64::NAN)
    );

    // Step 4: the consumers, then the publisher.
    start(&mut services, &CONSUMERS);
    start(&mut services, &[PUBLISHER]);
    let restarted = t0.elapsed();
    // Step 5: the backup again, into a new directory (the restored topic's offsets are not the old ones).
    let backup_after_dir = run_dir.join("backup-after");
    let backup_after = spawn_backup(
        &backup_after_dir,
        &topic,
        &backup_groups,
        &flush,
        &run_dir.join("backup-after.log"),
    );

    // RTO: the publisher writes to the restored topic and every group consumes it.
    let mut first_write = None;
    let mut consuming: BTreeMap<&str, Duration> = BTreeMap::new();
    while first_write.is_none() || consuming.len() < CONSUMERS.len() {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "not resumed within 15 min of T0 (first write {first_write:?}, consuming {consuming:?})"
        );
        if first_write.is_none() && end_offsets(&topic).await.iter().sum::<i64>() > restored_end {
            first_write = Some(t0.elapsed());
        }
        for (name, group) in [
            ("settlement", &settlement_group),
            ("projections", &projections_group),
            ("audit", &audit_group),
        ] {
            if !consuming.contains_key(name)
                && position(&pool, name, group, &topic).await > starts[name]
            {
                consuming.insert(name, t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_write = first_write.expect("measured");
    let all_consuming = consuming.values().copied().max().expect("three groups");
    let rto = first_write.max(all_consuming);
    println!(
        "resumed: first write at +{}s, groups consuming at {}",
        secs(first_write),
        consuming
            .iter()
            .map(|(g, d)| format!("{g} +{}s", secs(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The rest of the traffic, then quiescence.
    traffic.await.expect("the writers");
    println!("traffic done at +{}s after T0", secs(t0.elapsed()));
    system::wait_quiescent(
        &bus,
        Some(&settlement_group),
        &projections_group,
        &audit_group,
        Duration::from_secs(600),
    )
    .await;

    // The new backup catches up with the restored topic (what the next corruption would restore).
    let end: u64 = end_offsets(&topic).await.iter().sum::<i64>() as u64;
    let after_dir = backup_format::topic_dir(&backup_after_dir, &topic);
    let waited = Instant::now();
    let mut backed_up_after = 0;
    while waited.elapsed() < Duration::from_secs(60) {
        backed_up_after = backup_format::read_manifest(&after_dir)
            .ok()
            .flatten()
            .map_or(0, |m| m.records());
        if backed_up_after >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop(vec![("backup-after", backup_after)]).await;
    let backup_after_ok = backed_up_after == end;

    // RPO, and what happened to the events of the outage.
    let in_topic = flows::harness::event_ids_on(&testkit::infra().bootstrap_servers, &topic).await;
    let (in_backup, newest_backed_up) = backup_contents(&backup_dir, &topic);
    let committed: Vec<(uuid::Uuid, DateTime<Utc>)> = flows::harness::outbox_commits(&pool)
        .await
        .expect("read the outbox recorder")
        .into_iter()
        .filter(|(_, t, _)| t == events::topics::DOMAIN_EVENTS)
        .map(|(id, _, at)| (id, at))
        .collect();
    let mut acknowledged_in_backup = 0usize;
    let mut lost: Vec<(uuid::Uuid, DateTime<Utc>)> = Vec::new();
    let (mut held_back, mut published_after, mut silent) = (0usize, 0usize, Vec::new());
    for (id, at) in &committed {
        let present = in_topic.contains_key(id);
        if acknowledged.contains(id) {
            acknowledged_in_backup += usize::from(in_backup.contains(id));
            if !present {
                lost.push((*id, *at));
            }
        } else {
            held_back += 1;
            if present {
                published_after += 1;
            } else {
                silent.push(*id);
            }
        }
    }
    let restore_lost = in_backup
        .iter()
        .filter(|id| !in_topic.contains_key(*id))
        .count();
    let duplicates = committed
        .iter()
        .filter(|(id, _)| in_topic.get(id).is_some_and(|n| *n > 1))
        .count();
    let oldest_lost = lost.iter().map(|(_, at)| age(t0_wall, *at)).max();
    let newest_lost = lost.iter().map(|(_, at)| age(t0_wall, *at)).min();
    let rpo = oldest_lost.unwrap_or_default();
    let recovery_point = newest_backed_up
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| age(t0_wall, t));

    // The truth of the settlements, and verify.
    let truth = flows.expected_settlements();
    let expected = flows::check::expected_settlement_rows(&truth);
    let actual = flows::check::settlement_rows(&pool)
        .await
        .expect("read settlements");
    let differences = flows::check::settlement_rows_diff(&expected, &actual);
    // Without a lost event the settlements must equal the truth; a lost event can explain differences.
    let unexplained = if lost.is_empty() {
        differences.len()
    } else {
        0
    };
    let mut verify_args = vec![
        "verify".to_string(),
        "--grace".into(),
        "0".into(),
        "--json".into(),
    ];
    verify_args.extend(system::verify_args(
        &topic,
        &projections_group,
        &audit_group,
        &settlement_group,
    ));
    let (verify_code, verify_out, verify_err) = {
        let url = bus.db.url.clone();
        tokio::task::spawn_blocking(move || {
            run_checkoutctl(
                &verify_args.iter().map(String::as_str).collect::<Vec<_>>(),
                &url,
            )
        })
        .await
        .expect("verify task")
    };
    let verify: Value = serde_json::from_str(&verify_out).unwrap_or(Value::Null);
    let verified = verify_code == 0 && verify["ok"] == true;

    let fleet: Vec<(&'static str, Child)> = services
        .iter_mut()
        .filter_map(|s| s.child.take().map(|c| (s.name, c)))
        .collect();
    stop(fleet).await;

    let rto_ok = rto < RTO_LIMIT;
    let rpo_ok = rpo < RPO_LIMIT;
    let ok = rto_ok
        && rpo_ok
        && silent.is_empty()
        && restore_lost == 0
        && backup_after_ok
        && verified
        && unexplained == 0;
    let mark = |good: bool| if good { "ok" } else { "VIOLATED" };
    println!("\nRESTORE DRILL (topic deleted under traffic → restored from the continuous backup)");
    println!(
        "  RTO {}s (spec < {}s): T0 → restore done {}s ({restored_records} records), → first write {}s, → every \
         group consuming {}s  [{}]",
        secs(rto),
        RTO_LIMIT.as_secs(),
        secs(restored),
        secs(first_write),
        secs(all_consuming),
        mark(rto_ok)
    );
    println!(
        "    stop {}s, restore {}s→{}s, restart {}s (detection and decision not included: the drill acts at T0)",
        secs(stopped),
        secs(restore_started),
        secs(restored),
        secs(restarted)
    );
    println!(
        "  RPO {} of {} acknowledged event(s) lost (not in the backup: {}); oldest {}s, newest {}s \
         old at T0 (spec < {}s); recovery point {}s old  [{}]",
        lost.len(),
        acknowledged.len(),
        acknowledged.len() - acknowledged_in_backup,
        secs(rpo),
        secs(newest_lost.unwrap_or_default()),
        RPO_LIMIT.as_secs(),
        recovery_point.map_or(f64::NAN, secs),
        mark(rpo_ok)
    );
    println!(
        "  outage: {held} domain event(s) held in the outbox at the stop ({tried} outbox row(s) tried against the \
         deleted topic) + {} committed after it: {published_after} of these {held_back} published into the \
         restored topic, {} missing  [{}]",
        held_back - held,
        silent.len(),
        mark(silent.is_empty())
    );
    println!(
        "  restore: {} backed-up event(s) missing from the restored topic  [{}]; {duplicates} domain event(s) \
         more than once in the topic (publisher retries, absorbed by idempotency)",
        restore_lost,
        mark(restore_lost == 0)
    );
    println!(
        "  backup restarted into a new directory after the restore: {backed_up_after} of {end} record(s) of the \
         restored topic backed up  [{}]",
        mark(backup_after_ok)
    );
    if let Some(checks) = verify["checks"].as_array() {
        for c in checks {
            println!(
                "    verify {:<12} {} checked, {} violation(s)  {}",
                c["name"].as_str().unwrap_or("?"),
                c["checked"],
                c["violations"],
                c["summary"].as_str().unwrap_or("")
            );
        }
    } else {
        println!("    verify: {verify_out}{verify_err}");
    }
    println!(
        "  checkoutctl verify --grace 0: exit {verify_code}  [{}]",
        if verified { "passed" } else { "FAILED" }
    );
    println!(
        "  settlements vs the generator's truth: {} expected, {} recorded, {} difference(s), {unexplained} \
         unexplained  [{}]",
        expected.len(),
        actual.len(),
        differences.len(),
        mark(unexplained == 0)
    );
    for d in differences.iter().take(5) {
        println!("    {d}");
    }

    let consuming_s: BTreeMap<&str, f64> = consuming.iter().map(|(g, d)| (*g, secs(*d))).collect();
    let summary = json!({
        "ok": ok,
        "topic": topic,
        "database": bus.db.name,
        "groups": {"settlement": settlement_group, "projections": projections_group, "audit": audit_group},
        "traffic": {"invoices": invoices, "merchants": merchants, "events": flows.events.len(), "rate": rate},
        "backup": {"flush_interval": flush, "sigkilled_at_t0": kill_backup, "events": in_backup.len()},
        "corrupted_at": t0_wall,
        "corrupted_after_s": secs(corrupt_after),
        "timeline_s": {
            "deleted": secs(deleted), "stopped": secs(stopped), "restore_started": secs(restore_started),
            "restored": secs(restored), "restarted": secs(restarted), "first_write": secs(first_write),
            "consuming": consuming_s,
        },
        "sigkilled": sigkilled,
        "rto": {"seconds": secs(rto), "limit_s": RTO_LIMIT.as_secs(), "ok": rto_ok},
        "rpo": {
            "acknowledged_before_t0": acknowledged.len(), "in_backup": acknowledged_in_backup, "lost": lost.len(),
            "oldest_lost_age_s": secs(rpo), "newest_lost_age_s": newest_lost.map(secs),
            "recovery_point_age_s": recovery_point.map(secs), "limit_s": RPO_LIMIT.as_secs(), "ok": rpo_ok,
        },
        "outage": {
            "held_back": held_back, "in_outbox_at_stop": held, "committed_after_stop": held_back - held,
            "tried_against_deleted_topic": tried,
            "published_after_restore": published_after, "missing": silent.len(),
        },
        "restore": {
            "records": restored_records, "seconds": restore["seconds"], "groups_at": starts,
            "positions_from": sources, "backed_up_missing": restore_lost,
        },
        "backup_after_restore": {"records": backed_up_after, "topic_records": end, "ok": backup_after_ok},
        "duplicates_in_topic": duplicates,
        "settlements": {
            "expected": expected.len(), "recorded": actual.len(), "differences": differences.len(),
            "unexplained": unexplained,
        },
        "verify": {"exit": verify_code, "ok": verified, "report": verify},
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON");
    for path in [
        run_dir.join("summary.json"),
        target_dir.join("restore-drill").join("summary.json"),
    ] {
        std::fs::write(&path, &text).expect("write the summary");
    }
    println!(
        "  summary: {}",
        target_dir.join("restore-drill/summary.json").display()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
