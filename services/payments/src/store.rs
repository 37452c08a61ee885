//! The payments tables (`pay_invoices`, `pay_outputs`): reading what a batch needs and writing what it changed,
//! inside the consumer's transaction (mode (b)), a fixed handful of statements per batch whatever its size.
//!
//! Guarantees: [`load`] reads, in two statements, the invoices of every deposit address the batch's reports name
//! (locked `FOR UPDATE`, so two lanes reporting on one invoice — two scanners of one network — take turns) and
//! every output of those invoices. [`write`] upserts the changed outputs and invoices (one multi-row statement
//! each) and appends the emitted events and the merchants' notification requests to the outbox with
//! [`outbox::append_batch`]. [`record_invoices`] keeps the invoices of a batch of domain events (one statement per
//! kind). All of it in the caller's transaction: it commits with the consumer's position or not at all.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use events::integration::{IntegrationEvent, network_name};
use events::money::{Amount, CryptoAsset, Decimal};
use events::payload::Network;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::fold::{Fold, Invoice, Output, Rows};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or is unreachable (classified by the runtime: connection → infrastructure).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// A stored row does not parse (a permanent error).
    #[error("a stored row is not valid: {0}")]
    Corrupt(String),
    #[error("appending the emitted events to the outbox failed")]
    Outbox(#[from] outbox::OutboxError),
}

fn parse_network(s: &str) -> Result<Network, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("network `{s}`")))
}

fn amount(d: Decimal) -> Result<Amount, StoreError> {
    Amount::new(d).map_err(|e| StoreError::Corrupt(format!("amount {d}: {e}")))
}

type InvoiceRow = (
    Uuid,
    Uuid,
    String,
    String,
    String,
    Decimal,
    i32,
    DateTime<Utc>,
    Option<Uuid>,
    Option<DateTime<Utc>>,
    Option<Uuid>,
);

