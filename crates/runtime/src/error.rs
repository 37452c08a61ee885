//! Errors: the handler's typed error, whose variant is the class the runtime routes on, and the runtime's own.
//!
//! Guarantees: every handler failure is exactly one [`ErrorClass`], visible in the type, and each class has one
//! strategy (the spec's "Error Classification" table), documented on the variant and applied by
//! [`crate::retry::decide`]. A handler that panics is treated as a business error (a bug: retried per the
//! policy, then dead-lettered), never as a crash of the consumer.

use std::error::Error as StdError;

/// A boxed, thread-safe error: the cause carried by a [`HandlerError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a handler could not process a record. The variant decides what the runtime does next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Likely to succeed if tried again soon (a timeout, a lock conflict, a 503 from a webhook endpoint).
    ///
    /// Routed: retried **in place** (same partition position, order kept) with exponential backoff starting at
    /// the group's `retry_backoff`, doubling up to `transient_backoff_cap`; **never** dead-lettered. A record that
    /// stays transient forever stalls its partition, which the lag alert reports.
    #[error("transient error")]
    Transient(#[source] BoxError),
    /// The record can never be processed as it is: undecodable bytes, an invalid envelope, an unknown event type
    /// or version — everything the events crate rejects.
    ///
    /// Routed: **no retry**; straight to `<topic>.dlq` with provenance headers, then the next record.
    #[error("schema error")]
    Schema(#[source] BoxError),
    /// The record is well-formed but business rules refuse it now (an unknown invoice, an illegal transition).
    ///
    /// Routed: retried per the group's [`crate::RetryPolicy`] (waiting its schedule), then dead-lettered.
    #[error("business error")]
    Business(#[source] BoxError),
    /// A dependency is down: the database, the broker, the DLQ write.
    ///
    /// Routed: the consumer's **circuit breaker opens**; every partition stops taking records, offsets do not
    /// advance, nothing is dead-lettered; after a growing probe interval one record is tried again (half-open)
    /// and success closes the breaker. The record is retried until it succeeds.
    #[error("infrastructure unavailable")]
    Infrastructure(#[source] BoxError),
}

/// The class of a [`HandlerError`], for routing, metrics labels and the DLQ's `dlq.error.class` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Transient,
    Schema,
    Business,
    Infrastructure,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] = [
        Self::Transient,
        Self::Schema,
        Self::Business,
        Self::Infrastructure,
    ];

    /// The class named `name` (the inverse of [`ErrorClass::as_str`]).
    pub fn parse(name: &str) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Stable lowercase name (metrics label, DLQ header value).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Schema => "schema",
            Self::Business => "business",
            Self::Infrastructure => "infrastructure",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HandlerError {
    pub fn transient(cause: impl Into<BoxError>) -> Self {
        Self::Transient(cause.into())
    }
    pub fn schema(cause: impl Into<BoxError>) -> Self {
        Self::Schema(cause.into())
    }
    pub fn business(cause: impl Into<BoxError>) -> Self {
        Self::Business(cause.into())
    }
    pub fn infrastructure(cause: impl Into<BoxError>) -> Self {
        Self::Infrastructure(cause.into())
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Transient(_) => ErrorClass::Transient,
            Self::Schema(_) => ErrorClass::Schema,
            Self::Business(_) => ErrorClass::Business,
            Self::Infrastructure(_) => ErrorClass::Infrastructure,
        }
    }

    /// The error and its whole cause chain, `class error: cause: cause…` (logs and the DLQ message header).
    pub fn chain(&self) -> String {
        service_kit::telemetry::error_chain(self)
    }
}

/// Database errors classified by what they mean for a retry: a lost or refused connection is infrastructure, a
/// serialization failure, deadlock or lock timeout is transient, anything else the database refused (a
/// constraint, a type, a syntax error in the handler's SQL) is a business error — it fails the same way again.
impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        match classify_sqlx(&err) {
            ErrorClass::Infrastructure => Self::Infrastructure(Box::new(err)),
            ErrorClass::Transient => Self::Transient(Box::new(err)),
            ErrorClass::Schema => Self::Schema(Box::new(err)),
            ErrorClass::Business => Self::Business(Box::new(err)),
        }
    }
}

/// See the `From<sqlx::Error>` impl of [`HandlerError`].
pub fn classify_sqlx(err: &sqlx::Error) -> ErrorClass {
    use sqlx::Error as E;
    match err {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => ErrorClass::Infrastructure,
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.as_ref() {
                // serialization_failure, deadlock_detected, lock_not_available, query_canceled (statement timeout)
                "40001" | "40P01" | "55P03" | "57014" => ErrorClass::Transient,
                // connection exceptions, insufficient resources, operator intervention (admin shutdown, crash,
                // cannot connect now), system errors, and the server ending the session of a transaction that
                // idled or ran too long (idle_in_transaction_session_timeout, transaction_timeout)
                "25P03" | "25P04" => ErrorClass::Infrastructure,
                c if c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || c.starts_with("58") =>
                {
                    ErrorClass::Infrastructure
                }
                _ => ErrorClass::Business,
            }
        }
        _ => ErrorClass::Business,
    }
}

/// The runtime could not be built or stopped for a reason it cannot recover from.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("invalid consumer configuration: {0}")]
    Config(String),
    #[error("creating a Kafka client failed")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("registering the consumer's metrics failed")]
    Metrics(#[source] prometheus::Error),
    #[error("the poll thread stopped unexpectedly: {0}")]
    PollThread(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_is_the_class_and_the_chain_names_the_cause() {
        let err = HandlerError::business("invoice inv_1 is unknown");
        assert_eq!(err.class(), ErrorClass::Business);
        assert_eq!(err.chain(), "business error: invoice inv_1 is unknown");
        assert_eq!(HandlerError::schema("x").class().as_str(), "schema");
        assert_eq!(HandlerError::transient("x").class(), ErrorClass::Transient);
        assert_eq!(
            HandlerError::infrastructure("x").class(),
            ErrorClass::Infrastructure
        );
    }

    #[test]
    fn lost_connections_are_infrastructure() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(HandlerError::from(io).class(), ErrorClass::Infrastructure);
        assert_eq!(
            HandlerError::from(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Infrastructure
        );
        assert_eq!(
            HandlerError::from(sqlx::Error::RowNotFound).class(),
            ErrorClass::Business
        );
    }
}
