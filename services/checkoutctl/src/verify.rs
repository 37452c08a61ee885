//! The money-conservation checks of `checkoutctl verify` (decision 0028), as a library: [`verify`] runs them
//! against a live system and returns a [`Report`].
//!
//! Guarantees:
//! - **Independent sources.** Whether an invoice must settle comes from the read models (`proj_invoices`,
//!   written by the projections from the events), never from the settlement service's own `stl_*` tables; the
//!   expected fee is [`events::money::platform_fee`] of the invoice's total at the merchant's rate in the read
//!   models; the ledger is compared with the settlements and with the read models' balances.
//! - **One snapshot.** Every check that reads PostgreSQL tables runs in one `REPEATABLE READ, READ ONLY`
//!   transaction, so they all see one committed state however much is written meanwhile. Kafka's offsets are
//!   read just before it (positions only grow, so a group seen at the end of the topic has applied at least
//!   that much in the snapshot). The audit chain is verified by the audit crate's own verifier
//!   ([`audit::verify::verify`]), in a snapshot of its own (the chain is self-contained).
//! - **Work in flight is not a violation.** A difference younger than the grace — by the wall-clock times the
//!   services record (`proj_applied_events.applied_at`, `settlements.recorded_at`, `ledger_entries.recorded_at`,
//!   `audit_log.recorded_at`) and by the Kafka record timestamps — is counted as *in flight*; with a grace of 0
//!   every difference is a violation (quiescent systems, tests).
//! - **Set-based.** Each check is one or two SQL statements over whole tables (no per-row round trips); the
//!   amounts check streams the settlements once to apply the one fee function; violations are counted in full
//!   and listed up to a bound, in a fixed order (checks in order a–f, rows by id), so "the first violation" is
//!   deterministic.
//! - **Never a false pass.** Anything that prevents a check (unreachable database or broker, missing topic, a
//!   failing query) is a [`VerifyError`], never a report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::money::{Amount, Currency, Decimal, Percentage, platform_fee};
use futures_util::TryStreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use service_kit::KafkaSettings;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Differences younger than this are work in flight, not violations.
    pub grace: Duration,
    /// The domain-events topic.
    pub topic: String,
    /// The read-model projections' consumer group (commits to Kafka).
    pub projections_group: String,
    /// The audit log's consumer group (commits to Kafka).
    pub audit_group: String,
    /// The settlement service's consumer group (positions stored in `consumer_offsets`, mode b).
    pub settlement_group: String,
    /// Violations listed in the report (all are counted).
    pub max_violations: usize,
    /// Recompute the audit hash chain (check f).
    pub audit_chain: bool,
    /// How long to wait for PostgreSQL to accept the connection and for each Kafka request.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            grace: Duration::from_secs(30),
            topic: events::topics::DOMAIN_EVENTS.to_string(),
            projections_group: runtime::policy::READ_MODEL_PROJECTIONS.to_string(),
            audit_group: runtime::policy::AUDIT_LOGGING.to_string(),
            settlement_group: runtime::policy::SETTLEMENT_PROCESSING.to_string(),
            max_violations: 100,
            audit_chain: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why the checks could not run (as opposed to a [`Violation`], which is a finding).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("DATABASE_URL is not set (pass --database-url or source .dev/env)")]
    NoDatabaseUrl,
    #[error("KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-servers or source .dev/env)")]
    NoBootstrapServers,
    #[error("cannot connect to PostgreSQL at {server}")]
    Connect {
        server: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("PostgreSQL at {server} did not accept a connection within {timeout:?}")]
    ConnectTimeout { server: String, timeout: Duration },
    #[error("{what} failed")]
    Database {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("Kafka at {bootstrap}: {what}")]
    Kafka {
        bootstrap: String,
        what: String,
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("Kafka at {bootstrap} has no topic {topic}")]
    NoTopic { bootstrap: String, topic: String },
    #[error("verifying the audit chain")]
    Audit(#[source] audit::verify::VerifyError),
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> VerifyError {
    move |source| VerifyError::Database { what, source }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// `settlements`, `amounts`, `ledger`, `balances`, `consumers`, `events`, `audit_chain`.
    pub name: &'static str,
    /// What it checks, in one sentence.
    pub description: &'static str,
    pub ok: bool,
    /// Items checked (invoices and settlements, settlements, ledger entries, balances, partitions, events, rows).
    pub checked: u64,
    /// Differences younger than the grace.
    pub in_flight: u64,
    /// Violations found (all of them, listed or not).
    pub violations: u64,
    /// What was checked, with its counts, in words.
    pub summary: String,
    /// Its time; for `consumers`, reading the topic's offsets from Kafka included.
    pub elapsed_ms: u64,
}

/// A violation of conservation: which invoice / settlement / merchant / currency / event, expected vs found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The check that found it.
    pub check: &'static str,
    /// A stable code, e.g. `missing_settlement`, `fee`, `unbalanced_currency`.
    pub kind: &'static str,
    /// What it is about, e.g. `invoice inv_… of merchant mer_… (USD)`.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    pub expected: String,
    pub found: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: expected {}, found {}",
            self.check, self.subject, self.problem, self.expected, self.found
        )
    }
}

impl Violation {
    fn new(
        check: &'static str,
        kind: &'static str,
        subject: String,
        problem: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Violation {
        Violation {
            check,
            kind,
            subject,
            problem: problem.into(),
            expected: expected.into(),
            found: found.into(),
            invoice_id: None,
            settlement_id: None,
            merchant_id: None,
            currency: None,
            event_id: None,
        }
    }

    fn invoice(mut self, id: Uuid) -> Self {
        self.invoice_id = Some(format!("inv_{id}"));
        self
    }

    fn settlement(mut self, id: Uuid) -> Self {
        self.settlement_id = Some(format!("set_{id}"));
        self
    }

    fn merchant(mut self, id: Option<Uuid>) -> Self {
        self.merchant_id = id.map(|id| format!("mer_{id}"));
        self
    }

    fn currency(mut self, currency: &str) -> Self {
        self.currency = Some(currency.to_string());
        self
    }

    fn event(mut self, id: Uuid) -> Self {
        self.event_id = Some(format!("evt_{id}"));
        self
    }
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// No violation in any check.
    pub ok: bool,
    /// The snapshot's time (PostgreSQL's `now()` in the checking transaction).
    pub checked_at: DateTime<Utc>,
    pub grace_ms: u64,
    pub topic: String,
    pub checks: Vec<CheckResult>,
    pub violations_total: u64,
    pub in_flight_total: u64,
    /// The first violations in check order, at most `max_violations`.
    pub violations: Vec<Violation>,
    pub max_violations: usize,
    pub elapsed_ms: u64,
}

impl Report {
    /// The first violation (of the first failing check), if any.
    pub fn first_violation(&self) -> Option<&Violation> {
        self.violations.first()
    }
}

/// A check's findings before they are put in the report.
struct Outcome {
    result: CheckResult,
    violations: Vec<Violation>,
}

struct CheckBuilder {
    name: &'static str,
    description: &'static str,
    started: Instant,
    checked: u64,
    in_flight: u64,
    violations: u64,
    listed: Vec<Violation>,
    max: usize,
}

impl CheckBuilder {
    fn new(name: &'static str, description: &'static str, max: usize) -> CheckBuilder {
        CheckBuilder {
            name,
            description,
            started: Instant::now(),
            checked: 0,
            in_flight: 0,
            violations: 0,
            listed: Vec::new(),
            max,
        }
    }

