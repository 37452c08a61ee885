//! The checkout page's producer API for `crypto-checkout.analytics-events` (the spec's "Metrics and reporting",
//! key "Date partition"; contract `events::analytics`, decisions 0011 and 0021): what the checkout front end (and
//! the simulator playing it) calls to report that a customer opened an invoice's checkout, chose a payment
//! method, or abandoned it. Records go through the
//! outbox like every other producer's, so they are published at least once, in per-key commit order, and only if
//! the producer's transaction commits.
//!
//! The calls (the same for the page's other records, `PaymentMethodChosen` and `CheckoutAbandoned`:
//! [`record_method_chosen`], [`record_abandoned`] in the caller's transaction, [`record_events`] for any mix):
//! - [`record_view`]`(conn, merchant_id, invoice_id, occurred_at) -> Result<CheckoutViewed, OutboxError>`: one
//!   view, appended in the caller's open transaction (`&mut *tx`) with whatever else it writes; returns the
//!   record (appended, or already waiting in the outbox).
//! - [`record_views`]`(pool, &[CheckoutViewed]) -> Result<usize, OutboxError>`: many views (a batch, a replay, a
//!   simulator), in short transactions of at most [`VIEWS_PER_TRANSACTION`] records in the order given; returns
//!   how many were appended (those already waiting in the outbox are skipped). Short, because every view of one
//!   UTC day shares a key and so the writer's lock on it (decision 0021).
//!
//! Guarantees: the record id of a view made by [`record_view`] is derived from its invoice and instant
//! ([`view_id`]; [`method_id`] and [`abandon_id`] likewise for the other records), so a producer may retry after an unknown outcome: a record still waiting in the outbox is not
//! appended again (the outbox's event ids are unique), one already published is appended and published again, and
//! analytics-aggregation, which de-duplicates by record id (decision 0011), counts the view once either way. An
//! invalid record fails with [`OutboxError::Invalid`] before anything is written; a database error leaves the
//! caller's transaction to roll back ([`record_view`]) or stops [`record_views`] after the transactions already
//! committed (it returns the error; re-running it with the same records is safe, for the same reason). Two
//! producers appending the same id at the same instant: one of them gets the database's unique violation and
//! retries.

