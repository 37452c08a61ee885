//! `checkoutctl dlq …`: the dead-letter topics and their parking lots (decision 0035) — `list`, `show`, `replay`
//! (its guarantees in [`crate::dlq_replay`]) and `purge`.
//!
//! Guarantees:
//! - **The operator cursor** of a DLQ is the committed offset of consumer group [`CURSOR_GROUP`] on each of its
//!   partitions (no commit: the partition's earliest retained offset). Records before it are "handled"; `list`
//!   counts, and `replay` selects by default, only the records at or after it. Only `purge --execute` moves it,
//!   and only forward; `checkoutctl groups reset-offsets checkoutctl-dlq-cursor --topic T …` moves it back.
//! - **Nothing is ever deleted**: `purge` commits the cursor group's offsets; topics and records stay until their
//!   retention (`deploy/kafka/topics.yaml`).
//! - **Read-only reads**: `list` and `show` read with a group-less, assigned consumer (`read_committed`, as the
//!   platform's consumers see the log); they never join or commit. Each scan stops at the end offsets read when it
//!   began, so records arriving meanwhile are left for the next run.
//! - **Recorded**: every executed `replay` and `purge` is a row of `operator_actions` (who — `--operator` or
//!   `$USER` —, what selection, how many, when), like `groups reset-offsets`.
//!
//! Exit codes: 0 done (or dry run printed), 1 a replay that stopped part-way (what was produced is recorded and
//! printed), 2 the command could not run (bad arguments, no broker, no database).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use lag::tracker::{Ends, Tp};
use lag::{GroupSpec, OffsetSource, Reader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::dlq_replay::ReplayArgs;
use crate::{Io, Run, block_on, exit};

/// The consumer group whose committed offsets are the operator cursors of every DLQ and parking lot.
pub const CURSOR_GROUP: &str = "checkoutctl-dlq-cursor";

/// Dead-letter topics: list them, show a record, replay records to their original topic, purge (move the
/// operator cursor). Parking lots (`<dlq>.parked`) are handled the same way.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXIT_CODES)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
    /// PostgreSQL URL: every executed replay and purge is recorded in operator_actions.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// Bound of each broker request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
}

const EXIT_CODES: &str = "Exit codes: 0 done (or dry run printed); 1 a replay stopped part-way (what was \
produced is printed and recorded); 2 the command could not run.\n\nThe operator cursor of a DLQ is the committed \
offset of consumer group checkoutctl-dlq-cursor; `purge` moves it forward, never deletes anything.";

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Per DLQ (and parking lot): records past the operator cursor, oldest and newest, counts by error class and
    /// by failing consumer group.
    List {
        /// The topics (default: every DLQ and parking lot of deploy/kafka/topics.yaml).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Most records read per topic for the breakdowns (the count past the cursor is exact regardless).
        #[arg(long, default_value_t = 100_000)]
        scan_limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One record: its provenance and replay headers, key, and value (pretty-printed when it is JSON).
    Show {
        topic: String,
        /// `PARTITION:OFFSET`, e.g. `3:42`.
        position: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Produce selected records back to their original topic (dry run unless --execute). A replayed record that
    /// fails again is parked in `<dlq>.parked` by the consumer runtime, never dead-lettered again.
    Replay(ReplayArgs),
    /// Move the operator cursor past records (dry run unless --execute); never deletes topics or records.
    Purge {
        topic: String,
        #[command(flatten)]
        upto: PurgeTo,
        /// Apply (default: print the plan only).
        #[arg(long)]
        execute: bool,
        /// Who is doing this, for operator_actions (default: $USER).
        #[arg(long)]
        operator: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// How far `purge` moves the cursor: exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct PurgeTo {
    /// Every record there now: the cursor goes to the end of each partition.
    #[arg(long)]
    all: bool,
    /// `PARTITION:OFFSET` (repeatable): past this record (inclusive) on that partition.
    #[arg(long = "through")]
    through: Vec<String>,
    /// Every record written before this time (RFC 3339, or a duration ago like `2h`).
    #[arg(long)]
    before: Option<String>,
}

impl Run for DlqArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let config = crate::kafka_client_config(self.bootstrap_servers.clone())?;
        let kafka = service_kit::KafkaSettings {
            bootstrap_servers: self.bootstrap_servers.unwrap_or_default(),
            client: service_kit::config::client_properties_from(std::env::vars())
                .context("CHECKOUT__KAFKA__CLIENT__* properties")?,
        };
        let ctx = Ctx {
            reader: Reader::new(config.clone(), self.timeout)?,
            base: config,
            kafka,
            timeout: self.timeout,
            database_url: self.database_url,
        };
        block_on(async move {
            match self.command {
                DlqCommand::List {
                    topics,
                    scan_limit,
                    json,
                } => list(&ctx, topics, scan_limit, json, io).await,
                DlqCommand::Show {
                    topic,
                    position,
                    json,
                } => show(&ctx, &topic, &position, json, io).await,
                DlqCommand::Replay(args) => crate::dlq_replay::run(&ctx, args, io).await,
                DlqCommand::Purge {
                    topic,
                    upto,
                    execute,
                    operator,
                    json,
                } => purge(&ctx, &topic, upto, execute, operator, json, io).await,
            }
        })
    }
}

