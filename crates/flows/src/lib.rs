//! Realistic checkout flows for tests and benchmarks, with their own ground truth.
//!
//! Guarantees:
//! - [`generate`] is deterministic in the [`Scenario`] (seed included): merchants (created, settings updated,
//!   suspended, reinstated) and invoices living every life the platform knows — paid exactly, in two payments, over-paid,
//!   paid late, expired with or without a partial payment, cancelled, with failed payments — their payments'
//!   confirmations, and settlements (completed, retried, failed) with the platform fee of
//!   [`events::money::platform_fee`]. Amounts are exact decimals in the currencies' units.
//! - Settlements are the generator's own by default ([`Settlements::Generated`]); with
//!   [`Scenario::settled_by_service`] the generator emits no settlement event, and the truth holds what the
//!   settlement service must have produced (decision 0026's policy): [`Flows::expected_settlements`] lists it
//!   event by event, [`Flows::owed_back`] the crypto of unpaid invoices that is owed back.
//! - [`Flows::events`] are valid envelopes in commit order (per partition key, the order things happened), with
//!   causation and correlation; [`Flows::analytics`] are the checkout page's `CheckoutViewed` records.
//! - [`Flows::truth`] is computed from the plan's intent ([`plan`]), not from the events and not by any
//!   handler: it is the independent expectation tests compare the services' state with ([`check`]).
//! - [`generate_scanned`] (scanner mode): the generator plays the chain instead of the payment processor — its
//!   events hold no payment event and no `InvoicePaid`, [`Flows::scanner_reports`] are the chain scanners' records
//!   for `integration-events`, and the truth is what the real payments service and everything downstream must
//!   make of them ([`scanner`]).
//!
//! Layout: [`plan`] (the intent), [`emit`] (plan → events), [`truth`] (plan → expected state), [`check`] (read
//! the services' tables, diff), [`harness`] (a private bus per test: database, topics, outbox publisher),
//! [`service`] (a consumer service under test: in this process, or as processes SIGKILLed while events flow),
//! [`receiver`] (HTTP receivers on loopback: webhook endpoints, the SMS sandbox) and [`smtp`] (an SMTP server on
//! loopback); `src/bin/dev-sandbox.rs` runs the last two for `make run`.

pub mod check;
pub mod emit;
pub mod harness;
pub mod plan;
pub mod receiver;
pub mod scanner;
pub mod service;
pub mod smtp;
pub mod truth;

use events::Envelope;

pub use emit::AnalyticsRecord;
pub use plan::{Kind, Plan, Scenario, Settlements};
pub use truth::{ExpectedSettlement, OwedBack, Truth, percentile};

/// A generated scenario: its plan, its events and its truth.
#[derive(Debug, Clone)]
pub struct Flows {
    pub plan: Plan,
    /// Domain events, in commit order, up to the horizon.
    pub events: Vec<Envelope>,
    /// `CheckoutViewed` records for the analytics topic, in time order, up to the horizon.
    pub analytics: Vec<AnalyticsRecord>,
    pub truth: Truth,
}

impl Flows {
    /// The settlements the settlement service must have produced by the horizon, by due time (T) then invoice:
    /// ids, amounts, final status and each settlement event with its time ([`truth::expected_settlements`]).
    /// Empty in [`Settlements::Generated`] mode.
    pub fn expected_settlements(&self) -> Vec<ExpectedSettlement> {
        truth::expected_settlements(&self.plan)
    }

    /// The domain events with the settlement events the settlement service must add
    /// ([`emit::expected_settlement_events`], a stand-in with the expected content) merged in, in commit order:
    /// what a consumer sees when the service behaves, for testing consumers against the `ByService` truth.
    /// Equal to [`Flows::events`] in `Generated` mode.
    pub fn events_with_expected_settlements(&self) -> Vec<Envelope> {
        emit::merge(&self.events, emit::expected_settlement_events(&self.plan))
    }

    /// The crypto received for invoices not paid at the horizon (expired, cancelled, partially paid), owed back
    /// to the customers ([`truth::owed_back`]); over-payments are in [`Flows::expected_settlements`].
    pub fn owed_back(&self) -> Vec<OwedBack> {
        truth::owed_back(&self.plan)
    }
}

impl Flows {
    /// Every domain event the domain topic must carry by the horizon once the services downstream of the generator
    /// have done their work, as stand-ins with the expected content, in commit order: the plan's events emitted
    /// with their payment events and `InvoicePaid` ([`emit::domain_events`] — in scanner mode those the payments
    /// service must derive from [`Flows::scanner_reports`], by the plan [`scanner`] rewrote) and, with
    /// [`Settlements::ByService`], the settlement service's ([`emit::expected_settlement_events`]). Computed from the
    /// plan alone. Ids and metadata are the generator's, not the services': compare by type, aggregate and merchant.
    pub fn expected_domain_events(&self) -> Vec<Envelope> {
        emit::merge(
            &emit::domain_events(&self.plan),
            emit::expected_settlement_events(&self.plan),
        )
    }
}

impl Flows {
    /// Scanner mode ([`generate_scanned`]): the chain scanners' reports of the plan's payments for
    /// `integration-events`, in observation order up to the horizon ([`scanner::reports`]).
    pub fn scanner_reports(&self) -> Vec<events::integration::IntegrationEvent> {
        scanner::reports(&self.plan)
    }

    /// Scanner mode: [`Flows::events`] and [`Flows::scanner_reports`] cut into phases to feed in order
    /// ([`scanner::phases`], [`harness::Bus::feed_scanned`]).
    pub fn scanner_phases(&self) -> Vec<scanner::Phase> {
        scanner::phases(&self.plan, &self.events, &self.scanner_reports())
    }
}

/// Generates `scenario` in scanner mode: the same plan draws as [`generate`], the chain played by scanners
/// ([`scanner`]); `events` are the generator's domain events without payment events and `InvoicePaid`, and the
/// truth (and [`Flows::expected_settlements`]) is what the payments service, the settlement service and the
/// consumers must produce from them and [`Flows::scanner_reports`].
pub fn generate_scanned(scenario: &Scenario) -> Flows {
    let plan = plan::plan_scanned(scenario);
    let events = emit::domain_events_scanned(&plan);
    let analytics = emit::analytics_records(&plan);
    let truth = truth::truth(&plan);
    Flows {
        plan,
        events,
        analytics,
        truth,
    }
}

/// Generates `scenario`.
pub fn generate(scenario: &Scenario) -> Flows {
    let plan = plan::plan(scenario);
    let events = emit::domain_events(&plan);
    let analytics = emit::analytics_records(&plan);
    let truth = truth::truth(&plan);
    Flows {
        plan,
        events,
        analytics,
        truth,
    }
}
