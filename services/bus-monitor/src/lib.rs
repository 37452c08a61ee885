//! `bus-monitor`: consumer-group lag from the broker's view and a canary, exported to Prometheus.
//!
//! Every `poll_interval` it reads, for each watched group (the platform's, `runtime::policy::GROUPS`, plus the
//! configured ones), the committed offsets — Kafka's, or the `consumer_offsets` table for mode (b) groups — the
//! watermarks of its topics' partitions and its membership ([`lag::Reader`], blocking calls off the runtime),
//! evaluates lag in messages and seconds and Burrow's status ([`lag::Tracker`]) and exports them
//! ([`metrics`]). The [`canary`] probes the bus end to end.
//!
//! Guarantees: `/ready` is 503 until a poll has reached the broker and again whenever one cannot (with the
//! reason); while the broker is unreachable every group is ERR and the partition series are removed (no stale
//! values), but the samples and windows are kept, so lag in seconds and status resume where they were. The
//! service never commits offsets of the groups it watches and never joins them.

pub mod canary;
pub mod metrics;
pub mod settings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use lag::tracker::{GroupReport, Report};
use lag::{OffsetSource, Reader, Status, Tracker, TrackerSettings};
use service_kit::ops::{OpsServer, Readiness};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};
use tokio::task::JoinHandle;

pub use settings::MonitorSettings;

/// The service's configuration: the common sections plus [`MonitorSettings`] under `service`.
pub type Config = Settings<MonitorSettings>;

pub const SERVICE: &str = "bus-monitor";

/// The readiness condition of the broker.
const KAFKA: &str = "kafka";

pub struct Running {
    pub ops_addr: SocketAddr,
    pub registry: prometheus::Registry,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    ops: OpsServer,
}

/// Starts the monitor: operations server first (so `/health` answers while connecting), then the poll loop and
/// the canary.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let settings = config.service.clone();
    settings.validate()?;
    let groups = settings.watched_groups();
    let registry = prometheus::Registry::new();
    let readiness = Readiness::default();
    readiness.register(KAFKA, "no poll has reached the broker yet");
    let mut lag_metrics =
        metrics::LagMetrics::register(&registry).context("registering metrics")?;
    let canary_metrics =
        canary::CanaryMetrics::register(&registry).context("registering metrics")?;
    let ops = OpsServer::start(
        config.http.listen,
        registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let pool = if groups.iter().any(|g| g.offsets == OffsetSource::Database) {
        Some(db::connect(&config.database).await.context(
            "connecting to PostgreSQL (mode (b) groups keep their offsets in consumer_offsets)",
        )?)
    } else {
        None
    };
    let reader = Reader::new(
        service_kit::kafka::client_config(&config.kafka),
        settings.kafka_timeout,
    )
    .context("creating the Kafka clients")?;
    tracing::info!(
        ops = %ops.addr,
        bootstrap = %config.kafka.bootstrap_servers,
        groups = ?groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
        canary = settings.canary.enabled.then_some(settings.canary.topic.as_str()),
        "bus-monitor started"
    );
    let mut tasks = Vec::new();
    let poll_shutdown = shutdown.clone();
    let interval = settings.poll_interval;
    let mut tracker = Tracker::new(TrackerSettings {
        window: settings.window,
        table_size: settings.lag_table_size,
        allowed_lag: settings.allowed_lag,
    });
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status: HashMap<String, Status> = HashMap::new();
        loop {
            tokio::select! {
                _ = poll_shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            let report = match reader.snapshot(&groups, pool.as_ref()).await {
                Ok(snapshot) => {
                    readiness.set_ready(KAFKA);
                    let report = tracker.observe(&snapshot);
                    let unreadable = snapshot.groups.iter().filter(|(_, r)| r.is_err()).count();
                    lag_metrics.poll_errors.inc_by(unreadable as u64);
                    report
                }
                Err(err) => {
                    lag_metrics.poll_errors.inc();
                    readiness.set_not_ready(KAFKA, err.to_string());
                    tracing::warn!(error = %service_kit::telemetry::error_chain(&err), "poll failed");
                    unreachable(&groups, &err.to_string())
                }
            };
            lag_metrics.poll_seconds.observe(started.elapsed().as_secs_f64());
            lag_metrics.apply(&report);
            log_changes(&report, &mut last_status);
        }
    }));
    if settings.canary.enabled {
        tasks.push(tokio::spawn(canary::run(
            config.kafka.clone(),
            settings.canary.clone(),
            settings.kafka_timeout,
            canary_metrics,
            shutdown.clone(),
        )));
    }
    Ok(Running {
        ops_addr: ops.addr,
        registry,
        tasks,
        ops,
    })
}

/// Every group ERR, no partition series: the broker did not answer.
fn unreachable(groups: &[lag::GroupSpec], why: &str) -> Report {
    Report {
        at_ms: lag::read::now_ms(),
        ends: Default::default(),
        groups: groups
            .iter()
            .map(|g| GroupReport {
                group: g.group.clone(),
                offsets: g.offsets,
                status: Status::Err,
                error: Some(format!("broker unreachable: {why}")),
                state: None,
                members: None,
                max_lag: None,
                max_lag_seconds: None,
                partitions: Vec::new(),
            })
            .collect(),
    }
}

/// One log line per status change of a group.
fn log_changes(report: &Report, last: &mut HashMap<String, Status>) {
    for g in &report.groups {
        let before = last.insert(g.group.clone(), g.status);
        if before == Some(g.status) {
            continue;
        }
        let from = before.map_or("-", Status::as_str);
        if g.status == Status::Ok {
            tracing::info!(group = %g.group, from, to = %g.status, max_lag = ?g.max_lag, "consumer group status");
        } else {
            tracing::warn!(group = %g.group, from, to = %g.status, max_lag = ?g.max_lag,
                max_lag_seconds = ?g.max_lag_seconds, error = ?g.error, "consumer group status");
        }
    }
}

impl Running {
    /// Waits for the poll loop and the canary to stop (after the shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for task in self.tasks {
            let outcome = task
                .await
                .context("a bus-monitor task panicked")
                .and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        let _ = self.ops.task.await;
        result
    }
}
