//! Reading the daily aggregates of a merchant: what `checkoutctl analytics daily` prints.
//!
//! Guarantees: per UTC day, the counters summed over their shards (the checkout page's abandonments by reason
//! included), the conversion rate of the day's cohort (converted ÷ created, exact decimal rounded half-even to 4
//! places; none when nothing was created), money per currency, payment methods chosen per asset and network, and
//! the median and p95 of the confirmation times by nearest rank ([`percentile`]).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use events::money::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoneyRow {
    pub currency: String,
    /// Total of the invoices paid that day.
    pub gross_volume: Decimal,
    /// Fees of the settlements completed that day.
    pub fees: Decimal,
    /// Net of the settlements completed that day.
    pub net_settled: Decimal,
}

/// Payment methods chosen on the checkout page (`PaymentMethodChosen`) in one asset on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MethodRow {
    /// Asset code (`USDT`).
    pub crypto_currency: String,
    /// Network name (`tron`).
    pub network: String,
    pub choices: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DailyRow {
    pub day: NaiveDate,
    pub invoices_created: i64,
    pub invoices_paid: i64,
    pub invoices_expired: i64,
    pub invoices_cancelled: i64,
    /// Invoices created this day that have been paid since.
    pub invoices_converted: i64,
    /// `invoices_converted ÷ invoices_created` (a fraction: 0.5 is 50 %).
    pub conversion_rate: Option<Decimal>,
    pub checkout_views: i64,
    /// Checkouts abandoned: the customer left the page before paying.
    pub checkouts_abandoned_left: i64,
    /// Checkouts abandoned: the invoice expired with the page open.
    pub checkouts_abandoned_expired: i64,
    /// Payment methods chosen, by asset then network.
    pub methods: Vec<MethodRow>,
    /// Payments confirmed this day, and the time from their invoice's creation to their confirmation.
    pub confirmations: i64,
    pub median_confirmation_ms: Option<i64>,
    pub p95_confirmation_ms: Option<i64>,
    pub money: Vec<MoneyRow>,
}

/// The nearest-rank `p`-th percentile (1..=100) of sorted `values`: the smallest value with at least `p` % of
/// the values at or below it.
pub fn percentile(sorted: &[i64], p: u64) -> Option<i64> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).clamp(1, n);
    sorted.get(rank as usize - 1).copied()
}

/// `numerator ÷ denominator`, rounded half-even to 4 places.
pub fn rate(numerator: i64, denominator: i64) -> Option<Decimal> {
    if denominator == 0 {
        return None;
    }
    let exact = Decimal::from(numerator) / Decimal::from(denominator);
    Some(exact.round_dp(4).normalize())
}

/// The days of `merchant` between `from` and `to` (inclusive, either open), oldest first.
pub async fn daily(
    conn: &mut PgConnection,
    merchant: Uuid,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<DailyRow>, sqlx::Error> {
    let mut days: BTreeMap<NaiveDate, DailyRow> = BTreeMap::new();
    type Counters = (NaiveDate, i64, i64, i64, i64, i64, i64, i64, i64);
    let counters: Vec<Counters> = sqlx::query_as(
        "SELECT day, invoices_created, invoices_paid, invoices_expired, invoices_cancelled, invoices_converted, \
                checkout_views, checkouts_abandoned_left, checkouts_abandoned_expired \
         FROM analytics_merchant_daily WHERE merchant_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3)",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for (day, created, paid, expired, cancelled, converted, views, left, expired_open) in counters {
        let row = days.entry(day).or_default();
        row.invoices_created = created;
        row.invoices_paid = paid;
        row.invoices_expired = expired;
        row.invoices_cancelled = cancelled;
        row.invoices_converted = converted;
        row.checkout_views = views;
        row.checkouts_abandoned_left = left;
        row.checkouts_abandoned_expired = expired_open;
    }
    let methods: Vec<(NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT day, crypto_currency, network, choices FROM analytics_merchant_daily_methods \
         WHERE merchant_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) \
           AND choices <> 0 ORDER BY day, crypto_currency, network",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for (day, crypto_currency, network, choices) in methods {
        days.entry(day).or_default().methods.push(MethodRow {
            crypto_currency,
            network,
            choices,
        });
    }
    let money: Vec<(NaiveDate, String, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT day, currency, gross_volume, fees, net_settled FROM analytics_merchant_daily_money \
         WHERE merchant_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) ORDER BY day, currency",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for (day, currency, gross_volume, fees, net_settled) in money {
        days.entry(day).or_default().money.push(MoneyRow {
            currency,
            gross_volume: gross_volume.normalize(),
            fees: fees.normalize(),
            net_settled: net_settled.normalize(),
        });
    }
    let samples: Vec<(NaiveDate, Vec<i64>)> = sqlx::query_as(
        "SELECT day, array_agg(millis ORDER BY millis) FROM analytics_confirmation_times \
         WHERE merchant_id = $1 AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) GROUP BY day",
    )
    .bind(merchant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    for (day, millis) in samples {
        let row = days.entry(day).or_default();
        row.confirmations = millis.len() as i64;
        row.median_confirmation_ms = percentile(&millis, 50);
        row.p95_confirmation_ms = percentile(&millis, 95);
    }
    Ok(days
        .into_iter()
        .map(|(day, mut row)| {
            row.day = day;
            row.conversion_rate = rate(row.invoices_converted, row.invoices_created);
            row
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[5], 50), Some(5));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50), Some(3));
        let hundred: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 95), Some(95));
        let twenty: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&twenty, 95), Some(19));
    }

    #[test]
    fn rates_are_exact_decimals() {
        assert_eq!(rate(1, 3), Some("0.3333".parse().unwrap()));
        assert_eq!(rate(2, 3), Some("0.6667".parse().unwrap()));
        assert_eq!(rate(3, 3), Some(Decimal::ONE));
        assert_eq!(rate(0, 0), None);
    }
}
