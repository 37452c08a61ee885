//! The one trait a consumer service implements, and the context the runtime hands it.
//!
//! Guarantees: for one partition, `handle` is called for one record at a time, in offset order; a record is
//! retried (same record, in place) until it succeeds, is dead-lettered, or the partition is revoked — so a
//! handler may be called again for a record it already saw (at-least-once), and must be idempotent unless the
//! guarantee is exactly-once. Records queued with [`HandlerCtx::produce`] are sent only if `handle` returns
//! `Ok`: in at-least-once and mode (b) they are acknowledged by the broker before the offset is committed; in
//! mode (a) they are part of the same Kafka transaction as the offset. [`HandlerCtx::db`] is the open database
//! transaction of mode (b), which also stores the offset.

use std::future::Future;

use sqlx::PgConnection;

use crate::error::HandlerError;
use crate::record::{OutputRecord, Record};

/// A consumer service's logic. One value is shared by every partition lane of the consumer.
pub trait Handler: Send + Sync + 'static {
    /// Processes one record. The returned error's variant decides what happens next (see [`HandlerError`]).
    fn handle(
        &self,
        record: &Record,
        ctx: &mut HandlerCtx<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// What a handler may use besides the record.
pub struct HandlerCtx<'a> {
    group: &'a str,
    attempt: u32,
    outputs: Vec<OutputRecord>,
    db: Option<&'a mut PgConnection>,
}

impl<'a> HandlerCtx<'a> {
    pub(crate) fn new(group: &'a str, attempt: u32, db: Option<&'a mut PgConnection>) -> Self {
        HandlerCtx {
            group,
            attempt,
            outputs: Vec::new(),
            db,
        }
    }

    /// Queues a record to produce if this call returns `Ok` (discarded otherwise).
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

    /// 1 for the first attempt at this record in this consumer, 2 for the first retry, …
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn into_outputs(self) -> Vec<OutputRecord> {
        self.outputs
    }
}
