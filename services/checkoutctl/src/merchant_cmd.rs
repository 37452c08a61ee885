//! `checkoutctl merchant show ID`: a merchant's status, settings and balances from the read models
//! (services/projections).
//!
//! Guarantees: reads only; the status line says since when a merchant is suspended, or when it was reinstated
//! (with the suspension it was reinstated from); balances are per settlement currency — net pending (settlements pending or
//! retrying), settled (gross, fees, net, count) and failed — as exact decimals; `--json` prints the same as JSON.
//! An unknown merchant exits 1.

use events::MerchantId;

use crate::invoice_cmd::{table, time};
use crate::{Io, Run, block_on, connect, exit};

/// Show a merchant's status, settings, balances and invoices per status (read models; DATABASE_URL).
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
            let Some(view) = projections::query::merchant(&mut conn, merchant_id.as_uuid()).await?
            else {
                writeln!(
                    io.stderr,
                    "merchant {merchant_id} is not in the read models"
                )?;
                return Ok(exit::INVALID);
            };
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &view)?;
                writeln!(io.stdout)?;
                return Ok(exit::OK);
            }
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
    use clap::Parser;
    use events::{EventType, examples};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MerchantArgs,
    }

    fn run(args: Vec<String>) -> (u8, String) {
        let cli = Cli::try_parse_from(std::iter::once("merchant".to_string()).chain(args)).unwrap();
        let (mut stdin, mut stdout, mut stderr) = (&b""[..], Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        let code = cli.args.run(&mut io).unwrap();
        (code, String::from_utf8(stdout).unwrap())
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
