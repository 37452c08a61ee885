//! The start-up every consumer service shares, so that a service's `start` is only its policy, its database and
//! its handler.
//!
//! [`Ops::start`] binds the operations server (`/health`, `/ready`, `/metrics`) first, so a service answers
//! `/health` while it connects; [`Ops::consumer`] is a [`ConsumerBuilder`] already wired to that server's
//! registry and readiness; [`Ops::run`] spawns the consumer; [`Running::wait`] returns once it has drained,
//! committed and left its group (after the shutdown token fired) and the server has closed.

use std::net::SocketAddr;

use prometheus::Registry;
use serde::{Deserialize, Serialize};
use service_kit::KafkaSettings;
use service_kit::ops::{OpsServer, Readiness};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, ConsumerBuilder, NoHandler};
use crate::error::RuntimeError;
use crate::handler::Handler;
use crate::options::ConsumerOptions;
use crate::policy::{GroupPolicy, PolicyOverrides};

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

/// A running consumer service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the consumer task panicked")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("the consumer failed")]
    Consumer(#[source] RuntimeError),
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
    pub fn run<H: Handler>(
        self,
        service: &str,
        consumer: Consumer<H>,
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
}

impl Running {
    /// Waits for the consumer to stop (after the shutdown token fired) and the operations server to close.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let result = self.consumer.await.map_err(ServiceError::Panicked)?;
        let _ = self.server.task.await;
        result.map_err(ServiceError::Consumer)
    }
}
