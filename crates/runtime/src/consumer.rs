//! The public entry point: build a consumer from a policy and a handler, then run it until shutdown.
//!
//! ```no_run
//! use runtime::{BatchError, BatchHandler, Consumer, HandlerCtx, Record};
//! use runtime::service::ConsumerSettings;
//! use service_kit::{Settings, ops::{OpsServer, Readiness}};
//!
//! struct Projection { pool: sqlx::PgPool }
//!
//! impl BatchHandler for Projection {
//!     async fn handle_batch(&self, records: &[Record], ctx: &mut HandlerCtx<'_>) -> Result<(), BatchError> {
//!         let mut tx = self.pool.begin().await.map_err(BatchError::unknown)?;
//!         for (i, record) in records.iter().enumerate() {
//!             let event = record.decode_event().map_err(|e| BatchError::at(i, e))?;
//!             // … collect the batch's writes, then a few multi-row statements through `&mut *tx` …
//!         }
//!         tx.commit().await.map_err(BatchError::unknown)?;
//!         Ok(())
//!     }
//! }
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Own { consumer: ConsumerSettings }
//!
//! # async fn main_() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::<Own>::load(None)?;               // `[service.consumer.policy]`, `.options`
//! service_kit::telemetry::init(&settings.log);
//! let pool = service_kit::db::connect(&settings.database).await?;
//! let (registry, readiness) = (prometheus::Registry::new(), Readiness::default());
//! let shutdown = service_kit::shutdown::on_signal();
//! OpsServer::start(settings.http.listen, registry.clone(), readiness.clone(), shutdown.clone()).await?;
//! let policy = settings.service.consumer.policy("read-model-projections")?;
//! let consumer = Consumer::builder(policy, settings.kafka.clone())
//!     .batch_handler(Projection { pool: pool.clone() })   // or `.handler(…)` for one record per call
//!     .database(pool)                 // the runtime's bookkeeping (retry attempts; mode (b) positions)
//!     .registry(&registry)            // rendered on /metrics
//!     .readiness(readiness)           // `/ready`: partitions assigned and circuit breaker closed
//!     .options(settings.service.consumer.options.clone())
//!     .build()?;
//! consumer.run(shutdown).await?;
//! # Ok(()) }
//! ```
//! (A consumer service does all of this with `runtime::service`.)
//!
//! Guarantees: [`Consumer::run`] refuses to start when a subscribed topic has no dead-letter topic on the
//! cluster (a record that must be dead-lettered would otherwise stall its partition), and returns `Ok` after a
//! graceful shutdown — fetching stopped, in-flight work drained within `drain_timeout`, offsets committed (or
//! the last transactions committed), the group left. A failure that needs fresh clients (a failed Kafka
//! transaction, a fenced lane) re-creates the consumer after `restart_backoff`, resuming from the committed
//! positions; only unusable configuration ends `run` with `Err`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use service_kit::KafkaSettings;
use service_kit::ops::Readiness;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::attempts::AttemptStore;
use crate::breaker::{Breaker, BreakerState};
use crate::delivery::{Seek, at_least_once, db_offsets, kafka_txn};
use crate::error::RuntimeError;
use crate::handler::{BatchHandler, Handler};
use crate::metrics::Metrics;
use crate::options::ConsumerOptions;
use crate::policy::{GroupPolicy, Guarantee, dead_letter_topic};
use crate::poll::{self, PipelineExit};
use crate::processor::{Batched, PerRecord, Processor};
use crate::shared::Shared;

pub use crate::poll::READY_ASSIGNED;
/// Readiness condition: the circuit breaker is closed.
pub const READY_BREAKER: &str = "circuit_breaker";

/// Builds a [`Consumer`]; see the module documentation.
pub struct ConsumerBuilder<P> {
    policy: GroupPolicy,
    kafka: KafkaSettings,
    processor: P,
    pool: Option<PgPool>,
    registry: Option<Registry>,
    readiness: Option<Readiness>,
    options: ConsumerOptions,
}

/// No handler set yet.
pub struct NoHandler;

/// A consumer of one group: the poll thread, the partition lanes and the handler.
pub struct Consumer<P> {
    shared: Arc<Shared<P>>,
}

impl Consumer<NoHandler> {
    pub fn builder(policy: GroupPolicy, kafka: KafkaSettings) -> ConsumerBuilder<NoHandler> {
        ConsumerBuilder {
            policy,
            kafka,
            processor: NoHandler,
            pool: None,
            registry: None,
            readiness: None,
            options: ConsumerOptions::default(),
        }
    }
}

impl<P> ConsumerBuilder<P> {
    /// The service's logic, as the runtime calls it ([`Batched`] or [`PerRecord`]).
    pub fn processor<P2: Processor>(self, processor: P2) -> ConsumerBuilder<P2> {
        ConsumerBuilder {
            policy: self.policy,
            kafka: self.kafka,
            processor,
            pool: self.pool,
            registry: self.registry,
            readiness: self.readiness,
            options: self.options,
        }
    }

    /// A handler of one record per call (see [`Handler`]).
    pub fn handler<H: Handler>(self, handler: H) -> ConsumerBuilder<PerRecord<H>> {
        self.processor(PerRecord(handler))
    }

    /// A handler that takes a partition's batch at once (see [`BatchHandler`]).
    pub fn batch_handler<B: BatchHandler>(self, handler: B) -> ConsumerBuilder<Batched<B>> {
        self.processor(Batched(handler))
    }

