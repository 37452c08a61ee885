//! `checkoutctl dr failover`: moves the platform's consumer groups onto the disaster-recovery cluster that Kafka's
//! MirrorMaker 2 fills from the primary (decision 0039, `docs/runbooks/dr-failover.md`).
//!
//! Guarantees:
//! - **Dry run by default**: the plan (per group and partition: the primary's position, the translated DR
//!   position, how it was translated) is printed; nothing changes without `--execute`.
//! - **Nothing skipped, duplicates allowed**: every translated position is at or *before* the DR copy of the
//!   first record the group had not yet processed on the primary. Kafka-committed groups take MirrorMaker's
//!   checkpoints (`<source>.checkpoints.internal`, whose downstream offsets MirrorMaker computes that way);
//!   the database-positioned groups (mode (b): settlement, analytics — MirrorMaker never sees their positions)
//!   are translated here from the offset syncs (`mm2-offset-syncs.<source>.internal`, kept on the DR cluster) with
//!   MirrorMaker's own rule ([`translate`]): the last sync at or below the position, plus one when past it. The
//!   records between are replayed; the services' idempotency (decision 0007) absorbs them. A position older than
//!   every sync, and a partition of a checkpointed topic without a checkpoint, go to the partition's earliest
//!   offset (`upstream` -1 in the plan: unknown). Every target is clamped to the DR partition's
//!   `[earliest, end]`. A group with database positions is planned from them alone (its Kafka commits, which
//!   MirrorMaker also checkpoints, are not what it resumes from).
//! - **Only empty groups are moved**: `--execute` is refused while a group has members on the DR cluster.
//! - **Once**: an executed failover is recorded in `operator_actions` (action `dr.failover`, subject the source
//!   alias) in the transaction that rewrites the database positions; a second `--execute` for the same source is
//!   refused (it would translate DR positions as if they were the primary's) unless `--repeat` says the operator
//!   restored the primary positions first.
//! - **Reads only the DR cluster**: the primary is presumed dead.
//!
//! Exit codes: 0 the plan was printed (or applied); 1 some group cannot be moved (members on the DR cluster, or
//! already failed over); 2 the command could not run (unreachable cluster or database, no checkpoints topic).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail};
use lag::tracker::{Ends, Tp};
use lag::{GroupSpec, OffsetSource, Reader};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;

use crate::{Io, Run, block_on, exit};

/// Disaster recovery: fail the consumer groups over to the DR cluster mirrored by MirrorMaker 2.
#[derive(Debug, clap::Args)]
pub struct DrArgs {
    #[command(subcommand)]
    command: DrCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DrCommand {
    /// Translate every consumer group's position from the primary to the DR cluster and commit it there (dry run
    /// unless --execute); prints the bootstrap servers to switch the services to.
    ///
    /// Kafka-committed groups take MirrorMaker 2's checkpoints (`<source>.checkpoints.internal` on the DR
    /// cluster); groups whose positions are in PostgreSQL (`consumer_offsets`: settlement-processing,
    /// analytics-aggregation) are translated with the offset syncs (`mm2-offset-syncs.<source>.internal`, on the
    /// DR cluster). Translation never skips a record; some are replayed, and idempotency absorbs them. Stop the
    /// services first; start them afterwards with KAFKA_BOOTSTRAP_SERVERS set to the DR cluster.
    ///
    /// Exit codes: 0 planned (or applied), 1 a group cannot be moved (members on the DR cluster, or this source
    /// already failed over), 2 could not run.
    Failover(FailoverArgs),
}

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Bootstrap servers of the DR cluster (the services' new KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long, env = "DR_BOOTSTRAP_SERVERS")]
    dr_bootstrap_servers: String,
    /// MirrorMaker 2's alias of the primary cluster (names the checkpoints and offset-syncs topics).
    #[arg(long, default_value = "primary")]
    source_alias: String,
    /// PostgreSQL URL: the database-positioned groups' `consumer_offsets`, and the record in operator_actions.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Only these groups (repeatable); default: every group with a checkpoint or a database position.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Apply the plan: commit the Kafka groups' positions on the DR cluster, rewrite consumer_offsets.
    #[arg(long)]
    execute: bool,
    /// Allow a second --execute for the same source alias (only after restoring the primary's positions).
    #[arg(long)]
    repeat: bool,
    /// Who is failing over (recorded); default $USER.
    #[arg(long)]
    actor: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Bound of each broker request, and of reading each internal topic.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

impl Run for DrArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        match self.command {
            DrCommand::Failover(args) => match block_on(failover_cmd(&args, io)) {
                Ok(code) => Ok(code),
                Err(error) if args.json => {
                    writeln!(
                        io.stdout,
                        "{}",
                        serde_json::json!({"ok": false, "error": format!("{error:#}")})
                    )?;
                    Ok(exit::FAILURE)
                }
                Err(error) => Err(error),
            },
        }
    }
}

