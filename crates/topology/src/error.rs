//! The one error type of the crate.
//!
//! Every variant but [`TopologyError::Kafka`], [`TopologyError::TopicNotReady`] and
//! [`TopologyError::NotConverged`] is **permanent**: the file, the
//! command or the cluster's shape is wrong and the same command will fail the same way until a human changes
//! something. Those three may pass on a retry (broker unreachable, metadata not yet propagated); see
//! [`TopologyError::is_retriable`]. Whatever the variant, the process exit code is [`crate::exit::ERROR`].

use std::fmt;
use std::path::PathBuf;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// One thing wrong with the file: which topic/environment, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `topic \`crypto-checkout.domain-events\``, `environment \`production\``, `file`.
    pub subject: String,
    /// The field as written in the file (`partitions`, `cleanup_policy.event_log`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        subject: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            subject: subject.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.subject, self.message)
        } else {
            write!(
                f,
                "{}, field `{}`: {}",
                self.subject, self.field, self.message
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot read the topology file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The file is not valid YAML for the model (unknown field, wrong type, missing field, bad unit).
    #[error("{origin}: {problem}{}", location.map(|(l, c)| format!(" (line {l}, column {c})")).unwrap_or_default())]
    Parse {
        origin: String,
        problem: Problem,
        location: Option<(usize, usize)>,
    },

    /// The file parsed but breaks a rule (naming convention, ranges, cross-references). Lists every problem.
    #[error("{origin} is invalid:{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },

    #[error("unknown environment `{name}`: the file defines {}", known.join(", "))]
    UnknownEnvironment { name: String, known: Vec<String> },

    /// The cluster cannot hold the profile at all (fewer brokers than the replication factor).
    #[error(
        "environment `{environment}` needs replication factor {replication_factor}, but the cluster has only {brokers} broker(s): wrong --env or wrong cluster?"
    )]
    ClusterTooSmall {
        environment: String,
        replication_factor: i32,
        brokers: usize,
    },

    /// The plan holds changes that are never made automatically (a partition decrease). Nothing was changed.
    #[error("refused, nothing was changed:{}", reasons.iter().map(|r| format!("\n  - {r}")).collect::<String>())]
    Refused { reasons: Vec<String> },

    /// A request to the cluster failed as a whole (unreachable, timed out).
    #[error("Kafka {operation} failed: {source}")]
    Kafka {
        operation: &'static str,
        source: KafkaError,
    },

    /// Metadata cannot describe a declared topic yet (just created, leader moving).
    #[error("topic `{topic}` is not readable yet: {reason}")]
    TopicNotReady { topic: String, reason: String },

    /// The cluster rejected an operation on one topic.
    #[error("Kafka refused to {operation} `{topic}`: {code}")]
    TopicOperation {
        topic: String,
        operation: &'static str,
        code: RDKafkaErrorCode,
    },

    /// Changes were sent but the cluster does not show them within the deadline.
    #[error("changes were sent but the cluster still differs after {seconds}s:{}", remaining.iter().map(|r| format!("\n  - {r}")).collect::<String>())]
    NotConverged {
        seconds: u64,
        remaining: Vec<String>,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TopologyError {
    /// True when the same command may succeed later without anyone changing the file or the cluster.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            TopologyError::Kafka { .. }
                | TopologyError::TopicNotReady { .. }
                | TopologyError::NotConverged { .. }
        )
    }

    pub(crate) fn kafka(operation: &'static str) -> impl FnOnce(KafkaError) -> TopologyError {
        move |source| TopologyError::Kafka { operation, source }
    }
}
