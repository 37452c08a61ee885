//! Scanner mode: the generator plays the blockchain instead of the payment processor. For every planned payment
//! it writes what a chain scanner reports on `crypto-checkout.integration-events` (decision 0034) —
//! `TransactionObserved`, `ConfirmationsChanged`, `TransactionDropped` — and leaves the payment events and
//! `InvoicePaid` to the real payments service; the truth says what that service, and everything downstream of it,
//! must have produced.
//!
//! Guarantees:
//! - [`ingest`] rewrites a plan (no draw from the generator's randomness, so the other draws of a seed are those
//!   of [`crate::plan::plan`]) into what the payments service realises from the reports, by the rules of decision
//!   0034 — not by running them: payment ids are the service's derivation from the output
//!   ([`events::integration::payment_id`], output index 0); a zero-confirmation invoice's payment confirms at its
//!   sighting (and still fails if it is dropped later); an invoice is paid at the first confirmation after which its confirmed, not failed payments cover
//!   what is due (never when cancelled by then), `paid_at` being the last counted detection, late when after
//!   `expires_at`. Some failing payments (chosen from their ids) are mined once, then reorganised out.
//! - [`reports`] are valid records in observation time order up to the horizon, keyed (`source`) per network
//!   (`scanner:tron`, …): per payment, the mempool sighting at its detection, a `ConfirmationsChanged` per planned
//!   confirmation step and at the required count, the drop (reason `dropped`, `double_spent`, `reorganized`) at its
//!   failure. Chosen from the payment ids, some payments survive a reorganisation (their count dips by one and
//!   climbs back before confirming) and some have every report sent twice: neither changes what the service may
//!   emit, so the truth is unaffected.
//! - [`phases`] cuts the generator's domain events and the reports into phases such that feeding each phase's events
//!   (through the outbox), then its reports, waiting for the payments service in between, puts every invoice's and
//!   merchant's events on the domain topic in the order they happened ([`crate::harness::Bus::feed_scanned`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use events::integration::{
    ChainOutput, ConfirmationsChanged, DropReason, IntegrationData, IntegrationEvent,
    TransactionDropped, TransactionObserved, network_name, payment_id,
};
use events::payload::{Network, PaymentFailureReason};
use events::{AggregateId, Envelope, EventId, InvoiceId, MerchantId, PaymentId};
use uuid::Uuid;

use crate::plan::{InvoicePlan, PaidPlan, PaymentPlan, Plan, chain};

/// Namespace of the simulated reports' event ids. Never change it.
pub const REPORT_NAMESPACE: Uuid = Uuid::from_u128(0x5ca7_7e12_0b5e_4c3d_9a1f_6e2b_8d40_c715);

/// The scanner reporting on `network` (`scanner:tron`).
pub fn source(network: Network) -> String {
    format!("scanner:{}", network_name(network))
}

/// The deterministic choices of a payment, from its id's last byte.
fn choice(p: &PaymentPlan) -> u8 {
    p.id.as_uuid().as_bytes()[15]
}

const REORGANIZED_OUT: u8 = 1;
const SURVIVES_REORG: u8 = 2;
const DUPLICATED: u8 = 4;

/// Rewrites `plan`'s payments and `InvoicePaid` into what the payments service realises from the scanner's
/// reports (see the module header). Called by [`crate::plan::plan_scanned`] before the settlement policy.
pub(crate) fn ingest(plan: &mut Plan) {
    for invoice in &mut plan.invoices {
        let (block_seconds, _, base_height) = chain(invoice.network);
        let block = TimeDelta::seconds(block_seconds);
        for p in &mut invoice.payments {
            p.id =
                PaymentId::from_uuid(payment_id(invoice.network, p.transaction_hash.as_str(), 0))
                    .expect("v5 ids are never nil");
            if invoice.required_confirmations == 0 {
                // Zero confirmations accept the sighting: confirmed at once, even if it fails later.
                p.confirmed_at = Some(p.detected_at);
                continue;
            }
            if let Some((failed_at, _)) = p.failed
                && choice(p) & REORGANIZED_OUT != 0
                && p.detected_at + block + TimeDelta::seconds(1) < failed_at
            {
                let mined = p.detected_at + block;
                p.block_height =
                    Some(base_height + (mined.timestamp() / block_seconds) as u64 % 1_000_000);
                p.confirming = vec![(1, mined)];
                p.failed = Some((failed_at, PaymentFailureReason::ChainReorganization));
            }
        }
        let paid = service_paid(invoice);
        debug_assert_eq!(
            paid.is_some(),
            invoice.paid.is_some(),
            "{:?}: the service pays what the plan pays",
            invoice.kind
        );
        invoice.paid = paid;
    }
}

