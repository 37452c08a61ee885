//! The audit handler: append each batch of domain events to the hash chain, once each, in one call.
//!
//! Guarantees: [`Auditor`] decodes every record of a batch first (one that does not decode fails the batch at
//! its index as a schema error: DLQ, nothing appended), then appends the whole batch with ONE statement,
//! [`append_batch`] → `audit_append_batch` (migration `…20261130000500_audit_append_batch.sql`), which commits on
//! its own: it takes the appenders' lock (which orders every appender, whatever partition it serves) once, and
//! appends each event in the batch's order as the head's successor with its hash — or nothing when the event id
//! is logged already or repeated earlier in the batch (redelivery, re-publication). The database checks every
//! link and advances the head (migration `…400_audit.sql`). The batch is all or nothing; the runtime marks its
//! records done only after that statement committed (at-least-once), so every event is logged exactly once, in
//! the order its partition delivered it, numbered without gaps. `audit_events_total` counts each event once the
//! append is durable.
//!
//! Memory: at most [`BATCHES_IN_FLIGHT`] batches of a process are decoded at once.
//!
//! [`append`] appends one event (a batch of one).

use chrono::Utc;
use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{BatchError, BatchHandler, HandlerCtx, HandlerError, Record};
use sqlx::{PgConnection, PgPool};

use crate::chain::{AuditRow, Provenance};

/// Appended and duplicate events by type.
#[derive(Clone)]
pub struct AuditMetrics {
    events: IntCounterVec,
}

impl AuditMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "audit_events_total",
                "Domain events the audit log took in, by type and outcome (appended | duplicate).",
            ),
            &["event_type", "outcome"],
        )?;
        registry.register(Box::new(events.clone()))?;
        Ok(AuditMetrics { events })
    }

    fn record(&self, event: &events::Envelope, appended: Appended) {
        let outcome = match appended {
            Appended::Row(_) => "appended",
            Appended::Duplicate => "duplicate",
        };
        self.events
            .with_label_values(&[event.event_type().as_str(), outcome])
            .inc();
        if appended == Appended::Duplicate {
            tracing::debug!(event_id = %event.event_id(), "duplicate event; already in the audit log");
        }
    }
}

/// Whether an append added a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended as row `seq`.
    Row(i64),
    /// The event was in the log already (or earlier in the same batch).
    Duplicate,
}

/// One event to append: the envelope, the exact text consumed, and where it was read from.
#[derive(Debug, Clone, Copy)]
pub struct ToAppend<'a> {
    pub envelope: &'a events::Envelope,
    pub text: &'a str,
    pub provenance: &'a Provenance,
}

/// The batch append, in one call of `audit_append_batch`: wait for the appenders' lock (a FIFO queue) once, then
/// for each row in order number it after the chain head, hash it in the database from the previous hash and the
/// row's canonical encoding (tag ‖ number ‖ the rest, computed here), insert it unless its event is logged
/// already. No client round trip happens while the lock is held, which is what bounds the log's throughput.
const APPEND_BATCH: &str = "SELECT audit_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
                            $14, $15, $16, $17, $18, $19, $20, $21, $22)";

/// The columns of a batch, one vector per argument of `audit_append_batch`.
#[derive(Default)]
struct Columns {
    event_id: Vec<uuid::Uuid>,
    event_type: Vec<String>,
    event_version: Vec<i32>,
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    merchant_id: Vec<String>,
    invoice_id: Vec<Option<String>>,
    actor: Vec<String>,
    ip_address: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    source: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
    causation_id: Vec<Option<String>>,
    occurred_at: Vec<chrono::DateTime<Utc>>,
    recorded_at: Vec<chrono::DateTime<Utc>>,
    kafka_topic: Vec<String>,
    kafka_partition: Vec<i32>,
    kafka_offset: Vec<i64>,
    event: Vec<String>,
    rest: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, row: AuditRow) {
        self.rest.push(row.canonical_rest());
        self.event_id.push(row.event_id);
        self.event_type.push(row.event_type);
        self.event_version.push(row.event_version);
        self.aggregate_type.push(row.aggregate_type);
        self.aggregate_id.push(row.aggregate_id);
        self.merchant_id.push(row.merchant_id);
        self.invoice_id.push(row.invoice_id);
        self.actor.push(row.actor);
        self.ip_address.push(row.ip_address);
        self.user_agent.push(row.user_agent);
        self.request_id.push(row.request_id);
        self.source.push(row.source);
        self.correlation_id.push(row.correlation_id);
        self.causation_id.push(row.causation_id);
        self.occurred_at.push(row.occurred_at);
        self.recorded_at.push(row.recorded_at);
        self.kafka_topic.push(row.kafka_topic);
        self.kafka_partition.push(row.kafka_partition);
        self.kafka_offset.push(row.kafka_offset);
        self.event.push(row.event);
    }
}

