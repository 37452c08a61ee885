//! `checkoutctl groups …`: consumer groups from the broker's view — `list` and `describe` — through the same
//! library as bus-monitor (`lag`), so the CLI and the metrics never disagree on lag or status; and
//! `reset-offsets` (its guarantees in [`crate::groups_reset`]).
//!
//! Guarantees of `list` and `describe`: read-only — the command never joins a group nor commits (committed offsets are read with an
//! OffsetFetch, mode (b) offsets from `consumer_offsets`). `describe` takes `--samples` snapshots `--interval`
//! apart and evaluates them like the monitor does: lag in seconds appears only when the partition's end offset
//! moved during the sampling (or the group is at the end: 0), and the status is judged over those few samples
//! only — the monitor's `kafka_consumergroup_status`, judged over its whole window, is the authoritative one.
//! Exit codes: 0, 1 when the group is ERR (unreadable, unknown, topic missing), 2 when the command could not
//! run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lag::read::GroupInfo;
use lag::{GroupSpec, OffsetSource, Reader, Status, Tracker, TrackerSettings};
use serde::Serialize;

use crate::{Io, Run, block_on, exit};

/// Consumer groups: list them, describe one (members, assignment, lag in messages and seconds, status).
#[derive(Debug, clap::Args)]
pub struct GroupsArgs {
    #[command(subcommand)]
    command: GroupsCommand,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
    /// PostgreSQL URL, for the offsets of mode (b) groups (settlement-processing, analytics-aggregation).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// Bound of each broker request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
}

#[derive(Debug, clap::Subcommand)]
enum GroupsCommand {
    /// Every consumer group the broker knows, with its state and members; the platform's groups are marked
    /// (and listed even when the broker does not know them).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One group: members and their assignment, and per partition the committed offset, the end offset, the lag
    /// in messages and in seconds, and the Burrow-style status.
    Describe {
        group: String,
        /// The topics the group consumes; default: the platform policy's topics, else the members' assignment.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Where the offsets are; default: `database` for the platform's mode (b) groups, else `kafka`.
        #[arg(long, value_enum)]
        offsets: Option<Source>,
        /// Snapshots taken (lag in seconds needs the end offset to move between two of them).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        samples: u32,
        /// Time between snapshots.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's positions (dry run unless --execute): to a time, a duration ago, the earliest or latest
    /// offset, by a shift or to an offset, per topic or partition. Refused while the group has members; mode (b)
    /// groups' positions are moved in PostgreSQL; every executed reset is recorded in operator_actions.
    #[command(name = "reset-offsets")]
    ResetOffsets {
        group: String,
        /// `TOPIC` or `TOPIC:0,2` (repeatable); default: the platform policy's topics of the group.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Where the positions are; default: `database` for the platform's mode (b) groups, else `kafka`.
        #[arg(long, value_enum)]
        offsets: Option<Source>,
        #[command(flatten)]
        to: crate::groups_reset::To,
        /// Apply the plan (default: print it only).
        #[arg(long)]
        execute: bool,
        /// Also write the plan as CSV (topic,partition,current,target) to this file.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
        /// Who is doing this, for operator_actions (default: $USER).
        #[arg(long)]
        actor: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Source {
    Kafka,
    Database,
}

impl Run for GroupsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let config = crate::kafka_client_config(self.bootstrap_servers)?;
        let reader = Reader::new(config.clone(), self.timeout)?;
        let timeout = self.timeout;
        let database_url = self.database_url;
        block_on(async move {
            match self.command {
                GroupsCommand::List { json } => list(&reader, json, io).await,
                GroupsCommand::Describe {
                    group,
                    topics,
                    offsets,
                    samples,
                    interval,
                    json,
                } => {
                    let request = Describe {
                        group,
                        topics,
                        offsets,
                        samples,
                        interval,
                    };
                    describe(&reader, database_url, request, json, io).await
                }
                GroupsCommand::ResetOffsets {
                    group,
                    topics,
                    offsets,
                    to,
                    execute,
                    export,
                    actor,
                    json,
                } => {
                    let request = crate::groups_reset::Request {
                        group,
                        topics,
                        offsets: offsets.map(|o| match o {
                            Source::Kafka => OffsetSource::Kafka,
                            Source::Database => OffsetSource::Database,
                        }),
                        to,
                        execute,
                        export,
                        actor,
                        json,
                    };
                    crate::groups_reset::run(&reader, config, database_url, timeout, request, io)
                        .await
                }
            }
        })
    }
}

#[derive(Debug, Serialize)]
struct Listed {
    group: String,
    state: String,
    members: usize,
    protocol_type: String,
    /// `kafka` or `database` for the platform's groups; absent for others.
    platform: Option<OffsetSource>,
}

async fn list(reader: &Arc<Reader>, json: bool, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let groups = reader.list_groups(None).await.context("listing groups")?;
    let platform = lag::platform_groups();
    let mut rows: Vec<Listed> = groups
        .iter()
        .map(|g| Listed {
            group: g.group.clone(),
            state: g.state.clone(),
            members: g.members.len(),
            protocol_type: g.protocol_type.clone(),
            platform: platform
                .iter()
                .find(|p| p.group == g.group)
                .map(|p| p.offsets),
        })
        .collect();
    for p in &platform {
        if !rows.iter().any(|r| r.group == p.group) {
            rows.push(Listed {
                group: p.group.clone(),
                state: "(unknown to the broker)".into(),
                members: 0,
                protocol_type: String::new(),
                platform: Some(p.offsets),
            });
        }
    }
    rows.sort_by(|a, b| (a.platform.is_none(), &a.group).cmp(&(b.platform.is_none(), &b.group)));
    if json {
        serde_json::to_writer_pretty(&mut *io.stdout, &rows)?;
        writeln!(io.stdout)?;
        return Ok(exit::OK);
    }
    writeln!(
        io.stdout,
        "{:<40} {:<24} {:>7}  PLATFORM",
        "GROUP", "STATE", "MEMBERS"
    )?;
    for r in &rows {
        let platform = r.platform.map_or("-".to_string(), |s| {
            format!("yes (offsets: {})", s.as_str())
        });
        writeln!(
            io.stdout,
            "{:<40} {:<24} {:>7}  {platform}",
            r.group, r.state, r.members
        )?;
    }
    Ok(exit::OK)
}

struct Describe {
    group: String,
    topics: Vec<String>,
    offsets: Option<Source>,
    samples: u32,
    interval: Duration,
}

#[derive(Serialize)]
struct Described<'a> {
    info: Option<&'a GroupInfo>,
    #[serde(flatten)]
    report: &'a lag::GroupReport,
}

