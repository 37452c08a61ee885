//! Graceful shutdown: one [`CancellationToken`] cancelled on the first SIGTERM or Ctrl-C.
//!
//! Services pass clones of the token to their loops; each loop stops taking new work when it is cancelled, drains
//! and commits what it has, then returns. A second signal is not special: the drain deadlines bound shutdown.

pub use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGTERM or SIGINT (Ctrl-C).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The `main` of a long-running service that is not a consumer group (those use `runtime::service::main`):
/// configuration for `service` (defaults, `file`, the environment; an error exits 2 on stderr), telemetry, then
/// `run` until SIGTERM/Ctrl-C; a failure is logged with its cause chain and exits 1.
pub async fn serve<S, F, Fut>(
    service: &str,
    file: Option<&std::path::Path>,
    run: F,
) -> std::process::ExitCode
where
    S: serde::de::DeserializeOwned + serde::Serialize + Default,
    F: FnOnce(crate::config::Settings<S>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match crate::config::Settings::<S>::load_service(service, file) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{service}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config.log);
    match run(config, on_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{service} failed");
            std::process::ExitCode::FAILURE
        }
    }
}