    /// Counts `total` violations of which `sample` are listed (already in order, at most the bound).
    fn found(&mut self, total: u64, sample: impl IntoIterator<Item = Violation>) {
        self.violations += total;
        for v in sample {
            if self.listed.len() < self.max {
                self.listed.push(v);
            }
        }
    }

    fn finish(self, summary: String) -> Outcome {
        Outcome {
            result: CheckResult {
                name: self.name,
                description: self.description,
                ok: self.violations == 0,
                checked: self.checked,
                in_flight: self.in_flight,
                violations: self.violations,
                summary,
                elapsed_ms: millis(self.started.elapsed()),
            },
            violations: self.listed,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `postgres://user:***@host:port/db`: a database URL as it may be printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Parses a duration: `0`, or one or more `<integer><unit>` with units `ms`, `s`, `m`, `h` (`30s`, `1m30s`,
/// `500ms`).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("`{input}` is not a duration (examples: 0, 500ms, 30s, 2m, 1h, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as the human output shows it (`30s`, `1500ms`, `0`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        "0".into()
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Runs every check (see the module documentation) against the database at `database_url` and the broker of
/// `kafka`.
pub async fn verify(
    database_url: &str,
    kafka: &KafkaSettings,
    options: &Options,
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let server = redact_url(database_url);
    let mut conn =
        match tokio::time::timeout(options.timeout, PgConnection::connect(database_url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => return Err(VerifyError::Connect { server, source }),
            Err(_) => {
                return Err(VerifyError::ConnectTimeout {
                    server,
                    timeout: options.timeout,
                });
            }
        };
    // Kafka first: every position read here is at most what the snapshot below has applied.
    let kafka_started = Instant::now();
    let topic = {
        let (kafka, options) = (kafka.clone(), options.clone());
        tokio::task::spawn_blocking(move || read_topic(&kafka, &options))
            .await
            .expect("the Kafka task does not panic")?
    };
    let kafka_elapsed = kafka_started.elapsed();

    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(db("opening the snapshot"))?;
    // Whole-table statements are costly enough for PostgreSQL to JIT-compile them, which costs more than it
    // saves here (the balances check: 1.3 s with JIT, 0.1 s without, at 100k invoices).
    sqlx::query("SET LOCAL jit = off")
        .execute(&mut *tx)
        .await
        .map_err(db("turning JIT off for the snapshot"))?;
    let checked_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading the snapshot's time"))?;
    let ctx = Ctx {
        grace_ms: i64::try_from(options.grace.as_millis()).unwrap_or(i64::MAX),
        max: options.max_violations,
        limit: i64::try_from(options.max_violations).unwrap_or(i64::MAX),
    };
    let mut outcomes = vec![
        check_settlements(&mut tx, &ctx).await?,
        check_amounts(&mut tx, &ctx).await?,
        check_ledger(&mut tx, &ctx).await?,
        check_balances(&mut tx, &ctx).await?,
        check_consumers(&mut tx, &ctx, options, &topic, kafka_elapsed).await?,
        check_events(&mut tx, &ctx, &topic).await?,
    ];
    tx.commit().await.map_err(db("closing the snapshot"))?;
    if options.audit_chain {
        outcomes.push(check_audit_chain(&mut conn, &ctx).await?);
    }
    let _ = conn.close().await;

    let mut violations = Vec::new();
    for o in &outcomes {
        for v in &o.violations {
            if violations.len() < options.max_violations {
                violations.push(v.clone());
            }
        }
    }
    let checks: Vec<CheckResult> = outcomes.into_iter().map(|o| o.result).collect();
    Ok(Report {
        ok: checks.iter().all(|c| c.ok),
        checked_at,
        grace_ms: millis(options.grace),
        topic: options.topic.clone(),
        violations_total: checks.iter().map(|c| c.violations).sum(),
        in_flight_total: checks.iter().map(|c| c.in_flight).sum(),
        checks,
        violations,
        max_violations: options.max_violations,
        elapsed_ms: millis(started.elapsed()),
    })
}

struct Ctx {
    grace_ms: i64,
    max: usize,
    limit: i64,
}

// ---------------------------------------------------------------------------------------------------------------
// Kafka: the topic's offsets and the groups' committed positions.

/// A partition of the topic.
#[derive(Debug, Clone)]
struct PartitionOffsets {
    partition: i32,
    /// First offset still in the log.
    low: i64,
    /// The end (high watermark): the next offset to be written.
    end: i64,
    /// The first offset whose record is not older than the grace (the end when there is none).
    young_from: i64,
}

#[derive(Debug, Clone)]
struct TopicState {
    partitions: Vec<PartitionOffsets>,
    /// Committed offsets per Kafka-committing group and partition (`None`: nothing committed).
    committed: BTreeMap<String, BTreeMap<i32, Option<i64>>>,
    /// Records in `<topic>.dlq`, when that topic exists.
    dead_letters: Option<i64>,
}

fn read_topic(kafka: &KafkaSettings, options: &Options) -> Result<TopicState, VerifyError> {
    let bootstrap = kafka.bootstrap_servers.clone();
    let err = |what: String| {
        let bootstrap = bootstrap.clone();
        move |source| VerifyError::Kafka {
            bootstrap,
            what,
            source: Box::new(source),
        }
    };
    let consumer_for = |group: &str| -> Result<BaseConsumer, VerifyError> {
        let mut config = service_kit::kafka::client_config(kafka);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("log_level", "0");
        config
            .create()
            .map_err(err("creating a Kafka client".into()))
    };
    let t = options.timeout;
    let topic = options.topic.as_str();
    let consumer = consumer_for(&options.projections_group)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), t)
        .map_err(err(format!("reading the metadata of {topic}")))?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|m| m.name() == topic && m.error().is_none())
        .flat_map(|m| m.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(VerifyError::NoTopic {
            bootstrap: bootstrap.clone(),
            topic: topic.to_string(),
        });
    }
    let cutoff_ms = {
        let now = Utc::now().timestamp_millis();
        now - i64::try_from(options.grace.as_millis()).unwrap_or(i64::MAX / 2)
    };
    let mut by_time = TopicPartitionList::new();
    for p in &ids {
        by_time
            .add_partition_offset(topic, *p, Offset::Offset(cutoff_ms))
            .map_err(err("building a partition list".into()))?;
    }
    let young = consumer
        .offsets_for_times(by_time, t)
        .map_err(err(format!("looking up {topic}'s offsets by time")))?;
    let mut partitions = Vec::with_capacity(ids.len());
    for p in &ids {
        let (low, end) = consumer
            .fetch_watermarks(topic, *p, t)
            .map_err(err(format!("reading the offsets of {topic} partition {p}")))?;
        let young_from = match young.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.clamp(low, end),
            _ => end,
        };
        partitions.push(PartitionOffsets {
            partition: *p,
            low,
            end,
            young_from,
        });
    }
    let mut committed = BTreeMap::new();
    for group in [&options.projections_group, &options.audit_group] {
        let consumer = consumer_for(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in &ids {
            tpl.add_partition(topic, *p);
        }
        let got = consumer
            .committed_offsets(tpl, t)
            .map_err(err(format!("reading group {group}'s committed offsets")))?;
        let offsets = ids
            .iter()
            .map(|p| {
                let offset = match got.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                (*p, offset)
            })
            .collect();
        committed.insert(group.clone(), offsets);
    }
    let dlq = events::topics::dead_letter_topic(topic);
    let dead_letters = match consumer.fetch_metadata(Some(&dlq), t) {
        Ok(md) => {
            let parts: Vec<i32> = md
                .topics()
                .iter()
                .filter(|m| m.name() == dlq && m.error().is_none())
                .flat_map(|m| m.partitions().iter().map(|p| p.id()))
                .collect();
            let mut n = 0;
            for p in &parts {
                let (low, end) = consumer
                    .fetch_watermarks(&dlq, *p, t)
                    .map_err(err(format!("reading the offsets of {dlq} partition {p}")))?;
                n += end - low;
            }
            (!parts.is_empty()).then_some(n)
        }
        Err(_) => None,
    };
    Ok(TopicState {
        partitions,
        committed,
        dead_letters,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// (a) One settlement per paid-and-confirmed invoice, none for any other.

const SETTLEMENTS: &str = "settlements";

#[derive(sqlx::FromRow)]
struct MissingRow {
    invoice_id: Uuid,
    merchant_id: Uuid,
    currency: String,
    total_amount: Decimal,
    confirmed_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UnexpectedRow {
    settlement_id: Uuid,
    invoice_id: Uuid,
    merchant_id: Uuid,
    currency: String,
    status: String,
    net_amount: Decimal,
    invoice_status: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DuplicateRow {
    invoice_id: Uuid,
    merchant_id: Uuid,
    settlements: i64,
    ids: Vec<Uuid>,
}

/// The counts of a check query: in flight, violations.
#[derive(sqlx::FromRow)]
struct Counts {
    in_flight: i64,
    violations: i64,
}

async fn check_settlements(conn: &mut PgConnection, ctx: &Ctx) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        SETTLEMENTS,
        "every invoice that is paid and whose counted payments are all confirmed (read models) has exactly one \
         settlement; no other invoice has any",
        ctx.max,
    );
    let (settleable, settlements): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM proj_invoices WHERE paid_at IS NOT NULL AND confirmed_at IS NOT NULL), \
                (SELECT count(*) FROM settlements)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db("counting settleable invoices and settlements"))?;
    c.checked = (settleable + settlements) as u64;

    // Paid and confirmed, no settlement: in flight while the invoice's last event reached the read models
    // within the grace.
    const MISSING: &str = "WITH x AS MATERIALIZED ( \
            SELECT i.invoice_id, i.merchant_id, i.currency, i.total_amount, i.confirmed_at, \
                   coalesce(a.applied_at >= now() - $1 * interval '1 millisecond', false) AS in_flight \
            FROM proj_invoices i LEFT JOIN proj_applied_events a ON a.event_id = i.last_event_id \
            WHERE i.paid_at IS NOT NULL AND i.confirmed_at IS NOT NULL \
              AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.invoice_id = i.invoice_id))";
    let counts: Counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{MISSING} SELECT count(*) FILTER (WHERE in_flight) AS in_flight, \
                          count(*) FILTER (WHERE NOT in_flight) AS violations FROM x"
    )))
    .bind(ctx.grace_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db(
        "finding paid and confirmed invoices without a settlement",
    ))?;
    c.in_flight += counts.in_flight as u64;
    if counts.violations > 0 {
        let rows: Vec<MissingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{MISSING} SELECT invoice_id, merchant_id, currency, total_amount, confirmed_at FROM x \
             WHERE NOT in_flight ORDER BY invoice_id LIMIT $2"
        )))
        .bind(ctx.grace_ms)
        .bind(ctx.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(
            "listing paid and confirmed invoices without a settlement",
        ))?;
        c.found(
            counts.violations as u64,
            rows.into_iter().map(|r| {
                Violation::new(
                    SETTLEMENTS,
                    "missing_settlement",
                    format!(
                        "invoice inv_{} of merchant mer_{} ({} {})",
                        r.invoice_id,
                        r.merchant_id,
                        r.total_amount.normalize(),
                        r.currency
                    ),
                    format!(
                        "paid and confirmed (at {}) but not settled",
                        events::time::format_utc(&r.confirmed_at)
                    ),
                    format!("one settlement (set_{})", settlement_id_for(r.invoice_id)),
                    "none",
                )
                .invoice(r.invoice_id)
                .merchant(Some(r.merchant_id))
                .currency(&r.currency)
            }),
        );
    }

    // A settlement for an invoice the read models do not know as paid and confirmed: in flight while the
    // settlement was recorded within the grace (the read models may not have caught up with the invoice).
    const UNEXPECTED: &str = "WITH x AS MATERIALIZED ( \
            SELECT s.settlement_id, s.invoice_id, s.merchant_id, s.currency, s.status, s.net_amount, \
                   i.status AS invoice_status, \
                   s.recorded_at >= now() - $1 * interval '1 millisecond' AS in_flight \
            FROM settlements s LEFT JOIN proj_invoices i ON i.invoice_id = s.invoice_id \
            WHERE i.invoice_id IS NULL OR i.paid_at IS NULL OR i.confirmed_at IS NULL)";
    let counts: Counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{UNEXPECTED} SELECT count(*) FILTER (WHERE in_flight) AS in_flight, \
                             count(*) FILTER (WHERE NOT in_flight) AS violations FROM x"
    )))
    .bind(ctx.grace_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db(
        "finding settlements of invoices that are not paid and confirmed",
    ))?;
    c.in_flight += counts.in_flight as u64;
    if counts.violations > 0 {
        let rows: Vec<UnexpectedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{UNEXPECTED} SELECT settlement_id, invoice_id, merchant_id, currency, status, net_amount, \
                                 invoice_status FROM x WHERE NOT in_flight ORDER BY invoice_id LIMIT $2"
        )))
        .bind(ctx.grace_ms)
        .bind(ctx.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("listing settlements of invoices that are not paid and confirmed"))?;
        c.found(
            counts.violations as u64,
            rows.into_iter().map(|r| {
                let problem = match &r.invoice_status {
                    None => "settled, but the read models do not know the invoice".to_string(),
                    Some(status) => format!(
                        "settled, but the invoice is {status} in the read models (only paid and confirmed \
                         invoices settle)"
                    ),
                };
                Violation::new(
                    SETTLEMENTS,
                    "unexpected_settlement",
                    format!("invoice inv_{} of merchant mer_{}", r.invoice_id, r.merchant_id),
                    problem,
                    "no settlement",
                    format!(
                        "settlement set_{} ({}, net {} {})",
                        r.settlement_id,
                        r.status,
                        r.net_amount.normalize(),
                        r.currency
                    ),
                )
                .invoice(r.invoice_id)
                .settlement(r.settlement_id)
                .merchant(Some(r.merchant_id))
                .currency(&r.currency)
            }),
        );
    }

    // `settlements.invoice_id` is unique; the read models could still hold two settlements of an invoice (a
    // settlement event with another settlement id).
    let rows: Vec<DuplicateRow> = sqlx::query_as(
        "SELECT invoice_id, min(merchant_id::text)::uuid AS merchant_id, count(*) AS settlements, \
                array_agg(settlement_id ORDER BY settlement_id) AS ids \
         FROM proj_settlements GROUP BY invoice_id HAVING count(*) > 1 ORDER BY invoice_id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db(
        "finding invoices with several settlements in the read models",
    ))?;
    let total = rows.len() as u64;
    c.found(
        total,
        rows.into_iter().map(|r| {
            let ids: Vec<String> = r.ids.iter().map(|i| format!("set_{i}")).collect();
            Violation::new(
                SETTLEMENTS,
                "duplicate_settlement",
                format!("invoice inv_{}", r.invoice_id),
                "several settlements in the read models",
                "one settlement",
                format!("{} settlements: {}", r.settlements, ids.join(", ")),
            )
            .invoice(r.invoice_id)
            .merchant(Some(r.merchant_id))
        }),
    );
    let summary =
        format!("{settleable} paid and confirmed invoice(s), {settlements} settlement(s)");
    Ok(c.finish(summary))
}