/// One MirrorMaker 2 checkpoint: group `group`'s position `upstream` in `topic`/`partition` on the source is
/// `downstream` on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub upstream: i64,
    pub downstream: i64,
    pub metadata: String,
}

/// One MirrorMaker 2 offset sync: the record at `upstream` in `topic`/`partition` is at `downstream` on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffsetSync {
    pub upstream: i64,
    pub downstream: i64,
}

/// Why a record of an internal topic could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record truncated: {0}")]
    Truncated(&'static str),
    #[error("unknown checkpoint version {0}")]
    Version(i16),
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("{0} bytes left over")]
    Trailing(usize),
}

/// A reader of Kafka's protocol types (big-endian; STRING = INT16 length + UTF-8), which MirrorMaker uses for
/// its internal topics.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(String::new()); // a null string
        }
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Utf8)
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.0.len()))
        }
    }
}

/// Decodes a record of `<source>.checkpoints.internal` (MirrorMaker's `Checkpoint`: key {group, topic,
/// partition}, value {version INT16} then {upstreamOffset INT64, offset INT64, metadata STRING}).
pub fn decode_checkpoint(key: &[u8], value: &[u8]) -> Result<Checkpoint, DecodeError> {
    let mut k = Bytes(key);
    let group = k.string("group")?;
    let topic = k.string("topic")?;
    let partition = k.i32("partition")?;
    k.end()?;
    let mut v = Bytes(value);
    let version = v.i16("version")?;
    if version != 0 {
        return Err(DecodeError::Version(version));
    }
    let upstream = v.i64("upstream offset")?;
    let downstream = v.i64("downstream offset")?;
    let metadata = v.string("metadata")?;
    v.end()?;
    Ok(Checkpoint {
        group,
        topic,
        partition,
        upstream,
        downstream,
        metadata,
    })
}

/// Decodes a record of `mm2-offset-syncs.<source>.internal` (MirrorMaker's `OffsetSync`: key {topic,
/// partition}, value {upstreamOffset INT64, offset INT64}).
pub fn decode_offset_sync(key: &[u8], value: &[u8]) -> Result<(Tp, OffsetSync), DecodeError> {
    let mut k = Bytes(key);
    let topic = k.string("topic")?;
    let partition = k.i32("partition")?;
    k.end()?;
    let mut v = Bytes(value);
    let upstream = v.i64("upstream offset")?;
    let downstream = v.i64("downstream offset")?;
    v.end()?;
    Ok((
        (topic, partition),
        OffsetSync {
            upstream,
            downstream,
        },
    ))
}

/// MirrorMaker 2's translation of source position `upstream` (the next record to read) with `syncs` (any
/// order): the last sync at or below it gives the target offset of that record; past it, the position goes one
/// beyond (the records between are replayed, never skipped). `None` when every sync is above the position.
pub fn translate(syncs: &[OffsetSync], upstream: i64) -> Option<i64> {
    let sync = syncs
        .iter()
        .filter(|s| s.upstream <= upstream)
        .max_by_key(|s| (s.upstream, s.downstream))?;
    Some(if sync.upstream == upstream {
        sync.downstream
    } else {
        sync.downstream + 1
    })
}

