//! `checkoutctl topics backup` and `checkoutctl topics restore`: the spec's "Topic Corruption → restore from
//! backup" row (RTO < 2 h, RPO < 15 min; decision 0041, runbook docs/runbooks/topic-restore.md).
//!
//! Backup guarantees:
//! - **Independent of the broker's state**: it resumes from its own checkpoint (the manifest of
//!   [`crate::backup_format`]), never from a consumer group; it reads with `isolation.level=read_committed`
//!   through an assigned, group-less consumer, so it commits nothing and is no member of any group.
//! - **RPO bound**: everything read is made durable (segments fsynced, then the manifest renamed into place) at
//!   least every `--flush-interval`, and on SIGTERM / Ctrl-C before exiting; the backup's RPO is that interval
//!   plus its lag (shown in the progress lines).
//! - **No gap, no duplicate across restarts**: a killed backup continues from the last manifest; what it wrote
//!   after it is cut away and copied again. Records removed by retention before the backup read them are
//!   recorded as gaps in the manifest and reported loudly.
//! - **Group positions kept**: at each flush the Kafka-committed positions of the groups consuming each topic
//!   are copied into the manifest, because deleting a topic deletes its committed offsets.
//! - **Bounded memory**: the consumer's queue is bounded (`queued.max.messages.kbytes`) and records go straight
//!   to buffered files.
//!
//! Restore guarantees:
//! - **Checked first**: the whole backup of the topic is read and checked before anything is written; a missing
//!   or truncated segment, a line out of order, or a manifest gap refuses the restore (gaps only with
//!   `--allow-gaps`).
//! - **Same partitions, same order**: the target is created with the topology's settings for `--env` and the
//!   backup's partition count; every record goes to its source partition, in source-offset order, with its
//!   key, value, headers and timestamp, through an idempotent producer (`acks=all`), so a retry never doubles
//!   or reorders a record. A target that already holds records is refused unless `--force`.
//! - **Offset map**: every record's source offset → target offset is written to a CSV beside the backup.
//! - **Groups repointed without skipping**: `--repoint-groups` moves each group's position `P` (a source
//!   offset) to the target offset of the first restored record at or after `P` (the end if none): nothing the
//!   group had not processed is skipped; records of the group already processed after the last backup flush are
//!   replayed and absorbed by idempotency. Positions come from PostgreSQL (`consumer_offsets`, mode (b)
//!   groups), else the live Kafka commit, else the backup's copy, else the start. Only groups with no member
//!   are moved (checked before the restore and again before moving); the move is recorded in
//!   `operator_actions` (action `topics.restore`).
//!
//! Exit codes (`--help`): 0 done, 1 refused (target has data, active group, damaged backup), 2 could not run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lag::OffsetSource;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;

use crate::backup_format::{self as format, FormatError, Header, Manifest, Record, TopicDir};
use crate::groups_reset::{actor_or_user, commit_as_group, record_action};
use crate::{Io, exit};

/// The exit codes of backup and restore, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done (backup: stopped by --once reaching the end, SIGTERM or Ctrl-C after a final flush)
  1  refused: the target topic holds records (restore without --force), a group to repoint has active
     members, the backup is damaged or has gaps (restore without --allow-gaps)
  2  could not run (unreachable cluster or database, unreadable directory, bad arguments)";

/// Why a restore was refused (exit 1), as opposed to failing to run (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "target topic {topic} is not empty ({records} offset(s) in use): restoring would interleave its records \
         with the backup's; pass --force to append anyway, or restore into a fresh topic (--into)"
    )]
    TargetHasData { topic: String, records: i64 },
    #[error(
        "target topic {topic} has {actual} partition(s), the backup {expected}: keys would land on other \
         partitions"
    )]
    Partitions {
        topic: String,
        actual: i32,
        expected: i32,
    },
    #[error(
        "group {group} has {members} active member(s): stop its consumers before repointing it"
    )]
    ActiveGroup { group: String, members: usize },
    #[error("the backup is damaged: {0}")]
    Damaged(#[from] FormatError),
    #[error(
        "the backup of {topic} has gaps (records removed by retention before they were copied): {gaps}; pass \
         --allow-gaps to restore what there is"
    )]
    Gaps { topic: String, gaps: String },
}

// ------------------------------------------------------------------------------------------------ backup

