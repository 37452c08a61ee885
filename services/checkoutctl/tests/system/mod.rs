//! A live system for `checkoutctl verify`, `settlement show` and `merchant show` to look at: a private bus
//! (fresh database, its own topics), the outbox publisher, and the settlement, projections and audit services in
//! this process, each under a fresh consumer group; generated flows appended through the outbox as the
//! platform's services would. Shared by the integration tests (`tests/live.rs`) and `benches/verify.rs`.
//!
//! Expected values come from the generator's truth (`Flows::expected_settlements`), never from the code under
//! test.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::time::Duration;

use events::money::Decimal;
use flows::Flows;
use flows::harness::{Bus, Publisher};
use flows::service::InProcess;
use uuid::Uuid;

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
        vec![
            "--topic".into(),
            self.bus.domain_topic.clone(),
            "--projections-group".into(),
            self.projections_group.clone(),
            "--audit-group".into(),
            self.audit_group.clone(),
            "--settlement-group".into(),
            self.settlement_group.clone(),
        ]
    }

    /// The environment `checkoutctl` reads: this system's database and the test broker.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.bus.db.url.clone()),
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                testkit::infra().bootstrap_servers.clone(),
            ),
        ]
    }

    /// Stops the settlement service (its position stays stored).
    pub async fn stop_settlement(&mut self) {
        if let Some(s) = self.settlement.take() {
            s.stop().await;
        }
    }

    /// Starts the settlement service again under its group: it resumes at its stored position.
    pub async fn restart_settlement(&mut self) {
        assert!(self.settlement.is_none(), "stop it first");
        let settings = flows::service::settings::<settlement::Settlement>(
            &self.bus,
            &self.settlement_group,
            std::slice::from_ref(&self.bus.domain_topic),
            flows::service::fast_options(),
        );
        self.settlement = Some(
            InProcess::start_with::<settlement::Settlement>(
                settings,
                self.settlement_group.clone(),
            )
            .await,
        );
    }

    /// Waits until nothing is in flight: the outbox is empty, the settlement group stored the end of the topic
    /// (after which it emits nothing more), and the projections and audit groups committed it.
    pub async fn wait_quiescent(&self, timeout: Duration) {
        let topic = self.bus.domain_topic.as_str();
        loop {
            self.bus.wait_outbox_empty(timeout).await;
            let before = flows::harness::end_offsets(topic).await;
            if self.settlement.is_some() {
                flows::harness::wait_stored(self.pool(), &self.settlement_group, &[topic], timeout)
                    .await;
            }
            self.bus.wait_outbox_empty(timeout).await;
            if flows::harness::end_offsets(topic).await == before {
                break;
            }
        }
        flows::harness::wait_consumed(&self.projections_group, topic, timeout).await;
        flows::harness::wait_consumed(&self.audit_group, topic, timeout).await;
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

/// A settlement as text, comparable between the truth and the table.
fn row(
    invoice: Uuid,
    merchant: Uuid,
    amounts: [Decimal; 4],
    currency: &str,
    status: &str,
) -> String {
    let [gross, fee, net, rate] = amounts.map(|d| d.normalize().to_string());
    format!(
        "invoice {invoice} merchant {merchant} {currency} gross {gross} fee {fee} net {net} rate {rate} {status}"
    )
}

/// What the `settlements` table must hold at the end, by settlement id (from the generator's truth).
pub fn expected_rows(flows: &[&Flows]) -> BTreeMap<Uuid, String> {
    flows
        .iter()
        .flat_map(|f| f.expected_settlements())
        .map(|s| {
            let status = match s.status {
                "completed" => "completed",
                "retrying" => "held",
                other => panic!("unknown expected status {other}"),
            };
            (
                s.settlement_id.as_uuid(),
                row(
                    s.invoice_id.as_uuid(),
                    s.merchant_id.as_uuid(),
                    [
                        s.gross_amount.as_decimal(),
                        s.platform_fee_amount.as_decimal(),
                        s.net_amount.as_decimal(),
                        s.fee_percentage.as_decimal(),
                    ],
                    s.currency.code(),
                    status,
                ),
            )
        })
        .collect()
}

type SettlementRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    String,
);

async fn actual_rows(pool: &sqlx::PgPool) -> BTreeMap<Uuid, String> {
    let rows: Vec<SettlementRow> = sqlx::query_as(
        "SELECT settlement_id, invoice_id, merchant_id, currency, gross_amount, platform_fee_amount, net_amount, \
                fee_percentage, status FROM settlements",
    )
    .fetch_all(pool)
    .await
    .expect("read settlements");
    rows.into_iter()
        .map(|r| (r.0, row(r.1, r.2, [r.4, r.5, r.6, r.7], &r.3, &r.8)))
        .collect()
}

/// Waits until the `settlements` table equals the truth of `flows`; on timeout fails listing differences.
pub async fn wait_for_settlements(pool: &sqlx::PgPool, flows: &[&Flows], timeout: Duration) {
    let expected = expected_rows(flows);
    assert!(
        !expected.is_empty(),
        "a by-service scenario settles something"
    );
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
        let actual = actual_rows(pool).await;
        if actual == expected {
            return;
        }
        if started.elapsed() > timeout {
            let mut diff: Vec<String> = Vec::new();
            for (id, want) in &expected {
                match actual.get(id) {
                    None => diff.push(format!("missing {id}: {want}")),
                    Some(got) if got != want => diff.push(format!("{id}: want {want}, got {got}")),
                    _ => {}
                }
            }
            for (id, got) in &actual {
                if !expected.contains_key(id) {
                    diff.push(format!("unexpected {id}: {got}"));
                }
            }
            panic!(
                "the settlements did not reach the truth within {timeout:?} ({} differences):\n{}",
                diff.len(),
                diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