/// When the payments service pays `i`: at the first confirmation after which its confirmed, not failed payments
/// cover what is due, unless cancelled by then.
fn service_paid(i: &InvoicePlan) -> Option<PaidPlan> {
    let mut times: Vec<DateTime<Utc>> = i.payments.iter().filter_map(|p| p.confirmed_at).collect();
    times.sort();
    for t in times {
        if i.cancelled.as_ref().is_some_and(|c| c.at <= t) {
            return None;
        }
        let counted: Vec<&PaymentPlan> = i
            .payments
            .iter()
            .filter(|p| p.confirmed_at.is_some_and(|c| c <= t))
            .filter(|p| p.failed.is_none_or(|(f, _)| f > t))
            .collect();
        let sum = counted.iter().fold(events::money::Amount::ZERO, |s, p| {
            s.checked_add(p.amount).expect("amounts stay small")
        });
        if sum >= i.due {
            let paid_at = counted
                .iter()
                .map(|p| p.detected_at)
                .max()
                .expect("counted payments");
            return Some(PaidPlan {
                at: t,
                paid_at,
                late: paid_at > i.expires_at,
            });
        }
    }
    None
}

/// The scanners' reports of `plan`'s payments up to its horizon, in observation time order (see the module
/// header). Meant for a plan of [`crate::plan::plan_scanned`]; for another plan they are what a chain would show
/// of its payments, but the truth does not describe what a payments service makes of them.
pub fn reports(plan: &Plan) -> Vec<IntegrationEvent> {
    let mut all: Vec<(DateTime<Utc>, usize, usize, IntegrationData, bool)> = Vec::new();
    let mut n = 0;
    for i in &plan.invoices {
        for p in &i.payments {
            for (step, (at, data)) in timeline(i, p).into_iter().enumerate() {
                all.push((at, n, step, data, choice(p) & DUPLICATED != 0));
            }
            n += 1;
        }
    }
    all.sort_by_key(|(at, n, step, _, _)| (*at, *n, *step));
    let mut out = Vec::with_capacity(all.len());
    for (at, _, _, data, twice) in all {
        if at > plan.horizon {
            continue;
        }
        let output = data.output();
        let id = payment_id(output.network, output.transaction_hash.as_str(), 0);
        let name = format!(
            "{id}:{}:{}",
            data.record_type(),
            events::time::format_utc(&at)
        );
        let report = IntegrationEvent {
            event_id: EventId::derived(REPORT_NAMESPACE, name.as_bytes()),
            source: source(output.network),
            observed_at: at,
            data,
        };
        if twice {
            out.push(report.clone());
        }
        out.push(report);
    }
    out
}

/// One payment's reports, in chain order.
fn timeline(i: &InvoicePlan, p: &PaymentPlan) -> Vec<(DateTime<Utc>, IntegrationData)> {
    let output = ChainOutput {
        network: i.network,
        crypto_currency: i.asset,
        transaction_hash: p.transaction_hash.clone(),
        output_index: 0,
        address: i.address.clone(),
        amount: p.amount,
    };
    let changed = |k: u32, height: Option<u64>, at| {
        (
            at,
            IntegrationData::ConfirmationsChanged(ConfirmationsChanged {
                output: output.clone(),
                block_height: (k > 0).then_some(height).flatten(),
                confirmations: k,
            }),
        )
    };
    let mut out = vec![(
        p.detected_at,
        IntegrationData::TransactionObserved(TransactionObserved {
            output: output.clone(),
            block_height: None,
            confirmations: 0,
        }),
    )];
    let mut height = p.block_height;
    for (k, at) in &p.confirming {
        out.push(changed(*k, height, *at));
    }
    if let Some(confirmed_at) = p.confirmed_at {
        if let Some(&(k, at)) = p.confirming.last()
            && choice(p) & SURVIVES_REORG != 0
        {
            // A reorganisation it survives: one confirmation fewer, re-included one block higher, back to k.
            height = height.map(|h| h + 1);
            out.push(changed(k - 1, height, at + TimeDelta::milliseconds(300)));
            out.push(changed(k, height, at + TimeDelta::milliseconds(600)));
            debug_assert!(at + TimeDelta::milliseconds(600) < confirmed_at);
        }
        if i.required_confirmations > 0 {
            out.push(changed(i.required_confirmations, height, confirmed_at));
        }
    }
    if let Some((at, reason)) = p.failed {
        let reason = match reason {
            PaymentFailureReason::ChainReorganization => DropReason::Reorganized,
            PaymentFailureReason::DoubleSpent => DropReason::DoubleSpent,
            _ => DropReason::Dropped,
        };
        out.push((
            at,
            IntegrationData::TransactionDropped(TransactionDropped {
                output,
                reason,
                details: None,
            }),
        ));
    }
    out
}

