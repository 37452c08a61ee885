//! Test plumbing of this service only (the shared part is `flows::service`): the service on a bus, its
//! settlements, ledger and emitted events compared with the generator's truth (`Flows::expected_settlements`,
//! `Flows::owed_back`), which is computed from the plan, never from this service.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::money::Decimal;
use events::{Envelope, EventData, EventType};
use flows::harness::Bus;
use flows::service::InProcess;
use flows::{ExpectedSettlement, Flows};
use settlement::Settlement;
use sqlx::PgPool;
use uuid::Uuid;

/// The service in this process on `bus`, under a fresh group.
pub async fn start(bus: &Bus) -> InProcess {
    InProcess::start::<Settlement>(bus, std::slice::from_ref(&bus.domain_topic)).await
}

/// A settlement as text, comparable between the truth and the table.
pub type Row = String;

fn row(
    invoice: Uuid,
    merchant: Uuid,
    amounts: [Decimal; 4],
    status: &str,
    times: [Option<DateTime<Utc>>; 3],
) -> Row {
    let [gross, fee, net, rate] = amounts.map(|d| d.normalize().to_string());
    let [created, held, settled] = times.map(|t| t.map_or("-".into(), |t| t.to_rfc3339()));
    format!(
        "invoice {invoice} merchant {merchant} gross {gross} fee {fee} net {net} rate {rate} {status} \
         created {created} held {held} settled {settled}"
    )
}

/// What the `settlements` table must hold, by settlement id.
pub fn expected_rows(flows: &Flows) -> BTreeMap<Uuid, Row> {
    flows
        .expected_settlements()
        .iter()
        .map(|s| {
            let status = match s.status {
                "completed" => "completed",
                "retrying" => "held",
                other => panic!("unknown expected status {other}"),
            };
            let row = row(
                s.invoice_id.as_uuid(),
                s.merchant_id.as_uuid(),
                [
                    s.gross_amount.as_decimal(),
                    s.platform_fee_amount.as_decimal(),
                    s.net_amount.as_decimal(),
                    s.fee_percentage.as_decimal(),
                ],
                status,
                [Some(s.due_at), s.held.then_some(s.due_at), s.settled_at],
            );
            (s.settlement_id.as_uuid(), row)
        })
        .collect()
}

