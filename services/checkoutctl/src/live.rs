//! The live platform in numbers: the one place that collects what `checkoutctl status` prints and what
//! `checkoutctl console` draws (decision 0038).
//!
//! Sources: Prometheus' HTTP API (`/api/v1/query`, `/api/v1/query_range`) for everything the services and
//! bus-monitor export — events/s per topic (`kafka_partition_latest_offset`), lag per group in messages and
//! seconds (`kafka_consumergroup_group_lag`, `…_max_lag_seconds`), end-to-end p95
//! (`checkout_consumer_end_to_end_latency_seconds`), records dead-lettered
//! (`checkout_consumer_records_dead_lettered_total`), settlement steps (`settlement_settlements_total`), webhook
//! attempts (`webhook_attempts_total`) — and PostgreSQL for money and state: settlements and fees per currency
//! (`settlements`), invoices by status and the most recent ones (`proj_invoices`, the projections' read model),
//! and `checkoutctl verify` ([`crate::verify`]), run at most once per `verify_every` (its result is cached in
//! between, so a watch every few seconds does not re-check the whole database each time).
//!
//! Guarantees: reads only; every request is bounded by a timeout; a source that fails does not hide the others —
//! the snapshot carries what it got and names each failure in [`Snapshot::problems`]; values Prometheus cannot
//! compute (NaN, ±Inf, no series) are absent (`null`), never 0; money is exact decimal text from PostgreSQL.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::KafkaSettings;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Mutex;

use crate::verify;

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the Prometheus URL {0:?} is not an http(s) URL")]
    PrometheusUrl(String),
    #[error(
        "Prometheus at {url} is unreachable (is it running? `make run` starts it on 127.0.0.1:9090)"
    )]
    PrometheusUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus at {url} answered {status}: {body}")]
    PrometheusStatus {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Prometheus at {url} answered something that is not a query result: {why}")]
    PrometheusBody { url: String, why: String },
    #[error("cannot connect to PostgreSQL at {server}")]
    Connect {
        server: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} failed")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Where the numbers come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Prometheus' base URL, e.g. `http://127.0.0.1:9090`.
    pub prometheus: String,
    pub database_url: String,
    pub kafka: KafkaSettings,
    /// What `verify` checks (topic, groups, grace).
    pub verify: verify::Options,
    /// Run `verify` at most this often (0: every snapshot); `None`: never.
    pub verify_every: Option<Duration>,
    /// Bound of each Prometheus request.
    pub timeout: Duration,
    /// Recent invoices listed.
    pub invoices: usize,
}

/// Rates are taken over this window: four scrapes of `make run`'s Prometheus (15 s).
pub const RATE_WINDOW: &str = "1m";

/// One instant sample of a Prometheus vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// `None` when Prometheus returned NaN or ±Inf.
    pub value: Option<f64>,
}