/// How a target position was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// MirrorMaker's checkpoint.
    Checkpoint,
    /// Translated here from the offset syncs.
    OffsetSync,
    /// No sync at or below the position: the DR partition's earliest offset (everything replayed).
    Earliest,
}

/// One partition of a group's move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The group's position on the primary (-1: unknown, no checkpoint for this partition).
    pub upstream: i64,
    /// Its position on the DR cluster (clamped to the partition's `[earliest, end]`).
    pub target: i64,
    pub source: Source,
}

/// One group's plan.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPlan {
    pub group: String,
    pub offsets: OffsetSource,
    /// Members on the DR cluster now (a group with members cannot be moved).
    pub members: usize,
    pub moves: Vec<Move>,
}

/// The whole failover.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub dr_bootstrap_servers: String,
    pub source_alias: String,
    pub checkpoints_topic: String,
    pub offset_syncs_topic: String,
    pub groups: Vec<GroupPlan>,
    pub executed: bool,
}

/// What the internal topics hold: the last checkpoint per (group, topic, partition) and every offset sync.
#[derive(Debug, Default)]
pub struct Mirror {
    pub checkpoints: BTreeMap<(String, Tp), Checkpoint>,
    pub syncs: BTreeMap<Tp, Vec<OffsetSync>>,
}

/// A record's key and value.
type KeyValue = (Vec<u8>, Vec<u8>);

fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Reads `topic` of the cluster at `bootstrap` from its beginning to its end as of now, every partition;
/// `None` when the topic does not exist.
fn read_all(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Option<Vec<KeyValue>>> {
    let consumer: BaseConsumer = base_config(bootstrap)
        .set("group.id", "checkoutctl-dr-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} on {bootstrap}"))?;
    let Some(t) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .with_context(|| format!("reading the end of {topic}/{}", p.id()))?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(Some(records));
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        if std::time::Instant::now() > deadline {
            bail!("reading {topic} did not reach its end within {timeout:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("reading {topic}"))?;
        next.insert(message.partition(), message.offset() + 1);
        if let (Some(k), Some(v)) = (message.key(), message.payload()) {
            records.push((k.to_vec(), v.to_vec()));
        }
    }
    Ok(Some(records))
}

/// The checkpoints topic of `alias` (IdentityReplicationPolicy and the default one name it alike).
pub fn checkpoints_topic(alias: &str) -> String {
    format!("{alias}.checkpoints.internal")
}

/// The offset-syncs topic of `alias` when MirrorMaker keeps it on the target (`offset-syncs.topic.location =
/// target`).
pub fn offset_syncs_topic(alias: &str) -> String {
    format!("mm2-offset-syncs.{alias}.internal")
}

/// Reads the checkpoints and offset syncs MirrorMaker left on the DR cluster. The checkpoints topic must exist
/// (without it there is no MirrorMaker to fail over from); a missing offset-syncs topic leaves `syncs` empty.
pub async fn read_mirror(dr: &str, alias: &str, timeout: Duration) -> anyhow::Result<Mirror> {
    let (dr, alias) = (dr.to_string(), alias.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Mirror> {
        let mut mirror = Mirror::default();
        let topic = checkpoints_topic(&alias);
        let records = read_all(&dr, &topic, timeout)?.with_context(|| {
            format!("{topic} does not exist on {dr}: is MirrorMaker 2 replicating `{alias}` there?")
        })?;
        for (k, v) in records {
            let c = decode_checkpoint(&k, &v).with_context(|| format!("a record of {topic}"))?;
            // Records of a key are in order in its partition: the last one wins.
            mirror
                .checkpoints
                .insert((c.group.clone(), (c.topic.clone(), c.partition)), c);
        }
        let topic = offset_syncs_topic(&alias);
        for (k, v) in read_all(&dr, &topic, timeout)?.unwrap_or_default() {
            let (tp, sync) =
                decode_offset_sync(&k, &v).with_context(|| format!("a record of {topic}"))?;
            mirror.syncs.entry(tp).or_default().push(sync);
        }
        Ok(mirror)
    })
    .await?
}

/// The database positions (`consumer_offsets`) of `groups` (all when empty).
async fn database_positions(
    pool: &PgPool,
    groups: &[String],
) -> anyhow::Result<BTreeMap<String, BTreeMap<Tp, i64>>> {
    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT consumer_group, topic, partition, next_offset FROM consumer_offsets \
         WHERE cardinality($1::text[]) = 0 OR consumer_group = ANY($1) ORDER BY 1, 2, 3",
    )
    .bind(groups)
    .fetch_all(pool)
    .await
    .context("reading consumer_offsets")?;
    let mut out: BTreeMap<String, BTreeMap<Tp, i64>> = BTreeMap::new();
    for (g, t, p, o) in rows {
        out.entry(g).or_default().insert((t, p), o);
    }
    Ok(out)
}

