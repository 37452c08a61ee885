//! `checkoutctl topics …`: topics and cluster settings as code (deploy/kafka/topics.yaml), by the `topology`
//! crate. Plan and apply talk to the cluster at KAFKA_BOOTSTRAP_SERVERS, with the client properties a service
//! would use (`CHECKOUT__KAFKA__CLIENT__…`: SASL, TLS); export only reads the file.
//!
//! Guarantees (see `topology`): plan changes nothing; apply creates missing topics with every config and
//! alters configs automatically, increases partitions only with approval, never decreases them, never deletes
//! a topic and never changes a replication factor itself. Exit codes are listed in `--help`.
//!
//! `backup` and `restore` (the spec's topic-corruption row, decision 0041) live in [`crate::backup`]; this module
//! only parses their arguments.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::backup::{self, BackupOptions, RestoreOptions};
use crate::{Io, Run, block_on};

/// Topics and cluster settings as code: plan, apply, export (deploy/kafka/topics.yaml); backup and restore of
/// the event topics.
#[derive(Debug, clap::Args)]
#[command(after_long_help = topology::EXIT_CODES_HELP)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: Command,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Topology(topology::TopicsCommand),
    /// Copy event topics continuously to a directory (the spec's "Topic Corruption → restore from backup").
    ///
    /// Every record (key, value, headers, timestamp, partition, source offset) is appended to JSON-lines
    /// segment files per topic-partition under DIR/<topic>/, with a manifest holding the next offset to copy per
    /// partition and the consumer groups' committed positions (format: decision 0041). Reads with
    /// isolation.level=read_committed, commits nothing, joins no group; resumes from its own manifest after a
    /// restart (bytes written after the last manifest are cut and copied again: no gap, no duplicate). Data is
    /// fsynced and the manifest replaced atomically every --flush-interval and on SIGTERM / Ctrl-C: the
    /// backup's RPO is that interval plus its lag. Progress lines on standard error.
    #[command(after_long_help = backup::EXIT_CODES_HELP)]
    Backup(BackupArgs),
    /// Write a topic's backup into a fresh topic and, with --repoint-groups, move the consumer groups onto it.
    ///
    /// The whole backup is checked first. The target (--into, default the topic itself, e.g. after deleting and
    /// re-creating it) is created with the topology's settings for --env and the backup's partition count, or
    /// must exist empty (--force to append to records already there). Records go to their source partition in
    /// offset order with key, value, headers and timestamp through an idempotent producer. An offset map (CSV:
    /// partition,source_offset,target_offset) is written beside the backup. --repoint-groups moves every group
    /// consuming the topic (database-positioned ones in consumer_offsets, Kafka-committed ones — from the live
    /// commit, else the backup's copy) to the target offset of the first restored record at or after its
    /// position: nothing unprocessed is skipped, what it processed after the last backup flush is replayed.
    /// Groups must have no active member (stop the services first). Progress on standard error; --json summary
    /// on standard output.
    #[command(after_long_help = backup::EXIT_CODES_HELP)]
    Restore(RestoreArgs),
}