/// One series of a range query: `(unix seconds, value)`, non-finite values left out.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// A small client of Prometheus' HTTP API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: url::Url,
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> Result<Prometheus, LiveError> {
        let mut url =
            url::Url::parse(base).map_err(|_| LiveError::PrometheusUrl(base.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(LiveError::PrometheusUrl(base.to_string()));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| LiveError::PrometheusUnreachable {
                url: base.to_string(),
                source,
            })?;
        Ok(Prometheus { base: url, http })
    }

    /// The base URL as given.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// A malformed answer to `promql`.
    fn bad(&self, promql: &str, why: &str) -> LiveError {
        LiveError::PrometheusBody {
            url: self.base.to_string(),
            why: format!("{why} (query {promql})"),
        }
    }

    /// `data.result` of `path` queried with `promql` and `params`.
    async fn results(
        &self,
        path: &str,
        promql: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<serde_json::Value>, LiveError> {
        let mut body = self.get(path, promql, params).await?;
        match body["data"]["result"].take() {
            serde_json::Value::Array(result) => Ok(result),
            _ => Err(self.bad(promql, "no data.result")),
        }
    }

    async fn get(
        &self,
        path: &str,
        promql: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, LiveError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|_| LiveError::PrometheusUrl(self.base.to_string()))?;
        url.query_pairs_mut()
            .append_pair("query", promql)
            .extend_pairs(params);
        let shown = self.base.to_string();
        // The query is in the URL: long, and useless in the message (the error names the server).
        let response =
            self.http
                .get(url)
                .send()
                .await
                .map_err(|source| LiveError::PrometheusUnreachable {
                    url: shown.clone(),
                    source: source.without_url(),
                })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| LiveError::PrometheusUnreachable {
                url: shown.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(LiveError::PrometheusStatus {
                url: shown,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| LiveError::PrometheusBody {
                url: shown.clone(),
                why: e.to_string(),
            })?;
        if value["status"] != "success" {
            return Err(LiveError::PrometheusBody {
                url: shown,
                why: format!("status {}: {}", value["status"], value["error"]),
            });
        }
        Ok(value)
    }

    /// An instant query returning a vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, LiveError> {
        let bad = |why: &str| self.bad(promql, why);
        self.results("api/v1/query", promql, &[])
            .await?
            .iter()
            .map(|item| {
                Ok(Sample {
                    labels: labels(&item["metric"]),
                    value: number(&item["value"][1])
                        .ok_or_else(|| bad("a sample without a value"))?,
                })
            })
            .collect()
    }

    /// A range query from `start` to `end` (unix seconds) every `step` seconds.
    pub async fn query_range(
        &self,
        promql: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>, LiveError> {
        let bad = |why: &str| self.bad(promql, why);
        self.results(
            "api/v1/query_range",
            promql,
            &[
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
                ("step", format!("{step:.3}")),
            ],
        )
        .await?
        .iter()
        .map(|item| {
            let values = item["values"]
                .as_array()
                .ok_or_else(|| bad("a series without values"))?;
            let mut points = Vec::with_capacity(values.len());
            for pair in values {
                let t = pair[0]
                    .as_f64()
                    .ok_or_else(|| bad("a point without a time"))?;
                if let Some(v) = number(&pair[1]).ok_or_else(|| bad("a point without a value"))? {
                    points.push((t, v));
                }
            }
            Ok(RangeSeries {
                labels: labels(&item["metric"]),
                points,
            })
        })
        .collect()
    }
}

fn labels(metric: &serde_json::Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prometheus writes sample values as strings ("1.5", "NaN", "+Inf"): `Some(None)` for a non-finite one,
/// `None` when it is not a number at all.
fn number(value: &serde_json::Value) -> Option<Option<f64>> {
    let v: f64 = value.as_str()?.parse().ok()?;
    Some(v.is_finite().then_some(v))
}

/// The PromQL behind the summary and the charts (metric names: README "Monitoring", bus-monitor's and the
/// runtime's metric tables).
pub mod promql {
    use super::RATE_WINDOW;

    /// Records appended per second per topic (high watermarks, DLQs and parked topics aside).
    pub fn topic_rate() -> String {
        format!(
            r#"sum by (topic) (rate(kafka_partition_latest_offset{{topic!~".+\\.(dlq|parked)"}}[{RATE_WINDOW}]))"#
        )
    }
    /// Lag in messages per group (sum over its partitions).
    pub const GROUP_LAG: &str = "sum by (group) (kafka_consumergroup_group_lag)";
    /// Lag in seconds per group (its worst partition; absent until bus-monitor can compute it).
    pub const GROUP_LAG_SECONDS: &str =
        "max by (group) (kafka_consumergroup_group_max_lag_seconds)";
    /// End-to-end p95 over every group.
    pub fn e2e_p95() -> String {
        format!(
            "histogram_quantile(0.95, sum by (le) (rate(checkout_consumer_end_to_end_latency_seconds_bucket[{RATE_WINDOW}])))"
        )
    }
    /// End-to-end p95 per group.
    pub fn e2e_p95_by_group() -> String {
        format!(
            "histogram_quantile(0.95, sum by (group, le) (rate(checkout_consumer_end_to_end_latency_seconds_bucket[{RATE_WINDOW}])))"
        )
    }
    /// Records dead-lettered per group since its processes started; 0 for a group that processes records and
    /// dead-lettered none (the runtime creates the counter's series on the first dead letter).
    pub const DEAD_LETTERED: &str = "sum by (group) (checkout_consumer_records_dead_lettered_total) \
         or sum by (group) (checkout_consumer_records_processed_total) * 0";
    /// Settlement steps per minute by outcome (created, completed, held).
    pub fn settlements_per_minute() -> String {
        format!("sum by (outcome) (rate(settlement_settlements_total[{RATE_WINDOW}])) * 60")
    }
    /// Webhook attempts over the last 5 minutes: all and 2xx.
    pub const WEBHOOK_ATTEMPTS: &str = "sum(increase(webhook_attempts_total[5m]))";
    pub const WEBHOOK_OK: &str = r#"sum(increase(webhook_attempts_total{status_class="2xx"}[5m]))"#;
}

/// Events per second on one topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicRate {
    pub topic: String,
    pub events_per_second: f64,
}

/// A consumer group's lag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    pub lag_messages: Option<f64>,
    pub lag_seconds: Option<f64>,
}

/// Records a group dead-lettered (a counter's value: a whole number of records).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLettered {
    pub group: String,
    pub records: u64,
}

