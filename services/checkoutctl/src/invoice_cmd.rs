//! `checkoutctl invoice show ID`: an invoice's state and history from the read models (services/projections).
//!
//! Guarantees: reads only; prints what the read models hold — status, amounts, payments with their
//! confirmations, settlement, and every event about the invoice in order — as a table, or as JSON with
//! `--json` (amounts as exact decimal strings). An unknown invoice exits 1.

use events::InvoiceId;

use crate::{Io, Run, block_on, connect, exit};

/// Show an invoice's state, payments, settlement and history (read models; DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct InvoiceArgs {
    #[command(subcommand)]
    command: InvoiceCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum InvoiceCommand {
    /// An invoice as the read models know it; exit 1 if they do not.
    Show {
        /// The invoice id (`inv_…` or a bare UUID).
        invoice_id: InvoiceId,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

impl Run for InvoiceArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let InvoiceCommand::Show { invoice_id, json } = self.command;
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let Some(view) = projections::query::invoice(&mut conn, invoice_id.as_uuid()).await?
            else {
                writeln!(io.stderr, "invoice {invoice_id} is not in the read models")?;
                return Ok(exit::INVALID);
            };
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &view)?;
                writeln!(io.stdout)?;
                return Ok(exit::OK);
            }
            print_invoice(&view, io)?;
            Ok(exit::OK)
        })
    }
}

fn print_invoice(view: &projections::query::InvoiceView, io: &mut Io<'_>) -> anyhow::Result<()> {
    let i = &view.invoice;
    let mut flags = Vec::new();
    if i.late_payment {
        flags.push("paid late".to_string());
    }
    if !i.overpaid_amount.is_zero() {
        flags.push(format!(
            "over-paid by {} {}",
            i.overpaid_amount.normalize(),
            i.crypto_currency
        ));
    }
    if i.paid_at.is_none() && !i.amount_paid.is_zero() {
        flags.push("partially paid".to_string());
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!("  ({})", flags.join(", "))
    };
    let at = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| time(&t));
    let out = &mut *io.stdout;
    writeln!(
        out,
        "invoice     {}  of merchant {}",
        i.invoice_id, i.merchant_id
    )?;
    writeln!(out, "status      {}{flags}", i.status)?;
    writeln!(
        out,
        "price       {} {}",
        i.total_amount.normalize(),
        i.currency
    )?;
    writeln!(
        out,
        "crypto      due {} {c}, paid {} {c}",
        i.crypto_amount_due.normalize(),
        i.amount_paid.normalize(),
        c = i.crypto_currency
    )?;
    writeln!(
        out,
        "payments    {} detected, {} confirmed, {} failed",
        i.payments_detected, i.payments_confirmed, i.payments_failed
    )?;
    writeln!(
        out,
        "created     {}   expires {}",
        time(&i.created_at),
        time(&i.expires_at)
    )?;
    writeln!(
        out,
        "paid        {}   confirmed {}",
        at(&i.paid_at),
        at(&i.confirmed_at)
    )?;
    if i.expired_at.is_some() || i.cancelled_at.is_some() {
        writeln!(
            out,
            "expired     {}   cancelled {}{}",
            at(&i.expired_at),
            at(&i.cancelled_at),
            i.cancellation_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "version     {} (last event {} at {})",
        i.version,
        i.last_event_id,
        time(&i.last_event_at)
    )?;
    if !view.payments.is_empty() {
        writeln!(out)?;
        let rows = view.payments.iter().map(|p| {
            vec![
                p.payment_id.clone(),
                p.status.clone(),
                format!("{} {}", p.amount.normalize(), i.crypto_currency),
                format!("{}/{}", p.confirmations, p.required_confirmations),
                p.network.clone(),
                format!("{}{}", p.coverage, if p.late { ", late" } else { "" }),
                time(&p.detected_at),
                p.failure_reason.clone().unwrap_or_default(),
            ]
        });
        write!(
            out,
            "{}",
            table(
                &[
                    "PAYMENT", "STATUS", "AMOUNT", "CONF", "NETWORK", "COVERAGE", "DETECTED",
                    "FAILURE"
                ],
                rows
            )
        )?;
    }
    if !view.settlements.is_empty() {
        writeln!(out)?;
        let rows = view.settlements.iter().map(|s| {
            vec![
                s.settlement_id.clone(),
                s.status.clone(),
                format!("{} {}", s.gross_amount.normalize(), s.currency),
                format!(
                    "{} ({}%)",
                    s.platform_fee_amount.normalize(),
                    s.fee_percentage.normalize()
                ),
                s.net_amount.normalize().to_string(),
                s.settled_at.map_or("-".into(), |t| time(&t)),
            ]
        });
        write!(
            out,
            "{}",
            table(
                &["SETTLEMENT", "STATUS", "GROSS", "FEE", "NET", "SETTLED"],
                rows
            )
        )?;
    }
    writeln!(out)?;
    let rows = view.history.iter().map(|h| {
        vec![
            time(&h.occurred_at),
            h.event_type.clone(),
            h.actor.clone(),
            h.event_id.clone(),
        ]
    });
    write!(
        out,
        "{}",
        table(&["HISTORY", "EVENT", "ACTOR", "EVENT ID"], rows)
    )?;
    Ok(())
}