/// What every subcommand needs.
pub struct Ctx {
    pub reader: Arc<Reader>,
    pub base: ClientConfig,
    /// The same cluster as settings, for the platform's producer configuration.
    pub kafka: service_kit::KafkaSettings,
    pub timeout: Duration,
    pub database_url: Option<String>,
}

impl Ctx {
    /// Connects to the database that records operator actions.
    pub async fn pool(&self) -> anyhow::Result<sqlx::PgPool> {
        let url = self.database_url.as_deref().context(
            "DATABASE_URL is not set: it holds operator_actions, the record of every executed replay and purge",
        )?;
        sqlx::PgPool::connect(url)
            .await
            .context("connecting to DATABASE_URL")
    }
}

/// A DLQ's partitions: their ends and the operator cursor.
#[derive(Debug, Clone)]
pub struct Partitions {
    pub topic: String,
    /// Per partition: `(cursor, ends)`; the cursor is clamped to `[earliest, latest]`.
    pub parts: BTreeMap<i32, (i64, Ends)>,
}

impl Partitions {
    /// Records past the cursor (offsets, so transaction markers count too: an upper bound under transactions).
    pub fn pending(&self) -> i64 {
        self.parts.values().map(|(c, e)| e.latest - c).sum()
    }
}

/// Reads the ends and the cursor of `topic`; an error when the topic does not exist.
pub async fn partitions(ctx: &Ctx, topic: &str) -> anyhow::Result<Partitions> {
    let spec = GroupSpec {
        group: CURSOR_GROUP.to_string(),
        topics: vec![topic.to_string()],
        offsets: OffsetSource::Kafka,
    };
    let snapshot = ctx
        .reader
        .snapshot(std::slice::from_ref(&spec), None)
        .await
        .with_context(|| format!("reading the offsets of {topic}"))?;
    let committed = match &snapshot.groups[0].1 {
        Ok(reading) => reading.committed.clone(),
        Err(why) => bail!("reading the operator cursor ({CURSOR_GROUP}) of {topic}: {why}"),
    };
    let parts: BTreeMap<i32, (i64, Ends)> = snapshot
        .ends
        .iter()
        .filter(|((t, _), _)| t == topic)
        .map(|((t, p), ends)| {
            let cursor = committed
                .get(&(t.clone(), *p))
                .map_or(ends.earliest, |c| c.offset)
                .clamp(ends.earliest, ends.latest.max(ends.earliest));
            (*p, (cursor, *ends))
        })
        .collect();
    if parts.is_empty() {
        bail!("topic {topic} does not exist");
    }
    Ok(Partitions {
        topic: topic.to_string(),
        parts,
    })
}

/// One record of a DLQ, as read: the runtime's owned record (key, value and headers byte for byte).
pub use runtime::Record as DlqRecord;