async fn describe(
    reader: &Arc<Reader>,
    database_url: Option<String>,
    request: Describe,
    json: bool,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let platform = lag::platform_groups()
        .into_iter()
        .find(|g| g.group == request.group);
    let info = reader
        .list_groups(Some(request.group.clone()))
        .await
        .context("describing the group")?
        .into_iter()
        .find(|g| g.group == request.group);
    let mut topics = request.topics;
    if topics.is_empty() {
        if let Some(p) = &platform {
            topics = p.topics.clone();
        } else if let Some(info) = &info {
            topics = info
                .members
                .iter()
                .flat_map(|m| m.assignment.iter().map(|(t, _)| t.clone()))
                .collect();
            topics.sort();
            topics.dedup();
        }
    }
    if topics.is_empty() {
        anyhow::bail!(
            "group {} is not one of the platform's and has no member to read its topics from: pass --topic",
            request.group
        );
    }
    let offsets = match request.offsets {
        Some(Source::Kafka) => OffsetSource::Kafka,
        Some(Source::Database) => OffsetSource::Database,
        None => platform.as_ref().map_or(OffsetSource::Kafka, |p| p.offsets),
    };
    let pool = match offsets {
        OffsetSource::Kafka => None,
        OffsetSource::Database => {
            let url = database_url.context(
                "this group keeps its offsets in PostgreSQL (mode b): DATABASE_URL is not set (pass --database-url or \
                 source .dev/env)",
            )?;
            Some(
                sqlx::PgPool::connect(&url)
                    .await
                    .context("connecting to PostgreSQL")?,
            )
        }
    };
    let spec = GroupSpec {
        group: request.group.clone(),
        topics,
        offsets,
    };
    let mut tracker = Tracker::new(TrackerSettings {
        window: request.samples as usize,
        ..Default::default()
    });
    let mut report = None;
    for i in 0..request.samples {
        if i > 0 {
            tokio::time::sleep(request.interval).await;
        }
        let snapshot = reader
            .snapshot(std::slice::from_ref(&spec), pool.as_ref())
            .await
            .context("reading offsets")?;
        report = tracker.observe(&snapshot).groups.pop();
    }
    let report = report.expect("at least one sample");
    let code = if report.status == Status::Err {
        exit::INVALID
    } else {
        exit::OK
    };
    if json {
        serde_json::to_writer_pretty(
            &mut *io.stdout,
            &Described {
                info: info.as_ref(),
                report: &report,
            },
        )?;
        writeln!(io.stdout)?;
        return Ok(code);
    }
    writeln!(
        io.stdout,
        "group {}  state {}  members {}  offsets {}  status {}",
        report.group,
        report.state.as_deref().unwrap_or("?"),
        report.members.map_or("?".to_string(), |m| m.to_string()),
        report.offsets.as_str(),
        report.status
    )?;
    if let Some(why) = &report.error {
        writeln!(io.stdout, "error: {why}")?;
    }
    if let Some(info) = info.as_ref().filter(|i| !i.members.is_empty()) {
        writeln!(
            io.stdout,
            "\n{:<50} {:<30} {:<20} ASSIGNMENT",
            "MEMBER", "CLIENT", "HOST"
        )?;
        for m in &info.members {
            let assignment: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| {
                    let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                    format!("{t}[{}]", ps.join(","))
                })
                .collect();
            writeln!(
                io.stdout,
                "{:<50} {:<30} {:<20} {}",
                m.id,
                m.client_id,
                m.host,
                assignment.join(" ")
            )?;
        }
    }
    if !report.partitions.is_empty() {
        writeln!(
            io.stdout,
            "\n{:<45} {:>9} {:>12} {:>12} {:>10} {:>11}  STATUS",
            "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG_SECONDS"
        )?;
        for p in &report.partitions {
            writeln!(
                io.stdout,
                "{:<45} {:>9} {:>12} {:>12} {:>10} {:>11}  {}",
                p.topic,
                p.partition,
                p.committed.map_or("-".to_string(), |c| c.to_string()),
                p.latest,
                p.lag,
                p.lag_seconds.map_or("-".to_string(), |s| format!("{s:.1}")),
                p.status
            )?;
        }
        writeln!(
            io.stdout,
            "\nmax lag {} messages, {} seconds (LAG_SECONDS: - = the end offset did not move during the {} samples)",
            report.max_lag.unwrap_or(0),
            report
                .max_lag_seconds
                .map_or("-".to_string(), |s| format!("{s:.1}")),
            request.samples
        )?;
    }
    Ok(code)
}
