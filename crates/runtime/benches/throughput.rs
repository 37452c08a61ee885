//! Throughput of the consumer runtime with a no-op handler, in each guarantee, against the real broker and
//! database (`make up`). Prints figures; asserts nothing.
//!
//! ```sh
//! cargo bench -p runtime --bench throughput            # 200 000 records of 100 bytes, 12 partitions
//! BENCH_RECORDS=50000 cargo bench -p runtime --bench throughput
//! ```
//!
//! Each run gets its own consumer group over the same pre-produced topic and is timed from the consumer's start to
//! the last record processed (joining the group included; the time to the first record is reported too). Rounds
//! interleave the modes and the median is reported, because the machine is shared. A warm-up round of every mode
//! comes first (`BENCH_WARMUP`, default 1), printed and not counted: the broker compiles each mode's code paths the
//! first time they run after its start or after its code cache flushed them. Each run also prints the CPU seconds
//! the whole machine and this process used during it, beside what the cores could give: a run near that limit is
//! CPU-bound, one far below it waits. `BENCH_THREADS=1` adds this process's CPU seconds per kind of thread (the
//! poll thread, librdkafka's broker threads, the runtime's workers) and how long each kind was runnable but
//! waited for a core and its involuntary context switches (preemptions and ends of time slices; the poll thread is
//! the one serial stage: its wait is the run's lost time), the CPU seconds of the machine's other processes
//! (PostgreSQL, the broker) by name, and the stalls: stretches of 20 ms or more in which no record completed, an
//! upper bound (progress is sampled every 5 ms), with where the longest began — a round that waited (decision
//! 0055) rather than one slowed by a busy machine.
//! `BENCH_DEBUG=cgrp,fetch RUST_LOG=debug` logs librdkafka's debug contexts (e.g. what a group's join waits for).
//! The bench runs on the services' async runtime (workers in the batch scheduling class, decision 0054);
//! `BENCH_WORKER_CLASSES=1` runs each mode twice per round, its workers in the batch and in the normal class (which
//! goes first alternates: use an even `BENCH_ROUNDS`), and prints per class the medians and the ratios to
//! at-least-once, and per mode the mean of the per-round batch ÷ normal ratios with the rounds each class won
//! (that decision's A/B, inside one process).
//!
//! The peer, in the same rounds: Kafka's own `kafka-consumer-perf-test` (the Java consumer, a fresh group, the
//! same topic), whose `nMsg.sec` counts from its start to its last record — the group join included, as ours does;
//! its fetch-only rate (join excluded) is printed beside it. Ratios: at-least-once / the Java consumer (target
//! ≥ 1.0) and each exactly-once mode / at-least-once (target ≥ 0.8). The no-op handler writes nothing, so its
//! mode (b) units share transactions (decision 0056); `(b), a transaction per unit` runs it as a handler that
//! appends to the outbox must run (`Handler::shares_transactions` false), printed for information. Beside them: each round's ratios (how far
//! one run's median can be trusted), and each mode's median time to its first record with the ratios without it,
//! for information — a new group's at-least-once and (a) runs wait librdkafka's 100 ms offset-reset back-off
//! before their first fetch, (b) seeks to the beginning itself, so the join favours (b) by about that much.

use std::time::{Duration, Instant};

use prometheus::Registry;
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS};
use runtime::{
    Consumer, ConsumerOptions, GroupPolicy, Guarantee, Handler, HandlerCtx, HandlerError, Record,
};
use service_kit::KafkaSettings;
use service_kit::threads::Class;

const PARTITIONS: i32 = 12;

/// The no-op handler. It writes nothing, so in mode (b) its units may share transactions (decision 0056) —
/// unless `alone`, the shape of a handler that appends to the outbox (settlement, payments): a transaction per
/// unit, measured beside it for information.
struct NoOp {
    alone: bool,
}

impl Handler for NoOp {
    async fn handle(
        &self,
        _record: &Record,
        _ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), HandlerError> {
        Ok(())
    }

    fn shares_transactions(&self) -> bool {
        !self.alone
    }
}

fn processed(registry: &Registry) -> u64 {
    metric(registry, "records_processed_total") as u64
}

