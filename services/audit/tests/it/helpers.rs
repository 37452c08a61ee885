//! Test plumbing of this service only (the shared part is `flows::service`): the check of the log against the
//! generated events (moved to `flows::check::assert_audit_log`, shared with the end-to-end tests).

use std::time::Duration;

use audit::Audit;
use flows::harness::Bus;
use flows::service::InProcess;
use sqlx::PgPool;

/// The service in this process on `bus`, under a fresh group.
pub async fn start(bus: &Bus) -> InProcess {
    InProcess::start::<Audit>(bus, std::slice::from_ref(&bus.domain_topic)).await
}

pub async fn rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the log has `n` rows.
pub async fn wait_for_rows(pool: &PgPool, n: usize, timeout: Duration) {
    let started = std::time::Instant::now();
    loop {
        let have = rows(pool).await;
        if have as usize >= n {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the audit log has {have} of {n} rows after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub use flows::check::assert_audit_log as assert_log_matches;

/// Verifies the chain through a connection of `pool`.
pub async fn verify(pool: &PgPool) -> audit::verify::Verification {
    let mut conn = pool.acquire().await.unwrap();
    audit::verify::verify(&mut conn).await.unwrap()
}
