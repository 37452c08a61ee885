//! The one shape of a consumer service: a type implementing [`ConsumerService`] — its name, its group, its
//! settings and how to build its handler. Everything else is written once, here:
//!
//! - [`main`]: `--help`, configuration (defaults → TOML file → `CHECKOUT__…` variables → `KAFKA_BOOTSTRAP_SERVERS`
//!   and `DATABASE_URL`), telemetry, SIGTERM/Ctrl-C, start, drain, exit code, on the async runtime of
//!   `service_kit::threads` (workers in the batch scheduling class, so they do not preempt the poll thread);
//! - [`start`]: the group's policy from the spec with the configured overrides (checked by the service), the
//!   operations server (`/health`, `/ready`, `/metrics`) bound first so `/health` answers while the service
//!   connects, PostgreSQL, the handler, the consumer; [`Running::wait`] returns once the consumer has drained,
//!   committed and left its group and the server has closed.
//!
//! A service's `main.rs` is `fn main() -> ExitCode { runtime::service::main::<MyService>() }`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use prometheus::Registry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use service_kit::ops::{OpsServer, Readiness};
use service_kit::{KafkaSettings, Settings};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, ConsumerBuilder, NoHandler};
use crate::error::RuntimeError;
use crate::options::ConsumerOptions;
use crate::policy::{GroupPolicy, PolicyOverrides};
use crate::processor::Processor;

/// `[service.consumer]` of a consumer service: overrides of its group's spec policy (`policy`) and the runtime's
/// operational options (`options`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    pub policy: PolicyOverrides,
    pub options: ConsumerOptions,
}

impl ConsumerSettings {
    /// The spec's policy of `group` with the configured overrides, checked together with the options.
    pub fn policy(&self, group: &str) -> Result<GroupPolicy, RuntimeError> {
        let policy = GroupPolicy::resolve(group, &self.policy)?;
        self.options.validate(&policy)?;
        Ok(policy)
    }
}

/// The `[service]` section of a consumer service: at least `[service.consumer]`.
pub trait ServiceSettings:
    Clone + Default + Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    fn consumer(&self) -> &ConsumerSettings;
    fn consumer_mut(&mut self) -> &mut ConsumerSettings;
}

/// `[service]` of a service whose only settings are its consumer's.
///
/// ```toml
/// [service.consumer.policy]        # overrides of the group's spec policy (optional)
/// batch_size = 200
/// [service.consumer.options]       # runtime options (optional)
/// instance_id = "projections-0"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerOnly {
    pub consumer: ConsumerSettings,
}

impl ServiceSettings for ConsumerOnly {
    fn consumer(&self) -> &ConsumerSettings {
        &self.consumer
    }
    fn consumer_mut(&mut self) -> &mut ConsumerSettings {
        &mut self.consumer
    }
}

/// What a service's handler may be built from.
pub struct ServiceContext<'a, S> {
    /// The `[service]` section.
    pub settings: &'a S,
    /// The resolved policy of the group.
    pub policy: &'a GroupPolicy,
    /// The service's database (also the runtime's: retry attempts, mode (b) offsets).
    pub pool: &'a PgPool,
    /// Rendered on `/metrics`: register the handler's own metrics here.
    pub registry: &'a Registry,
    /// The broker settings (for a companion's own producer).
    pub kafka: &'a KafkaSettings,
}

/// Work a service runs beside its consumer (e.g. the webhook dispatcher): started after the handler, told to
/// stop by the service's shutdown token, awaited by [`Running::wait`]. When it fails it cancels the token, so
/// the consumer drains and the process exits with the companion's error.
pub type Companion = JoinHandle<anyhow::Result<()>>;

/// A consumer service: the few things that differ from one to the next.
pub trait ConsumerService: 'static {
    /// The binary's name, and its row in `service_kit::services::SERVICES` (its operations port).
    const NAME: &'static str;
    /// The spec's consumer group whose policy is the default.
    const GROUP: &'static str;
    /// What the service does, for `--help`.
    const ABOUT: &'static str;
    /// The `[service]` section ([`ConsumerOnly`] when the consumer's settings are all there is).
    type Settings: ServiceSettings;
    /// The handler: a [`crate::BatchHandler`] in [`crate::Batched`], or a [`crate::Handler`] in
    /// [`crate::PerRecord`].
    type Handler: Processor;

    /// Builds the handler.
    fn handler(
        ctx: ServiceContext<'_, Self::Settings>,
    ) -> impl Future<Output = anyhow::Result<Self::Handler>> + Send;

    /// Starts the service's [`Companion`], if it has one; it must stop when `shutdown` is cancelled.
    fn companion(
        _ctx: ServiceContext<'_, Self::Settings>,
        _shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Option<Companion>>> + Send {
        async { Ok(None) }
    }

    /// Refuses a resolved policy the service cannot honour (e.g. a weaker guarantee than its writes need).
    fn check_policy(_policy: &GroupPolicy) -> Result<(), String> {
        Ok(())
    }
}

/// Resolves the policy of service `S` from its settings: the spec's, the overrides, the service's own check.
pub fn policy<S: ConsumerService>(settings: &S::Settings) -> anyhow::Result<GroupPolicy> {
    let policy = settings
        .consumer()
        .policy(S::GROUP)
        .context("invalid consumer policy")?;
    S::check_policy(&policy)
        .map_err(|why| anyhow::anyhow!("invalid consumer policy for {}: {why}", S::NAME))?;
    Ok(policy)
}

