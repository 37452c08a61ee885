//! `checkoutctl outbox …`: append events to the outbox, inspect its backlog, release or drop poison rows.
//!
//! Guarantees: `append` validates every event with the same decoder the consumers use and appends them
//! through the same writer the services use (`outbox::append_batch`), one transaction per batch. A batch that
//! holds an invalid event is not appended at all; the command stops there and says which lines were appended,
//! so nothing is lost or half-applied and the operator can fix and resume. `drop` never deletes silently: the
//! row moves to `outbox_dropped` with who dropped it and why.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::{Io, Run, block_on, connect, exit};

/// Append events to the transactional outbox; show its backlog; release or drop quarantined rows.
#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    #[command(subcommand)]
    command: OutboxCommand,
    /// PostgreSQL URL of the outbox; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum OutboxCommand {
    /// Append NDJSON envelopes (one per line) to the outbox, one transaction per batch.
    ///
    /// Every event is validated first; a batch containing an invalid event is not appended, the errors are
    /// printed with line numbers and JSON paths, and the command stops (exit 1) after saying which lines were
    /// appended. Progress goes to stderr.
    Append {
        /// NDJSON file; `-` or nothing reads standard input.
        #[arg(value_name = "FILE|-")]
        input: Option<PathBuf>,
        /// Events per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
    },
    /// Backlog, age of the oldest unpublished event, quarantined rows and publisher replicas.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put a quarantined row back in line after the cause is fixed (e.g. the topic's max.message.bytes raised).
    Release {
        /// The event id of the quarantined row (see `outbox status`).
        event_id: uuid::Uuid,
    },
    /// Remove a quarantined row for good, unblocking the later events of its key. The row is kept in
    /// outbox_dropped with who and why.
    Drop {
        /// The event id of the quarantined row.
        event_id: uuid::Uuid,
        /// Why it is dropped (recorded).
        #[arg(long)]
        reason: String,
        /// Who drops it (recorded); defaults to $USER.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
}

impl Run for OutboxArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            match self.command {
                OutboxCommand::Append { input, batch_size } => {
                    append(&mut conn, input, batch_size as usize, io).await
                }
                OutboxCommand::Status { json } => status(&mut conn, json, io).await,
                OutboxCommand::Release { event_id } => {
                    outbox::admin::release(&mut conn, event_id).await?;
                    writeln!(
                        io.stderr,
                        "released {event_id}; the publisher retries it next"
                    )?;
                    Ok(exit::OK)
                }
                OutboxCommand::Drop {
                    event_id,
                    reason,
                    by,
                } => {
                    outbox::admin::drop_row(&mut conn, event_id, &by, &reason).await?;
                    writeln!(io.stderr, "dropped {event_id} (kept in outbox_dropped)")?;
                    Ok(exit::OK)
                }
            }
        })
    }
}

async fn append(
    conn: &mut PgConnection,
    input: Option<PathBuf>,
    batch_size: usize,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let mut file_reader;
    let reader: &mut dyn BufRead = match input.as_deref() {
        None => &mut *io.stdin,
        Some(path) if path.as_os_str() == "-" => &mut *io.stdin,
        Some(path) => {
            file_reader = BufReader::new(
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            );
            &mut file_reader
        }
    };
    let mut lines = reader.lines().enumerate();
    let (mut appended, mut transactions, mut last_line) = (0usize, 0usize, 0usize);
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        let mut errors = Vec::new();
        let mut first_line = None;
        while batch.len() + errors.len() < batch_size {
            let Some((index, line)) = lines.next() else {
                break;
            };
            let line = line.context("reading input")?;
            if line.trim().is_empty() {
                continue;
            }
            first_line.get_or_insert(index + 1);
            last_line = index + 1;
            match events::decode(line.as_bytes()) {
                Ok(envelope) => batch.push(envelope),
                Err(err) => errors.push(format!("line {}: {err}", index + 1)),
            }
        }
        if !errors.is_empty() {
            for error in &errors {
                writeln!(io.stderr, "{error}")?;
            }
            writeln!(
                io.stderr,
                "stopped: {} invalid event(s) in the batch of lines {}..={last_line}; that batch was not appended. \
                 Appended before it: {appended} event(s) in {transactions} transaction(s).",
                errors.len(),
                first_line.unwrap_or(last_line),
            )?;
            return Ok(exit::INVALID);
        }
        if batch.is_empty() {
            break;
        }
        let mut tx = conn.begin().await.context("beginning a transaction")?;
        outbox::append_batch(&mut tx, &batch)
            .await
            .context("appending to the outbox")?;
        tx.commit().await.context("committing")?;
        appended += batch.len();
        transactions += 1;
        if transactions.is_multiple_of(20) {
            writeln!(
                io.stderr,
                "appended {appended} events (through line {last_line})"
            )?;
        }
    }
    writeln!(
        io.stderr,
        "appended {appended} event(s) in {transactions} transaction(s)"
    )?;
    Ok(if appended == 0 {
        exit::INVALID
    } else {
        exit::OK
    })
}

async fn status(conn: &mut PgConnection, json: bool, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let status = outbox::admin::status(conn).await?;
    if json {
        serde_json::to_writer_pretty(&mut *io.stdout, &status)?;
        writeln!(io.stdout)?;
        return Ok(exit::OK);
    }
    let b = &status.backlog;
    let about = if b.rows_estimated { "about " } else { "" };
    writeln!(io.stdout, "backlog:            {about}{} row(s)", b.rows)?;
    writeln!(
        io.stdout,
        "oldest unpublished: {:.1} s",
        b.oldest_age_seconds
    )?;
    writeln!(
        io.stdout,
        "quarantined:        {} row(s), blocking {} later row(s) of their keys",
        b.quarantined, b.blocked
    )?;
    for q in &status.quarantined_rows {
        writeln!(
            io.stdout,
            "  {}  {:<20} key {}  {} B  attempts {}  since {}\n    error: {}",
            q.event_id,
            q.event_type,
            q.partition_key,
            q.payload_bytes,
            q.attempts,
            q.quarantined_at.format("%Y-%m-%dT%H:%M:%SZ"),
            q.last_error.as_deref().unwrap_or("-"),
        )?;
    }
    writeln!(io.stdout, "publishers:         {}", status.publishers.len())?;
    for p in &status.publishers {
        writeln!(
            io.stdout,
            "  {}  {:<16} {:>2} bucket(s)  heartbeat {:.1} s ago",
            p.instance_id, p.hostname, p.buckets, p.heartbeat_age_seconds
        )?;
    }
    Ok(exit::OK)
}