/// The settlement id of an invoice (decision 0026), as operators can compute it.
fn settlement_id_for(invoice: Uuid) -> Uuid {
    match events::InvoiceId::from_uuid(invoice) {
        Ok(id) => events::SettlementId::for_invoice(id).as_uuid(),
        Err(_) => Uuid::nil(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (b) Amounts of each settlement.

const AMOUNTS: &str = "amounts";

#[derive(sqlx::FromRow)]
struct AmountsRow {
    settlement_id: Uuid,
    invoice_id: Uuid,
    merchant_id: Uuid,
    currency: String,
    gross_amount: Decimal,
    platform_fee_amount: Decimal,
    net_amount: Decimal,
    fee_percentage: Decimal,
    young: bool,
    invoice_known: bool,
    invoice_merchant: Option<Uuid>,
    invoice_currency: Option<String>,
    total_amount: Option<Decimal>,
    merchant_fee: Option<Decimal>,
}

/// What is wrong with one settlement's amounts, if anything: (kind, problem, expected, found).
fn amounts_problem(r: &AmountsRow) -> Option<(&'static str, String, String, String)> {
    let n = |d: Decimal| d.normalize().to_string();
    let invoice_currency = r.invoice_currency.as_deref().unwrap_or("?");
    if Some(r.merchant_id) != r.invoice_merchant {
        return Some((
            "merchant",
            "the settlement's merchant is not the invoice's".into(),
            r.invoice_merchant
                .map_or("the invoice's merchant".into(), |m| format!("mer_{m}")),
            format!("mer_{}", r.merchant_id),
        ));
    }
    if r.currency != invoice_currency {
        return Some((
            "currency",
            "the settlement's currency is not the invoice's".into(),
            invoice_currency.to_string(),
            r.currency.clone(),
        ));
    }
    let total = r.total_amount.unwrap_or_default();
    if r.gross_amount != total {
        return Some((
            "gross",
            "gross is not the invoice's total_amount".into(),
            format!("{} {}", n(total), r.currency),
            format!("{} {}", n(r.gross_amount), r.currency),
        ));
    }
    if r.platform_fee_amount + r.net_amount != r.gross_amount {
        return Some((
            "fee_plus_net",
            "fee + net is not gross".into(),
            format!("{} {}", n(r.gross_amount), r.currency),
            format!(
                "{} + {} = {} {}",
                n(r.platform_fee_amount),
                n(r.net_amount),
                n(r.platform_fee_amount + r.net_amount),
                r.currency
            ),
        ));
    }
    let Some(rate) = r.merchant_fee else {
        return Some((
            "fee_rate",
            "the merchant is not in the read models, so its fee rate is unknown".into(),
            "the merchant's fee_percentage".into(),
            "no merchant".into(),
        ));
    };
    if r.fee_percentage != rate {
        return Some((
            "fee_rate",
            "the settlement's fee_percentage is not the merchant's".into(),
            format!("{}%", n(rate)),
            format!("{}%", n(r.fee_percentage)),
        ));
    }
    let expected = Amount::new(total).and_then(|gross| {
        platform_fee(
            gross,
            Percentage::new(rate)?,
            Currency::from_code(&r.currency)?,
        )
    });
    match expected {
        Err(e) => Some((
            "fee",
            format!("the platform fee cannot be computed: {e}"),
            "a valid gross amount, rate and currency".into(),
            format!("{} {} at {}%", n(total), r.currency, n(rate)),
        )),
        Ok(split)
            if split.fee.as_decimal() != r.platform_fee_amount
                || split.net.as_decimal() != r.net_amount =>
        {
            Some((
                "fee",
                format!(
                    "fee and net are not platform_fee({} {}, {}%)",
                    n(total),
                    r.currency,
                    n(rate)
                ),
                format!(
                    "fee {} + net {}",
                    n(split.fee.as_decimal()),
                    n(split.net.as_decimal())
                ),
                format!("fee {} + net {}", n(r.platform_fee_amount), n(r.net_amount)),
            ))
        }
        Ok(_) => None,
    }
}

async fn check_amounts(conn: &mut PgConnection, ctx: &Ctx) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        AMOUNTS,
        "per settlement: merchant and currency are the invoice's, gross = the invoice's total_amount, fee and net \
         = platform_fee(gross, the merchant's fee rate), fee + net = gross",
        ctx.max,
    );
    let mut found: Vec<Violation> = Vec::new();
    let mut total = 0u64;
    {
        let mut rows = sqlx::query_as::<_, AmountsRow>(
            "SELECT s.settlement_id, s.invoice_id, s.merchant_id, s.currency, s.gross_amount, \
                    s.platform_fee_amount, s.net_amount, s.fee_percentage, \
                    s.recorded_at >= now() - $1 * interval '1 millisecond' AS young, \
                    i.invoice_id IS NOT NULL AS invoice_known, i.merchant_id AS invoice_merchant, \
                    i.currency AS invoice_currency, i.total_amount, m.fee_percentage AS merchant_fee \
             FROM settlements s \
             LEFT JOIN proj_invoices i ON i.invoice_id = s.invoice_id \
             LEFT JOIN proj_merchants m ON m.merchant_id = i.merchant_id",
        )
        .bind(ctx.grace_ms)
        .fetch(&mut *conn);
        while let Some(r) = rows
            .try_next()
            .await
            .map_err(db("reading the settlements' amounts"))?
        {
            if !r.invoice_known {
                // The `settlements` check reports it (or counts it in flight).
                continue;
            }
            c.checked += 1;
            let Some((kind, problem, expected, found_value)) = amounts_problem(&r) else {
                continue;
            };
            if r.young && r.merchant_fee.is_none() {
                c.in_flight += 1;
                continue;
            }
            total += 1;
            found.push(
                Violation::new(
                    AMOUNTS,
                    kind,
                    format!(
                        "settlement set_{} of invoice inv_{}",
                        r.settlement_id, r.invoice_id
                    ),
                    problem,
                    expected,
                    found_value,
                )
                .invoice(r.invoice_id)
                .settlement(r.settlement_id)
                .merchant(Some(r.merchant_id))
                .currency(&r.currency),
            );
        }
    }
    found.sort_by(|a, b| a.invoice_id.cmp(&b.invoice_id));
    found.truncate(ctx.max);
    c.found(total, found);
    let summary = format!(
        "{} settlement(s) with their invoices and merchants",
        c.checked
    );
    Ok(c.finish(summary))
}

// ---------------------------------------------------------------------------------------------------------------
// (c) The ledger balances per currency; its settlement and payout journals agree with the settlements.

const LEDGER: &str = "ledger";

#[derive(sqlx::FromRow)]
struct JournalRow {
    settlement_id: Uuid,
    invoice_id: Uuid,
    merchant_id: Uuid,
    currency: String,
    status: String,
    gross_amount: Decimal,
    platform_fee_amount: Decimal,
    net_amount: Decimal,
    receipts: Decimal,
    owed: Decimal,
    fees: Decimal,
    payout_payable: Decimal,
    paid_out: Decimal,
    stray_lines: i64,
    same_currency: Option<bool>,
    same_merchant: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct OrphanRow {
    journal_id: Uuid,
    kind: String,
    settlement_id: Option<Uuid>,
    invoice_id: Uuid,
    currency: String,
    lines: i64,
}

/// The journal lines a settlement must have, as text: `(expected, found)`.
fn journal_figures(r: &JournalRow) -> (String, String) {
    let n = |d: Decimal| d.normalize().to_string();
    let completed = r.status == "completed";
    let expected = format!(
        "settlement journal receipts {}, payable {}, fees {}; payout journal payable {}, paid out {}",
        n(-r.gross_amount),
        n(r.net_amount),
        n(r.platform_fee_amount),
        if completed {
            n(-r.net_amount)
        } else {
            "0".into()
        },
        if completed {
            n(r.net_amount)
        } else {
            "0".into()
        },
    );
    let found = format!(
        "settlement journal receipts {}, payable {}, fees {}; payout journal payable {}, paid out {}{}{}{}",
        n(r.receipts),
        n(r.owed),
        n(r.fees),
        n(r.payout_payable),
        n(r.paid_out),
        if r.stray_lines > 0 {
            format!("; {} line(s) on other accounts", r.stray_lines)
        } else {
            String::new()
        },
        if r.same_currency == Some(false) {
            format!("; lines in a currency other than {}", r.currency)
        } else {
            String::new()
        },
        if r.same_merchant == Some(false) {
            format!(
                "; merchant lines of a merchant other than mer_{}",
                r.merchant_id
            )
        } else {
            String::new()
        },
    );
    (expected, found)
}

async fn check_ledger(conn: &mut PgConnection, ctx: &Ctx) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        LEDGER,
        "the ledger balances to zero per currency; each settlement has its settlement journal (receipts = -gross, \
         payable = net, fees = fee) and, once completed, its payout journal (payable = -net, paid out = net), and \
         no such journal lacks its settlement",
        ctx.max,
    );
    let currencies: Vec<(String, Decimal, bool, i64)> = sqlx::query_as(
        "SELECT currency, sum(amount), sum(amount) = 0, count(*) FROM ledger_entries \
         GROUP BY currency ORDER BY currency",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db("summing the ledger per currency"))?;
    let entries: i64 = currencies.iter().map(|c| c.3).sum();
    c.checked = entries as u64;
    let unbalanced: Vec<Violation> = currencies
        .iter()
        .filter(|(_, _, zero, _)| !zero)
        .map(|(currency, sum, _, lines)| {
            Violation::new(
                LEDGER,
                "unbalanced_currency",
                format!("the ledger in {currency} ({lines} line(s))"),
                "does not balance to zero",
                "0",
                sum.normalize().to_string(),
            )
            .currency(currency)
        })
        .collect();
    c.found(unbalanced.len() as u64, unbalanced);

    const JOURNALS: &str = "WITH x AS MATERIALIZED ( \
            SELECT s.settlement_id, s.invoice_id, s.merchant_id, s.currency, s.status, s.gross_amount, \
                   s.platform_fee_amount, s.net_amount, \
                   coalesce(sum(e.amount) FILTER (WHERE e.kind = 'settlement' AND e.account = 'customer_receipts'), 0) \
                       AS receipts, \
                   coalesce(sum(e.amount) FILTER (WHERE e.kind = 'settlement' AND e.account = 'merchant_payable'), 0) \
                       AS owed, \
                   coalesce(sum(e.amount) FILTER (WHERE e.kind = 'settlement' AND e.account = 'platform_fees'), 0) \
                       AS fees, \
                   coalesce(sum(e.amount) FILTER (WHERE e.kind = 'payout' AND e.account = 'merchant_payable'), 0) \
                       AS payout_payable, \
                   coalesce(sum(e.amount) FILTER (WHERE e.kind = 'payout' AND e.account = 'merchant_paid_out'), 0) \
                       AS paid_out, \
                   count(e.entry_id) FILTER (WHERE (e.kind = 'settlement' AND e.account NOT IN \
                       ('customer_receipts', 'merchant_payable', 'platform_fees')) OR (e.kind = 'payout' AND \
                       e.account NOT IN ('merchant_payable', 'merchant_paid_out'))) AS stray_lines, \
                   bool_and(e.currency = s.currency) AS same_currency, \
                   bool_and(e.merchant_id IS NULL OR e.merchant_id = s.merchant_id) AS same_merchant \
            FROM settlements s \
            LEFT JOIN ledger_entries e ON e.settlement_id = s.settlement_id AND e.kind IN ('settlement', 'payout') \
            GROUP BY s.settlement_id) \
        SELECT *, count(*) OVER () AS total FROM x \
        WHERE receipts <> -gross_amount OR owed <> net_amount OR fees <> platform_fee_amount \
           OR payout_payable <> CASE WHEN status = 'completed' THEN -net_amount ELSE 0 END \
           OR paid_out <> CASE WHEN status = 'completed' THEN net_amount ELSE 0 END \
           OR stray_lines > 0 OR NOT coalesce(same_currency, true) OR NOT coalesce(same_merchant, true) \
        ORDER BY invoice_id LIMIT $1";
    let rows: Vec<(i64, JournalRow)> = {
        let raw = sqlx::query(JOURNALS)
            .bind(ctx.limit)
            .fetch_all(&mut *conn)
            .await
            .map_err(db("comparing the ledger's journals with the settlements"))?;
        let mut out = Vec::with_capacity(raw.len());
        for row in raw {
            use sqlx::{FromRow, Row};
            let total: i64 = row
                .try_get("total")
                .map_err(db("reading the journal comparison"))?;
            let r = JournalRow::from_row(&row).map_err(db("reading the journal comparison"))?;
            out.push((total, r));
        }
        out
    };
    let total = rows.first().map_or(0, |(t, _)| *t as u64);
    c.found(
        total,
        rows.into_iter().map(|(_, r)| {
            let (expected, found) = journal_figures(&r);
            Violation::new(
                LEDGER,
                "journals",
                format!(
                    "settlement set_{} of invoice inv_{} ({}, {})",
                    r.settlement_id, r.invoice_id, r.status, r.currency
                ),
                "its ledger journals do not match it",
                expected,
                found,
            )
            .invoice(r.invoice_id)
            .settlement(r.settlement_id)
            .merchant(Some(r.merchant_id))
            .currency(&r.currency)
        }),
    );

    let orphans: Vec<OrphanRow> = sqlx::query_as(
        "SELECT e.journal_id, min(e.kind) AS kind, (array_agg(e.settlement_id))[1] AS settlement_id, \
                (array_agg(e.invoice_id))[1] AS invoice_id, min(e.currency) AS currency, count(*) AS lines \
         FROM ledger_entries e \
         WHERE e.kind IN ('settlement', 'payout') \
           AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.settlement_id = e.settlement_id) \
         GROUP BY e.journal_id ORDER BY e.journal_id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db("finding settlement journals without a settlement"))?;
    let total = orphans.len() as u64;
    c.found(
        total,
        orphans.into_iter().map(|o| {
            let v = Violation::new(
                LEDGER,
                "journal_without_settlement",
                format!(
                    "{} journal {} of invoice inv_{} ({}, {} line(s))",
                    o.kind, o.journal_id, o.invoice_id, o.currency, o.lines
                ),
                "posted for a settlement that does not exist",
                o.settlement_id
                    .map_or("a settlement id".into(), |s| format!("settlement set_{s}")),
                "no settlement",
            )
            .invoice(o.invoice_id)
            .currency(&o.currency);
            match o.settlement_id {
                Some(s) => v.settlement(s),
                None => v,
            }
        }),
    );
    let summary = format!(
        "{entries} ledger line(s) in {} currency(ies); the journals of every settlement",
        currencies.len()
    );
    Ok(c.finish(summary))
}

// ---------------------------------------------------------------------------------------------------------------
// (d) The read models' balances and settlements equal the ledger and the settlements.

const BALANCES: &str = "balances";

#[derive(sqlx::FromRow)]
struct BalanceRow {
    merchant_id: Uuid,
    currency: String,
    payable: Option<Decimal>,
    paid_out: Option<Decimal>,
    pending_net: Option<Decimal>,
    settled_net: Option<Decimal>,
    failed_net: Option<Decimal>,
}

#[derive(sqlx::FromRow)]
struct ReadModelSettlementRow {
    settlement_id: Uuid,
    invoice_id: Option<Uuid>,
    merchant_id: Option<Uuid>,
    currency: Option<String>,
    status: Option<String>,
    gross_amount: Option<Decimal>,
    platform_fee_amount: Option<Decimal>,
    net_amount: Option<Decimal>,
    rm_invoice_id: Option<Uuid>,
    rm_merchant_id: Option<Uuid>,
    rm_currency: Option<String>,
    rm_status: Option<String>,
    rm_gross_amount: Option<Decimal>,
    rm_platform_fee_amount: Option<Decimal>,
    rm_net_amount: Option<Decimal>,
}

fn opt(d: Option<Decimal>) -> String {
    d.map_or("-".into(), |d| d.normalize().to_string())
}

async fn check_balances(conn: &mut PgConnection, ctx: &Ctx) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        BALANCES,
        "per merchant and currency, the read models' balance (pending net, settled net) equals the ledger's \
         (ledger_merchant_balances: payable, paid out), nothing failed for good; each settlement is in the read \
         models with its amounts and status",
        ctx.max,
    );
    // In flight while the ledger moved for the merchant in that currency, or the read models' balance did,
    // within the grace.
    const BALANCE: &str = "WITH x AS MATERIALIZED ( \
            SELECT coalesce(l.merchant_id, b.merchant_id) AS merchant_id, \
                   coalesce(l.currency, b.currency) AS currency, \
                   l.payable, l.paid_out, b.pending_net, b.settled_net, b.failed_net, b.last_event_id \
            FROM ledger_merchant_balances l \
            FULL JOIN proj_merchant_balances b ON b.merchant_id = l.merchant_id AND b.currency = l.currency \
            WHERE coalesce(l.payable, 0) <> coalesce(b.pending_net, 0) \
               OR coalesce(l.paid_out, 0) <> coalesce(b.settled_net, 0) \
               OR coalesce(b.failed_net, 0) <> 0), \
        y AS MATERIALIZED ( \
            SELECT x.*, \
                   coalesce((SELECT max(e.recorded_at) FROM ledger_entries e \
                             WHERE e.merchant_id = x.merchant_id AND e.currency = x.currency) \
                            >= now() - $1 * interval '1 millisecond', false) \
                   OR coalesce((SELECT a.applied_at FROM proj_applied_events a WHERE a.event_id = x.last_event_id) \
                            >= now() - $1 * interval '1 millisecond', false) AS in_flight \
            FROM x)";
    let (balances,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT merchant_id, currency FROM ledger_merchant_balances \
                               UNION SELECT merchant_id, currency FROM proj_merchant_balances) AS b",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db("counting merchant balances"))?;
    c.checked = balances as u64;
    let counts: Counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{BALANCE} SELECT count(*) FILTER (WHERE in_flight) AS in_flight, \
                          count(*) FILTER (WHERE NOT in_flight) AS violations FROM y"
    )))
    .bind(ctx.grace_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("comparing the read models' balances with the ledger"))?;
    c.in_flight += counts.in_flight as u64;
    if counts.violations > 0 {
        let rows: Vec<BalanceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{BALANCE} SELECT merchant_id, currency, payable, paid_out, pending_net, settled_net, failed_net \
             FROM y WHERE NOT in_flight ORDER BY merchant_id, currency LIMIT $2"
        )))
        .bind(ctx.grace_ms)
        .bind(ctx.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("listing the balances that differ from the ledger"))?;
        c.found(
            counts.violations as u64,
            rows.into_iter().map(|r| {
                Violation::new(
                    BALANCES,
                    "balance",
                    format!("merchant mer_{} in {}", r.merchant_id, r.currency),
                    "the read models' balance is not the ledger's",
                    format!(
                        "pending {}, settled {}, failed 0 (ledger: payable {}, paid out {})",
                        opt(r.payable.or(Some(Decimal::ZERO))),
                        opt(r.paid_out.or(Some(Decimal::ZERO))),
                        opt(r.payable),
                        opt(r.paid_out)
                    ),
                    format!(
                        "pending {}, settled {}, failed {} (read models)",
                        opt(r.pending_net),
                        opt(r.settled_net),
                        opt(r.failed_net)
                    ),
                )
                .merchant(Some(r.merchant_id))
                .currency(&r.currency)
            }),
        );
    }

    // Per settlement: the read models' row (from the settlement events) agrees with the settlement. In flight
    // while the settlement's ledger lines (its creation, its payout) or the read models' row moved within the
    // grace.
    const ROWS: &str = "WITH x AS MATERIALIZED ( \
            SELECT coalesce(s.settlement_id, p.settlement_id) AS settlement_id, \
                   s.invoice_id, s.merchant_id, s.currency, s.status, s.gross_amount, s.platform_fee_amount, \
                   s.net_amount, s.recorded_at, \
                   p.invoice_id AS rm_invoice_id, p.merchant_id AS rm_merchant_id, p.currency AS rm_currency, \
                   p.status AS rm_status, p.gross_amount AS rm_gross_amount, \
                   p.platform_fee_amount AS rm_platform_fee_amount, p.net_amount AS rm_net_amount, \
                   p.last_event_id \
            FROM settlements s FULL JOIN proj_settlements p ON p.settlement_id = s.settlement_id \
            WHERE s.settlement_id IS NULL OR p.settlement_id IS NULL \
               OR s.invoice_id <> p.invoice_id OR s.merchant_id <> p.merchant_id OR s.currency <> p.currency \
               OR s.gross_amount <> p.gross_amount OR s.platform_fee_amount <> p.platform_fee_amount \
               OR s.net_amount <> p.net_amount \
               OR p.status <> CASE s.status WHEN 'created' THEN 'pending' WHEN 'held' THEN 'retrying' \
                                            ELSE 'completed' END), \
        y AS MATERIALIZED ( \
            SELECT x.*, \
                   coalesce(x.recorded_at >= now() - $1 * interval '1 millisecond', false) \
                   OR coalesce((SELECT max(e.recorded_at) FROM ledger_entries e \
                                WHERE e.settlement_id = x.settlement_id) \
                               >= now() - $1 * interval '1 millisecond', false) \
                   OR coalesce((SELECT a.applied_at FROM proj_applied_events a WHERE a.event_id = x.last_event_id) \
                               >= now() - $1 * interval '1 millisecond', false) AS in_flight \
            FROM x)";
    let counts: Counts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{ROWS} SELECT count(*) FILTER (WHERE in_flight) AS in_flight, \
                       count(*) FILTER (WHERE NOT in_flight) AS violations FROM y"
    )))
    .bind(ctx.grace_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db(
        "comparing the read models' settlements with the settlements",
    ))?;
    c.in_flight += counts.in_flight as u64;
    if counts.violations > 0 {
        let rows: Vec<ReadModelSettlementRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ROWS} SELECT settlement_id, invoice_id, merchant_id, currency, status, gross_amount, \
                           platform_fee_amount, net_amount, rm_invoice_id, rm_merchant_id, rm_currency, rm_status, \
                           rm_gross_amount, rm_platform_fee_amount, rm_net_amount \
             FROM y WHERE NOT in_flight ORDER BY settlement_id LIMIT $2"
        )))
        .bind(ctx.grace_ms)
        .bind(ctx.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("listing the read models' settlements that differ"))?;
        c.found(
            counts.violations as u64,
            rows.into_iter().map(|r| {
                let describe = |invoice: Option<Uuid>,
                                status: &Option<String>,
                                currency: &Option<String>,
                                amounts: [Option<Decimal>; 3]| {
                    match invoice {
                        None => "none".to_string(),
                        Some(i) => format!(
                            "inv_{i}, {}, gross {} fee {} net {} {}",
                            status.as_deref().unwrap_or("-"),
                            opt(amounts[0]),
                            opt(amounts[1]),
                            opt(amounts[2]),
                            currency.as_deref().unwrap_or("-")
                        ),
                    }
                };
                let rm_status_expected = r.status.as_deref().map(|s| match s {
                    "created" => "pending".to_string(),
                    "held" => "retrying".to_string(),
                    other => other.to_string(),
                });
                let problem = match (r.invoice_id, r.rm_invoice_id) {
                    (Some(_), None) => "the settlement is not in the read models",
                    (None, Some(_)) => {
                        "the read models hold a settlement the settlement service never made"
                    }
                    _ => "the read models' settlement differs from the settlement",
                };
                let v = Violation::new(
                    BALANCES,
                    "read_model_settlement",
                    format!("settlement set_{}", r.settlement_id),
                    problem,
                    describe(
                        r.invoice_id,
                        &rm_status_expected,
                        &r.currency,
                        [r.gross_amount, r.platform_fee_amount, r.net_amount],
                    ),
                    describe(
                        r.rm_invoice_id,
                        &r.rm_status,
                        &r.rm_currency,
                        [r.rm_gross_amount, r.rm_platform_fee_amount, r.rm_net_amount],
                    ),
                )
                .settlement(r.settlement_id)
                .merchant(r.merchant_id.or(r.rm_merchant_id));
                let v = match r.invoice_id.or(r.rm_invoice_id) {
                    Some(i) => v.invoice(i),
                    None => v,
                };
                match r.currency.as_ref().or(r.rm_currency.as_ref()) {
                    Some(cur) => v.currency(cur),
                    None => v,
                }
            }),
        );
    }
    let summary = format!(
        "{balances} merchant balance(s) per currency against the ledger; the read models' settlements"
    );
    Ok(c.finish(summary))
}

