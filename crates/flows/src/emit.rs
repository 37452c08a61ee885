//! Plan → the events the platform would have written to its outbox, and the checkout page's analytics events.
//!
//! Guarantees: [`domain_events`] returns valid [`Envelope`]s (built through the contract's constructors) in
//! commit order — sorted by time, and for events of one partition key in the order they happened — with
//! deterministic ids, causation (each event names the event that caused it, correlation inherited) and
//! metadata as the real producers would set it (API key, dashboard user, back office, or the system component
//! with its `source`). Nothing after the plan's horizon is emitted. Settlement events only in
//! [`crate::plan::Settlements::Generated`] mode; in `ByService` mode the settlement service writes them.
//!
//! [`analytics_records`] returns the checkout page's records of `crypto-checkout.analytics-events` —
//! `CheckoutViewed`, and `PaymentMethodChosen` / `CheckoutAbandoned` as [`InvoicePlan::journey`] decides —, keyed
//! by the UTC date (the spec's "Date partition"), in the wire format documented in
//! `docs/decisions/0011-analytics.md`. The ids of the latter two are the producer API's derived ids
//! (`outbox::checkout::method_id`, `abandon_id`); the views' ids and order are those of the first version.

use chrono::{DateTime, Utc};
use events::money::Amount;
use events::payload::*;
use events::{
    Actor, ActorKind, AggregateId, CorrelationId, Envelope, EnvelopeParts, EventData, EventId,
    Metadata,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::plan::{InvoicePlan, MerchantPlan, Plan, hex, v7};

/// One record for `crypto-checkout.analytics-events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsRecord {
    /// The UTC date, `YYYY-MM-DD`.
    pub key: String,
    /// The JSON value.
    pub value: Vec<u8>,
    pub event_id: uuid::Uuid,
    pub at: DateTime<Utc>,
}

struct Emitter {
    rng: StdRng,
    /// For the events added after the generator's first version (reinstatements): drawing their ids and
    /// request ids from the main stream would change every later event's.
    aside: StdRng,
    horizon: DateTime<Utc>,
    out: Vec<(DateTime<Utc>, Envelope)>,
    /// A scanner plays the chain ([`domain_events_scanned`]): no payment event and no `InvoicePaid` here.
    scanned: bool,
}

impl Emitter {
    /// Builds one event; kept (returned `Some`) only when it happens by the horizon.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        at: DateTime<Utc>,
        aggregate_id: AggregateId,
        data: impl Into<EventData>,
        metadata: Metadata,
        correlation: Option<CorrelationId>,
        cause: Option<&Envelope>,
    ) -> Option<Envelope> {
        let event_id = EventId::from_uuid(v7(&mut self.rng, at)).expect("non-nil");
        let envelope = Envelope::from_parts(EnvelopeParts {
            event_id,
            aggregate_id,
            event_data: data.into(),
            metadata,
            timestamp: at,
            correlation_id: correlation,
            causation_id: None,
        })
        .unwrap_or_else(|e| panic!("the generator built an invalid event: {e}"));
        let envelope = match cause {
            Some(cause) => envelope.caused_by(cause),
            None => envelope,
        };
        if at > self.horizon {
            return None;
        }
        self.out.push((at, envelope.clone()));
        Some(envelope)
    }

    fn request_id(&mut self) -> String {
        format!("req_{}", hex(&mut self.rng, 12))
    }

    /// Runs `f` drawing from the side stream instead of the main one.
    fn aside<T>(&mut self, f: impl FnOnce(&mut Emitter) -> T) -> T {
        std::mem::swap(&mut self.rng, &mut self.aside);
        let out = f(self);
        std::mem::swap(&mut self.rng, &mut self.aside);
        out
    }
}

fn system(component: &str, source: &str) -> Metadata {
    Metadata {
        source: Some(source.to_owned()),
        ..Metadata::new(Actor::new(ActorKind::System, component).expect("valid actor"))
    }
}

fn actor(kind: ActorKind, id: &str) -> Actor {
    Actor::new(kind, id).expect("valid actor")
}

/// Every domain event of the plan up to its horizon, in commit order.
pub fn domain_events(plan: &Plan) -> Vec<Envelope> {
    events_of(plan, false)
}

