//! `checkoutctl groups reset-offsets GROUP …`: moves a consumer group's positions, as Kafka's own
//! `kafka-consumer-groups --reset-offsets`, for both kinds of groups of the platform.
//!
//! Guarantees:
//! - **Dry run by default**: the plan (per partition: current position, target, change) is printed, `--export`
//!   writes it as CSV; nothing changes without `--execute`.
//! - **Only an empty group is moved**: `--execute` is refused while the broker lists a member of the group (its
//!   consumers would overwrite the positions, or be overtaken), as Kafka's tool refuses an active group.
//! - **Where the positions live**: Kafka-committed groups get an offset commit (as the group, without joining
//!   it); mode (b) groups (`settlement-processing`, `analytics-aggregation`: positions in PostgreSQL's
//!   `consumer_offsets`, decision 0007) get their rows rewritten in one transaction — their Kafka commits are not
//!   what they resume from, so moving those would change nothing.
//! - **Targets stay inside the log**: every target is clamped to `[earliest, end]` of its partition; a time with
//!   no record at or after it resolves to the end.
//! - **Recorded**: each executed reset is a row of `operator_actions` (who — `--actor` or `$USER` —, what, when,
//!   the plan), written before the Kafka commit and in the same transaction as a mode (b) change. The tamper-evident
//!   `audit_log` is fed only by the audit service from domain events (decision 0010), so operator actions get
//!   their own append-only table rather than a second writer of that chain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use lag::tracker::{Ends, Tp};
use lag::{GroupSpec, OffsetSource, Reader};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;

use crate::Io;

/// Where to move the positions to: exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct To {
    /// The first record at or after this time (RFC 3339, e.g. 2026-11-30T12:00:00Z).
    #[arg(long)]
    pub to_datetime: Option<DateTime<Utc>>,
    /// The first record at or after now minus this (e.g. 30m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub by_duration: Option<Duration>,
    /// The partition's earliest retained record.
    #[arg(long)]
    pub to_earliest: bool,
    /// The partition's end: skip everything not yet consumed.
    #[arg(long)]
    pub to_latest: bool,
    /// The current position plus N (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// This offset.
    #[arg(long)]
    pub to_offset: Option<i64>,
}

/// The resolved target rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    /// A timestamp in milliseconds; resolved per partition by the broker.
    Time(i64),
    Shift(i64),
    Offset(i64),
}

impl To {
    fn target(&self) -> Target {
        if let Some(t) = self.to_datetime {
            Target::Time(t.timestamp_millis())
        } else if let Some(d) = self.by_duration {
            Target::Time(lag::read::now_ms() - d.as_millis() as i64)
        } else if self.to_earliest {
            Target::Earliest
        } else if self.to_latest {
            Target::Latest
        } else if let Some(n) = self.shift_by {
            Target::Shift(n)
        } else {
            Target::Offset(self.to_offset.unwrap_or_default())
        }
    }
}

/// One partition of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// The group's position now; `None`: nothing committed.
    pub current: Option<i64>,
    pub earliest: i64,
    pub latest: i64,
    pub target: i64,
}

/// The plan: per partition, the target of `target`, clamped to `[earliest, latest]`. `by_time` holds the
/// broker's answer for a [`Target::Time`] (`None`: no record at or after the time). A shift from a partition with
/// no position starts at its earliest offset.
pub fn plan(
    target: Target,
    partitions: &BTreeMap<Tp, (Option<i64>, Ends)>,
    by_time: &BTreeMap<Tp, Option<i64>>,
) -> Vec<Move> {
    partitions
        .iter()
        .map(|(tp, (current, ends))| {
            let wanted = match target {
                Target::Earliest => ends.earliest,
                Target::Latest => ends.latest,
                Target::Time(_) => by_time.get(tp).copied().flatten().unwrap_or(ends.latest),
                Target::Shift(n) => current.unwrap_or(ends.earliest).saturating_add(n),
                Target::Offset(n) => n,
            };
            Move {
                topic: tp.0.clone(),
                partition: tp.1,
                current: *current,
                earliest: ends.earliest,
                latest: ends.latest,
                target: wanted.clamp(ends.earliest, ends.latest.max(ends.earliest)),
            }
        })
        .collect()
}

/// What `reset-offsets` was asked.
pub struct Request {
    pub group: String,
    /// `topic` or `topic:0,2`; empty: the platform policy's topics.
    pub topics: Vec<String>,
    pub offsets: Option<OffsetSource>,
    pub to: To,
    pub execute: bool,
    pub export: Option<PathBuf>,
    pub actor: Option<String>,
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    group: &'a str,
    offsets: OffsetSource,
    executed: bool,
    moves: &'a [Move],
}

