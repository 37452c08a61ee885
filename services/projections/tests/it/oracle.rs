//! The per-event SQL the read models were applied with before batches (commit 7a4adcb's `apply.rs`, verbatim
//! but for this header, the runtime error conversion and its unit tests): the reference the batch path is
//! compared with, row for row and column for column (see `batches.rs`). Test code only.
//!
//! One later extension, in the same per-event style: `MerchantReinstated` (decision 0026) got its statement,
//! and `MerchantSuspended`'s statement learnt that a suspension at or before the last reinstatement is stale —
//! written independently of the fold so that the two still check each other. And one later correction
//! (decision 0045): `InvoiceExpired` and `InvoiceCancelled` no longer set `amount_paid` from the amount they
//! state (a payment behind it that reached the bus later was counted twice).

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use events::money::{Amount, Decimal};
use events::payload::*;
use events::{Envelope, EventData};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The read models took the event into account.
    Applied,
    /// The event had been applied before (same event id); nothing was written.
    Duplicate,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Applied => "applied",
            Applied::Duplicate => "duplicate",
        }
    }
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event is about an aggregate the read models have never seen created (business error).
    #[error("{0}")]
    Unknown(String),
    /// The database refused or failed (classified by the runtime: connection → infrastructure, lock conflicts →
    /// transient, the rest → business).
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// The wire spelling of a payload enum (`double_spent`, `low_speed`, …).
fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<unserialisable: {e}>"),
    }
}

fn dec(amount: Amount) -> Decimal {
    amount.as_decimal()
}

/// Identity of the event being applied, written into every row it touches.
#[derive(Clone, Copy)]
struct Stamp {
    event_id: Uuid,
    at: DateTime<Utc>,
}

