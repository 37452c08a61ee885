//! Realistic checkout flows for tests and benchmarks, with their own ground truth.
//!
//! Guarantees:
//! - [`generate`] is deterministic in the [`Scenario`] (seed included): merchants (created, settings updated,
//!   suspended) and invoices living every life the platform knows — paid exactly, in two payments, over-paid,
//!   paid late, expired with or without a partial payment, cancelled, with failed payments — their payments'
//!   confirmations, and settlements (completed, retried, failed) with the platform fee of
//!   [`events::money::platform_fee`]. Amounts are exact decimals in the currencies' units.
//! - [`Flows::events`] are valid envelopes in commit order (per partition key, the order things happened), with
//!   causation and correlation; [`Flows::analytics`] are the checkout page's `CheckoutViewed` records.
//! - [`Flows::truth`] is computed from the plan's intent ([`plan`]), not from the events and not by any
//!   handler: it is the independent expectation tests compare the services' state with ([`check`]).
//!
//! Layout: [`plan`] (the intent), [`emit`] (plan → events), [`truth`] (plan → expected state), [`check`] (read
//! the services' tables, diff), [`harness`] (a private bus per test: database, topics, outbox publisher),
//! [`service`] (a consumer service under test: in this process, or as processes SIGKILLed while events flow).

pub mod check;
pub mod emit;
pub mod harness;
pub mod plan;
pub mod service;
pub mod truth;

use events::Envelope;

pub use emit::AnalyticsRecord;
pub use plan::{Kind, Plan, Scenario};
pub use truth::{Truth, percentile};

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
