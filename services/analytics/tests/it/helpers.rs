//! Test plumbing: the analytics service on a private bus, and waiting for the aggregates to reach the truth.

use std::time::Duration;

use analytics::{AnalyticsSettings, Config, ConsumerSettings};
use flows::harness::{Bus, end_offsets};
use flows::{Truth, check};
use runtime::ConsumerOptions;
use runtime::policy::PolicyOverrides;
use service_kit::Settings;
use service_kit::shutdown::CancellationToken;
use sqlx::PgPool;

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

pub fn config(bus: &Bus, group: &str) -> Config {
    let mut config: Config = Settings {
        kafka: flows::harness::kafka(),
        database: Default::default(),
        http: Default::default(),
        log: Default::default(),
        service: AnalyticsSettings {
            consumer: ConsumerSettings {
                policy: PolicyOverrides {
                    group: Some(group.to_string()),
                    topics: Some(vec![bus.domain_topic.clone(), bus.analytics_topic.clone()]),
                    ..Default::default()
                },
                options: fast_options(),
            },
        },
    };
    config.database.url = Some(bus.db.url.clone().into());
    config
}

pub struct Service {
    pub running: analytics::Running,
    pub shutdown: CancellationToken,
    pub group: String,
}

pub async fn start(bus: &Bus) -> Service {
    let group = testkit::unique_name("analytics");
    let shutdown = CancellationToken::new();
    let running = analytics::start(config(bus, &group), shutdown.clone())
        .await
        .expect("the analytics service starts");
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

/// Waits until the aggregates equal `truth`; on timeout fails listing the differences.
pub async fn wait_for_truth(pool: &PgPool, truth: &Truth, timeout: Duration) {
    let started = std::time::Instant::now();
    loop {
        let actual = check::analytics(pool).await.expect("read the aggregates");
        let differences = check::analytics_diff(truth, &actual);
        if differences.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the aggregates did not reach the truth within {timeout:?}:\n{}",
            differences.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the offsets `group` stored in the database (mode b) reach the end of both topics.
pub async fn wait_consumed(bus: &Bus, group: &str) {
    for topic in [&bus.domain_topic, &bus.analytics_topic] {
        let ends = end_offsets(topic).await;
        let started = std::time::Instant::now();
        loop {
            let stored: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
            )
            .bind(group)
            .bind(topic)
            .fetch_all(bus.pool())
            .await
            .unwrap();
            let done = ends.iter().enumerate().all(|(p, end)| {
                *end == 0 || stored.iter().any(|(q, next)| *q == p as i32 && next >= end)
            });
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{group} stored {stored:?} for {topic}, end offsets {ends:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every aggregate row as text, sorted: equal snapshots mean nothing was counted again.
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT 'd ' || t::text FROM analytics_daily t UNION ALL \
         SELECT 'm ' || t::text FROM analytics_daily_money t UNION ALL \
         SELECT 'c ' || t::text FROM analytics_confirmation_times t UNION ALL \
         SELECT 'i ' || t::text FROM analytics_invoices t",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.sort();
    rows
}