/// The sum of a runtime counter over its labels, or of a histogram's observation count.
fn metric(registry: &Registry, name: &str) -> f64 {
    let name = format!("checkout_consumer_{name}");
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() + m.get_histogram().get_sample_count() as f64)
        })
        .sum()
}

async fn produce(topic: &str, records: usize) {
    let kafka = kafka();
    let producer: FutureProducer = service_kit::kafka::producer_config(&kafka)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let value = "x".repeat(100);
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..records {
        let key = i.to_string();
        let delivery = loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
                Ok(d) => break d,
                Err((_, _)) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        pending.push(delivery);
        if pending.len() == 10_000 {
            for d in pending.drain(..) {
                d.await.expect("delivery").expect("acknowledged");
            }
        }
    }
    for d in pending {
        d.await.expect("delivery").expect("acknowledged");
    }
}

/// One run of `kafka-consumer-perf-test` over `records` of `topic` with a fresh group: (records/s from its start,
/// join included; records/s of fetching only). `None`, with the reason printed, when its output cannot be read.
fn java_consumer(topic: &str, records: usize) -> Option<(f64, f64)> {
    let output =
        std::process::Command::new(testkit::workspace_root().join("deploy/local/kafka-cli"))
            .args(["kafka-consumer-perf-test", "--bootstrap-server"])
            .arg(&testkit::infra().bootstrap_servers)
            .args(["--topic", topic, "--messages", &records.to_string()])
            .args([
                "--group",
                &testkit::unique_name("bench-java"),
                "--timeout",
                "60000",
            ])
            .output()
            .expect("run kafka-consumer-perf-test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A header line of comma-separated names, then one line of values.
    let mut lines = stdout.lines().filter(|l| l.contains(','));
    let (header, values) = (lines.next()?, lines.next()?);
    let field = |name: &str| {
        let at = header.split(',').position(|h| h.trim() == name)?;
        values.split(',').nth(at)?.trim().parse::<f64>().ok()
    };
    match (field("nMsg.sec"), field("fetch.nMsg.sec")) {
        (Some(total), Some(fetch)) => Some((total, fetch)),
        _ => {
            println!(
                "  could not read kafka-consumer-perf-test's figures: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            );
            None
        }
    }
}

fn kafka() -> KafkaSettings {
    KafkaSettings {
        bootstrap_servers: testkit::infra().bootstrap_servers.clone(),
        // BENCH_DEBUG=cgrp,fetch: librdkafka's debug contexts, logged (with RUST_LOG=debug) through tracing.
        client: std::env::var("BENCH_DEBUG")
            .ok()
            .map(|contexts| [("debug".to_string(), contexts)].into())
            .unwrap_or_default(),
    }
}

struct Figures {
    join: Duration,
    steady: Duration,
    records: usize,
    /// Units of work (handler calls + commits) and partition pauses: why a run was slow.
    units: f64,
    pauses: f64,
    /// CPU seconds the whole machine (all cores) and this process used during the run: whether it was CPU-bound.
    cpu_machine: f64,
    cpu_process: f64,
    /// Per kind of thread of this process: CPU seconds, seconds it was runnable but waited for a core, and how
    /// often it was preempted (taken off its core while it could still run).
    threads: Vec<(String, f64, f64, u64)>,
    /// CPU seconds of the machine's other processes by name (`postgres`, `java`, …), most first.
    others: Vec<(String, f64)>,
    /// After the first record: stretches of at least [`STALL`] in which no record completed (count, total,
    /// longest, and how many records were done when the longest began). The bench samples progress every 5 ms.
    stalls: (usize, Duration, Duration, usize),
}

/// A stretch this long without a completed record counts as a stall (every lane waited at once).
const STALL: Duration = Duration::from_millis(20);

/// Puts every worker of this process's async runtime in `class` (the bench's A/B of decision 0054).
fn set_worker_class(class: Class) {
    for t in thread_times()
        .iter()
        .filter(|t| t.kind == "tokio-rt-worker")
    {
        if let Err(err) =
            service_kit::threads::set_thread(t.tid.parse().expect("a thread id"), class)
        {
            panic!("cannot put worker {} in {class:?}: {err}", t.tid);
        }
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// One thread's times so far: its id, its kind (its name without the numbering: `poll-bench-1a2b` → `poll`,
/// `rdk:broker1` → `rdk:broker`), CPU seconds (`/proc/self/task/*/stat`) and seconds spent runnable but waiting
/// for a core (`schedstat`'s run-queue wait; 0 where the kernel does not keep it), and its involuntary context
/// switches (`status`: how often it was preempted).
struct ThreadTimes {
    tid: String,
    kind: String,
    cpu: f64,
    wait: f64,
    preempted: u64,
}

fn thread_times() -> Vec<ThreadTimes> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let cpu = ticks(&std::fs::read_to_string(task.path().join("stat")).ok()?) / TICKS;
            // schedstat: nanoseconds on a core, nanoseconds waiting in the run queue, time slices.
            let wait = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e9);
            let preempted = std::fs::read_to_string(task.path().join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let name = comm.trim();
            let kind = if name.starts_with("poll-") {
                "poll".to_string()
            } else {
                name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                    .to_string()
            };
            Some(ThreadTimes {
                tid: task.file_name().to_string_lossy().into_owned(),
                kind,
                cpu,
                wait,
                preempted,
            })
        })
        .collect()
}

/// Per kind of thread between two [`thread_times`] snapshots: (kind, CPU seconds, seconds waiting for a core,
/// preemptions), most CPU first.
fn thread_seconds(before: &[ThreadTimes], after: &[ThreadTimes]) -> Vec<(String, f64, f64, u64)> {
    let mut kinds: Vec<(String, f64, f64, u64)> = Vec::new();
    for t in after {
        let (cpu, wait, preempted) = before
            .iter()
            .find(|b| b.tid == t.tid)
            .map_or((t.cpu, t.wait, t.preempted), |b| {
                (t.cpu - b.cpu, t.wait - b.wait, t.preempted - b.preempted)
            });
        match kinds.iter_mut().find(|(k, ..)| *k == t.kind) {
            Some((_, c, w, p)) => (*c, *w, *p) = (*c + cpu, *w + wait, *p + preempted),
            None => kinds.push((t.kind.clone(), cpu, wait, preempted)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    kinds.retain(|(_, cpu, ..)| *cpu >= 0.01);
    kinds
}

/// CPU seconds so far of every other process on the machine, by pid: (pid, name, seconds).
fn process_times() -> Vec<(u32, String, f64)> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_string();
            (pid != me).then(|| (pid, name, ticks(&stat) / TICKS))
        })
        .collect()
}

/// CPU seconds of other processes between two [`process_times`] snapshots, by name, most first (processes that
/// started during the run count whole; those that ended are missed).
fn process_seconds(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
) -> Vec<(String, f64)> {
    let mut names: Vec<(String, f64)> = Vec::new();
    for (pid, name, cpu) in after {
        let used = cpu - before.iter().find(|b| b.0 == *pid).map_or(0.0, |b| b.2);
        match names.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += used,
            None => names.push((name.clone(), used)),
        }
    }
    names.sort_by(|a, b| b.1.total_cmp(&a.1));
    names.retain(|(_, cpu)| *cpu >= 0.01);
    names
}

