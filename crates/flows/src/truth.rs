//! The ground truth: what the read models, balances and daily analytics must say at the horizon, computed from
//! the plan's intent — never from the events, and never by running a handler.
//!
//! Vocabulary (the read models' contract, `docs/decisions/0009-read-models.md` and `0011-analytics.md`):
//! - invoice `status`, first that applies: `cancelled`, `confirmed` (paid and every counted payment confirmed),
//!   `paid`, `expired`, `partially_paid` (something received, not paid, expired or cancelled), `new`;
//!   `amount_paid` is what was received and has not failed;
//! - payment `status`, first that applies: `failed`, `confirmed`, `confirming`, `detected`;
//! - settlement `status`: `completed`, `failed` (final), `retrying` (failed, will retry), `pending`; in
//!   [`Settlements::ByService`] mode the settlements are those the service must have produced by the horizon
//!   ([`crate::plan::ServiceSettlement`]): `completed`, or `retrying` while held for a suspended merchant;
//! - a merchant is `suspended` from its suspension until its reinstatement (`reinstated_at`, once it happened);
//! - a merchant's balance per currency: net amounts pending (pending or retrying), settled (gross, fees, net,
//!   count) and failed;
//! - analytics per merchant and UTC day of each event: invoices created / paid / expired / cancelled, invoices
//!   created that day that are paid by now (conversion = converted ÷ created), checkout views, payment methods
//!   chosen per asset and network and checkouts abandoned by reason (`InvoicePlan::journey`), gross volume of
//!   the invoices paid that day per invoice currency, fees and net of the settlements completed that day per
//!   settlement currency, and one sample per payment confirmed that day: milliseconds from its invoice's
//!   creation to its confirmation (median and p95 by nearest rank, [`percentile`]).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use events::money::{Amount, CryptoAsset, Currency, Decimal, Percentage};
use events::{EventType, InvoiceId, MerchantId, PaymentId, SettlementId};

