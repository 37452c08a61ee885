//! `checkoutctl analytics daily MERCHANT`: a merchant's daily analytics (services/analytics).
//!
//! Guarantees: reads only; one row per UTC day with the day's invoices created / paid / expired / cancelled,
//! the conversion of the invoices created that day (paid since ÷ created), checkout views, checkouts abandoned
//! (left the page / expired with it open), confirmations with the median and p95 time from `InvoiceCreated` to
//! `PaymentConfirmed`, then the day's money per currency (gross volume of the invoices paid, fees and net of the
//! settlements completed), then — when any — the payment methods chosen per asset and network. `--json` prints the
//! same as JSON. No data for the merchant in the range exits 1.

use chrono::NaiveDate;
use events::MerchantId;

use crate::invoice_cmd::table;
use crate::{Io, Run, block_on, connect, exit};

/// Show daily analytics per merchant (DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct AnalyticsArgs {
    #[command(subcommand)]
    command: AnalyticsCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum AnalyticsCommand {
    /// A merchant's figures per UTC day; exit 1 if there are none in the range.
    Daily {
        /// The merchant id (`mer_…` or a bare UUID).
        merchant_id: MerchantId,
        /// First day (YYYY-MM-DD, UTC), inclusive.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day (YYYY-MM-DD, UTC), inclusive.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn seconds(ms: Option<i64>) -> String {
    ms.map_or("-".into(), |ms| format!("{}.{:03}s", ms / 1000, ms % 1000))
}

impl Run for AnalyticsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let AnalyticsCommand::Daily {
            merchant_id,
            from,
            to,
            json,
        } = self.command;
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let days = analytics::query::daily(&mut conn, merchant_id.as_uuid(), from, to).await?;
            if days.is_empty() {
                writeln!(
                    io.stderr,
                    "no analytics for merchant {merchant_id} in that range"
                )?;
                return Ok(exit::INVALID);
            }
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &days)?;
                writeln!(io.stdout)?;
                return Ok(exit::OK);
            }
            let rows = days.iter().map(|d| {
                vec![
                    d.day.to_string(),
                    d.invoices_created.to_string(),
                    d.invoices_paid.to_string(),
                    d.invoices_expired.to_string(),
                    d.invoices_cancelled.to_string(),
                    d.conversion_rate.map_or("-".into(), |r| {
                        format!(
                            "{}% ({}/{})",
                            (r * events::money::Decimal::ONE_HUNDRED).normalize(),
                            d.invoices_converted,
                            d.invoices_created
                        )
                    }),
                    d.checkout_views.to_string(),
                    format!(
                        "{} ({}/{})",
                        d.checkouts_abandoned_left + d.checkouts_abandoned_expired,
                        d.checkouts_abandoned_left,
                        d.checkouts_abandoned_expired
                    ),
                    d.confirmations.to_string(),
                    seconds(d.median_confirmation_ms),
                    seconds(d.p95_confirmation_ms),
                ]
            });
            let headers = [
                "DAY (UTC)",
                "CREATED",
                "PAID",
                "EXPIRED",
                "CANCELLED",
                "CONVERSION",
                "VIEWS",
                "ABANDONED (LEFT/EXPIRED)",
                "CONFIRMED",
                "MEDIAN TO CONFIRM",
                "P95 TO CONFIRM",
            ];
            write!(io.stdout, "{}", table(&headers, rows))?;
            writeln!(io.stdout)?;
            let rows = days.iter().flat_map(|d| {
                d.money.iter().map(move |m| {
                    vec![
                        d.day.to_string(),
                        m.currency.clone(),
                        m.gross_volume.normalize().to_string(),
                        m.fees.normalize().to_string(),
                        m.net_settled.normalize().to_string(),
                    ]
                })
            });
            write!(
                io.stdout,
                "{}",
                table(
                    &[
                        "DAY (UTC)",
                        "CURRENCY",
                        "GROSS VOLUME",
                        "FEES",
                        "NET SETTLED"
                    ],
                    rows
                )
            )?;
            if days.iter().any(|d| !d.methods.is_empty()) {
                let rows = days.iter().flat_map(|d| {
                    d.methods.iter().map(move |m| {
                        vec![
                            d.day.to_string(),
                            m.crypto_currency.clone(),
                            m.network.clone(),
                            m.choices.to_string(),
                        ]
                    })
                });
                writeln!(io.stdout)?;
                write!(
                    io.stdout,
                    "{}",
                    table(&["DAY (UTC)", "ASSET", "NETWORK", "METHOD CHOSEN"], rows)
                )?;
            }
            Ok(exit::OK)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use analytics::aggregate::{Shard, aggregate};
    use analytics::checkout_events::Input;
    use events::{EventType, examples};

    fn run(args: Vec<String>) -> (u8, String) {
        let (code, out, _) = crate::run_in_memory::<AnalyticsArgs>("analytics", args);
        (code, out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn prints_a_merchants_days_with_conversion_and_confirmation_times() {
        let db = testkit::fresh_database().await;
        let shard = Shard {
            topic: "t".into(),
            partition: 0,
        };
        let mut tx = db.pool.begin().await.unwrap();
        for t in [
            EventType::InvoiceCreated,
            EventType::InvoicePaid,
            EventType::PaymentConfirmed,
            EventType::SettlementCompleted,
        ] {
            aggregate(
                &mut tx,
                &shard,
                &Input::Domain(Box::new(examples::example(t))),
            )
            .await
            .unwrap();
        }
        // The checkout page's records of the example invoice: a method chosen, an abandonment.
        for input in [
            Input::MethodChosen(examples::payment_method_chosen()),
            Input::Abandoned(examples::checkout_abandoned()),
        ] {
            aggregate(&mut tx, &shard, &input).await.unwrap();
        }
        tx.commit().await.unwrap();
        let merchant = examples::merchant_id().to_string();
        let args = vec![
            "daily".into(),
            merchant.clone(),
            "--database-url".into(),
            db.url.clone(),
        ];
        let (code, out) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::OK, "{out}");
        let day = out
            .lines()
            .find(|l| l.starts_with("2025-01-15"))
            .expect("the example's day");
        assert!(day.contains("100% (1/1)"), "{out}");
        assert!(out.contains("USD       16.49         0.16  16.33"), "{out}");
        assert!(
            day.contains(" 1 (1/0) "),
            "one abandonment, the page left: {out}"
        );
        let method = out
            .lines()
            .find(|l| l.contains("USDT") && l.contains("tron"))
            .expect("the method chosen");
        assert!(
            method.starts_with("2025-01-15") && method.trim_end().ends_with(" 1"),
            "{out}"
        );

        let args = vec![
            "daily".into(),
            merchant,
            "--json".into(),
            "--from".into(),
            "2025-01-16".into(),
            "--database-url".into(),
            db.url.clone(),
        ];
        let (code, _) = tokio::task::spawn_blocking(move || run(args))
            .await
            .unwrap();
        assert_eq!(code, exit::INVALID, "no data after the example's day");
    }
}
