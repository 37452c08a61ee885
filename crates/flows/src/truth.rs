//! The ground truth: what the read models, balances and daily analytics must say at the horizon, computed from
//! the plan's intent — never from the events, and never by running a handler.
//!
//! Vocabulary (the read models' contract, `docs/decisions/0009-read-models.md` and `0011-analytics.md`):
//! - invoice `status`, first that applies: `cancelled`, `confirmed` (paid and every counted payment confirmed),
//!   `paid`, `expired`, `partially_paid` (something received, not paid, expired or cancelled), `new`;
//!   `amount_paid` is what was received and has not failed;
//! - payment `status`, first that applies: `failed`, `confirmed`, `confirming`, `detected`;
//! - settlement `status`: `completed`, `failed` (final), `retrying` (failed, will retry), `pending`;
//! - a merchant's balance per currency: net amounts pending (pending or retrying), settled (gross, fees, net,
//!   count) and failed;
//! - analytics per merchant and UTC day of each event: invoices created / paid / expired / cancelled, invoices
//!   created that day that are paid by now (conversion = converted ÷ created), checkout views, gross volume of
//!   the invoices paid that day per invoice currency, fees and net of the settlements completed that day per
//!   settlement currency, and one sample per payment confirmed that day: milliseconds from its invoice's
//!   creation to its confirmation (median and p95 by nearest rank, [`percentile`]).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use events::money::{Amount, Decimal};
use events::{InvoiceId, MerchantId, PaymentId, SettlementId};

