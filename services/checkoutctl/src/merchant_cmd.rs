//! `checkoutctl merchant show ID`: a merchant's status, settings and balances from the read models
//! (services/projections), with its ledger balance, the fees it paid and its held settlements from the settlement
//! service's tables (`ledger_entries`, `settlements`).
//!
//! Guarantees: reads only, in one `REPEATABLE READ, READ ONLY` transaction; the status line says since when a
//! merchant is suspended, or when it was reinstated (with the suspension it was reinstated from); balances are per
//! settlement currency — from the read models: net pending (settlements pending or retrying), settled (gross,
//! fees, net, count) and failed; from the ledger: owed (`merchant_payable`), paid out (`merchant_paid_out`) and
//! the platform fees charged on its settlements — as exact decimals; every held settlement is listed with its
//! amounts, since when and why; `--json` prints the same as JSON (the read models' view with `ledger` and
//! `held_settlements` added). An unknown merchant exits 1.

use chrono::{DateTime, Utc};
use events::MerchantId;
use events::money::Decimal;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::invoice_cmd::{table, table_or, time};
use crate::{Io, Run, block_on, connect, exit};

/// A merchant's money per currency as the ledger says.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LedgerBalance {
    pub currency: String,
    /// Owed to the merchant, not paid out yet (pending and held settlements): `merchant_payable`.
    pub payable: Decimal,
    /// Paid out: `merchant_paid_out`.
    pub paid_out: Decimal,
    /// Platform fees charged on its settlements (`platform_fees` lines of its settlement journals).
    pub fees_paid: Decimal,
    /// Its settlements in this currency (any status).
    pub settlements: i64,
}

/// A settlement held for a suspended merchant, waiting for the reinstatement.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct HeldSettlement {
    pub settlement_id: String,
    pub invoice_id: String,
    pub currency: String,
    pub gross_amount: Decimal,
    pub platform_fee_amount: Decimal,
    pub net_amount: Decimal,
    pub held_at: Option<DateTime<Utc>>,
    /// From the read models (`merchant_suspended`), when they have the hold.
    pub reason: Option<String>,
}

/// Everything `merchant show` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MerchantShow {
    #[serde(flatten)]
    pub view: projections::query::MerchantView,
    pub ledger: Vec<LedgerBalance>,
    pub held_settlements: Vec<HeldSettlement>,
}

/// The merchant `id` as the read models know it, with its ledger balances and held settlements; `None` when
/// the read models do not know it.
pub async fn merchant(conn: &mut PgConnection, id: Uuid) -> anyhow::Result<Option<MerchantShow>> {
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let Some(view) = projections::query::merchant(&mut tx, id).await? else {
        return Ok(None);
    };
    let ledger = sqlx::query_as(
        "WITH b AS (SELECT currency, payable, paid_out FROM ledger_merchant_balances WHERE merchant_id = $1), \
              s AS (SELECT currency, count(*) AS settlements FROM settlements WHERE merchant_id = $1 \
                    GROUP BY currency), \
              f AS (SELECT e.currency, sum(e.amount) AS fees_paid FROM ledger_entries e \
                    JOIN settlements x ON x.settlement_id = e.settlement_id \
                    WHERE x.merchant_id = $1 AND e.kind = 'settlement' AND e.account = 'platform_fees' \
                    GROUP BY e.currency) \
         SELECT currency, coalesce(b.payable, 0) AS payable, coalesce(b.paid_out, 0) AS paid_out, \
                coalesce(f.fees_paid, 0) AS fees_paid, coalesce(s.settlements, 0) AS settlements \
         FROM b FULL JOIN f USING (currency) FULL JOIN s USING (currency) ORDER BY currency",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let held_settlements = sqlx::query_as(
        "SELECT 'set_' || s.settlement_id AS settlement_id, 'inv_' || s.invoice_id AS invoice_id, s.currency, \
                s.gross_amount, s.platform_fee_amount, s.net_amount, s.held_at, p.failure_reason AS reason \
         FROM settlements s LEFT JOIN proj_settlements p ON p.settlement_id = s.settlement_id \
         WHERE s.merchant_id = $1 AND s.status = 'held' ORDER BY s.held_at, s.settlement_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(MerchantShow {
        view,
        ledger,
        held_settlements,
    }))
}

