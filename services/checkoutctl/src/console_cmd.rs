//! `checkoutctl console`: a page on loopback showing the live platform — charts of throughput per topic, lag per
//! group (messages and seconds), end-to-end p95, dead letters and settlements over time (Prometheus
//! `query_range`), the recent invoices of the projections' read model with their status, and verify's result —
//! drawn with uPlot (vendored in `assets/`, see its README), fed by a small JSON API of the same process.
//!
//! Guarantees: reads only; listens on loopback unless told otherwise (`--listen`); prints its URL on stdout as
//! soon as it listens; the page and its script are embedded in the binary (no network access from the browser
//! beyond this server). The snapshot behind `/api/summary` is refreshed every `--refresh` by one task (verify at
//! most every `--verify-every`), so any number of open pages costs the platform the same. Ctrl-C stops it (exit
//! 0); a port that cannot be bound is exit 2.
//!
//! API: `GET /api/summary` — the [`Snapshot`] (as `checkoutctl status --json`); `GET /api/charts?range=SECONDS`
//! — the charts (60 ≤ range ≤ 86400, default `--range`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::RwLock;

use crate::live::{Chart, Collector, Snapshot};
use crate::status_cmd::LiveArgs;
use crate::verify::parse_duration;
use crate::{Io, Run, block_on, exit};

const PAGE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const UPLOT_JS: &str = include_str!("../assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uPlot.min.css");

/// Serve the live console page on loopback: charts of throughput, lag, end-to-end latency, dead letters and
/// settlements, the recent invoices and verify's result (Prometheus + DATABASE_URL + KAFKA_BOOTSTRAP_SERVERS).
///
/// Prints its URL when it listens; Ctrl-C stops it. Exit 2 when it cannot start (port taken, bad URL).
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9180")]
    listen: SocketAddr,
    /// How often the summary is refreshed (and how often the page polls).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    refresh: Duration,
    /// Time span of the charts.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    range: Duration,
    /// Recent invoices listed.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..=200))]
    invoices: u16,
}

struct AppState {
    collector: Collector,
    summary: RwLock<Option<Snapshot>>,
    range: Duration,
    refresh: Duration,
}

impl Run for ConsoleArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        if self.refresh.is_zero() {
            anyhow::bail!("--refresh must be positive");
        }
        block_on(async move {
            // In the runtime: the pool starts its maintenance task.
            let collector = self.live.collector(self.invoices.into())?;
            let state = Arc::new(AppState {
                collector,
                summary: RwLock::new(None),
                range: self
                    .range
                    .clamp(Duration::from_secs(60), Duration::from_secs(86_400)),
                refresh: self.refresh,
            });
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("listening on {}", self.listen))?;
            let addr = listener.local_addr()?;
            writeln!(io.stdout, "console: http://{addr}/")?;
            writeln!(
                io.stdout,
                "  data from Prometheus {} and PostgreSQL; Ctrl-C stops it",
                state.collector.sources().prometheus
            )?;
            io.stdout.flush()?;
            let refresher = tokio::spawn(refresh(state.clone()));
            let app = axum::Router::new()
                .route("/", get(page))
                .route(
                    "/assets/console.js",
                    get(|| asset(SCRIPT, "text/javascript")),
                )
                .route(
                    "/assets/uPlot.iife.min.js",
                    get(|| asset(UPLOT_JS, "text/javascript")),
                )
                .route(
                    "/assets/uPlot.min.css",
                    get(|| asset(UPLOT_CSS, "text/css")),
                )
                .route("/api/summary", get(summary))
                .route("/api/charts", get(charts))
                .with_state(state);
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
            refresher.abort();
            served.context("serving the console")?;
            Ok(exit::OK)
        })
    }
}

async fn refresh(state: Arc<AppState>) {
    let mut ticker = tokio::time::interval(state.refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let snapshot = state.collector.snapshot(false).await;
        *state.summary.write().await = Some(snapshot);
    }
}

async fn page(State(state): State<Arc<AppState>>) -> Response {
    let html = PAGE.replace("@REFRESH_MS@", &state.refresh.as_millis().to_string());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn summary(State(state): State<Arc<AppState>>) -> Response {
    match state.summary.read().await.as_ref() {
        Some(s) => axum::Json(s).into_response(),
        // The first snapshot is being taken.
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first snapshot is being taken",
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ChartsQuery {
    range: Option<u64>,
}

async fn charts(State(state): State<Arc<AppState>>, Query(q): Query<ChartsQuery>) -> Response {
    let range = q
        .range
        .map(|s| Duration::from_secs(s.clamp(60, 86_400)))
        .unwrap_or(state.range);
    let charts: Vec<Chart> = state.collector.charts(range, 240).await;
    axum::Json(serde_json::json!({ "range_seconds": range.as_secs(), "charts": charts }))
        .into_response()
}