/// Parses `topic` or `topic:0,2`.
fn topic_filter(arg: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    match arg.split_once(':') {
        None => Ok((arg.to_string(), None)),
        Some((topic, parts)) => {
            let partitions = parts
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .with_context(|| format!("`{p}` in `{arg}` is not a partition number"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

pub async fn run(
    reader: &Arc<Reader>,
    base: ClientConfig,
    database_url: Option<String>,
    timeout: Duration,
    request: Request,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let platform = lag::platform_groups()
        .into_iter()
        .find(|g| g.group == request.group);
    let mut filters: BTreeMap<String, Option<Vec<i32>>> = BTreeMap::new();
    for arg in &request.topics {
        let (topic, partitions) = topic_filter(arg)?;
        filters.insert(topic, partitions);
    }
    if filters.is_empty() {
        match &platform {
            Some(p) => filters.extend(p.topics.iter().map(|t| (t.clone(), None))),
            None => bail!(
                "group {} is not one of the platform's: name its topics with --topic TOPIC[:PARTITIONS]",
                request.group
            ),
        }
    }
    let offsets = request
        .offsets
        .unwrap_or_else(|| platform.as_ref().map_or(OffsetSource::Kafka, |p| p.offsets));
    let pool = match &database_url {
        Some(url) => Some(
            PgPool::connect(url)
                .await
                .context("connecting to DATABASE_URL")?,
        ),
        None if offsets == OffsetSource::Database || request.execute => bail!(
            "DATABASE_URL is not set: it holds {}",
            if offsets == OffsetSource::Database {
                "this group's positions"
            } else {
                "the record of every executed reset (operator_actions)"
            }
        ),
        None => None,
    };
    let spec = GroupSpec {
        group: request.group.clone(),
        topics: filters.keys().cloned().collect(),
        offsets,
    };
    let snapshot = reader
        .snapshot(std::slice::from_ref(&spec), pool.as_ref())
        .await
        .context("reading the group's positions")?;
    let reading = match &snapshot.groups[0].1 {
        Ok(r) => r.clone(),
        Err(why) => bail!("cannot read group {}: {why}", request.group),
    };
    let mut partitions: BTreeMap<Tp, (Option<i64>, Ends)> = BTreeMap::new();
    for (tp, ends) in &snapshot.ends {
        let Some(filter) = filters.get(&tp.0) else {
            continue;
        };
        if filter.as_ref().is_some_and(|ps| !ps.contains(&tp.1)) {
            continue;
        }
        let current = reading.committed.get(tp).map(|c| c.offset);
        partitions.insert(tp.clone(), (current, *ends));
    }
    for (topic, filter) in &filters {
        if !partitions.keys().any(|(t, _)| t == topic) {
            bail!("topic {topic} does not exist (or has none of the partitions named)");
        }
        for p in filter.iter().flatten() {
            if !partitions.contains_key(&(topic.clone(), *p)) {
                bail!("{topic} has no partition {p}");
            }
        }
    }
    let target = request.to.target();
    let by_time = match target {
        Target::Time(ms) => offsets_for_time(base.clone(), partitions.keys(), ms, timeout).await?,
        _ => BTreeMap::new(),
    };
    let moves = plan(target, &partitions, &by_time);

    if let Some(path) = &request.export {
        let mut csv = String::from("topic,partition,current,target\n");
        for m in &moves {
            let current = m.current.map(|c| c.to_string()).unwrap_or_default();
            csv.push_str(&format!(
                "{},{},{current},{}\n",
                m.topic, m.partition, m.target
            ));
        }
        std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
    }
    let executed = if request.execute {
        if reading.members > 0 {
            bail!(
                "group {} has {} active member(s) (state {}): stop its consumers first — a live group would \
                 overwrite the new positions",
                request.group,
                reading.members,
                reading.state
            );
        }
        let pool = pool.as_ref().expect("checked above");
        let actor = actor_or_user(request.actor.clone());
        apply(pool, base, &request.group, offsets, &moves, &actor).await?;
        true
    } else {
        false
    };

    let report = Report {
        group: &request.group,
        offsets,
        executed,
        moves: &moves,
    };
    if request.json {
        writeln!(io.stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(0);
    }
    writeln!(
        io.stdout,
        "{:<48} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "CURRENT", "TARGET", "CHANGE"
    )?;
    for m in &moves {
        let change = m
            .current
            .map_or("-".to_string(), |c| format!("{:+}", m.target - c));
        writeln!(
            io.stdout,
            "{:<48} {:>9} {:>12} {:>12} {:>10}",
            m.topic,
            m.partition,
            m.current.map_or("-".into(), |c| c.to_string()),
            m.target,
            change
        )?;
    }
    let store = match offsets {
        OffsetSource::Kafka => "Kafka",
        OffsetSource::Database => "PostgreSQL (consumer_offsets)",
    };
    if executed {
        writeln!(
            io.stdout,
            "applied: {} partition(s) of {} moved in {store}; recorded in operator_actions",
            moves.len(),
            request.group
        )?;
    } else {
        writeln!(
            io.stdout,
            "dry run: nothing changed ({store} holds this group's positions); pass --execute to apply"
        )?;
    }
    Ok(0)
}

/// Who is acting, for `operator_actions`: `explicit` (`--actor` / `--operator`), else `$USER`, else `unknown`.
pub(crate) fn actor_or_user(explicit: Option<String>) -> String {
    explicit
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Appends one row to `operator_actions` (who, what, on which subject, the details; `at` is the database's now).
pub(crate) async fn record_action(
    db: impl sqlx::PgExecutor<'_>,
    actor: &str,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO operator_actions (actor, action, subject, details) VALUES ($1, $2, $3, $4)",
    )
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(details)
    .execute(db)
    .await
    .with_context(|| format!("recording {action} in operator_actions"))?;
    Ok(())
}

/// Commits `tpl` as `group` without joining it (an OffsetCommit from a client carrying the group's id); the
/// broker refuses it while the group has live members of another generation.
pub(crate) async fn commit_as_group(
    base: ClientConfig,
    group: &str,
    tpl: TopicPartitionList,
) -> anyhow::Result<()> {
    let mut config = base;
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing the new positions (is the group still empty?)")?;
        Ok(())
    })
    .await?
}

/// The broker's first offset at or after `ms` per partition (`None`: no record that late).
pub(crate) async fn offsets_for_time<'a>(
    base: ClientConfig,
    partitions: impl IntoIterator<Item = &'a Tp>,
    ms: i64,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<Tp, Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(ms))?;
    }
    tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeMap<Tp, Option<i64>>> {
        let consumer: BaseConsumer = base.create().context("creating a Kafka client")?;
        let found = consumer
            .offsets_for_times(tpl, timeout)
            .context("looking offsets up by time")?;
        Ok(found
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                ((e.topic().to_string(), e.partition()), offset)
            })
            .collect())
    })
    .await?
}