/// Settlements of one currency (the `settlements` table; amounts exact).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrencySettlements {
    pub currency: String,
    pub settlements: i64,
    pub held: i64,
    pub gross: String,
    pub fees: String,
    pub net: String,
}

/// Webhook attempts over the last 5 minutes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhooks {
    pub attempts_5m: f64,
    /// 2xx answers / attempts; `None` without attempts.
    pub success_ratio: Option<f64>,
}

/// One invoice of the projections' read model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceRow {
    pub invoice_id: String,
    pub merchant_id: String,
    pub status: String,
    pub currency: String,
    pub total_amount: String,
    pub crypto_currency: String,
    pub amount_paid: String,
    pub late_payment: bool,
    pub overpaid: bool,
    pub last_event_at: DateTime<Utc>,
}

/// The last `verify` result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyOutcome {
    /// Every check held (false also when it could not check: see `error`).
    pub ok: bool,
    pub at: DateTime<Utc>,
    pub violations: u64,
    pub in_flight: u64,
    /// The first violation, as `checkoutctl verify` names it.
    pub first_violation: Option<String>,
    /// Why it could not check.
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// The live platform at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub topics: Vec<TopicRate>,
    pub groups: Vec<GroupLag>,
    pub end_to_end_p95_seconds: Option<f64>,
    pub dead_lettered: Vec<DeadLettered>,
    /// The sum of `dead_lettered`.
    pub dead_lettered_total: u64,
    pub settlements: Vec<CurrencySettlements>,
    pub webhooks: Webhooks,
    pub invoices_by_status: BTreeMap<String, i64>,
    pub recent_invoices: Vec<InvoiceRow>,
    /// `None` when verify is off or has not run yet.
    pub verify: Option<VerifyOutcome>,
    /// Each source that could not be read, with why.
    pub problems: Vec<String>,
}

impl Snapshot {
    /// Every source was read.
    pub fn complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One chart: a time axis and aligned series (`null` where a series has no point).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    /// Unix seconds.
    pub x: Vec<f64>,
    pub series: Vec<ChartSeries>,
    /// Why the chart could not be read, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartSeries {
    pub label: String,
    pub values: Vec<Option<f64>>,
}

impl Chart {
    /// Points drawn (non-null values over every series).
    pub fn points(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.values.iter().filter(|v| v.is_some()).count())
            .sum()
    }
}

/// The charts of the console: id, title, unit, query, the label naming each series.
fn chart_queries() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    String,
    &'static str,
)> {
    vec![
        (
            "throughput",
            "Throughput per topic",
            "events/s",
            promql::topic_rate(),
            "topic",
        ),
        (
            "lag",
            "Lag per group",
            "messages",
            promql::GROUP_LAG.into(),
            "group",
        ),
        (
            "lag_seconds",
            "Lag per group",
            "seconds",
            promql::GROUP_LAG_SECONDS.into(),
            "group",
        ),
        (
            "latency",
            "End-to-end latency p95",
            "seconds",
            promql::e2e_p95_by_group(),
            "group",
        ),
        (
            "dlq",
            "Dead-lettered records",
            "records",
            promql::DEAD_LETTERED.into(),
            "group",
        ),
        (
            "settlements",
            "Settlements",
            "per minute",
            promql::settlements_per_minute(),
            "outcome",
        ),
    ]
}

