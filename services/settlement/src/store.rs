//! The settlement tables: loading what a batch needs and writing what its fold changed, inside the consumer's
//! transaction (mode (b)), a handful of statements per batch whatever its size.
//!
//! Guarantees: [`load`] reads every row the fold may consult — the batch's invoices and their payments and
//! settlements, the merchants (and their suspensions) of those invoices and of the batch's merchant and
//! settlement events, and the held settlements of merchants reinstated in the batch — with one `= ANY(…)` per
//! table (5 statements). [`write`] upserts the changed rows (one multi-row statement per table that changed),
//! posts the ledger lines in one statement (a trigger checks every journal balances), and appends the emitted
//! events and the merchant's notification requests ([`crate::notify`]) to the outbox through
//! [`outbox::append_batch`] — all in the caller's transaction, so they commit with the consumer's position or not
//! at all. Rows are written only by the events of their partition key (see the
//! migration), so one lane at a time writes a row.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use events::money::{Amount, CryptoAsset, Decimal, FiatCurrency, Percentage};
use events::{Envelope, EventData};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::fold::Fold;
use crate::state::*;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("a stored row is not valid: {0}")]
    Corrupt(String),
    #[error("appending the emitted events to the outbox failed")]
    Outbox(#[from] outbox::OutboxError),
}

/// The keys of what a batch may read.
#[derive(Debug, Default)]
pub struct Wanted {
    pub invoices: BTreeSet<Uuid>,
    pub merchants: BTreeSet<Uuid>,
    pub settlements: BTreeSet<Uuid>,
    /// Merchants reinstated in the batch: their held settlements.
    pub reinstated: BTreeSet<Uuid>,
    /// Merchants suspended in the batch, and since when: their settlements completed since then (a suspension
    /// that arrives after what it should have held).
    pub suspended: BTreeSet<(Uuid, DateTime<Utc>)>,
}

impl Wanted {
    pub fn of(events: &[Envelope]) -> Wanted {
        let mut w = Wanted::default();
        for event in events {
            let aggregate = event.aggregate_id().as_uuid();
            match event.data() {
                EventData::MerchantCreated(_) | EventData::SettingsUpdated(_) => {
                    w.merchants.insert(aggregate);
                }
                EventData::MerchantSuspended(e) => {
                    w.merchants.insert(aggregate);
                    w.suspended.insert((aggregate, e.suspended_at));
                }
                EventData::MerchantReinstated(_) => {
                    w.merchants.insert(aggregate);
                    w.reinstated.insert(aggregate);
                }
                EventData::SettlementCreated(e) => {
                    w.settlements.insert(aggregate);
                    w.merchants.insert(e.merchant_id.as_uuid());
                }
                EventData::SettlementCompleted(_) | EventData::SettlementFailed(_) => {}
                EventData::InvoiceCreated(e) => {
                    // Not stored yet when it settles in the same batch: its merchant is needed now.
                    w.invoices.insert(aggregate);
                    w.merchants.insert(e.merchant_id.as_uuid());
                }
                _ => {
                    if let Some(invoice) = event.invoice_id() {
                        w.invoices.insert(invoice.as_uuid());
                    }
                }
            }
        }
        w
    }
}

fn ids(set: &BTreeSet<Uuid>) -> Vec<Uuid> {
    set.iter().copied().collect()
}

fn amount(d: Decimal, what: &str) -> Result<Amount, StoreError> {
    Amount::new(d).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn fiat(code: &str) -> Result<FiatCurrency, StoreError> {
    FiatCurrency::from_code(code).map_err(|e| StoreError::Corrupt(format!("currency {code}: {e}")))
}

type InvoiceRow = (
    Uuid,
    Uuid,
    String,
    Decimal,
    String,
    Option<Uuid>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<Uuid>,
    Vec<Uuid>,
    Decimal,
    bool,
    Option<DateTime<Utc>>,
    Decimal,
    Option<Uuid>,
);

type PaymentRow = (
    Uuid,
    Uuid,
    Option<DateTime<Utc>>,
    Option<Uuid>,
    Option<DateTime<Utc>>,
);

type SettlementRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Uuid,
    Option<Uuid>,
);