/// Records the reset, then moves the positions: one transaction for a mode (b) group, a commit as the group for a
/// Kafka-committed one (after the record: a failed commit leaves a record saying it was attempted, never a move
/// without a record).
async fn apply(
    pool: &PgPool,
    base: ClientConfig,
    group: &str,
    offsets: OffsetSource,
    moves: &[Move],
    actor: &str,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    record_action(
        &mut *tx,
        actor,
        "groups.reset-offsets",
        group,
        serde_json::json!({ "offsets": offsets, "moves": moves }),
    )
    .await?;
    if offsets == OffsetSource::Database {
        let (topics, partitions, targets): (Vec<String>, Vec<i32>, Vec<i64>) = moves.iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut t, mut p, mut o), m| {
                t.push(m.topic.clone());
                p.push(m.partition);
                o.push(m.target);
                (t, p, o)
            },
        );
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
             SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
             ON CONFLICT (consumer_group, topic, partition)
             DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        )
        .bind(group)
        .bind(&topics)
        .bind(&partitions)
        .bind(&targets)
        .execute(&mut *tx)
        .await
        .context("moving the positions in consumer_offsets")?;
        tx.commit().await?;
        return Ok(());
    }
    tx.commit().await?;
    let mut tpl = TopicPartitionList::new();
    for m in moves {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.target))?;
    }
    commit_as_group(base, group, tpl).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> BTreeMap<Tp, (Option<i64>, Ends)> {
        BTreeMap::from([
            (
                ("t".to_string(), 0),
                (
                    Some(50),
                    Ends {
                        earliest: 10,
                        latest: 100,
                    },
                ),
            ),
            (
                ("t".to_string(), 1),
                (
                    None,
                    Ends {
                        earliest: 0,
                        latest: 5,
                    },
                ),
            ),
        ])
    }

    fn targets(target: Target, by_time: &BTreeMap<Tp, Option<i64>>) -> Vec<i64> {
        plan(target, &parts(), by_time)
            .iter()
            .map(|m| m.target)
            .collect()
    }

    #[test]
    fn targets_are_resolved_and_clamped_to_the_log() {
        let none = BTreeMap::new();
        assert_eq!(targets(Target::Earliest, &none), [10, 0]);
        assert_eq!(targets(Target::Latest, &none), [100, 5]);
        assert_eq!(targets(Target::Shift(-20), &none), [30, 0]);
        assert_eq!(targets(Target::Shift(1000), &none), [100, 5]);
        // No position: a shift starts at the earliest offset.
        assert_eq!(targets(Target::Shift(2), &none), [52, 2]);
        assert_eq!(targets(Target::Offset(3), &none), [10, 3]);
        assert_eq!(targets(Target::Offset(70), &none), [70, 5]);
        let by_time = BTreeMap::from([
            (("t".to_string(), 0), Some(42)),
            (("t".to_string(), 1), None),
        ]);
        // A partition with no record that late goes to its end.
        assert_eq!(targets(Target::Time(0), &by_time), [42, 5]);
    }

    #[test]
    fn topic_filters_parse_partitions() {
        assert_eq!(topic_filter("a.b").unwrap(), ("a.b".into(), None));
        assert_eq!(
            topic_filter("a.b:0,2").unwrap(),
            ("a.b".into(), Some(vec![0, 2]))
        );
        assert!(topic_filter("a.b:x").is_err());
        assert!(topic_filter("a.b:-1").is_err());
    }
}