use chrono::{DateTime, Utc};
use events::analytics::{
    AbandonReason, AbandonStage, AnalyticsEvent, CheckoutAbandoned, CheckoutViewed,
    PaymentMethodChosen,
};
use events::money::CryptoAsset;
use events::payload::Network;
use events::{EventId, InvoiceId, MerchantId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::OutboxError;

/// Namespace of derived view ids. Never change it.
pub const VIEW_NAMESPACE: Uuid = Uuid::from_u128(0x3c1e_a7d0_52f4_4b86_9e0d_71a8_c4f2_6b35);

/// At most this many views per transaction in [`record_views`].
pub const VIEWS_PER_TRANSACTION: usize = 500;

/// The record id of a view of `invoice` at `occurred_at` (to the microsecond): UUID v5, the same on every retry.
pub fn view_id(invoice: InvoiceId, occurred_at: DateTime<Utc>) -> EventId {
    instant_id(VIEW_NAMESPACE, invoice, occurred_at)
}

/// Namespace of derived `PaymentMethodChosen` ids. Never change it.
pub const METHOD_NAMESPACE: Uuid = Uuid::from_u128(0x8f2d_61c4_0b7a_4e53_a1c9_5d3e_70b2_94f6);
/// Namespace of derived `CheckoutAbandoned` ids. Never change it.
pub const ABANDON_NAMESPACE: Uuid = Uuid::from_u128(0x27b9_e05a_c3d1_4f68_8e4b_19f7_a6c2_d053);

fn instant_id(namespace: Uuid, invoice: InvoiceId, occurred_at: DateTime<Utc>) -> EventId {
    let mut name = invoice.as_uuid().as_bytes().to_vec();
    name.extend_from_slice(&occurred_at.timestamp_micros().to_be_bytes());
    EventId::derived(namespace, &name)
}

/// The record id of a payment method chosen on `invoice`'s checkout at `occurred_at` (UUID v5, the same on every
/// retry).
pub fn method_id(invoice: InvoiceId, occurred_at: DateTime<Utc>) -> EventId {
    instant_id(METHOD_NAMESPACE, invoice, occurred_at)
}

/// The record id of `invoice`'s checkout abandoned at `occurred_at` (UUID v5, the same on every retry).
pub fn abandon_id(invoice: InvoiceId, occurred_at: DateTime<Utc>) -> EventId {
    instant_id(ABANDON_NAMESPACE, invoice, occurred_at)
}

/// Appends a `CheckoutViewed` of `invoice_id`'s checkout at `occurred_at` in the caller's transaction; its id is
/// [`view_id`]. Returns the record.
pub async fn record_view(
    conn: &mut PgConnection,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    occurred_at: DateTime<Utc>,
) -> Result<CheckoutViewed, OutboxError> {
    let view = CheckoutViewed {
        event_id: view_id(invoice_id, occurred_at),
        merchant_id,
        invoice_id,
        occurred_at,
    };
    append_once(conn, &view, view.event_id).await?;
    Ok(view)
}

/// Appends a `PaymentMethodChosen` (`crypto_currency` on `network`, which must carry it) of `invoice_id`'s
/// checkout at `occurred_at` in the caller's transaction; its id is [`method_id`]. Returns the record.
pub async fn record_method_chosen(
    conn: &mut PgConnection,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    crypto_currency: CryptoAsset,
    network: Network,
    occurred_at: DateTime<Utc>,
) -> Result<PaymentMethodChosen, OutboxError> {
    let chosen = PaymentMethodChosen {
        event_id: method_id(invoice_id, occurred_at),
        merchant_id,
        invoice_id,
        crypto_currency,
        network,
        occurred_at,
    };
    append_once(conn, &chosen, chosen.event_id).await?;
    Ok(chosen)
}

/// Appends a `CheckoutAbandoned` of `invoice_id`'s checkout at `occurred_at` (how far the customer came, and
/// why) in the caller's transaction; its id is [`abandon_id`]. Returns the record.
pub async fn record_abandoned(
    conn: &mut PgConnection,
    merchant_id: MerchantId,
    invoice_id: InvoiceId,
    stage: AbandonStage,
    reason: AbandonReason,
    occurred_at: DateTime<Utc>,
) -> Result<CheckoutAbandoned, OutboxError> {
    let abandoned = CheckoutAbandoned {
        event_id: abandon_id(invoice_id, occurred_at),
        merchant_id,
        invoice_id,
        stage,
        reason,
        occurred_at,
    };
    append_once(conn, &abandoned, abandoned.event_id).await?;
    Ok(abandoned)
}

/// Appends `record` (its id `id`) unless a row with that id still waits in the outbox: a retry adds nothing.
async fn append_once<T: events::Publishable>(
    conn: &mut PgConnection,
    record: &T,
    id: EventId,
) -> Result<(), OutboxError> {
    if waiting(conn, &[id.as_uuid()]).await?.is_empty() {
        crate::append(conn, record).await?;
    }
    Ok(())
}

/// Which of `ids` are rows of the outbox (not yet published).
async fn waiting(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>, OutboxError> {
    Ok(
        sqlx::query_scalar("SELECT event_id FROM outbox WHERE event_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?,
    )
}

/// Appends `views` in order, in transactions of at most [`VIEWS_PER_TRANSACTION`]; returns how many.
pub async fn record_views(pool: &PgPool, views: &[CheckoutViewed]) -> Result<usize, OutboxError> {
    record_all(pool, views, |v| v.event_id).await
}

/// Appends any of the checkout page's records (views, methods chosen, abandonments) in order, in transactions of
/// at most [`VIEWS_PER_TRANSACTION`], like [`record_views`]; returns how many.
pub async fn record_events(
    pool: &PgPool,
    records: &[AnalyticsEvent],
) -> Result<usize, OutboxError> {
    record_all(pool, records, AnalyticsEvent::event_id).await
}

async fn record_all<T: events::Publishable>(
    pool: &PgPool,
    records: &[T],
    id: impl Fn(&T) -> EventId,
) -> Result<usize, OutboxError> {
    let mut appended = 0;
    for chunk in records.chunks(VIEWS_PER_TRANSACTION) {
        let mut tx = pool.begin().await?;
        let ids: Vec<Uuid> = chunk.iter().map(|v| id(v).as_uuid()).collect();
        // Waiting in the outbox, or earlier in this chunk: not again.
        let mut skip: std::collections::HashSet<Uuid> =
            waiting(&mut tx, &ids).await?.into_iter().collect();
        let fresh: Vec<&T> = chunk
            .iter()
            .filter(|v| skip.insert(id(v).as_uuid()))
            .collect();
        crate::append_batch(&mut tx, &fresh).await?;
        tx.commit().await?;
        appended += fresh.len();
    }
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_views_id_is_the_same_on_every_retry_and_differs_per_invoice_and_instant() {
        let invoice = events::examples::invoice_id();
        let at: DateTime<Utc> = "2025-01-15T10:01:12.345678Z".parse().unwrap();
        assert_eq!(view_id(invoice, at), view_id(invoice, at));
        assert_ne!(
            view_id(invoice, at),
            view_id(invoice, at + chrono::TimeDelta::microseconds(1))
        );
        let other = InvoiceId::from_uuid(Uuid::from_u128(7)).unwrap();
        assert_ne!(view_id(invoice, at), view_id(other, at));
        let view = CheckoutViewed {
            event_id: view_id(invoice, at),
            merchant_id: events::examples::merchant_id(),
            invoice_id: invoice,
            occurred_at: at,
        };
        assert_eq!(view.partition_key(), "2025-01-15");
        view.encode().expect("a valid record");
    }
}
