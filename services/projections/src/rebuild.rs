//! Rebuilding the read models from the topic: replay `crypto-checkout.domain-events` from the beginning into
//! fresh tables, then swap them in.
//!
//! Guarantees:
//! - **Same code, same result**: events are applied in batches by [`crate::apply`] exactly as the live consumer
//!   applies them (the same fold and statements, without the per-key advisory locks), into copies of the
//!   read-model tables (`CREATE TABLE … (LIKE … INCLUDING ALL)`) in the scratch schema [`SCRATCH_SCHEMA`],
//!   selected per transaction with `SET LOCAL search_path`. Undecodable records and events the read models refuse
//!   (business errors) are skipped and counted, as the live consumer dead-letters them.
//! - **Readers never see a half-built state**: the swap is one transaction. It takes `EXCLUSIVE` locks on the
//!   live tables — writers (the live consumer) wait, plain readers do not — reads the topic's end offsets again
//!   and applies what arrived since the replay started, then replaces the live tables' contents with the rebuilt
//!   ones and commits. Readers see the old contents until the commit and the new ones after it, nothing in between.
//! - **The live consumer carries on correctly**: the de-duplication table `proj_applied_events` is part of the
//!   swapped set, and a live batch reads it first (`FOR KEY SHARE`, a lock the swap's `EXCLUSIVE` lock excludes),
//!   so a batch that started during the swap waits before loading anything and then loads the rebuilt rows. Every event the live consumer had applied was in the topic when the locks were granted, so it
//!   is in the rebuilt set; events the rebuild applied that the live consumer had not reached yet are recognised
//!   as duplicates when it reaches them. The live tables keep their identity (contents are replaced, tables are
//!   not renamed), so the consumer's prepared statements stay valid.
//! - One rebuild at a time (a session advisory lock); the scratch schema is dropped at the end.
//!
//! A dry run builds and compares without swapping: [`RebuildReport::differences`] lists, per table, rows only in
//! the live tables and rows only in the rebuilt ones (every column but `applied_at`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use runtime::ErrorClass;
use serde::Serialize;
use service_kit::KafkaSettings;
use sqlx::{Connection, PgConnection};

use crate::apply::{Applied, ApplyError, BatchFailed, Locking, apply_batch_with};

/// The read-model tables, in lock order (`proj_applied_events` first: every handler transaction writes it first,
/// so taking it first cannot deadlock with the live consumer).
pub const TABLES: [&str; 7] = [
    "proj_applied_events",
    "proj_invoices",
    "proj_payments",
    "proj_merchants",
    "proj_settlements",
    "proj_merchant_balances",
    "proj_invoice_history",
];

/// Where the rebuilt tables live until the swap.
pub const SCRATCH_SCHEMA: &str = "projections_rebuild";

/// Session advisory lock key: one rebuild at a time.
const LOCK_KEY: i64 = 0x0070_726f_6a72_6562;

/// Columns that are bookkeeping, not read-model content, and so are not compared.
const NOT_COMPARED: [&str; 1] = ["applied_at"];

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The topic to replay (the spec's domain-events topic unless testing).
    pub topic: String,
    pub kafka: KafkaSettings,
    /// Swap the rebuilt tables in (`false`: dry run — build, compare, drop).
    pub swap: bool,
    /// Events per transaction while replaying.
    pub batch_size: usize,
    /// How long the swap may wait for the live consumer's transactions to release the tables.
    pub lock_timeout: Duration,
}

