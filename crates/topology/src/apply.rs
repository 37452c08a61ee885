//! Makes the cluster match the file, within the limits of the spec's "Topic Management" table.
//!
//! Order and guarantees:
//! 1. A plan with a refused change (partition decrease) changes **nothing**: the error lists why.
//! 2. Missing topics are created with their partitions, replication factor and every config in one request.
//! 3. Topics whose configs differ get their complete config set (AlterConfigs replaces all overrides).
//! 4. Partitions are added only with [`ApplyOptions::approve_partition_increase`].
//! 5. Replication factor changes and deletions are never made; they stay in [`ApplyReport::pending`] with the
//!    commands to run by hand.
//! 6. The cluster is read again until it shows every change made (and a leader for every partition), so
//!    "applied" means "visible to clients", or [`TopologyError::NotConverged`] after the deadline.

use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::admin::{AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::cli::Outcome;
use crate::cluster::Cluster;
use crate::error::TopologyError;
use crate::plan::{Change, Disposition, Plan};
use crate::validate::Topology;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Add partitions where the file asks for more (changes the key → partition mapping).
    pub approve_partition_increase: bool,
    /// How long to wait for the cluster to show the changes.
    pub converge_within: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            approve_partition_increase: false,
            converge_within: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// The plan that was applied.
    pub plan: Plan,
    /// The changes made.
    pub applied: Vec<Change>,
    /// The changes left for a human: unapproved partition increases, replication factors, unknown topics.
    pub pending: Vec<Change>,
}

impl ApplyReport {
    pub fn outcome(&self) -> Outcome {
        if !self.pending.is_empty() {
            Outcome::NeedsApproval
        } else if !self.applied.is_empty() {
            Outcome::Applied
        } else {
            Outcome::InSync
        }
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |pred: fn(&Change) -> bool| self.applied.iter().filter(|c| pred(c)).count();
        if self.applied.is_empty() {
            write!(f, "Applied nothing.")?;
        } else {
            write!(
                f,
                "Applied: {} created, {} configured, {} given more partitions; the cluster shows every change.",
                count(|c| matches!(c, Change::Create(_))),
                count(|c| matches!(c, Change::AlterConfigs { .. })),
                count(|c| matches!(c, Change::IncreasePartitions { .. })),
            )?;
        }
        if !self.pending.is_empty() {
            write!(f, "\nLeft for a human (see above):")?;
            for change in &self.pending {
                let what = match change {
                    Change::IncreasePartitions { from, to, .. } => {
                        format!(
                            "partitions {from} -> {to}: re-run with --approve-partition-increase"
                        )
                    }
                    Change::ReplicationFactor { desired, .. } => {
                        format!("replication factor -> {desired}: reassign")
                    }
                    Change::Unknown { .. } => {
                        "not in the file: add it, or delete it by hand".to_string()
                    }
                    other => format!("{:?}", other.disposition()),
                };
                write!(f, "\n  - {}: {what}", change.topic())?;
            }
        }
        Ok(())
    }
}

/// Plans and applies in one call.
pub async fn apply(
    cluster: &Cluster,
    topology: &Topology,
    env: &str,
    options: &ApplyOptions,
) -> Result<ApplyReport, TopologyError> {
    let plan = Plan::read(cluster, topology, env).await?;
    apply_plan(cluster, topology, plan, options).await
}

/// Applies a plan read from the same cluster a moment ago.
pub async fn apply_plan(
    cluster: &Cluster,
    topology: &Topology,
    plan: Plan,
    options: &ApplyOptions,
) -> Result<ApplyReport, TopologyError> {
    let reasons: Vec<String> = plan.with(Disposition::Refused).map(refusal).collect();
    if !reasons.is_empty() {
        return Err(TopologyError::Refused { reasons });
    }

    let approved = |c: &Change| match c.disposition() {
        Disposition::Automatic => true,
        Disposition::NeedsApproval => options.approve_partition_increase,
        Disposition::Manual | Disposition::Refused => false,
    };
    let (applied, pending): (Vec<Change>, Vec<Change>) =
        plan.changes.iter().cloned().partition(approved);

    create_topics(cluster, &applied).await?;
    alter_configs(cluster, &applied).await?;
    create_partitions(cluster, &applied).await?;
    if !applied.is_empty() {
        converge(cluster, topology, &plan.environment, options).await?;
    }
    Ok(ApplyReport {
        plan,
        applied,
        pending,
    })
}