/// What `topics backup` does.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub dir: PathBuf,
    pub topics: Vec<String>,
    /// Groups whose Kafka-committed positions are kept, per topic (besides the platform's own).
    pub extra_groups: Vec<String>,
    pub flush_interval: Duration,
    pub progress_interval: Duration,
    pub segment_bytes: u64,
    pub once: bool,
}

/// What a backup run copied.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub dir: PathBuf,
    pub topics: Vec<TopicSummary>,
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    pub flushes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicSummary {
    pub topic: String,
    pub partitions: i32,
    /// Records copied by this run.
    pub records: u64,
    /// Records in the backup, all runs.
    pub total_records: u64,
    /// Per partition, the next source offset to copy.
    pub next_offsets: BTreeMap<i32, i64>,
    pub gaps: usize,
}

fn partition_count(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> anyhow::Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} does not exist"))?;
    if t.error().is_some() || t.partitions().is_empty() {
        bail!("topic {topic} does not exist ({:?})", t.error());
    }
    Ok(t.partitions().len() as i32)
}

/// The groups of the platform that consume `topic` with Kafka-committed positions, plus `extra`.
fn kafka_groups_of(topic: &str, extra: &[String]) -> Vec<String> {
    let mut groups: BTreeSet<String> = lag::platform_groups()
        .into_iter()
        .filter(|g| g.offsets == OffsetSource::Kafka && g.topics.iter().any(|t| t == topic))
        .map(|g| g.group)
        .collect();
    groups.extend(extra.iter().cloned());
    groups.into_iter().collect()
}

/// The Kafka-committed positions of `group` in `topic` (partitions without a commit are absent).
fn committed_positions(
    base: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let read = consumer
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("reading the committed offsets of {group}"))?;
    Ok(read
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Active members of `group` (0 when the broker does not know it).
fn members(base: &ClientConfig, group: &str, timeout: Duration) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = base.clone().create().context("creating a Kafka client")?;
    let list = consumer
        .fetch_group_list(Some(group), timeout)
        .with_context(|| format!("describing group {group}"))?;
    Ok(list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum())
}