/// Reads `topic` from `from` (per partition) up to the ends read before (exclusive), in offset order per
/// partition, keeping the records `keep` accepts, at most `limit` of them. Returns the records and whether the
/// limit cut the scan short.
pub async fn scan(
    ctx: &Ctx,
    parts: &Partitions,
    from: impl Fn(i32, i64, &Ends) -> i64,
    keep: impl Fn(&DlqRecord) -> bool + Send + 'static,
    limit: usize,
) -> anyhow::Result<(Vec<DlqRecord>, bool)> {
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, (cursor, e)) in &parts.parts {
        let start = from(*p, *cursor, e).clamp(e.earliest, e.latest);
        if start < e.latest {
            tpl.add_partition_offset(&parts.topic, *p, Offset::Offset(start))?;
            ends.insert(*p, e.latest);
        }
    }
    if ends.is_empty() {
        return Ok((Vec::new(), false));
    }
    let mut config = ctx.base.clone();
    config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // librdkafka wants a group id to assign; this client never subscribes, joins or commits.
        .set("group.id", format!("{CURSOR_GROUP}-reader"));
    let topic: std::sync::Arc<str> = parts.topic.as_str().into();
    let timeout = ctx.timeout;
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<DlqRecord>, bool)> {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        consumer.assign(&tpl).context("assigning the partitions")?;
        let mut out = Vec::new();
        let mut last_progress = Instant::now();
        while !ends.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                None => {
                    if last_progress.elapsed() > timeout.max(Duration::from_secs(5)) * 3 {
                        bail!(
                            "reading {topic} made no progress for {:?} (partitions left: {:?})",
                            last_progress.elapsed(),
                            ends.keys().collect::<Vec<_>>()
                        );
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    ends.remove(&p);
                }
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let Some(end) = ends.get(&m.partition()).copied() else {
                        continue;
                    };
                    if m.offset() >= end {
                        ends.remove(&m.partition());
                        continue;
                    }
                    let record = DlqRecord::from_message(&m, topic.clone());
                    if m.offset() + 1 >= end {
                        ends.remove(&m.partition());
                    }
                    if keep(&record) {
                        if out.len() >= limit {
                            out.sort_by_key(|r: &DlqRecord| (r.partition, r.offset));
                            return Ok((out, true));
                        }
                        out.push(record);
                    }
                }
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        Ok((out, false))
    })
    .await?
}

/// The topics `list` covers by default: every DLQ and parking lot of the platform.
fn default_topics() -> Vec<String> {
    events::topics::DEAD_LETTER_TOPICS
        .iter()
        .chain(events::topics::PARKED_TOPICS.iter())
        .map(|t| t.to_string())
        .collect()
}

/// RFC 3339 (ms, UTC) of a timestamp in ms.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[derive(Debug, Serialize)]
struct Listed {
    topic: String,
    /// `dlq` or `parked`.
    kind: &'static str,
    /// Absent: the topic does not exist on the cluster.
    exists: bool,
    /// Records past the operator cursor (read; the offset difference when the scan was cut short).
    pending: i64,
    /// Records before the cursor (purged, still retained).
    purged: i64,
    oldest: Option<String>,
    newest: Option<String>,
    by_error_class: BTreeMap<String, u64>,
    by_group: BTreeMap<String, u64>,
    /// Per partition: `[cursor, end]`.
    cursors: BTreeMap<i32, (i64, i64)>,
    /// The breakdowns cover only the first `--scan-limit` records.
    truncated: bool,
}