type OutputRow = (
    Uuid,
    Uuid,
    String,
    String,
    i32,
    Decimal,
    Option<DateTime<Utc>>,
    bool,
    i32,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Reads the invoices of the addresses `reports` name and all their outputs.
pub async fn load(
    conn: &mut PgConnection,
    reports: &[IntegrationEvent],
) -> Result<Rows, StoreError> {
    let keys: BTreeSet<(&'static str, String)> = reports
        .iter()
        .map(|r| {
            let out = r.data.output();
            (
                network_name(out.network),
                out.address.canonical(out.network),
            )
        })
        .collect();
    let (networks, addresses): (Vec<&str>, Vec<String>) = keys.into_iter().unzip();
    let invoices: Vec<InvoiceRow> = sqlx::query_as(
        "SELECT invoice_id, merchant_id, network, address, crypto_currency, crypto_amount, \
                required_confirmations, expires_at, correlation_id, cancelled_at, paid_event_id \
         FROM pay_invoices WHERE (network, address) IN (SELECT * FROM UNNEST($1::text[], $2::text[])) \
         ORDER BY invoice_id FOR UPDATE",
    )
    .bind(&networks)
    .bind(&addresses)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = Rows::default();
    for r in invoices {
        rows.insert_invoice(Invoice {
            invoice_id: r.0,
            merchant_id: r.1,
            network: parse_network(&r.2)?,
            address: r.3,
            crypto_currency: CryptoAsset::from_code(&r.4)
                .map_err(|_| StoreError::Corrupt(format!("asset `{}`", r.4)))?,
            crypto_amount: amount(r.5)?,
            required_confirmations: u32::try_from(r.6)
                .map_err(|_| StoreError::Corrupt(format!("confirmations {}", r.6)))?,
            expires_at: r.7,
            correlation_id: r.8,
            cancelled_at: r.9,
            paid_event_id: r.10,
        });
    }
    let ids: Vec<Uuid> = rows.invoices.keys().copied().collect();
    let outputs: Vec<OutputRow> = sqlx::query_as(
        "SELECT payment_id, invoice_id, network, transaction_hash, output_index, amount, detected_at, late, \
                confirmations, block_height, confirmed_at, failed_at \
         FROM pay_outputs WHERE invoice_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for r in outputs {
        rows.outputs.insert(
            r.0,
            Output {
                payment_id: r.0,
                invoice_id: r.1,
                network: parse_network(&r.2)?,
                transaction_hash: r.3,
                output_index: u32::try_from(r.4)
                    .map_err(|_| StoreError::Corrupt(format!("output index {}", r.4)))?,
                amount: amount(r.5)?,
                detected_at: r.6,
                late: r.7,
                confirmations: u32::try_from(r.8)
                    .map_err(|_| StoreError::Corrupt(format!("confirmations {}", r.8)))?,
                block_height: r.9.map(|h| h as u64),
                confirmed_at: r.10,
                failed_at: r.11,
            },
        );
    }
    Ok(rows)
}

/// Writes what the fold changed and appends its events and notifications to the outbox.
pub async fn write(conn: &mut PgConnection, fold: &Fold) -> Result<(), StoreError> {
    if !fold.dirty_outputs.is_empty() {
        let o: Vec<&Output> = fold
            .dirty_outputs
            .iter()
            .map(|k| &fold.rows.outputs[k])
            .collect();
        sqlx::query(
            "INSERT INTO pay_outputs (payment_id, invoice_id, network, transaction_hash, output_index, amount, \
                                      detected_at, late, confirmations, block_height, confirmed_at, failed_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::numeric[], \
                                  $7::timestamptz[], $8::bool[], $9::int[], $10::bigint[], $11::timestamptz[], \
                                  $12::timestamptz[]) \
             ON CONFLICT (payment_id) DO UPDATE SET detected_at = EXCLUDED.detected_at, late = EXCLUDED.late, \
                 confirmations = EXCLUDED.confirmations, block_height = EXCLUDED.block_height, \
                 confirmed_at = EXCLUDED.confirmed_at, failed_at = EXCLUDED.failed_at",
        )
        .bind(o.iter().map(|o| o.payment_id).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.invoice_id).collect::<Vec<_>>())
        .bind(o.iter().map(|o| network_name(o.network)).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.transaction_hash.clone()).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.output_index as i32).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.amount.as_decimal()).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.detected_at).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.late).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.confirmations as i32).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.block_height.map(|h| h as i64)).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.confirmed_at).collect::<Vec<_>>())
        .bind(o.iter().map(|o| o.failed_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !fold.dirty_invoices.is_empty() {
        let i: Vec<&Invoice> = fold
            .dirty_invoices
            .iter()
            .map(|k| &fold.rows.invoices[k])
            .collect();
        sqlx::query(
            "UPDATE pay_invoices p SET paid_event_id = u.paid \
             FROM UNNEST($1::uuid[], $2::uuid[]) AS u(id, paid) WHERE p.invoice_id = u.id",
        )
        .bind(i.iter().map(|i| i.invoice_id).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.paid_event_id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    outbox::append_batch(&mut *conn, &fold.emitted).await?;
    outbox::append_batch(&mut *conn, &fold.notifications).await?;
    Ok(())
}

/// Keeps the invoices created in a batch of domain events (an invoice already known is left as it is) and marks
/// the cancelled ones.
pub async fn record_invoices(
    conn: &mut PgConnection,
    created: &[Invoice],
    cancelled: &[(Uuid, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if !created.is_empty() {
        sqlx::query(
            "INSERT INTO pay_invoices (invoice_id, merchant_id, network, address, crypto_currency, crypto_amount, \
                                       required_confirmations, expires_at, correlation_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::numeric[], \
                                  $7::int[], $8::timestamptz[], $9::uuid[]) \
             ON CONFLICT (invoice_id) DO NOTHING",
        )
        .bind(created.iter().map(|i| i.invoice_id).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.merchant_id).collect::<Vec<_>>())
        .bind(created.iter().map(|i| network_name(i.network)).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.address.clone()).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.crypto_currency.code()).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.crypto_amount.as_decimal()).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.required_confirmations as i32).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.expires_at).collect::<Vec<_>>())
        .bind(created.iter().map(|i| i.correlation_id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !cancelled.is_empty() {
        sqlx::query(
            "UPDATE pay_invoices p SET cancelled_at = COALESCE(p.cancelled_at, u.at) \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE p.invoice_id = u.id",
        )
        .bind(cancelled.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(cancelled.iter().map(|c| c.1).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