// ---------------------------------------------------------------------------------------------------------------
// (e) The consumer groups reached the topic's end; the read models and the audit log hold the same events.

const CONSUMERS: &str = "consumers";
const EVENTS: &str = "events";

async fn check_consumers(
    conn: &mut PgConnection,
    ctx: &Ctx,
    options: &Options,
    topic: &TopicState,
    kafka_elapsed: Duration,
) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        CONSUMERS,
        "the projections, audit and settlement groups have consumed every record of the topic older than the \
         grace (committed offsets in Kafka; settlement's stored positions)",
        ctx.max,
    );
    // Its time includes reading the topic's offsets from Kafka (done before the snapshot).
    c.started = c.started.checked_sub(kafka_elapsed).unwrap_or(c.started);
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
    )
    .bind(&options.settlement_group)
    .bind(&options.topic)
    .fetch_all(&mut *conn)
    .await
    .map_err(db("reading the settlement group's stored positions"))?;
    let stored: BTreeMap<i32, Option<i64>> =
        stored.into_iter().map(|(p, o)| (p, Some(o))).collect();
    type Positions = BTreeMap<i32, Option<i64>>;
    let groups: Vec<(&str, &str, &Positions)> = vec![
        (
            "projections",
            options.projections_group.as_str(),
            &topic.committed[&options.projections_group],
        ),
        (
            "audit",
            options.audit_group.as_str(),
            &topic.committed[&options.audit_group],
        ),
        ("settlement", options.settlement_group.as_str(), &stored),
    ];
    let mut violations = Vec::new();
    for (role, group, positions) in &groups {
        for p in &topic.partitions {
            c.checked += 1;
            // Nothing committed: the group starts at the beginning of what the log holds.
            let at = positions
                .get(&p.partition)
                .copied()
                .flatten()
                .unwrap_or(p.low);
            if at < p.young_from {
                violations.push(Violation::new(
                    CONSUMERS,
                    "lagging_group",
                    format!(
                        "{role} group {group} on {} partition {}",
                        options.topic, p.partition
                    ),
                    format!(
                        "{} record(s) older than the grace are not consumed",
                        p.young_from - at
                    ),
                    format!("position ≥ {} (end {})", p.young_from, p.end),
                    match positions.get(&p.partition).copied().flatten() {
                        Some(o) => format!("position {o}"),
                        None => "no position".into(),
                    },
                ));
            } else if at < p.end {
                c.in_flight += (p.end - at) as u64;
            }
        }
    }
    let total = violations.len() as u64;
    c.found(total, violations);
    let records: i64 = topic.partitions.iter().map(|p| p.end - p.low).sum();
    let summary = format!(
        "3 group(s) × {} partition(s) of {} ({records} record(s){})",
        topic.partitions.len(),
        options.topic,
        match topic.dead_letters {
            Some(n) if n > 0 => format!(", {n} dead-lettered in {}.dlq", options.topic),
            _ => String::new(),
        }
    );
    Ok(c.finish(summary))
}

