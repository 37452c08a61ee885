//! The two shapes of a consumer service's logic, and the context the runtime hands it.
//!
//! - [`BatchHandler`]: the whole ordered batch of a partition at once, applied as **one unit** (all of it or
//!   none of it), so a handler can do its database work with a handful of statements per batch (`UNNEST`
//!   arrays, multi-row upserts) instead of round trips per record. When the unit fails, the handler says which
//!   record made it fail ([`BatchError::at`]) or that it cannot tell ([`BatchError::unknown`], and the runtime
//!   finds the record by bisecting); the runtime then applies the rest without it and takes that record through
//!   its retry policy alone — records of the same key wait for it, so per-key order holds.
//! - [`Handler`]: one record per call, for logic that works record by record (an HTTP call per record). Records
//!   before a failing one keep their effects in at-least-once and mode (a); in mode (b) they are replayed in a
//!   new transaction, because the failed one's writes were rolled back with them.
//!
//! Guarantees for both: the records of one partition arrive in offset order (a batch may skip offsets: records
//! done earlier and records held back behind a failure are left out); a record is retried until it succeeds,
//! is dead-lettered, or the partition is revoked — so a handler may see a record again (at-least-once) and must
//! be idempotent unless the guarantee is exactly-once. Records queued with [`HandlerCtx::produce`] are sent
//! only for work that succeeded: in at-least-once and mode (b) they are acknowledged by the broker before the
//! offset is committed; in mode (a) they are part of the same Kafka transaction as the offset.
//! [`HandlerCtx::db`] is the open database transaction of mode (b), which also stores the offset.

use std::future::Future;

use sqlx::PgConnection;

use crate::error::HandlerError;
use crate::record::{OutputRecord, Record};

/// A consumer service's logic, one batch per call. One value is shared by every partition lane of the consumer.
pub trait BatchHandler: Send + Sync + 'static {
    /// Applies `records` (one partition's, in offset order, at most the group's batch size) as one unit: on
    /// `Ok` all of it is done; on `Err` none of it may have taken effect — roll back what was started (in mode
    /// (b) the runtime rolls back its transaction, which holds everything written through [`HandlerCtx::db`]).
    fn handle_batch(
        &self,
        records: &[Record],
        ctx: &mut HandlerCtx<'_>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
    /// Mode (b): whether back-to-back units of a partition may share one database transaction (decision 0056):
    /// far fewer commits, but what the handler locks — rows it writes, the outbox's per-key advisory locks —
    /// stays locked until that transaction commits, up to `transaction_commit_interval` later and across
    /// units. Say `true` only when no other transaction can wait for those locks in an order that deadlocks; a
    /// handler that appends to the outbox must not (the outbox takes its key locks in one sorted batch per
    /// append, deadlock-free only with one append per transaction). Default `false`: a transaction per unit.
    fn shares_transactions(&self) -> bool {
        false
    }
}

/// Why a batch failed, and which record made it fail when the handler knows.
#[derive(Debug)]
pub struct BatchError {
    /// Index in the batch of the record that failed; `None` when the handler cannot tell (e.g. a constraint
    /// violated by a multi-row statement): the runtime then bisects the batch to find it.
    pub index: Option<usize>,
    pub error: HandlerError,
}

impl BatchError {
    /// Record `index` of the batch failed with `error`.
    pub fn at(index: usize, error: impl Into<HandlerError>) -> Self {
        BatchError {
            index: Some(index),
            error: error.into(),
        }
    }

    /// The batch failed and no single record can be blamed from here.
    pub fn unknown(error: impl Into<HandlerError>) -> Self {
        BatchError {
            index: None,
            error: error.into(),
        }
    }
}

/// A consumer service's logic, one record per call. One value is shared by every partition lane.
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. The returned error's variant decides what happens next (see [`HandlerError`]).
    fn handle(
        &self,
        record: &Record,
        ctx: &mut HandlerCtx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
    /// Mode (b): whether back-to-back units of a partition may share one database transaction (decision 0056):
    /// far fewer commits, but what the handler locks — rows it writes, the outbox's per-key advisory locks —
    /// stays locked until that transaction commits, up to `transaction_commit_interval` later and across
    /// units. Say `true` only when no other transaction can wait for those locks in an order that deadlocks; a
    /// handler that appends to the outbox must not (the outbox takes its key locks in one sorted batch per
    /// append, deadlock-free only with one append per transaction). Default `false`: a transaction per unit.
    fn shares_transactions(&self) -> bool {
        false
    }
}

/// What a handler may use besides the record.
pub struct HandlerCtx<'a> {
    group: &'a str,
    attempt: u32,
    outputs: Vec<OutputRecord>,
    /// `outputs[..kept]` belong to records that succeeded (per-record handlers).
    kept: usize,
    db: Option<&'a mut PgConnection>,
}

impl<'a> HandlerCtx<'a> {
    /// A context for one call: `group`, the attempt number, and mode (b)'s transaction. The runtime builds it;
    /// public so that a service's tests can call its handler directly (given records, when handled, then these
    /// writes and [`HandlerCtx::outputs`]).
    pub fn new(group: &'a str, attempt: u32, db: Option<&'a mut PgConnection>) -> Self {
        HandlerCtx {
            group,
            attempt,
            outputs: Vec::new(),
            kept: 0,
            db,
        }
    }

    /// Queues a record to produce once the work it belongs to succeeded (discarded otherwise).
    pub fn produce(&mut self, record: OutputRecord) {
        self.outputs.push(record);
    }

    /// The open database transaction in mode (b) ([`crate::Guarantee::ExactlyOnceDb`]); `None` otherwise.
    /// Everything written through it commits atomically with the consumer's offset — or not at all.
    pub fn db(&mut self) -> Option<&mut PgConnection> {
        self.db.as_deref_mut()
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        self.group
    }

    /// 1 for a record's first attempt, 2 for its first retry, … (counted across restarts and rebalances).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The records queued with [`HandlerCtx::produce`] so far.
    pub fn outputs(&self) -> &[OutputRecord] {
        &self.outputs
    }

    /// The outputs queued so far belong to records that succeeded.
    #[allow(dead_code)] // called by the batch-native lane (next commit)
    pub(crate) fn keep(&mut self) {
        self.kept = self.outputs.len();
    }

    /// The outputs of the whole call (`all`), or only those of the records that succeeded.
    pub(crate) fn into_outputs(mut self, all: bool) -> Vec<OutputRecord> {
        if !all {
            self.outputs.truncate(self.kept);
        }
        self.outputs
    }
}