/// RFC 3339 in UTC with the precision the value has.
pub(crate) fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    events::time::format_utc(t)
}

/// [`table`], or the line `none` when there are no rows.
pub(crate) fn table_or(
    none: &str,
    headers: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    if rows.is_empty() {
        format!("{none}\n")
    } else {
        table(headers, rows)
    }
}

/// A plain text table: a header row and left-aligned columns as wide as their widest cell.
pub(crate) fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (n, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if n + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{EventType, examples};

    fn run(args: &[&str]) -> (u8, String, String) {
        crate::run_in_memory::<InvoiceArgs>("invoice", args.iter().copied())
    }

    #[test]
    fn an_empty_table_is_its_none_line() {
        assert_eq!(
            table_or("HELD: none", &["HELD"], Vec::new()),
            "HELD: none\n"
        );
        assert_eq!(
            table_or("HELD: none", &["HELD"], vec![vec!["set_1".into()]]),
            "HELD\nset_1\n"
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(&["A", "LONGER"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONGER\nwide cell  x\n");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shows_an_invoice_with_its_history_as_a_table_or_json() {
        let db = testkit::fresh_database().await;
        let mut tx = db.pool.begin().await.unwrap();
        for t in [
            EventType::InvoiceCreated,
            EventType::PaymentDetected,
            EventType::InvoicePaid,
            EventType::PaymentConfirmed,
        ] {
            projections::apply(&mut tx, &examples::example(t))
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let id = examples::invoice_id().to_string();
        let url = db.url.clone();
        let (code, out, _) =
            tokio::task::spawn_blocking(move || run(&["show", &id, "--database-url", &url]))
                .await
                .unwrap();
        assert_eq!(code, exit::OK);
        assert!(out.contains("status      confirmed"), "{out}");
        assert!(out.contains("PaymentConfirmed"), "{out}");
        assert!(out.contains("over-paid by 0.01 USDT"), "{out}");

        let (id, url) = (examples::invoice_id().to_string(), db.url.clone());
        let (code, out, _) = tokio::task::spawn_blocking(move || {
            run(&["show", &id, "--json", "--database-url", &url])
        })
        .await
        .unwrap();
        assert_eq!(code, exit::OK);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["invoice"]["status"], "confirmed");
        assert_eq!(json["invoice"]["total_amount"], "16.49");
        assert_eq!(json["history"].as_array().unwrap().len(), 4);

        let url = db.url.clone();
        let unknown = InvoiceId::new().to_string();
        let (code, _, err) =
            tokio::task::spawn_blocking(move || run(&["show", &unknown, "--database-url", &url]))
                .await
                .unwrap();
        assert_eq!(code, exit::INVALID);
        assert!(err.contains("not in the read models"), "{err}");
    }
}