    /// The database of the runtime's bookkeeping — every record's failed attempts, and in mode (b) the
    /// positions and the handler's transaction. Required.
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

impl<P: Processor> ConsumerBuilder<P> {
    /// Validates the configuration and registers the metrics.
    pub fn build(self) -> Result<Consumer<P>, RuntimeError> {
        self.policy.validate()?;
        self.options.validate(&self.policy)?;
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(RuntimeError::Config(
                "kafka.bootstrap_servers is empty".into(),
            ));
        }
        // Client properties that would break delivery (a transactional id, another group protocol, the spec's
        // producer settings, …) are refused, not ignored.
        self.kafka
            .validate()
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let pool = self.pool.ok_or_else(|| {
            RuntimeError::Config(format!(
                "group {}: give the consumer its database (ConsumerBuilder::database): it keeps every record's \
                 failed attempts there (and, exactly-once into the database, the positions)",
                self.policy.group
            ))
        })?;
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
                attempts: AttemptStore::Postgres {
                    pool: pool.clone(),
                    group: self.policy.group.clone(),
                    timeout: self.options.db_timeout,
                },
                policy: self.policy,
                options: self.options,
                processor: self.processor,
                metrics,
                breaker,
                readiness,
                pool,
                kafka: self.kafka,
                instance_id,
            }),
        })
    }
}

impl<P: Processor> Consumer<P> {
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
        check_dead_letter_topics(&self.shared).await?;
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
                    // Started from a worker of the services' runtime, this thread inherits its batch class; the
                    // one serial stage takes the normal class back, and librdkafka's threads, created here,
                    // inherit it (decision 0054).
                    if let Err(err) = service_kit::threads::to_normal() {
                        tracing::warn!(error = %err, "the poll thread keeps its scheduling class");
                    }
                    let _ = done_tx.send(pipeline(shared, runtime, token));
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
                    tracing::warn!(group = %group, %reason, "re-creating the consumer; it resumes from the committed positions");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.shared.options.restart_backoff) => {}
                    }
                }
            }
        }
    }
}

/// One pipeline with the group's delivery mode: the one place the mode is chosen.
fn pipeline<P: Processor>(
    shared: Arc<Shared<P>>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> PipelineExit {
    let (policy, options) = (&shared.policy, &shared.options);
    let mut producer_config = service_kit::kafka::producer_config(&shared.kafka);
    producer_config.set(
        "client.id",
        format!("{}.{}", policy.group, shared.instance_id),
    );
    let producer = |config: &ClientConfig| {
        config
            .create()
            .map_err(|e| PipelineExit::Fatal(RuntimeError::Kafka(e)))
    };
    match policy.guarantee {
        Guarantee::AtLeastOnce => {
            let delivery = match producer(&producer_config) {
                Ok(producer) => at_least_once::AtLeastOnce {
                    producer,
                    produce_timeout: options.produce_timeout,
                },
                Err(exit) => return exit,
            };
            poll::run(shared, delivery, runtime, shutdown)
        }
        Guarantee::ExactlyOnceDb => {
            let delivery = match producer(&producer_config) {
                Ok(producer) => db_offsets::DbOffsets {
                    pool: shared.pool.clone(),
                    producer,
                    group: policy.group.clone(),
                    runtime: runtime.clone(),
                    db_timeout: options.db_timeout,
                    produce_timeout: options.produce_timeout,
                    without_row: if options.auto_offset_reset == "latest" {
                        Seek::End
                    } else {
                        Seek::Beginning
                    },
                    group_commit: db_offsets::GroupCommit {
                        interval: options.transaction_commit_interval,
                        max_units: if shared.processor.shares_transactions() {
                            db_offsets::GroupCommit::MAX_UNITS
                        } else {
                            1
                        },
                    },
                },
                Err(exit) => return exit,
            };
            poll::run(shared, delivery, runtime, shutdown)
        }
        Guarantee::ExactlyOnceKafka => {
            let delivery = kafka_txn::KafkaTxn {
                producer_config,
                group: policy.group.clone(),
                metadata: Default::default(),
                transaction_timeout: options.transaction_timeout,
                call_timeout: options.transactional_call_timeout,
                commit_interval: options.transaction_commit_interval,
                offsets_interval: options.commit_interval,
            };
            poll::run(shared, delivery, runtime, shutdown)
        }
    }
}

/// Refuses to start when a subscribed topic's dead-letter topic does not exist on the cluster.
async fn check_dead_letter_topics<P>(shared: &Shared<P>) -> Result<(), RuntimeError> {
    let config = service_kit::kafka::client_config(&shared.kafka);
    let dead_letters: Vec<(String, String)> = shared
        .policy
        .topics
        .iter()
        .map(|t| (t.clone(), dead_letter_topic(t)))
        .collect();
    let group = shared.policy.group.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config
            .create()
            .map_err(RuntimeError::Kafka)?;
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(RuntimeError::Kafka)?;
        let missing: Vec<String> = dead_letters
            .iter()
            .filter(|(_, dlq)| {
                !metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == dlq && t.error().is_none())
            })
            .map(|(source, dlq)| format!("{dlq} (for {source})"))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Config(format!(
                "group {group}: dead-letter topics missing on the cluster: {}; a record that must be dead-lettered \
                 would stall its partition. Declare them in deploy/kafka/topics.yaml and run `checkoutctl topics apply`",
                missing.join(", ")
            )))
        }
    })
    .await
    .map_err(|e| RuntimeError::PollThread(format!("checking the dead-letter topics panicked: {e}")))?
}
