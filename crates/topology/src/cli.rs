//! `checkoutctl topics …`: the clap subcommands, [`run`], and the process exit codes.
//!
//! The binary wires it with two lines: a `Topics { #[command(subcommand)] cmd: TopicsCommand }` variant, and
//! `topology::run(cmd, &bootstrap_servers, &properties).await?.exit_code()` as the process's exit code (an `Err` is exit 1).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{ApplyOptions, apply_plan};
use crate::cluster::Cluster;
use crate::error::TopologyError;
use crate::plan::{Disposition, Plan};
use crate::strimzi::{StrimziApiVersion, StrimziOptions, export_strimzi};
use crate::validate::Topology;

/// Where the file is, relative to the workspace root (where `make` and `deploy/local/up` run).
pub const DEFAULT_FILE: &str = "deploy/kafka/topics.yaml";

/// Process exit codes. 2 is left to clap's usage errors.
pub mod exit {
    /// The cluster matches the file (plan, apply), or the export was written.
    pub const IN_SYNC: u8 = 0;
    /// Something failed, or the file asks for a refused change (partition decrease); nothing was changed by a
    /// refused apply.
    pub const ERROR: u8 = 1;
    /// apply made changes and the cluster now matches the file.
    pub const APPLIED: u8 = 3;
    /// A human must act: a partition increase awaits --approve-partition-increase, a replication factor must be
    /// reassigned, or a topic not in the file must be deleted by hand. apply made the automatic changes.
    pub const NEEDS_APPROVAL: u8 = 4;
    /// plan --check: the cluster differs in ways that apply would fix by itself.
    pub const DRIFT: u8 = 5;
}

/// The exit codes, for `--help` of every subcommand (and of `checkoutctl topics`).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  in sync: the cluster matches the file (plan, apply), or the export was written
  1  error, or a refused change (partition decrease): a refused apply changes nothing
  2  usage error
  3  apply made changes and the cluster now matches the file
  4  a human must act: a partition increase awaits --approve-partition-increase, a replication factor must be
     reassigned by hand, or a topic not in the file must be deleted by hand (apply still made the automatic
     changes; plan --check reports the same)
  5  plan --check: drift that `apply` fixes by itself (missing topics, configs)";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicsCommand {
    /// Show how the live cluster differs from the file: topics to create, configs to change, partition
    /// changes, replication factors, topics the file does not know. Changes nothing.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Plan {
        #[command(flatten)]
        target: Target,
        /// Exit non-zero on any drift (4 or 5), e.g. as a scheduled drift check. Without it, plan exits 0
        /// whatever the drift.
        #[arg(long)]
        check: bool,
    },
    /// Make the cluster match the file: create missing topics with every config and set changed configs
    /// (retention…) automatically. Partitions are added only with --approve-partition-increase and never
    /// removed; replication factors are never changed and topics never deleted (the commands are printed).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Apply {
        #[command(flatten)]
        target: Target,
        /// Add the partitions the file asks for. This changes which partition most keys hash to: records of
        /// one key written before and after are on different partitions and lose their relative order.
        #[arg(long)]
        approve_partition_increase: bool,
    },
    /// Write the topics of an environment as resources for an operator (Strimzi KafkaTopic). Needs no cluster.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Export {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The `strimzi.io/cluster` label (name of the Kafka resource). Default: the file's `system`.
        #[arg(long)]
        cluster: Option<String>,
        /// `metadata.namespace` of every resource (omitted by default).
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        api_version: StrimziApiVersion,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Which environment, from which file.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// An environment of the file: development, staging, production, dr.
    #[arg(long)]
    pub env: String,
    /// The topology file.
    #[arg(long, env = "CHECKOUT_TOPICS_FILE", default_value = DEFAULT_FILE)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Kubernetes `KafkaTopic` resources of the Strimzi topic operator.
    Strimzi,
}

