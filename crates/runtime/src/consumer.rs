//! The public entry point: build a consumer from a policy and a handler, then run it until shutdown.
//!
//! ```no_run
//! use runtime::{Consumer, ConsumerConfig, Handler, HandlerCtx, HandlerError, Record};
//! use service_kit::{Settings, ops::{OpsServer, Readiness}};
//!
//! struct Projection { pool: sqlx::PgPool }
//!
//! impl Handler for Projection {
//!     async fn handle(&self, record: &Record, ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
//!         let event: serde_json::Value = record.decode_with(|b| serde_json::from_slice(b))?; // events::decode
//!         let mut tx = self.pool.begin().await?;       // sqlx errors are classified (connection → breaker)
//!         let id = uuid::Uuid::new_v4();                 // the event's id
//!         if runtime::idempotency::first_time(&mut tx, ctx.group(), id).await? {
//!             // … update the read model with `&mut *tx` …
//!         }
//!         tx.commit().await?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Own { consumer: ConsumerConfig }
//!
//! # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::<Own>::load(None)?;                     // `service.consumer.group = "…"`
//! service_kit::telemetry::init(&settings.log);
//! let pool = service_kit::db::connect(&settings.database).await?;
//! let (registry, readiness) = (prometheus::Registry::new(), Readiness::default());
//! let shutdown = service_kit::shutdown::on_signal();
//! OpsServer::start(settings.http.listen, registry.clone(), readiness.clone(), shutdown.clone()).await?;
//! let consumer = Consumer::builder(settings.service.consumer.resolve()?, settings.kafka.clone())
//!     .handler(Projection { pool: pool.clone() })
//!     .database(pool)                 // required for exactly-once into PostgreSQL (mode b)
//!     .registry(&registry)            // rendered on /metrics
//!     .readiness(readiness)           // `/ready`: partitions assigned and circuit breaker closed
//!     .options(settings.service.consumer.options.clone())
//!     .build()?;
//! consumer.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Guarantees: [`Consumer::run`] returns `Ok` after a graceful shutdown — fetching stopped, in-flight work drained
//! within `drain_timeout`, offsets committed (or the last transaction committed), the group left. A failure that
//! needs fresh clients (a failed Kafka transaction, a fenced lane) re-creates the consumer (and producer) after
//! `restart_backoff`, resuming from the committed offsets; only unusable configuration ends `run` with `Err`.

use std::sync::Arc;

use prometheus::Registry;
use service_kit::KafkaSettings;
use service_kit::ops::Readiness;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerState};
use crate::error::RuntimeError;
use crate::handler::{BatchHandler, Handler};
use crate::metrics::Metrics;
use crate::options::ConsumerOptions;
use crate::policy::{GroupPolicy, Guarantee};
use crate::poll::{self, PipelineExit};

/// Readiness condition: the consumer has partitions assigned.
pub const READY_ASSIGNED: &str = "consumer";
/// Readiness condition: the circuit breaker is closed.
pub const READY_BREAKER: &str = "circuit_breaker";

/// What every lane and the poll thread share for the consumer's whole life.
pub(crate) struct Shared<H> {
    pub policy: GroupPolicy,
    pub options: ConsumerOptions,
    pub handler: H,
    pub metrics: Metrics,
    pub breaker: Breaker,
    /// Bounds how many partitions run a handler at once.
    pub slots: Semaphore,
    pub readiness: Readiness,
    pub pool: Option<PgPool>,
    pub kafka: KafkaSettings,
    pub instance_id: String,
}

/// Builds a [`Consumer`]; see the module documentation.
pub struct ConsumerBuilder<H> {
    policy: GroupPolicy,
    kafka: KafkaSettings,
    handler: H,
    pool: Option<PgPool>,
    registry: Option<Registry>,
    readiness: Option<Readiness>,
    options: ConsumerOptions,
}

/// No handler set yet.
pub struct NoHandler;

/// A [`BatchHandler`] run by the runtime (see [`ConsumerBuilder::batch_handler`]).
pub struct Batched<B>(pub B);

impl<B: BatchHandler> Handler for Batched<B> {
    async fn handle(
        &self,
        record: &crate::Record,
        ctx: &mut crate::HandlerCtx<'_>,
    ) -> Result<(), crate::HandlerError> {
        self.0
            .handle_batch(std::slice::from_ref(record), ctx)
            .await
            .map_err(|e| e.error)
    }
}

/// A consumer of one group: the poll thread, the partition lanes and the handler.
pub struct Consumer<H> {
    shared: Arc<Shared<H>>,
}