/// Binds the operations server, connects to PostgreSQL, builds the handler and starts consuming until
/// `shutdown`.
pub async fn start<S: ConsumerService>(
    config: Settings<S::Settings>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let policy = policy::<S>(&config.service)?;
    let ops = Ops::start(config.http.listen, shutdown.clone()).await?;
    let pool = service_kit::db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    let ctx = || ServiceContext {
        settings: &config.service,
        policy: &policy,
        pool: &pool,
        registry: &ops.registry,
        kafka: &config.kafka,
    };
    let handler = S::handler(ctx()).await.context("building the handler")?;
    let companion = S::companion(ctx(), shutdown.clone())
        .await
        .context("starting the companion")?;
    let consumer = ops
        .consumer(
            policy,
            config.kafka.clone(),
            config.service.consumer().options.clone(),
        )
        .processor(handler)
        .database(pool)
        .build()
        .context("building the consumer")?;
    let mut running = ops.run(S::NAME, consumer, shutdown);
    running.companion = companion;
    Ok(running)
}

/// The whole life of service `S` as a process: arguments, configuration, telemetry, [`start`], drain on
/// SIGTERM/Ctrl-C. Exit codes: 0 after a graceful stop, 1 when the service failed, 2 for unusable configuration.
pub fn main<S: ConsumerService>() -> ExitCode {
    let port = service_kit::services::spec(S::NAME).map_or(0, |s| s.ops_port);
    let command = clap::Command::new(S::NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .about(S::ABOUT)
        .after_help(format!(
            "Consumer group {group} (policy: the spec's, overridable under [service.consumer.policy]).\n\n\
             Configuration, later layers winning: defaults; the TOML file (--config or CHECKOUT_CONFIG); \
             CHECKOUT__SECTION__KEY variables (e.g. CHECKOUT__HTTP__LISTEN=0.0.0.0:{port}); \
             KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Unknown keys are errors.\n\n\
             Operations: /health, /ready, /metrics on http.listen (default 127.0.0.1:{port}). \
             SIGTERM or Ctrl-C drains in-flight work, commits and leaves the group.",
            group = S::GROUP,
        ))
        .arg(
            clap::Arg::new("config")
                .long("config")
                .env(service_kit::config::CONFIG_FILE_ENV)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file"),
        );
    let matches = command.get_matches();
    let file = matches.get_one::<PathBuf>("config");
    let config = match Settings::<S::Settings>::load_service(S::NAME, file.map(PathBuf::as_path)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{}: {err}", S::NAME);
            return ExitCode::from(2);
        }
    };
    if let Err(err) = policy::<S>(&config.service) {
        eprintln!("{}: {err:#}", S::NAME);
        return ExitCode::from(2);
    }
    let runtime = match service_kit::threads::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{}: cannot start the async runtime: {err}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        service_kit::telemetry::init(&config.log);
        let shutdown = service_kit::shutdown::on_signal();
        let result = match start::<S>(config, shutdown).await {
            Ok(running) => running.wait().await.map_err(anyhow::Error::from),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "{} failed", S::NAME);
                ExitCode::FAILURE
            }
        }
    })
}

/// A running consumer service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the consumer task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("the consumer failed")]
    Consumer(#[source] RuntimeError),
    #[error("the companion task panicked")]
    CompanionPanicked(#[source] tokio::task::JoinError),
    #[error("the companion failed")]
    Companion(#[source] anyhow::Error),
}

/// The operations server with its registry and readiness, before the consumer exists.
pub struct Ops {
    pub registry: Registry,
    pub readiness: Readiness,
    server: OpsServer,
}

impl Ops {
    /// Binds `listen` (port 0 picks one; see [`Running::ops_addr`]) and serves until `shutdown`.
    pub async fn start(listen: SocketAddr, shutdown: CancellationToken) -> std::io::Result<Self> {
        let registry = Registry::new();
        let readiness = Readiness::default();
        let server =
            OpsServer::start(listen, registry.clone(), readiness.clone(), shutdown).await?;
        Ok(Self {
            registry,
            readiness,
            server,
        })
    }

    /// A consumer builder reporting to this server's registry and readiness.
    pub fn consumer(
        &self,
        policy: GroupPolicy,
        kafka: KafkaSettings,
        options: ConsumerOptions,
    ) -> ConsumerBuilder<NoHandler> {
        Consumer::builder(policy, kafka)
            .registry(&self.registry)
            .readiness(self.readiness.clone())
            .options(options)
    }

    /// Spawns the consumer until `shutdown`.
    pub fn run<P: Processor>(
        self,
        service: &str,
        consumer: Consumer<P>,
        shutdown: CancellationToken,
    ) -> Running {
        let policy = consumer.policy();
        tracing::info!(ops = %self.server.addr, group = %policy.group, topics = ?policy.topics, "{service} started");
        Running {
            ops_addr: self.server.addr,
            registry: self.registry,
            readiness: self.readiness,
            consumer: tokio::spawn(consumer.run(shutdown)),
            server: self.server,
            companion: None,
        }
    }
}

/// A started consumer service.
pub struct Running {
    pub ops_addr: SocketAddr,
    pub registry: Registry,
    pub readiness: Readiness,
    consumer: JoinHandle<Result<(), RuntimeError>>,
    server: OpsServer,
    companion: Option<Companion>,
}

impl Running {
    /// Waits for the consumer and the companion to stop (after the shutdown token fired) and the operations
    /// server to close.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let result = self.consumer.await.map_err(ServiceError::Panicked)?;
        let companion = match self.companion {
            Some(task) => task.await.map_err(ServiceError::CompanionPanicked)?,
            None => Ok(()),
        };
        let _ = self.server.task.await;
        result.map_err(ServiceError::Consumer)?;
        companion.map_err(ServiceError::Companion)
    }
}
