//! `checkoutctl projections rebuild`: rebuild the read models from `crypto-checkout.domain-events`.
//!
//! Guarantees (see `projections::rebuild`): the topic is replayed from the beginning into fresh tables with the
//! live consumer's own code; the swap is one transaction (readers see the old or the new read models, never a
//! mix) and the live consumer carries on without losing or repeating an event. `--dry-run` builds and compares
//! without swapping and exits 1 when the rebuilt tables differ from the live ones. Progress goes to stderr, the
//! report to stdout.

use anyhow::Context;
use service_kit::KafkaSettings;

use crate::{Io, Run, block_on, exit};

/// Rebuild the read models from the domain-events topic (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS).
#[derive(Debug, clap::Args)]
pub struct ProjectionsArgs {
    #[command(subcommand)]
    command: ProjectionsCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum ProjectionsCommand {
    /// Replay the topic from the beginning into fresh tables and swap them in atomically.
    Rebuild {
        /// The topic to replay.
        #[arg(long, default_value = events::topics::DOMAIN_EVENTS)]
        topic: String,
        /// Build and compare with the live tables, but do not swap; exit 1 if they differ.
        #[arg(long)]
        dry_run: bool,
        /// Events per transaction while replaying.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Run for ProjectionsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let ProjectionsCommand::Rebuild {
            topic,
            dry_run,
            batch_size,
            json,
        } = self.command;
        let url = self
            .database_url
            .context("DATABASE_URL is not set (pass --database-url or source .dev/env)")?;
        let bootstrap = self.bootstrap_servers.context(
            "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-servers or source .dev/env)",
        )?;
        let options = projections::rebuild::RebuildOptions {
            swap: !dry_run,
            batch_size: batch_size as usize,
            ..projections::rebuild::RebuildOptions::new(
                topic,
                KafkaSettings {
                    bootstrap_servers: bootstrap,
                    client: Default::default(),
                },
            )
        };
        let stderr = &mut *io.stderr;
        let report = block_on(async move {
            projections::rebuild::rebuild(&url, &options, |line| {
                let _ = writeln!(stderr, "{line}");
            })
            .await
            .context("rebuilding the read models")
        })?;
        if json {
            serde_json::to_writer_pretty(&mut *io.stdout, &report)?;
            writeln!(io.stdout)?;
        } else {
            writeln!(
                io.stdout,
                "{} record(s) replayed in {:.1}s: {} applied, {} duplicate(s), {} invalid, {} refused; {} caught up \
                 under the lock",
                report.records,
                report.seconds,
                report.applied,
                report.duplicates,
                report.invalid,
                report.refused,
                report.caught_up
            )?;
            let rows = report.differences.iter().map(|d| {
                vec![
                    d.table.clone(),
                    d.live_rows.to_string(),
                    d.rebuilt_rows.to_string(),
                    d.only_live.to_string(),
                    d.only_rebuilt.to_string(),
                ]
            });
            write!(
                io.stdout,
                "{}",
                crate::invoice_cmd::table(
                    &[
                        "TABLE",
                        "LIVE ROWS",
                        "REBUILT ROWS",
                        "ONLY LIVE",
                        "ONLY REBUILT"
                    ],
                    rows
                )
            )?;
            writeln!(
                io.stdout,
                "{}",
                match (report.swapped, report.identical()) {
                    (true, true) => "swapped in: the rebuilt read models equal the previous ones",
                    (true, false) =>
                        "swapped in: the rows above differed and are now as the topic says",
                    (false, true) => "dry run: the rebuilt read models equal the live ones",
                    (false, false) =>
                        "dry run: the rebuilt read models DIFFER from the live ones (nothing swapped)",
                }
            )?;
        }
        Ok(if !report.swapped && !report.identical() {
            exit::INVALID
        } else {
            exit::OK
        })
    }
}
