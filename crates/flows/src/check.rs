//! Reads what the services wrote — read models, balances, daily analytics, the settlement service's settlements,
//! ledger and events — into the [`Truth`] shapes (or comparable lines), with SQL of its own, and compares them
//! with the truth, listing the differences.
//!
//! The SQL here reads the tables as any reader of the read models would (their columns are the contract of
//! decisions 0009, 0010, 0011 and 0027); it shares no code with the services. [`assert_audit_log`] checks the audit
//! log row by row against the events that were published.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use chrono::{DateTime, NaiveDate, Utc};
use events::money::Decimal;
use events::{Envelope, EventData, EventType, InvoiceId, MerchantId, PaymentId, SettlementId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::truth::*;

/// The truth's statuses are static strings; map a column back onto the known vocabulary.
fn status(s: String) -> &'static str {
    const KNOWN: [&str; 14] = [
        "new",
        "partially_paid",
        "paid",
        "confirmed",
        "expired",
        "cancelled",
        "detected",
        "confirming",
        "failed",
        "pending",
        "retrying",
        "completed",
        "active",
        "suspended",
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == s)
        .unwrap_or("<not a status of the read models>")
}

fn n(d: Decimal) -> Decimal {
    d.normalize()
}

/// The projections' read models, as a [`Truth`] (analytics fields empty).
pub async fn projections(pool: &PgPool) -> anyhow::Result<Truth> {
    let mut t = Truth::default();
    type InvoiceRow = (
        Uuid,
        Uuid,
        String,
        String,
        Decimal,
        String,
        Decimal,
        Decimal,
        Decimal,
        bool,
        i32,
        i32,
        i32,
    );
    let rows: Vec<InvoiceRow> = sqlx::query_as(
        "SELECT invoice_id, merchant_id, status, currency, total_amount, crypto_currency, crypto_amount_due, \
                amount_paid, overpaid_amount, late_payment, payments_detected, payments_confirmed, payments_failed \
         FROM proj_invoices",
    )
    .fetch_all(pool)
    .await?;
    let history: BTreeMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT invoice_id, count(*) FROM proj_invoice_history GROUP BY invoice_id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    for r in rows {
        t.invoices.insert(
            InvoiceId::from_uuid(r.0)?,
            InvoiceTruth {
                merchant_id: MerchantId::from_uuid(r.1)?,
                status: status(r.2),
                currency: r.3,
                total_amount: n(r.4),
                crypto_currency: r.5,
                crypto_amount_due: n(r.6),
                amount_paid: n(r.7),
                overpaid_amount: n(r.8),
                late_payment: r.9,
                payments_detected: r.10,
                payments_confirmed: r.11,
                payments_failed: r.12,
                history: history.get(&r.0).copied().unwrap_or(0),
            },
        );
    }
    let rows: Vec<(Uuid, Uuid, String, Decimal, i32, i32, bool)> = sqlx::query_as(
        "SELECT payment_id, invoice_id, status, amount, confirmations, required_confirmations, late \
         FROM proj_payments",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.payments.insert(
            PaymentId::from_uuid(r.0)?,
            PaymentTruth {
                invoice_id: InvoiceId::from_uuid(r.1)?,
                status: status(r.2),
                amount: n(r.3),
                confirmations: r.4,
                required_confirmations: r.5,
                late: r.6,
            },
        );
    }
    type MerchantRow = (
        Uuid,
        String,
        String,
        String,
        Decimal,
        Vec<String>,
        String,
        Option<i32>,
        Option<Decimal>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let rows: Vec<MerchantRow> = sqlx::query_as(
        "SELECT merchant_id, status, default_currency, settlement_currency, fee_percentage, \
                accepted_crypto_currencies, speed_policy, invoice_expiry_minutes, payment_tolerance_percentage, \
                reinstated_at \
         FROM proj_merchants",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.merchants.insert(
            MerchantId::from_uuid(r.0)?,
            MerchantTruth {
                status: status(r.1),
                default_currency: r.2,
                settlement_currency: r.3,
                fee_percentage: n(r.4),
                accepted_crypto_currencies: r.5,
                speed_policy: r.6,
                invoice_expiry_minutes: r.7,
                payment_tolerance_percentage: r.8.map(n),
                reinstated_at: r.9,
            },
        );
    }
    type SettlementRow = (Uuid, Uuid, Uuid, String, String, Decimal, Decimal, Decimal);
    let rows: Vec<SettlementRow> = sqlx::query_as(
        "SELECT settlement_id, invoice_id, merchant_id, status, currency, gross_amount, platform_fee_amount, \
                net_amount FROM proj_settlements",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.settlements.insert(
            SettlementId::from_uuid(r.0)?,
            SettlementTruth {
                invoice_id: InvoiceId::from_uuid(r.1)?,
                merchant_id: MerchantId::from_uuid(r.2)?,
                status: status(r.3),
                currency: r.4,
                gross_amount: n(r.5),
                platform_fee_amount: n(r.6),
                net_amount: n(r.7),
            },
        );
    }
    type BalanceRow = (
        Uuid,
        String,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        Decimal,
        i64,
    );
    let rows: Vec<BalanceRow> = sqlx::query_as(
        "SELECT merchant_id, currency, pending_net, settled_gross, settled_fees, settled_net, failed_net, \
                settlements_completed::bigint FROM proj_merchant_balances",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.balances.insert(
            (MerchantId::from_uuid(r.0)?, r.1),
            BalanceTruth {
                pending_net: n(r.2),
                settled_gross: n(r.3),
                settled_fees: n(r.4),
                settled_net: n(r.5),
                failed_net: n(r.6),
                settlements_completed: r.7,
            },
        );
    }
    Ok(t)
}

/// The analytics tables summed over their partition shards, as a [`Truth`] (read-model fields empty).
pub async fn analytics(pool: &PgPool) -> anyhow::Result<Truth> {
    let mut t = Truth::default();
    type DailyRow = (Uuid, NaiveDate, i64, i64, i64, i64, i64, i64, i64, i64);
    let rows: Vec<DailyRow> = sqlx::query_as(
        "SELECT merchant_id, day, sum(invoices_created)::bigint, sum(invoices_paid)::bigint, \
                sum(invoices_expired)::bigint, sum(invoices_cancelled)::bigint, \
                sum(invoices_converted)::bigint, sum(checkout_views)::bigint, \
                sum(checkouts_abandoned_left)::bigint, sum(checkouts_abandoned_expired)::bigint \
         FROM analytics_daily GROUP BY merchant_id, day",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.daily.insert(
            (MerchantId::from_uuid(r.0)?, r.1),
            DailyTruth {
                invoices_created: r.2,
                invoices_paid: r.3,
                invoices_expired: r.4,
                invoices_cancelled: r.5,
                invoices_converted: r.6,
                checkout_views: r.7,
                methods_chosen: BTreeMap::new(),
                checkouts_abandoned_left: r.8,
                checkouts_abandoned_expired: r.9,
                confirmation_millis: Vec::new(),
            },
        );
    }
    let methods: Vec<(Uuid, NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT merchant_id, day, crypto_currency, network, sum(choices)::bigint \
         FROM analytics_daily_methods GROUP BY merchant_id, day, crypto_currency, network HAVING sum(choices) <> 0",
    )
    .fetch_all(pool)
    .await?;
    for (merchant, day, asset, network, choices) in methods {
        t.daily
            .entry((MerchantId::from_uuid(merchant)?, day))
            .or_default()
            .methods_chosen
            .insert((asset, network), choices);
    }
    let samples: Vec<(Uuid, NaiveDate, i64)> = sqlx::query_as(
        "SELECT merchant_id, day, millis FROM analytics_confirmation_times ORDER BY merchant_id, day, millis",
    )
    .fetch_all(pool)
    .await?;
    for (merchant, day, millis) in samples {
        t.daily
            .entry((MerchantId::from_uuid(merchant)?, day))
            .or_default()
            .confirmation_millis
            .push(millis);
    }
    let rows: Vec<(Uuid, NaiveDate, String, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT merchant_id, day, currency, sum(gross_volume), sum(fees), sum(net_settled) \
         FROM analytics_daily_money GROUP BY merchant_id, day, currency",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        t.daily_money.insert(
            (MerchantId::from_uuid(r.0)?, r.1, r.2),
            MoneyTruth {
                gross_volume: n(r.3),
                fees: n(r.4),
                net_settled: n(r.5),
            },
        );
    }
    // Rows that exist only because a counter was touched with zero (none should) would be noise: drop
    // all-zero rows so both sides list the same keys.
    t.daily.retain(|_, d| *d != DailyTruth::default());
    t.daily_money.retain(|_, m| *m != MoneyTruth::default());
    Ok(t)
}

