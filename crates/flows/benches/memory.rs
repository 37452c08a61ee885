//! `make bench-memory`: the resident memory of every service binary with a backlog of about a million events in
//! front of it (issue 19: ≤ 150 MB each, bounded by configuration, never growing with the backlog). Printed,
//! never asserted.
//!
//! 1. A private bus (database, topics). The flow generator's worlds (BENCH_MEMORY_INVOICES invoices each, a new
//!    seed per world so ids never collide) are appended to the outbox until BENCH_MEMORY_EVENTS (1,000,000)
//!    domain events wait there; their checkout views go straight to the analytics topic.
//! 2. The `outbox-publisher` binary drains that backlog: its RSS is sampled every 500 ms until the outbox is
//!    empty.
//! 3. Every consumer service binary starts at once, each as a fresh group at the beginning of its topics, so the
//!    whole backlog is in front of each; their RSS is sampled every 500 ms for BENCH_MEMORY_SECS (60).
//!
//! Reported per process: the RSS a few seconds in, at the half and at the end of its window, the peak (the
//! kernel's VmHWM) and how many records it had committed — with the backlog still in front of it at the end,
//! a flat line from the first figure to the last is what "bounded, not growing with the backlog" looks like.
//! Notifications reads only the notification topic, which gets what settlement and webhooks append (a few
//! records, not a million): its figure is an idle one and is labelled so.
//!
//! Binaries come from `target/release` (BENCH_BIN_DIR overrides); `make bench-memory` builds them first.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use flows::Scenario;
use flows::harness::{Bus, committed_offsets, create_integration_topic, end_offsets};
use flows::service::{consumer_toml, spawn_process};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak resident memory of a process, in MiB (`/proc/PID/status`: VmRSS, VmHWM).
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One process under watch: RSS samples over time, and its peak.
struct Watched {
    name: String,
    child: Child,
    group: Option<String>,
    topics: Vec<String>,
    samples: Vec<(Duration, f64)>,
    peak: f64,
}

impl Watched {
    fn sample(&mut self, at: Duration) {
        if let Some((rss, hwm)) = rss_mib(self.child.id()) {
            self.samples.push((at, rss));
            self.peak = self.peak.max(hwm);
        }
    }

    fn at(&self, fraction: f64) -> f64 {
        let Some((last, _)) = self.samples.last() else {
            return 0.0;
        };
        let when = last.mul_f64(fraction);
        self.samples
            .iter()
            .find(|(t, _)| *t >= when)
            .map_or(0.0, |(_, rss)| *rss)
    }

