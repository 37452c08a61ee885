//! A batch of events → the daily aggregates, inside the consumer's own transaction (mode b), in a handful of
//! statements.
//!
//! Guarantees:
//! - Exactly once: the runtime commits these writes with the consumer's offset, and [`aggregate_batch`]
//!   de-duplicates by event id in the same transaction (`processed_events` of the group, and repeats inside the
//!   batch), so neither a redelivery nor a re-published event is counted twice. On an error nothing may be kept:
//!   the caller rolls the transaction back (the runtime does in mode b).
//! - Days are UTC days of the event's own time (the envelope's `timestamp`; `occurred_at` for a checkout page's
//!   record).
//! - Counters live in rows sharded by the record's (topic, partition) ([`Shard`]): one lane writes a shard, so
//!   lanes never wait on each other's row locks; readers sum over shards.
//! - What a day counts: invoices created, paid (first `InvoicePaid` of the invoice), expired, cancelled; the
//!   conversion cohort (invoices created that day that are paid since — counted on the creation day when the
//!   invoice is paid); checkout views; payment methods chosen per asset and network; checkouts abandoned by
//!   reason (left the page, expired while open); gross volume of the invoices paid that day in their currency; fees and net
//!   of the settlements completed that day in their currency; one sample per confirmed payment of the time from
//!   its invoice's `InvoiceCreated` to its `PaymentConfirmed`.
//! - An `InvoicePaid` or `PaymentConfirmed` of an invoice whose creation was never seen (neither in the database
//!   nor earlier in the batch) is a business error ([`AggregateError::Unknown`]) naming that input's index:
//!   retried per the group's policy (10 s, 10 s), then dead-lettered.
//! - The result of a batch is the result of applying its events one by one in order (what the first version
//!   did, one event per call): the semantics live in one pure function, [`fold`].
//!
//! Statements per batch: one `INSERT … SELECT unnest … ON CONFLICT DO NOTHING RETURNING` into
//! `processed_events`; one `SELECT … = ANY` of the `analytics_invoices` rows the batch refers to (when it refers
//! to any); then one multi-row `INSERT … SELECT FROM UNNEST … ON CONFLICT` each into `analytics_invoices`,
//! `analytics_daily`, `analytics_daily_money`, `analytics_daily_methods` and `analytics_confirmation_times`, each
//! only when it has rows: at most seven, whatever the batch size.
//!
//! Invoice rows are read without a row lock: all events of an invoice (`Invoice` and `Payment` aggregates) are
//! keyed by its id, so only its partition's lane writes its row, batch after committed batch; a zombie lane of
//! that partition blocks on the live one's `processed_events` rows and is fenced by the offset compare-and-set
//! (decision 0007), so its writes never commit.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use events::EventData;
use events::money::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkout_events::Input;

/// The source partition whose lane writes a row.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Why a batch was not applied: the input that made it fail, when one can be named (a database error cannot).
#[derive(Debug, thiserror::Error)]
#[error("{}", match .index { Some(i) => format!("input {i} of the batch failed"), None => "the batch failed".to_string() })]
pub struct BatchFailure {
    pub index: Option<usize>,
    #[source]
    pub error: AggregateError,
}

impl From<sqlx::Error> for BatchFailure {
    fn from(error: sqlx::Error) -> Self {
        BatchFailure {
            index: None,
            error: AggregateError::Db(error),
        }
    }
}

impl From<BatchFailure> for runtime::BatchError {
    fn from(failure: BatchFailure) -> Self {
        match failure.index {
            Some(i) => runtime::BatchError::at(i, failure.error),
            None => runtime::BatchError::unknown(failure.error),
        }
    }
}

/// What became of one input of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Aggregated,
    /// Its event id was processed before, or earlier in the batch: nothing counted.
    Duplicate,
}

/// What the aggregates remember about an invoice: a row of `analytics_invoices`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InvoiceFacts {
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub currency: String,
    pub total_amount: Decimal,
    /// The first `InvoicePaid`'s time.
    pub paid_at: Option<DateTime<Utc>>,
}