#[derive(sqlx::FromRow)]
struct MissingEventRow {
    event_id: Uuid,
    event_type: Option<String>,
    aggregate_id: Option<String>,
}

async fn check_events(
    conn: &mut PgConnection,
    ctx: &Ctx,
    topic: &TopicState,
) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        EVENTS,
        "the read models (proj_applied_events) and the audit log hold the same events: each de-duplicates by \
         event id, so duplicates in the topic count once",
        ctx.max,
    );
    let (applied, logged): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM proj_applied_events), (SELECT count(*) FROM audit_log)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db(
        "counting the events in the read models and the audit log",
    ))?;
    c.checked = applied.max(logged) as u64;
    // Events in one and not the other: in flight while the one that has it recorded it within the grace.
    // One merge of the two primary-key indexes (an anti-join each way, without reading the rows), then the
    // details of the few that differ.
    const ONLY: &str = "WITH d AS MATERIALIZED ( \
            SELECT a.event_id AS audit_id, p.event_id AS rm_id \
            FROM audit_log a FULL JOIN proj_applied_events p ON p.event_id = a.event_id \
            WHERE a.event_id IS NULL OR p.event_id IS NULL), \
        x AS MATERIALIZED ( \
            SELECT a.event_id, 'audit' AS side, a.event_type, a.aggregate_id, \
                   a.recorded_at >= now() - $1 * interval '1 millisecond' AS in_flight \
            FROM d JOIN audit_log a ON a.event_id = d.audit_id \
            UNION ALL \
            SELECT p.event_id, 'read_models' AS side, NULL, NULL, \
                   p.applied_at >= now() - $1 * interval '1 millisecond' AS in_flight \
            FROM d JOIN proj_applied_events p ON p.event_id = d.rm_id)";
    let (in_flight, only_audit, only_rm): (i64, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ONLY} SELECT count(*) FILTER (WHERE in_flight), \
                       count(*) FILTER (WHERE NOT in_flight AND side = 'audit'), \
                       count(*) FILTER (WHERE NOT in_flight AND side = 'read_models') FROM x"
        )))
        .bind(ctx.grace_ms)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(
            "comparing the events of the read models and the audit log",
        ))?;
    c.in_flight += in_flight as u64;
    for (side, total) in [("audit", only_audit), ("read_models", only_rm)] {
        if total == 0 {
            continue;
        }
        let rows: Vec<MissingEventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{ONLY} SELECT event_id, event_type, aggregate_id FROM x WHERE NOT in_flight AND side = $2 \
             ORDER BY event_id LIMIT $3"
        )))
        .bind(ctx.grace_ms)
        .bind(side)
        .bind(ctx.limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("listing the events missing from the read models or the audit log"))?;
        c.found(
            total as u64,
            rows.into_iter().map(|r| {
                let what = match (&r.event_type, &r.aggregate_id) {
                    (Some(t), Some(a)) => format!("event evt_{} ({t} of {a})", r.event_id),
                    _ => format!("event evt_{}", r.event_id),
                };
                let (problem, expected, found) = if side == "audit" {
                    (
                        "in the audit log but not applied to the read models",
                        "applied to the read models",
                        "missing from proj_applied_events",
                    )
                } else {
                    (
                        "applied to the read models but not in the audit log",
                        "in the audit log",
                        "missing from audit_log",
                    )
                };
                Violation::new(EVENTS, "event_missing", what, problem, expected, found)
                    .event(r.event_id)
            }),
        );
    }
    let records: i64 = topic.partitions.iter().map(|p| p.end - p.low).sum();
    let summary = format!(
        "{applied} event(s) in the read models, {logged} in the audit log, {records} record(s) in the topic \
         (duplicates and dead letters count once or not at all)"
    );
    Ok(c.finish(summary))
}