    fn stop(&mut self) {
        // SIGTERM first (a clean leave of the group), then make sure.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the release binaries first (make bench-memory does)",
        path.display()
    );
    path
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events_wanted: usize = env("BENCH_MEMORY_EVENTS", 1_000_000);
    let invoices_per_world: usize = env("BENCH_MEMORY_INVOICES", 10_000);
    let window = Duration::from_secs(env("BENCH_MEMORY_SECS", 60));
    // Relative to the workspace root, like everything the Makefile names.
    let bins = testkit::workspace_root()
        .join(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));
    println!(
        "memory benchmark: ~{events_wanted} domain events of backlog; consumers watched for {}s; binaries from {}",
        window.as_secs(),
        bins.display()
    );

    // 1. The backlog, in the outbox.
    let bus = Bus::new().await;
    let integration_topic = create_integration_topic().await;
    let fill = Instant::now();
    let (mut events, mut views, mut seed) = (0usize, 0usize, 1u64);
    while events < events_wanted {
        let world = flows::generate(&Scenario::new(seed, 200, invoices_per_world));
        bus.append(&world.events, 2000).await;
        bus.produce_analytics(&world.analytics).await;
        events += world.events.len();
        views += world.analytics.len();
        seed += 1;
        eprintln!(
            "  backlog: {events}/{events_wanted} events in the outbox ({:.0}s)",
            fill.elapsed().as_secs_f64()
        );
    }
    println!(
        "  backlog: {events} domain events in the outbox and {views} checkout views on the analytics topic, \
         written in {:.0}s",
        fill.elapsed().as_secs_f64()
    );

    let dir = testkit::workspace_root()
        .join(".dev/tmp")
        .join(testkit::unique_name("bench-memory"));
    std::fs::create_dir_all(&dir).expect("bench directory");
    let log = dir.join("services.log");
    let mut report: Vec<(String, String)> = Vec::new();

    // 2. The publisher drains it.
    let publisher_config = dir.join("outbox-publisher.toml");
    std::fs::write(
        &publisher_config,
        format!(
            "[service.topic_routes]\n\"{}\" = \"{}\"\n\"{}\" = \"{}\"\n\"{}\" = \"{}\"\n",
            events::topics::DOMAIN_EVENTS,
            bus.domain_topic,
            events::topics::NOTIFICATION_EVENTS,
            bus.notification_topic,
            events::topics::ANALYTICS_EVENTS,
            bus.analytics_topic
        ),
    )
    .expect("publisher configuration");
    let started = Instant::now();
    let mut publisher = Watched {
        name: "outbox-publisher".into(),
        child: spawn_process(
            &binary(&bins, "outbox-publisher"),
            &publisher_config,
            &bus,
            &log,
            &[],
        ),
        group: None,
        topics: Vec::new(),
        samples: Vec::new(),
        peak: 0.0,
    };
    loop {
        publisher.sample(started.elapsed());
        let left: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox)")
            .fetch_one(bus.pool())
            .await
            .expect("outbox");
        if !left {
            break;
        }
        assert!(
            publisher.child.try_wait().ok().flatten().is_none(),
            "the publisher exited; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = started.elapsed();
    let published: i64 = end_offsets(&bus.domain_topic).await.iter().sum();
    // It stays up for what the services append (settlement's and webhooks' notification requests, …).

    // 3. Every consumer at the beginning of the whole backlog, at once.
    let domain = bus.domain_topic.clone();
    let services: Vec<(&str, Vec<String>, String)> = vec![
        ("projections", vec![domain.clone()], String::new()),
        ("audit", vec![domain.clone()], String::new()),
        (
            "analytics",
            vec![domain.clone(), bus.analytics_topic.clone()],
            String::new(),
        ),
        ("settlement", vec![domain.clone()], String::new()),
        (
            "webhooks",
            vec![domain.clone()],
            "[service.delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n".into(),
        ),
        (
            "payments",
            vec![integration_topic.clone(), domain.clone()],
            String::new(),
        ),
        (
            "notifications",
            vec![bus.notification_topic.clone()],
            String::new(),
        ),
    ];
    let mut watched: Vec<Watched> = services
        .into_iter()
        .map(|(name, topics, extra)| {
            let group = testkit::unique_name(&format!("mem-{name}"));
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(&config, consumer_toml(&group, &topics, "", "", &extra))
                .expect("configuration");
            Watched {
                name: name.into(),
                child: spawn_process(&binary(&bins, name), &config, &bus, &log, &[]),
                group: Some(group),
                topics,
                samples: Vec::new(),
                peak: 0.0,
            }
        })
        .collect();
    let started = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(15);
    while started.elapsed() < window {
        for w in &mut watched {
            w.sample(started.elapsed());
            assert!(
                w.child.try_wait().ok().flatten().is_none(),
                "{} exited; see {}",
                w.name,
                log.display()
            );
        }
        publisher.sample(drained + started.elapsed());
        if Instant::now() >= next_report {
            let now: Vec<String> = watched
                .iter()
                .map(|w| format!("{} {:.0}", w.name, w.samples.last().map_or(0.0, |s| s.1)))
                .collect();
            eprintln!(
                "  {:.0}s: RSS MiB {}",
                started.elapsed().as_secs_f64(),
                now.join(", ")
            );
            next_report += Duration::from_secs(15);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for w in &mut watched {
        let group = w.group.clone().expect("a consumer has a group");
        let (mut committed, mut total) = (0i64, 0i64);
        for topic in &w.topics {
            committed += committed_offsets(&group, topic)
                .await
                .iter()
                .map(|o| (*o).max(0))
                .sum::<i64>();
            total += end_offsets(topic).await.iter().sum::<i64>();
        }
        w.stop();
        let idle = if w.name == "notifications" {
            " (its topic holds only what the services appended: an idle figure)"
        } else {
            ""
        };
        report.push((
            w.name.clone(),
            format!(
                "{:>6.1} {:>6.1} {:>6.1} {:>6.1}   committed {committed} of {total} records in {}s{idle}",
                w.at(0.1),
                w.at(0.5),
                w.at(1.0),
                w.peak,
                window.as_secs()
            ),
        ));
    }
    publisher.stop();
    report.insert(
        0,
        (
            publisher.name.clone(),
            format!(
                "{:>6.1} {:>6.1} {:>6.1} {:>6.1}   drained {published} events in {:.0}s, then stayed up with the consumers",
                publisher.at(0.1),
                publisher.at(0.5),
                publisher.at(1.0),
                publisher.peak,
                drained.as_secs_f64()
            ),
        ),
    );

    println!(
        "RSS in MiB (limit 150 MiB each): at 10 % of the window, at 50 %, at the end, peak (VmHWM)"
    );
    println!(
        "  {:<18} {:>6} {:>6} {:>6} {:>6}",
        "process", "10%", "50%", "end", "peak"
    );
    let mut over = Vec::new();
    for (name, line) in &report {
        println!("  {name:<18} {line}");
    }
    for w in watched.iter().chain(std::iter::once(&publisher)) {
        if w.peak > 150.0 {
            over.push(format!("{} {:.1} MiB", w.name, w.peak));
        }
    }
    if over.is_empty() {
        println!("every process peaked under 150 MiB");
    } else {
        println!("OVER the 150 MiB limit: {}", over.join(", "));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
