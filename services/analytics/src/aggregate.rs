//! One event → the daily aggregates, inside the consumer's own transaction (mode b).
//!
//! Guarantees:
//! - Exactly once: the runtime commits these writes with the consumer's offset, and the caller de-duplicates by
//!   event id in the same transaction, so neither a redelivery nor a re-published event is counted twice.
//! - Days are UTC days of the event's own time (the envelope's `timestamp`; `occurred_at` for a view).
//! - Counters live in rows sharded by the record's (topic, partition) ([`Shard`]): one lane writes a shard, so
//!   lanes never wait on each other's row locks; readers sum over shards.
//! - What a day counts: invoices created, paid (first `InvoicePaid` of the invoice), expired, cancelled; the
//!   conversion cohort (invoices created that day that are paid since — counted on the creation day when the
//!   invoice is paid); checkout views; gross volume of the invoices paid that day in their currency; fees and net
//!   of the settlements completed that day in their currency; one sample per confirmed payment of the time from
//!   its invoice's `InvoiceCreated` to its `PaymentConfirmed`.
//! - An `InvoicePaid` or `PaymentConfirmed` of an invoice whose creation was never seen is a business error
//!   ([`AggregateError::Unknown`]): retried per the group's policy (10 s, 10 s), then dead-lettered.

use chrono::{DateTime, NaiveDate, Utc};
use events::EventData;
use events::money::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkout_events::Input;

/// The source partition whose lane writes a row.
#[derive(Debug, Clone)]
pub struct Shard {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("{0}")]
    Unknown(String),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl From<AggregateError> for runtime::HandlerError {
    fn from(error: AggregateError) -> Self {
        match error {
            AggregateError::Unknown(_) => runtime::HandlerError::business(error),
            AggregateError::Db(db) => runtime::HandlerError::from(db),
        }
    }
}

/// Increments of one day's counters.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    created: i64,
    paid: i64,
    expired: i64,
    cancelled: i64,
    converted: i64,
    views: i64,
}

fn day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

async fn count(
    conn: &mut PgConnection,
    shard: &Shard,
    merchant: Uuid,
    day: NaiveDate,
    c: Counters,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO analytics_daily AS d (merchant_id, day, topic, partition, invoices_created, invoices_paid, \
                                           invoices_expired, invoices_cancelled, invoices_converted, checkout_views) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (merchant_id, day, topic, partition) DO UPDATE SET \
             invoices_created = d.invoices_created + EXCLUDED.invoices_created, \
             invoices_paid = d.invoices_paid + EXCLUDED.invoices_paid, \
             invoices_expired = d.invoices_expired + EXCLUDED.invoices_expired, \
             invoices_cancelled = d.invoices_cancelled + EXCLUDED.invoices_cancelled, \
             invoices_converted = d.invoices_converted + EXCLUDED.invoices_converted, \
             checkout_views = d.checkout_views + EXCLUDED.checkout_views",
    )
    .bind(merchant)
    .bind(day)
    .bind(&shard.topic)
    .bind(shard.partition)
    .bind(c.created)
    .bind(c.paid)
    .bind(c.expired)
    .bind(c.cancelled)
    .bind(c.converted)
    .bind(c.views)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds to one day's money in one currency: (gross volume, fees, net settled).
async fn money(
    conn: &mut PgConnection,
    shard: &Shard,
    merchant: Uuid,
    day: NaiveDate,
    currency: &str,
    (gross, fees, net): (Decimal, Decimal, Decimal),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO analytics_daily_money AS m (merchant_id, day, currency, topic, partition, gross_volume, fees, \
                                                 net_settled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (merchant_id, day, currency, topic, partition) DO UPDATE SET \
             gross_volume = m.gross_volume + EXCLUDED.gross_volume, \
             fees = m.fees + EXCLUDED.fees, \
             net_settled = m.net_settled + EXCLUDED.net_settled",
    )
    .bind(merchant)
    .bind(day)
    .bind(currency)
    .bind(&shard.topic)
    .bind(shard.partition)
    .bind(gross)
    .bind(fees)
    .bind(net)
    .execute(conn)
    .await?;
    Ok(())
}

type InvoiceFacts = (Uuid, DateTime<Utc>, String, Decimal, Option<DateTime<Utc>>);

