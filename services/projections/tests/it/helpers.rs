//! Test plumbing of this service only (the shared part is `flows::service`): waiting for the read models to
//! reach the truth, and snapshots of them.

use std::time::Duration;

use flows::harness::Bus;
use flows::service::InProcess;
use flows::{Truth, check};
use projections::Projections;
use sqlx::PgPool;

/// The service in this process on `bus`, under a fresh group.
pub async fn start(bus: &Bus) -> InProcess {
    InProcess::start::<Projections>(bus, std::slice::from_ref(&bus.domain_topic)).await
}

/// Waits until the read models equal `truth`; on timeout fails listing the differences.
pub async fn wait_for_truth(pool: &PgPool, truth: &Truth, timeout: Duration) {
    check::wait_for_projections(pool, truth, timeout).await;
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

/// Waits until the service's consumer group has committed the end of the bus's domain topic.
pub async fn wait_consumed(bus: &Bus, group: &str) {
    flows::harness::wait_consumed(group, &bus.domain_topic, Duration::from_secs(60)).await;
}
