//! Reads what the services wrote — read models, balances, daily analytics — into the [`Truth`] shapes, with SQL
//! of its own, and compares them with the truth, listing the first differences.
//!
//! The SQL here reads the tables as any reader of the read models would (their columns are the contract of
//! decisions 0009 and 0011); it shares no code with the services.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::NaiveDate;
use events::money::Decimal;
use events::{InvoiceId, MerchantId, PaymentId, SettlementId};
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
    type DailyRow = (Uuid, NaiveDate, i64, i64, i64, i64, i64, i64);
    let rows: Vec<DailyRow> = sqlx::query_as(
        "SELECT merchant_id, day, sum(invoices_created)::bigint, sum(invoices_paid)::bigint, \
                sum(invoices_expired)::bigint, sum(invoices_cancelled)::bigint, \
                sum(invoices_converted)::bigint, sum(checkout_views)::bigint \
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
                confirmation_millis: Vec::new(),
            },
        );
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
