//! Errors of the outbox. Whether retrying can help is visible in the type: [`OutboxError::is_retriable`].

use events::ContractError;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The record breaks its contract; the caller's transaction must not commit it. Permanent.
    #[error("record rejected by the contract")]
    Invalid(#[from] ContractError),
    /// PostgreSQL failed or is unreachable. Retriable.
    #[error("outbox database operation failed")]
    Database(#[from] sqlx::Error),
    /// The Kafka client could not be created or failed fatally. Retriable after re-creating the producer.
    #[error("Kafka producer failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka settings are unusable (e.g. `kafka.client` overrides a spec producer setting). Permanent.
    #[error("invalid Kafka settings")]
    Settings(#[from] service_kit::ConfigError),
    /// An operator command named a row that is not in the state it needs (e.g. releasing a row that is not
    /// quarantined). Permanent.
    #[error("{0}")]
    NotFound(String),
}

impl OutboxError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Kafka(_))
    }
}