async fn list(
    ctx: &Ctx,
    topics: Vec<String>,
    scan_limit: usize,
    json: bool,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let topics = if topics.is_empty() {
        default_topics()
    } else {
        topics
    };
    let mut rows = Vec::new();
    for topic in topics {
        let kind = if events::topics::is_parked_topic(&topic) {
            "parked"
        } else {
            "dlq"
        };
        let mut row = Listed {
            topic: topic.clone(),
            kind,
            exists: true,
            pending: 0,
            purged: 0,
            oldest: None,
            newest: None,
            by_error_class: BTreeMap::new(),
            by_group: BTreeMap::new(),
            cursors: BTreeMap::new(),
            truncated: false,
        };
        let parts = match partitions(ctx, &topic).await {
            Ok(p) => p,
            Err(e) if e.to_string().ends_with("does not exist") => {
                row.exists = false;
                rows.push(row);
                continue;
            }
            Err(e) => return Err(e),
        };
        let (records, truncated) =
            scan(ctx, &parts, |_, cursor, _| cursor, |_| true, scan_limit).await?;
        row.truncated = truncated;
        row.pending = if truncated {
            parts.pending()
        } else {
            records.len() as i64
        };
        row.purged = parts.parts.values().map(|(c, e)| c - e.earliest).sum();
        row.cursors = parts
            .parts
            .iter()
            .map(|(p, (c, e))| (*p, (*c, e.latest)))
            .collect();
        let times: Vec<i64> = records.iter().filter_map(|r| r.timestamp).collect();
        row.oldest = times.iter().min().map(|t| rfc3339(*t));
        row.newest = times.iter().max().map(|t| rfc3339(*t));
        for r in &records {
            let class = r
                .header_text(runtime::dlq::ERROR_CLASS)
                .unwrap_or_else(|| "(none)".into());
            *row.by_error_class.entry(class).or_default() += 1;
            let group = r
                .header_text(runtime::dlq::CONSUMER_GROUP)
                .unwrap_or_else(|| "(none)".into());
            *row.by_group.entry(group).or_default() += 1;
        }
        rows.push(row);
    }
    if json {
        serde_json::to_writer_pretty(&mut *io.stdout, &rows)?;
        writeln!(io.stdout)?;
        return Ok(exit::OK);
    }
    writeln!(
        io.stdout,
        "{:<52} {:>8} {:>8}  {:<24} {:<24}  BY ERROR CLASS / BY GROUP",
        "TOPIC", "PENDING", "PURGED", "OLDEST", "NEWEST"
    )?;
    for r in &rows {
        if !r.exists {
            writeln!(
                io.stdout,
                "{:<52} (missing on the cluster: `checkoutctl topics apply --env ENV` creates it)",
                r.topic
            )?;
            continue;
        }
        let fmt = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            io.stdout,
            "{:<52} {:>8} {:>8}  {:<24} {:<24}  {} / {}{}",
            r.topic,
            r.pending,
            r.purged,
            r.oldest.as_deref().unwrap_or("-"),
            r.newest.as_deref().unwrap_or("-"),
            if r.by_error_class.is_empty() {
                "-".to_string()
            } else {
                fmt(&r.by_error_class)
            },
            if r.by_group.is_empty() {
                "-".to_string()
            } else {
                fmt(&r.by_group)
            },
            if r.truncated {
                " (first records only)"
            } else {
                ""
            }
        )?;
    }
    Ok(exit::OK)
}

/// Parses `PARTITION:OFFSET`.
pub fn parse_position(s: &str) -> anyhow::Result<(i32, i64)> {
    let (p, o) = s
        .split_once(':')
        .with_context(|| format!("`{s}` is not PARTITION:OFFSET"))?;
    let p: i32 = p
        .trim()
        .parse()
        .ok()
        .filter(|p| *p >= 0)
        .with_context(|| format!("`{p}` in `{s}` is not a partition number"))?;
    let o: i64 = o
        .trim()
        .parse()
        .ok()
        .filter(|o| *o >= 0)
        .with_context(|| format!("`{o}` in `{s}` is not an offset"))?;
    Ok((p, o))
}

/// A header value as shown: text when it is UTF-8, else `0x…`.
fn header_text(v: &Option<Vec<u8>>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => s.into(),
            Err(_) => format!(
                "0x{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
            .into(),
        },
    }
}

/// The value as shown: parsed JSON when it is JSON, else text (lossy).
fn value_json(v: &Option<Vec<u8>>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into()),
    }
}

