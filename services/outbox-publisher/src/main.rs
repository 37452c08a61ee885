//! `outbox-publisher`: telemetry → configuration → start → run until SIGTERM/Ctrl-C → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use outbox_publisher::{Config, SERVICE};
use service_kit::telemetry;

/// Publishes the transactional outbox to Kafka with the spec's producer settings, in per-key commit order.
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Publisher settings live under [service]:
/// batch_size, poll_interval, heartbeat_interval, status_interval, shutdown_grace, max_backoff, topic_routes.
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
    let config = match Config::load_service(SERVICE, args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{SERVICE}: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    let shutdown = service_kit::shutdown::on_signal();
    let result = match outbox_publisher::start(config, shutdown).await {
        Ok(running) => running.wait().await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{SERVICE} failed");
            ExitCode::FAILURE
        }
    }
}
