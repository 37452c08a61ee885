//! The audit handler: append each domain event to the hash chain, once.
//!
//! Guarantees: one call per record takes the appenders' lock (which orders every appender, whatever partition it
//! serves) and appends the event as the head's successor with its hash — or nothing when the event id is logged
//! already (redelivery, re-publication); the database checks the link and advances the head (migration
//! `…400_audit.sql`). The runtime marks the record done only after the statement committed (at-least-once), so
//! every event is logged exactly once. Undecodable records are schema errors (DLQ).

use chrono::Utc;
use prometheus::{IntCounterVec, Opts, Registry};
use runtime::{Handler, HandlerCtx, HandlerError, Record};
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

    fn record(&self, event: &events::Envelope, outcome: &'static str) {
        self.events
            .with_label_values(&[event.event_type().as_str(), outcome])
            .inc();
        if outcome == "duplicate" {
            tracing::debug!(event_id = %event.event_id(), "duplicate event; already in the audit log");
        }
    }
}

/// Whether an append added a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended as row `seq`.
    Row(i64),
    /// The event was in the log already.
    Duplicate,
}

/// The append, in one call of `audit_append` (migration `…600_audit_append.sql`): wait for the appenders' lock
/// (a FIFO queue), number the row after the chain head, hash it in the database from the head's hash and the
/// row's canonical encoding (tag ‖ number ‖ the rest, computed here), insert it unless the event is already
/// logged. No client round trip happens while the lock is held, which is what bounds the log's throughput.
const APPEND: &str = "SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                      $17, $18, $19, $20, $21, $22)";

/// Appends `envelope` (consumed as `text` from `provenance`) to the chain through `conn`. Outside a transaction
/// the statement commits on its own; inside one, the head stays locked until that transaction ends.
pub async fn append(
    conn: &mut PgConnection,
    envelope: &events::Envelope,
    text: String,
    provenance: &Provenance,
) -> Result<Appended, sqlx::Error> {
    // Number and previous hash are assigned by the database; the rest of the row is final here.
    let row = AuditRow::new(0, Vec::new(), envelope, text, provenance, Utc::now());
    let seq: Option<i64> = sqlx::query_scalar::<_, Option<i64>>(APPEND)
        .bind(row.event_id)
        .bind(&row.event_type)
        .bind(row.event_version)
        .bind(&row.aggregate_type)
        .bind(&row.aggregate_id)
        .bind(&row.merchant_id)
        .bind(&row.invoice_id)
        .bind(&row.actor)
        .bind(&row.ip_address)
        .bind(&row.user_agent)
        .bind(&row.request_id)
        .bind(&row.source)
        .bind(&row.correlation_id)
        .bind(&row.causation_id)
        .bind(row.occurred_at)
        .bind(row.recorded_at)
        .bind(&row.kafka_topic)
        .bind(row.kafka_partition)
        .bind(row.kafka_offset)
        .bind(&row.event)
        .bind(crate::chain::TAG)
        .bind(row.canonical_rest())
        .fetch_one(&mut *conn)
        .await?;
    Ok(match seq {
        Some(seq) => Appended::Row(seq),
        None => Appended::Duplicate,
    })
}

/// The audit-logging handler.
pub struct Auditor {
    pool: PgPool,
    metrics: AuditMetrics,
}

impl Auditor {
    pub fn new(pool: PgPool, metrics: AuditMetrics) -> Self {
        Auditor { pool, metrics }
    }
}

impl Handler for Auditor {
    async fn handle(&self, record: &Record, _ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let envelope = record.decode_with(events::decode)?;
        // `decode` accepted it, so it is UTF-8 JSON.
        let text =
            String::from_utf8(record.value_bytes()?.to_vec()).map_err(HandlerError::schema)?;
        let provenance = Provenance {
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
        };
        let mut conn = self.pool.acquire().await?;
        let appended = append(&mut conn, &envelope, text, &provenance).await?;
        let outcome = match appended {
            Appended::Row(_) => "appended",
            Appended::Duplicate => "duplicate",
        };
        self.metrics.record(&envelope, outcome);
        Ok(())
    }
}
