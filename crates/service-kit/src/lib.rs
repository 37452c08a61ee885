//! The service kit: everything a long-running service of the event bus shares, so that each service is only its
//! handler and its policy.
//!
//! - [`config`]: typed settings from defaults, an optional TOML file and environment overrides, checked at
//!   start-up (unknown keys are errors, secrets never print).
//! - [`telemetry`]: `tracing` with JSON logs in production and readable logs in development, and
//!   [`telemetry::error_chain`] so a log line carries an error's whole cause chain.
//! - [`ops`]: the operations HTTP server, `/health`, `/ready` and Prometheus `/metrics`, bound to a configured
//!   address (port 0 in tests, which report the port they got).
//! - [`shutdown`]: one cancellation token fired by SIGTERM or Ctrl-C.
//! - [`kafka`]: the spec's producer settings as data, and client configuration built from settings.
//! - [`db`]: the PostgreSQL pool and the workspace's migrations.
//! - [`alloc`]: jemalloc as the global allocator of every binary that links the kit (decision 0046).
//! - [`threads`]: the async runtime of the consumer services, its workers in the batch scheduling class so that
//!   they do not preempt the poll thread (decision 0054).
//! - [`services`]: the table of services and their operations ports, shared by `make run`, docker-compose and the
//!   code.

pub mod alloc;
pub mod config;
pub mod db;
pub mod kafka;
pub mod ops;
pub mod services;
pub mod shutdown;
pub mod telemetry;
pub mod threads;

pub use config::{
    ConfigError, DatabaseSettings, HttpSettings, KafkaSettings, LogFormat, LogSettings, Settings,
};