async fn show(
    ctx: &Ctx,
    topic: &str,
    position: &str,
    json: bool,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let (partition, offset) = parse_position(position)?;
    let parts = partitions(ctx, topic).await?;
    let Some((cursor, ends)) = parts.parts.get(&partition).copied() else {
        bail!("{topic} has no partition {partition}");
    };
    if offset < ends.earliest || offset >= ends.latest {
        bail!(
            "{topic}/{partition} holds offsets {}..{} (exclusive end): {offset} is not there",
            ends.earliest,
            ends.latest
        );
    }
    let one = Partitions {
        topic: topic.to_string(),
        parts: BTreeMap::from([(partition, (cursor, ends))]),
    };
    let (records, _) = scan(ctx, &one, |_, _, _| offset, move |r| r.offset == offset, 1).await?;
    let Some(r) = records.into_iter().next() else {
        bail!(
            "{topic}/{partition} has no record at offset {offset} (a transaction marker or an aborted write)"
        );
    };
    let headers: Vec<serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| serde_json::json!({ "name": k, "value": header_text(v) }))
        .collect();
    let doc = serde_json::json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp.map(rfc3339),
        "purged": r.offset < cursor,
        "key": header_text(&r.key),
        "headers": headers,
        "value": value_json(&r.value),
    });
    if json {
        writeln!(io.stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(exit::OK);
    }
    writeln!(
        io.stdout,
        "{}/{} offset {}  at {}{}",
        r.topic,
        r.partition,
        r.offset,
        r.timestamp.map_or("-".into(), rfc3339),
        if r.offset < cursor {
            "  (purged: before the operator cursor)"
        } else {
            ""
        }
    )?;
    writeln!(
        io.stdout,
        "key: {}",
        header_text(&r.key).as_str().unwrap_or("(none)")
    )?;
    writeln!(io.stdout, "headers:")?;
    for (k, v) in &r.headers {
        let v = header_text(v);
        writeln!(io.stdout, "  {k}: {}", v.as_str().unwrap_or("(null)"))?;
    }
    writeln!(io.stdout, "value:")?;
    match value_json(&r.value) {
        serde_json::Value::String(s) => writeln!(io.stdout, "{s}")?,
        other => writeln!(io.stdout, "{}", serde_json::to_string_pretty(&other)?)?,
    }
    Ok(exit::OK)
}

/// One partition of a purge plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorMove {
    pub partition: i32,
    pub cursor: i64,
    pub target: i64,
    pub end: i64,
}

