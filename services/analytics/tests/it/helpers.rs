//! Test plumbing of this service only (the shared part is `flows::service`): waiting for the aggregates to
//! reach the truth and for the stored offsets, snapshots.

use std::time::Duration;

use analytics::Analytics;
use flows::harness::Bus;
use flows::service::InProcess;
use flows::{Truth, check};
use sqlx::PgPool;

/// The service in this process on `bus`, under a fresh group reading both of the bus's topics.
pub async fn start(bus: &Bus) -> InProcess {
    InProcess::start::<Analytics>(
        bus,
        &[bus.domain_topic.clone(), bus.analytics_topic.clone()],
    )
    .await
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
    let topics = [bus.domain_topic.as_str(), bus.analytics_topic.as_str()];
    flows::harness::wait_stored(bus.pool(), group, &topics, Duration::from_secs(60)).await;
}

/// Every aggregate row as text, sorted: equal snapshots mean nothing was counted again.
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT 'd ' || t::text FROM analytics_daily t UNION ALL \
         SELECT 'm ' || t::text FROM analytics_daily_money t UNION ALL \
         SELECT 'p ' || t::text FROM analytics_daily_methods t UNION ALL \
         SELECT 'c ' || t::text FROM analytics_confirmation_times t UNION ALL \
         SELECT 'i ' || t::text FROM analytics_invoices t",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.sort();
    rows
}