pub(crate) fn refusal(change: &Change) -> String {
    match change {
        Change::DecreasePartitions { topic, from, to } => {
            format!(
                "{topic}: the file asks for {to} partitions but the topic has {from}; Kafka cannot remove partitions"
            )
        }
        other => format!("{}: {other:?}", other.topic()),
    }
}

async fn create_topics(cluster: &Cluster, changes: &[Change]) -> Result<(), TopologyError> {
    let new_topics: Vec<NewTopic> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Create(t) => Some(t),
            _ => None,
        })
        .map(|t| {
            let replication = TopicReplication::Fixed(t.replication_factor);
            t.configs.iter().fold(
                NewTopic::new(&t.name, t.partitions, replication),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    if new_topics.is_empty() {
        return Ok(());
    }
    let results = cluster
        .admin()
        .create_topics(&new_topics, &cluster.options())
        .await
        .map_err(TopologyError::kafka("create topics"))?;
    for result in results {
        match result {
            Ok(_) => {}
            // Created concurrently (another apply): the convergence check compares it with the file.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopologyError::TopicOperation {
                    topic,
                    operation: "create",
                    code,
                });
            }
        }
    }
    Ok(())
}

async fn alter_configs(cluster: &Cluster, changes: &[Change]) -> Result<(), TopologyError> {
    let alters: Vec<AlterConfig> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AlterConfigs { topic, configs, .. } => Some((topic, configs)),
            _ => None,
        })
        .map(|(topic, configs)| {
            // The complete set: the broker drops every override not in the request.
            configs.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(topic)),
                |ac, (k, v)| ac.set(k, v),
            )
        })
        .collect();
    if alters.is_empty() {
        return Ok(());
    }
    let results = cluster
        .admin()
        .alter_configs(&alters, &cluster.options())
        .await
        .map_err(TopologyError::kafka("alter configs"))?;
    for result in results {
        if let Err((resource, code)) = result {
            let topic = match resource {
                rdkafka::admin::OwnedResourceSpecifier::Topic(name) => name,
                other => format!("{other:?}"),
            };
            return Err(TopologyError::TopicOperation {
                topic,
                operation: "alter the configs of",
                code,
            });
        }
    }
    Ok(())
}

async fn create_partitions(cluster: &Cluster, changes: &[Change]) -> Result<(), TopologyError> {
    let increases: Vec<NewPartitions> = changes
        .iter()
        .filter_map(|c| match c {
            Change::IncreasePartitions { topic, to, .. } => {
                Some(NewPartitions::new(topic, *to as usize))
            }
            _ => None,
        })
        .collect();
    if increases.is_empty() {
        return Ok(());
    }
    let results = cluster
        .admin()
        .create_partitions(&increases, &cluster.options())
        .await
        .map_err(TopologyError::kafka("create partitions"))?;
    for result in results {
        if let Err((topic, code)) = result {
            return Err(TopologyError::TopicOperation {
                topic,
                operation: "add partitions to",
                code,
            });
        }
    }
    Ok(())
}

/// Reads the cluster until no automatic (or approved) change is left and every declared topic has a leader
/// for each partition.
async fn converge(
    cluster: &Cluster,
    topology: &Topology,
    env: &str,
    options: &ApplyOptions,
) -> Result<(), TopologyError> {
    let started = Instant::now();
    loop {
        let remaining = match remaining(cluster, topology, env, options).await {
            Ok(remaining) if remaining.is_empty() => return Ok(()),
            Ok(remaining) => remaining,
            Err(e) if e.is_retriable() => vec![e.to_string()],
            Err(e) => return Err(e),
        };
        if started.elapsed() >= options.converge_within {
            return Err(TopologyError::NotConverged {
                seconds: started.elapsed().as_secs(),
                remaining,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn remaining(
    cluster: &Cluster,
    topology: &Topology,
    env: &str,
    options: &ApplyOptions,
) -> Result<Vec<String>, TopologyError> {
    let state = cluster.state(topology.topic_names()).await?;
    let plan = Plan::compute(topology, env, &state, cluster.bootstrap_servers())?;
    let mut remaining: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| {
            c.disposition() == Disposition::Automatic
                || c.disposition() == Disposition::NeedsApproval
                    && options.approve_partition_increase
        })
        .map(|c| format!("{}: {c:?}", c.topic()))
        .collect();
    for name in topology.topic_names() {
        if state
            .topics
            .get(name)
            .is_some_and(|t| !t.all_partitions_have_a_leader())
        {
            remaining.push(format!("{name}: a partition has no leader yet"));
        }
    }
    Ok(remaining)
}