use crate::plan::{DEFAULT_EXPIRY_MINUTES, InvoicePlan, Plan};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceTruth {
    pub merchant_id: MerchantId,
    pub status: &'static str,
    pub currency: String,
    pub total_amount: Decimal,
    pub crypto_currency: String,
    pub crypto_amount_due: Decimal,
    pub amount_paid: Decimal,
    pub overpaid_amount: Decimal,
    pub late_payment: bool,
    pub payments_detected: i32,
    pub payments_confirmed: i32,
    pub payments_failed: i32,
    /// Events about the invoice (its own, its payments', its settlement's).
    pub history: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentTruth {
    pub invoice_id: InvoiceId,
    pub status: &'static str,
    pub amount: Decimal,
    pub confirmations: i32,
    pub required_confirmations: i32,
    pub late: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantTruth {
    pub status: &'static str,
    pub default_currency: String,
    pub settlement_currency: String,
    pub fee_percentage: Decimal,
    pub accepted_crypto_currencies: Vec<String>,
    pub speed_policy: String,
    /// Only once the merchant changed it (the platform default applies before).
    pub invoice_expiry_minutes: Option<i32>,
    pub payment_tolerance_percentage: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementTruth {
    pub invoice_id: InvoiceId,
    pub merchant_id: MerchantId,
    pub status: &'static str,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceTruth {
    pub pending_net: Decimal,
    pub settled_gross: Decimal,
    pub settled_fees: Decimal,
    pub settled_net: Decimal,
    pub failed_net: Decimal,
    pub settlements_completed: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyTruth {
    pub invoices_created: i64,
    pub invoices_paid: i64,
    pub invoices_expired: i64,
    pub invoices_cancelled: i64,
    pub invoices_converted: i64,
    pub checkout_views: i64,
    /// Sorted.
    pub confirmation_millis: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyTruth {
    pub gross_volume: Decimal,
    pub fees: Decimal,
    pub net_settled: Decimal,
}

/// Expected state at the horizon.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub invoices: BTreeMap<InvoiceId, InvoiceTruth>,
    pub payments: BTreeMap<PaymentId, PaymentTruth>,
    pub merchants: BTreeMap<MerchantId, MerchantTruth>,
    pub settlements: BTreeMap<SettlementId, SettlementTruth>,
    pub balances: BTreeMap<(MerchantId, String), BalanceTruth>,
    pub daily: BTreeMap<(MerchantId, NaiveDate), DailyTruth>,
    pub daily_money: BTreeMap<(MerchantId, NaiveDate, String), MoneyTruth>,
}

/// The nearest-rank `p`-th percentile (`p` in 1..=100) of sorted `values`: the smallest value with at least
/// `p` % of the values at or below it. `None` for no values. Integer arithmetic only.
pub fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn dec(a: Amount) -> Decimal {
    a.as_decimal().normalize()
}

fn wire<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value).expect("serialisable") {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// Computes the truth of `plan` at its horizon.
pub fn truth(plan: &Plan) -> Truth {
    let h = plan.horizon;
    let mut t = Truth::default();
    for m in &plan.merchants {
        let s = m.settings_at(h);
        let updated = m.update.as_ref().filter(|u| u.at <= h);
        let expiry_changed =
            updated.is_some_and(|u| u.after.expiry_minutes != m.initial.expiry_minutes);
        let tolerance_changed = updated.is_some_and(|u| u.after.tolerance != m.initial.tolerance);
        t.merchants.insert(
            m.id,
            MerchantTruth {
                status: if m.suspended_at(h) {
                    "suspended"
                } else {
                    "active"
                },
                default_currency: s.currency.code().to_string(),
                settlement_currency: s.currency.code().to_string(),
                fee_percentage: m.fee_percentage.as_decimal().normalize(),
                accepted_crypto_currencies: s
                    .accepted
                    .iter()
                    .map(|a| a.code().to_string())
                    .collect(),
                speed_policy: wire(&s.speed),
                invoice_expiry_minutes: expiry_changed.then_some(s.expiry_minutes as i32),
                payment_tolerance_percentage: tolerance_changed
                    .then(|| s.tolerance.as_decimal().normalize()),
            },
        );
        debug_assert!(DEFAULT_EXPIRY_MINUTES == m.initial.expiry_minutes);
    }
    for i in &plan.invoices {
        invoice_truth(&mut t, plan, i);
    }
    for i in &plan.invoices {
        for at in i.views.iter().filter(|at| **at <= h) {
            let merchant = plan.merchants[i.merchant].id;
            t.daily
                .entry((merchant, day(*at)))
                .or_default()
                .checkout_views += 1;
        }
    }
    for daily in t.daily.values_mut() {
        daily.confirmation_millis.sort_unstable();
    }
    t
}

fn invoice_truth(t: &mut Truth, plan: &Plan, i: &InvoicePlan) {
    let h = plan.horizon;
    let merchant = plan.merchants[i.merchant].id;
    let by_h = |at: &DateTime<Utc>| *at <= h;
    let paid = i.paid.as_ref().filter(|p| by_h(&p.at));
    let expired = i.expired_at.filter(by_h);
    let cancelled = i.cancelled.as_ref().filter(|c| by_h(&c.at));
    let detected: Vec<_> = i.payments.iter().filter(|p| by_h(&p.detected_at)).collect();
    let confirmed = |p: &crate::plan::PaymentPlan| p.confirmed_at.is_some_and(|at| at <= h);
    let failed = |p: &crate::plan::PaymentPlan| p.failed.is_some_and(|(at, _)| at <= h);
    let received = dec(i.received_at(h));
    let all_counted_confirmed = detected.iter().filter(|p| !failed(p)).all(|p| confirmed(p));
    let status = if cancelled.is_some() {
        "cancelled"
    } else if paid.is_some() && all_counted_confirmed {
        "confirmed"
    } else if paid.is_some() {
        "paid"
    } else if expired.is_some() {
        "expired"
    } else if received > Decimal::ZERO {
        "partially_paid"
    } else {
        "new"
    };
    let mut history = 1
        + i64::from(paid.is_some())
        + i64::from(expired.is_some())
        + i64::from(cancelled.is_some());
    for p in &detected {
        history += 1 + p.confirming.iter().filter(|(_, at)| by_h(at)).count() as i64;
        history += i64::from(confirmed(p)) + i64::from(failed(p));
        let confirmations = if confirmed(p) {
            i.required_confirmations
        } else {
            p.confirming
                .iter()
                .filter(|(_, at)| by_h(at))
                .map(|(k, _)| *k)
                .max()
                .unwrap_or(0)
        };
        let status = if failed(p) {
            "failed"
        } else if confirmed(p) {
            "confirmed"
        } else if confirmations > 0 {
            "confirming"
        } else {
            "detected"
        };
        t.payments.insert(
            p.id,
            PaymentTruth {
                invoice_id: i.id,
                status,
                amount: dec(p.amount),
                confirmations: confirmations as i32,
                required_confirmations: i.required_confirmations as i32,
                late: p.late,
            },
        );
        if let Some(at) = p.confirmed_at.filter(by_h) {
            let millis = (at - i.created_at).num_milliseconds();
            t.daily
                .entry((merchant, day(at)))
                .or_default()
                .confirmation_millis
                .push(millis);
        }
    }
    let overpaid = match paid {
        Some(_) => received - dec(i.due),
        None => Decimal::ZERO,
    };

    // Daily analytics.
    let created_day = day(i.created_at);
    t.daily
        .entry((merchant, created_day))
        .or_default()
        .invoices_created += 1;
    if let Some(p) = paid {
        t.daily
            .entry((merchant, day(p.at)))
            .or_default()
            .invoices_paid += 1;
        t.daily
            .entry((merchant, created_day))
            .or_default()
            .invoices_converted += 1;
        let money = t
            .daily_money
            .entry((merchant, day(p.at), i.currency.code().to_string()))
            .or_default();
        money.gross_volume += dec(i.total);
    }
    if let Some(at) = expired {
        t.daily
            .entry((merchant, day(at)))
            .or_default()
            .invoices_expired += 1;
    }
    if let Some(c) = cancelled {
        t.daily
            .entry((merchant, day(c.at)))
            .or_default()
            .invoices_cancelled += 1;
    }

    // Settlement and balance.
    if let Some(s) = i.settlement.as_ref().filter(|s| by_h(&s.created_at)) {
        history += 1;
        let failures: Vec<_> = s.failures.iter().filter(|(at, _, _)| by_h(at)).collect();
        history += failures.len() as i64;
        let completed = s.completed_at.filter(by_h);
        history += i64::from(completed.is_some());
        let status = match (completed, failures.last()) {
            (Some(_), _) => "completed",
            (None, Some((_, _, false))) => "failed",
            (None, Some((_, _, true))) => "retrying",
            (None, None) => "pending",
        };
        let currency = s.currency.code().to_string();
        let (gross, fee, net) = (dec(s.gross), dec(s.split.fee), dec(s.split.net));
        t.settlements.insert(
            s.id,
            SettlementTruth {
                invoice_id: i.id,
                merchant_id: merchant,
                status,
                currency: currency.clone(),
                gross_amount: gross,
                platform_fee_amount: fee,
                net_amount: net,
            },
        );
        let balance = t.balances.entry((merchant, currency.clone())).or_default();
        match status {
            "completed" => {
                balance.settled_gross += gross;
                balance.settled_fees += fee;
                balance.settled_net += net;
                balance.settlements_completed += 1;
            }
            "failed" => balance.failed_net += net,
            _ => balance.pending_net += net,
        }
        if let Some(at) = completed {
            let money = t
                .daily_money
                .entry((merchant, day(at), currency))
                .or_default();
            money.fees += fee;
            money.net_settled += net;
        }
    }

    t.invoices.insert(
        i.id,
        InvoiceTruth {
            merchant_id: merchant,
            status,
            currency: i.currency.code().to_string(),
            total_amount: dec(i.total),
            crypto_currency: i.asset.code().to_string(),
            crypto_amount_due: dec(i.due),
            amount_paid: received,
            overpaid_amount: overpaid.normalize(),
            late_payment: paid.is_some_and(|p| p.late),
            payments_detected: detected.len() as i32,
            payments_confirmed: detected
                .iter()
                .filter(|p| confirmed(p) && !failed(p))
                .count() as i32,
            payments_failed: detected.iter().filter(|p| failed(p)).count() as i32,
            history,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Scenario, plan};

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50), Some(3));
        let twenty: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&twenty, 95), Some(19));
        assert_eq!(percentile(&twenty, 100), Some(20));
    }

    #[test]
    fn the_truth_covers_every_state_the_read_models_know() {
        let p = plan(&Scenario::new(11, 30, 3000));
        let t = truth(&p);
        for status in [
            "new",
            "partially_paid",
            "paid",
            "confirmed",
            "expired",
            "cancelled",
        ] {
            assert!(
                t.invoices.values().any(|i| i.status == status),
                "invoice {status}"
            );
        }
        for status in ["detected", "confirming", "confirmed", "failed"] {
            assert!(
                t.payments.values().any(|x| x.status == status),
                "payment {status}"
            );
        }
        for status in ["pending", "retrying", "completed", "failed"] {
            assert!(
                t.settlements.values().any(|s| s.status == status),
                "settlement {status}"
            );
        }
        assert!(t.invoices.values().any(|i| i.late_payment));
        assert!(
            t.invoices
                .values()
                .any(|i| i.overpaid_amount > Decimal::ZERO)
        );
        assert!(t.merchants.values().any(|m| m.status == "suspended"));
        let events = crate::emit::domain_events(&p);
        let about_invoices = events.iter().filter(|e| e.invoice_id().is_some()).count() as i64;
        assert_eq!(
            t.invoices.values().map(|i| i.history).sum::<i64>(),
            about_invoices
        );
    }
}
