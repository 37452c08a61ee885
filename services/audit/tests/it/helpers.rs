//! Test plumbing of this service only (the shared part is `flows::service`): the check of the log against the
//! generated events.

use std::collections::HashMap;
use std::time::Duration;

use audit::Audit;
use events::Envelope;
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

/// The log holds exactly `events`, once each, numbered 1..=n, each row carrying its event's metadata.
pub async fn assert_log_matches(pool: &PgPool, events: &[Envelope]) {
    type Row = (
        i64,
        uuid::Uuid,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, event_id, event_type, actor, ip_address, user_agent, request_id, event FROM audit_log ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), events.len(), "one row per event");
    let by_id: HashMap<uuid::Uuid, &Envelope> =
        events.iter().map(|e| (e.event_id().as_uuid(), e)).collect();
    for (n, (seq, id, event_type, actor, ip, user_agent, request_id, text)) in
        rows.iter().enumerate()
    {
        assert_eq!(*seq, n as i64 + 1, "rows are numbered without gaps");
        let envelope = by_id
            .get(id)
            .unwrap_or_else(|| panic!("row {seq} logs an event never published"));
        let metadata = envelope.metadata();
        assert_eq!(event_type, envelope.event_type().as_str());
        assert_eq!(*actor, metadata.actor.to_string());
        assert_eq!(*ip, metadata.ip_address.map(|i| i.to_string()));
        assert_eq!(*user_agent, metadata.user_agent);
        assert_eq!(*request_id, metadata.request_id);
        assert_eq!(
            &events::decode(text.as_bytes()).unwrap(),
            *envelope,
            "the event is kept as consumed"
        );
    }
}

/// Verifies the chain through a connection of `pool`.
pub async fn verify(pool: &PgPool) -> audit::verify::Verification {
    let mut conn = pool.acquire().await.unwrap();
    audit::verify::verify(&mut conn).await.unwrap()
}