/// How a command ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing differs (plan, apply), or plan without --check, or an export.
    InSync,
    /// apply made changes; the cluster now matches.
    Applied,
    /// A human must act (see [`exit::NEEDS_APPROVAL`]).
    NeedsApproval,
    /// plan --check found drift that apply fixes by itself.
    Drift,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::InSync => exit::IN_SYNC,
            Outcome::Applied => exit::APPLIED,
            Outcome::NeedsApproval => exit::NEEDS_APPROVAL,
            Outcome::Drift => exit::DRIFT,
        }
    }

    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// What `plan --check` reports for a plan.
    pub fn of_plan(plan: &Plan) -> Outcome {
        if plan.count(Disposition::NeedsApproval) + plan.count(Disposition::Manual) > 0 {
            Outcome::NeedsApproval
        } else if plan.is_in_sync() {
            Outcome::InSync
        } else {
            Outcome::Drift
        }
    }
}

/// The exit code of a command's result: the outcome's, or [`exit::ERROR`].
pub fn exit_code(result: &Result<Outcome, TopologyError>) -> ExitCode {
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(_) => ExitCode::from(exit::ERROR),
    }
}

/// Runs one `topics` subcommand, printing the plan or report on standard output. `bootstrap_servers` and the
/// client `properties` (SASL, TLS) are not used by `export`.
pub async fn run(
    cmd: TopicsCommand,
    bootstrap_servers: &str,
    properties: &[(String, String)],
) -> Result<Outcome, TopologyError> {
    let connect = || {
        Cluster::connect_with(
            bootstrap_servers,
            properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    };
    match cmd {
        TopicsCommand::Plan { target, check } => {
            let topology = Topology::load(&target.file)?;
            let cluster = connect()?;
            let plan = Plan::read(&cluster, &topology, &target.env).await?;
            println!("{plan}");
            if plan.count(Disposition::Refused) > 0 {
                let reasons = plan
                    .with(Disposition::Refused)
                    .map(crate::apply::refusal)
                    .collect();
                return Err(TopologyError::Refused { reasons });
            }
            Ok(if check {
                Outcome::of_plan(&plan)
            } else {
                Outcome::InSync
            })
        }
        TopicsCommand::Apply {
            target,
            approve_partition_increase,
        } => {
            let topology = Topology::load(&target.file)?;
            let cluster = connect()?;
            let plan = Plan::read(&cluster, &topology, &target.env).await?;
            println!("{plan}");
            let options = ApplyOptions {
                approve_partition_increase,
                ..ApplyOptions::default()
            };
            let report = apply_plan(&cluster, &topology, plan, &options).await?;
            println!("{report}");
            Ok(report.outcome())
        }
        TopicsCommand::Export {
            target,
            format: ExportFormat::Strimzi,
            cluster,
            namespace,
            api_version,
            output,
        } => {
            let topology = Topology::load(&target.file)?;
            let cluster = cluster.unwrap_or_else(|| topology.system().to_string());
            let yaml = export_strimzi(
                &topology,
                &target.env,
                &StrimziOptions {
                    cluster,
                    namespace,
                    api_version,
                },
            )?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .map_err(|source| TopologyError::Write { path, source })?,
                None => print!("{yaml}"),
            }
            Ok(Outcome::InSync)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: TopicsCommand,
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_into_the_command() {
        let cli = Cli::parse_from([
            "topics",
            "apply",
            "--env",
            "production",
            "--approve-partition-increase",
        ]);
        let TopicsCommand::Apply {
            target,
            approve_partition_increase,
        } = cli.cmd
        else {
            panic!()
        };
        assert_eq!(
            (target.env.as_str(), approve_partition_increase),
            ("production", true)
        );
        assert_eq!(target.file, PathBuf::from(DEFAULT_FILE));

        let cli = Cli::parse_from([
            "topics", "export", "--format", "strimzi", "--env", "dr", "-o", "x.yaml",
        ]);
        assert!(matches!(
            cli.cmd,
            TopicsCommand::Export {
                format: ExportFormat::Strimzi,
                ..
            }
        ));
        assert!(
            Cli::try_parse_from(["topics", "plan"]).is_err(),
            "--env is required"
        );
    }

    #[test]
    fn the_help_documents_the_exit_codes() {
        let help = Cli::command()
            .find_subcommand_mut("apply")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("Exit codes:") && help.contains("3  apply made changes"),
            "{help}"
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_avoid_clap_usage_errors() {
        let codes = [
            exit::IN_SYNC,
            exit::ERROR,
            exit::APPLIED,
            exit::NEEDS_APPROVAL,
            exit::DRIFT,
        ];
        let unique: std::collections::BTreeSet<u8> = codes.into_iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert!(!unique.contains(&2));
    }
}
