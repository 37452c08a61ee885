//! `checkoutctl settlement show SET_ID|INV_ID`: one settlement as the settlement service recorded it
//! (`settlements`), its double-entry ledger lines (`ledger_entries`) and its events as the read models hold them
//! (`proj_settlements`, `proj_invoice_history`).
//!
//! Guarantees: reads only, in one `REPEATABLE READ, READ ONLY` transaction (the parts agree with each other);
//! takes a settlement id (`set_…`), an invoice id (`inv_…`) or a bare UUID (either); prints the status (the
//! service's and the read models'), the amounts (gross, fee, net, currency, fee percentage) as exact decimals,
//! whether and why it is held, its times, every ledger line of its journals and of its invoice's (over-payment,
//! refunds), and its events in order; `--json` prints the same as JSON. Exit 1 when neither the service nor
//! the read models know the settlement.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use events::money::Decimal;
use events::{InvoiceId, SettlementId};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::invoice_cmd::{table_or, time};
use crate::{Io, Run, block_on, connect, exit};

/// Show a settlement: status, amounts, hold, times, ledger lines and events (DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct SettlementArgs {
    #[command(subcommand)]
    command: SettlementCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum SettlementCommand {
    /// A settlement by its id or its invoice's; exit 1 if it is not known.
    Show {
        /// `set_…` (the settlement), `inv_…` (the invoice's settlement) or a bare UUID (either).
        id: SettlementRef,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// What `settlement show` was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementRef {
    Settlement(Uuid),
    Invoice(Uuid),
    /// A bare UUID: a settlement id or an invoice id.
    Either(Uuid),
}

impl FromStr for SettlementRef {
    type Err = String;

    fn from_str(s: &str) -> Result<SettlementRef, String> {
        let s = s.trim();
        let bad = |e: &dyn std::fmt::Display| {
            format!(
                "`{s}` is not a settlement or invoice id (set_<uuid>, inv_<uuid> or a bare UUID): {e}"
            )
        };
        if s.starts_with(&format!("{}_", SettlementId::PREFIX)) {
            let id = SettlementId::from_str(s).map_err(|e| bad(&e))?;
            Ok(SettlementRef::Settlement(id.as_uuid()))
        } else if s.starts_with(&format!("{}_", InvoiceId::PREFIX)) {
            let id = InvoiceId::from_str(s).map_err(|e| bad(&e))?;
            Ok(SettlementRef::Invoice(id.as_uuid()))
        } else {
            Uuid::parse_str(s)
                .map(SettlementRef::Either)
                .map_err(|e| bad(&e))
        }
    }
}

impl std::fmt::Display for SettlementRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettlementRef::Settlement(u) => write!(f, "set_{u}"),
            SettlementRef::Invoice(u) => write!(f, "inv_{u}"),
            SettlementRef::Either(u) => write!(f, "{u}"),
        }
    }
}

/// The settlement as the settlement service recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ServiceRow {
    /// `created`, `held` or `completed`.
    pub status: String,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
    pub fee_percentage: Decimal,
    /// When the invoice became settleable (event time, T).
    pub created_at: DateTime<Utc>,
    pub held_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
    /// When the service wrote the row (wall clock).
    pub recorded_at: DateTime<Utc>,
    pub causation_event_id: String,
    pub correlation_id: Option<String>,
}

/// The settlement as the read models know it (from the settlement events).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ReadModelRow {
    /// `pending`, `retrying`, `completed` or `failed`.
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
    pub failed_at: Option<DateTime<Utc>>,
}

/// A ledger line of the settlement's journals or of its invoice's.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LedgerLine {
    pub journal_id: Uuid,
    /// `settlement`, `payout`, `overpayment`, `refund_owed`, `refund_reversed`.
    pub kind: String,
    pub line: i16,
    pub account: String,
    pub merchant_id: Option<String>,
    pub currency: String,
    pub amount: Decimal,
    pub posted_at: DateTime<Utc>,
}

/// A settlement event as the read models hold it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub data: serde_json::Value,
}

/// Everything `settlement show` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettlementView {
    pub settlement_id: String,
    pub invoice_id: String,
    pub merchant_id: String,
    /// The settlement service's status, or `unknown` when only the read models know the settlement.
    pub status: String,
    /// Held for a suspended merchant (the service's `held`, or the read models' `retrying`).
    pub held: bool,
    /// Why it is (or was) held, from the read models (`merchant_suspended`).
    pub hold_reason: Option<String>,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
    pub fee_percentage: Decimal,
    /// `None` when the settlement service has no such settlement.
    pub service: Option<ServiceRow>,
    /// `None` when the read models have not (yet) seen its events.
    pub read_model: Option<ReadModelRow>,
    /// Its journals and its invoice's, in posting order.
    pub ledger: Vec<LedgerLine>,
    /// Its events in the read models, in time order (at the same time, in lifecycle order: created, failed,
    /// completed).
    pub events: Vec<EventRow>,
}