const SETTLEMENT_COLUMNS: &str = "settlement_id, invoice_id, merchant_id, currency, gross_amount, \
    platform_fee_amount, net_amount, fee_percentage, status, created_at, held_at, settled_at, causation_event_id, \
    correlation_id";

/// Reads what the batch may consult.
pub async fn load(conn: &mut PgConnection, wanted: &Wanted) -> Result<Rows, StoreError> {
    let mut rows = Rows::default();
    let invoice_ids = ids(&wanted.invoices);
    let invoices: Vec<InvoiceRow> = sqlx::query_as(
        "SELECT invoice_id, merchant_id, currency, total_amount, crypto_currency, correlation_id, created_at, \
                paid_at, paid_event_id, counted_payments, overpaid_amount, late_payment, closed_at, refund_amount, \
                settlement_id \
         FROM stl_invoices WHERE invoice_id = ANY($1)",
    )
    .bind(&invoice_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut merchants = wanted.merchants.clone();
    let mut settlements = wanted.settlements.clone();
    for r in invoices {
        merchants.insert(r.1);
        if let Some(s) = r.14 {
            settlements.insert(s);
        }
        let crypto = CryptoAsset::from_code(&r.4)
            .map_err(|e| StoreError::Corrupt(format!("crypto currency {}: {e}", r.4)))?;
        rows.invoices.insert(
            r.0,
            Invoice {
                invoice_id: r.0,
                merchant_id: r.1,
                currency: fiat(&r.2)?,
                total_amount: amount(r.3, "total_amount")?,
                crypto_currency: crypto,
                correlation_id: r.5,
                created_at: r.6,
                paid_at: r.7,
                paid_event_id: r.8,
                counted_payments: r.9,
                overpaid_amount: amount(r.10, "overpaid_amount")?,
                late_payment: r.11,
                closed_at: r.12,
                refund_amount: amount(r.13, "refund_amount")?,
                settlement_id: r.14,
            },
        );
    }
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT payment_id, invoice_id, confirmed_at, confirmed_event_id, failed_at \
             FROM stl_payments WHERE invoice_id = ANY($1)",
    )
    .bind(&invoice_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (payment_id, invoice_id, confirmed_at, confirmed_event_id, failed_at) in payments {
        rows.payments.insert(
            payment_id,
            Payment {
                payment_id,
                invoice_id,
                confirmed_at,
                confirmed_event_id,
                failed_at,
            },
        );
    }
    let merchant_ids = ids(&merchants);
    let found: Vec<(Uuid, Decimal, DateTime<Utc>)> = sqlx::query_as(
        "SELECT merchant_id, fee_percentage, created_at FROM stl_merchants WHERE merchant_id = ANY($1)",
    )
    .bind(&merchant_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (merchant_id, fee, created_at) in found {
        let fee_percentage = Percentage::new(fee)
            .map_err(|e| StoreError::Corrupt(format!("fee_percentage {fee}: {e}")))?;
        rows.merchants.insert(
            merchant_id,
            Merchant {
                merchant_id,
                fee_percentage,
                created_at,
            },
        );
    }
    let suspensions: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT merchant_id, suspended_at, reinstated_at FROM stl_suspensions WHERE merchant_id = ANY($1)",
    )
    .bind(&merchant_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (merchant_id, suspended_at, reinstated_at) in suspensions {
        rows.suspensions.insert(
            (merchant_id, suspended_at),
            Suspension {
                merchant_id,
                suspended_at,
                reinstated_at,
            },
        );
    }
    let found: Vec<SettlementRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_id = ANY($1) \
         UNION SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE merchant_id = ANY($2) AND status = 'held' \
         UNION SELECT {SETTLEMENT_COLUMNS} FROM settlements s \
             JOIN UNNEST($3::uuid[], $4::timestamptz[]) AS w(merchant, since) \
             ON s.merchant_id = w.merchant AND s.status = 'completed' AND s.created_at >= w.since"
    )))
    .bind(ids(&settlements))
    .bind(ids(&wanted.reinstated))
    .bind(wanted.suspended.iter().map(|s| s.0).collect::<Vec<_>>())
    .bind(wanted.suspended.iter().map(|s| s.1).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    for r in found {
        let status = Status::parse(&r.8)
            .ok_or_else(|| StoreError::Corrupt(format!("settlement status {}", r.8)))?;
        let fee_percentage = Percentage::new(r.7)
            .map_err(|e| StoreError::Corrupt(format!("fee_percentage {}: {e}", r.7)))?;
        rows.settlements.insert(
            r.0,
            Settlement {
                settlement_id: r.0,
                invoice_id: r.1,
                merchant_id: r.2,
                currency: fiat(&r.3)?,
                gross_amount: amount(r.4, "gross_amount")?,
                platform_fee_amount: amount(r.5, "platform_fee_amount")?,
                net_amount: amount(r.6, "net_amount")?,
                fee_percentage,
                status,
                created_at: r.9,
                held_at: r.10,
                settled_at: r.11,
                causation_event_id: r.12,
                correlation_id: r.13,
            },
        );
    }
    Ok(rows)
}

