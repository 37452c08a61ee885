//! Reading the read models: one invoice with its payments, settlements and history; one merchant with its
//! settings, balances and invoice counts. Used by `checkoutctl invoice show` and `checkoutctl merchant show`.
//!
//! Ids come out in their wire form (`inv_…`, `mer_…`), amounts as exact decimals, times in UTC.

use chrono::{DateTime, Utc};
use events::money::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InvoiceRow {
    pub invoice_id: String,
    pub merchant_id: String,
    pub status: String,
    pub currency: String,
    pub total_amount: Decimal,
    pub crypto_currency: String,
    pub crypto_amount_due: Decimal,
    pub amount_paid: Decimal,
    pub overpaid_amount: Decimal,
    pub late_payment: bool,
    pub payments_detected: i32,
    pub payments_confirmed: i32,
    pub payments_failed: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<String>,
    pub version: i32,
    pub last_event_id: String,
    pub last_event_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    pub payment_id: String,
    pub status: String,
    pub network: String,
    pub transaction_hash: String,
    pub amount: Decimal,
    pub coverage: String,
    pub late: bool,
    pub confirmations: i32,
    pub required_confirmations: i32,
    pub block_height: Option<i64>,
    pub detected_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SettlementRow {
    pub settlement_id: String,
    pub invoice_id: String,
    pub status: String,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
    pub fee_percentage: Decimal,
    pub failures: i32,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub data: serde_json::Value,
}

/// An invoice as `checkoutctl invoice show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceView {
    pub invoice: InvoiceRow,
    pub payments: Vec<PaymentRow>,
    pub settlements: Vec<SettlementRow>,
    pub history: Vec<HistoryRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MerchantRow {
    pub merchant_id: String,
    pub business_name: String,
    pub status: String,
    pub default_currency: String,
    pub settlement_currency: String,
    pub fee_percentage: Decimal,
    pub accepted_crypto_currencies: Vec<String>,
    pub speed_policy: String,
    pub invoice_expiry_minutes: Option<i32>,
    pub payment_tolerance_percentage: Option<Decimal>,
    pub created_at: DateTime<Utc>,
    /// Start of the last suspension (kept after a reinstatement).
    pub suspended_at: Option<DateTime<Utc>>,
    pub suspension_reason: Option<String>,
    /// The last reinstatement.
    pub reinstated_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub last_event_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct BalanceRow {
    pub currency: String,
    pub pending_net: Decimal,
    pub settled_gross: Decimal,
    pub settled_fees: Decimal,
    pub settled_net: Decimal,
    pub failed_net: Decimal,
    pub settlements_completed: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StatusCount {
    pub status: String,
    pub invoices: i64,
}

/// A merchant as `checkoutctl merchant show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MerchantView {
    pub merchant: MerchantRow,
    pub balances: Vec<BalanceRow>,
    pub invoices: Vec<StatusCount>,
}

/// The invoice `id` with its payments, settlements and history, if the read models know it.
pub async fn invoice(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<InvoiceView>, sqlx::Error> {
    let invoice: Option<InvoiceRow> = sqlx::query_as(
        "SELECT 'inv_' || invoice_id AS invoice_id, 'mer_' || merchant_id AS merchant_id, status, currency, \
                total_amount, crypto_currency, crypto_amount_due, amount_paid, overpaid_amount, late_payment, \
                payments_detected, payments_confirmed, payments_failed, created_at, expires_at, paid_at, \
                confirmed_at, expired_at, cancelled_at, cancellation_reason, version, \
                'evt_' || last_event_id AS last_event_id, last_event_at \
         FROM proj_invoices WHERE invoice_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(invoice) = invoice else {
        return Ok(None);
    };
    let payments = sqlx::query_as(
        "SELECT 'pay_' || payment_id AS payment_id, status, network, transaction_hash, amount, coverage, late, \
                confirmations, required_confirmations, block_height, detected_at, confirmed_at, failed_at, \
                failure_reason \
         FROM proj_payments WHERE invoice_id = $1 ORDER BY detected_at, payment_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let settlements = sqlx::query_as(
        "SELECT 'set_' || settlement_id AS settlement_id, 'inv_' || invoice_id AS invoice_id, status, currency, \
                gross_amount, platform_fee_amount, net_amount, fee_percentage, failures, failure_reason, \
                created_at, settled_at \
         FROM proj_settlements WHERE invoice_id = $1 ORDER BY created_at, settlement_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let history = sqlx::query_as(
        "SELECT 'evt_' || event_id AS event_id, event_type, aggregate_id, occurred_at, actor, data \
         FROM proj_invoice_history WHERE invoice_id = $1 ORDER BY occurred_at, event_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(InvoiceView {
        invoice,
        payments,
        settlements,
        history,
    }))
}

/// The merchant `id` with its balances per currency and its invoices per status, if the read models know it.
pub async fn merchant(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<MerchantView>, sqlx::Error> {
    let merchant: Option<MerchantRow> = sqlx::query_as(
        "SELECT 'mer_' || merchant_id AS merchant_id, business_name, status, default_currency, \
                settlement_currency, fee_percentage, accepted_crypto_currencies, speed_policy, \
                invoice_expiry_minutes, payment_tolerance_percentage, created_at, suspended_at, \
                suspension_reason, reinstated_at, version, last_event_at \
         FROM proj_merchants WHERE merchant_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(merchant) = merchant else {
        return Ok(None);
    };
    let balances = sqlx::query_as(
        "SELECT currency, pending_net, settled_gross, settled_fees, settled_net, failed_net, settlements_completed \
         FROM proj_merchant_balances WHERE merchant_id = $1 ORDER BY currency",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let invoices = sqlx::query_as(
        "SELECT status, count(*) AS invoices FROM proj_invoices WHERE merchant_id = $1 \
         GROUP BY status ORDER BY status",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(MerchantView {
        merchant,
        balances,
        invoices,
    }))
}