/// Increments of one day's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub created: i64,
    pub paid: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub converted: i64,
    pub views: i64,
    /// Checkouts abandoned: the customer left the page before paying.
    pub abandoned_left: i64,
    /// Checkouts abandoned: the invoice expired while the page was open.
    pub abandoned_expired: i64,
}

/// Increments of one day's money in one currency.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub gross_volume: Decimal,
    pub fees: Decimal,
    pub net_settled: Decimal,
}

/// One created → confirmed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub merchant_id: Uuid,
    pub day: NaiveDate,
    pub millis: i64,
}

/// Everything a batch writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deltas {
    /// `analytics_invoices` rows created or changed (their `paid_at` set), as they must end up.
    pub invoices: BTreeMap<Uuid, InvoiceFacts>,
    /// Counter increments per (merchant, day).
    pub daily: BTreeMap<(Uuid, NaiveDate), Counters>,
    /// Money increments per (merchant, day, currency).
    pub money: BTreeMap<(Uuid, NaiveDate, String), Money>,
    /// New confirmation samples, one per payment (the first seen), in input order.
    pub confirmations: Vec<Confirmation>,
    /// Payment methods chosen per (merchant, day, asset code, network name).
    pub methods: BTreeMap<(Uuid, NaiveDate, String, String), i64>,
}

impl Deltas {
    fn count(&mut self, merchant: Uuid, day: NaiveDate, add: impl FnOnce(&mut Counters)) {
        add(self.daily.entry((merchant, day)).or_default());
    }

    fn money(
        &mut self,
        merchant: Uuid,
        day: NaiveDate,
        currency: &str,
        add: impl FnOnce(&mut Money),
    ) {
        add(self
            .money
            .entry((merchant, day, currency.to_string()))
            .or_default());
    }
}

fn day(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// Truncated to whole microseconds: what PostgreSQL stores (so a value kept in this batch equals the value a
/// later batch reads back).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn unknown(invoice: Uuid) -> AggregateError {
    AggregateError::Unknown(format!(
        "invoice {invoice} is unknown to analytics (its InvoiceCreated was never aggregated)"
    ))
}

