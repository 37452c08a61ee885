//! The consumer runtime: every consumer service of the bus is its [`Handler`] plus its [`GroupPolicy`]; this
//! crate does the rest.
//!
//! What it guarantees, whichever [`Guarantee`] the group has:
//! - records of a partition are processed in offset order, one at a time (or one ordered batch); partitions run
//!   in parallel up to a bound; memory is bounded whatever the backlog;
//! - an offset is committed only after the work for it (and its output and DLQ records) is durable, only for
//!   partitions still owned, never for a lost assignment; on revoke and shutdown in-flight work is drained by a
//!   deadline and committed;
//! - failures follow the spec's classes ([`HandlerError`]): transient → retried in place with backoff; schema →
//!   DLQ at once; business → the group's [`RetryPolicy`], then DLQ; infrastructure → circuit breaker (no DLQ,
//!   no offset advance) until a probe succeeds;
//! - the DLQ gets the original record unchanged plus provenance headers ([`dlq`]), acknowledged before the source
//!   offset is committed;
//! - exactly-once either within Kafka (mode (a): outputs + offsets in one transaction, `eos_kafka`) or into
//!   PostgreSQL (mode (b): writes + offsets in one database transaction, `eos_db`);
//! - Prometheus metrics ([`Metrics`]) and `/ready` conditions; graceful shutdown.
//!
//! Layout (one concern per module): [`policy`] (the spec's tables as data), [`options`] (operational knobs),
//! [`error`], [`record`], [`handler`], [`retry`] (the decision function), [`breaker`], [`dlq`], [`metrics`],
//! [`idempotency`]; internally `consumer` (builder and run loop), `poll` (the poll thread, rebalancing,
//! commits), `inbox` (the bounded hand-off from the poll thread to a lane), `lane` (per-partition processing and
//! retries), `at_least_once`, `eos_kafka`, `eos_db` (how each mode makes a batch durable), `produce`.
//!
//! Decisions: `docs/decisions/0007-consumer-runtime.md`.

mod attempts;
pub mod breaker;
mod consumer;
pub mod delivery;
pub mod dlq;
pub mod error;
pub mod handler;
pub mod idempotency;
mod inbox;
mod lane;
pub mod metrics;
pub mod options;
pub mod policy;
mod poll;
pub mod processor;
pub mod produce;
pub mod record;
pub mod retry;
pub mod service;
mod shared;

pub use breaker::BreakerState;
pub use consumer::{Consumer, ConsumerBuilder, NoHandler, READY_ASSIGNED, READY_BREAKER};
pub use error::{BoxError, ErrorClass, HandlerError, RuntimeError};
pub use handler::{BatchError, BatchHandler, Handler, HandlerCtx};
pub use metrics::Metrics;
pub use options::ConsumerOptions;
pub use policy::{Backoff, GroupPolicy, Guarantee, PolicyOverrides, RetryPolicy};
pub use processor::{Batched, PerRecord, Processor};
pub use record::{OutputRecord, Record};