/// Applies `event` to the read models through `conn` (which must be inside a transaction).
pub async fn apply(conn: &mut PgConnection, event: &Envelope) -> Result<Applied, ApplyError> {
    let stamp = Stamp {
        event_id: event.event_id().as_uuid(),
        at: event.timestamp(),
    };
    if !record_applied(conn, event, stamp).await? {
        return Ok(Applied::Duplicate);
    }
    let aggregate = event.aggregate_id().as_uuid();
    match event.data() {
        EventData::InvoiceCreated(e) => invoice_created(conn, stamp, aggregate, e).await?,
        EventData::InvoicePaid(e) => invoice_paid(conn, stamp, aggregate, e).await?,
        EventData::InvoiceExpired(e) => {
            let sql = "UPDATE proj_invoices SET expired_at = COALESCE(expired_at, $2), \
                       version = version + 1, last_event_id = $3, last_event_at = $4 WHERE invoice_id = $1";
            let updated = sqlx::query(sql)
                .bind(aggregate)
                .bind(e.expired_at)
                .bind(stamp.event_id)
                .bind(stamp.at)
                .execute(&mut *conn)
                .await?;
            found(updated.rows_affected(), "invoice", aggregate)?;
        }
        EventData::InvoiceCancelled(e) => {
            let sql = "UPDATE proj_invoices SET cancelled_at = COALESCE(cancelled_at, $2), \
                       cancellation_reason = COALESCE(cancellation_reason, $3), \
                       version = version + 1, last_event_id = $4, last_event_at = $5 WHERE invoice_id = $1";
            let updated = sqlx::query(sql)
                .bind(aggregate)
                .bind(e.cancelled_at)
                .bind(wire(&e.reason))
                .bind(stamp.event_id)
                .bind(stamp.at)
                .execute(&mut *conn)
                .await?;
            found(updated.rows_affected(), "invoice", aggregate)?;
        }
        EventData::PaymentDetected(e) => payment_detected(conn, stamp, aggregate, e).await?,
        EventData::PaymentConfirming(e) => {
            let counts: (i64, i64) = sqlx::query_as(
                "WITH p AS (UPDATE proj_payments SET confirmations = GREATEST(confirmations, $3), \
                                   block_height = COALESCE(block_height, $4), \
                                   status = CASE WHEN status = 'detected' THEN 'confirming' ELSE status END, \
                                   version = version + 1, last_event_id = $5, last_event_at = $6 \
                            WHERE payment_id = $1 RETURNING 1), \
                      i AS (UPDATE proj_invoices SET version = version + 1, last_event_id = $5, last_event_at = $6 \
                            WHERE invoice_id = $2 RETURNING 1) \
                 SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM i)",
            )
            .bind(aggregate)
            .bind(e.invoice_id.as_uuid())
            .bind(e.confirmations as i32)
            .bind(e.block_height as i64)
            .bind(stamp.event_id)
            .bind(stamp.at)
            .fetch_one(&mut *conn)
            .await?;
            both_found(counts, aggregate, e.invoice_id.as_uuid())?;
        }
        EventData::PaymentConfirmed(e) => payment_confirmed(conn, stamp, aggregate, e).await?,
        EventData::PaymentFailed(e) => payment_failed(conn, stamp, aggregate, e).await?,
        EventData::SettlementCreated(e) => settlement_created(conn, stamp, aggregate, e).await?,
        EventData::SettlementCompleted(e) => {
            let change = SettlementChange::Completed {
                settled_at: e.settled_at,
            };
            settlement_changed(conn, stamp, aggregate, change).await?
        }
        EventData::SettlementFailed(e) => {
            let change = SettlementChange::Failed {
                at: e.failed_at,
                reason: wire(&e.reason),
                details: e.details.clone(),
                will_retry: e.will_retry,
            };
            settlement_changed(conn, stamp, aggregate, change).await?
        }
        EventData::MerchantCreated(e) => merchant_created(conn, stamp, aggregate, e).await?,
        EventData::SettingsUpdated(e) => settings_updated(conn, stamp, aggregate, e).await?,
        EventData::MerchantSuspended(e) => {
            // Since MerchantReinstated (decision 0026): a suspension at or before the last reinstatement is stale
            // and changes nothing; a suspension of an active merchant starts anew. Without reinstatements this is
            // the former statement (`suspended_at = COALESCE(suspended_at, $2)`).
            let sql = "UPDATE proj_merchants SET \
                       status = CASE WHEN reinstated_at IS NOT NULL AND $2 <= reinstated_at THEN status \
                                     ELSE 'suspended' END, \
                       suspended_at = CASE WHEN reinstated_at IS NOT NULL AND $2 <= reinstated_at THEN suspended_at \
                                           WHEN status = 'suspended' THEN COALESCE(suspended_at, $2) ELSE $2 END, \
                       suspension_reason = CASE WHEN reinstated_at IS NOT NULL AND $2 <= reinstated_at \
                                                THEN suspension_reason ELSE $3 END, \
                       suspension_details = CASE WHEN reinstated_at IS NOT NULL AND $2 <= reinstated_at \
                                                 THEN suspension_details ELSE $4 END, \
                       version = version + 1, last_event_id = $5, last_event_at = $6 WHERE merchant_id = $1";
            let updated = sqlx::query(sql)
                .bind(aggregate)
                .bind(e.suspended_at)
                .bind(wire(&e.reason))
                .bind(&e.details)
                .bind(stamp.event_id)
                .bind(stamp.at)
                .execute(&mut *conn)
                .await?;
            found(updated.rows_affected(), "merchant", aggregate)?;
        }
        EventData::MerchantReinstated(e) => {
            // Added with MerchantReinstated (decision 0026), in the same per-event style: active again unless
            // suspended after this reinstatement; the last reinstatement kept (GREATEST ignores NULL).
            let sql = "UPDATE proj_merchants SET \
                       status = CASE WHEN suspended_at IS NULL OR $2 >= suspended_at THEN 'active' ELSE status END, \
                       reinstated_at = GREATEST(reinstated_at, $2), \
                       version = version + 1, last_event_id = $3, last_event_at = $4 WHERE merchant_id = $1";
            let updated = sqlx::query(sql)
                .bind(aggregate)
                .bind(e.reinstated_at)
                .bind(stamp.event_id)
                .bind(stamp.at)
                .execute(&mut *conn)
                .await?;
            found(updated.rows_affected(), "merchant", aggregate)?;
        }
        // Added with WebhookEndpointDisabled (decision 0029): no read model changes.
        EventData::WebhookEndpointDisabled(_) => {}
    }
    Ok(Applied::Applied)
}