/// Appends `batch` to the chain through `conn` in one statement, in order; returns what became of each event
/// (same order). Outside a transaction the statement commits on its own (all of the batch or none of it); inside
/// one, the appenders' lock is held until that transaction ends.
pub async fn append_batch(
    conn: &mut PgConnection,
    batch: &[ToAppend<'_>],
) -> Result<Vec<Appended>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let recorded_at = Utc::now();
    let mut c = Columns::default();
    for item in batch {
        // Number and previous hash are assigned by the database; the rest of the row is final here.
        c.push(AuditRow::new(
            0,
            Vec::new(),
            item.envelope,
            item.text.to_string(),
            item.provenance,
            recorded_at,
        ));
    }
    let seqs: Vec<Option<i64>> = sqlx::query_scalar::<_, Vec<Option<i64>>>(APPEND_BATCH)
        .bind(&c.event_id)
        .bind(&c.event_type)
        .bind(&c.event_version)
        .bind(&c.aggregate_type)
        .bind(&c.aggregate_id)
        .bind(&c.merchant_id)
        .bind(&c.invoice_id)
        .bind(&c.actor)
        .bind(&c.ip_address)
        .bind(&c.user_agent)
        .bind(&c.request_id)
        .bind(&c.source)
        .bind(&c.correlation_id)
        .bind(&c.causation_id)
        .bind(&c.occurred_at)
        .bind(&c.recorded_at)
        .bind(&c.kafka_topic)
        .bind(&c.kafka_partition)
        .bind(&c.kafka_offset)
        .bind(&c.event)
        .bind(crate::chain::TAG)
        .bind(&c.rest)
        .fetch_one(&mut *conn)
        .await?;
    if seqs.len() != batch.len() {
        return Err(sqlx::Error::Protocol(format!(
            "audit_append_batch returned {} results for {} rows",
            seqs.len(),
            batch.len()
        )));
    }
    Ok(seqs
        .into_iter()
        .map(|seq| seq.map_or(Appended::Duplicate, Appended::Row))
        .collect())
}

/// Appends `envelope` (consumed as `text` from `provenance`) to the chain through `conn`: a batch of one.
pub async fn append(
    conn: &mut PgConnection,
    envelope: &events::Envelope,
    text: String,
    provenance: &Provenance,
) -> Result<Appended, sqlx::Error> {
    let item = ToAppend {
        envelope,
        text: &text,
        provenance,
    };
    let appended = append_batch(conn, std::slice::from_ref(&item)).await?;
    Ok(appended[0])
}

/// A record decoded for the log.
struct Decoded {
    envelope: events::Envelope,
    text: String,
    provenance: Provenance,
}

fn decode(record: &Record) -> Result<Decoded, HandlerError> {
    let envelope = record.decode_event()?;
    // `decode` accepted it, so it is UTF-8 JSON.
    let text = String::from_utf8(record.value_bytes()?.to_vec()).map_err(HandlerError::schema)?;
    Ok(Decoded {
        envelope,
        text,
        provenance: Provenance {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
        },
    })
}

/// The audit-logging handler.
pub struct Auditor {
    pool: PgPool,
    metrics: AuditMetrics,
    /// Batches decoded and appending at once in this process (see [`BATCHES_IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
}

/// How many of this process's partition batches may be decoded and on their way into the log at once. The
/// appenders' lock orders every append whatever the partition, so more would only wait in memory — each decoded
/// batch of 500 events holds a few MiB here and in its connection's buffers (issue 19's 150 MiB under a 1M
/// backlog). Two keep the next batch decoded while one appends; the permits are handed out first come, first
/// served, so no partition starves.
pub const BATCHES_IN_FLIGHT: usize = 2;

impl Auditor {
    pub fn new(pool: PgPool, metrics: AuditMetrics) -> Self {
        Auditor {
            pool,
            metrics,
            in_flight: tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT),
        }
    }
}

impl BatchHandler for Auditor {
    async fn handle_batch(
        &self,
        records: &[Record],
        _ctx: &mut HandlerCtx<'_>,
    ) -> Result<(), BatchError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let decoded = records
            .iter()
            .enumerate()
            .map(|(i, record)| decode(record).map_err(|e| BatchError::at(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let batch: Vec<ToAppend<'_>> = decoded
            .iter()
            .map(|d| ToAppend {
                envelope: &d.envelope,
                text: &d.text,
                provenance: &d.provenance,
            })
            .collect();
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        // One statement that commits on its own: the batch is appended whole or not at all.
        let appended = append_batch(&mut conn, &batch)
            .await
            .map_err(|e| BatchError::unknown(HandlerError::from(e)))?;
        for (item, appended) in batch.iter().zip(appended) {
            self.metrics.record(item.envelope, appended);
        }
        Ok(())
    }
}