#[derive(sqlx::FromRow)]
struct Ids {
    settlement_id: Uuid,
    invoice_id: Uuid,
    merchant_id: Uuid,
}

/// The settlement `id` refers to, if the settlement service or the read models know it.
pub async fn settlement(
    conn: &mut PgConnection,
    id: SettlementRef,
) -> Result<Option<SettlementView>, sqlx::Error> {
    let (by_settlement, by_invoice) = match id {
        SettlementRef::Settlement(u) => (Some(u), None),
        SettlementRef::Invoice(u) => (None, Some(u)),
        SettlementRef::Either(u) => (Some(u), Some(u)),
    };
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    // The service's row first; a settlement only the read models know (the service's table lost it) still
    // shows.
    let ids: Option<Ids> = sqlx::query_as(
        "SELECT settlement_id, invoice_id, merchant_id FROM ( \
             SELECT settlement_id, invoice_id, merchant_id, 0 AS source FROM settlements \
             WHERE settlement_id = $1 OR invoice_id = $2 \
             UNION ALL \
             SELECT settlement_id, invoice_id, merchant_id, 1 FROM proj_settlements \
             WHERE settlement_id = $1 OR invoice_id = $2) AS s \
         ORDER BY source, settlement_id LIMIT 1",
    )
    .bind(by_settlement)
    .bind(by_invoice)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ids) = ids else {
        return Ok(None);
    };
    let service: Option<ServiceRow> = sqlx::query_as(
        "SELECT status, currency, gross_amount, platform_fee_amount, net_amount, fee_percentage, created_at, \
                held_at, settled_at, recorded_at, 'evt_' || causation_event_id AS causation_event_id, \
                'corr_' || correlation_id AS correlation_id \
         FROM settlements WHERE settlement_id = $1",
    )
    .bind(ids.settlement_id)
    .fetch_optional(&mut *tx)
    .await?;
    let read_model: Option<ReadModelRow> = sqlx::query_as(
        "SELECT status, currency, gross_amount, platform_fee_amount, net_amount, fee_percentage, failures, \
                failure_reason, created_at, settled_at, failed_at \
         FROM proj_settlements WHERE settlement_id = $1",
    )
    .bind(ids.settlement_id)
    .fetch_optional(&mut *tx)
    .await?;
    let ledger: Vec<LedgerLine> = sqlx::query_as(
        "SELECT journal_id, kind, line, account, 'mer_' || merchant_id AS merchant_id, currency, amount, posted_at \
         FROM ledger_entries WHERE settlement_id = $1 OR invoice_id = $2 ORDER BY entry_id",
    )
    .bind(ids.settlement_id)
    .bind(ids.invoice_id)
    .fetch_all(&mut *tx)
    .await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT 'evt_' || event_id AS event_id, event_type, occurred_at, actor, data \
         FROM proj_invoice_history WHERE invoice_id = $1 AND event_type LIKE 'Settlement%' \
         ORDER BY occurred_at, CASE event_type WHEN 'SettlementCreated' THEN 0 WHEN 'SettlementFailed' THEN 1 \
                                               ELSE 2 END, event_id",
    )
    .bind(ids.invoice_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let (status, currency, gross, fee, net, rate) = match (&service, &read_model) {
        (Some(s), _) => (
            s.status.clone(),
            s.currency.clone(),
            s.gross_amount,
            s.platform_fee_amount,
            s.net_amount,
            s.fee_percentage,
        ),
        (None, Some(r)) => (
            "unknown".to_string(),
            r.currency.clone(),
            r.gross_amount,
            r.platform_fee_amount,
            r.net_amount,
            r.fee_percentage,
        ),
        (None, None) => unreachable!("the id was found in one of the two tables"),
    };
    let held = service.as_ref().is_some_and(|s| s.status == "held")
        || (service.is_none() && read_model.as_ref().is_some_and(|r| r.status == "retrying"));
    let hold_reason = read_model.as_ref().and_then(|r| r.failure_reason.clone());
    Ok(Some(SettlementView {
        settlement_id: format!("set_{}", ids.settlement_id),
        invoice_id: format!("inv_{}", ids.invoice_id),
        merchant_id: format!("mer_{}", ids.merchant_id),
        status,
        held,
        hold_reason,
        currency,
        gross_amount: gross,
        platform_fee_amount: fee,
        net_amount: net,
        fee_percentage: rate,
        service,
        read_model,
        ledger,
        events,
    }))
}

