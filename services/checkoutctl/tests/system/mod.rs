//! A live system for `checkoutctl verify`, `settlement show` and `merchant show` to look at: a private bus
//! (fresh database, its own topics), the outbox publisher, and the settlement, projections and audit services in
//! this process, each under a fresh consumer group; generated flows appended through the outbox as the
//! platform's services would. Shared by the integration tests (`tests/live.rs`) and the benches (`verify`,
//! `dr_drill`; `restore_drill` runs the services as processes and uses only the free functions).
//!
//! Expected values come from the generator's truth (`Flows::expected_settlements`), never from the code under
//! test.

#![allow(dead_code)] // each test binary uses a part

use std::time::Duration;

use flows::Flows;
use flows::harness::{Bus, Publisher};
use flows::service::InProcess;

/// The bus with its publisher and the three services.
pub struct System {
    pub bus: Bus,
    pub publisher: Option<Publisher>,
    pub settlement: Option<InProcess>,
    pub projections: Option<InProcess>,
    pub audit: Option<InProcess>,
    pub settlement_group: String,
    pub projections_group: String,
    pub audit_group: String,
}

impl System {
    /// A fresh bus with the publisher and the three services running.
    pub async fn start() -> System {
        let bus = Bus::new().await;
        let publisher = bus.start_publisher().await;
        let topics = std::slice::from_ref(&bus.domain_topic);
        let settlement = InProcess::start::<settlement::Settlement>(&bus, topics).await;
        let projections = InProcess::start::<projections::Projections>(&bus, topics).await;
        let audit = InProcess::start::<audit::Audit>(&bus, topics).await;
        System {
            settlement_group: settlement.group.clone(),
            projections_group: projections.group.clone(),
            audit_group: audit.group.clone(),
            bus,
            publisher: Some(publisher),
            settlement: Some(settlement),
            projections: Some(projections),
            audit: Some(audit),
        }
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        self.bus.pool()
    }

    /// The arguments that point `checkoutctl verify` at this system.
    pub fn verify_args(&self) -> Vec<String> {
        verify_args(
            &self.bus.domain_topic,
            &self.projections_group,
            &self.audit_group,
            &self.settlement_group,
        )
    }

    /// Waits until nothing is in flight ([`wait_quiescent`]).
    pub async fn wait_quiescent(&self, timeout: Duration) {
        wait_quiescent(
            &self.bus,
            self.settlement
                .is_some()
                .then_some(self.settlement_group.as_str()),
            &self.projections_group,
            &self.audit_group,
            timeout,
        )
        .await;
    }

    pub async fn stop(mut self) {
        for service in [
            self.settlement.take(),
            self.projections.take(),
            self.audit.take(),
        ]
        .into_iter()
        .flatten()
        {
            service.stop().await;
        }
        if let Some(p) = self.publisher.take() {
            p.stop().await;
        }
    }
}

/// The arguments that point `checkoutctl verify` at the domain topic `topic` and the three groups.
pub fn verify_args(
    topic: &str,
    projections_group: &str,
    audit_group: &str,
    settlement_group: &str,
) -> Vec<String> {
    [
        "--topic",
        topic,
        "--projections-group",
        projections_group,
        "--audit-group",
        audit_group,
        "--settlement-group",
        settlement_group,
    ]
    .map(String::from)
    .to_vec()
}

/// Waits until nothing is in flight on `bus`: the outbox is empty, the settlement group (when given) stored the
/// end of the domain topic (after which it emits nothing more), and the projections and audit groups committed
/// it. Panics naming what it waited for after `timeout` per wait.
pub async fn wait_quiescent(
    bus: &Bus,
    settlement_group: Option<&str>,
    projections_group: &str,
    audit_group: &str,
    timeout: Duration,
) {
    let topic = bus.domain_topic.as_str();
    loop {
        bus.wait_outbox_empty(timeout).await;
        let before = flows::harness::end_offsets(topic).await;
        if let Some(group) = settlement_group {
            flows::harness::wait_stored(bus.pool(), group, &[topic], timeout).await;
        }
        bus.wait_outbox_empty(timeout).await;
        if flows::harness::end_offsets(topic).await == before {
            break;
        }
    }
    flows::harness::wait_consumed(projections_group, topic, timeout).await;
    flows::harness::wait_consumed(audit_group, topic, timeout).await;
}

/// The environment variable `name` parsed, or `default` when it is unset or does not parse (the drills' knobs).
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until the `settlements` table equals the truth of `flows` (amounts, status, times:
/// `flows::check::expected_settlement_rows`); on timeout fails listing the differences.
pub async fn wait_for_settlements(pool: &sqlx::PgPool, flows: &[&Flows], timeout: Duration) {
    let truth: Vec<flows::ExpectedSettlement> = flows
        .iter()
        .flat_map(|f| f.expected_settlements())
        .collect();
    assert!(!truth.is_empty(), "a by-service scenario settles something");
    let expected = flows::check::expected_settlement_rows(&truth);
    let started = std::time::Instant::now();
    // Counting is cheap; reading every row is not (the bench holds ~100k): compare once the count is there.
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM settlements")
            .fetch_one(pool)
            .await
            .expect("count settlements");
        if count as usize >= expected.len() || started.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loop {
        let actual = flows::check::settlement_rows(pool)
            .await
            .expect("read settlements");
        let diff = flows::check::settlement_rows_diff(&expected, &actual);
        if diff.is_empty() {
            return;
        }
        if started.elapsed() > timeout {
            panic!(
                "the settlements did not reach the truth within {timeout:?} ({} differences):\n{}",
                diff.len(),
                diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