fn record_of(message: &impl Message) -> Record {
    let (timestamp, timestamp_type) = match message.timestamp() {
        Timestamp::CreateTime(t) => (Some(t), "create"),
        Timestamp::LogAppendTime(t) => (Some(t), "log_append"),
        Timestamp::NotAvailable => (None, "none"),
    };
    Record {
        partition: message.partition(),
        offset: message.offset(),
        timestamp,
        timestamp_type: timestamp_type.into(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| Header {
                        name: h.key.to_string(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Runs the backup until `--once` reached the end of every partition, or SIGTERM / Ctrl-C; flushes before it
/// returns. Progress lines go to `progress`.
pub async fn backup(
    base: ClientConfig,
    options: BackupOptions,
    progress: &mut dyn std::io::Write,
) -> anyhow::Result<BackupSummary> {
    let timeout = Duration::from_secs(15);
    let started = Instant::now();
    let meta: BaseConsumer = base.clone().create().context("creating a Kafka client")?;
    let mut dirs: BTreeMap<String, TopicDir> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for topic in &options.topics {
        let partitions = partition_count(&meta, topic, timeout)?;
        let mut dir = TopicDir::open(
            &format::topic_dir(&options.dir, topic),
            topic,
            partitions,
            options.segment_bytes,
        )
        .with_context(|| format!("opening the backup of {topic}"))?;
        for p in 0..partitions {
            let (low, high) = meta
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
            let next = dir.next_offset(p);
            if next < low {
                writeln!(
                    progress,
                    "WARNING: {topic}/{p}: offsets {next}..{low} were removed by retention before the backup \
                     copied them (recorded as a gap)"
                )?;
                dir.gap(p, next, low);
            }
            if next > high {
                bail!(
                    "{topic}/{p}: the backup is at offset {next} but the topic ends at {high}: the topic was \
                     re-created since; back up into a new directory"
                );
            }
            ends.insert((topic.clone(), p), high);
            tpl.add_partition_offset(topic, p, Offset::Offset(dir.next_offset(p)))?;
        }
        groups.insert(topic.clone(), kafka_groups_of(topic, &options.extra_groups));
        dirs.insert(topic.clone(), dir);
    }
    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", "checkoutctl-topics-backup")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.max.bytes", "16777216")
        .create()
        .context("creating the backup consumer")?;
    consumer.assign(&tpl).context("assigning the partitions")?;
    // --once: done when every partition reached its end as of the start.
    let mut pending: BTreeSet<(String, i32)> = ends
        .iter()
        .filter(|((t, p), end)| dirs[t].next_offset(*p) < **end)
        .map(|(k, _)| k.clone())
        .collect();

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut flush = tokio::time::interval(options.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    flush.tick().await;
    let mut show = tokio::time::interval(options.progress_interval);
    show.tick().await;
    let mut copied: BTreeMap<String, u64> = BTreeMap::new();
    let (mut flushes, mut last_shown, mut shown_at) = (0u64, 0u64, Instant::now());
    let mut stop = options.once && pending.is_empty();
    let single_topic = dirs.len() == 1;
    while !stop {
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(m) => {
                    let topic = m.topic().to_string();
                    let dir = dirs.get_mut(&topic).expect("assigned topics only");
                    if dir.append(&record_of(&m))? {
                        *copied.entry(topic.clone()).or_default() += 1;
                    }
                    if options.once && ends.get(&(topic.clone(), m.partition())).is_some_and(|e| m.offset() + 1 >= *e) {
                        pending.remove(&(topic, m.partition()));
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // The end of a partition (transaction markers may follow the last record): the position is
                    // past them.
                    let eof: Vec<(String, i32)> = pending.iter().filter(|(_, q)| *q == p).cloned().collect();
                    for (topic, p) in eof {
                        let position = consumer.position().ok().and_then(|tpl| {
                            tpl.find_partition(&topic, p).and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                        });
                        if let (Some(o), Some(dir)) = (position, dirs.get_mut(&topic)) {
                            dir.advance(p, o);
                        }
                        // The event names only the partition: with one topic it is that topic's end (the
                        // read_committed end, past any transaction marker); with several, the position says.
                        if single_topic || position.is_some_and(|o| o >= ends[&(topic.clone(), p)]) {
                            pending.remove(&(topic, p));
                        }
                    }
                }
                Err(e) => writeln!(progress, "backup: consumer error (retried): {e}")?,
            },
            _ = flush.tick() => {
                flush_all(&base, &mut dirs, &groups, timeout, progress)?;
                flushes += 1;
            }
            _ = show.tick() => {
                let total: u64 = copied.values().sum();
                let rate = (total - last_shown) as f64 / shown_at.elapsed().as_secs_f64().max(1e-3);
                (last_shown, shown_at) = (total, Instant::now());
                let lag = lag_of(&meta, &dirs, timeout);
                writeln!(progress, "backup: {total} record(s) copied ({rate:.0}/s), lag {lag} record(s), {flushes} flush(es)")?;
            }
            _ = sigterm.recv() => {
                writeln!(progress, "backup: SIGTERM, flushing")?;
                stop = true;
            }
            _ = tokio::signal::ctrl_c() => {
                writeln!(progress, "backup: interrupted, flushing")?;
                stop = true;
            }
        }
        if options.once && pending.is_empty() {
            stop = true;
        }
    }
    flush_all(&base, &mut dirs, &groups, timeout, progress)?;
    flushes += 1;
    let seconds = started.elapsed().as_secs_f64();
    let records: u64 = copied.values().sum();
    let topics = dirs
        .iter()
        .map(|(topic, dir)| TopicSummary {
            topic: topic.clone(),
            partitions: dir.manifest.partitions,
            records: copied.get(topic).copied().unwrap_or(0),
            total_records: dir.manifest.records(),
            next_offsets: dir
                .manifest
                .state
                .iter()
                .map(|(p, s)| (*p, s.next_offset))
                .collect(),
            gaps: dir.manifest.state.values().map(|s| s.gaps.len()).sum(),
        })
        .collect();
    Ok(BackupSummary {
        dir: options.dir,
        topics,
        records,
        seconds,
        records_per_second: records as f64 / seconds.max(1e-3),
        flushes,
    })
}

/// Records not yet copied, all topics (-1 when the cluster could not be asked).
fn lag_of(meta: &BaseConsumer, dirs: &BTreeMap<String, TopicDir>, timeout: Duration) -> i64 {
    let mut lag = 0;
    for (topic, dir) in dirs {
        for p in 0..dir.manifest.partitions {
            match meta.fetch_watermarks(topic, p, timeout) {
                Ok((_, high)) => lag += (high - dir.next_offset(p)).max(0),
                Err(_) => return -1,
            }
        }
    }
    lag
}

/// Copies the groups' positions into each manifest, then commits every topic's directory.
fn flush_all(
    base: &ClientConfig,
    dirs: &mut BTreeMap<String, TopicDir>,
    groups: &BTreeMap<String, Vec<String>>,
    timeout: Duration,
    progress: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let now = lag::read::now_ms();
    for (topic, dir) in dirs.iter_mut() {
        for group in groups.get(topic).into_iter().flatten() {
            match committed_positions(base, group, topic, dir.manifest.partitions, timeout) {
                Ok(positions) if !positions.is_empty() => {
                    dir.manifest.groups.insert(group.clone(), positions);
                }
                Ok(_) => {}
                // Keep the previous copy: an older position only replays more.
                Err(e) => writeln!(progress, "backup: positions of {group} not read: {e:#}")?,
            }
        }
        dir.manifest.groups_at_ms = Some(now);
        dir.commit(now)
            .with_context(|| format!("flushing the backup of {topic}"))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------ restore

/// What `topics restore` does.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    pub topic: String,
    pub into: Option<String>,
    /// Topology file and environment for the target's settings.
    pub topology_file: PathBuf,
    pub env: String,
    pub force: bool,
    pub allow_gaps: bool,
    pub repoint_groups: bool,
    /// Groups to repoint besides the platform's consumers of the topic.
    pub extra_groups: Vec<String>,
    pub database_url: Option<String>,
    pub offset_map: Option<PathBuf>,
    pub actor: Option<String>,
    pub timeout: Duration,
}

/// Where one group's position on one partition goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMove {
    pub partition: i32,
    /// The group's position in the source topic (`None`: unknown, restored from the start).
    pub source_position: Option<i64>,
    pub target: i64,
    /// Where the source position came from: `database`, `kafka`, `backup`, `start`.
    pub from: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupPlan {
    pub group: String,
    pub offsets: OffsetSource,
    pub moves: Vec<GroupMove>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionRestore {
    pub partition: i32,
    pub records: u64,
    pub first_source_offset: Option<i64>,
    pub last_source_offset: Option<i64>,
    pub first_target_offset: Option<i64>,
    pub last_target_offset: Option<i64>,
    /// The backup's next offset: source records at or after it are not in the backup.
    pub backup_next_offset: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub topic: String,
    pub target: String,
    pub created: bool,
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    pub backup_updated_at_ms: i64,
    pub offset_map: PathBuf,
    pub partitions: Vec<PartitionRestore>,
    pub groups: Vec<GroupPlan>,
    pub repointed: bool,
}

/// Translates source positions to target offsets while records are restored: a position `P` goes to the target
/// offset of the first restored record with a source offset `>= P`, or to the end when there is none.
#[derive(Debug, Default)]
pub struct Translator {
    /// Positions not yet resolved, ascending.
    waiting: BTreeSet<i64>,
    resolved: BTreeMap<i64, i64>,
}

impl Translator {
    pub fn new(positions: impl IntoIterator<Item = i64>) -> Self {
        Translator {
            waiting: positions.into_iter().collect(),
            resolved: BTreeMap::new(),
        }
    }

    /// Record `source` was written at `target` (called in source order).
    pub fn restored(&mut self, source: i64, target: i64) {
        while let Some(&p) = self.waiting.first() {
            if p > source {
                break;
            }
            self.waiting.pop_first();
            self.resolved.insert(p, target);
        }
    }

    /// The positions still waiting go to `end`; returns position → target.
    pub fn finish(mut self, end: i64) -> BTreeMap<i64, i64> {
        for p in std::mem::take(&mut self.waiting) {
            self.resolved.insert(p, end);
        }
        self.resolved
    }
}

/// Source positions of one group (per partition) and where they came from.
struct Positions {
    group: String,
    offsets: OffsetSource,
    per_partition: BTreeMap<i32, (Option<i64>, &'static str)>,
}

async fn group_positions(
    base: &ClientConfig,
    manifest: &Manifest,
    pool: Option<&PgPool>,
    extra: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<Positions>> {
    let topic = &manifest.topic;
    let mut out = Vec::new();
    let mut db_groups: BTreeSet<String> = BTreeSet::new();
    if let Some(pool) = pool {
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT consumer_group, partition, next_offset FROM consumer_offsets WHERE topic = $1 \
             ORDER BY 1, 2",
        )
        .bind(topic)
        .fetch_all(pool)
        .await
        .context("reading consumer_offsets")?;
        let mut by_group: BTreeMap<String, BTreeMap<i32, (Option<i64>, &'static str)>> =
            BTreeMap::new();
        for (g, p, o) in rows {
            by_group
                .entry(g)
                .or_default()
                .insert(p, (Some(o), "database"));
        }
        for (group, mut per_partition) in by_group {
            for p in 0..manifest.partitions {
                per_partition.entry(p).or_insert((None, "start"));
            }
            db_groups.insert(group.clone());
            out.push(Positions {
                group,
                offsets: OffsetSource::Database,
                per_partition,
            });
        }
    }
    let mut kafka: BTreeSet<String> = kafka_groups_of(topic, extra).into_iter().collect();
    kafka.extend(manifest.groups.keys().cloned());
    for group in kafka.into_iter().filter(|g| !db_groups.contains(g)) {
        let live = {
            let (b, g, t, n) = (
                base.clone(),
                group.clone(),
                topic.clone(),
                manifest.partitions,
            );
            tokio::task::spawn_blocking(move || committed_positions(&b, &g, &t, n, timeout))
                .await??
        };
        let saved = manifest.groups.get(&group);
        let per_partition = (0..manifest.partitions)
            .map(|p| {
                let found = match (live.get(&p), saved.and_then(|s| s.get(&p))) {
                    (Some(o), _) => (Some(*o), "kafka"),
                    (None, Some(o)) => (Some(*o), "backup"),
                    (None, None) => (None, "start"),
                };
                (p, found)
            })
            .collect();
        out.push(Positions {
            group,
            offsets: OffsetSource::Kafka,
            per_partition,
        });
    }
    Ok(out)
}

/// Creates `target` with the topology's settings (or the backup's partition count when the topology does not
/// know it or its source), or checks the existing one. Returns whether it was created.
async fn prepare_target(
    base: &ClientConfig,
    options: &RestoreOptions,
    target: &str,
    partitions: i32,
    progress: &mut dyn std::io::Write,
) -> anyhow::Result<bool> {
    let meta: BaseConsumer = base.clone().create().context("creating a Kafka client")?;
    let exists = meta
        .fetch_metadata(Some(target), options.timeout)
        .ok()
        .and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == target && t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len() as i32)
        });
    if let Some(actual) = exists {
        if actual != partitions {
            return Err(Refusal::Partitions {
                topic: target.into(),
                actual,
                expected: partitions,
            }
            .into());
        }
        let mut records = 0;
        for p in 0..partitions {
            let (low, high) = meta
                .fetch_watermarks(target, p, options.timeout)
                .with_context(|| format!("reading the offsets of {target}/{p}"))?;
            records += high - low;
        }
        if records > 0 && !options.force {
            return Err(Refusal::TargetHasData {
                topic: target.into(),
                records,
            }
            .into());
        }
        return Ok(false);
    }
    let topology = topology::Topology::load(&options.topology_file)
        .with_context(|| format!("loading {}", options.topology_file.display()))?;
    let desired = topology
        .desired(&options.env)
        .with_context(|| format!("the settings of environment {}", options.env))?;
    let spec = desired
        .iter()
        .find(|d| d.name == target)
        .or_else(|| desired.iter().find(|d| d.name == options.topic));
    let (replication, configs): (i32, Vec<(&str, String)>) = match spec {
        Some(d) => {
            if d.partitions != partitions {
                writeln!(
                    progress,
                    "restore: the topology gives {} {} partition(s), the backup has {partitions}: keeping the \
                     backup's count so every key stays on its partition",
                    d.name, d.partitions
                )?;
            }
            (
                d.replication_factor,
                d.configs.iter().map(|(k, v)| (*k, v.clone())).collect(),
            )
        }
        None => {
            writeln!(
                progress,
                "restore: neither {target} nor {} is in {} ({}): creating it with the broker's defaults",
                options.topic,
                options.topology_file.display(),
                options.env
            )?;
            (-1, Vec::new())
        }
    };
    let admin: AdminClient<DefaultClientContext> =
        base.clone().create().context("creating a Kafka client")?;
    // -1: the broker's default.
    let mut new = NewTopic::new(
        target,
        partitions,
        TopicReplication::Fixed(replication.max(-1)),
    );
    for (k, v) in &configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(options.timeout));
    for result in admin
        .create_topics([&new], &opts)
        .await
        .context("creating the target topic")?
    {
        if let Err((topic, code)) = result {
            bail!("creating {topic}: {code}");
        }
    }
    let deadline = Instant::now() + options.timeout * 2;
    loop {
        let ready = meta
            .fetch_metadata(Some(target), Duration::from_secs(5))
            .ok()
            .is_some_and(|md| {
                md.topics().iter().any(|t| {
                    t.name() == target
                        && t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
        if ready {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!("{target} was created but its partitions have no leader yet");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every segment of the backup (reads it all once); returns the records per partition.
fn check_backup(dir: &Path, manifest: &Manifest) -> Result<BTreeMap<i32, u64>, FormatError> {
    let mut counts = BTreeMap::new();
    for p in 0..manifest.partitions {
        let mut n = 0u64;
        format::read_partition(dir, manifest, p, |_| {
            n += 1;
            Ok(())
        })?;
        counts.insert(p, n);
    }
    Ok(counts)
}

fn gaps_text(manifest: &Manifest) -> Option<String> {
    let gaps: Vec<String> = manifest
        .state
        .iter()
        .flat_map(|(p, s)| {
            s.gaps
                .iter()
                .map(move |g| format!("partition {p} offsets {}..{}", g.from, g.to))
        })
        .collect();
    (!gaps.is_empty()).then(|| gaps.join(", "))
}

/// Restores the backup of `options.topic`; progress on `progress`. `Err` holding a [`Refusal`] means refused.
pub async fn restore(
    base: ClientConfig,
    options: RestoreOptions,
    progress: &mut dyn std::io::Write,
) -> anyhow::Result<RestoreSummary> {
    let started = Instant::now();
    let dir = format::topic_dir(&options.dir, &options.topic);
    if !options.dir.is_dir() {
        bail!("backup directory {} does not exist", options.dir.display());
    }
    let manifest = format::read_manifest(&dir)
        .map_err(Refusal::Damaged)?
        .with_context(|| {
            format!(
                "no backup of {} in {} ({} has no {})",
                options.topic,
                options.dir.display(),
                dir.display(),
                format::MANIFEST
            )
        })?;
    if let Some(gaps) = gaps_text(&manifest)
        && !options.allow_gaps
    {
        return Err(Refusal::Gaps {
            topic: options.topic.clone(),
            gaps,
        }
        .into());
    }
    let target = options
        .into
        .clone()
        .unwrap_or_else(|| options.topic.clone());
    writeln!(
        progress,
        "restore: checking the backup of {} ({} record(s), {} partition(s), last flush {})",
        manifest.topic,
        manifest.records(),
        manifest.partitions,
        chrono::DateTime::from_timestamp_millis(manifest.updated_at_ms)
            .map_or("?".into(), |t| t.to_rfc3339())
    )?;
    let counts = check_backup(&dir, &manifest).map_err(Refusal::Damaged)?;

    let pool = match &options.database_url {
        Some(url) => Some(
            PgPool::connect(url)
                .await
                .context("connecting to DATABASE_URL")?,
        ),
        None if options.repoint_groups => bail!(
            "DATABASE_URL is not set: --repoint-groups needs it (database-positioned groups, operator_actions)"
        ),
        None => None,
    };
    let positions = if options.repoint_groups {
        let positions = group_positions(
            &base,
            &manifest,
            pool.as_ref(),
            &options.extra_groups,
            options.timeout,
        )
        .await?;
        check_inactive(&base, &positions, options.timeout).await?;
        positions
    } else {
        Vec::new()
    };

    let created = prepare_target(&base, &options, &target, manifest.partitions, progress).await?;
    writeln!(
        progress,
        "restore: {} {target}; writing {} record(s)",
        if created { "created" } else { "using" },
        manifest.records()
    )?;

    let map_path = options.offset_map.clone().unwrap_or_else(|| {
        dir.join(format!(
            "offset-map-{target}-{}.csv",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    });
    let mut map = std::io::BufWriter::new(
        std::fs::File::create(&map_path)
            .with_context(|| format!("creating {}", map_path.display()))?,
    );
    writeln!(map, "partition,source_offset,target_offset")?;

    let producer: FutureProducer = base
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000")
        .create()
        .context("creating the producer")?;
    let mut translated: BTreeMap<i32, BTreeMap<i64, i64>> = BTreeMap::new();
    let mut partitions = Vec::new();
    let (mut restored, mut shown) = (0u64, Instant::now());
    for p in 0..manifest.partitions {
        let wanted = positions
            .iter()
            .filter_map(|g| g.per_partition.get(&p).and_then(|(o, _)| *o));
        let mut translator = Translator::new(wanted);
        let mut stats = PartitionRestore {
            partition: p,
            records: 0,
            first_source_offset: None,
            last_source_offset: None,
            first_target_offset: None,
            last_target_offset: None,
            backup_next_offset: manifest.state[&p].next_offset,
        };
        let mut window: VecDeque<(i64, rdkafka::producer::DeliveryFuture)> = VecDeque::new();
        let settle = |source: i64,
                      result: rdkafka::producer::future_producer::OwnedDeliveryResult,
                      stats: &mut PartitionRestore,
                      translator: &mut Translator,
                      map: &mut dyn std::io::Write|
         -> anyhow::Result<()> {
            let delivery = result.map_err(|(e, _)| e).with_context(|| {
                format!("writing source offset {source} of partition {p} into {target}")
            })?;
            if delivery.partition != p {
                bail!(
                    "record of partition {p} landed on partition {}",
                    delivery.partition
                );
            }
            translator.restored(source, delivery.offset);
            writeln!(map, "{p},{source},{}", delivery.offset)?;
            stats.records += 1;
            stats.first_source_offset.get_or_insert(source);
            stats.first_target_offset.get_or_insert(delivery.offset);
            stats.last_source_offset = Some(source);
            stats.last_target_offset = Some(delivery.offset);
            Ok(())
        };
        // A reader thread streams the partition's records through a bounded channel: memory stays bounded
        // whatever the segment sizes.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Record>(4096);
        let reader = {
            let (dir, manifest) = (dir.clone(), manifest.clone());
            tokio::task::spawn_blocking(move || {
                format::read_partition(&dir, &manifest, p, |r| {
                    // A closed channel means the sender failed; its error is the one reported.
                    let _ = tx.blocking_send(r);
                    Ok(())
                })
            })
        };
        while let Some(r) = rx.recv().await {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for h in &r.headers {
                headers = headers.insert(KafkaHeader {
                    key: &h.name,
                    value: h.value.as_deref(),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&target)
                .partition(p)
                .headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            if let Some(t) = r.timestamp {
                record = record.timestamp(t);
            }
            let future = loop {
                match producer.send_result(record) {
                    Ok(f) => break f,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        match window.pop_front() {
                            Some((s, f)) => {
                                let res = f.await.context("delivery cancelled")?;
                                settle(s, res, &mut stats, &mut translator, &mut map)?;
                            }
                            None => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                    Err((e, _)) => {
                        return Err(anyhow::Error::from(e).context(format!(
                            "writing source offset {} of partition {p}",
                            r.offset
                        )));
                    }
                }
            };
            window.push_back((r.offset, future));
            while window.len() >= 10_000 {
                let (s, f) = window.pop_front().expect("non-empty");
                let res = f.await.context("delivery cancelled")?;
                settle(s, res, &mut stats, &mut translator, &mut map)?;
            }
            restored += 1;
            if shown.elapsed() >= Duration::from_secs(2) {
                writeln!(
                    progress,
                    "restore: {restored}/{} record(s) ({:.0}/s)",
                    manifest.records(),
                    restored as f64 / started.elapsed().as_secs_f64().max(1e-3)
                )?;
                shown = Instant::now();
            }
        }
        reader
            .await
            .context("the backup reader")?
            .map_err(Refusal::Damaged)?;
        while let Some((s, f)) = window.pop_front() {
            let res = f.await.context("delivery cancelled")?;
            settle(s, res, &mut stats, &mut translator, &mut map)?;
        }
        if stats.records != counts[&p] {
            bail!(
                "partition {p}: {} record(s) written, the backup holds {}",
                stats.records,
                counts[&p]
            );
        }
        let end = {
            let (b, t, timeout) = (base.clone(), target.clone(), options.timeout);
            tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
                let c: BaseConsumer = b.create()?;
                Ok(c.fetch_watermarks(&t, p, timeout)?.1)
            })
            .await??
        };
        translated.insert(p, translator.finish(end));
        partitions.push(stats);
    }
    map.flush()?;
    map.get_ref().sync_all()?;
    producer
        .flush(options.timeout)
        .context("flushing the producer")?;

    let groups: Vec<GroupPlan> = positions
        .iter()
        .map(|g| GroupPlan {
            group: g.group.clone(),
            offsets: g.offsets,
            moves: g
                .per_partition
                .iter()
                .map(|(p, (position, from))| GroupMove {
                    partition: *p,
                    source_position: *position,
                    target: match position {
                        Some(o) => translated[p][o],
                        None => partitions[*p as usize].first_target_offset.unwrap_or(0),
                    },
                    from,
                })
                .collect(),
        })
        .collect();
    let mut summary = RestoreSummary {
        topic: options.topic.clone(),
        target: target.clone(),
        created,
        records: restored,
        seconds: started.elapsed().as_secs_f64(),
        records_per_second: restored as f64 / started.elapsed().as_secs_f64().max(1e-3),
        backup_updated_at_ms: manifest.updated_at_ms,
        offset_map: map_path,
        partitions,
        groups,
        repointed: false,
    };
    if options.repoint_groups {
        check_inactive(&base, &positions, options.timeout).await?;
        let pool = pool.as_ref().expect("checked above");
        repoint(&base, pool, &target, &summary, options.actor.clone()).await?;
        summary.repointed = true;
        writeln!(
            progress,
            "restore: {} group(s) repointed onto {target}",
            summary.groups.len()
        )?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn check_inactive(
    base: &ClientConfig,
    positions: &[Positions],
    timeout: Duration,
) -> anyhow::Result<()> {
    for g in positions {
        let (b, name) = (base.clone(), g.group.clone());
        let n = tokio::task::spawn_blocking(move || members(&b, &name, timeout)).await??;
        if n > 0 {
            return Err(Refusal::ActiveGroup {
                group: g.group.clone(),
                members: n,
            }
            .into());
        }
    }
    Ok(())
}

/// Records the restore, moves the database positions (one transaction), then commits the Kafka groups'.
async fn repoint(
    base: &ClientConfig,
    pool: &PgPool,
    target: &str,
    summary: &RestoreSummary,
    actor: Option<String>,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    record_action(
        &mut *tx,
        &actor_or_user(actor),
        "topics.restore",
        target,
        serde_json::to_value(summary)?,
    )
    .await?;
    for g in summary
        .groups
        .iter()
        .filter(|g| g.offsets == OffsetSource::Database)
    {
        for m in &g.moves {
            sqlx::query(
                "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
                 SET next_offset = EXCLUDED.next_offset, ahead = '{}', \
                 generation = consumer_offsets.generation + 1, updated_at = now()",
            )
            .bind(&g.group)
            .bind(target)
            .bind(m.partition)
            .bind(m.target)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("moving {} in consumer_offsets", g.group))?;
        }
    }
    tx.commit().await?;
    for g in summary
        .groups
        .iter()
        .filter(|g| g.offsets == OffsetSource::Kafka)
    {
        let mut tpl = TopicPartitionList::new();
        for m in &g.moves {
            tpl.add_partition_offset(target, m.partition, Offset::Offset(m.target))?;
        }
        commit_as_group(base.clone(), &g.group, tpl)
            .await
            .with_context(|| format!("committing the positions of {}", g.group))?;
    }
    Ok(())
}

/// Exit code of a restore error: 1 when refused, else 2.
pub fn exit_code_of(error: &anyhow::Error) -> u8 {
    if error.chain().any(|c| c.downcast_ref::<Refusal>().is_some()) {
        exit::INVALID
    } else {
        exit::FAILURE
    }
}

/// Prints a summary and returns the exit code (shared by backup and restore).
pub fn report<T: Serialize>(
    result: anyhow::Result<T>,
    json: bool,
    human: impl FnOnce(&T, &mut Io<'_>) -> std::io::Result<()>,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    match result {
        Ok(summary) => {
            if json {
                let mut value = serde_json::to_value(&summary)?;
                value["ok"] = true.into();
                writeln!(io.stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                human(&summary, io)?;
            }
            Ok(exit::OK)
        }
        Err(error) => {
            let code = exit_code_of(&error);
            if json {
                writeln!(
                    io.stdout,
                    "{}",
                    serde_json::json!({"ok": false, "refused": code == exit::INVALID, "error": format!("{error:#}")})
                )?;
            }
            writeln!(
                io.stderr,
                "{}: {error:#}",
                if code == exit::INVALID {
                    "refused"
                } else {
                    "error"
                }
            )?;
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_translate_to_the_first_restored_record_at_or_after_them() {
        // Source offsets with holes (transaction markers, a lost tail); target offsets dense from 0.
        let restored = [(3, 0), (4, 1), (6, 2), (9, 3)];
        let mut t = Translator::new([0, 3, 5, 6, 7, 10, 42]);
        for (s, d) in restored {
            t.restored(s, d);
        }
        let got = t.finish(4);
        let want: BTreeMap<i64, i64> = [(0, 0), (3, 0), (5, 2), (6, 2), (7, 3), (10, 4), (42, 4)]
            .into_iter()
            .collect();
        assert_eq!(got, want);
    }
}