/// Up to `limit` differences between `expected` and `actual`, each naming the key.
pub fn diff<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    limit: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in expected {
        match actual.get(key) {
            None => out.push(format!("{what} {key:?}: missing (expected {want:?})")),
            Some(got) if got != want => {
                out.push(format!("{what} {key:?}: expected {want:?}, got {got:?}"))
            }
            Some(_) => {}
        }
    }
    for (key, got) in actual {
        if !expected.contains_key(key) {
            out.push(format!("{what} {key:?}: unexpected {got:?}"));
        }
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("… and {} more {what} differences", total - limit));
    }
    out
}

/// Every difference between the read-model parts of two truths.
pub fn projections_diff(expected: &Truth, actual: &Truth) -> Vec<String> {
    let mut out = diff("invoice", &expected.invoices, &actual.invoices, 5);
    out.extend(diff("payment", &expected.payments, &actual.payments, 5));
    out.extend(diff("merchant", &expected.merchants, &actual.merchants, 5));
    out.extend(diff(
        "settlement",
        &expected.settlements,
        &actual.settlements,
        5,
    ));
    out.extend(diff("balance", &expected.balances, &actual.balances, 5));
    out
}

/// Every difference between the analytics parts of two truths.
pub fn analytics_diff(expected: &Truth, actual: &Truth) -> Vec<String> {
    let mut out = diff("daily", &expected.daily, &actual.daily, 5);
    out.extend(diff(
        "daily money",
        &expected.daily_money,
        &actual.daily_money,
        5,
    ));
    out
}