/// Where `upto` moves each cursor: forward only, within `[cursor, end]`. `by_time` holds the broker's first
/// offset at or after the `--before` time per partition (`None`: no record that late, so the end).
pub fn purge_plan(
    parts: &Partitions,
    all: bool,
    through: &BTreeMap<i32, i64>,
    by_time: Option<&BTreeMap<i32, Option<i64>>>,
) -> Vec<CursorMove> {
    parts
        .parts
        .iter()
        .map(|(p, (cursor, e))| {
            let wanted = if all {
                e.latest
            } else if let Some(by_time) = by_time {
                by_time.get(p).copied().flatten().unwrap_or(e.latest)
            } else {
                through.get(p).map_or(*cursor, |o| o.saturating_add(1))
            };
            CursorMove {
                partition: *p,
                cursor: *cursor,
                target: wanted.clamp(*cursor, e.latest.max(*cursor)),
                end: e.latest,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn purge(
    ctx: &Ctx,
    topic: &str,
    upto: PurgeTo,
    execute: bool,
    operator: Option<String>,
    json: bool,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let parts = partitions(ctx, topic).await?;
    let mut through = BTreeMap::new();
    for t in &upto.through {
        let (p, o) = parse_position(t)?;
        if !parts.parts.contains_key(&p) {
            bail!("{topic} has no partition {p}");
        }
        through.insert(p, o);
    }
    let by_time = match &upto.before {
        None => None,
        Some(s) => {
            let ms = crate::dlq_replay::parse_time(s, lag::read::now_ms())?;
            let tps: Vec<Tp> = parts
                .parts
                .keys()
                .map(|p| (topic.to_string(), *p))
                .collect();
            let found = crate::groups_reset::offsets_for_time(
                ctx.base.clone(),
                tps.iter(),
                ms,
                ctx.timeout,
            )
            .await?;
            Some(found.into_iter().map(|((_, p), o)| (p, o)).collect())
        }
    };
    let moves = purge_plan(&parts, upto.all, &through, by_time.as_ref());
    let purged: i64 = moves.iter().map(|m| m.target - m.cursor).sum();
    if execute {
        let pool = ctx.pool().await?;
        let actor = crate::groups_reset::actor_or_user(operator);
        let selection = serde_json::json!({
            "all": upto.all, "through": upto.through, "before": upto.before,
        });
        crate::groups_reset::record_action(
            &pool,
            &actor,
            "dlq.purge",
            topic,
            serde_json::json!({ "selection": selection, "records": purged, "moves": moves }),
        )
        .await?;
        let mut tpl = TopicPartitionList::new();
        for m in moves.iter().filter(|m| m.target != m.cursor) {
            tpl.add_partition_offset(topic, m.partition, Offset::Offset(m.target))?;
        }
        if tpl.count() > 0 {
            crate::groups_reset::commit_as_group(ctx.base.clone(), CURSOR_GROUP, tpl).await?;
        }
    }
    if json {
        let doc = serde_json::json!({
            "topic": topic, "executed": execute, "records": purged, "moves": moves,
        });
        writeln!(io.stdout, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(exit::OK);
    }
    writeln!(
        io.stdout,
        "{:>9} {:>12} {:>12} {:>12} {:>8}",
        "PARTITION", "CURSOR", "TARGET", "END", "PURGED"
    )?;
    for m in &moves {
        writeln!(
            io.stdout,
            "{:>9} {:>12} {:>12} {:>12} {:>8}",
            m.partition,
            m.cursor,
            m.target,
            m.end,
            m.target - m.cursor
        )?;
    }
    if execute {
        writeln!(
            io.stdout,
            "purged: the operator cursor of {topic} moved past {purged} record(s) ({CURSOR_GROUP}); nothing was \
             deleted; recorded in operator_actions"
        )?;
    } else {
        writeln!(
            io.stdout,
            "dry run: would move the cursor past {purged} record(s); nothing changed; pass --execute to apply"
        )?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Partitions {
        Partitions {
            topic: "t.dlq".into(),
            parts: BTreeMap::from([
                (
                    0,
                    (
                        4,
                        Ends {
                            earliest: 0,
                            latest: 10,
                        },
                    ),
                ),
                (
                    1,
                    (
                        2,
                        Ends {
                            earliest: 2,
                            latest: 2,
                        },
                    ),
                ),
            ]),
        }
    }

    fn targets(moves: Vec<CursorMove>) -> Vec<i64> {
        moves.iter().map(|m| m.target).collect()
    }

    #[test]
    fn positions_parse_and_refuse_junk() {
        assert_eq!(parse_position("3:42").unwrap(), (3, 42));
        for bad in ["3", "x:1", "1:x", "-1:2", "1:-2", ""] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purge_only_moves_forward_within_the_log() {
        let p = parts();
        assert_eq!(p.pending(), 6);
        assert_eq!(
            targets(purge_plan(&p, true, &BTreeMap::new(), None)),
            [10, 2]
        );
        // Through offset 6 of partition 0: the cursor goes to 7; partition 1 is untouched.
        let through = BTreeMap::from([(0, 6)]);
        assert_eq!(targets(purge_plan(&p, false, &through, None)), [7, 2]);
        // Never backwards, never past the end.
        assert_eq!(
            targets(purge_plan(&p, false, &BTreeMap::from([(0, 1)]), None)),
            [4, 2]
        );
        assert_eq!(
            targets(purge_plan(&p, false, &BTreeMap::from([(0, 99)]), None)),
            [10, 2]
        );
        let by_time = BTreeMap::from([(0, Some(8)), (1, None)]);
        assert_eq!(
            targets(purge_plan(&p, false, &BTreeMap::new(), Some(&by_time))),
            [8, 2]
        );
    }
}