impl Consumer<NoHandler> {
    pub fn builder(policy: GroupPolicy, kafka: KafkaSettings) -> ConsumerBuilder<NoHandler> {
        ConsumerBuilder {
            policy,
            kafka,
            handler: NoHandler,
            pool: None,
            registry: None,
            readiness: None,
            options: ConsumerOptions::default(),
        }
    }
}

impl<H> ConsumerBuilder<H> {
    pub fn handler<H2: Handler>(self, handler: H2) -> ConsumerBuilder<H2> {
        ConsumerBuilder {
            policy: self.policy,
            kafka: self.kafka,
            handler,
            pool: self.pool,
            registry: self.registry,
            readiness: self.readiness,
            options: self.options,
        }
    }

    /// A handler that takes a partition's batch at once (see [`BatchHandler`]).
    pub fn batch_handler<B: BatchHandler>(self, handler: B) -> ConsumerBuilder<Batched<B>> {
        self.handler(Batched(handler))
    }

    /// The database of mode (b) (offsets and the handler's transaction).
    pub fn database(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Where the metrics are registered (default: a private registry).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// The readiness conditions `consumer` and `circuit_breaker` are kept up to date in it.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    pub fn options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }
}

impl<H: Handler> ConsumerBuilder<H> {
    /// Validates the configuration and registers the metrics.
    pub fn build(self) -> Result<Consumer<H>, RuntimeError> {
        self.policy.validate()?;
        self.options.validate(&self.policy)?;
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(RuntimeError::Config(
                "kafka.bootstrap_servers is empty".into(),
            ));
        }
        if self.policy.guarantee == Guarantee::ExactlyOnceDb && self.pool.is_none() {
            return Err(RuntimeError::Config(format!(
                "group {} is exactly-once into the database: give the consumer a pool (ConsumerBuilder::database)",
                self.policy.group
            )));
        }
        let registry = self.registry.unwrap_or_default();
        let metrics =
            Metrics::register(&registry, &self.policy.group).map_err(RuntimeError::Metrics)?;
        let readiness = self.readiness.unwrap_or_default();
        readiness.register(READY_ASSIGNED, "no partitions assigned yet");
        readiness.set_ready(READY_BREAKER);
        let breaker = {
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            Breaker::new(
                self.options.breaker_probe_initial,
                self.options.breaker_probe_max,
                move |state| {
                    metrics
                        .circuit_breaker_state
                        .with_label_values(&[metrics.group()])
                        .set(state.gauge());
                    match state {
                        BreakerState::Closed => readiness.set_ready(READY_BREAKER),
                        BreakerState::Open | BreakerState::HalfOpen => readiness.set_not_ready(
                            READY_BREAKER,
                            "open: a dependency (database or broker) is unavailable",
                        ),
                    }
                },
            )
        };
        let instance_id = self
            .options
            .instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
        Ok(Consumer {
            shared: Arc::new(Shared {
                slots: Semaphore::new(self.options.max_parallel_partitions),
                policy: self.policy,
                options: self.options,
                handler: self.handler,
                metrics,
                breaker,
                readiness,
                pool: self.pool,
                kafka: self.kafka,
                instance_id,
            }),
        })
    }
}

impl<H: Handler> Consumer<H> {
    pub fn policy(&self) -> &GroupPolicy {
        &self.shared.policy
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn readiness(&self) -> &Readiness {
        &self.shared.readiness
    }

    /// Consumes until `shutdown` is cancelled, then shuts down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let runtime = tokio::runtime::Handle::current();
        let group = self.shared.policy.group.clone();
        tracing::info!(
            group = %group, topics = ?self.shared.policy.topics, guarantee = self.shared.policy.guarantee.as_str(),
            instance = %self.shared.instance_id, "consumer starting"
        );
        loop {
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let (shared, runtime, token) = (self.shared.clone(), runtime.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("poll-{group}"))
                .spawn(move || {
                    let _ = done_tx.send(poll::run(shared, runtime, token));
                })
                .map_err(|e| {
                    RuntimeError::PollThread(format!("cannot start the poll thread: {e}"))
                })?;
            match done_rx.await {
                Err(_) => return Err(RuntimeError::PollThread("the poll thread panicked".into())),
                Ok(PipelineExit::Shutdown) => {
                    tracing::info!(group = %group, "consumer stopped");
                    return Ok(());
                }
                Ok(PipelineExit::Fatal(err)) => return Err(err),
                Ok(PipelineExit::Restart(reason)) => {
                    self.shared
                        .metrics
                        .restarts
                        .with_label_values(&[&group])
                        .inc();
                    tracing::warn!(group = %group, %reason, "re-creating the consumer; it resumes from the committed offsets");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.shared.options.restart_backoff) => {}
                    }
                }
            }
        }
    }
}