use crate::plan::{DEFAULT_EXPIRY_MINUTES, InvoicePlan, Plan, Settlements};

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
    /// The reinstatement, once it happened.
    pub reinstated_at: Option<DateTime<Utc>>,
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
    /// Payment methods chosen per (asset code, network name) (`PaymentMethodChosen`).
    pub methods_chosen: BTreeMap<(String, String), i64>,
    /// Checkouts abandoned because the customer left the page (`CheckoutAbandoned`, `left_page`).
    pub checkouts_abandoned_left: i64,
    /// Checkouts abandoned because the invoice expired with the page open (`expired`).
    pub checkouts_abandoned_expired: i64,
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
                reinstated_at: m.reinstated_at().filter(|r| *r <= h),
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
        // The rest of the checkout page's story, as the plan decides it (InvoicePlan::journey).
        let merchant = plan.merchants[i.merchant].id;
        let journey = i.journey();
        if let Some(at) = journey.method_chosen.filter(|at| *at <= h) {
            *t.daily
                .entry((merchant, day(at)))
                .or_default()
                .methods_chosen
                .entry((
                    i.asset.code().to_string(),
                    events::integration::network_name(i.network).to_string(),
                ))
                .or_default() += 1;
        }
        if let Some((at, _, reason)) = journey.abandoned.filter(|(at, _, _)| *at <= h) {
            let daily = t.daily.entry((merchant, day(at))).or_default();
            match reason {
                events::analytics::AbandonReason::LeftPage => daily.checkouts_abandoned_left += 1,
                events::analytics::AbandonReason::Expired => daily.checkouts_abandoned_expired += 1,
            }
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

    // Settlement and balance: the generator's own (Generated mode) or the service's (ByService mode).
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
        let amounts = (dec(s.gross), dec(s.split.fee), dec(s.split.net));
        settle(
            t, s.id, i.id, merchant, status, s.currency, amounts, completed,
        );
    }
    if let Some(s) = i.service_settlement.as_ref().filter(|s| by_h(&s.at)) {
        let completed = s.completed_at.filter(by_h);
        history += 1 + i64::from(s.held) + i64::from(completed.is_some());
        let status = if completed.is_some() {
            "completed"
        } else {
            "retrying"
        };
        let amounts = (dec(s.gross), dec(s.split.fee), dec(s.split.net));
        settle(
            t, s.id, i.id, merchant, status, s.currency, amounts, completed,
        );
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

/// A settlement in `status` at the horizon: its row, its merchant's balance, and its day's fees and net when
/// `completed` (by then).
#[allow(clippy::too_many_arguments)]
fn settle(
    t: &mut Truth,
    id: SettlementId,
    invoice: InvoiceId,
    merchant: MerchantId,
    status: &'static str,
    currency: Currency,
    (gross, fee, net): (Decimal, Decimal, Decimal),
    completed: Option<DateTime<Utc>>,
) {
    let currency = currency.code().to_string();
    t.settlements.insert(
        id,
        SettlementTruth {
            invoice_id: invoice,
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

/// A settlement the settlement service must have produced by the horizon ([`Settlements::ByService`] mode):
/// what its events must say and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSettlement {
    /// `SettlementId::for_invoice(invoice_id)`.
    pub settlement_id: SettlementId,
    pub invoice_id: InvoiceId,
    pub merchant_id: MerchantId,
    /// T: when the invoice became settleable (the later of its `InvoicePaid` and the last counted
    /// `PaymentConfirmed`); `SettlementCreated` then.
    pub due_at: DateTime<Utc>,
    /// Held at T for a suspended merchant: `SettlementFailed { reason: merchant_suspended, will_retry: true,
    /// failed_at: T }` at T.
    pub held: bool,
    /// At the horizon: `completed`, or `retrying` (held, the merchant not reinstated by then).
    pub status: &'static str,
    /// `SettlementCompleted`'s `settled_at` (and time): T, or the reinstatement for a held settlement.
    pub settled_at: Option<DateTime<Utc>>,
    pub currency: Currency,
    /// The invoice's `total_amount`.
    pub gross_amount: Amount,
    pub platform_fee_amount: Amount,
    pub net_amount: Amount,
    pub fee_percentage: Percentage,
    /// Crypto received beyond what was due (`InvoicePaid.overpaid_amount`), owed back to the customer; not part
    /// of any settlement event.
    pub overpaid_crypto: Amount,
    pub crypto_currency: CryptoAsset,
    /// The settlement events by the horizon, in order, with their times.
    pub events: Vec<(EventType, DateTime<Utc>)>,
}

/// Crypto received for an invoice that is not paid at the horizon — expired, cancelled, or still partially
/// paid — and so owed back to the customer (nothing of it is settled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedBack {
    pub invoice_id: InvoiceId,
    pub merchant_id: MerchantId,
    /// The invoice's status at the horizon: `expired`, `cancelled` or `partially_paid`.
    pub status: &'static str,
    pub crypto_currency: CryptoAsset,
    /// Received and not failed.
    pub amount: Amount,
}

/// The settlements the settlement service must have produced by `plan`'s horizon, by due time then invoice.
/// Empty unless the plan is in [`Settlements::ByService`] mode (in `Generated` mode the generator settles).
pub fn expected_settlements(plan: &Plan) -> Vec<ExpectedSettlement> {
    let h = plan.horizon;
    let mut out: Vec<ExpectedSettlement> = plan
        .invoices
        .iter()
        .filter_map(|i| {
            let s = i.service_settlement.as_ref().filter(|s| s.at <= h)?;
            let settled_at = s.completed_at.filter(|at| *at <= h);
            let mut events = vec![(EventType::SettlementCreated, s.at)];
            if s.held {
                events.push((EventType::SettlementFailed, s.at));
            }
            if let Some(at) = settled_at {
                events.push((EventType::SettlementCompleted, at));
            }
            Some(ExpectedSettlement {
                settlement_id: s.id,
                invoice_id: i.id,
                merchant_id: plan.merchants[i.merchant].id,
                due_at: s.at,
                held: s.held,
                status: if settled_at.is_some() {
                    "completed"
                } else {
                    "retrying"
                },
                settled_at,
                currency: s.currency,
                gross_amount: s.gross,
                platform_fee_amount: s.split.fee,
                net_amount: s.split.net,
                fee_percentage: s.fee_percentage,
                overpaid_crypto: i.overpaid(),
                crypto_currency: i.asset,
                events,
            })
        })
        .collect();
    debug_assert!(out.is_empty() || plan.scenario.settlements == Settlements::ByService);
    out.sort_by_key(|s| (s.due_at, s.invoice_id));
    out
}

/// The invoices not paid at `plan`'s horizon that received crypto (expired, cancelled or partially paid), with
/// what is owed back to their customers, by invoice id. Either mode.
pub fn owed_back(plan: &Plan) -> Vec<OwedBack> {
    let h = plan.horizon;
    let mut out: Vec<OwedBack> = plan
        .invoices
        .iter()
        .filter(|i| i.paid.as_ref().is_none_or(|p| p.at > h))
        .filter_map(|i| {
            let amount = i.received_at(h);
            if amount.is_zero() {
                return None;
            }
            let status = if i.cancelled.as_ref().is_some_and(|c| c.at <= h) {
                "cancelled"
            } else if i.expired_at.is_some_and(|at| at <= h) {
                "expired"
            } else {
                "partially_paid"
            };
            Some(OwedBack {
                invoice_id: i.id,
                merchant_id: plan.merchants[i.merchant].id,
                status,
                crypto_currency: i.asset,
                amount,
            })
        })
        .collect();
    out.sort_by_key(|o| o.invoice_id);
    out
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

    /// An event without its identity (event id, causation): what it says, about what, when.
    fn content(e: &events::Envelope) -> (EventType, String, DateTime<Utc>, String) {
        (
            e.event_type(),
            e.aggregate_id().to_string(),
            e.timestamp(),
            serde_json::to_string(e.data()).unwrap(),
        )
    }

    fn is_settlement(t: EventType) -> bool {
        t.aggregate_type() == events::AggregateType::Settlement
    }

    #[test]
    fn by_service_the_generator_emits_no_settlement_event_and_nothing_else_changes() {
        let generated = crate::generate(&Scenario::new(5, 25, 400));
        let by_service = crate::generate(&Scenario::new(5, 25, 400).settled_by_service());
        assert!(
            generated
                .events
                .iter()
                .any(|e| is_settlement(e.event_type()))
        );
        assert!(
            !by_service
                .events
                .iter()
                .any(|e| is_settlement(e.event_type()))
        );
        // The aimed suspensions' merchants: their suspension and reinstatement are the only additions.
        let aimed: std::collections::BTreeSet<String> = by_service
            .plan
            .merchants
            .iter()
            .filter(|m| m.suspension.as_ref().is_some_and(|s| s.by_service_only))
            .map(|m| m.id.to_string())
            .collect();
        assert!(aimed.len() >= 6, "{aimed:?}");
        let added = |e: &events::Envelope| {
            matches!(
                e.event_type(),
                EventType::MerchantSuspended | EventType::MerchantReinstated
            ) && aimed.contains(&e.partition_key())
        };
        let mut expected: Vec<_> = generated
            .events
            .iter()
            .filter(|e| !is_settlement(e.event_type()))
            .map(content)
            .collect();
        let mut actual: Vec<_> = by_service
            .events
            .iter()
            .filter(|e| !added(e))
            .map(content)
            .collect();
        expected.sort();
        actual.sort();
        assert_eq!(actual, expected);
        assert!(by_service.events.iter().any(added));
        assert_eq!(by_service.analytics, generated.analytics);
    }

    #[test]
    fn by_service_the_truth_differs_from_generated_exactly_where_settlements_do() {
        let scenario = Scenario::new(6, 25, 400);
        let generated = crate::generate(&scenario);
        let by_service = crate::generate(&scenario.clone().settled_by_service());
        let (g, s) = (&generated.truth, &by_service.truth);

        // Payments, daily counts and confirmation times, gross volumes: untouched by settlements.
        assert_eq!(s.payments, g.payments);
        assert_eq!(s.daily, g.daily);
        let gross = |t: &Truth| -> Vec<_> {
            t.daily_money
                .iter()
                .filter(|(_, m)| !m.gross_volume.is_zero())
                .map(|(k, m)| (k.clone(), m.gross_volume))
                .collect()
        };
        assert_eq!(gross(s), gross(g));

        // Invoices: identical but for their history, which differs by the settlement events each mode emits.
        let settlement_events = |f: &crate::Flows| {
            let mut per_invoice: BTreeMap<InvoiceId, i64> = BTreeMap::new();
            for e in f.events.iter().filter(|e| is_settlement(e.event_type())) {
                *per_invoice.entry(e.invoice_id().unwrap()).or_default() += 1;
            }
            per_invoice
        };
        let expected = by_service.expected_settlements();
        let mut by_service_events: BTreeMap<InvoiceId, i64> = BTreeMap::new();
        for x in &expected {
            by_service_events.insert(x.invoice_id, x.events.len() as i64);
        }
        let generated_events = settlement_events(&generated);
        assert_eq!(s.invoices.len(), g.invoices.len());
        for (id, a) in &g.invoices {
            let b = &s.invoices[id];
            assert_eq!(
                InvoiceTruth {
                    history: a.history,
                    ..b.clone()
                },
                *a
            );
            let n = |m: &BTreeMap<InvoiceId, i64>| m.get(id).copied().unwrap_or(0);
            assert_eq!(
                b.history - a.history,
                n(&by_service_events) - n(&generated_events),
                "{id}"
            );
        }
        assert_ne!(by_service_events, generated_events);

        // Merchants: only the aimed suspensions differ.
        for (m, plan) in by_service.plan.merchants.iter().enumerate() {
            let (a, b) = (&g.merchants[&plan.id], &s.merchants[&plan.id]);
            let aimed = plan.suspension.as_ref().is_some_and(|x| x.by_service_only);
            if !aimed {
                assert_eq!(a, b, "merchant {m}");
            } else {
                assert_eq!(a.status, "active");
                assert_eq!(
                    MerchantTruth {
                        status: "active",
                        reinstated_at: None,
                        ..b.clone()
                    },
                    *a
                );
            }
        }

        // Settlements: exactly the service's, with the policy's ids; amounts as the generator computes them.
        let ids: Vec<SettlementId> = expected.iter().map(|x| x.settlement_id).collect();
        assert_eq!(
            s.settlements
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            ids.iter().copied().collect()
        );
        let generated_by_invoice: BTreeMap<InvoiceId, &SettlementTruth> =
            g.settlements.values().map(|x| (x.invoice_id, x)).collect();
        let mut compared = 0;
        for x in &expected {
            assert_eq!(x.settlement_id, SettlementId::for_invoice(x.invoice_id));
            let truth = &s.settlements[&x.settlement_id];
            assert_eq!(truth.status, x.status);
            assert_eq!(truth.net_amount, dec(x.net_amount));
            if let Some(other) = generated_by_invoice.get(&x.invoice_id) {
                compared += 1;
                assert_eq!(
                    (
                        &truth.currency,
                        truth.gross_amount,
                        truth.platform_fee_amount,
                        truth.net_amount
                    ),
                    (
                        &other.currency,
                        other.gross_amount,
                        other.platform_fee_amount,
                        other.net_amount
                    )
                );
            }
        }
        assert!(compared > 100, "{compared}");
        for status in ["completed", "retrying"] {
            assert!(s.settlements.values().any(|x| x.status == status));
        }
        assert!(
            s.settlements
                .values()
                .all(|x| x.status == "completed" || x.status == "retrying")
        );

        // Balances and daily fees and net: the sums over the service's settlements.
        let mut balances: BTreeMap<(MerchantId, String), BalanceTruth> = BTreeMap::new();
        let mut money: BTreeMap<(MerchantId, NaiveDate, String), (Decimal, Decimal)> =
            BTreeMap::new();
        for x in &expected {
            let b = balances
                .entry((x.merchant_id, x.currency.code().to_string()))
                .or_default();
            let (gross, fee, net) = (
                dec(x.gross_amount),
                dec(x.platform_fee_amount),
                dec(x.net_amount),
            );
            match x.settled_at {
                Some(at) => {
                    b.settled_gross += gross;
                    b.settled_fees += fee;
                    b.settled_net += net;
                    b.settlements_completed += 1;
                    let m = money
                        .entry((x.merchant_id, day(at), x.currency.code().to_string()))
                        .or_default();
                    m.0 += fee;
                    m.1 += net;
                }
                None => b.pending_net += net,
            }
        }
        assert_eq!(s.balances, balances);
        let fees_and_net: BTreeMap<_, _> = s
            .daily_money
            .iter()
            .filter(|(_, m)| !(m.fees.is_zero() && m.net_settled.is_zero()))
            .map(|(k, m)| (k.clone(), (m.fees, m.net_settled)))
            .collect();
        assert_eq!(fees_and_net, money);
    }

    #[test]
    fn expected_settlements_and_owed_back_follow_the_policy() {
        let flows = crate::generate(&Scenario::new(7, 25, 400).settled_by_service());
        let h = flows.plan.horizon;
        let expected = flows.expected_settlements();
        let held: Vec<_> = expected.iter().filter(|x| x.held).collect();
        assert!(held.iter().any(|x| x.status == "completed"));
        assert!(held.iter().any(|x| x.status == "retrying"));
        for x in &expected {
            let i = flows
                .plan
                .invoices
                .iter()
                .find(|i| i.id == x.invoice_id)
                .unwrap();
            assert!(x.due_at <= h);
            assert_eq!(x.crypto_currency, i.asset);
            let kinds: Vec<EventType> = x.events.iter().map(|(t, _)| *t).collect();
            match (x.held, x.settled_at) {
                (false, Some(at)) => {
                    assert_eq!(at, x.due_at);
                    assert_eq!(
                        kinds,
                        [EventType::SettlementCreated, EventType::SettlementCompleted]
                    );
                }
                (true, Some(at)) => {
                    assert!(at > x.due_at && at <= h);
                    assert_eq!(
                        kinds,
                        [
                            EventType::SettlementCreated,
                            EventType::SettlementFailed,
                            EventType::SettlementCompleted
                        ]
                    );
                }
                (true, None) => {
                    assert_eq!(x.status, "retrying");
                    assert_eq!(
                        kinds,
                        [EventType::SettlementCreated, EventType::SettlementFailed]
                    );
                }
                (false, None) => panic!("a settlement not held completes at once"),
            }
            let split =
                events::money::platform_fee(x.gross_amount, x.fee_percentage, x.currency).unwrap();
            assert_eq!(
                (split.fee, split.net),
                (x.platform_fee_amount, x.net_amount)
            );
            assert_eq!(x.overpaid_crypto.is_zero(), i.kind != crate::Kind::Overpaid);
        }
        assert!(expected.iter().any(|x| !x.overpaid_crypto.is_zero()));

        let owed = flows.owed_back();
        for status in ["expired", "cancelled", "partially_paid"] {
            assert!(owed.iter().any(|o| o.status == status), "{status}");
        }
        for o in &owed {
            let t = &flows.truth.invoices[&o.invoice_id];
            assert_eq!(t.status, o.status);
            assert_eq!(t.amount_paid, dec(o.amount));
            assert!(!expected.iter().any(|x| x.invoice_id == o.invoice_id));
        }
        // Generated mode: the generator settles; nothing is expected of the service.
        assert!(
            crate::generate(&Scenario::new(7, 25, 400))
                .expected_settlements()
                .is_empty()
        );
    }

    #[test]
    fn the_expected_settlement_events_complete_the_by_service_history() {
        let flows = crate::generate(&Scenario::new(8, 25, 400).settled_by_service());
        let all = flows.events_with_expected_settlements();
        let settlement_events = all.len() - flows.events.len();
        assert_eq!(
            settlement_events,
            flows
                .expected_settlements()
                .iter()
                .map(|x| x.events.len())
                .sum::<usize>()
        );
        let mut last: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for e in &all {
            assert_eq!(&events::decode(&events::encode(e).unwrap()).unwrap(), e);
            if let Some(previous) = last.insert(e.partition_key(), e.timestamp()) {
                assert!(previous <= e.timestamp());
            }
        }
        let ids: std::collections::HashSet<_> = all.iter().map(|e| e.event_id()).collect();
        assert_eq!(ids.len(), all.len());
        let about_invoices = all.iter().filter(|e| e.invoice_id().is_some()).count() as i64;
        assert_eq!(
            flows
                .truth
                .invoices
                .values()
                .map(|i| i.history)
                .sum::<i64>(),
            about_invoices
        );
        // Deterministic ids: the same again.
        assert_eq!(flows.events_with_expected_settlements(), all);
        let generated = crate::generate(&Scenario::new(8, 25, 400));
        assert_eq!(
            generated.events_with_expected_settlements(),
            generated.events
        );
    }
}