/// Which topology file and environment give the topics and their settings.
#[derive(Debug, clap::Args)]
struct TopologyTarget {
    /// Environment of the topology file whose topics (backup) and settings (restore) are used.
    #[arg(long, env = "CHECKOUT_TOPICS_ENV", default_value = "development")]
    env: String,
    /// The topology file.
    #[arg(long, env = "CHECKOUT_TOPICS_FILE", default_value = topology::DEFAULT_FILE)]
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The backup directory (one sub-directory per topic); created if missing.
    #[arg(long, env = "CHECKOUT_BACKUP_DIR")]
    dir: PathBuf,
    /// A topic to back up (repeatable). Default: every event-log topic of the topology's environment (core
    /// topics, dead-letter topics, parking lots).
    #[arg(long = "topic")]
    topics: Vec<String>,
    #[command(flatten)]
    topology: TopologyTarget,
    /// Also keep the Kafka-committed positions of this group (repeatable); the platform's consumer groups of
    /// each topic are always kept.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// Make what was read durable at least this often (the RPO is this plus the backup's lag; the spec allows
    /// 15 min).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// How often a progress line is printed on standard error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    progress_interval: Duration,
    /// Start a new segment file once one reaches this many bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Copy up to the end of every partition as of the start, flush, and exit (drills, tests, cron).
    #[arg(long)]
    once: bool,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The backup directory (as given to `topics backup --dir`).
    #[arg(long = "from", env = "CHECKOUT_BACKUP_DIR")]
    from: PathBuf,
    /// The backed-up topic to restore.
    #[arg(long)]
    topic: String,
    /// Restore into this topic instead of TOPIC itself.
    #[arg(long)]
    into: Option<String>,
    #[command(flatten)]
    topology: TopologyTarget,
    /// Append even though the target already holds records.
    #[arg(long)]
    force: bool,
    /// Restore although the backup records gaps (offsets removed by retention before they were copied).
    #[arg(long)]
    allow_gaps: bool,
    /// Move the consumer groups of the topic onto the restored records (their consumers must be stopped).
    #[arg(long)]
    repoint_groups: bool,
    /// Also repoint this Kafka-committed group (repeatable); the platform's groups of the topic, those in
    /// consumer_offsets and those the backup kept are always included.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// PostgreSQL URL (consumer_offsets, operator_actions); needed by --repoint-groups.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where to write the offset map (default: DIR/<topic>/offset-map-<target>-<time>.csv).
    #[arg(long)]
    offset_map: Option<PathBuf>,
    /// Who restores (recorded in operator_actions); default $USER.
    #[arg(long)]
    actor: Option<String>,
    /// Bound of each broker request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

fn backup_topics(args: &BackupArgs) -> anyhow::Result<Vec<String>> {
    if !args.topics.is_empty() {
        return Ok(args.topics.clone());
    }
    let topology = topology::Topology::load(&args.topology.file)
        .with_context(|| format!("loading {}", args.topology.file.display()))?;
    Ok(topology
        .desired(&args.topology.env)?
        .into_iter()
        .filter(|t| t.kind == topology::units::TopicKind::EventLog)
        .map(|t| t.name)
        .collect())
}

fn run_backup(args: BackupArgs, bootstrap: Option<String>, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let json = args.json;
    let result = (|| {
        let base = crate::kafka_client_config(bootstrap)?;
        let options = BackupOptions {
            topics: backup_topics(&args)?,
            dir: args.dir,
            extra_groups: args.groups,
            flush_interval: args.flush_interval,
            progress_interval: args.progress_interval,
            segment_bytes: args.segment_bytes.max(1),
            once: args.once,
        };
        let stderr = &mut *io.stderr;
        block_on(backup::backup(base, options, stderr))
    })();
    backup::report(
        result,
        json,
        |s, io| {
            for t in &s.topics {
                writeln!(
                    io.stdout,
                    "{}: {} record(s) copied, {} in the backup, next offsets {:?}{}",
                    t.topic,
                    t.records,
                    t.total_records,
                    t.next_offsets,
                    if t.gaps > 0 {
                        format!(", {} GAP(S)", t.gaps)
                    } else {
                        String::new()
                    }
                )?;
            }
            writeln!(
                io.stdout,
                "backup: {} record(s) in {:.1} s ({:.0}/s) into {}",
                s.records,
                s.seconds,
                s.records_per_second,
                s.dir.display()
            )
        },
        io,
    )
}

fn run_restore(
    args: RestoreArgs,
    bootstrap: Option<String>,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let json = args.json;
    let result = (|| {
        let base = crate::kafka_client_config(bootstrap)?;
        let options = RestoreOptions {
            dir: args.from,
            topic: args.topic,
            into: args.into,
            topology_file: args.topology.file,
            env: args.topology.env,
            force: args.force,
            allow_gaps: args.allow_gaps,
            repoint_groups: args.repoint_groups,
            extra_groups: args.groups,
            database_url: args.database_url,
            offset_map: args.offset_map,
            actor: args.actor,
            timeout: args.timeout,
        };
        let stderr = &mut *io.stderr;
        block_on(backup::restore(base, options, stderr))
    })();
    backup::report(
        result,
        json,
        |s, io| {
            writeln!(
                io.stdout,
                "restored {} record(s) of {} into {} in {:.1} s ({:.0}/s); offset map {}",
                s.records,
                s.topic,
                s.target,
                s.seconds,
                s.records_per_second,
                s.offset_map.display()
            )?;
            for g in &s.groups {
                let moves: Vec<String> = g
                    .moves
                    .iter()
                    .map(|m| {
                        format!(
                            "p{} {}→{} ({})",
                            m.partition,
                            m.source_position.map_or("-".into(), |o| o.to_string()),
                            m.target,
                            m.from
                        )
                    })
                    .collect();
                writeln!(
                    io.stdout,
                    "group {} ({}): {}{}",
                    g.group,
                    match g.offsets {
                        lag::OffsetSource::Kafka => "Kafka",
                        lag::OffsetSource::Database => "consumer_offsets",
                    },
                    moves.join(", "),
                    if s.repointed { "" } else { " (not moved)" }
                )?;
            }
            Ok(())
        },
        io,
    )
}

impl Run for TopicsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let command = match self.command {
            Command::Backup(args) => return run_backup(args, self.bootstrap_servers, io),
            Command::Restore(args) => return run_restore(args, self.bootstrap_servers, io),
            Command::Topology(command) => command,
        };
        let needs_cluster = !matches!(command, topology::TopicsCommand::Export { .. });
        let bootstrap = match self.bootstrap_servers {
            Some(servers) => servers,
            None if needs_cluster => {
                anyhow::bail!(
                    "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-server or source .dev/env)"
                )
            }
            None => String::new(),
        };
        // The credentials a service would use: CHECKOUT__KAFKA__CLIENT__SASL__USERNAME is sasl.username.
        let properties: Vec<(String, String)> =
            service_kit::config::client_properties_from(std::env::vars())
                .context("CHECKOUT__KAFKA__CLIENT__* properties")?
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let result = block_on(async move {
            topology::run(command, &bootstrap, &properties)
                .await
                .context("topics command failed")
        });
        match result {
            Ok(outcome) => Ok(outcome.code()),
            // The topics commands document exit code 1 for errors and refused changes (2 is clap's usage error).
            Err(err) => {
                writeln!(io.stderr, "error: {err:#}")?;
                Ok(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// deploy/k8s/overlays/ENV/kafka-topics.yaml is checked in (kustomize needs no build) and must stay exactly
    /// `checkoutctl topics export --format strimzi --env ENV` (cluster label: the file's `system`, which is the
    /// overlays' Kafka resource; no namespace: the overlay sets it). `make deploy-topics` rewrites them.
    #[test]
    fn the_checked_in_kafka_topics_are_the_export_of_each_environment() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let topology = topology::Topology::load(&root.join(topology::DEFAULT_FILE)).unwrap();
        for env in ["development", "staging", "production", "dr"] {
            let options = topology::StrimziOptions {
                cluster: topology.system().to_string(),
                namespace: None,
                api_version: Default::default(),
            };
            let exported = topology::export_strimzi(&topology, env, &options).unwrap();
            let path = root.join(format!("deploy/k8s/overlays/{env}/kafka-topics.yaml"));
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == exported,
                "{} is not `checkoutctl topics export --format strimzi --env {env}`: run `make deploy-topics`",
                path.display()
            );
        }
    }
}
