//! Topics and cluster settings as code.
//!
//! `deploy/kafka/topics.yaml` declares the spec's core and dead-letter topics and its environment profiles.
//! This crate guarantees:
//! - **Nothing invalid reaches a cluster.** The file is parsed with unknown fields denied and validated
//!   (naming convention, ranges, DLQ cross-references) into a [`Topology`]; every error names the topic or
//!   environment and the field.
//! - **One mapping to Kafka.** [`desired`] turns a topic and an environment into partitions, replication factor
//!   and the complete set of topic configs; `apply` and the Strimzi export both use it.
//! - **The spec's Topic Management rules.** [`Plan`] diffs the file with the live cluster and gives each change a
//!   [`Disposition`]: creation and config changes are automatic; partition increases need approval; decreases
//!   are refused; replication factor changes and deletions are left to a human with the commands printed.
//! - **Applied means visible.** [`apply()`] re-reads the cluster until it shows every change it made.
//!
//! Layout: [`model`] (the file) → [`validate`] ([`Topology`]) → [`desired`] (Kafka settings) → [`cluster`]
//! (live state) → [`plan`] → [`apply`] / [`strimzi`]; [`cli`] is `checkoutctl topics`. Units in [`units`],
//! errors in [`error`]. Decisions: docs/decisions/0005 (cleanup policy), 0006 (compression, retention, sizes).

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod desired;
pub mod error;
pub mod model;
pub mod plan;
pub mod strimzi;
pub mod units;
pub mod validate;

pub use apply::{ApplyOptions, ApplyReport, apply, apply_plan};
pub use cli::{
    DEFAULT_FILE, EXIT_CODES_HELP, ExportFormat, Outcome, Target, TopicsCommand, exit, exit_code,
    run,
};
pub use cluster::{Cluster, ClusterState, LiveTopic};
pub use desired::DesiredTopic;
pub use error::{Problem, TopologyError};
pub use model::TopologyFile;
pub use plan::{Change, ConfigDiff, Disposition, Plan};
pub use strimzi::{StrimziApiVersion, StrimziOptions, export_strimzi};
pub use validate::Topology;