// ---------------------------------------------------------------------------------------------------------------
// (f) The audit chain, by the audit crate's verifier.

const AUDIT_CHAIN: &str = "audit_chain";

async fn check_audit_chain(conn: &mut PgConnection, ctx: &Ctx) -> Result<Outcome, VerifyError> {
    let mut c = CheckBuilder::new(
        AUDIT_CHAIN,
        "the audit log's SHA-256 hash chain verifies from row 1 to the head (audit::verify)",
        ctx.max,
    );
    let verification = audit::verify::verify(conn)
        .await
        .map_err(VerifyError::Audit)?;
    c.checked = verification.rows;
    if let Some(b) = &verification.first_break {
        let v = Violation::new(
            AUDIT_CHAIN,
            "audit_chain_broken",
            format!(
                "audit row {}{}",
                b.seq,
                b.event_id
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            b.problem.clone(),
            "an intact chain",
            format!("broken at row {}", b.seq),
        );
        let v = match b
            .event_id
            .as_deref()
            .and_then(|e| e.parse::<events::EventId>().ok())
        {
            Some(e) => v.event(e.as_uuid()),
            None => v,
        };
        c.found(1, [v]);
    }
    let summary = format!(
        "{} row(s); head row {} hash {}",
        verification.rows, verification.head_seq, verification.head_hash
    );
    Ok(c.finish(summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_units_operators_type() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in ["", "s", "30", "-1s", "1.5s", "10x", "1s2", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0");
    }

    #[test]
    fn urls_print_without_their_password() {
        assert_eq!(
            redact_url("postgres://postgres:s3cret@127.0.0.1:5432/checkout"),
            "postgres://postgres:***@127.0.0.1:5432/checkout"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/checkout"),
            "postgres://127.0.0.1/checkout"
        );
        assert_eq!(
            redact_url("postgres://user@host/db"),
            "postgres://user@host/db"
        );
    }

    fn row(gross: &str, fee: &str, net: &str, rate: &str, currency: &str) -> AmountsRow {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let merchant = Uuid::from_u128(7);
        AmountsRow {
            settlement_id: Uuid::from_u128(1),
            invoice_id: Uuid::from_u128(2),
            merchant_id: merchant,
            currency: currency.into(),
            gross_amount: d(gross),
            platform_fee_amount: d(fee),
            net_amount: d(net),
            fee_percentage: d(rate),
            young: false,
            invoice_known: true,
            invoice_merchant: Some(merchant),
            invoice_currency: Some(currency.into()),
            total_amount: Some(d(gross)),
            merchant_fee: Some(d(rate)),
        }
    }

    #[test]
    fn amounts_are_checked_with_the_one_fee_function() {
        assert!(amounts_problem(&row("16.49", "0.16", "16.33", "1", "USD")).is_none());
        assert!(amounts_problem(&row("1000", "25", "975", "2.5", "JPY")).is_none());
        // 1 % of 0.125 BHD is 0.00125, 0.001 at the dinar's 3 decimals.
        assert!(amounts_problem(&row("0.125", "0.001", "0.124", "1", "BHD")).is_none());

        let (kind, problem, expected, found) =
            amounts_problem(&row("16.49", "0.17", "16.32", "1", "USD")).unwrap();
        assert_eq!(kind, "fee");
        assert_eq!(problem, "fee and net are not platform_fee(16.49 USD, 1%)");
        assert_eq!(expected, "fee 0.16 + net 16.33");
        assert_eq!(found, "fee 0.17 + net 16.32");

        let (kind, ..) = amounts_problem(&row("16.49", "0.16", "16.34", "1", "USD")).unwrap();
        assert_eq!(kind, "fee_plus_net");

        let mut r = row("16.49", "0.16", "16.33", "1", "USD");
        r.total_amount = Some("16.50".parse().unwrap());
        let (kind, _, expected, found) = amounts_problem(&r).unwrap();
        assert_eq!(
            (kind, expected.as_str(), found.as_str()),
            ("gross", "16.5 USD", "16.49 USD")
        );

        let mut r = row("16.49", "0.16", "16.33", "1", "USD");
        r.merchant_fee = Some("2".parse().unwrap());
        assert_eq!(amounts_problem(&r).unwrap().0, "fee_rate");

        let mut r = row("16.49", "0.16", "16.33", "1", "USD");
        r.invoice_currency = Some("EUR".into());
        assert_eq!(amounts_problem(&r).unwrap().0, "currency");
    }

    #[test]
    fn a_violation_reads_as_subject_problem_expected_found() {
        let v = Violation::new(
            "ledger",
            "unbalanced_currency",
            "the ledger in USD (3 line(s))".into(),
            "does not balance to zero",
            "0",
            "0.01",
        )
        .currency("USD");
        assert_eq!(
            v.to_string(),
            "ledger: the ledger in USD (3 line(s)): does not balance to zero: expected 0, found 0.01"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["currency"], "USD");
        assert!(json.get("invoice_id").is_none());
    }
}