async fn invoice_facts(
    conn: &mut PgConnection,
    invoice: Uuid,
) -> Result<InvoiceFacts, AggregateError> {
    let row: Option<InvoiceFacts> = sqlx::query_as(
        "SELECT merchant_id, created_at, currency, total_amount, paid_at FROM analytics_invoices \
         WHERE invoice_id = $1 FOR UPDATE",
    )
    .bind(invoice)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| {
        AggregateError::Unknown(format!(
            "invoice {invoice} is unknown to analytics (its InvoiceCreated was never aggregated)"
        ))
    })
}

/// Adds `input` to the aggregates. The caller has already checked it is not a duplicate.
pub async fn aggregate(
    conn: &mut PgConnection,
    shard: &Shard,
    input: &Input,
) -> Result<(), AggregateError> {
    let event = match input {
        Input::CheckoutViewed(view) => {
            let c = Counters {
                views: 1,
                ..Counters::default()
            };
            count(
                conn,
                shard,
                view.merchant_id.as_uuid(),
                day(view.occurred_at),
                c,
            )
            .await?;
            return Ok(());
        }
        Input::Domain(event) => event,
    };
    let at = event.timestamp();
    let merchant = event.merchant_id().as_uuid();
    match event.data() {
        EventData::InvoiceCreated(e) => {
            let inserted = sqlx::query(
                "INSERT INTO analytics_invoices (invoice_id, merchant_id, created_at, currency, total_amount) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (invoice_id) DO NOTHING",
            )
            .bind(event.aggregate_id().as_uuid())
            .bind(merchant)
            .bind(at)
            .bind(e.currency.code())
            .bind(e.total_amount.as_decimal())
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                let c = Counters {
                    created: 1,
                    ..Counters::default()
                };
                count(conn, shard, merchant, day(at), c).await?;
            }
        }
        EventData::InvoicePaid(_) => {
            let invoice = event.aggregate_id().as_uuid();
            let (_, created_at, currency, total, paid_at) = invoice_facts(conn, invoice).await?;
            if paid_at.is_none() {
                sqlx::query("UPDATE analytics_invoices SET paid_at = $2 WHERE invoice_id = $1")
                    .bind(invoice)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                let paid = Counters {
                    paid: 1,
                    ..Counters::default()
                };
                count(conn, shard, merchant, day(at), paid).await?;
                let converted = Counters {
                    converted: 1,
                    ..Counters::default()
                };
                count(conn, shard, merchant, day(created_at), converted).await?;
                let volume = (total, Decimal::ZERO, Decimal::ZERO);
                money(conn, shard, merchant, day(at), &currency, volume).await?;
            }
        }
        EventData::InvoiceExpired(_) => {
            let c = Counters {
                expired: 1,
                ..Counters::default()
            };
            count(conn, shard, merchant, day(at), c).await?;
        }
        EventData::InvoiceCancelled(_) => {
            let c = Counters {
                cancelled: 1,
                ..Counters::default()
            };
            count(conn, shard, merchant, day(at), c).await?;
        }
        EventData::PaymentConfirmed(e) => {
            let invoice = e.invoice_id.as_uuid();
            let (_, created_at, _, _, _) = invoice_facts(conn, invoice).await?;
            let millis = (at - created_at).num_milliseconds().max(0);
            sqlx::query(
                "INSERT INTO analytics_confirmation_times (payment_id, invoice_id, merchant_id, day, millis) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(event.aggregate_id().as_uuid())
            .bind(invoice)
            .bind(merchant)
            .bind(day(at))
            .bind(millis)
            .execute(&mut *conn)
            .await?;
        }
        EventData::SettlementCompleted(e) => {
            let amounts = (
                Decimal::ZERO,
                e.platform_fee_amount.as_decimal(),
                e.net_amount.as_decimal(),
            );
            money(conn, shard, merchant, day(at), e.currency.code(), amounts).await?;
        }
        // Not part of any aggregate (still de-duplicated, so a later version that counts them starts clean).
        EventData::PaymentDetected(_)
        | EventData::PaymentConfirming(_)
        | EventData::PaymentFailed(_)
        | EventData::SettlementCreated(_)
        | EventData::SettlementFailed(_)
        | EventData::MerchantCreated(_)
        | EventData::MerchantSuspended(_)
        | EventData::SettingsUpdated(_) => {}
    }
    Ok(())
}