/// Waits until the projections' read models equal `truth`; on timeout panics listing the differences.
pub async fn wait_for_projections(pool: &PgPool, truth: &Truth, timeout: std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        let actual = projections(pool).await.expect("read the read models");
        let differences = projections_diff(truth, &actual);
        if differences.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "the read models did not reach the truth within {timeout:?}:\n{}",
            differences.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A settlement as one line of text, comparable between the truth and the `settlements` table.
fn settlement_line(
    invoice: Uuid,
    merchant: Uuid,
    amounts: [Decimal; 4],
    status: &str,
    times: [Option<DateTime<Utc>>; 3],
) -> String {
    let [gross, fee, net, rate] = amounts.map(|d| d.normalize().to_string());
    let [created, held, settled] = times.map(|t| t.map_or("-".into(), |t| t.to_rfc3339()));
    format!(
        "invoice {invoice} merchant {merchant} gross {gross} fee {fee} net {net} rate {rate} {status} \
         created {created} held {held} settled {settled}"
    )
}

/// What the settlement service's `settlements` table must hold, by settlement id, for `expected`
/// ([`crate::Flows::expected_settlements`]): one line per settlement (amounts, status, times).
pub fn expected_settlement_rows(expected: &[ExpectedSettlement]) -> BTreeMap<Uuid, String> {
    expected
        .iter()
        .map(|s| {
            let status = match s.status {
                "completed" => "completed",
                "retrying" => "held",
                other => panic!("unknown expected status {other}"),
            };
            let row = settlement_line(
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

type SettlementTableRow = (
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

/// What the `settlements` table holds, by settlement id, as [`expected_settlement_rows`] writes it.
pub async fn settlement_rows(pool: &PgPool) -> anyhow::Result<BTreeMap<Uuid, String>> {
    let rows: Vec<SettlementTableRow> = sqlx::query_as(
        "SELECT settlement_id, invoice_id, merchant_id, gross_amount, platform_fee_amount, net_amount, \
                fee_percentage, status, created_at, held_at, settled_at FROM settlements",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.0,
                settlement_line(r.1, r.2, [r.3, r.4, r.5, r.6], &r.7, [Some(r.8), r.9, r.10]),
            )
        })
        .collect())
}

/// Every difference between the expected and the actual settlement rows: missing, different, unexpected.
pub fn settlement_rows_diff(
    expected: &BTreeMap<Uuid, String>,
    actual: &BTreeMap<Uuid, String>,
) -> Vec<String> {
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

/// The settlement service's ledger against the truth, every difference: a currency that does not balance; per
/// account, merchant and currency, what is owed (created and held settlements), what was paid out, the platform's
/// fees, and what is owed back to customers per asset (over-payments of `expected`, and `owed_back`: crypto of
/// invoices that expired or were cancelled unpaid).
pub async fn ledger_diff(
    pool: &PgPool,
    expected: &[ExpectedSettlement],
    owed_back: &[OwedBack],
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let unbalanced: Vec<(String, Decimal)> = sqlx::query_as(
        "SELECT currency, sum(amount) FROM ledger_entries GROUP BY currency HAVING sum(amount) <> 0",
    )
    .fetch_all(pool)
    .await?;
    for (currency, sum) in unbalanced {
        out.push(format!(
            "ledger: currency {currency} does not balance: {sum}"
        ));
    }

    type Key = (String, Option<Uuid>, String);
    let mut want: BTreeMap<Key, Decimal> = BTreeMap::new();
    let mut add = |account: &str, merchant: Option<Uuid>, currency: &str, amount: Decimal| {
        if !amount.is_zero() {
            *want
                .entry((account.to_string(), merchant, currency.to_string()))
                .or_default() += amount;
        }
    };
    for s in expected {
        let (merchant, currency) = (Some(s.merchant_id.as_uuid()), s.currency.code());
        let account = if s.status == "completed" {
            "merchant_paid_out"
        } else {
            "merchant_payable"
        };
        add(account, merchant, currency, s.net_amount.as_decimal());
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
    for o in owed_back {
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
    .await?;
    let got: BTreeMap<Key, Decimal> = rows
        .into_iter()
        .map(|(a, m, c, b)| ((a, m, c), n(b)))
        .collect();
    let want: BTreeMap<Key, Decimal> = want.into_iter().map(|(k, v)| (k, n(v))).collect();
    out.extend(diff("ledger balance", &want, &got, usize::MAX));
    Ok(out)
}

/// Whether `event` is one of the settlement service's (`SettlementCreated`, `SettlementFailed`,
/// `SettlementCompleted`).
pub fn is_settlement_event(event: &Envelope) -> bool {
    matches!(
        event.event_type(),
        EventType::SettlementCreated | EventType::SettlementFailed | EventType::SettlementCompleted
    )
}

/// The settlement events read from the topic (duplicates included), de-duplicated by event id, against
/// `expected`, every difference: per invoice the same types at the same times in the same order, the truth's
/// settlement id and net amount, keyed by the merchant; one event id per (invoice, type); none for an invoice that
/// must not settle; the invoice's correlation id; caused by the generated event that completed the conditions
/// (`SettlementCreated`: the invoice's `InvoicePaid` or `PaymentConfirmed` at the same time), by the
/// settlement's own `SettlementCreated`, or by the merchant's `MerchantReinstated` that released it.
pub fn settlement_events_diff(
    events: &[Envelope],
    flows: &crate::Flows,
    expected: &[ExpectedSettlement],
) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(settlement_causes_diff(events, flows));
    let mut seen = BTreeSet::new();
    let mut by_invoice: BTreeMap<Uuid, Vec<(EventType, DateTime<Utc>)>> = BTreeMap::new();
    let mut ids: BTreeMap<(Uuid, EventType), Uuid> = BTreeMap::new();
    let expected: BTreeMap<Uuid, &ExpectedSettlement> = expected
        .iter()
        .map(|s| (s.invoice_id.as_uuid(), s))
        .collect();
    for event in events.iter().filter(|e| is_settlement_event(e)) {
        if !seen.insert(event.event_id()) {
            continue;
        }
        let (id, kind) = (event.event_id(), event.event_type());
        let Some(invoice) = event.invoice_id().map(|i| i.as_uuid()) else {
            out.push(format!("{kind} {id} names no invoice"));
            continue;
        };
        if let Some(previous) = ids.insert((invoice, kind), id.as_uuid()) {
            out.push(format!(
                "two {kind} events with different ids for invoice {invoice}: {previous} and {id}"
            ));
        }
        let Some(want) = expected.get(&invoice) else {
            out.push(format!(
                "{kind} {id} for invoice {invoice}, which must not settle"
            ));
            continue;
        };
        if event.aggregate_id().as_uuid() != want.settlement_id.as_uuid() {
            out.push(format!(
                "{kind} {id} of invoice {invoice}: settlement {}, expected {}",
                event.aggregate_id(),
                want.settlement_id
            ));
        }
        if event.partition_key() != want.merchant_id.to_string() {
            out.push(format!(
                "{kind} {id} of invoice {invoice}: keyed by {}, not by its merchant {}",
                event.partition_key(),
                want.merchant_id
            ));
        }
        let net = match event.data() {
            EventData::SettlementCreated(e) => e.net_amount,
            EventData::SettlementFailed(e) => e.net_amount,
            EventData::SettlementCompleted(e) => e.net_amount,
            _ => unreachable!("a settlement event"),
        };
        if net != want.net_amount {
            out.push(format!(
                "{kind} {id} of invoice {invoice}: net {net}, expected {}",
                want.net_amount
            ));
        }
        by_invoice
            .entry(invoice)
            .or_default()
            .push((kind, event.timestamp()));
    }
    for (invoice, want) in &expected {
        let got = by_invoice.remove(invoice).unwrap_or_default();
        if got != want.events {
            out.push(format!(
                "the settlement events of invoice {invoice}: expected {:?}, got {got:?}",
                want.events
            ));
        }
    }
    out
}

/// The correlation and causation ids of the settlement events against the generated events (see
/// [`settlement_events_diff`]).
fn settlement_causes_diff(events: &[Envelope], flows: &crate::Flows) -> Vec<String> {
    let mut correlation = BTreeMap::new();
    let mut causes: BTreeMap<Uuid, Vec<(Uuid, DateTime<Utc>)>> = BTreeMap::new();
    let mut reinstatements = BTreeSet::new();
    for e in &flows.events {
        match e.data() {
            EventData::InvoiceCreated(_) => {
                correlation.insert(e.aggregate_id().as_uuid(), e.correlation_id());
            }
            EventData::InvoicePaid(_) | EventData::PaymentConfirmed(_) => {
                if let Some(invoice) = e.invoice_id() {
                    causes
                        .entry(invoice.as_uuid())
                        .or_default()
                        .push((e.event_id().as_uuid(), e.timestamp()));
                }
            }
            EventData::MerchantReinstated(_) => {
                reinstatements.insert(e.event_id().as_uuid());
            }
            _ => {}
        }
    }
    let created: BTreeMap<Uuid, Uuid> = events
        .iter()
        .filter(|e| e.event_type() == EventType::SettlementCreated)
        .map(|e| (e.aggregate_id().as_uuid(), e.event_id().as_uuid()))
        .collect();
    let mut out = Vec::new();
    for event in events.iter().filter(|e| is_settlement_event(e)) {
        let (id, kind) = (event.event_id(), event.event_type());
        let Some(invoice) = event.invoice_id().map(|i| i.as_uuid()) else {
            continue; // reported by the caller
        };
        if event.correlation_id().is_none()
            || correlation.get(&invoice) != Some(&event.correlation_id())
        {
            out.push(format!(
                "{kind} {id} of invoice {invoice}: correlation {:?}, not the invoice's {:?}",
                event.correlation_id(),
                correlation.get(&invoice)
            ));
        }
        let cause = event.causation_id().map(|c| c.as_uuid());
        let ok = cause.is_some_and(|cause| match kind {
            EventType::SettlementCreated => causes.get(&invoice).is_some_and(|c| {
                c.iter()
                    .any(|(id, at)| *id == cause && *at == event.timestamp())
            }),
            _ => {
                created.get(&event.aggregate_id().as_uuid()) == Some(&cause)
                    || reinstatements.contains(&cause)
            }
        });
        if !ok {
            out.push(format!(
                "{kind} {id} of invoice {invoice}: caused by {cause:?}, not by the event that completed it"
            ));
        }
    }
    out
}

/// The audit log (decision 0010) holds exactly `events`, once each, numbered 1..=n without gaps, each row carrying
/// its event's type and metadata (actor, IP, user agent, request id) and the event as consumed. Panics naming the
/// first row that does not (the chain's hashes are `audit::verify`'s to check).
pub async fn assert_audit_log(pool: &PgPool, events: &[Envelope]) {
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
    let by_id: std::collections::HashMap<uuid::Uuid, &Envelope> =
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