/// Records the event as applied — and, for an event about an invoice, adds it to the invoice's history — in one
/// statement. `false`: it had been applied before.
async fn record_applied(
    conn: &mut PgConnection,
    event: &Envelope,
    stamp: Stamp,
) -> Result<bool, ApplyError> {
    let Some(invoice) = event.invoice_id() else {
        let inserted = sqlx::query(
            "INSERT INTO proj_applied_events (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(stamp.event_id)
        .execute(&mut *conn)
        .await?;
        return Ok(inserted.rows_affected() == 1);
    };
    let data = serde_json::to_value(event.data()).map_err(|e| sqlx::Error::Encode(e.into()))?;
    let first: i64 = sqlx::query_scalar(
        "WITH first AS (INSERT INTO proj_applied_events (event_id) VALUES ($1) \
                        ON CONFLICT (event_id) DO NOTHING RETURNING event_id), \
              history AS (INSERT INTO proj_invoice_history (event_id, invoice_id, event_type, aggregate_id, \
                                                            occurred_at, actor, data) \
                          SELECT event_id, $2, $3, $4, $5, $6, $7 FROM first ON CONFLICT (event_id) DO NOTHING) \
         SELECT count(*) FROM first",
    )
    .bind(stamp.event_id)
    .bind(invoice.as_uuid())
    .bind(event.event_type().as_str())
    .bind(event.aggregate_id().to_string())
    .bind(stamp.at)
    .bind(event.metadata().actor.to_string())
    .bind(data)
    .fetch_one(&mut *conn)
    .await?;
    Ok(first == 1)
}

/// `(rows found, invoices found)` of a payment statement: both must be 1.
fn both_found(counts: (i64, i64), payment: Uuid, invoice: Uuid) -> Result<(), ApplyError> {
    found(counts.0 as u64, "payment", payment)?;
    found(counts.1 as u64, "invoice", invoice)
}

fn found(rows: u64, what: &str, id: Uuid) -> Result<(), ApplyError> {
    if rows == 0 {
        return Err(ApplyError::Unknown(format!(
            "{what} {id} is unknown to the read models (its creation was never applied)"
        )));
    }
    Ok(())
}

async fn invoice_created(
    conn: &mut PgConnection,
    stamp: Stamp,
    invoice: Uuid,
    e: &InvoiceCreated,
) -> Result<(), ApplyError> {
    // An invoice is created once; a second InvoiceCreated for the same id (another event id) is stale.
    sqlx::query(
        "INSERT INTO proj_invoices (invoice_id, merchant_id, currency, total_amount, crypto_currency, \
                                    crypto_amount_due, created_at, expires_at, version, last_event_id, last_event_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $7) ON CONFLICT (invoice_id) DO NOTHING",
    )
    .bind(invoice)
    .bind(e.merchant_id.as_uuid())
    .bind(e.currency.code())
    .bind(dec(e.total_amount))
    .bind(e.crypto_currency.code())
    .bind(dec(e.crypto_amount))
    .bind(stamp.at)
    .bind(e.expires_at)
    .bind(stamp.event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn invoice_paid(
    conn: &mut PgConnection,
    stamp: Stamp,
    invoice: Uuid,
    e: &InvoicePaid,
) -> Result<(), ApplyError> {
    let ids: Vec<Uuid> = e.payment_ids.iter().map(|p| p.as_uuid()).collect();
    // Confirmed at once when every counted payment already is (zero-confirmation payments).
    let updated = sqlx::query(
        "UPDATE proj_invoices SET paid_at = COALESCE(paid_at, $2), amount_paid = $3, overpaid_amount = $4, \
                late_payment = $5, payment_ids = $6, \
                confirmed_at = CASE WHEN confirmed_at IS NULL AND NOT EXISTS ( \
                    SELECT 1 FROM unnest($6::uuid[]) AS counted(id) WHERE NOT EXISTS ( \
                        SELECT 1 FROM proj_payments p WHERE p.payment_id = counted.id AND p.status = 'confirmed')) \
                    THEN $8 ELSE confirmed_at END, \
                version = version + 1, last_event_id = $7, last_event_at = $8 WHERE invoice_id = $1",
    )
    .bind(invoice)
    .bind(e.paid_at)
    .bind(dec(e.crypto_amount_paid))
    .bind(dec(e.overpaid_amount))
    .bind(e.late_payment)
    .bind(&ids)
    .bind(stamp.event_id)
    .bind(stamp.at)
    .execute(&mut *conn)
    .await?;
    found(updated.rows_affected(), "invoice", invoice)
}

async fn payment_detected(
    conn: &mut PgConnection,
    stamp: Stamp,
    payment: Uuid,
    e: &PaymentDetected,
) -> Result<(), ApplyError> {
    // A detection repeated under another event id adds nothing (the payment row exists).
    let updated = sqlx::query(
        "WITH p AS (INSERT INTO proj_payments (payment_id, invoice_id, merchant_id, crypto_currency, network, \
                                               transaction_hash, amount, amount_due, coverage, late, \
                                               required_confirmations, status, detected_at, version, \
                                               last_event_id, last_event_at) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'detected', $12, 1, $13, $14) \
                    ON CONFLICT (payment_id) DO NOTHING RETURNING amount) \
         UPDATE proj_invoices SET amount_paid = amount_paid + COALESCE((SELECT amount FROM p), 0), \
                payments_detected = payments_detected + (SELECT count(*) FROM p)::int, \
                version = version + 1, last_event_id = $13, last_event_at = $14 WHERE invoice_id = $2",
    )
    .bind(payment)
    .bind(e.invoice_id.as_uuid())
    .bind(e.merchant_id.as_uuid())
    .bind(e.crypto_currency.code())
    .bind(wire(&e.network))
    .bind(e.transaction_hash.as_str())
    .bind(dec(e.amount))
    .bind(dec(e.amount_due))
    .bind(wire(&e.coverage))
    .bind(e.late)
    .bind(e.required_confirmations as i32)
    .bind(e.detected_at)
    .bind(stamp.event_id)
    .bind(stamp.at)
    .execute(&mut *conn)
    .await?;
    found(updated.rows_affected(), "invoice", e.invoice_id.as_uuid())
}

async fn payment_confirmed(
    conn: &mut PgConnection,
    stamp: Stamp,
    payment: Uuid,
    e: &PaymentConfirmed,
) -> Result<(), ApplyError> {
    // One statement: the payment becomes confirmed (a failed one stays failed), the invoice counts it once, and a
    // paid invoice is confirmed when this was the last of its counted payments to confirm. `old` is the payment
    // as it was before this statement (the other CTEs see the same snapshot).
    let counts: (i64, i64) = sqlx::query_as(
        "WITH old AS (SELECT status FROM proj_payments WHERE payment_id = $1 FOR UPDATE), \
              p AS (UPDATE proj_payments SET \
                        status = CASE WHEN status = 'failed' THEN status ELSE 'confirmed' END, \
                        confirmations = GREATEST(confirmations, $3), block_height = COALESCE(block_height, $4), \
                        confirmed_at = CASE WHEN status = 'failed' THEN confirmed_at \
                                            ELSE COALESCE(confirmed_at, $5) END, \
                        version = version + 1, last_event_id = $6, last_event_at = $7 \
                    WHERE payment_id = $1 RETURNING 1), \
              i AS (UPDATE proj_invoices SET \
                        payments_confirmed = payments_confirmed \
                            + (SELECT count(*) FROM old WHERE status IN ('detected', 'confirming'))::int, \
                        confirmed_at = CASE \
                            WHEN paid_at IS NOT NULL AND confirmed_at IS NULL \
                             AND EXISTS (SELECT 1 FROM old WHERE status <> 'failed') \
                             AND NOT EXISTS (SELECT 1 FROM unnest(payment_ids) AS counted(id) \
                                             WHERE counted.id <> $1 AND NOT EXISTS ( \
                                                 SELECT 1 FROM proj_payments q \
                                                 WHERE q.payment_id = counted.id AND q.status = 'confirmed')) \
                            THEN $7 ELSE confirmed_at END, \
                        version = version + 1, last_event_id = $6, last_event_at = $7 \
                    WHERE invoice_id = $2 AND EXISTS (SELECT 1 FROM old) RETURNING 1) \
         SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM i)",
    )
    .bind(payment)
    .bind(e.invoice_id.as_uuid())
    .bind(e.confirmations as i32)
    .bind(e.block_height.map(|h| h as i64))
    .bind(e.confirmed_at)
    .bind(stamp.event_id)
    .bind(stamp.at)
    .fetch_one(&mut *conn)
    .await?;
    both_found(counts, payment, e.invoice_id.as_uuid())
}

async fn payment_failed(
    conn: &mut PgConnection,
    stamp: Stamp,
    payment: Uuid,
    e: &PaymentFailed,
) -> Result<(), ApplyError> {
    // The first failure takes the payment's amount back out of the invoice (and its confirmation, if it had one).
    let counts: (i64, i64) = sqlx::query_as(
        "WITH old AS (SELECT status, amount FROM proj_payments WHERE payment_id = $1 FOR UPDATE), \
              p AS (UPDATE proj_payments SET status = 'failed', failed_at = COALESCE(failed_at, $3), \
                        failure_reason = COALESCE(failure_reason, $4), \
                        version = version + 1, last_event_id = $5, last_event_at = $6 \
                    WHERE payment_id = $1 RETURNING 1), \
              i AS (UPDATE proj_invoices SET \
                        amount_paid = amount_paid - COALESCE((SELECT amount FROM old WHERE status <> 'failed'), 0), \
                        payments_failed = payments_failed + (SELECT count(*) FROM old WHERE status <> 'failed')::int, \
                        payments_confirmed = payments_confirmed \
                            - (SELECT count(*) FROM old WHERE status = 'confirmed')::int, \
                        version = version + 1, last_event_id = $5, last_event_at = $6 \
                    WHERE invoice_id = $2 AND EXISTS (SELECT 1 FROM old) RETURNING 1) \
         SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM i)",
    )
    .bind(payment)
    .bind(e.invoice_id.as_uuid())
    .bind(e.failed_at)
    .bind(wire(&e.reason))
    .bind(stamp.event_id)
    .bind(stamp.at)
    .fetch_one(&mut *conn)
    .await?;
    both_found(counts, payment, e.invoice_id.as_uuid())
}

/// What one settlement adds to its merchant's balance in a given status.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Contribution {
    pending_net: Decimal,
    settled_gross: Decimal,
    settled_fees: Decimal,
    settled_net: Decimal,
    failed_net: Decimal,
    completed: i32,
}

impl Contribution {
    fn of(status: &str, gross: Decimal, fee: Decimal, net: Decimal) -> Contribution {
        match status {
            "completed" => Contribution {
                settled_gross: gross,
                settled_fees: fee,
                settled_net: net,
                completed: 1,
                ..Default::default()
            },
            "failed" => Contribution {
                failed_net: net,
                ..Default::default()
            },
            // pending, retrying
            _ => Contribution {
                pending_net: net,
                ..Default::default()
            },
        }
    }

    fn minus(self, before: Contribution) -> Contribution {
        Contribution {
            pending_net: self.pending_net - before.pending_net,
            settled_gross: self.settled_gross - before.settled_gross,
            settled_fees: self.settled_fees - before.settled_fees,
            settled_net: self.settled_net - before.settled_net,
            failed_net: self.failed_net - before.failed_net,
            completed: self.completed - before.completed,
        }
    }
}

async fn balance_delta(
    conn: &mut PgConnection,
    stamp: Stamp,
    merchant: Uuid,
    currency: &str,
    d: Contribution,
) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO proj_merchant_balances AS b (merchant_id, currency, pending_net, settled_gross, settled_fees, \
                                                  settled_net, failed_net, settlements_completed, version, \
                                                  last_event_id, last_event_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10) \
         ON CONFLICT (merchant_id, currency) DO UPDATE SET \
             pending_net = b.pending_net + EXCLUDED.pending_net, \
             settled_gross = b.settled_gross + EXCLUDED.settled_gross, \
             settled_fees = b.settled_fees + EXCLUDED.settled_fees, \
             settled_net = b.settled_net + EXCLUDED.settled_net, \
             failed_net = b.failed_net + EXCLUDED.failed_net, \
             settlements_completed = b.settlements_completed + EXCLUDED.settlements_completed, \
             version = b.version + 1, last_event_id = EXCLUDED.last_event_id, last_event_at = EXCLUDED.last_event_at",
    )
    .bind(merchant)
    .bind(currency)
    .bind(d.pending_net)
    .bind(d.settled_gross)
    .bind(d.settled_fees)
    .bind(d.settled_net)
    .bind(d.failed_net)
    .bind(d.completed)
    .bind(stamp.event_id)
    .bind(stamp.at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn settlement_created(
    conn: &mut PgConnection,
    stamp: Stamp,
    settlement: Uuid,
    e: &SettlementCreated,
) -> Result<(), ApplyError> {
    // A new settlement is pending: its net is owed to the merchant. Created twice (another event id): nothing.
    sqlx::query(
        "WITH s AS (INSERT INTO proj_settlements (settlement_id, invoice_id, merchant_id, currency, gross_amount, \
                                                  platform_fee_amount, net_amount, fee_percentage, status, \
                                                  created_at, version, last_event_id, last_event_at) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, 1, $10, $9) \
                    ON CONFLICT (settlement_id) DO NOTHING RETURNING merchant_id, currency, net_amount) \
         INSERT INTO proj_merchant_balances AS b (merchant_id, currency, pending_net, version, last_event_id, \
                                                  last_event_at) \
         SELECT merchant_id, currency, net_amount, 1, $10, $9 FROM s \
         ON CONFLICT (merchant_id, currency) DO UPDATE SET pending_net = b.pending_net + EXCLUDED.pending_net, \
             version = b.version + 1, last_event_id = EXCLUDED.last_event_id, last_event_at = EXCLUDED.last_event_at",
    )
    .bind(settlement)
    .bind(e.invoice_id.as_uuid())
    .bind(e.merchant_id.as_uuid())
    .bind(e.currency.code())
    .bind(dec(e.gross_amount))
    .bind(dec(e.platform_fee_amount))
    .bind(dec(e.net_amount))
    .bind(e.fee_percentage.as_decimal())
    .bind(stamp.at)
    .bind(stamp.event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

enum SettlementChange {
    Completed {
        settled_at: DateTime<Utc>,
    },
    Failed {
        at: DateTime<Utc>,
        reason: String,
        details: Option<String>,
        will_retry: bool,
    },
}

async fn settlement_changed(
    conn: &mut PgConnection,
    stamp: Stamp,
    settlement: Uuid,
    change: SettlementChange,
) -> Result<(), ApplyError> {
    type Row = (String, Uuid, String, Decimal, Decimal, Decimal);
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, merchant_id, currency, gross_amount, platform_fee_amount, net_amount \
         FROM proj_settlements WHERE settlement_id = $1 FOR UPDATE",
    )
    .bind(settlement)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((old, merchant, currency, gross, fee, net)) = row else {
        return Err(ApplyError::Unknown(format!(
            "settlement {settlement} is unknown to the read models (its creation was never applied)"
        )));
    };
    // A completed settlement is final; anything after it about the payout is stale.
    let new = match (&change, old.as_str()) {
        (_, "completed") => "completed",
        (SettlementChange::Completed { .. }, _) => "completed",
        (
            SettlementChange::Failed {
                will_retry: true, ..
            },
            _,
        ) => "retrying",
        (SettlementChange::Failed { .. }, _) => "failed",
    };
    match change {
        SettlementChange::Completed { settled_at } => {
            sqlx::query(
                "UPDATE proj_settlements SET status = $2, settled_at = COALESCE(settled_at, $3), \
                        version = version + 1, last_event_id = $4, last_event_at = $5 WHERE settlement_id = $1",
            )
            .bind(settlement)
            .bind(new)
            .bind(settled_at)
            .bind(stamp.event_id)
            .bind(stamp.at)
            .execute(&mut *conn)
            .await?;
        }
        SettlementChange::Failed {
            at,
            reason,
            details,
            ..
        } => {
            let counts = i32::from(old != "completed");
            sqlx::query(
                "UPDATE proj_settlements SET status = $2, failures = failures + $3, \
                        failure_reason = CASE WHEN $3 = 1 THEN $4 ELSE failure_reason END, \
                        failure_details = CASE WHEN $3 = 1 THEN $5 ELSE failure_details END, \
                        failed_at = CASE WHEN $3 = 1 THEN $6 ELSE failed_at END, \
                        version = version + 1, last_event_id = $7, last_event_at = $8 WHERE settlement_id = $1",
            )
            .bind(settlement)
            .bind(new)
            .bind(counts)
            .bind(reason)
            .bind(details)
            .bind(at)
            .bind(stamp.event_id)
            .bind(stamp.at)
            .execute(&mut *conn)
            .await?;
        }
    }
    let d = Contribution::of(new, gross, fee, net).minus(Contribution::of(&old, gross, fee, net));
    balance_delta(conn, stamp, merchant, &currency, d).await
}

async fn merchant_created(
    conn: &mut PgConnection,
    stamp: Stamp,
    merchant: Uuid,
    e: &MerchantCreated,
) -> Result<(), ApplyError> {
    let accepted: Vec<&str> = e
        .accepted_crypto_currencies
        .iter()
        .map(|a| a.code())
        .collect();
    sqlx::query(
        "INSERT INTO proj_merchants (merchant_id, business_name, status, default_currency, settlement_currency, \
                                     fee_percentage, accepted_crypto_currencies, speed_policy, created_at, \
                                     version, last_event_id, last_event_at, contact_email, contact_phone, \
                                     contact_locale) \
         VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, 1, $9, $8, $10, $11, $12) \
         ON CONFLICT (merchant_id) DO NOTHING",
    )
    .bind(merchant)
    .bind(&e.business_name)
    .bind(e.default_currency.code())
    .bind(e.settlement_currency.code())
    .bind(e.fee_percentage.as_decimal())
    .bind(&accepted)
    .bind(wire(&e.speed_policy))
    .bind(stamp.at)
    .bind(stamp.event_id)
    .bind(&e.contact.email)
    .bind(&e.contact.phone)
    .bind(&e.contact.locale)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn settings_updated(
    conn: &mut PgConnection,
    stamp: Stamp,
    merchant: Uuid,
    e: &SettingsUpdated,
) -> Result<(), ApplyError> {
    let c = &e.changes;
    let accepted: Option<Vec<&str>> = c
        .accepted_crypto_currencies
        .as_ref()
        .map(|change| change.new.iter().map(|a| a.code()).collect());
    let updated = sqlx::query(
        "UPDATE proj_merchants SET default_currency = COALESCE($2, default_currency), \
                settlement_currency = COALESCE($3, settlement_currency), \
                invoice_expiry_minutes = COALESCE($4, invoice_expiry_minutes), \
                speed_policy = COALESCE($5, speed_policy), \
                payment_tolerance_percentage = COALESCE($6, payment_tolerance_percentage), \
                accepted_crypto_currencies = COALESCE($7, accepted_crypto_currencies), \
                contact_email = CASE WHEN $10 THEN $11 ELSE contact_email END, \
                contact_phone = CASE WHEN $10 THEN $12 ELSE contact_phone END, \
                contact_locale = CASE WHEN $10 THEN $13 ELSE contact_locale END, \
                version = version + 1, last_event_id = $8, last_event_at = $9 WHERE merchant_id = $1",
    )
    .bind(merchant)
    .bind(c.default_currency.as_ref().map(|x| x.new.code()))
    .bind(c.settlement_currency.as_ref().map(|x| x.new.code()))
    .bind(c.invoice_expiry_minutes.as_ref().map(|x| x.new as i32))
    .bind(c.speed_policy.as_ref().map(|x| wire(&x.new)))
    .bind(
        c.payment_tolerance_percentage
            .as_ref()
            .map(|x| x.new.as_decimal()),
    )
    .bind(accepted)
    .bind(stamp.event_id)
    .bind(stamp.at)
    .bind(c.contact.is_some())
    .bind(c.contact.as_ref().and_then(|x| x.new.email.as_deref()))
    .bind(c.contact.as_ref().and_then(|x| x.new.phone.as_deref()))
    .bind(c.contact.as_ref().and_then(|x| x.new.locale.as_deref()))
    .execute(&mut *conn)
    .await?;
    found(updated.rows_affected(), "merchant", merchant)
}
