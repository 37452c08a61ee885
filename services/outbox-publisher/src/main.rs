//! `outbox-publisher`: telemetry → configuration → start → run until SIGTERM/Ctrl-C → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outbox_publisher::{Config, SERVICE};

/// Publishes the transactional outbox to Kafka with the spec's producer settings, in per-key commit order.
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Publisher settings live under [service]:
/// batch_size, pipeline_depth, poll_interval, heartbeat_interval, status_interval, shutdown_grace, max_backoff, topic_routes.
/// Operations: /health, /ready, /metrics on http.listen (default 127.0.0.1:9101).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "CHECKOUT_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    service_kit::shutdown::serve(
        SERVICE,
        args.config.as_deref(),
        |config: Config, shutdown| async move {
            outbox_publisher::start(config, shutdown)
                .await?
                .wait()
                .await
        },
    )
    .await
}
