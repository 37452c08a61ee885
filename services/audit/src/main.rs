//! `audit`: telemetry → configuration → start → run until SIGTERM/Ctrl-C → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use audit::{Config, SERVICE};
use clap::Parser;
use service_kit::telemetry;

/// Appends every event of crypto-checkout.domain-events to the tamper-evident audit log (a SHA-256 hash chain
/// in PostgreSQL that refuses UPDATE and DELETE), as consumer group audit-logging (at-least-once, duplicates
/// ignored by event id). Verify the chain with `checkoutctl audit verify`.
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Consumer settings live under [service.consumer]
/// (policy overrides, runtime options). Operations: /health, /ready, /metrics on http.listen (default
/// 127.0.0.1:9106).
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
    let result = match audit::start(config, shutdown).await {
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
