//! What the poll thread and every partition lane of one consumer share for the consumer's whole life.

use service_kit::KafkaSettings;
use service_kit::ops::Readiness;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::attempts::AttemptStore;
use crate::breaker::Breaker;
use crate::metrics::Metrics;
use crate::options::ConsumerOptions;
use crate::policy::GroupPolicy;

pub(crate) struct Shared<P> {
    pub policy: GroupPolicy,
    pub options: ConsumerOptions,
    /// The service's logic.
    pub processor: P,
    pub metrics: Metrics,
    pub breaker: Breaker,
    /// Bounds how many partitions run a handler at once.
    pub slots: Semaphore,
    pub readiness: Readiness,
    /// Failed attempts per record, kept across rebalances and restarts.
    pub attempts: AttemptStore,
    /// The runtime's database (retry attempts; mode (b) positions and the handler's transaction).
    pub pool: PgPool,
    pub kafka: KafkaSettings,
    pub instance_id: String,
}
