//! The `outbox-publisher` service: the outbox [`Publisher`](outbox::Publisher) plus the operations server.
//!
//! [`start`] binds the operations server (its address is returned, so tests can bind port 0), connects to
//! PostgreSQL and Kafka and runs the publisher until the shutdown token is cancelled; [`Running::wait`]
//! returns once the publisher has drained, flushed and released its buckets.

use std::net::SocketAddr;

use anyhow::Context;
use outbox::{Publisher, PublisherSettings};
use secrecy_free::database_url;
use service_kit::ops::{OpsServer, Readiness};
use service_kit::shutdown::CancellationToken;
use service_kit::{Settings, db};
use tokio::task::JoinHandle;

/// The service's configuration: the common sections plus [`PublisherSettings`] under `service`.
pub type Config = Settings<PublisherSettings>;

pub const SERVICE: &str = "outbox-publisher";

pub struct Running {
    pub ops_addr: SocketAddr,
    pub registry: prometheus::Registry,
    publisher: JoinHandle<Result<(), outbox::OutboxError>>,
    ops: OpsServer,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let registry = prometheus::Registry::new();
    let readiness = Readiness::default();
    let metrics = outbox::metrics::Metrics::register(&registry).context("registering metrics")?;
    let ops = OpsServer::start(
        config.http.listen,
        registry.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let url = database_url(&config)?;
    let pool = db::connect(&config.database)
        .await
        .context("connecting to PostgreSQL")?;
    let publisher = Publisher::new(pool, url, &config.kafka, config.service.clone(), metrics)
        .context("creating the Kafka producer")?;
    tracing::info!(ops = %ops.addr, bootstrap = %config.kafka.bootstrap_servers, "outbox-publisher started");
    let publisher = tokio::spawn(publisher.run(shutdown, readiness));
    Ok(Running {
        ops_addr: ops.addr,
        registry,
        publisher,
        ops,
    })
}

impl Running {
    /// Waits for the publisher to stop (after the shutdown token is cancelled) and the server to close.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.publisher.await.context("publisher task panicked")?;
        let _ = self.ops.task.await;
        result.context("outbox publisher failed")
    }
}

mod secrecy_free {
    use anyhow::Context;
    use secrecy::ExposeSecret;

    /// The lease session needs the URL itself (it opens its own connection).
    pub fn database_url(config: &super::Config) -> anyhow::Result<String> {
        let url = config
            .database
            .url
            .as_ref()
            .context("database.url (DATABASE_URL) is not set")?;
        Ok(url.expose_secret().to_string())
    }
}