/// Clock ticks per second of `/proc` figures (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU seconds used so far: by the machine (busy time of all cores, `/proc/stat`) and by this process.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice: busy = user, nice, system, irq,
    // softirq and steal (guest time is already counted in user).
    let machine: f64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .filter_map(|(_, v)| v.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    let process = std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| ticks(&stat));
    (machine / TICKS, process / TICKS)
}

/// utime + stime of a `/proc/…/stat` line: its 14th and 15th fields (the 12th and 13th after the command's
/// closing parenthesis).
fn ticks(stat: &str) -> f64 {
    stat.rsplit_once(')').map_or(0.0, |(_, rest)| {
        rest.split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    })
}

async fn run(
    topic: &str,
    records: usize,
    guarantee: Guarantee,
    alone: bool,
    pool: sqlx::PgPool,
) -> Figures {
    let policy = GroupPolicy::resolve(
        READ_MODEL_PROJECTIONS,
        &PolicyOverrides {
            group: Some(testkit::unique_name("bench")),
            topics: Some(vec![topic.to_string()]),
            guarantee: Some(guarantee),
            ..Default::default()
        },
    )
    .unwrap();
    let registry = Registry::new();
    let mut builder = Consumer::builder(policy, kafka())
        .handler(NoOp { alone })
        .registry(&registry)
        .options(ConsumerOptions {
            lag_interval: Duration::from_secs(60),
            ..Default::default()
        });
    builder = builder.database(pool);
    let consumer = builder.build().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let cpu_before = cpu_seconds();
    let threads_before = thread_times();
    let others_before = process_times();
    let started = Instant::now();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    let mut first = None;
    let (mut last_progress, mut last_n) = (Instant::now(), 0);
    let mut stalls = (0, Duration::ZERO, Duration::ZERO, 0);
    loop {
        let n = processed(&registry) as usize;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n != last_n {
            let gap = last_progress.elapsed();
            if last_n > 0 && gap >= STALL {
                let at = if gap > stalls.2 { last_n } else { stalls.3 };
                stalls = (stalls.0 + 1, stalls.1 + gap, stalls.2.max(gap), at);
            }
            (last_progress, last_n) = (Instant::now(), n);
        }
        if n >= records {
            break;
        }
        if task.is_finished() {
            panic!(
                "{guarantee:?}: the consumer stopped after {n} of {records} records: {:?}",
                task.await
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{guarantee:?}: only {n} of {records} after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let cpu_after = cpu_seconds();
    let threads = thread_seconds(&threads_before, &thread_times());
    let others = process_seconds(&others_before, &process_times());
    let (units, pauses) = (
        metric(&registry, "unit_records"),
        metric(&registry, "partition_pauses_total"),
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let first = first.unwrap();
    Figures {
        join: first - started,
        steady: done - first,
        records,
        units,
        pauses,
        cpu_machine: cpu_after.0 - cpu_before.0,
        cpu_process: cpu_after.1 - cpu_before.1,
        threads,
        others,
        stalls,
    }
}

/// On the async runtime the consumer services run on (`service_kit::threads`: workers in the batch scheduling
/// class, so they do not preempt the poll thread; decision 0054).
fn main() {
    service_kit::threads::runtime()
        .expect("the async runtime starts")
        .block_on(bench());
}

async fn bench() {
    if std::env::var_os("BENCH_DEBUG").is_some() {
        service_kit::telemetry::init(&Default::default());
    }
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let topic = testkit::create_topic_with(testkit::infra(), "bench", PARTITIONS, &[]).await;
    // A consumer refuses to start without the dead-letter topic of each topic it reads.
    testkit::create_named_topic(&format!("{topic}.dlq"), PARTITIONS).await;
    let produced = Instant::now();
    produce(&topic, records).await;
    println!(
        "produced {records} records of 100 bytes into {PARTITIONS} partitions in {:.1?}",
        produced.elapsed()
    );
    let db = testkit::fresh_database().await;
    // One connection per partition lane (the runtime runs up to 16 lanes at once): a lane never waits for one.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&db.url)
        .await
        .unwrap();

    // (BENCH_MODES name, printed name, guarantee, a transaction per unit in mode (b))
    let modes = [
        (
            "at-least-once",
            "at-least-once",
            Guarantee::AtLeastOnce,
            false,
        ),
        (
            "a",
            "exactly-once (a) Kafka transactions",
            Guarantee::ExactlyOnceKafka,
            false,
        ),
        (
            "b",
            "exactly-once (b) PostgreSQL offsets",
            Guarantee::ExactlyOnceDb,
            false,
        ),
        (
            "b-alone",
            "(b), a transaction per unit",
            Guarantee::ExactlyOnceDb,
            true,
        ),
    ];
    // BENCH_MODES=b (or "at-least-once,a"): only those modes, for profiling one; the ratios need all of them.
    let only: Option<Vec<String>> = std::env::var("BENCH_MODES")
        .ok()
        .map(|v| v.split(',').map(|m| m.trim().to_string()).collect());
    let wanted = |id: &str| {
        only.as_ref()
            .is_none_or(|only| only.iter().any(|m| m == id))
    };
    // Interleaved rounds, so that the machine's other load spreads over every mode; the median is reported.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Warm-up rounds first, printed and not counted: the broker's JIT compiles the code paths of each mode (a
    // transaction's requests, read_committed fetches) when they are first used after a start or after its code
    // cache flushed them, which cost mode (a)'s first 1M round ~1 s of broker CPU on two cores.
    let warmup: usize = std::env::var("BENCH_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // BENCH_WORKER_CLASSES=1: every mode runs twice per round, with the runtime's workers in the batch class (as
    // the services run) and in the normal class, in alternating order, and the ratios are printed per class — the
    // A/B of decision 0054 inside one process, so that the machine's drift spreads over both. No Java consumer.
    let classes: &[Option<Class>] = if std::env::var_os("BENCH_WORKER_CLASSES").is_some() {
        &[Some(Class::Batch), Some(Class::Normal)]
    } else {
        &[None]
    };
    // Per class, per mode, one rate per counted round (one class unless BENCH_WORKER_CLASSES).
    let mut class_rates: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); modes.len()]; classes.len()];
    // Per mode, per counted round (one class only): the time to the first record, and the rate without it.
    let mut joins: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut steady_rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let (mut java, mut java_fetch): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for round in 1 - warmup as isize..=rounds as isize {
        let label = if round < 1 {
            "warm-up".to_string()
        } else {
            format!("round {round}")
        };
        for (i, (id, name, guarantee, alone)) in modes.iter().enumerate() {
            if !wanted(id) {
                continue;
            }
            for k in 0..classes.len() {
                // Alternate which class goes first.
                let c = if round % 2 == 0 {
                    classes.len() - 1 - k
                } else {
                    k
                };
                let name = match classes[c] {
                    Some(class) => {
                        set_worker_class(class);
                        format!("{name} [{class:?}]")
                    }
                    None => name.to_string(),
                };
                let f = run(&topic, records, *guarantee, *alone, pool.clone()).await;
                let rate = f.records as f64 / (f.join + f.steady).as_secs_f64();
                println!(
                    "{label}: {name:<38} {rate:>10.0} records/s  ({} records in {:.2?}, the first after {:.2?}; \
                 {:.0} records per unit, {} pauses; CPU {:.2} s of the machine's {:.2}, {:.2} s by this process)",
                    f.records,
                    f.join + f.steady,
                    f.join,
                    f.records as f64 / f.units.max(1.0),
                    f.pauses,
                    f.cpu_machine,
                    cores() * (f.join + f.steady).as_secs_f64(),
                    f.cpu_process,
                );
                if std::env::var_os("BENCH_THREADS").is_some() {
                    let threads: Vec<String> = f
                        .threads
                        .iter()
                        .map(|(kind, cpu, wait, preempted)| {
                            format!("{kind} {cpu:.2} ({wait:.2}, {preempted})")
                        })
                        .collect();
                    println!(
                        "    CPU seconds by thread (in brackets: seconds runnable but waiting for a core, \
                         involuntary switches): {}",
                        threads.join(", ")
                    );
                    let others: Vec<String> = f
                        .others
                        .iter()
                        .take(4)
                        .map(|(name, cpu)| format!("{name} {cpu:.2}"))
                        .collect();
                    println!(
                        "    CPU seconds of other processes: {}; {} stalls of {STALL:?} or more without a \
                         record done, {:.0?} in all (longest {:.0?}, after {} records)",
                        others.join(", "),
                        f.stalls.0,
                        f.stalls.1,
                        f.stalls.2,
                        f.stalls.3
                    );
                }
                if round >= 1 {
                    class_rates[c][i].push(rate);
                    joins[i].push(f.join.as_secs_f64() * 1e3);
                    steady_rates[i].push(f.records as f64 / f.steady.as_secs_f64());
                }
            }
        }
        if only.is_some() || classes.len() > 1 {
            continue;
        }
        if let Some((total, fetch)) = java_consumer(&topic, records) {
            println!(
                "{label}: {:<38} {total:>10.0} records/s  (fetch only, join excluded: {fetch:.0} records/s)",
                "kafka-consumer-perf-test (Java)"
            );
            if round >= 1 {
                java.push(total);
                java_fetch.push(fetch);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite figures"));
        v[v.len() / 2]
    };
    if classes.len() > 1 {
        // Per round, before the medians sort the figures: classes[0] is batch, classes[1] normal.
        for (i, (id, ..)) in modes.iter().enumerate() {
            let (batch, normal) = (&class_rates[0][i], &class_rates[1][i]);
            if batch.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = batch.iter().zip(normal).map(|(b, n)| b / n).collect();
            let wins = ratios.iter().filter(|r| **r > 1.0).count();
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{id}: workers batch ÷ normal per round {} (mean {:.3}; batch faster in {wins} of {} rounds)",
                each.join(" "),
                ratios.iter().sum::<f64>() / ratios.len() as f64,
                ratios.len()
            );
        }
        for (class, rates) in classes.iter().flatten().zip(&mut class_rates) {
            let medians: Vec<Option<f64>> = rates
                .iter_mut()
                .map(|r| (!r.is_empty()).then(|| median(r)))
                .collect();
            let line: Vec<String> = modes
                .iter()
                .zip(&medians)
                .filter_map(|((id, ..), m)| Some(format!("{id} {:.0}", (*m)?)))
                .collect();
            let ratio = |i: usize| match (medians[0], medians[i]) {
                (Some(alo), Some(m)) => format!("{:.2}", m / alo),
                _ => "-".into(),
            };
            println!(
                "workers {class:?}: median records/s {}; (a) / at-least-once {}, (b) / at-least-once {}",
                line.join(", "),
                ratio(1),
                ratio(2)
            );
        }
        return;
    }
    if only.is_some() {
        return;
    }
    // Per round, before the medians sort the figures: the rounds interleave the modes, so a round's ratio compares
    // runs that met about the same machine; the spread says how far one run's median can be trusted.
    let per_round = |i: usize| -> String {
        let (alo, mode) = (&class_rates[0][0], &class_rates[0][i]);
        let each: Vec<String> = alo
            .iter()
            .zip(mode)
            .map(|(a, m)| format!("{:.2}", m / a))
            .collect();
        each.join(" ")
    };
    let spread = format!(
        "per round: (a) / at-least-once {}; (b) / at-least-once {}; (b), a transaction per unit {}",
        per_round(1),
        per_round(2),
        per_round(3)
    );
    let medians: Vec<f64> = class_rates[0].iter_mut().map(median).collect();
    let join: Vec<f64> = joins.iter_mut().map(median).collect();
    let steady: Vec<f64> = steady_rates.iter_mut().map(median).collect();
    println!("median of {rounds} rounds:");
    for ((_, name, ..), rate) in modes.iter().zip(&medians) {
        println!(
            "  {name:<38} {rate:>10.0} records/s  ({:.2} x at-least-once)",
            rate / medians[0]
        );
    }
    if java.is_empty() {
        println!("  kafka-consumer-perf-test gave no figure: no ratio to the Java consumer");
    } else {
        let (java, java_fetch) = (median(&mut java), median(&mut java_fetch));
        println!(
            "  {:<38} {java:>10.0} records/s  (fetch only {java_fetch:.0} records/s)",
            "kafka-consumer-perf-test (Java)"
        );
        println!(
            "  at-least-once / Java consumer = {:.2} (target >= 1.0); exactly-once (a) / at-least-once = {:.2}, \
             (b) / at-least-once = {:.2} (targets >= 0.8)",
            medians[0] / java,
            medians[1] / medians[0],
            medians[2] / medians[0]
        );
    }
    println!(
        "  for information: (b) with a transaction per unit (a handler that appends to the outbox) / at-least-once \
         = {:.2}",
        medians[3] / medians[0]
    );
    println!("  {spread}");
    // The targets count the join, as the Java figure does. Modes start unevenly: at-least-once and (a) leave a
    // partition without a committed offset to librdkafka, which waits 100 ms before asking for the beginning
    // (its offset-reset backoff), while (b) seeks to the beginning itself; without the join the figures differ.
    println!(
        "  time to the first record (median): at-least-once {:.0} ms, (a) {:.0} ms, (b) {:.0} ms; join excluded \
         (for information): (a) / at-least-once = {:.2}, (b) / at-least-once = {:.2}",
        join[0],
        join[1],
        join[2],
        steady[1] / steady[0],
        steady[2] / steady[0]
    );
}
