//! `bus-monitor`: telemetry → configuration → start → run until SIGTERM/Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use bus_monitor::{Config, SERVICE};
use clap::Parser;

/// Exports consumer-group lag (messages, seconds, Burrow-style status) from the broker's view and runs a
/// KMinion-style canary through its own topic.
///
/// Configuration: defaults, then the TOML file (--config or CHECKOUT_CONFIG), then CHECKOUT__SECTION__KEY
/// variables, then KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (needed for the mode (b) groups). Monitor settings
/// live under [service]: poll_interval, kafka_timeout, window, lag_table_size, allowed_lag, platform_groups,
/// groups, [service.canary] enabled/topic/group/interval/timeout.
/// Operations: /health, /ready, /metrics on http.listen (default 127.0.0.1:9108).
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
            bus_monitor::start(config, shutdown).await?.wait().await
        },
    )
    .await
}
