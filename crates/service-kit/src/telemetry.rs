//! Logging with `tracing`: JSON lines in production, readable output in development.
//!
//! `RUST_LOG`, when set, overrides the configured filter. [`error_chain`] renders an error with every `source()`
//! so that logs show the full cause chain, not only the outermost message.

use std::error::Error;
use std::fmt::Write as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. Calling it twice (as tests that start several services in one process do) is
/// harmless: the first subscriber stays.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// `outer: middle: root` for an error and its sources.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("publishing batch failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_shows_every_cause() {
        let err = Outer(std::io::Error::other("broker unreachable"));
        assert_eq!(
            error_chain(&err),
            "publishing batch failed: broker unreachable"
        );
    }
}
