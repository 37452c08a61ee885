//! `checkoutctl audit verify`: check the audit log's hash chain (services/audit).
//!
//! Guarantees: reads only; recomputes every row's hash from row 1 and checks the links and the chain head;
//! exits 0 when the chain holds, 1 naming the first broken row (its number, event id and what is wrong)
//! otherwise. Prints the head (row number and hash), which can be recorded elsewhere as an anchor.

use crate::{Io, Run, block_on, connect, exit};

/// Verify the tamper-evident audit log (DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exit 1 naming the first broken row.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Run for AuditArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let AuditCommand::Verify { json } = self.command;
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let verification = audit::verify::verify(&mut conn).await?;
            if json {
                serde_json::to_writer_pretty(&mut *io.stdout, &verification)?;
                writeln!(io.stdout)?;
            } else {
                match &verification.first_break {
                    None => writeln!(
                        io.stdout,
                        "audit log intact: {} row(s); head row {} hash {}",
                        verification.rows, verification.head_seq, verification.head_hash
                    )?,
                    Some(b) => writeln!(
                        io.stdout,
                        "audit log BROKEN at row {}{}: {}",
                        b.seq,
                        b.event_id
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default(),
                        b.problem
                    )?,
                }
            }
            Ok(if verification.intact() {
                exit::OK
            } else {
                exit::INVALID
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::{Envelope, EventId, EventType, examples};

    fn run(url: String) -> (u8, String) {
        let (code, out, _) =
            crate::run_in_memory::<AuditArgs>("audit", ["verify", "--database-url", &url]);
        (code, out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn exits_zero_on_an_intact_chain_and_one_naming_the_first_broken_row() {
        let db = testkit::fresh_database().await;
        let provenance = audit::chain::Provenance {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        for (n, t) in [
            EventType::InvoiceCreated,
            EventType::PaymentDetected,
            EventType::InvoicePaid,
        ]
        .into_iter()
        .enumerate()
        {
            let mut parts = examples::example(t).into_parts();
            parts.event_id = EventId::new();
            let event = Envelope::from_parts(parts).unwrap();
            let text = String::from_utf8(events::encode(&event).unwrap()).unwrap();
            let provenance = audit::chain::Provenance {
                offset: n as i64,
                ..provenance.clone()
            };
            let mut tx = db.pool.begin().await.unwrap();
            audit::handler::append(&mut tx, &event, text, &provenance)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let url = db.url.clone();
        let (code, out) = tokio::task::spawn_blocking(move || run(url)).await.unwrap();
        assert_eq!(code, exit::OK, "{out}");
        assert!(out.contains("intact: 3 row(s)"), "{out}");

        // A superuser bypasses the triggers and edits row 2.
        let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::raw_sql("SET session_replication_role = replica; UPDATE audit_log SET ip_address = '10.0.0.1' WHERE seq = 2")
            .execute(&mut superuser)
            .await
            .unwrap();
        let url = db.url.clone();
        let (code, out) = tokio::task::spawn_blocking(move || run(url)).await.unwrap();
        assert_eq!(code, exit::INVALID, "{out}");
        assert!(out.contains("BROKEN at row 2 (evt_"), "{out}");
        assert!(out.contains("modified"), "{out}");
    }
}
