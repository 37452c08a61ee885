//! `analytics`: telemetry → configuration → start → run until SIGTERM/Ctrl-C → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use analytics::{Config, SERVICE};
use clap::Parser;
use service_kit::telemetry;

/// Aggregates crypto-checkout.domain-events and crypto-checkout.analytics-events into per-merchant, per-UTC-day
/// analytics in PostgreSQL, as consumer group analytics-aggregation (exactly-once: the aggregates and the
/// consumer's offsets commit in one database transaction). Read them with `checkoutctl analytics daily`.
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Consumer settings live under [service.consumer]
/// (policy overrides, runtime options). Operations: /health, /ready, /metrics on http.listen (default
/// 127.0.0.1:9105).
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
    let result = match analytics::start(config, shutdown).await {
        Ok(running) => running.wait().await.map_err(anyhow::Error::from),
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
