//! `projections`: telemetry → configuration → start → run until SIGTERM/Ctrl-C → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use projections::{Config, SERVICE};
use service_kit::telemetry;

/// Keeps the read models (invoices, payments, merchants, settlements, balances) up to date from
/// crypto-checkout.domain-events, as consumer group read-model-projections (at-least-once, idempotent).
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL. Consumer settings live under [service.consumer]
/// (policy overrides, runtime options). Operations: /health, /ready, /metrics on http.listen (default
/// 127.0.0.1:9102).
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
    let result = match projections::start(config, shutdown).await {
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