/// What to feed in one step: the generator's events first (through the outbox), then the scanners' reports.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub events: Vec<Envelope>,
    pub reports: Vec<IntegrationEvent>,
}

/// Cuts `events` (the generator's, [`crate::emit::domain_events_scanned`]) and `reports` ([`reports`]) of `plan`
/// into phases: merged in time order (an event before a report at the same instant), a new phase begins when an
/// event concerns an invoice, or is a merchant's event about a merchant, that a report of the current phase
/// concerns — so feeding each phase's events before its reports keeps every invoice's and merchant's order.
pub fn phases(plan: &Plan, events: &[Envelope], reports: &[IntegrationEvent]) -> Vec<Phase> {
    let owner: HashMap<(Network, String), (InvoiceId, MerchantId)> = plan
        .invoices
        .iter()
        .map(|i| {
            (
                (i.network, i.address.canonical(i.network)),
                (i.id, plan.merchants[i.merchant].id),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut phase = Phase::default();
    let (mut invoices, mut merchants) = (HashSet::new(), HashSet::new());
    let (mut e, mut r) = (0, 0);
    while e < events.len() || r < reports.len() {
        let take_event = match (events.get(e), reports.get(r)) {
            (Some(ev), Some(rep)) => ev.timestamp() <= rep.observed_at,
            (Some(_), None) => true,
            _ => false,
        };
        if take_event {
            let ev = &events[e];
            e += 1;
            let conflict = match ev.aggregate_id() {
                AggregateId::Merchant(m) => merchants.contains(&m),
                _ => ev.invoice_id().is_some_and(|i| invoices.contains(&i)),
            };
            if conflict {
                out.push(std::mem::take(&mut phase));
                invoices.clear();
                merchants.clear();
            }
            phase.events.push(ev.clone());
        } else {
            let rep = &reports[r];
            r += 1;
            let o = rep.data.output();
            let (invoice, merchant) = owner[&(o.network, o.address.canonical(o.network))];
            invoices.insert(invoice);
            merchants.insert(merchant);
            phase.reports.push(rep.clone());
        }
    }
    if !phase.events.is_empty() || !phase.reports.is_empty() {
        out.push(phase);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Kind, Scenario, plan, plan_scanned};

    #[test]
    fn the_scanned_plan_keeps_the_draws_and_pays_what_the_plan_pays() {
        let scenario = Scenario::new(5, 10, 600).settled_by_service();
        let (a, b) = (plan(&scenario), plan_scanned(&scenario));
        let mut reorganized = 0;
        for (x, y) in a.invoices.iter().zip(&b.invoices) {
            assert_eq!((x.id, x.total, x.kind), (y.id, y.total, y.kind));
            assert_eq!(x.paid.is_some(), y.paid.is_some(), "{:?}", x.kind);
            for (p, q) in x.payments.iter().zip(&y.payments) {
                assert_eq!((p.detected_at, p.amount), (q.detected_at, q.amount));
                assert_eq!(
                    q.id.as_uuid(),
                    payment_id(y.network, q.transaction_hash.as_str(), 0)
                );
                reorganized += usize::from(matches!(
                    q.failed,
                    Some((_, PaymentFailureReason::ChainReorganization))
                ));
            }
            if let Some(paid) = &y.paid {
                // Paid at a confirmation, never before the covering detection, and settleable at once.
                assert!(paid.at >= x.paid.as_ref().unwrap().paid_at);
                assert_eq!(paid.paid_at, x.paid.as_ref().unwrap().paid_at);
                assert_eq!(y.settleable_at(), Some(paid.at));
                assert_eq!(y.overpaid(), x.overpaid());
            }
        }
        assert!(reorganized >= 3, "{reorganized} reorganised out");
        assert!(
            b.invoices
                .iter()
                .any(|i| i.kind == Kind::PaidLate && i.paid.is_some())
        );
    }

    #[test]
    fn reports_are_valid_ordered_and_cover_every_report_kind() {
        let p = plan_scanned(&Scenario::new(5, 10, 600).settled_by_service());
        let all = reports(&p);
        assert_eq!(all, reports(&p), "deterministic");
        let mut kinds = HashSet::new();
        for w in all.windows(2) {
            assert!(w[0].observed_at <= w[1].observed_at);
        }
        let mut duplicates = 0;
        let mut dips = 0;
        let mut last: HashMap<Uuid, u32> = HashMap::new();
        for (n, r) in all.iter().enumerate() {
            let bytes = r.encode().expect("valid");
            assert_eq!(IntegrationEvent::decode(&bytes).unwrap(), *r);
            assert!(r.observed_at <= p.horizon);
            kinds.insert(match &r.data {
                IntegrationData::TransactionDropped(d) => format!("{:?}", d.reason),
                d => d.record_type().to_string(),
            });
            duplicates += usize::from(n > 0 && all[n - 1] == *r);
            let o = r.data.output();
            if let Some((_, k)) = r.data.confirmations() {
                let id = payment_id(o.network, o.transaction_hash.as_str(), 0);
                if last.insert(id, k).is_some_and(|before| before > k) {
                    dips += 1;
                }
            }
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(duplicates > 10 && dips > 10, "{duplicates} {dips}");
    }

    #[test]
    fn phases_keep_every_invoice_and_merchant_in_order() {
        let p = plan_scanned(&Scenario::new(5, 10, 300).settled_by_service());
        let events = crate::emit::domain_events_scanned(&p);
        let all = reports(&p);
        let cut = phases(&p, &events, &all);
        assert_eq!(
            cut.iter().map(|c| c.events.len()).sum::<usize>(),
            events.len()
        );
        assert_eq!(
            cut.iter().map(|c| c.reports.len()).sum::<usize>(),
            all.len()
        );
        assert!(cut.len() < 300, "{} phases", cut.len());
        assert!(
            events.iter().all(|e| !matches!(
                e.event_type(),
                events::EventType::InvoicePaid
                    | events::EventType::PaymentDetected
                    | events::EventType::PaymentConfirmed
                    | events::EventType::PaymentFailed
                    | events::EventType::PaymentConfirming
            )),
            "the payments service's events are not the generator's"
        );
    }

    /// `Flows::expected_domain_events` in scanner mode: the generator's own events, plus exactly the payment events
    /// and `InvoicePaid` the rewritten plan gives the payments service (by the horizon) and the settlement events
    /// the truth expects — counted from the plan here, by type and aggregate.
    #[test]
    fn the_expected_domain_events_are_the_generators_the_payments_services_and_the_settlements() {
        use events::EventType as T;
        let flows = crate::generate_scanned(&Scenario::new(5, 10, 300).settled_by_service());
        let h = flows.plan.horizon;
        let mut left: HashMap<(T, Uuid), usize> = HashMap::new();
        for e in flows.expected_domain_events() {
            assert!(e.timestamp() <= h);
            *left
                .entry((e.event_type(), e.aggregate_id().as_uuid()))
                .or_default() += 1;
        }
        for e in &flows.events {
            let n = left
                .get_mut(&(e.event_type(), e.aggregate_id().as_uuid()))
                .filter(|n| **n > 0)
                .unwrap_or_else(|| panic!("{:?} of the generator not expected", e.event_type()));
            *n -= 1;
        }
        let count = |t: T| {
            left.iter()
                .filter(|((x, _), _)| *x == t)
                .map(|(_, n)| *n)
                .sum::<usize>()
        };
        let payments: Vec<&PaymentPlan> = flows
            .plan
            .invoices
            .iter()
            .flat_map(|i| &i.payments)
            .collect();
        let by = |at: &DateTime<Utc>| *at <= h;
        assert_eq!(
            count(T::PaymentDetected),
            payments.iter().filter(|p| by(&p.detected_at)).count()
        );
        assert_eq!(
            count(T::PaymentConfirming),
            payments
                .iter()
                .flat_map(|p| &p.confirming)
                .filter(|(_, at)| by(at))
                .count()
        );
        assert_eq!(
            count(T::PaymentConfirmed),
            payments
                .iter()
                .filter(|p| p.confirmed_at.is_some_and(|a| by(&a)))
                .count()
        );
        assert_eq!(
            count(T::PaymentFailed),
            payments
                .iter()
                .filter(|p| p.failed.is_some_and(|(a, _)| by(&a)))
                .count()
        );
        assert_eq!(
            count(T::InvoicePaid),
            flows
                .plan
                .invoices
                .iter()
                .filter(|i| i.paid.as_ref().is_some_and(|p| by(&p.at)))
                .count()
        );
        let settlement_events: usize = flows
            .expected_settlements()
            .iter()
            .map(|s| s.events.len())
            .sum();
        assert_eq!(
            count(T::SettlementCreated)
                + count(T::SettlementCompleted)
                + count(T::SettlementFailed),
            settlement_events
        );
        assert!(settlement_events > 0 && count(T::InvoicePaid) > 10);
        let total: usize = left.values().sum();
        assert_eq!(
            total,
            [
                T::PaymentDetected,
                T::PaymentConfirming,
                T::PaymentConfirmed,
                T::PaymentFailed,
                T::InvoicePaid,
                T::SettlementCreated,
                T::SettlementCompleted,
                T::SettlementFailed
            ]
            .map(count)
            .iter()
            .sum::<usize>(),
            "nothing else"
        );
    }
}