/// Builds the plan (reads only).
pub async fn plan(
    dr: &str,
    alias: &str,
    pool: Option<&PgPool>,
    only: &[String],
    timeout: Duration,
) -> anyhow::Result<Plan> {
    let mirror = read_mirror(dr, alias, timeout).await?;
    // Kafka-committed groups: their checkpoints.
    let mut kafka_groups: BTreeMap<String, BTreeMap<Tp, (i64, i64)>> = BTreeMap::new();
    for ((group, tp), c) in &mirror.checkpoints {
        if only.is_empty() || only.contains(group) {
            kafka_groups
                .entry(group.clone())
                .or_default()
                .insert(tp.clone(), (c.upstream, c.downstream));
        }
    }
    let db_groups = match pool {
        Some(pool) => database_positions(pool, only).await?,
        None => BTreeMap::new(),
    };
    // A database-positioned group resumes from consumer_offsets only; its Kafka commits (kept for monitoring)
    // are not what it reads from, so its checkpoints are not part of the plan.
    kafka_groups.retain(|g, _| !db_groups.contains_key(g));
    let topics: BTreeSet<String> = kafka_groups
        .values()
        .flat_map(|m| m.keys().map(|(t, _)| t.clone()))
        .chain(
            db_groups
                .values()
                .flat_map(|m| m.keys().map(|(t, _)| t.clone())),
        )
        .collect();
    let reader = Reader::new(base_config(dr), timeout).context("creating a Kafka client")?;
    let specs: Vec<GroupSpec> = kafka_groups
        .keys()
        .map(|g| (g, OffsetSource::Kafka))
        .chain(db_groups.keys().map(|g| (g, OffsetSource::Database)))
        .map(|(g, offsets)| GroupSpec {
            group: g.clone(),
            topics: topics.iter().cloned().collect(),
            offsets,
        })
        .collect();
    let snapshot = reader
        .snapshot(&specs, pool)
        .await
        .context("reading the DR cluster's partitions and groups")?;
    let clamp = |tp: &Tp, offset: i64| -> anyhow::Result<i64> {
        let ends: &Ends = snapshot.ends.get(tp).with_context(|| {
            format!(
                "{}/{} does not exist on the DR cluster: has MirrorMaker replicated it?",
                tp.0, tp.1
            )
        })?;
        Ok(offset.clamp(ends.earliest, ends.latest.max(ends.earliest)))
    };
    let members = |group: &str| {
        snapshot
            .groups
            .iter()
            .find(|(s, _)| s.group == group)
            .and_then(|(_, r)| r.as_ref().ok().map(|r| r.members))
            .unwrap_or(0)
    };
    let mut groups = Vec::new();
    for (group, positions) in &kafka_groups {
        let mut moves = Vec::new();
        for (tp, (upstream, downstream)) in positions {
            moves.push(Move {
                topic: tp.0.clone(),
                partition: tp.1,
                upstream: *upstream,
                target: clamp(tp, *downstream)?,
                source: Source::Checkpoint,
            });
        }
        // A partition of the same topics without a checkpoint (nothing translatable yet when the primary died):
        // its earliest offset, explicitly — never the consumer's reset policy, which may say "latest".
        let group_topics: BTreeSet<&String> = positions.keys().map(|(t, _)| t).collect();
        for (tp, ends) in &snapshot.ends {
            if group_topics.contains(&tp.0) && !positions.contains_key(tp) {
                moves.push(Move {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    upstream: -1,
                    target: ends.earliest,
                    source: Source::Earliest,
                });
            }
        }
        moves.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        groups.push(GroupPlan {
            group: group.clone(),
            offsets: OffsetSource::Kafka,
            members: members(group),
            moves,
        });
    }
    for (group, positions) in &db_groups {
        let mut moves = Vec::new();
        for (tp, upstream) in positions {
            let syncs = mirror.syncs.get(tp).map(Vec::as_slice).unwrap_or_default();
            let (target, source) = match translate(syncs, *upstream) {
                Some(d) => (clamp(tp, d)?, Source::OffsetSync),
                None => (clamp(tp, 0)?, Source::Earliest),
            };
            moves.push(Move {
                topic: tp.0.clone(),
                partition: tp.1,
                upstream: *upstream,
                target,
                source,
            });
        }
        groups.push(GroupPlan {
            group: group.clone(),
            offsets: OffsetSource::Database,
            members: members(group),
            moves,
        });
    }
    Ok(Plan {
        dr_bootstrap_servers: dr.to_string(),
        source_alias: alias.to_string(),
        checkpoints_topic: checkpoints_topic(alias),
        offset_syncs_topic: offset_syncs_topic(alias),
        groups,
        executed: false,
    })
}