/// Show a merchant's status, settings, balances (read models and ledger), fees, held settlements and invoices
/// per status (DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct MerchantArgs {
    #[command(subcommand)]
    command: MerchantCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum MerchantCommand {
    /// A merchant and its balance as the read models know them; exit 1 if they do not.
    Show {
        /// The merchant id (`mer_…` or a bare UUID).
        merchant_id: MerchantId,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

impl Run for MerchantArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let MerchantCommand::Show { merchant_id, json } = self.command;
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let Some(show) = merchant(&mut conn, merchant_id.as_uuid()).await? else {
                writeln!(
                    io.stderr,
                    "merchant {merchant_id} is not in the read models"
                )?;
                return Ok(exit::INVALID);
            };
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &show)?;
                writeln!(io.stdout)?;
                return Ok(exit::OK);
            }
            let view = &show.view;
            let m = &view.merchant;
            let out = &mut *io.stdout;
            writeln!(out, "merchant    {}  {}", m.merchant_id, m.business_name)?;
            let reason = m.suspension_reason.as_deref().unwrap_or("-");
            let since = match (m.status.as_str(), m.suspended_at, m.reinstated_at) {
                ("suspended", Some(s), _) => format!(" since {} ({reason})", time(&s)),
                (_, Some(s), Some(r)) => format!(
                    " since {}, reinstated after a suspension from {} ({reason})",
                    time(&r),
                    time(&s)
                ),
                (_, None, Some(r)) => format!(", reinstated {}", time(&r)),
                _ => String::new(),
            };
            writeln!(out, "status      {}{since}", m.status)?;
            writeln!(
                out,
                "currencies  invoices in {}, settled in {}; fee {}%",
                m.default_currency,
                m.settlement_currency,
                m.fee_percentage.normalize()
            )?;
            writeln!(
                out,
                "payments    {} via {}; expiry {}; tolerance {}",
                m.accepted_crypto_currencies.join(", "),
                m.speed_policy,
                m.invoice_expiry_minutes
                    .map_or("platform default".into(), |v| format!("{v} min")),
                m.payment_tolerance_percentage
                    .map_or("platform default".into(), |v| format!("{}%", v.normalize()))
            )?;
            writeln!(out)?;
            let rows = view.balances.iter().map(|b| {
                vec![
                    b.currency.clone(),
                    b.pending_net.normalize().to_string(),
                    b.settled_net.normalize().to_string(),
                    b.settled_fees.normalize().to_string(),
                    b.settled_gross.normalize().to_string(),
                    b.settlements_completed.to_string(),
                    b.failed_net.normalize().to_string(),
                ]
            });
            write!(
                out,
                "{}",
                table(
                    &[
                        "BALANCE",
                        "PENDING NET",
                        "SETTLED NET",
                        "FEES",
                        "SETTLED GROSS",
                        "SETTLEMENTS",
                        "FAILED NET"
                    ],
                    rows
                )
            )?;
            writeln!(out)?;
            let rows = show.ledger.iter().map(|l| {
                vec![
                    l.currency.clone(),
                    l.payable.normalize().to_string(),
                    l.paid_out.normalize().to_string(),
                    l.fees_paid.normalize().to_string(),
                    l.settlements.to_string(),
                ]
            });
            let headers = ["LEDGER", "OWED", "PAID OUT", "FEES PAID", "SETTLEMENTS"];
            write!(out, "{}", table_or("LEDGER: no entries", &headers, rows))?;
            writeln!(out)?;
            let rows = show.held_settlements.iter().map(|h| {
                vec![
                    h.settlement_id.clone(),
                    h.invoice_id.clone(),
                    format!("{} {}", h.net_amount.normalize(), h.currency),
                    format!("{} {}", h.gross_amount.normalize(), h.currency),
                    h.held_at.map_or("-".into(), |t| time(&t)),
                    h.reason.clone().unwrap_or_else(|| "-".into()),
                ]
            });
            let headers = ["HELD", "INVOICE", "NET", "GROSS", "SINCE", "REASON"];
            write!(out, "{}", table_or("HELD: none", &headers, rows))?;
            writeln!(out)?;
            let rows = view
                .invoices
                .iter()
                .map(|c| vec![c.status.clone(), c.invoices.to_string()]);
            write!(out, "{}", table(&["INVOICES", "COUNT"], rows))?;
            Ok(exit::OK)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    fn run(args: Vec<String>) -> (u8, String) {
        let (code, out, _) = crate::run_in_memory::<MerchantArgs>("merchant", args);
        (code, out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shows_a_merchant_with_its_balances() {
        let db = testkit::fresh_database().await;
        let mut tx = db.pool.begin().await.unwrap();
        for t in [
            EventType::MerchantCreated,
            EventType::SettlementCreated,
            EventType::SettlementCompleted,
        ] {
            projections::apply(&mut tx, &examples::example(t))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let args = vec![
            "show".into(),
            examples::merchant_id().to_string(),
            "--database-url".into(),
            db.url.clone(),
        ];
        let (code, out) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        assert!(out.contains("status      active"), "{out}");
        // The spec's settlement: 16.49 gross, 0.16 fee, 16.33 net, paid out.
        let balance = out
            .lines()
            .find(|l| l.starts_with("USD"))
            .expect("a USD balance");
        let cells: Vec<&str> = balance.split_whitespace().collect();
        assert_eq!(
            cells,
            ["USD", "0", "16.33", "0.16", "16.49", "1", "0"],
            "{out}"
        );

        let mut args = vec![
            "show".into(),
            examples::merchant_id().to_string(),
            "--json".into(),
        ];
        args.extend(["--database-url".into(), db.url.clone()]);
        let (code, out) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["balances"][0]["settled_net"], "16.33");
    }

    /// A held settlement of the example merchant as the settlement service records it: the row and its
    /// settlement journal (receipts −gross, payable +net, fees +fee), in one statement as the database demands.
    async fn record_held_settlement(
        pool: &sqlx::PgPool,
        gross: &str,
        fee: &str,
        net: &str,
    ) -> Uuid {
        let (set, inv, mer) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            examples::merchant_id().as_uuid(),
        );
        sqlx::query(
            "INSERT INTO settlements (settlement_id, invoice_id, merchant_id, currency, gross_amount, \
                 platform_fee_amount, net_amount, fee_percentage, status, created_at, held_at, causation_event_id) \
             VALUES ($1, $2, $3, 'USD', $4::numeric, $5::numeric, $6::numeric, 1, 'held', \
                     '2025-01-16T11:00:00Z', '2025-01-16T11:00:00Z', $1)",
        )
        .bind(set)
        .bind(inv)
        .bind(mer)
        .bind(gross)
        .bind(fee)
        .bind(net)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO ledger_entries (journal_id, line, kind, account, merchant_id, invoice_id, settlement_id, \
                 currency, amount, posted_at) \
             SELECT $1, l::smallint, 'settlement', a, m, $2, $1, 'USD', x, '2025-01-16T11:00:00Z' \
             FROM (VALUES (1, 'customer_receipts', NULL::uuid, -$4::numeric), (2, 'merchant_payable', $3::uuid, $6::numeric), \
                          (3, 'platform_fees', NULL, $5::numeric)) AS t(l, a, m, x)",
        )
        .bind(set)
        .bind(inv)
        .bind(mer)
        .bind(gross)
        .bind(fee)
        .bind(net)
        .execute(pool)
        .await
        .unwrap();
        set
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shows_the_ledger_balance_fees_paid_and_held_settlements() {
        let db = testkit::fresh_database().await;
        let mut tx = db.pool.begin().await.unwrap();
        projections::apply(&mut tx, &examples::example(EventType::MerchantCreated))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let first = record_held_settlement(&db.pool, "16.49", "0.16", "16.33").await;
        let second = record_held_settlement(&db.pool, "100", "1", "99").await;
        let args = vec![
            "show".into(),
            examples::merchant_id().to_string(),
            "--database-url".into(),
            db.url.clone(),
        ];
        let (code, out) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        let ledger: Vec<&str> = out
            .lines()
            .skip_while(|l| !l.starts_with("LEDGER"))
            .nth(1)
            .expect("a ledger row")
            .split_whitespace()
            .collect();
        // Owed 16.33 + 99, nothing paid out, fees 0.16 + 1, two settlements.
        assert_eq!(ledger, ["USD", "115.33", "0", "1.16", "2"], "{out}");
        for set in [first, second] {
            assert!(out.contains(&format!("set_{set}")), "{out}");
        }
        let held = out
            .lines()
            .find(|l| l.starts_with(&format!("set_{second}")))
            .unwrap();
        assert!(
            held.contains("99 USD") && held.contains("2025-01-16T11:00:00Z"),
            "{held}"
        );

        let args = vec![
            "show".into(),
            examples::merchant_id().to_string(),
            "--json".into(),
            "--database-url".into(),
            db.url.clone(),
        ];
        let (code, out) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::OK);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            json["merchant"]["status"], "active",
            "the read models' view is kept"
        );
        assert_eq!(json["ledger"][0]["payable"], "115.33");
        assert_eq!(json["ledger"][0]["fees_paid"], "1.16");
        assert_eq!(json["held_settlements"].as_array().unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shows_a_suspension_and_the_reinstatement_after_it() {
        let db = testkit::fresh_database().await;
        let show = |json: bool| {
            let mut args = vec![
                "show".to_string(),
                examples::merchant_id().to_string(),
                "--database-url".into(),
                db.url.clone(),
            ];
            if json {
                args.push("--json".into());
            }
            tokio::task::spawn_blocking(move || run(args))
        };
        for t in [EventType::MerchantCreated, EventType::MerchantSuspended] {
            let mut tx = db.pool.begin().await.unwrap();
            projections::apply(&mut tx, &examples::example(t))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let (code, out) = show(false).await.unwrap();
        assert_eq!(code, exit::OK);
        assert!(
            out.contains("status      suspended since 2025-01-16T10:00:00Z (compliance_review)"),
            "{out}"
        );

        let mut tx = db.pool.begin().await.unwrap();
        projections::apply(&mut tx, &examples::example(EventType::MerchantReinstated))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let (code, out) = show(false).await.unwrap();
        assert_eq!(code, exit::OK);
        assert!(
            out.contains(
                "status      active since 2025-01-17T10:00:00Z, reinstated after a suspension from \
                 2025-01-16T10:00:00Z (compliance_review)"
            ),
            "{out}"
        );
        let (_, out) = show(true).await.unwrap();
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["merchant"]["status"], "active");
        assert_eq!(json["merchant"]["reinstated_at"], "2025-01-17T10:00:00Z");
        assert_eq!(json["merchant"]["suspended_at"], "2025-01-16T10:00:00Z");
    }
}
