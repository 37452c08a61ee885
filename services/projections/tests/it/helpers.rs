//! Test plumbing: the service in-process (or as a process, see `sigkill.rs`) on a private bus, and waiting for
//! the read models to reach the truth.

use std::time::Duration;

use flows::harness::Bus;
use flows::{Truth, check};
use projections::{Config, ConsumerSettings, ProjectionsSettings};
use runtime::ConsumerOptions;
use runtime::policy::PolicyOverrides;
use service_kit::Settings;
use service_kit::shutdown::CancellationToken;
use sqlx::PgPool;

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

/// The service's configuration on `bus` under consumer group `group`.
pub fn config(bus: &Bus, group: &str) -> Config {
    let mut config: Config = Settings {
        kafka: flows::harness::kafka(),
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service: ProjectionsSettings {
            consumer: ConsumerSettings {
                policy: PolicyOverrides {
                    group: Some(group.to_string()),
                    topics: Some(vec![bus.domain_topic.clone()]),
                    ..Default::default()
                },
                options: fast_options(),
            },
        },
    };
    config.database.url = Some(bus.db.url.clone().into());
    config
}

/// The service running in this process.
pub struct Service {
    pub running: projections::Running,
    pub shutdown: CancellationToken,
    pub group: String,
}

pub async fn start(bus: &Bus) -> Service {
    let group = testkit::unique_name("projections");
    let shutdown = CancellationToken::new();
    let running = projections::start(config(bus, &group), shutdown.clone())
        .await
        .expect("the projections service starts");
    Service {
        running,
        shutdown,
        group,
    }
}

impl Service {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.running.wait())
            .await
            .expect("stops within 30s")
            .expect("stops cleanly");
    }
}

/// Waits until the read models equal `truth`; on timeout fails listing the differences.
pub async fn wait_for_truth(pool: &PgPool, truth: &Truth, timeout: Duration) {
    let started = std::time::Instant::now();
    loop {
        let actual = check::projections(pool)
            .await
            .expect("read the read models");
        let differences = check::projections_diff(truth, &actual);
        if differences.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the read models did not reach the truth within {timeout:?}:\n{}",
            differences.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every row of every read-model table as text, sorted (`applied_at`, bookkeeping, left out): equal snapshots
/// mean nothing changed.
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in projections::rebuild::TABLES {
        let sql = if table == "proj_applied_events" {
            "SELECT 'proj_applied_events ' || event_id::text FROM proj_applied_events".to_string()
        } else {
            format!("SELECT '{table} ' || t::text FROM {table} t")
        };
        let mut table_rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .expect("snapshot");
        rows.append(&mut table_rows);
    }
    rows.sort();
    rows
}

/// A counter's value summed over the label sets that have `label`, from the service's registry.
pub fn counter(running: &projections::Running, name: &str, label: Option<(&str, &str)>) -> f64 {
    running
        .registry
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

/// Waits until the service's consumer group has committed the end of the bus's domain topic.
pub async fn wait_consumed(bus: &Bus, group: &str) {
    flows::harness::wait_consumed(group, &bus.domain_topic, Duration::from_secs(60)).await;
}