/// Why `--execute` was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("group {group} has {members} member(s) on the DR cluster: stop its consumers first")]
    Members { group: String, members: usize },
    #[error(
        "source `{0}` was already failed over (operator_actions); a second translation would treat DR positions \
         as the primary's — pass --repeat only after restoring the primary's positions"
    )]
    AlreadyFailedOver(String),
}

/// Applies `plan`: records it and rewrites the database positions in one transaction, then commits the Kafka
/// groups' positions on the DR cluster as each group (without joining it). `Err(Refusal)` (inside the anyhow
/// error) when a group has members or the source already failed over (and `!repeat`).
pub async fn execute(
    plan: &mut Plan,
    pool: &PgPool,
    actor: &str,
    repeat: bool,
) -> anyhow::Result<()> {
    if let Some(g) = plan.groups.iter().find(|g| g.members > 0) {
        return Err(Refusal::Members {
            group: g.group.clone(),
            members: g.members,
        }
        .into());
    }
    let mut tx = pool.begin().await?;
    // One failover per source at a time: serialise concurrent runs on the record.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dr.failover:' || $1))")
        .bind(&plan.source_alias)
        .execute(&mut *tx)
        .await?;
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operator_actions WHERE action = 'dr.failover' AND subject = $1",
    )
    .bind(&plan.source_alias)
    .fetch_one(&mut *tx)
    .await
    .context("reading operator_actions")?;
    if done > 0 && !repeat {
        return Err(Refusal::AlreadyFailedOver(plan.source_alias.clone()).into());
    }
    sqlx::query(
        "INSERT INTO operator_actions (actor, action, subject, details) VALUES ($1, 'dr.failover', $2, $3)",
    )
    .bind(actor)
    .bind(&plan.source_alias)
    .bind(serde_json::to_value(&*plan)?)
    .execute(&mut *tx)
    .await
    .context("recording the failover in operator_actions")?;
    for g in plan
        .groups
        .iter()
        .filter(|g| g.offsets == OffsetSource::Database)
    {
        for m in &g.moves {
            sqlx::query(
                "UPDATE consumer_offsets SET next_offset = $4, ahead = '{}', generation = generation + 1, \
                 updated_at = now() WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            )
            .bind(&g.group)
            .bind(&m.topic)
            .bind(m.partition)
            .bind(m.target)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("moving {} in consumer_offsets", g.group))?;
        }
    }
    tx.commit().await?;
    let dr = plan.dr_bootstrap_servers.clone();
    let kafka: Vec<(String, Vec<Move>)> = plan
        .groups
        .iter()
        .filter(|g| g.offsets == OffsetSource::Kafka)
        .map(|g| (g.group.clone(), g.moves.clone()))
        .collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (group, moves) in kafka {
            let mut tpl = TopicPartitionList::new();
            for m in &moves {
                tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.target))?;
            }
            let consumer: BaseConsumer = base_config(&dr)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .context("creating a Kafka client")?;
            consumer.commit(&tpl, CommitMode::Sync).with_context(|| {
                format!("committing the positions of {group} on the DR cluster")
            })?;
        }
        Ok(())
    })
    .await??;
    plan.executed = true;
    Ok(())
}