/// The `analytics_invoices` rows [`fold`] may need for `inputs`: the invoices they create, pay or confirm.
pub fn invoices_needed<'a>(inputs: impl IntoIterator<Item = &'a Input>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = inputs
        .into_iter()
        .filter_map(|input| match input {
            Input::CheckoutViewed(_) | Input::MethodChosen(_) | Input::Abandoned(_) => None,
            Input::Domain(event) => match event.data() {
                EventData::InvoiceCreated(_) | EventData::InvoicePaid(_) => {
                    Some(event.aggregate_id().as_uuid())
                }
                EventData::PaymentConfirmed(e) => Some(e.invoice_id.as_uuid()),
                _ => None,
            },
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The aggregates' deltas of `inputs` (each `(index, input)`, in order, none a duplicate), given the stored rows
/// of the invoices they refer to (`known`, see [`invoices_needed`]) — exactly what applying them one at a time
/// would add. `Err((index, error))` names the first input that cannot be applied (an unknown invoice).
pub fn fold(
    known: &HashMap<Uuid, InvoiceFacts>,
    inputs: &[(usize, &Input)],
) -> Result<Deltas, (usize, AggregateError)> {
    let mut d = Deltas::default();
    let mut sampled: HashSet<Uuid> = HashSet::new();
    for &(index, input) in inputs {
        let event = match input {
            Input::CheckoutViewed(view) => {
                d.count(view.merchant_id.as_uuid(), day(view.occurred_at), |c| {
                    c.views += 1
                });
                continue;
            }
            Input::MethodChosen(chosen) => {
                *d.methods
                    .entry((
                        chosen.merchant_id.as_uuid(),
                        day(chosen.occurred_at),
                        chosen.crypto_currency.code().to_string(),
                        events::integration::network_name(chosen.network).to_string(),
                    ))
                    .or_default() += 1;
                continue;
            }
            Input::Abandoned(abandoned) => {
                let reason = abandoned.reason;
                d.count(
                    abandoned.merchant_id.as_uuid(),
                    day(abandoned.occurred_at),
                    |c| match reason {
                        events::analytics::AbandonReason::LeftPage => c.abandoned_left += 1,
                        events::analytics::AbandonReason::Expired => c.abandoned_expired += 1,
                    },
                );
                continue;
            }
            Input::Domain(event) => event,
        };
        let at = event.timestamp();
        let merchant = event.merchant_id().as_uuid();
        // The invoice as it stands after the inputs before this one.
        let facts = |d: &Deltas, invoice: Uuid| {
            d.invoices
                .get(&invoice)
                .or_else(|| known.get(&invoice))
                .cloned()
        };
        match event.data() {
            EventData::InvoiceCreated(e) => {
                let invoice = event.aggregate_id().as_uuid();
                if facts(&d, invoice).is_none() {
                    d.invoices.insert(
                        invoice,
                        InvoiceFacts {
                            invoice_id: invoice,
                            merchant_id: merchant,
                            created_at: micros(at),
                            currency: e.currency.code().to_string(),
                            total_amount: e.total_amount.as_decimal(),
                            paid_at: None,
                        },
                    );
                    d.count(merchant, day(at), |c| c.created += 1);
                }
            }
            EventData::InvoicePaid(_) => {
                let invoice = event.aggregate_id().as_uuid();
                let mut row = facts(&d, invoice).ok_or_else(|| (index, unknown(invoice)))?;
                if row.paid_at.is_none() {
                    row.paid_at = Some(micros(at));
                    d.count(merchant, day(at), |c| c.paid += 1);
                    d.count(merchant, day(row.created_at), |c| c.converted += 1);
                    d.money(merchant, day(at), &row.currency, |m| {
                        m.gross_volume += row.total_amount
                    });
                    d.invoices.insert(invoice, row);
                }
            }
            EventData::InvoiceExpired(_) => d.count(merchant, day(at), |c| c.expired += 1),
            EventData::InvoiceCancelled(_) => d.count(merchant, day(at), |c| c.cancelled += 1),
            EventData::PaymentConfirmed(e) => {
                let invoice = e.invoice_id.as_uuid();
                let row = facts(&d, invoice).ok_or_else(|| (index, unknown(invoice)))?;
                let payment = event.aggregate_id().as_uuid();
                // One sample per payment: the first (a stored one wins in the database: ON CONFLICT DO NOTHING).
                if sampled.insert(payment) {
                    d.confirmations.push(Confirmation {
                        payment_id: payment,
                        invoice_id: invoice,
                        merchant_id: merchant,
                        day: day(at),
                        millis: (at - row.created_at).num_milliseconds().max(0),
                    });
                }
            }
            EventData::SettlementCompleted(e) => {
                let (fees, net) = (
                    e.platform_fee_amount.as_decimal(),
                    e.net_amount.as_decimal(),
                );
                d.money(merchant, day(at), e.currency.code(), |m| {
                    m.fees += fees;
                    m.net_settled += net;
                });
            }
            // Not part of any aggregate (still de-duplicated, so a later version that counts them starts clean).
            EventData::PaymentDetected(_)
            | EventData::PaymentConfirming(_)
            | EventData::PaymentFailed(_)
            | EventData::SettlementCreated(_)
            | EventData::SettlementFailed(_)
            | EventData::MerchantCreated(_)
            | EventData::MerchantSuspended(_)
            | EventData::MerchantReinstated(_)
            | EventData::WebhookEndpointDisabled(_)
            | EventData::SettingsUpdated(_) => {}
        }
    }
    Ok(d)
}

/// Which of `ids` are seen for the first time: records them in `processed_events` for `group` in one statement
/// (sorted, so concurrent writers lock in one order) and returns, per input, whether it is the first sight of
/// its id — not processed before and not earlier in `ids`.
pub async fn first_times(
    conn: &mut PgConnection,
    group: &str,
    ids: &[Uuid],
) -> Result<Vec<bool>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO processed_events (consumer_group, event_id) \
         SELECT $1, id FROM (SELECT DISTINCT id FROM unnest($2::uuid[]) AS u(id)) AS s ORDER BY id \
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(group)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    // The first occurrence of a fresh id takes it; later ones are repeats.
    Ok(ids.iter().map(|id| fresh.remove(id)).collect())
}

/// Loads the `analytics_invoices` rows of `ids` (those that exist).
async fn load_invoices(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, InvoiceFacts>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<InvoiceFacts> = sqlx::query_as(
        "SELECT invoice_id, merchant_id, created_at, currency, total_amount, paid_at FROM analytics_invoices \
         WHERE invoice_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.invoice_id, r)).collect())
}

/// Writes `deltas` for `shard`: one statement per table that has something to write.
async fn write(conn: &mut PgConnection, shard: &Shard, d: &Deltas) -> Result<(), sqlx::Error> {
    if !d.invoices.is_empty() {
        let rows = d.invoices.values();
        // A row read in this batch only changes its paid_at (set once: the first payment's time).
        sqlx::query(
            "INSERT INTO analytics_invoices AS i (invoice_id, merchant_id, created_at, currency, total_amount, \
                                                  paid_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::numeric[], \
                                  $6::timestamptz[]) \
             ON CONFLICT (invoice_id) DO UPDATE SET paid_at = coalesce(i.paid_at, EXCLUDED.paid_at)",
        )
        .bind(rows.clone().map(|r| r.invoice_id).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.merchant_id).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.currency.as_str()).collect::<Vec<_>>())
        .bind(rows.clone().map(|r| r.total_amount).collect::<Vec<_>>())
        .bind(rows.map(|r| r.paid_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !d.daily.is_empty() {
        let col = |f: fn(&Counters) -> i64| d.daily.values().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO analytics_daily AS d (merchant_id, day, topic, partition, invoices_created, invoices_paid, \
                                               invoices_expired, invoices_cancelled, invoices_converted, \
                                               checkout_views, checkouts_abandoned_left, \
                                               checkouts_abandoned_expired) \
             SELECT u.merchant_id, u.day, $3, $4, u.created, u.paid, u.expired, u.cancelled, u.converted, u.views, \
                    u.left_page, u.expired_open \
             FROM UNNEST($1::uuid[], $2::date[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], \
                         $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) \
                  AS u(merchant_id, day, created, paid, expired, cancelled, converted, views, left_page, \
                       expired_open) \
             ON CONFLICT (merchant_id, day, topic, partition) DO UPDATE SET \
                 invoices_created = d.invoices_created + EXCLUDED.invoices_created, \
                 invoices_paid = d.invoices_paid + EXCLUDED.invoices_paid, \
                 invoices_expired = d.invoices_expired + EXCLUDED.invoices_expired, \
                 invoices_cancelled = d.invoices_cancelled + EXCLUDED.invoices_cancelled, \
                 invoices_converted = d.invoices_converted + EXCLUDED.invoices_converted, \
                 checkout_views = d.checkout_views + EXCLUDED.checkout_views, \
                 checkouts_abandoned_left = d.checkouts_abandoned_left + EXCLUDED.checkouts_abandoned_left, \
                 checkouts_abandoned_expired = \
                     d.checkouts_abandoned_expired + EXCLUDED.checkouts_abandoned_expired",
        )
        .bind(d.daily.keys().map(|(m, _)| *m).collect::<Vec<_>>())
        .bind(d.daily.keys().map(|(_, day)| *day).collect::<Vec<_>>())
        .bind(&shard.topic)
        .bind(shard.partition)
        .bind(col(|c| c.created))
        .bind(col(|c| c.paid))
        .bind(col(|c| c.expired))
        .bind(col(|c| c.cancelled))
        .bind(col(|c| c.converted))
        .bind(col(|c| c.views))
        .bind(col(|c| c.abandoned_left))
        .bind(col(|c| c.abandoned_expired))
        .execute(&mut *conn)
        .await?;
    }
    if !d.methods.is_empty() {
        let keys = d.methods.keys();
        sqlx::query(
            "INSERT INTO analytics_daily_methods AS m (merchant_id, day, crypto_currency, network, topic, partition, \
                                                       choices) \
             SELECT u.merchant_id, u.day, u.asset, u.network, $5, $6, u.choices \
             FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::text[], $7::bigint[]) \
                  AS u(merchant_id, day, asset, network, choices) \
             ON CONFLICT (merchant_id, day, crypto_currency, network, topic, partition) DO UPDATE SET \
                 choices = m.choices + EXCLUDED.choices",
        )
        .bind(keys.clone().map(|k| k.0).collect::<Vec<_>>())
        .bind(keys.clone().map(|k| k.1).collect::<Vec<_>>())
        .bind(keys.clone().map(|k| k.2.as_str()).collect::<Vec<_>>())
        .bind(keys.map(|k| k.3.as_str()).collect::<Vec<_>>())
        .bind(&shard.topic)
        .bind(shard.partition)
        .bind(d.methods.values().copied().collect::<Vec<i64>>())
        .execute(&mut *conn)
        .await?;
    }
    if !d.money.is_empty() {
        let col = |f: fn(&Money) -> Decimal| d.money.values().map(f).collect::<Vec<Decimal>>();
        sqlx::query(
            "INSERT INTO analytics_daily_money AS m (merchant_id, day, currency, topic, partition, gross_volume, \
                                                     fees, net_settled) \
             SELECT u.merchant_id, u.day, u.currency, $4, $5, u.gross, u.fees, u.net \
             FROM UNNEST($1::uuid[], $2::date[], $3::text[], $6::numeric[], $7::numeric[], $8::numeric[]) \
                  AS u(merchant_id, day, currency, gross, fees, net) \
             ON CONFLICT (merchant_id, day, currency, topic, partition) DO UPDATE SET \
                 gross_volume = m.gross_volume + EXCLUDED.gross_volume, \
                 fees = m.fees + EXCLUDED.fees, \
                 net_settled = m.net_settled + EXCLUDED.net_settled",
        )
        .bind(d.money.keys().map(|(m, _, _)| *m).collect::<Vec<_>>())
        .bind(d.money.keys().map(|(_, day, _)| *day).collect::<Vec<_>>())
        .bind(d.money.keys().map(|(_, _, c)| c.as_str()).collect::<Vec<_>>())
        .bind(&shard.topic)
        .bind(shard.partition)
        .bind(col(|m| m.gross_volume))
        .bind(col(|m| m.fees))
        .bind(col(|m| m.net_settled))
        .execute(&mut *conn)
        .await?;
    }
    if !d.confirmations.is_empty() {
        let c = &d.confirmations;
        sqlx::query(
            "INSERT INTO analytics_confirmation_times (payment_id, invoice_id, merchant_id, day, millis) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::date[], $5::bigint[]) \
             ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(c.iter().map(|s| s.payment_id).collect::<Vec<_>>())
        .bind(c.iter().map(|s| s.invoice_id).collect::<Vec<_>>())
        .bind(c.iter().map(|s| s.merchant_id).collect::<Vec<_>>())
        .bind(c.iter().map(|s| s.day).collect::<Vec<_>>())
        .bind(c.iter().map(|s| s.millis).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Adds `inputs` (each `(index, input)`, in order, already de-duplicated) to the aggregates: load, fold, write.
async fn apply(
    conn: &mut PgConnection,
    shard: &Shard,
    inputs: &[(usize, &Input)],
) -> Result<(), BatchFailure> {
    let known = load_invoices(conn, &invoices_needed(inputs.iter().map(|(_, i)| *i))).await?;
    let deltas = fold(&known, inputs).map_err(|(index, error)| BatchFailure {
        index: Some(index),
        error,
    })?;
    write(conn, shard, &deltas).await?;
    Ok(())
}

/// Adds the batch `inputs` — one partition's, `shard`, in offset order — to the aggregates of `group` through
/// `conn` (the consumer's transaction): de-duplicates every event id against `processed_events` and inside the
/// batch, then applies the rest in at most five more statements. Returns each input's outcome; on `Err`
/// (naming the failing input when it can) the caller must roll the transaction back.
pub async fn aggregate_batch(
    conn: &mut PgConnection,
    group: &str,
    shard: &Shard,
    inputs: &[Input],
) -> Result<Vec<Outcome>, BatchFailure> {
    let ids: Vec<Uuid> = inputs.iter().map(|i| i.event_id().as_uuid()).collect();
    let first = first_times(conn, group, &ids).await?;
    let fresh: Vec<(usize, &Input)> = inputs
        .iter()
        .enumerate()
        .filter(|(i, _)| first[*i])
        .collect();
    if !fresh.is_empty() {
        apply(conn, shard, &fresh).await?;
    }
    Ok(first
        .into_iter()
        .map(|f| {
            if f {
                Outcome::Aggregated
            } else {
                Outcome::Duplicate
            }
        })
        .collect())
}

/// Adds one `input` to the aggregates, without de-duplication (the caller has checked it is not a duplicate).
pub async fn aggregate(
    conn: &mut PgConnection,
    shard: &Shard,
    input: &Input,
) -> Result<(), AggregateError> {
    apply(conn, shard, &[(0, input)])
        .await
        .map_err(|failure| failure.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkout_events::CheckoutViewed;
    use events::{Envelope, EventId, EventType, examples};

    fn event(t: EventType) -> Envelope {
        let mut parts = examples::example(t).into_parts();
        parts.event_id = EventId::new();
        Envelope::from_parts(parts).unwrap()
    }

    fn at(e: &Envelope, timestamp: &str) -> Envelope {
        let mut parts = e.clone().into_parts();
        parts.timestamp = timestamp.parse().unwrap();
        Envelope::from_parts(parts).unwrap()
    }

    fn domain(e: Envelope) -> Input {
        Input::Domain(Box::new(e))
    }

    fn indexed(inputs: &[Input]) -> Vec<(usize, &Input)> {
        inputs.iter().enumerate().collect()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    /// The example invoice as stored after its creation.
    fn stored(created: &Envelope) -> InvoiceFacts {
        let mut known = HashMap::new();
        let deltas = fold(&known, &[(0, &domain(created.clone()))]).unwrap();
        known.extend(deltas.invoices);
        known.into_values().next().unwrap()
    }

    #[test]
    fn a_whole_invoice_life_in_one_batch_counts_like_one_event_at_a_time() {
        // Given an invoice created on the 15th, paid twice on the 16th, confirmed, and a settlement completed
        let created = at(
            &event(EventType::InvoiceCreated),
            "2025-01-15T09:59:00.123456789Z",
        );
        let paid = at(&event(EventType::InvoicePaid), "2025-01-16T00:00:30Z");
        let paid_again = at(&event(EventType::InvoicePaid), "2025-01-16T00:05:00Z");
        let confirmed = at(&event(EventType::PaymentConfirmed), "2025-01-16T00:01:00Z");
        let settled = at(
            &event(EventType::SettlementCompleted),
            "2025-01-16T08:00:00Z",
        );
        let merchant = created.merchant_id().as_uuid();
        let inputs = [created, paid, paid_again, confirmed, settled].map(domain);

        // When the batch is folded against an empty database
        let together = fold(&HashMap::new(), &indexed(&inputs)).unwrap();

        // Then: created on the 15th (its conversion too), paid once on the 16th, one sample, money per day
        let day15 = together.daily[&(merchant, d("2025-01-15"))];
        assert_eq!((day15.created, day15.converted, day15.paid), (1, 1, 0));
        let day16 = together.daily[&(merchant, d("2025-01-16"))];
        assert_eq!((day16.paid, day16.created, day16.converted), (1, 0, 0));
        assert_eq!(together.daily.len(), 2);
        let money = together.money[&(merchant, d("2025-01-16"), "USD".to_string())];
        assert_eq!(money.gross_volume, dec("16.49"));
        assert_eq!((money.fees, money.net_settled), (dec("0.16"), dec("16.33")));
        let [sample] = together.confirmations[..] else {
            panic!("one sample: {:?}", together.confirmations)
        };
        // 09:59:00.123456 (as stored) → 00:01:00 the next day
        assert_eq!((sample.day, sample.millis), (d("2025-01-16"), 50_519_876));
        let invoice = together.invoices.values().next().unwrap();
        assert_eq!(
            invoice.paid_at,
            Some("2025-01-16T00:00:30Z".parse().unwrap())
        );
        assert_eq!(invoice.created_at.timestamp_subsec_nanos(), 123_456_000);

        // And folding the events one at a time (the stored rows carried from one to the next) adds up the same
        let mut known: HashMap<Uuid, InvoiceFacts> = HashMap::new();
        let mut daily: BTreeMap<(Uuid, NaiveDate), Counters> = BTreeMap::new();
        let mut samples = Vec::new();
        for input in &inputs {
            let one = fold(&known, &[(0, input)]).unwrap();
            known.extend(one.invoices);
            for (k, c) in one.daily {
                let sum = daily.entry(k).or_default();
                sum.created += c.created;
                sum.paid += c.paid;
                sum.converted += c.converted;
            }
            samples.extend(one.confirmations);
        }
        assert_eq!(daily, together.daily);
        assert_eq!(samples, together.confirmations);
    }

    #[test]
    fn an_invoice_already_stored_is_not_created_again_and_is_paid_only_once() {
        // Given the invoice stored and already paid
        let created = event(EventType::InvoiceCreated);
        let mut row = stored(&created);
        row.paid_at = Some(row.created_at);
        let known = HashMap::from([(row.invoice_id, row)]);
        // When it is created and paid again (other event ids: re-emitted, not re-published)
        let inputs = [created, event(EventType::InvoicePaid)].map(domain);
        let deltas = fold(&known, &indexed(&inputs)).unwrap();
        // Then nothing is counted or written
        assert_eq!(deltas, Deltas::default());
    }

    #[test]
    fn a_payment_of_an_unknown_invoice_names_its_index() {
        // Given nothing stored
        let inputs = [
            domain(event(EventType::InvoiceExpired)),
            domain(event(EventType::PaymentConfirmed)),
            domain(event(EventType::InvoicePaid)),
        ];
        // When folded, Then the first input needing the invoice fails the batch at its index
        let (index, error) = fold(&HashMap::new(), &indexed(&inputs)).unwrap_err();
        assert_eq!(index, 1);
        assert!(matches!(error, AggregateError::Unknown(ref m) if m.contains("unknown")));
        // And an InvoicePaid after the creation in the same batch is fine
        let inputs = [
            domain(event(EventType::InvoiceCreated)),
            domain(event(EventType::InvoicePaid)),
        ];
        assert!(fold(&HashMap::new(), &indexed(&inputs)).is_ok());
        // The original indices are reported, not positions in the slice
        let only = domain(event(EventType::InvoicePaid));
        assert_eq!(fold(&HashMap::new(), &[(41, &only)]).unwrap_err().0, 41);
    }

    #[test]
    fn views_expiries_cancellations_and_repeated_confirmations_count_on_their_own_day() {
        // Given a stored invoice
        let created = event(EventType::InvoiceCreated);
        let row = stored(&created);
        let merchant = row.merchant_id;
        let known = HashMap::from([(row.invoice_id, row)]);
        let view = |t: &str| {
            Input::CheckoutViewed(CheckoutViewed {
                event_id: EventId::new(),
                merchant_id: created.merchant_id(),
                invoice_id: examples::invoice_id(),
                occurred_at: t.parse().unwrap(),
            })
        };
        let confirmed = event(EventType::PaymentConfirmed);
        let inputs = [
            view("2025-01-17T00:00:00Z"),
            view("2025-01-17T23:59:59Z"),
            view("2025-01-18T00:00:00Z"),
            domain(at(
                &event(EventType::InvoiceExpired),
                "2025-01-17T10:00:00Z",
            )),
            domain(at(
                &event(EventType::InvoiceCancelled),
                "2025-01-18T10:00:00Z",
            )),
            domain(confirmed.clone()),
            // The same payment confirmed again under another event id: still one sample.
            domain(at(
                &event(EventType::PaymentConfirmed),
                "2025-01-19T00:00:00Z",
            )),
        ];
        // When folded
        let deltas = fold(&known, &indexed(&inputs)).unwrap();
        // Then
        let c17 = deltas.daily[&(merchant, d("2025-01-17"))];
        assert_eq!((c17.views, c17.expired, c17.cancelled), (2, 1, 0));
        let c18 = deltas.daily[&(merchant, d("2025-01-18"))];
        assert_eq!((c18.views, c18.expired, c18.cancelled), (1, 0, 1));
        assert_eq!(deltas.confirmations.len(), 1);
        assert_eq!(deltas.confirmations[0].day, day(confirmed.timestamp()));
        assert!(deltas.invoices.is_empty() && deltas.money.is_empty());
    }

    #[test]
    fn methods_chosen_and_abandonments_count_per_asset_and_reason_on_their_own_day() {
        use events::analytics::{AbandonReason, AbandonStage};
        let chosen = examples::payment_method_chosen();
        let merchant = chosen.merchant_id.as_uuid();
        let on = |t: &str| t.parse::<DateTime<Utc>>().unwrap();
        let mut other = chosen.clone();
        other.event_id = EventId::new();
        other.crypto_currency = events::money::CryptoAsset::Usdc;
        other.network = events::payload::Network::Polygon;
        other.occurred_at = on("2025-01-16T00:00:00Z");
        let abandoned = |reason, t: &str| {
            let mut a = examples::checkout_abandoned();
            a.event_id = EventId::new();
            a.stage = AbandonStage::AwaitingPayment;
            a.reason = reason;
            a.occurred_at = on(t);
            Input::Abandoned(a)
        };
        let inputs = [
            Input::MethodChosen(chosen.clone()),
            Input::MethodChosen(chosen.clone()),
            Input::MethodChosen(other),
            abandoned(AbandonReason::LeftPage, "2025-01-15T23:00:00Z"),
            abandoned(AbandonReason::Expired, "2025-01-15T23:30:00Z"),
            abandoned(AbandonReason::Expired, "2025-01-16T01:00:00Z"),
        ];
        // No invoice row is needed (a record of the page counts even before its invoice is known).
        assert!(invoices_needed(&inputs).is_empty());
        let deltas = fold(&HashMap::new(), &indexed(&inputs)).unwrap();
        let d15 = d("2025-01-15");
        assert_eq!(
            deltas.methods,
            BTreeMap::from([
                ((merchant, d15, "USDT".into(), "tron".into()), 2),
                (
                    (merchant, d("2025-01-16"), "USDC".into(), "polygon".into()),
                    1
                ),
            ])
        );
        let c15 = deltas.daily[&(merchant, d15)];
        assert_eq!((c15.abandoned_left, c15.abandoned_expired), (1, 1));
        let c16 = deltas.daily[&(merchant, d("2025-01-16"))];
        assert_eq!((c16.abandoned_left, c16.abandoned_expired), (0, 1));
    }

    #[test]
    fn the_invoices_needed_are_those_created_paid_or_confirmed_once_each() {
        let created = event(EventType::InvoiceCreated);
        let inputs = [
            domain(created.clone()),
            domain(event(EventType::InvoicePaid)),
            domain(event(EventType::PaymentConfirmed)),
            domain(event(EventType::SettlementCompleted)),
            domain(event(EventType::InvoiceExpired)),
        ];
        assert_eq!(invoices_needed(&inputs), [created.aggregate_id().as_uuid()]);
        assert!(invoices_needed(&[domain(event(EventType::MerchantCreated))]).is_empty());
    }
}