/// The domain events of a plan whose chain a scanner plays ([`crate::plan::plan_scanned`]): those of
/// [`domain_events`] but the payment events and `InvoicePaid`, which the payments service derives from the
/// scanner's reports ([`crate::scanner::reports`]). Settlement events (in `Generated` mode) name no cause then.
pub fn domain_events_scanned(plan: &Plan) -> Vec<Envelope> {
    events_of(plan, true)
}

fn events_of(plan: &Plan, scanned: bool) -> Vec<Envelope> {
    let mut emitter = Emitter {
        scanned,
        rng: StdRng::seed_from_u64(plan.scenario.seed ^ 0x0e0e_0e0e),
        aside: StdRng::seed_from_u64(plan.scenario.seed ^ 0x4e14_57a7),
        horizon: plan.horizon,
        out: Vec::new(),
    };
    for merchant in &plan.merchants {
        merchant_events(&mut emitter, merchant);
    }
    for invoice in &plan.invoices {
        invoice_events(&mut emitter, invoice, &plan.merchants[invoice.merchant]);
    }
    // Stable: events of one key keep the order they were emitted in, which is the order they happened.
    emitter.out.sort_by_key(|(at, _)| *at);
    emitter.out.into_iter().map(|(_, e)| e).collect()
}

fn merchant_events(e: &mut Emitter, m: &MerchantPlan) {
    let back_office = |e: &mut Emitter, admin: &str| Metadata {
        ip_address: Some("10.20.0.7".parse().expect("valid")),
        user_agent: Some("Backoffice/1.4".into()),
        request_id: Some(e.request_id()),
        ..Metadata::new(actor(ActorKind::Admin, admin))
    };
    let meta = back_office(e, "adm_onboarding");
    let created = MerchantCreated {
        business_name: m.business_name.clone(),
        default_currency: m.initial.currency,
        settlement_currency: m.initial.currency.into(),
        fee_percentage: m.fee_percentage,
        accepted_crypto_currencies: m.initial.accepted.clone(),
        speed_policy: m.initial.speed,
        contact: m.initial.contact.clone(),
    };
    e.emit(m.created_at, m.id.into(), created, meta, None, None);
    if let Some(update) = &m.update {
        let (old, new) = (&m.initial, &update.after);
        let changes = SettingsChanges {
            default_currency: (old.currency != new.currency).then_some(Change {
                old: old.currency,
                new: new.currency,
            }),
            settlement_currency: (old.currency != new.currency).then_some(Change {
                old: old.currency.into(),
                new: new.currency.into(),
            }),
            invoice_expiry_minutes: (old.expiry_minutes != new.expiry_minutes).then_some(Change {
                old: old.expiry_minutes,
                new: new.expiry_minutes,
            }),
            speed_policy: (old.speed != new.speed).then_some(Change {
                old: old.speed,
                new: new.speed,
            }),
            payment_tolerance_percentage: (old.tolerance != new.tolerance).then_some(Change {
                old: old.tolerance,
                new: new.tolerance,
            }),
            accepted_crypto_currencies: (old.accepted != new.accepted).then(|| Change {
                old: old.accepted.clone(),
                new: new.accepted.clone(),
            }),
            contact: (old.contact != new.contact).then(|| Change {
                old: old.contact.clone(),
                new: new.contact.clone(),
            }),
        };
        let meta = Metadata {
            ip_address: Some(m.ip),
            user_agent: Some("Mozilla/5.0 (Merchant Dashboard)".into()),
            request_id: Some(e.request_id()),
            ..Metadata::new(actor(ActorKind::User, &m.user))
        };
        e.emit(
            update.at,
            m.id.into(),
            SettingsUpdated { changes },
            meta,
            None,
            None,
        );
    }
    if let Some(suspension) = &m.suspension {
        let meta = back_office(e, "adm_risk");
        let details = (suspension.reason == SuspensionReason::Other)
            .then(|| "suspended by the generator".to_string());
        let suspended = MerchantSuspended {
            reason: suspension.reason,
            details,
            suspended_at: suspension.at,
        };
        e.emit(suspension.at, m.id.into(), suspended, meta, None, None);
        if let Some(at) = suspension.reinstated_at {
            e.aside(|e| {
                let meta = back_office(e, "adm_risk");
                let reinstated = MerchantReinstated {
                    reinstated_at: at,
                    details: Some("review closed".into()),
                };
                e.emit(at, m.id.into(), reinstated, meta, None, None);
            });
        }
    }
}