type SettlementRow = (
    Uuid,
    Uuid,
    Uuid,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// What the `settlements` table holds, by settlement id.
pub async fn actual_rows(pool: &PgPool) -> BTreeMap<Uuid, Row> {
    let rows: Vec<SettlementRow> = sqlx::query_as(
        "SELECT settlement_id, invoice_id, merchant_id, gross_amount, platform_fee_amount, net_amount, \
                fee_percentage, status, created_at, held_at, settled_at FROM settlements",
    )
    .fetch_all(pool)
    .await
    .expect("read settlements");
    rows.into_iter()
        .map(|r| {
            (
                r.0,
                row(r.1, r.2, [r.3, r.4, r.5, r.6], &r.7, [Some(r.8), r.9, r.10]),
            )
        })
        .collect()
}

fn differences(expected: &BTreeMap<Uuid, Row>, actual: &BTreeMap<Uuid, Row>) -> Vec<String> {
    let mut out = Vec::new();
    for (id, want) in expected {
        match actual.get(id) {
            None => out.push(format!("missing settlement {id}: {want}")),
            Some(got) if got != want => {
                out.push(format!("settlement {id}\n  want {want}\n  got  {got}"))
            }
            _ => {}
        }
    }
    for (id, got) in actual {
        if !expected.contains_key(id) {
            out.push(format!("unexpected settlement {id}: {got}"));
        }
    }
    out
}

/// Waits until the `settlements` table equals the truth; on timeout fails listing the differences.
pub async fn wait_for_settlements(pool: &PgPool, flows: &Flows, timeout: Duration) {
    let expected = expected_rows(flows);
    assert!(
        !expected.is_empty(),
        "a by-service scenario settles something"
    );
    let started = std::time::Instant::now();
    loop {
        let diff = differences(&expected, &actual_rows(pool).await);
        if diff.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the settlements did not reach the truth within {timeout:?} ({} differences):\n{}",
            diff.len(),
            diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The ledger against the truth: every currency balances; per merchant and currency what is owed (created and
/// held settlements) and what was paid out; the platform's fees per currency; what is owed back to customers per
/// asset (over-payments, and crypto of invoices that expired or were cancelled unpaid).
pub async fn check_ledger(pool: &PgPool, flows: &Flows) {
    let unbalanced: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT currency, sum(amount) FROM ledger_entries GROUP BY currency HAVING sum(amount) <> 0",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        unbalanced.is_empty(),
        "unbalanced currencies: {unbalanced:?}"
    );

    type Key = (String, Option<Uuid>, String);
    let mut expected: BTreeMap<Key, Decimal> = BTreeMap::new();
    let mut add = |account: &str, merchant: Option<Uuid>, currency: &str, amount: Decimal| {
        if !amount.is_zero() {
            *expected
                .entry((account.to_string(), merchant, currency.to_string()))
                .or_default() += amount;
        }
    };
    for s in flows.expected_settlements() {
        let (merchant, currency) = (Some(s.merchant_id.as_uuid()), s.currency.code());
        let net = s.net_amount.as_decimal();
        let account = if s.status == "completed" {
            "merchant_paid_out"
        } else {
            "merchant_payable"
        };
        add(account, merchant, currency, net);
        add(
            "platform_fees",
            None,
            currency,
            s.platform_fee_amount.as_decimal(),
        );
        add(
            "customer_refunds",
            None,
            s.crypto_currency.code(),
            s.overpaid_crypto.as_decimal(),
        );
    }
    for o in flows.owed_back() {
        if o.status != "partially_paid" {
            add(
                "customer_refunds",
                None,
                o.crypto_currency.code(),
                o.amount.as_decimal(),
            );
        }
    }
    let rows: Vec<(String, Option<Uuid>, String, Decimal)> = sqlx::query_as(
        "SELECT account, merchant_id, currency, balance FROM ledger_balances \
         WHERE account <> 'customer_receipts' AND balance <> 0",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let actual: BTreeMap<Key, Decimal> = rows
        .into_iter()
        .map(|(a, m, c, b)| ((a, m, c), b))
        .collect();
    let norm = |m: &BTreeMap<Key, Decimal>| -> Vec<String> {
        m.iter()
            .map(|(k, v)| format!("{k:?} {}", v.normalize()))
            .collect()
    };
    assert_eq!(
        norm(&actual),
        norm(&expected),
        "ledger balances per account, merchant and currency"
    );
}

/// The settlement events on `bus`'s domain topic (all of them, duplicates included) once at least `at_least`
/// records are there.
pub async fn settlement_events(bus: &Bus, at_least: usize) -> Vec<Envelope> {
    flows::harness::read_topic(&bus.domain_topic, at_least, Duration::from_secs(60))
        .await
        .iter()
        .filter_map(|m| {
            use rdkafka::Message;
            let event = events::codec::decode(m.payload()?).ok()?;
            matches!(
                event.event_type(),
                EventType::SettlementCreated
                    | EventType::SettlementFailed
                    | EventType::SettlementCompleted
            )
            .then_some(event)
        })
        .collect()
}

/// The settlement events, de-duplicated by event id, against the truth's: per invoice, the same types at the
/// same times in the same order, with the truth's amounts; and one event id per (invoice, type).
pub fn check_events(events: &[Envelope], flows: &Flows) {
    let mut seen = std::collections::BTreeSet::new();
    let mut by_invoice: BTreeMap<Uuid, Vec<(EventType, DateTime<Utc>)>> = BTreeMap::new();
    let mut ids: BTreeMap<(Uuid, EventType), Uuid> = BTreeMap::new();
    let truth = flows.expected_settlements();
    let expected: BTreeMap<Uuid, &ExpectedSettlement> =
        truth.iter().map(|s| (s.invoice_id.as_uuid(), s)).collect();
    for event in events {
        if !seen.insert(event.event_id()) {
            continue;
        }
        let invoice = event
            .invoice_id()
            .expect("settlement events name their invoice")
            .as_uuid();
        let previous = ids.insert((invoice, event.event_type()), event.event_id().as_uuid());
        assert!(
            previous.is_none(),
            "two {} events with different ids for invoice {invoice}",
            event.event_type()
        );
        let want = expected.get(&invoice).unwrap_or_else(|| {
            panic!("a settlement event for invoice {invoice}, which must not settle")
        });
        assert_eq!(event.aggregate_id().as_uuid(), want.settlement_id.as_uuid());
        assert_eq!(
            event.partition_key(),
            want.merchant_id.to_string(),
            "keyed by the merchant"
        );
        let net = match event.data() {
            EventData::SettlementCreated(e) => e.net_amount,
            EventData::SettlementFailed(e) => e.net_amount,
            EventData::SettlementCompleted(e) => e.net_amount,
            _ => unreachable!(),
        };
        assert_eq!(net, want.net_amount, "net of {invoice}");
        by_invoice
            .entry(invoice)
            .or_default()
            .push((event.event_type(), event.timestamp()));
    }
    for (invoice, want) in &expected {
        let got = by_invoice.remove(invoice).unwrap_or_default();
        assert_eq!(
            &got, &want.events,
            "the settlement events of invoice {invoice}"
        );
    }
}

/// Nothing of `group` was dead-lettered and no record is failing as a business error (waiting for its retries):
/// a guard that refused a duplicate by failing would show here.
pub async fn assert_nothing_refused(bus: &Bus, group: &str) {
    let dlq = events::topics::dead_letter_topic(&bus.domain_topic);
    let dead: i64 = flows::harness::end_offsets(&dlq).await.iter().sum();
    assert_eq!(dead, 0, "records were dead-lettered to {dlq}");
    let failing: Vec<(i32, i64, String)> = sqlx::query_as(
        "SELECT partition, \"offset\", last_class FROM consumer_retry_attempts \
         WHERE consumer_group = $1 AND business_failures > 0",
    )
    .bind(group)
    .fetch_all(bus.pool())
    .await
    .unwrap();
    assert!(
        failing.is_empty(),
        "records failing as business errors: {failing:?}"
    );
}