/// Writes what the fold changed, posts its ledger lines and appends its events to the outbox.
pub async fn write(conn: &mut PgConnection, fold: &Fold) -> Result<(), StoreError> {
    let (rows, dirty) = (&fold.rows, &fold.dirty);
    if !dirty.merchants.is_empty() {
        let m: Vec<&Merchant> = dirty.merchants.iter().map(|k| &rows.merchants[k]).collect();
        sqlx::query(
            "INSERT INTO stl_merchants (merchant_id, fee_percentage, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::numeric[], $3::timestamptz[]) ON CONFLICT DO NOTHING",
        )
        .bind(m.iter().map(|m| m.merchant_id).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.fee_percentage.as_decimal()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !dirty.suspensions.is_empty() {
        let s: Vec<&Suspension> = dirty
            .suspensions
            .iter()
            .map(|k| &rows.suspensions[k])
            .collect();
        sqlx::query(
            "INSERT INTO stl_suspensions (merchant_id, suspended_at, reinstated_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::timestamptz[]) \
             ON CONFLICT (merchant_id, suspended_at) DO UPDATE SET reinstated_at = EXCLUDED.reinstated_at",
        )
        .bind(s.iter().map(|s| s.merchant_id).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.suspended_at).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.reinstated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !dirty.invoices.is_empty() {
        let i: Vec<&Invoice> = dirty.invoices.iter().map(|k| &rows.invoices[k]).collect();
        // Arrays of arrays are not portable through UNNEST: the counted payments travel as text.
        let counted: Vec<String> = i
            .iter()
            .map(|i| {
                let ids: Vec<String> = i.counted_payments.iter().map(Uuid::to_string).collect();
                format!("{{{}}}", ids.join(","))
            })
            .collect();
        sqlx::query(
            "INSERT INTO stl_invoices (invoice_id, merchant_id, currency, total_amount, crypto_currency, \
                                       correlation_id, created_at, paid_at, paid_event_id, counted_payments, \
                                       overpaid_amount, late_payment, closed_at, refund_amount, settlement_id) \
             SELECT a, b, c, d, e, f, g, h, i, j::uuid[], k, l, m, n, o FROM UNNEST($1::uuid[], $2::uuid[], \
                 $3::text[], $4::numeric[], $5::text[], $6::uuid[], $7::timestamptz[], $8::timestamptz[], \
                 $9::uuid[], $10::text[], $11::numeric[], $12::bool[], $13::timestamptz[], $14::numeric[], \
                 $15::uuid[]) AS r(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o) \
             ON CONFLICT (invoice_id) DO UPDATE SET paid_at = EXCLUDED.paid_at, \
                 paid_event_id = EXCLUDED.paid_event_id, counted_payments = EXCLUDED.counted_payments, \
                 overpaid_amount = EXCLUDED.overpaid_amount, late_payment = EXCLUDED.late_payment, \
                 closed_at = EXCLUDED.closed_at, refund_amount = EXCLUDED.refund_amount, \
                 settlement_id = EXCLUDED.settlement_id",
        )
        .bind(i.iter().map(|i| i.invoice_id).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.merchant_id).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.currency.code()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.total_amount.as_decimal()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.crypto_currency.code()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.correlation_id).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.created_at).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.paid_at).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.paid_event_id).collect::<Vec<_>>())
        .bind(counted)
        .bind(i.iter().map(|i| i.overpaid_amount.as_decimal()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.late_payment).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.closed_at).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.refund_amount.as_decimal()).collect::<Vec<_>>())
        .bind(i.iter().map(|i| i.settlement_id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !dirty.payments.is_empty() {
        let p: Vec<&Payment> = dirty.payments.iter().map(|k| &rows.payments[k]).collect();
        sqlx::query(
            "INSERT INTO stl_payments (payment_id, invoice_id, confirmed_at, confirmed_event_id, failed_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::timestamptz[]) \
             ON CONFLICT (payment_id) DO UPDATE SET confirmed_at = EXCLUDED.confirmed_at, \
                 confirmed_event_id = EXCLUDED.confirmed_event_id, failed_at = EXCLUDED.failed_at",
        )
        .bind(p.iter().map(|p| p.payment_id).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.invoice_id).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.confirmed_at).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.confirmed_event_id).collect::<Vec<_>>())
        .bind(p.iter().map(|p| p.failed_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !dirty.settlements.is_empty() {
        let s: Vec<&Settlement> = dirty
            .settlements
            .iter()
            .map(|k| &rows.settlements[k])
            .collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO settlements ({SETTLEMENT_COLUMNS}) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::numeric[], $6::numeric[], \
                 $7::numeric[], $8::numeric[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
                 $12::timestamptz[], $13::uuid[], $14::uuid[]) \
             ON CONFLICT (settlement_id) DO UPDATE SET status = EXCLUDED.status, held_at = EXCLUDED.held_at, \
                 settled_at = EXCLUDED.settled_at"
        )))
        .bind(s.iter().map(|s| s.settlement_id).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.invoice_id).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.merchant_id).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.currency.code()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.gross_amount.as_decimal()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.platform_fee_amount.as_decimal()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.net_amount.as_decimal()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.fee_percentage.as_decimal()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.status.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.created_at).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.held_at).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.settled_at).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.causation_event_id).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.correlation_id).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !fold.ledger.is_empty() {
        let l = &fold.ledger;
        sqlx::query(
            "INSERT INTO ledger_entries (journal_id, line, kind, account, merchant_id, invoice_id, settlement_id, \
                                         currency, amount, posted_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::smallint[], $3::text[], $4::text[], $5::uuid[], $6::uuid[], \
                                  $7::uuid[], $8::text[], $9::numeric[], $10::timestamptz[])",
        )
        .bind(l.iter().map(|l| l.journal_id).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.line).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.account.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.merchant_id).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.invoice_id).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.settlement_id).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.currency.as_str()).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.amount).collect::<Vec<_>>())
        .bind(l.iter().map(|l| l.posted_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    outbox::append_batch(&mut *conn, &fold.emitted).await?;
    // The merchant's e-mails about completed and held settlements, in the same transaction (decision 0031).
    outbox::append_batch(&mut *conn, &crate::notify::requests(&fold.emitted)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use events::EventType;
    use events::examples::{self, example};

    use super::*;

    #[test]
    fn a_batch_reads_the_merchant_of_an_invoice_created_in_it() {
        let wanted = Wanted::of(&[
            example(EventType::InvoiceCreated),
            example(EventType::InvoicePaid),
        ]);
        assert_eq!(ids(&wanted.invoices), [examples::invoice_id().as_uuid()]);
        assert_eq!(ids(&wanted.merchants), [examples::merchant_id().as_uuid()]);
    }

    #[test]
    fn a_reinstatement_reads_the_merchants_held_settlements() {
        let created = example(EventType::SettlementCreated);
        let wanted = Wanted::of(&[created.clone(), example(EventType::MerchantSuspended)]);
        assert_eq!(ids(&wanted.settlements), [created.aggregate_id().as_uuid()]);
        assert!(wanted.reinstated.is_empty() && wanted.invoices.is_empty());
    }
}