impl RebuildOptions {
    pub fn new(topic: impl Into<String>, kafka: KafkaSettings) -> Self {
        RebuildOptions {
            topic: topic.into(),
            kafka,
            swap: true,
            batch_size: 1000,
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// Rows that differ between the live and the rebuilt contents of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDifference {
    pub table: String,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    /// Rows (all compared columns) in the live table but not in the rebuilt one.
    pub only_live: i64,
    /// Rows in the rebuilt table but not in the live one.
    pub only_rebuilt: i64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RebuildReport {
    /// Records read from the topic.
    pub records: u64,
    pub applied: u64,
    pub duplicates: u64,
    /// Records that are not valid events (the live consumer dead-letters them).
    pub invalid: u64,
    /// Events the read models refuse (an unknown aggregate; the live consumer dead-letters them too).
    pub refused: u64,
    /// Records read while holding the swap locks (what arrived during the replay).
    pub caught_up: u64,
    /// Per table, compared before the swap (or instead of it, in a dry run). Empty tables are listed too.
    pub differences: Vec<TableDifference>,
    pub swapped: bool,
    pub seconds: f64,
}

impl RebuildReport {
    /// Whether the rebuilt contents equal the live ones.
    pub fn identical(&self) -> bool {
        self.differences
            .iter()
            .all(|d| d.only_live == 0 && d.only_rebuilt == 0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("another rebuild is running (advisory lock {LOCK_KEY:#x} is held)")]
    AlreadyRunning,
    #[error("database error during the rebuild")]
    Db(#[from] sqlx::Error),
    #[error("Kafka error during the rebuild: {0}")]
    Kafka(String),
    #[error("topic {0} does not exist or has no partitions")]
    NoTopic(String),
}

/// A consumer reading the topic from the beginning, outside any group's offsets.
struct Replay {
    consumer: Arc<BaseConsumer>,
    topic: String,
    /// Next offset to apply, per partition: every record below it has been handed out.
    next: HashMap<i32, i64>,
    /// Where to stop, per partition.
    target: HashMap<i32, i64>,
    /// Records read past their partition's target, kept (in order) for the next phase.
    stash: VecDeque<Raw>,
    /// Consecutive polls that returned nothing while behind.
    idle_rounds: u32,
}

/// One record: partition, offset, value.
type Raw = (i32, i64, Option<Vec<u8>>);

/// Rounds of 2 s without a record while behind the targets before the replay gives up.
const MAX_IDLE_ROUNDS: u32 = 15;

impl Replay {
    async fn open(topic: &str, kafka: &KafkaSettings) -> Result<Replay, RebuildError> {
        let mut config: ClientConfig = service_kit::kafka::client_config(kafka);
        config
            .set(
                "group.id",
                format!("projections-rebuild-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| RebuildError::Kafka(e.to_string()))?;
        let consumer = Arc::new(consumer);
        let topic = topic.to_string();
        let (c, t) = (consumer.clone(), topic.clone());
        let low =
            tokio::task::spawn_blocking(move || -> Result<HashMap<i32, i64>, RebuildError> {
                let md = c
                    .fetch_metadata(Some(&t), Duration::from_secs(10))
                    .map_err(|e| RebuildError::Kafka(e.to_string()))?;
                let partitions: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|m| m.name() == t && m.error().is_none())
                    .flat_map(|m| m.partitions().iter().map(|p| p.id()))
                    .collect();
                if partitions.is_empty() {
                    return Err(RebuildError::NoTopic(t.clone()));
                }
                let mut tpl = TopicPartitionList::new();
                let mut low = HashMap::new();
                for p in partitions {
                    let (lo, _) = c
                        .fetch_watermarks(&t, p, Duration::from_secs(10))
                        .map_err(|e| RebuildError::Kafka(e.to_string()))?;
                    tpl.add_partition_offset(&t, p, Offset::Beginning)
                        .map_err(|e| RebuildError::Kafka(e.to_string()))?;
                    low.insert(p, lo);
                }
                c.assign(&tpl)
                    .map_err(|e| RebuildError::Kafka(e.to_string()))?;
                Ok(low)
            })
            .await
            .map_err(|e| RebuildError::Kafka(format!("metadata task: {e}")))??;
        let mut replay = Replay {
            consumer,
            topic,
            next: low,
            target: HashMap::new(),
            stash: VecDeque::new(),
            idle_rounds: 0,
        };
        replay.refresh_targets().await?;
        Ok(replay)
    }

    /// Sets the targets to the current end offsets (they only grow).
    async fn refresh_targets(&mut self) -> Result<(), RebuildError> {
        let (c, t) = (self.consumer.clone(), self.topic.clone());
        let partitions: Vec<i32> = self.next.keys().copied().collect();
        self.target = tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .map(|p| {
                    c.fetch_watermarks(&t, p, Duration::from_secs(10))
                        .map(|(_, high)| (p, high))
                        .map_err(|e| RebuildError::Kafka(e.to_string()))
                })
                .collect::<Result<HashMap<_, _>, _>>()
        })
        .await
        .map_err(|e| RebuildError::Kafka(format!("watermark task: {e}")))??;
        Ok(())
    }

    fn done(&self) -> bool {
        self.target
            .iter()
            .all(|(p, target)| self.next.get(p).is_some_and(|n| n >= target))
    }

    /// Up to `max` records below the targets, each partition's in offset order.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Raw>, RebuildError> {
        let mut batch = Vec::new();
        // Stashed records now below their (refreshed) target come first.
        let mut keep = VecDeque::new();
        while let Some(record) = self.stash.pop_front() {
            let (p, offset, _) = record;
            let below = self.target.get(&p).is_some_and(|t| offset < *t);
            let blocked = keep.iter().any(|(q, _, _)| *q == p);
            if batch.len() < max && below && !blocked {
                self.next.insert(p, offset + 1);
                batch.push(record);
            } else {
                keep.push_back(record);
            }
        }
        self.stash = keep;
        if batch.len() >= max || self.done() {
            return Ok(batch);
        }
        let consumer = self.consumer.clone();
        let (mut next, target, topic) =
            (self.next.clone(), self.target.clone(), self.topic.clone());
        let mut stash = std::mem::take(&mut self.stash);
        let (batch, next, stash, polled) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut polled = false;
            let behind = |next: &HashMap<i32, i64>| {
                target
                    .iter()
                    .any(|(p, t)| next.get(p).is_some_and(|n| n < t))
            };
            while batch.len() < max && behind(&next) && started.elapsed() < Duration::from_secs(2) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        polled = true;
                        let (p, offset) = (m.partition(), m.offset());
                        if next.get(&p).is_some_and(|n| offset < *n) {
                            continue; // already handed out
                        }
                        let t = target.get(&p).copied().unwrap_or(i64::MAX);
                        let record = (p, offset, m.payload().map(<[u8]>::to_vec));
                        if offset < t && !stash.iter().any(|(q, _, _)| *q == p) {
                            next.insert(p, offset + 1);
                            batch.push(record);
                        } else {
                            // Every record of `p` below `t` has been delivered: the partition is done here.
                            let n = next.entry(p).or_insert(0);
                            *n = (*n).max(t.min(offset));
                            stash.push_back(record);
                        }
                    }
                    Some(Err(e)) => return Err(RebuildError::Kafka(e.to_string())),
                    None => {
                        // Offsets without a record (transaction markers, aborted records): the consumer's
                        // position says how far it really is.
                        if let Ok(position) = consumer.position() {
                            for e in position.elements_for_topic(&topic) {
                                if let (Offset::Offset(o), Some(t)) =
                                    (e.offset(), target.get(&e.partition()))
                                {
                                    let n = next.entry(e.partition()).or_insert(0);
                                    if o > *n {
                                        *n = o.min(*t);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Ok((batch, next, stash, polled))
        })
        .await
        .map_err(|e| RebuildError::Kafka(format!("poll task: {e}")))??;
        self.next = next;
        self.stash = stash;
        if polled || !batch.is_empty() {
            self.idle_rounds = 0;
        } else if !self.done() {
            self.idle_rounds += 1;
            if self.idle_rounds >= MAX_IDLE_ROUNDS {
                return Err(RebuildError::Kafka(format!(
                    "no record for {}s while behind the end offsets (next {:?}, end {:?})",
                    2 * MAX_IDLE_ROUNDS,
                    self.next,
                    self.target
                )));
            }
        }
        Ok(batch)
    }
}

/// Applies `records` inside the open transaction `conn` (whose search_path is the scratch schema) in one
/// [`apply_batch_with`] (no advisory locks: the rebuild is the only writer of its scratch tables, and its swap
/// must not wait for locks the live consumer holds while the live consumer waits for the swap's table locks).
/// Events the read models refuse are skipped, as the live consumer dead-letters them: the batch is rolled back
/// to a savepoint and applied again without the refused event (every event before it folds the same way again);
/// a database refusal no event can be blamed for makes this batch go event by event, each under a savepoint.
async fn apply_records(
    conn: &mut PgConnection,
    records: Vec<Raw>,
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    let mut events = Vec::with_capacity(records.len());
    for (_, _, value) in records {
        report.records += 1;
        match value.as_deref().and_then(|v| events::decode(v).ok()) {
            Some(event) => events.push(event),
            None => report.invalid += 1,
        }
    }
    loop {
        sqlx::query("SAVEPOINT rebuild_batch")
            .execute(&mut *conn)
            .await?;
        match apply_batch_with(conn, &events, Locking::None).await {
            Ok(done) => {
                count(report, &done.outcomes);
                break;
            }
            Err(BatchFailed {
                error: ApplyError::Db(e),
                ..
            }) if !refused(&e) => return Err(RebuildError::Db(e)),
            Err(failed) => {
                sqlx::query("ROLLBACK TO SAVEPOINT rebuild_batch")
                    .execute(&mut *conn)
                    .await?;
                match failed.index {
                    Some(i) => {
                        report.refused += 1;
                        events.remove(i);
                    }
                    None => {
                        one_by_one(conn, &events, report).await?;
                        break;
                    }
                }
            }
        }
    }
    sqlx::query("RELEASE SAVEPOINT rebuild_batch")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies `events` one at a time, each under a savepoint, skipping those the read models refuse.
async fn one_by_one(
    conn: &mut PgConnection,
    events: &[events::Envelope],
    report: &mut RebuildReport,
) -> Result<(), RebuildError> {
    for event in events {
        sqlx::query("SAVEPOINT rebuild_event")
            .execute(&mut *conn)
            .await?;
        match apply_batch_with(conn, std::slice::from_ref(event), Locking::None).await {
            Ok(done) => count(report, &done.outcomes),
            Err(BatchFailed {
                error: ApplyError::Db(e),
                ..
            }) if !refused(&e) => return Err(RebuildError::Db(e)),
            Err(_) => {
                report.refused += 1;
                sqlx::query("ROLLBACK TO SAVEPOINT rebuild_event")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        sqlx::query("RELEASE SAVEPOINT rebuild_event")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn count(report: &mut RebuildReport, outcomes: &[Applied]) {
    for outcome in outcomes {
        match outcome {
            Applied::Applied => report.applied += 1,
            Applied::Duplicate => report.duplicates += 1,
        }
    }
}

/// Whether the live consumer would dead-letter what the database refused (a business error) rather than stop.
/// (Events about unknown aggregates, [`ApplyError::Unknown`], are always refused.)
fn refused(error: &sqlx::Error) -> bool {
    runtime::error::classify_sqlx(error) == ErrorClass::Business
}

async fn scratch(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {SCRATCH_SCHEMA}"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The columns of `table` that can be written (not generated), in order.
async fn writable_columns(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT quote_ident(column_name) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1 AND is_generated = 'NEVER' ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await
}

async fn compared_columns(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let all: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name, quote_ident(column_name) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(all
        .into_iter()
        .filter(|(name, _)| !NOT_COMPARED.contains(&name.as_str()))
        .map(|(_, quoted)| quoted)
        .collect())
}

async fn compare(conn: &mut PgConnection) -> Result<Vec<TableDifference>, sqlx::Error> {
    let mut out = Vec::new();
    for table in TABLES {
        let cols = compared_columns(conn, table).await?.join(", ");
        let sql = format!(
            "SELECT (SELECT count(*) FROM public.{table}), (SELECT count(*) FROM {SCRATCH_SCHEMA}.{table}), \
                    (SELECT count(*) FROM (SELECT {cols} FROM public.{table} EXCEPT ALL \
                                           SELECT {cols} FROM {SCRATCH_SCHEMA}.{table}) d), \
                    (SELECT count(*) FROM (SELECT {cols} FROM {SCRATCH_SCHEMA}.{table} EXCEPT ALL \
                                           SELECT {cols} FROM public.{table}) d)"
        );
        let (live_rows, rebuilt_rows, only_live, only_rebuilt): (i64, i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await?;
        out.push(TableDifference {
            table: table.to_string(),
            live_rows,
            rebuilt_rows,
            only_live,
            only_rebuilt,
        });
    }
    Ok(out)
}

/// Rebuilds the read models of the database at `database_url` from `options.topic`; `progress` receives one line
/// per step.
pub async fn rebuild(
    database_url: &str,
    options: &RebuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(database_url).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        return Err(RebuildError::AlreadyRunning);
    }
    let result = run(&mut conn, options, &mut progress).await;
    // Whatever happened, leave no scratch tables behind (the swap has committed or rolled back by now).
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCRATCH_SCHEMA} CASCADE"
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    let mut report = result?;
    dropped?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn run(
    conn: &mut PgConnection,
    options: &RebuildOptions,
    progress: &mut impl FnMut(&str),
) -> Result<RebuildReport, RebuildError> {
    let mut report = RebuildReport::default();
    let mut ddl =
        format!("DROP SCHEMA IF EXISTS {SCRATCH_SCHEMA} CASCADE; CREATE SCHEMA {SCRATCH_SCHEMA};");
    for table in TABLES {
        ddl.push_str(&format!(
            " CREATE TABLE {SCRATCH_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL);"
        ));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut *conn)
        .await?;
    let mut replay = Replay::open(&options.topic, &options.kafka).await?;
    let total: i64 = replay
        .target
        .iter()
        .map(|(p, t)| t - replay.next.get(p).copied().unwrap_or(0))
        .sum();
    progress(&format!(
        "replaying {total} record(s) of {} into fresh tables",
        options.topic
    ));
    let mut last_report = Instant::now();
    while !replay.done() {
        let batch = replay.next_batch(options.batch_size).await?;
        if batch.is_empty() {
            continue;
        }
        let mut tx = conn.begin().await?;
        scratch(&mut tx).await?;
        apply_records(&mut tx, batch, &mut report).await?;
        tx.commit().await?;
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!("… {} of {total} record(s)", report.records));
            last_report = Instant::now();
        }
    }
    progress(&format!(
        "replayed {} record(s): {} applied, {} duplicate(s), {} invalid, {} refused",
        report.records, report.applied, report.duplicates, report.invalid, report.refused
    ));

    let mut tx = conn.begin().await?;
    scratch(&mut tx).await?;
    if options.swap {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = {}",
            options.lock_timeout.as_millis()
        )))
        .execute(&mut *tx)
        .await?;
        let tables: Vec<String> = TABLES.iter().map(|t| format!("public.{t}")).collect();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {} IN EXCLUSIVE MODE",
            tables.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
        // Everything the live consumer applied is in the topic by now; catch up to the current end.
        replay.refresh_targets().await?;
        let before = report.records;
        while !replay.done() {
            let batch = replay.next_batch(options.batch_size).await?;
            apply_records(&mut tx, batch, &mut report).await?;
        }
        report.caught_up = report.records - before;
    }
    report.differences = compare(&mut tx).await?;
    if options.swap {
        for table in TABLES {
            let cols = writable_columns(&mut tx, table).await?.join(", ");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DELETE FROM public.{table}; \
                 INSERT INTO public.{table} ({cols}) SELECT {cols} FROM {SCRATCH_SCHEMA}.{table};"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        report.swapped = true;
        progress(&format!(
            "swapped in ({} record(s) caught up under the lock)",
            report.caught_up
        ));
    } else {
        tx.rollback().await?;
    }
    Ok(report)
}
