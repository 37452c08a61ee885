//! PostgreSQL: the connection pool and the workspace's migrations (`migrations/` at the workspace root).
//!
//! [`MIGRATOR`] is embedded at compile time, so every binary carries the schema it was built for; `checkoutctl db
//! migrate` and the test helpers apply it. Migrations are forward-only and each runs in its own transaction.

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseSettings;

/// The workspace's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url (DATABASE_URL) is not set")]
    NoUrl,
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Opens a pool; fails if the first connection cannot be made within the acquire timeout.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let url = settings.url.as_ref().ok_or(DbError::NoUrl)?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect(url.expose_secret())
        .await
        .map_err(DbError::Connect)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await.map_err(DbError::Migrate)
}