impl Run for SettlementArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let SettlementCommand::Show { id, json } = self.command;
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let Some(view) = settlement(&mut conn, id).await? else {
                writeln!(
                    io.stderr,
                    "no settlement {id}: neither the settlement service nor the read models know it"
                )?;
                return Ok(exit::INVALID);
            };
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &view)?;
                writeln!(io.stdout)?;
            } else {
                write!(io.stdout, "{}", human(&view))?;
            }
            Ok(exit::OK)
        })
    }
}

/// The settlement as people read it.
pub fn human(v: &SettlementView) -> String {
    let n = |d: Decimal| d.normalize().to_string();
    let at = |t: Option<DateTime<Utc>>| t.map_or("-".to_string(), |t| time(&t));
    let mut out = format!(
        "settlement  {}  of invoice {}, merchant {}\n",
        v.settlement_id, v.invoice_id, v.merchant_id
    );
    let read_model = v
        .read_model
        .as_ref()
        .map_or("not in the read models".to_string(), |r| {
            format!("read models: {}", r.status)
        });
    out.push_str(&format!("status      {} ({read_model})\n", v.status));
    out.push_str(&format!(
        "amounts     gross {} {c}, fee {} {c} ({}%), net {} {c}\n",
        n(v.gross_amount),
        n(v.platform_fee_amount),
        n(v.fee_percentage),
        n(v.net_amount),
        c = v.currency
    ));
    let reason = v.hold_reason.as_deref().unwrap_or("no reason recorded");
    let held_at = v.service.as_ref().and_then(|s| s.held_at);
    let hold = match (v.held, held_at) {
        (true, at_) => format!("HELD since {} ({reason})", at(at_)),
        (false, Some(h)) => format!("no; was held from {} ({reason})", time(&h)),
        (false, None) => "no".to_string(),
    };
    out.push_str(&format!("held        {hold}\n"));
    match &v.service {
        Some(s) => {
            out.push_str(&format!(
                "times       due {}, settled {}; recorded {}\n",
                time(&s.created_at),
                at(s.settled_at),
                time(&s.recorded_at)
            ));
            out.push_str(&format!(
                "cause       {}{}\n",
                s.causation_event_id,
                s.correlation_id
                    .as_deref()
                    .map(|c| format!(", correlation {c}"))
                    .unwrap_or_default()
            ));
        }
        None => {
            out.push_str("service     NOT in the settlement service's table (settlements)\n");
            if let Some(r) = &v.read_model {
                out.push_str(&format!(
                    "times       created {}, settled {} (read models)\n",
                    time(&r.created_at),
                    at(r.settled_at)
                ));
            }
        }
    }
    out.push('\n');
    let rows = v.ledger.iter().map(|l| {
        vec![
            l.kind.clone(),
            l.journal_id.to_string(),
            l.line.to_string(),
            l.account.clone(),
            format!("{} {}", n(l.amount), l.currency),
            time(&l.posted_at),
        ]
    });
    let headers = ["LEDGER", "JOURNAL", "LINE", "ACCOUNT", "AMOUNT", "POSTED"];
    out.push_str(&table_or("LEDGER: no lines", &headers, rows));
    out.push('\n');
    let rows = v.events.iter().map(|e| {
        vec![
            time(&e.occurred_at),
            e.event_type.clone(),
            e.actor.clone(),
            e.event_id.clone(),
        ]
    });
    let headers = ["EVENTS", "EVENT", "ACTOR", "EVENT ID"];
    out.push_str(&table_or("EVENTS: none in the read models", &headers, rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    fn run(args: Vec<String>) -> (u8, String, String) {
        crate::run_in_memory::<SettlementArgs>("settlement", args)
    }

    #[test]
    fn ids_parse_as_settlement_invoice_or_either() {
        let u = Uuid::from_u128(0x1234);
        assert_eq!(
            format!("set_{u}").parse::<SettlementRef>(),
            Ok(SettlementRef::Settlement(u))
        );
        assert_eq!(
            format!("inv_{u}").parse::<SettlementRef>(),
            Ok(SettlementRef::Invoice(u))
        );
        assert_eq!(u.to_string().parse(), Ok(SettlementRef::Either(u)));
        assert!(
            "mer_00000000-0000-0000-0000-000000001234"
                .parse::<SettlementRef>()
                .is_err()
        );
        assert!("set_nope".parse::<SettlementRef>().is_err());
    }

    /// The spec's settlement (16.49 USD at 1 %: fee 0.16, net 16.33), recorded as the service records it and
    /// projected from the example events.
    #[tokio::test(flavor = "multi_thread")]
    async fn shows_a_settlement_by_either_id_with_its_ledger_and_events() {
        let db = testkit::fresh_database().await;
        let (set, inv, mer) = (
            examples::settlement_id().as_uuid(),
            examples::invoice_id().as_uuid(),
            examples::merchant_id().as_uuid(),
        );
        let cause = examples::event_id(EventType::PaymentConfirmed).as_uuid();
        sqlx::query(
            "INSERT INTO settlements (settlement_id, invoice_id, merchant_id, currency, gross_amount, \
                 platform_fee_amount, net_amount, fee_percentage, status, created_at, settled_at, causation_event_id) \
             VALUES ($1, $2, $3, 'USD', 16.49, 0.16, 16.33, 1.0, 'completed', '2025-01-15T10:18:30Z', \
                     '2025-01-15T10:18:30Z', $4)",
        )
        .bind(set)
        .bind(inv)
        .bind(mer)
        .bind(cause)
        .execute(&db.pool)
        .await
        .unwrap();
        // Two balanced journals, each in one statement (the database refuses anything else).
        for (journal, kind, lines) in [
            (
                Uuid::from_u128(1),
                "settlement",
                "(1, 'customer_receipts', NULL::uuid, -16.49), (2, 'merchant_payable', $3::uuid, 16.33), \
                 (3, 'platform_fees', NULL, 0.16)",
            ),
            (
                Uuid::from_u128(2),
                "payout",
                "(1, 'merchant_payable', $3::uuid, -16.33), (2, 'merchant_paid_out', $3, 16.33)",
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO ledger_entries (journal_id, line, kind, account, merchant_id, invoice_id, settlement_id, \
                     currency, amount, posted_at) \
                 SELECT $1, l::smallint, '{kind}', a, m, $2, $4, 'USD', x, '2025-01-15T10:18:30Z' \
                 FROM (VALUES {lines}) AS t(l, a, m, x)"
            )))
            .bind(journal)
            .bind(inv)
            .bind(mer)
            .bind(set)
            .execute(&db.pool)
            .await
            .unwrap();
        }
        let mut tx = db.pool.begin().await.unwrap();
        for t in [
            EventType::MerchantCreated,
            EventType::InvoiceCreated,
            EventType::SettlementCreated,
            EventType::SettlementCompleted,
        ] {
            projections::apply(&mut tx, &examples::example(t))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();

        let url = db.url.clone();
        let show = move |id: String, json: bool| {
            let mut args = vec!["show".to_string(), id, "--database-url".into(), url.clone()];
            if json {
                args.push("--json".into());
            }
            tokio::task::spawn_blocking(move || run(args))
        };
        let (code, out, _) = show(format!("set_{set}"), false).await.unwrap();
        assert_eq!(code, exit::OK);
        assert!(
            out.starts_with(&format!(
                "settlement  set_{set}  of invoice inv_{inv}, merchant mer_{mer}\n\
             status      completed (read models: completed)\n\
             amounts     gross 16.49 USD, fee 0.16 USD (1%), net 16.33 USD\n\
             held        no\n\
             times       due 2025-01-15T10:18:30Z, settled 2025-01-15T10:18:30Z; recorded "
            )),
            "{out}"
        );
        let ledger: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| {
                (l.starts_with("settlement ") || l.starts_with("payout ")) && l.contains(" USD ")
            })
            .map(|l| l.split_whitespace().collect())
            .collect();
        let accounts: Vec<(&str, &str)> = ledger.iter().map(|c| (c[3], c[4])).collect();
        assert_eq!(
            accounts,
            [
                ("customer_receipts", "-16.49"),
                ("merchant_payable", "16.33"),
                ("platform_fees", "0.16"),
                ("merchant_payable", "-16.33"),
                ("merchant_paid_out", "16.33")
            ],
            "{out}"
        );
        assert!(out.contains(" SettlementCreated "), "{out}");
        assert!(out.contains(" SettlementCompleted "), "{out}");

        // By the invoice id, and a bare UUID of either kind: the same settlement.
        let (code, json, _) = show(format!("inv_{inv}"), true).await.unwrap();
        assert_eq!(code, exit::OK);
        let by_invoice: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(by_invoice["settlement_id"], format!("set_{set}"));
        assert_eq!(by_invoice["gross_amount"], "16.49");
        assert_eq!(by_invoice["platform_fee_amount"], "0.16");
        assert_eq!(by_invoice["net_amount"], "16.33");
        assert_eq!(by_invoice["held"], false);
        assert_eq!(by_invoice["ledger"].as_array().unwrap().len(), 5);
        let types: Vec<&str> = by_invoice["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["SettlementCreated", "SettlementCompleted"]);
        for bare in [set, inv] {
            let (code, json, _) = show(bare.to_string(), true).await.unwrap();
            assert_eq!(code, exit::OK);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v, by_invoice);
        }

        let (code, out, err) = show(format!("set_{}", Uuid::from_u128(9)), false)
            .await
            .unwrap();
        assert_eq!(code, exit::INVALID);
        assert!(out.is_empty());
        assert!(err.contains("neither the settlement service nor the read models know it"));
    }
}