/// An invoice's events. In [`crate::plan::Settlements::ByService`] mode the plan has no
/// [`InvoicePlan::settlement`], so no settlement event is emitted: the settlement service writes them.
fn invoice_events(e: &mut Emitter, i: &InvoicePlan, m: &MerchantPlan) {
    let api = |e: &mut Emitter| Metadata {
        ip_address: Some(i.request.ip),
        user_agent: Some(i.request.user_agent.clone()),
        request_id: Some(e.request_id()),
        ..Metadata::new(actor(ActorKind::ApiKey, &m.api_key))
    };
    let create_meta = Metadata {
        request_id: Some(i.request.request_id.clone()),
        ..api(e)
    };
    let created = InvoiceCreated {
        merchant_id: m.id,
        total_amount: i.total,
        currency: i.currency,
        crypto_amount: i.due,
        crypto_currency: i.asset,
        expires_at: i.expires_at,
        deposit: Some(Deposit {
            network: i.network,
            address: i.address.clone(),
            required_confirmations: i.required_confirmations,
        }),
    };
    let created = e
        .emit(
            i.created_at,
            i.id.into(),
            created,
            create_meta,
            Some(i.correlation),
            None,
        )
        .expect("invoices are created before the horizon");

    // Payment and invoice events of one invoice share its partition key; emit them in time order.
    enum Step<'p> {
        Detected(&'p crate::plan::PaymentPlan),
        Confirming(&'p crate::plan::PaymentPlan, u32),
        Confirmed(&'p crate::plan::PaymentPlan),
        Failed(&'p crate::plan::PaymentPlan),
        Paid,
        Expired,
        Cancelled,
    }
    let mut steps: Vec<(DateTime<Utc>, u8, Step<'_>)> = Vec::new();
    for p in &i.payments {
        steps.push((p.detected_at, 0, Step::Detected(p)));
        for (k, at) in &p.confirming {
            steps.push((*at, 1, Step::Confirming(p, *k)));
        }
        if let Some(at) = p.confirmed_at {
            steps.push((at, 2, Step::Confirmed(p)));
        }
        if let Some((at, _)) = p.failed {
            steps.push((at, 2, Step::Failed(p)));
        }
    }
    if let Some(paid) = &i.paid {
        steps.push((paid.at, 3, Step::Paid));
    }
    if let Some(at) = i.expired_at {
        steps.push((at, 3, Step::Expired));
    }
    if let Some(c) = &i.cancelled {
        steps.push((c.at, 3, Step::Cancelled));
    }
    steps.sort_by_key(|(at, rank, _)| (*at, *rank));

    let chain_watcher = || system("chain-watcher", "blockchain-scanner");
    let mut detections: Vec<(uuid::Uuid, Envelope)> = Vec::new();
    let mut last_detection: Option<Envelope> = None;
    let mut paid_event = None;
    for (at, _, step) in steps {
        if e.scanned && !matches!(step, Step::Expired | Step::Cancelled) {
            continue; // the payments service's, from the scanner's reports
        }
        match step {
            Step::Detected(p) => {
                let coverage = match p.amount.cmp(&p.due_before) {
                    std::cmp::Ordering::Less => PaymentCoverage::Partial,
                    std::cmp::Ordering::Equal => PaymentCoverage::Full,
                    std::cmp::Ordering::Greater => PaymentCoverage::Over,
                };
                let data = PaymentDetected {
                    invoice_id: i.id,
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    network: i.network,
                    transaction_hash: p.transaction_hash.clone(),
                    amount: p.amount,
                    amount_due: p.due_before,
                    coverage,
                    late: p.late,
                    required_confirmations: i.required_confirmations,
                    detected_at: at,
                };
                if let Some(ev) =
                    e.emit(at, p.id.into(), data, chain_watcher(), None, Some(&created))
                {
                    detections.push((p.id.as_uuid(), ev.clone()));
                    last_detection = Some(ev);
                }
            }
            Step::Confirming(p, confirmations) => {
                let data = PaymentConfirming {
                    invoice_id: i.id,
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    network: i.network,
                    transaction_hash: p.transaction_hash.clone(),
                    amount: p.amount,
                    confirmations,
                    required_confirmations: i.required_confirmations,
                    block_height: p.block_height.expect("confirming payments are mined"),
                };
                let cause = cause_of(&detections, p.id.as_uuid());
                e.emit(at, p.id.into(), data, chain_watcher(), None, cause);
            }
            Step::Confirmed(p) => {
                let data = PaymentConfirmed {
                    invoice_id: i.id,
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    network: i.network,
                    transaction_hash: p.transaction_hash.clone(),
                    amount: p.amount,
                    confirmations: i.required_confirmations,
                    required_confirmations: i.required_confirmations,
                    block_height: p.block_height,
                    confirmed_at: at,
                };
                let cause = cause_of(&detections, p.id.as_uuid());
                e.emit(at, p.id.into(), data, chain_watcher(), None, cause);
            }
            Step::Failed(p) => {
                let (_, reason) = p.failed.expect("failed step of a failing payment");
                let data = PaymentFailed {
                    invoice_id: i.id,
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    network: i.network,
                    transaction_hash: p.transaction_hash.clone(),
                    amount: p.amount,
                    reason,
                    details: None,
                    failed_at: at,
                };
                let cause = cause_of(&detections, p.id.as_uuid());
                e.emit(at, p.id.into(), data, chain_watcher(), None, cause);
            }
            Step::Paid => {
                let paid = i.paid.as_ref().expect("paid step of a paid invoice");
                let counted: Vec<_> = i.payments.iter().filter(|p| p.counts_at(at)).collect();
                let total = counted.iter().fold(Amount::ZERO, |s, p| {
                    s.checked_add(p.amount).expect("small amounts")
                });
                let data = InvoicePaid {
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    crypto_amount_due: i.due,
                    crypto_amount_paid: total,
                    overpaid_amount: total.checked_sub(i.due).expect("paid in full"),
                    late_payment: paid.late,
                    payment_ids: counted.iter().map(|p| p.id).collect(),
                    paid_at: paid.paid_at,
                };
                let meta = system("payment-processor", "payment-confirmation");
                paid_event = e.emit(at, i.id.into(), data, meta, None, last_detection.as_ref());
            }
            Step::Expired => {
                let data = InvoiceExpired {
                    merchant_id: m.id,
                    crypto_currency: i.asset,
                    crypto_amount_due: i.due,
                    crypto_amount_paid: i.received_at(at),
                    expired_at: at,
                };
                let meta = system("expiry-sweeper", "expiry-sweeper");
                e.emit(at, i.id.into(), data, meta, None, Some(&created));
            }
            Step::Cancelled => {
                let c = i
                    .cancelled
                    .as_ref()
                    .expect("cancel step of a cancelled invoice");
                let meta = match c.reason {
                    CancellationReason::MerchantRequest => Metadata {
                        ip_address: Some(m.ip),
                        user_agent: Some("Mozilla/5.0 (Merchant Dashboard)".into()),
                        request_id: Some(e.request_id()),
                        ..Metadata::new(actor(ActorKind::User, &m.user))
                    },
                    _ => api(e),
                };
                let data = InvoiceCancelled {
                    merchant_id: m.id,
                    reason: c.reason,
                    details: None,
                    crypto_currency: i.asset,
                    crypto_amount_paid: i.received_at(at),
                    cancelled_at: at,
                };
                e.emit(at, i.id.into(), data, meta, None, Some(&created));
            }
        }
    }

    let settlement = match (&i.settlement, paid_event) {
        (Some(s), Some(paid_event)) => Some((s, Some(paid_event))),
        (Some(s), None) if e.scanned => Some((s, None)),
        _ => None,
    };
    if let Some((s, paid_event)) = settlement {
        let meta = || system("settlement-processor", "payment-confirmation");
        let created = SettlementCreated {
            invoice_id: i.id,
            merchant_id: m.id,
            currency: s.currency,
            gross_amount: s.gross,
            platform_fee_amount: s.split.fee,
            net_amount: s.split.net,
            fee_percentage: s.fee_percentage,
        };
        let Some(mut cause) = e.emit(
            s.created_at,
            s.id.into(),
            created,
            meta(),
            None,
            paid_event.as_ref(),
        ) else {
            return;
        };
        for (at, reason, will_retry) in &s.failures {
            let failed = SettlementFailed {
                invoice_id: i.id,
                merchant_id: m.id,
                currency: s.currency,
                net_amount: s.split.net,
                reason: *reason,
                details: None,
                will_retry: *will_retry,
                failed_at: *at,
            };
            let payout = system("settlement-processor", "payout-provider");
            match e.emit(*at, s.id.into(), failed, payout, None, Some(&cause)) {
                Some(ev) => cause = ev,
                None => return,
            }
        }
        if let Some(at) = s.completed_at {
            let completed = SettlementCompleted {
                invoice_id: i.id,
                merchant_id: m.id,
                currency: s.currency,
                gross_amount: s.gross,
                platform_fee_amount: s.split.fee,
                net_amount: s.split.net,
                fee_percentage: s.fee_percentage,
                settled_at: at,
            };
            let payout = system("settlement-processor", "payout-provider");
            e.emit(at, s.id.into(), completed, payout, None, Some(&cause));
        }
    }
}

/// The settlement events the settlement service must write for `plan` ([`crate::truth::expected_settlements`]),
/// as one correct rendering of them — ids derived with [`EventId::derived`] under
/// [`events::id::SETTLEMENT_EVENT_NAMESPACE`] from the invoice id and the event type, the system actor
/// `settlement-processor` — in time order. Not the service's own events: a stand-in with the same content, so
/// that consumers can be tested against the `ByService` truth without the service. Empty in `Generated` mode.
pub fn expected_settlement_events(plan: &Plan) -> Vec<Envelope> {
    let mut out = Vec::new();
    for x in crate::truth::expected_settlements(plan) {
        let id = |t: events::EventType| {
            let mut name = x.invoice_id.as_uuid().as_bytes().to_vec();
            name.extend_from_slice(t.as_str().as_bytes());
            EventId::derived(events::id::SETTLEMENT_EVENT_NAMESPACE, &name)
        };
        for (event_type, at) in &x.events {
            let data: EventData = match event_type {
                events::EventType::SettlementCreated => SettlementCreated {
                    invoice_id: x.invoice_id,
                    merchant_id: x.merchant_id,
                    currency: x.currency,
                    gross_amount: x.gross_amount,
                    platform_fee_amount: x.platform_fee_amount,
                    net_amount: x.net_amount,
                    fee_percentage: x.fee_percentage,
                }
                .into(),
                events::EventType::SettlementFailed => SettlementFailed {
                    invoice_id: x.invoice_id,
                    merchant_id: x.merchant_id,
                    currency: x.currency,
                    net_amount: x.net_amount,
                    reason: SettlementFailureReason::MerchantSuspended,
                    details: None,
                    will_retry: true,
                    failed_at: *at,
                }
                .into(),
                events::EventType::SettlementCompleted => SettlementCompleted {
                    invoice_id: x.invoice_id,
                    merchant_id: x.merchant_id,
                    currency: x.currency,
                    gross_amount: x.gross_amount,
                    platform_fee_amount: x.platform_fee_amount,
                    net_amount: x.net_amount,
                    fee_percentage: x.fee_percentage,
                    settled_at: *at,
                }
                .into(),
                other => unreachable!("{other} is not a settlement event"),
            };
            let envelope = Envelope::from_parts(EnvelopeParts {
                event_id: id(*event_type),
                aggregate_id: x.settlement_id.into(),
                event_data: data,
                metadata: system("settlement-processor", "payment-confirmation"),
                timestamp: *at,
                correlation_id: None,
                causation_id: None,
            })
            .unwrap_or_else(|e| panic!("an invalid expected settlement event: {e}"));
            out.push(envelope);
        }
    }
    // Stable: a settlement's events keep their order (created, failed, completed) when their times are equal.
    out.sort_by_key(|e| e.timestamp());
    out
}

/// `domain` and `settlements` merged in time order; at equal times the domain event first (the service reacts to
/// a confirmation or a reinstatement, it does not precede it).
pub(crate) fn merge(domain: &[Envelope], settlements: Vec<Envelope>) -> Vec<Envelope> {
    let mut out = Vec::with_capacity(domain.len() + settlements.len());
    let mut settlements = settlements.into_iter().peekable();
    for event in domain {
        while let Some(s) = settlements.next_if(|s| s.timestamp() < event.timestamp()) {
            out.push(s);
        }
        out.push(event.clone());
    }
    out.extend(settlements);
    out
}

fn cause_of(detections: &[(uuid::Uuid, Envelope)], payment: uuid::Uuid) -> Option<&Envelope> {
    detections
        .iter()
        .find(|(id, _)| *id == payment)
        .map(|(_, e)| e)
}

/// The checkout page's records of the plan up to its horizon, in time order: its views, then (drawing nothing
/// from the views' RNG, so their ids are those of the first version) the methods chosen and the abandonments of
/// [`InvoicePlan::journey`].
pub fn analytics_records(plan: &Plan) -> Vec<AnalyticsRecord> {
    let mut rng = StdRng::seed_from_u64(plan.scenario.seed ^ 0xa11a_a11a);
    let mut out = Vec::new();
    for i in &plan.invoices {
        let merchant = &plan.merchants[i.merchant];
        for at in &i.views {
            let event_id = v7(&mut rng, *at);
            if *at > plan.horizon {
                continue;
            }
            out.push(checkout_viewed(event_id, merchant.id, i.id, *at));
        }
    }
    for i in &plan.invoices {
        let merchant = plan.merchants[i.merchant].id;
        let journey = i.journey();
        let mut records: Vec<events::AnalyticsEvent> = Vec::new();
        if let Some(at) = journey.method_chosen {
            records.push(
                events::analytics::PaymentMethodChosen {
                    event_id: outbox::checkout::method_id(i.id, at),
                    merchant_id: merchant,
                    invoice_id: i.id,
                    crypto_currency: i.asset,
                    network: i.network,
                    occurred_at: at,
                }
                .into(),
            );
        }
        if let Some((at, stage, reason)) = journey.abandoned {
            records.push(
                events::analytics::CheckoutAbandoned {
                    event_id: outbox::checkout::abandon_id(i.id, at),
                    merchant_id: merchant,
                    invoice_id: i.id,
                    stage,
                    reason,
                    occurred_at: at,
                }
                .into(),
            );
        }
        for record in records {
            let at = record.occurred_at();
            if at > plan.horizon {
                continue;
            }
            out.push(AnalyticsRecord {
                key: record.partition_key(),
                value: record.encode().expect("the generator's records are valid"),
                event_id: record.event_id().as_uuid(),
                at,
            });
        }
    }
    out.sort_by_key(|r| r.at);
    out
}

/// The plan's checkout views up to its horizon as contract values ([`events::analytics::CheckoutViewed`]), in
/// time order, with the ids of [`analytics_records`]: what a producer hands to `outbox::checkout::record_views`.
pub fn checkout_views(plan: &Plan) -> Vec<events::analytics::CheckoutViewed> {
    checkout_events(plan)
        .into_iter()
        .filter_map(|r| match r {
            events::AnalyticsEvent::Viewed(view) => Some(view),
            _ => None,
        })
        .collect()
}

/// Every checkout page record of the plan up to its horizon ([`analytics_records`]) as contract values, in time
/// order: what a producer hands to `outbox::checkout::record_events`.
pub fn checkout_events(plan: &Plan) -> Vec<events::AnalyticsEvent> {
    analytics_records(plan)
        .iter()
        .map(|r| {
            events::AnalyticsEvent::decode(&r.value).expect("the generator's records are valid")
        })
        .collect()
}

/// One `CheckoutViewed` record (the format of decision 0011).
pub fn checkout_viewed(
    event_id: uuid::Uuid,
    merchant: events::MerchantId,
    invoice: events::InvoiceId,
    at: DateTime<Utc>,
) -> AnalyticsRecord {
    let value = serde_json::json!({
        "event_id": event_id,
        "event_type": "CheckoutViewed",
        "event_version": 1,
        "merchant_id": merchant.to_string(),
        "invoice_id": invoice.to_string(),
        "occurred_at": events::time::format_utc(&at),
    });
    AnalyticsRecord {
        key: at.date_naive().to_string(),
        value: serde_json::to_vec(&value).expect("json"),
        event_id,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Scenario, plan};
    use std::collections::HashMap;

    #[test]
    fn events_are_valid_ordered_per_key_and_stop_at_the_horizon() {
        let p = plan(&Scenario::new(3, 10, 400));
        let events = domain_events(&p);
        assert!(events.len() > 2000, "{}", events.len());
        let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
        for ev in &events {
            let bytes = events::encode(ev).expect("valid");
            assert_eq!(&events::decode(&bytes).unwrap(), ev);
            assert!(ev.timestamp() <= p.horizon);
            let key = ev.partition_key();
            if let Some(previous) = last.insert(key, ev.timestamp()) {
                assert!(previous <= ev.timestamp());
            }
        }
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id()).collect();
        assert_eq!(ids.len(), events.len(), "event ids are unique");
        assert_eq!(domain_events(&p), events, "deterministic");
    }
}