async fn failover_cmd(args: &FailoverArgs, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let pool = match &args.database_url {
        Some(url) => Some(
            PgPool::connect(url)
                .await
                .context("connecting to DATABASE_URL")?,
        ),
        None if args.execute => {
            bail!(
                "DATABASE_URL is not set: it holds the database-positioned groups and the failover record"
            )
        }
        None => None,
    };
    let mut plan = plan(
        &args.dr_bootstrap_servers,
        &args.source_alias,
        pool.as_ref(),
        &args.groups,
        args.timeout,
    )
    .await?;
    let mut refused = None;
    if args.execute {
        let actor = args
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
        match execute(
            &mut plan,
            pool.as_ref().expect("checked"),
            &actor,
            args.repeat,
        )
        .await
        {
            Ok(()) => {}
            Err(e) => match e.downcast::<Refusal>() {
                Ok(r) => refused = Some(r.to_string()),
                Err(e) => return Err(e),
            },
        }
    }
    if args.json {
        let mut value = serde_json::to_value(&plan)?;
        value["ok"] = serde_json::Value::Bool(refused.is_none());
        if let Some(r) = &refused {
            value["refused"] = serde_json::Value::String(r.clone());
        }
        writeln!(io.stdout, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        print_plan(&plan, io)?;
    }
    if let Some(r) = refused {
        writeln!(io.stderr, "refused: {r}")?;
        return Ok(exit::INVALID);
    }
    Ok(exit::OK)
}

fn print_plan(plan: &Plan, io: &mut Io<'_>) -> anyhow::Result<()> {
    writeln!(
        io.stdout,
        "{:<40} {:<9} {:<40} {:>4} {:>12} {:>12} {:<11}",
        "GROUP", "OFFSETS", "TOPIC", "PART", "PRIMARY", "DR", "FROM"
    )?;
    for g in &plan.groups {
        let offsets = match g.offsets {
            OffsetSource::Kafka => "kafka",
            OffsetSource::Database => "database",
        };
        for m in &g.moves {
            let from = match m.source {
                Source::Checkpoint => "checkpoint",
                Source::OffsetSync => "offset-sync",
                Source::Earliest => "earliest",
            };
            writeln!(
                io.stdout,
                "{:<40} {:<9} {:<40} {:>4} {:>12} {:>12} {:<11}",
                g.group, offsets, m.topic, m.partition, m.upstream, m.target, from
            )?;
        }
        if g.members > 0 {
            writeln!(
                io.stdout,
                "  ! {} has {} member(s) on the DR cluster",
                g.group, g.members
            )?;
        }
    }
    if plan.executed {
        writeln!(
            io.stdout,
            "applied: {} group(s) moved to the DR cluster; recorded in operator_actions",
            plan.groups.len()
        )?;
    } else {
        writeln!(
            io.stdout,
            "dry run: nothing changed; pass --execute to apply"
        )?;
    }
    writeln!(
        io.stdout,
        "switch the services to the DR cluster:\n  KAFKA_BOOTSTRAP_SERVERS={}",
        plan.dr_bootstrap_servers
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(upstream: i64, downstream: i64) -> OffsetSync {
        OffsetSync {
            upstream,
            downstream,
        }
    }

    #[test]
    fn translation_never_skips() {
        // Upstream 0..=9 mirrored to 0..=9, then a transaction marker upstream (10) not mirrored: 11 → 10.
        let syncs = [s(0, 0), s(5, 5), s(11, 10), s(20, 19)];
        assert_eq!(translate(&syncs, 0), Some(0));
        assert_eq!(translate(&syncs, 5), Some(5));
        // Past a sync: one beyond its record (replays 6..).
        assert_eq!(translate(&syncs, 9), Some(6));
        assert_eq!(translate(&syncs, 11), Some(10));
        assert_eq!(translate(&syncs, 25), Some(20));
        assert_eq!(translate(&[s(3, 0)], 2), None);
        assert_eq!(translate(&[], 2), None);
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as i16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The bytes MirrorMaker 2 itself (connect-mirror-client 4.3.1: `new Checkpoint("settlement-processing",
    /// new TopicPartition("crypto-checkout.domain-events", 7), 1500, 1234, "").recordKey()/recordValue()`, and
    /// `new OffsetSync(tp, 1400, 1150)`) writes, captured with Kafka's own classes.
    const CHECKPOINT_KEY: &str = "0015736574746c656d656e742d70726f63657373696e67001d63727970746f2d636865636b6f75742e646f6d61696e2d6576656e747300000007";
    const CHECKPOINT_VALUE: &str = "000000000000000005dc00000000000004d20000";
    const SYNC_KEY: &str = "001d63727970746f2d636865636b6f75742e646f6d61696e2d6576656e747300000007";
    const SYNC_VALUE: &str = "0000000000000578000000000000047e";

    #[test]
    fn decodes_what_mirror_maker_writes() {
        assert_eq!(
            decode_checkpoint(&hex(CHECKPOINT_KEY), &hex(CHECKPOINT_VALUE)).unwrap(),
            Checkpoint {
                group: "settlement-processing".into(),
                topic: "crypto-checkout.domain-events".into(),
                partition: 7,
                upstream: 1500,
                downstream: 1234,
                metadata: String::new(),
            }
        );
        assert_eq!(
            decode_offset_sync(&hex(SYNC_KEY), &hex(SYNC_VALUE)).unwrap(),
            (
                ("crypto-checkout.domain-events".to_string(), 7),
                OffsetSync {
                    upstream: 1400,
                    downstream: 1150
                }
            )
        );
    }

    #[test]
    fn decoding_rejects_bad_records() {
        let mut key = Vec::new();
        string(&mut key, "g");
        string(&mut key, "t");
        key.extend_from_slice(&3i32.to_be_bytes());
        let mut value = 1i16.to_be_bytes().to_vec();
        value.extend_from_slice(&[0; 18]);
        assert_eq!(
            decode_checkpoint(&key, &value),
            Err(DecodeError::Version(1))
        );
        assert!(matches!(
            decode_checkpoint(&key, &0i16.to_be_bytes()),
            Err(DecodeError::Truncated(_))
        ));
        let mut long_key = Vec::new();
        string(&mut long_key, "t");
        long_key.extend_from_slice(&3i32.to_be_bytes());
        long_key.push(0);
        assert_eq!(
            decode_offset_sync(&long_key, &[0; 16]),
            Err(DecodeError::Trailing(1))
        );
    }
}
