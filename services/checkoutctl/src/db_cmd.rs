//! `checkoutctl db …`: the database schema of the bus.
//!
//! Guarantees: `migrate` applies every pending migration embedded in this binary, each in its own transaction,
//! and is idempotent (a second run applies nothing); `status` lists every migration and whether it is applied,
//! and exits non-zero when any is pending or failed, so it can gate a deployment.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::PgConnection;

use crate::{Io, Run, block_on, connect, exit};

/// Apply or inspect the database migrations (DATABASE_URL).
#[derive(Debug, clap::Args)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum DbCommand {
    /// Apply every pending migration. Safe to repeat.
    Migrate,
    /// List the migrations this binary carries and whether each is applied; exit 1 if any is not.
    Status,
}

impl Run for DbArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let url = self.database_url;
        block_on(async move {
            let mut conn = connect(url).await?;
            let migrator = &service_kit::db::MIGRATOR;
            match self.command {
                DbCommand::Migrate => {
                    let before = applied(&mut conn).await?.len();
                    migrator
                        .run(&mut conn)
                        .await
                        .context("applying migrations")?;
                    let after = applied(&mut conn).await?.len();
                    writeln!(
                        io.stderr,
                        "migrations: {} applied now, {after} applied in total",
                        after - before
                    )?;
                    Ok(exit::OK)
                }
                DbCommand::Status => {
                    let applied = applied(&mut conn).await?;
                    let mut all_applied = true;
                    for migration in migrator.iter() {
                        let state = match applied.get(&migration.version) {
                            Some(true) => "applied",
                            Some(false) => "FAILED",
                            None => "pending",
                        };
                        all_applied &= state == "applied";
                        writeln!(
                            io.stdout,
                            "{:<16} {:<8} {}",
                            migration.version, state, migration.description
                        )?;
                    }
                    Ok(if all_applied { exit::OK } else { exit::INVALID })
                }
            }
        })
    }
}

/// Version → success of the migrations recorded in the database (empty before the first migrate).
async fn applied(conn: &mut PgConnection) -> anyhow::Result<HashMap<i64, bool>> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, bool)> = sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().collect())
}
