//! The operations HTTP server of every service: `/health`, `/ready`, `/metrics`.
//!
//! - `/health` answers 200 while the process serves requests (liveness).
//! - `/ready` answers 200 only when every readiness condition the service registered is true, otherwise 503 with
//!   the names of the conditions that are not (e.g. `kafka: no partitions assigned`).
//! - `/metrics` renders the service's Prometheus registry in the text exposition format.
//!
//! The server binds before [`OpsServer::start`] returns, so the caller knows the real port (tests bind port 0),
//! and stops when the shutdown token is cancelled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Named readiness conditions; the service is ready when all are satisfied. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<&'static str, Result<(), String>>>>,
}

impl Readiness {
    /// Registers a condition, initially not satisfied with `reason`.
    pub fn register(&self, name: &'static str, reason: impl Into<String>) {
        self.lock().insert(name, Err(reason.into()));
    }

    pub fn set_ready(&self, name: &'static str) {
        self.lock().insert(name, Ok(()));
    }

    pub fn set_not_ready(&self, name: &'static str, reason: impl Into<String>) {
        self.lock().insert(name, Err(reason.into()));
    }

    /// `Ok` when every condition holds (and at least one is registered), else the unmet ones.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let conditions = self.lock();
        if conditions.is_empty() {
            return Err(vec![
                "starting: no readiness condition registered yet".into(),
            ]);
        }
        let unmet: Vec<String> = conditions
            .iter()
            .filter_map(|(name, state)| state.as_ref().err().map(|why| format!("{name}: {why}")))
            .collect();
        if unmet.is_empty() { Ok(()) } else { Err(unmet) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Result<(), String>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts), so recover.
        self.conditions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
}

/// A running operations server.
pub struct OpsServer {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

impl OpsServer {
    /// Binds `listen` and serves until `shutdown` is cancelled.
    pub async fn start(
        listen: SocketAddr,
        registry: Registry,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the operations server to {listen}: {e}"),
            )
        })?;
        let addr = listener.local_addr()?;
        let app = router(AppState {
            registry,
            readiness,
        });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "operations server failed");
            }
        });
        tracing::info!(%addr, "operations server listening (/health, /ready, /metrics)");
        Ok(Self { addr, task })
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(unmet) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", unmet.join("\n")),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            body,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            format!("encoding metrics failed: {err}").into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let registry = Registry::new();
        let counter = IntCounter::new("things_total", "things").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let readiness = Readiness::default();
        readiness.register("kafka", "no partitions assigned");
        let shutdown = CancellationToken::new();
        let server = OpsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            registry,
            readiness.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();

        let health = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200);

        let not_ready = client.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(not_ready.status(), 503);
        assert!(
            not_ready
                .text()
                .await
                .unwrap()
                .contains("kafka: no partitions assigned")
        );

        readiness.set_ready("kafka");
        assert_eq!(
            client
                .get(format!("{base}/ready"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("things_total 3"), "{metrics}");

        shutdown.cancel();
        server.task.await.unwrap();
    }

    #[test]
    fn not_ready_until_a_condition_is_registered() {
        assert!(Readiness::default().check().is_err());
    }
}