/// Collects snapshots and charts; keeps the last `verify` result between runs.
pub struct Collector {
    sources: Sources,
    prometheus: Prometheus,
    pool: sqlx::PgPool,
    last_verify: Mutex<Option<(Instant, VerifyOutcome)>>,
}

impl Collector {
    /// Checks the Prometheus URL and prepares a small pool (connections are opened lazily, so a database that
    /// is down shows as a problem of each snapshot, not as a failure to start).
    pub fn new(sources: Sources) -> Result<Collector, LiveError> {
        let prometheus = Prometheus::new(&sources.prometheus, sources.timeout)?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(sources.timeout)
            .connect_lazy(&sources.database_url)
            .map_err(|source| LiveError::Connect {
                server: verify::redact_url(&sources.database_url),
                source,
            })?;
        Ok(Collector {
            sources,
            prometheus,
            pool,
            last_verify: Mutex::new(None),
        })
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// One snapshot. `force_verify` runs verify even if its last result is recent (a final check).
    pub async fn snapshot(&self, force_verify: bool) -> Snapshot {
        let mut problems = Vec::new();
        let (prom, db, verify) = tokio::join!(
            self.read_prometheus(),
            self.read_database(),
            self.verify(force_verify)
        );
        let mut snapshot = Snapshot {
            taken_at: Utc::now(),
            topics: Vec::new(),
            groups: Vec::new(),
            end_to_end_p95_seconds: None,
            dead_lettered: Vec::new(),
            dead_lettered_total: 0,
            settlements: Vec::new(),
            webhooks: Webhooks {
                attempts_5m: 0.0,
                success_ratio: None,
            },
            invoices_by_status: BTreeMap::new(),
            recent_invoices: Vec::new(),
            verify,
            problems: Vec::new(),
        };
        match prom {
            Ok(p) => {
                snapshot.topics = p.topics;
                snapshot.groups = p.groups;
                snapshot.end_to_end_p95_seconds = p.p95;
                snapshot.dead_lettered_total = p.dead.iter().map(|d| d.records).sum();
                snapshot.dead_lettered = p.dead;
                snapshot.webhooks = p.webhooks;
            }
            Err(e) => problems.push(format!("{:#}", anyhow::Error::new(e))),
        }
        match db {
            Ok(d) => {
                snapshot.settlements = d.settlements;
                snapshot.invoices_by_status = d.by_status;
                snapshot.recent_invoices = d.recent;
            }
            Err(e) => problems.push(format!("{:#}", anyhow::Error::new(e))),
        }
        if let Some(v) = &snapshot.verify
            && let Some(e) = &v.error
        {
            problems.push(format!("verify: {e}"));
        }
        snapshot.problems = problems;
        snapshot
    }

    async fn read_prometheus(&self) -> Result<FromPrometheus, LiveError> {
        let p = &self.prometheus;
        let (topic_rate, e2e_p95) = (promql::topic_rate(), promql::e2e_p95());
        let (topics, lag, lag_s, p95, dead, attempts, ok) = tokio::join!(
            p.query(&topic_rate),
            p.query(promql::GROUP_LAG),
            p.query(promql::GROUP_LAG_SECONDS),
            p.query(&e2e_p95),
            p.query(promql::DEAD_LETTERED),
            p.query(promql::WEBHOOK_ATTEMPTS),
            p.query(promql::WEBHOOK_OK),
        );
        let label = |s: &Sample, name: &str| s.labels.get(name).cloned().unwrap_or_default();
        let mut topics: Vec<TopicRate> = topics?
            .iter()
            .map(|s| TopicRate {
                topic: label(s, "topic"),
                events_per_second: s.value.unwrap_or(0.0),
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let mut groups: BTreeMap<String, GroupLag> = BTreeMap::new();
        for s in lag? {
            let group = label(&s, "group");
            groups
                .entry(group.clone())
                .or_insert(GroupLag {
                    group,
                    lag_messages: None,
                    lag_seconds: None,
                })
                .lag_messages = s.value;
        }
        for s in lag_s? {
            let group = label(&s, "group");
            groups
                .entry(group.clone())
                .or_insert(GroupLag {
                    group,
                    lag_messages: None,
                    lag_seconds: None,
                })
                .lag_seconds = s.value;
        }
        let mut dead: Vec<DeadLettered> = dead?
            .iter()
            .map(|s| DeadLettered {
                group: label(s, "group"),
                // A counter: whole, and never negative; an unreadable value (NaN) counts as none.
                records: s.value.map_or(0, |v| v.max(0.0).round() as u64),
            })
            .collect();
        dead.sort_by(|a, b| a.group.cmp(&b.group));
        let first = |v: Vec<Sample>| v.first().and_then(|s| s.value);
        let attempts = first(attempts?).unwrap_or(0.0);
        let ok = first(ok?).unwrap_or(0.0);
        Ok(FromPrometheus {
            topics,
            groups: groups.into_values().collect(),
            p95: first(p95?),
            dead,
            webhooks: Webhooks {
                attempts_5m: attempts,
                success_ratio: (attempts > 0.0).then(|| (ok / attempts).clamp(0.0, 1.0)),
            },
        })
    }

    async fn read_database(&self) -> Result<FromDatabase, LiveError> {
        let query = |what| move |source| LiveError::Query { what, source };
        let settlements: Vec<(String, i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT currency, count(*), count(*) FILTER (WHERE status = 'held'), \
                    sum(gross_amount)::text, sum(platform_fee_amount)::text, sum(net_amount)::text \
             FROM settlements GROUP BY currency ORDER BY currency",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query("reading settlements"))?;
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM proj_invoices GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(query("counting invoices by status"))?;
        type Row = (
            uuid::Uuid,
            uuid::Uuid,
            String,
            String,
            String,
            String,
            String,
            bool,
            bool,
            DateTime<Utc>,
        );
        let recent: Vec<Row> = sqlx::query_as(
            "SELECT invoice_id, merchant_id, status, currency, total_amount::text, crypto_currency, \
                    amount_paid::text, late_payment, overpaid_amount > 0, last_event_at \
             FROM proj_invoices ORDER BY last_event_at DESC, invoice_id LIMIT $1",
        )
        .bind(self.sources.invoices as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(query("reading recent invoices"))?;
        Ok(FromDatabase {
            settlements: settlements
                .into_iter()
                .map(
                    |(currency, settlements, held, gross, fees, net)| CurrencySettlements {
                        currency,
                        settlements,
                        held,
                        gross,
                        fees,
                        net,
                    },
                )
                .collect(),
            by_status: by_status.into_iter().collect(),
            recent: recent
                .into_iter()
                .map(|r| InvoiceRow {
                    invoice_id: format!("inv_{}", r.0),
                    merchant_id: format!("mer_{}", r.1),
                    status: r.2,
                    currency: r.3,
                    total_amount: r.4,
                    crypto_currency: r.5,
                    amount_paid: r.6,
                    late_payment: r.7,
                    overpaid: r.8,
                    last_event_at: r.9,
                })
                .collect(),
        })
    }

    /// The cached verify result, refreshed when older than `verify_every` (or when forced).
    async fn verify(&self, force: bool) -> Option<VerifyOutcome> {
        let every = self.sources.verify_every?;
        let mut last = self.last_verify.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && !force
            && at.elapsed() < every
        {
            return Some(outcome.clone());
        }
        let started = Instant::now();
        let outcome = match verify::verify(
            &self.sources.database_url,
            &self.sources.kafka,
            &self.sources.verify,
        )
        .await
        {
            Ok(report) => VerifyOutcome {
                ok: report.ok,
                at: report.checked_at,
                violations: report.violations_total,
                in_flight: report.in_flight_total,
                first_violation: report.first_violation().map(ToString::to_string),
                error: None,
                elapsed_ms: report.elapsed_ms,
            },
            Err(e) => VerifyOutcome {
                ok: false,
                at: Utc::now(),
                violations: 0,
                in_flight: 0,
                first_violation: None,
                error: Some(format!("{:#}", anyhow::Error::new(e))),
                elapsed_ms: started.elapsed().as_millis() as u64,
            },
        };
        *last = Some((Instant::now(), outcome.clone()));
        Some(outcome)
    }

    /// The console's charts over the last `range`, at most ~`points` points per series.
    pub async fn charts(&self, range: Duration, points: u32) -> Vec<Chart> {
        let end = Utc::now().timestamp_millis() as f64 / 1000.0;
        let start = end - range.as_secs_f64();
        let step = (range.as_secs_f64() / f64::from(points.max(2)))
            .max(1.0)
            .round();
        let queries = chart_queries();
        let results = futures_util::future::join_all(
            queries
                .iter()
                .map(|(_, _, _, q, _)| self.prometheus.query_range(q, start, end, step)),
        )
        .await;
        queries
            .into_iter()
            .zip(results)
            .map(|((id, title, unit, _, label), result)| match result {
                Ok(series) => align(id, title, unit, label, series),
                Err(e) => Chart {
                    id,
                    title,
                    unit,
                    x: Vec::new(),
                    series: Vec::new(),
                    error: Some(format!("{:#}", anyhow::Error::new(e))),
                },
            })
            .collect()
    }
}

struct FromPrometheus {
    topics: Vec<TopicRate>,
    groups: Vec<GroupLag>,
    p95: Option<f64>,
    dead: Vec<DeadLettered>,
    webhooks: Webhooks,
}

struct FromDatabase {
    settlements: Vec<CurrencySettlements>,
    by_status: BTreeMap<String, i64>,
    recent: Vec<InvoiceRow>,
}

/// Puts range series on one time axis (the union of their times), `None` where a series has no point.
fn align(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    label: &str,
    mut series: Vec<RangeSeries>,
) -> Chart {
    series.sort_by(|a, b| a.labels.get(label).cmp(&b.labels.get(label)));
    // Times are multiples of the step from the same start: exact in milliseconds.
    let key = |t: f64| (t * 1000.0).round() as i64;
    let mut times: Vec<i64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| key(p.0)))
        .collect();
    times.sort_unstable();
    times.dedup();
    let index: BTreeMap<i64, usize> = times.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let series = series
        .into_iter()
        .map(|s| {
            let mut values = vec![None; times.len()];
            for (t, v) in &s.points {
                values[index[&key(*t)]] = Some(*v);
            }
            ChartSeries {
                label: s.labels.get(label).cloned().unwrap_or_else(|| "all".into()),
                values,
            }
        })
        .collect();
    Chart {
        id,
        title,
        unit,
        x: times.into_iter().map(|t| t as f64 / 1000.0).collect(),
        series,
        error: None,
    }
}

/// `crypto-checkout.domain-events` → `domain-events`: the prefix every topic of the platform has.
pub fn short_topic(topic: &str) -> &str {
    topic.strip_prefix("crypto-checkout.").unwrap_or(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(label: &str, points: &[(f64, f64)]) -> RangeSeries {
        RangeSeries {
            labels: [("topic".to_string(), label.to_string())].into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn series_are_aligned_on_the_union_of_their_times() {
        let chart = align(
            "c",
            "C",
            "u",
            "topic",
            vec![
                range("b", &[(10.0, 1.0), (20.0, 2.0)]),
                range("a", &[(20.0, 5.0), (30.0, 6.0)]),
            ],
        );
        assert_eq!(chart.x, vec![10.0, 20.0, 30.0]);
        assert_eq!(chart.series[0].label, "a");
        assert_eq!(chart.series[0].values, vec![None, Some(5.0), Some(6.0)]);
        assert_eq!(chart.series[1].values, vec![Some(1.0), Some(2.0), None]);
        assert_eq!(chart.points(), 4);
    }

    #[test]
    fn non_finite_sample_values_are_absent_not_zero() {
        assert_eq!(number(&serde_json::json!("1.5")), Some(Some(1.5)));
        assert_eq!(number(&serde_json::json!("NaN")), Some(None));
        assert_eq!(number(&serde_json::json!("+Inf")), Some(None));
        assert_eq!(number(&serde_json::json!(null)), None);
    }

    #[test]
    fn a_prometheus_url_must_be_http() {
        assert!(Prometheus::new("http://127.0.0.1:9090", Duration::from_secs(1)).is_ok());
        assert!(Prometheus::new("127.0.0.1:9090", Duration::from_secs(1)).is_err());
        assert!(Prometheus::new("file:///etc", Duration::from_secs(1)).is_err());
    }
}
