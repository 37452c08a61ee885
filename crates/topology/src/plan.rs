//! The difference between the file (for one environment) and the live cluster, and what may be done about it.
//!
//! Each [`Change`] has a [`Disposition`], which is the spec's "Topic Management" table as code:
//!
//! | change                                 | disposition                                             |
//! | -------------------------------------- | ------------------------------------------------------- |
//! | topic missing                          | `Automatic`: created with every config                  |
//! | config differs, or is not pinned       | `Automatic`: the topic's full config set is sent        |
//! | partitions below the file              | `NeedsApproval`: `--approve-partition-increase`         |
//! | partitions above the file              | `Refused`: Kafka cannot remove partitions               |
//! | replication factor differs             | `Manual`: a reassignment plan is printed                |
//! | topic in `{system}.` not in the file   | `Manual`: the delete command is printed, never run      |
//!
//! Only topics in the file's namespace (`{system}.`) are the file's business: internal topics (`__*`) and other
//! systems' topics on a shared cluster are neither reported nor touched.
//!
//! Raising `min.insync.replicas` above a topic's live replication factor would make every `acks=all` write
//! fail, so while the replication factor lags, the plan holds `min.insync.replicas` at the live factor and
//! says so; the manual reassignment is what unblocks it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::cluster::{Cluster, ClusterState, LiveTopic};
use crate::desired::{DesiredTopic, MIN_INSYNC_REPLICAS, same_value};
use crate::error::TopologyError;
use crate::model::EnvironmentProfile;
use crate::validate::Topology;

/// What `apply` may do about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Disposition {
    /// `apply` makes it.
    Automatic,
    /// `apply` makes it only with `--approve-partition-increase`.
    NeedsApproval,
    /// A human makes it; `apply` prints how.
    Manual,
    /// Never made; `apply` refuses to run while the file asks for it.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create(DesiredTopic),
    AlterConfigs {
        topic: String,
        diffs: Vec<ConfigDiff>,
        /// The complete set to send (AlterConfigs replaces every override of the topic).
        configs: BTreeMap<&'static str, String>,
    },
    IncreasePartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    DecreasePartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    ReplicationFactor {
        topic: String,
        live: Vec<i32>,
        desired: i32,
        /// `kafka-reassign-partitions` JSON giving every partition `desired` replicas.
        reassignment: String,
        /// `(held, file)`: min.insync.replicas stays at `held` until the reassignment is done.
        min_insync_held: Option<(i32, i32)>,
    },
    Unknown {
        topic: String,
        partitions: i32,
    },
}

/// One config that differs. `desired: None` means the override is removed (the file does not set it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    pub key: String,
    pub live: Option<String>,
    /// False when the live value is inherited from a broker default rather than pinned on the topic.
    pub live_is_override: bool,
    pub desired: Option<String>,
    /// Why the desired value is not the file's (min ISR held at the live replication factor).
    pub note: Option<String>,
}

impl Change {
    pub fn topic(&self) -> &str {
        match self {
            Change::Create(t) => &t.name,
            Change::AlterConfigs { topic, .. }
            | Change::IncreasePartitions { topic, .. }
            | Change::DecreasePartitions { topic, .. }
            | Change::ReplicationFactor { topic, .. }
            | Change::Unknown { topic, .. } => topic,
        }
    }

    pub fn disposition(&self) -> Disposition {
        match self {
            Change::Create(_) | Change::AlterConfigs { .. } => Disposition::Automatic,
            Change::IncreasePartitions { .. } => Disposition::NeedsApproval,
            Change::ReplicationFactor { .. } | Change::Unknown { .. } => Disposition::Manual,
            Change::DecreasePartitions { .. } => Disposition::Refused,
        }
    }
}

/// The plan of one environment against one cluster.
#[derive(Debug, Clone)]
pub struct Plan {
    pub environment: String,
    pub bootstrap_servers: String,
    pub brokers: Vec<i32>,
    pub changes: Vec<Change>,
    /// Declared topics that already match the file.
    pub in_sync: Vec<String>,
    /// Cluster-wide observations that no `apply` acts on (broker defaults, broker count).
    pub notes: Vec<String>,
}

impl Plan {
    /// Reads the cluster and compares it with the file.
    pub async fn read(
        cluster: &Cluster,
        topology: &Topology,
        env: &str,
    ) -> Result<Plan, TopologyError> {
        topology.environment(env)?;
        let state = cluster.state(topology.topic_names()).await?;
        Plan::compute(topology, env, &state, cluster.bootstrap_servers())
    }

    /// Compares an already-read cluster state with the file.
    pub fn compute(
        topology: &Topology,
        env: &str,
        state: &ClusterState,
        bootstrap_servers: &str,
    ) -> Result<Plan, TopologyError> {
        let profile = topology.environment(env)?;
        if state.brokers.len() < profile.replication_factor as usize {
            return Err(TopologyError::ClusterTooSmall {
                environment: env.to_string(),
                replication_factor: profile.replication_factor as i32,
                brokers: state.brokers.len(),
            });
        }
        let desired = topology.desired(env)?;
        let mut changes = Vec::new();
        let mut in_sync = Vec::new();
        for want in &desired {
            let Some(live) = state.topics.get(&want.name) else {
                changes.push(Change::Create(want.clone()));
                continue;
            };
            if let Some(reason) = &live.error {
                return Err(TopologyError::TopicNotReady {
                    topic: want.name.clone(),
                    reason: reason.clone(),
                });
            }
            let before = changes.len();
            compare(want, live, &state.brokers, &mut changes);
            if changes.len() == before {
                in_sync.push(want.name.clone());
            }
        }

        let declared: BTreeSet<&str> = desired.iter().map(|t| t.name.as_str()).collect();
        let namespace = format!("{}.", topology.system());
        for (name, live) in &state.topics {
            if name.starts_with(&namespace) && !declared.contains(name.as_str()) {
                changes.push(Change::Unknown {
                    topic: name.clone(),
                    partitions: live.partition_count(),
                });
            }
        }

        Ok(Plan {
            environment: env.to_string(),
            bootstrap_servers: bootstrap_servers.to_string(),
            brokers: state.brokers.clone(),
            changes,
            in_sync,
            notes: cluster_notes(env, profile, state),
        })
    }

    pub fn is_in_sync(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn with(&self, disposition: Disposition) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(move |c| c.disposition() == disposition)
    }

    pub fn count(&self, disposition: Disposition) -> usize {
        self.with(disposition).count()
    }
}

/// Partitions, replication factor and configs of one existing topic.
fn compare(want: &DesiredTopic, live: &LiveTopic, brokers: &[i32], changes: &mut Vec<Change>) {
    let topic = want.name.clone();
    let (from, to) = (live.partition_count(), want.partitions);
    if to > from {
        changes.push(Change::IncreasePartitions {
            topic: topic.clone(),
            from,
            to,
        });
    } else if to < from {
        changes.push(Change::DecreasePartitions {
            topic: topic.clone(),
            from,
            to,
        });
    }

    let mut target = want.configs.clone();
    let mut held = None;
    let live_rf = live.min_replication_factor();
    let wanted_isr: i32 = want.configs[MIN_INSYNC_REPLICAS]
        .parse()
        .expect("desired min ISR is an integer");
    let min_insync_held = (live_rf < wanted_isr).then(|| (live_rf.max(1), wanted_isr));
    if let Some((value, _)) = min_insync_held {
        target.insert(MIN_INSYNC_REPLICAS, value.to_string());
        held = Some(format!(
            "the file says {wanted_isr}; held at the live replication factor {live_rf} until the reassignment is \
             done, or every acks=all write would fail"
        ));
    }

    let factors = live.replication_factors();
    if factors != [want.replication_factor] {
        changes.push(Change::ReplicationFactor {
            topic: topic.clone(),
            live: factors,
            desired: want.replication_factor,
            reassignment: reassignment_json(live, want.replication_factor, brokers),
            min_insync_held,
        });
    }

    let mut diffs = Vec::new();
    for (key, value) in &target {
        let current = live.configs.get(*key);
        let pinned_and_equal = current.is_some_and(|c| {
            c.is_override
                && c.value
                    .as_deref()
                    .is_some_and(|v| same_value(key, v, value))
        });
        if !pinned_and_equal {
            diffs.push(ConfigDiff {
                key: key.to_string(),
                live: current.and_then(|c| c.value.clone()),
                live_is_override: current.is_some_and(|c| c.is_override),
                desired: Some(value.clone()),
                note: if *key == MIN_INSYNC_REPLICAS {
                    held.clone()
                } else {
                    None
                },
            });
        }
    }
    for (key, value) in live.overrides() {
        if !target.contains_key(key) {
            diffs.push(ConfigDiff {
                key: key.to_string(),
                live: Some(value.to_string()),
                live_is_override: true,
                desired: None,
                note: None,
            });
        }
    }
    if !diffs.is_empty() {
        changes.push(Change::AlterConfigs {
            topic,
            diffs,
            configs: target,
        });
    }
}

/// A `kafka-reassign-partitions` plan giving every partition `rf` replicas: existing replicas are kept
/// (preferred leader first); missing ones are taken round-robin from the brokers, starting at a different
/// broker for each partition to spread the load.
fn reassignment_json(live: &LiveTopic, rf: i32, brokers: &[i32]) -> String {
    let rf = rf as usize;
    let lines: Vec<String> = live
        .partitions
        .iter()
        .map(|p| {
            let mut replicas: Vec<i32> = p.replicas.iter().copied().take(rf).collect();
            let n = brokers.len();
            for i in 0..n {
                if replicas.len() >= rf {
                    break;
                }
                let broker = brokers[(p.id as usize + i) % n];
                if !replicas.contains(&broker) {
                    replicas.push(broker);
                }
            }
            serde_json::json!({"topic": live.name, "partition": p.id, "replicas": replicas})
                .to_string()
        })
        .collect();
    format!(
        "{{\"version\":1,\"partitions\":[\n  {}\n]}}",
        lines.join(",\n  ")
    )
}

/// Broker-level settings of the profile that the cluster does not have. They affect only topics the file does
/// not declare (every declared topic pins its own values), and `apply` never changes broker configuration.
fn cluster_notes(env: &str, profile: &EnvironmentProfile, state: &ClusterState) -> Vec<String> {
    let mut notes = Vec::new();
    if state.brokers.len() != profile.brokers as usize {
        notes.push(format!(
            "the cluster has {} broker(s); the {env} profile describes {}",
            state.brokers.len(),
            profile.brokers
        ));
    }
    let defaults = &state.broker_defaults;
    let number = |key: &str| defaults.get(key).and_then(|v| v.parse::<i64>().ok());
    let retention_ms = number("log.retention.ms")
        .or_else(|| number("log.retention.minutes").map(|m| m * 60_000))
        .or_else(|| number("log.retention.hours").map(|h| h * 3_600_000));
    let expected: [(&str, Option<i64>, i64); 5] = [
        (
            "default.replication.factor",
            number("default.replication.factor"),
            profile.replication_factor.into(),
        ),
        (
            "min.insync.replicas",
            number("min.insync.replicas"),
            profile.min_insync_replicas.into(),
        ),
        (
            "log.retention.ms",
            retention_ms,
            profile.retention.as_millis() as i64,
        ),
        (
            "log.segment.bytes",
            number("log.segment.bytes"),
            profile.segment_size.as_bytes() as i64,
        ),
        (
            "message.max.bytes",
            number("message.max.bytes"),
            profile.max_message_size.as_bytes() as i64,
        ),
    ];
    for (key, live, want) in expected {
        match live {
            Some(live) if live != want => notes.push(format!(
                "broker default {key} is {live}, the {env} profile says {want} (only topics outside this file use \
                 it; it is set in the brokers' configuration, not by apply)"
            )),
            _ => {}
        }
    }
    if defaults
        .get("auto.create.topics.enable")
        .is_some_and(|v| v != "false")
    {
        notes.push(
            "auto.create.topics.enable is not false: a typo in a producer's topic name creates a topic with broker \
             defaults instead of failing"
                .into(),
        );
    }
    notes
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let brokers: Vec<String> = self.brokers.iter().map(i32::to_string).collect();
        writeln!(
            f,
            "Topics of environment `{}` on {} (brokers: {}):",
            self.environment,
            self.bootstrap_servers,
            brokers.join(", ")
        )?;
        for change in &self.changes {
            write_change(f, change, &self.bootstrap_servers)?;
        }
        for topic in &self.in_sync {
            writeln!(f, "  = in sync    {topic}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        if self.is_in_sync() {
            write!(f, "In sync: nothing to do.")
        } else {
            write!(
                f,
                "Drift: {} automatic (apply), {} awaiting approval, {} manual, {} refused.",
                self.count(Disposition::Automatic),
                self.count(Disposition::NeedsApproval),
                self.count(Disposition::Manual),
                self.count(Disposition::Refused),
            )
        }
    }
}

fn write_change(f: &mut fmt::Formatter<'_>, change: &Change, bootstrap: &str) -> fmt::Result {
    const PAD: &str = "                 ";
    match change {
        Change::Create(t) => {
            writeln!(
                f,
                "  + create     {} ({} partitions, replication factor {})",
                t.name, t.partitions, t.replication_factor
            )?;
            let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "{PAD}{}", configs.join(" "))
        }
        Change::AlterConfigs { topic, diffs, .. } => {
            writeln!(f, "  ~ configure  {topic}")?;
            for d in diffs {
                let live = match (&d.live, d.live_is_override) {
                    (Some(v), true) => v.clone(),
                    (Some(v), false) => format!("{v} (broker default, not pinned)"),
                    (None, _) => "(unset)".into(),
                };
                let desired = d
                    .desired
                    .clone()
                    .unwrap_or_else(|| "(override removed)".into());
                write!(f, "{PAD}{}: {live} -> {desired}", d.key)?;
                match &d.note {
                    Some(note) => writeln!(f, " ({note})")?,
                    None => writeln!(f)?,
                }
            }
            Ok(())
        }
        Change::IncreasePartitions { topic, from, to } => writeln!(
            f,
            "  ! approve    {topic}: partitions {from} -> {to}, only with --approve-partition-increase.\n\
             {PAD}Keys hash modulo the partition count, so most keys move to another partition: a key's records\n\
             {PAD}written before and after the change are on different partitions and their relative order is lost\n\
             {PAD}for consumers. Stop or drain the producers of the topic first."
        ),
        Change::DecreasePartitions { topic, from, to } => writeln!(
            f,
            "  x refused    {topic}: partitions {from} -> {to}. Kafka cannot remove partitions; put {from} back in the\n\
             {PAD}file, or create a new topic and migrate its consumers."
        ),
        Change::ReplicationFactor {
            topic,
            live,
            desired,
            reassignment,
            min_insync_held,
        } => {
            let live: Vec<String> = live.iter().map(i32::to_string).collect();
            writeln!(
                f,
                "  ! manual     {topic}: replication factor {} -> {desired}; apply never changes it. Reassign by hand:",
                live.join("/")
            )?;
            if let Some((held, file)) = min_insync_held {
                writeln!(
                    f,
                    "{PAD}(min.insync.replicas stays at {held} until then, not the file's {file}: acks=all writes \
                     would fail)"
                )?;
            }
            writeln!(f, "{PAD}cat > reassign.json <<'EOF'")?;
            for line in reassignment.lines() {
                writeln!(f, "{PAD}{line}")?;
            }
            writeln!(f, "{PAD}EOF")?;
            writeln!(
                f,
                "{PAD}kafka-reassign-partitions.sh --bootstrap-server {bootstrap} --reassignment-json-file reassign.json --execute"
            )?;
            writeln!(
                f,
                "{PAD}kafka-reassign-partitions.sh --bootstrap-server {bootstrap} --reassignment-json-file reassign.json --verify"
            )
        }
        Change::Unknown { topic, partitions } => writeln!(
            f,
            "  ? unknown    {topic} ({partitions} partitions): on the cluster, not in the file. Topics are deleted by\n\
             {PAD}hand only; add it to the file, or if it must go:\n\
             {PAD}kafka-topics.sh --bootstrap-server {bootstrap} --delete --topic {topic}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cluster::{LiveConfig, LivePartition};

    fn real() -> Topology {
        Topology::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kafka/topics.yaml"),
        )
        .unwrap()
    }

    /// A cluster that has exactly what the file asks for `env`, on `brokers`.
    fn matching(topology: &Topology, env: &str, brokers: &[i32]) -> ClusterState {
        let mut topics = BTreeMap::new();
        for t in topology.desired(env).unwrap() {
            let partitions = (0..t.partitions)
                .map(|id| LivePartition {
                    id,
                    replicas: (0..t.replication_factor)
                        .map(|r| brokers[(id + r) as usize % brokers.len()])
                        .collect(),
                    leader: brokers[0],
                })
                .collect();
            let configs = t
                .configs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        LiveConfig {
                            value: Some(v.clone()),
                            is_override: true,
                        },
                    )
                })
                .collect();
            topics.insert(
                t.name.clone(),
                LiveTopic {
                    name: t.name,
                    partitions,
                    configs,
                    error: None,
                },
            );
        }
        ClusterState {
            brokers: brokers.to_vec(),
            topics,
            broker_defaults: BTreeMap::new(),
        }
    }

    const DOMAIN: &str = "crypto-checkout.domain-events";

    #[test]
    fn a_matching_cluster_is_in_sync() {
        let topology = real();
        let plan = Plan::compute(
            &topology,
            "production",
            &matching(&topology, "production", &[1, 2, 3]),
            "k",
        )
        .unwrap();
        assert!(plan.is_in_sync(), "{plan}");
        // 4 core topics, their 4 DLQs, the DLQs' 4 parking lots and the canary.
        assert_eq!(plan.in_sync.len(), 13);
    }

    #[test]
    fn an_empty_cluster_needs_every_topic_created() {
        let topology = real();
        let empty = ClusterState {
            brokers: vec![1],
            topics: BTreeMap::new(),
            broker_defaults: BTreeMap::new(),
        };
        let plan = Plan::compute(&topology, "development", &empty, "k").unwrap();
        assert_eq!(plan.count(Disposition::Automatic), 13);
        assert!(plan.changes.iter().all(|c| matches!(c, Change::Create(_))));
    }

    #[test]
    fn an_inherited_value_is_drift_until_pinned() {
        let topology = real();
        let mut state = matching(&topology, "development", &[1]);
        state
            .topics
            .get_mut(DOMAIN)
            .unwrap()
            .configs
            .get_mut("min.insync.replicas")
            .unwrap()
            .is_override = false;
        let plan = Plan::compute(&topology, "development", &state, "k").unwrap();
        let [
            Change::AlterConfigs {
                topic,
                diffs,
                configs,
            },
        ] = plan.changes.as_slice()
        else {
            panic!("{plan}")
        };
        assert_eq!((topic.as_str(), diffs.len(), configs.len()), (DOMAIN, 1, 6));
    }

    #[test]
    fn a_foreign_override_is_removed_by_sending_the_full_set() {
        let topology = real();
        let mut state = matching(&topology, "development", &[1]);
        let extra = LiveConfig {
            value: Some("1000".into()),
            is_override: true,
        };
        state
            .topics
            .get_mut(DOMAIN)
            .unwrap()
            .configs
            .insert("retention.bytes".into(), extra);
        let plan = Plan::compute(&topology, "development", &state, "k").unwrap();
        let [Change::AlterConfigs { diffs, configs, .. }] = plan.changes.as_slice() else {
            panic!("{plan}")
        };
        assert_eq!(diffs[0].key, "retention.bytes");
        assert_eq!(diffs[0].desired, None);
        assert!(!configs.contains_key("retention.bytes"));
    }

    #[test]
    fn partitions_are_increased_only_with_approval_and_never_decreased() {
        let mut file = real().into_file();
        file.topic_mut(DOMAIN).unwrap().partitions = 16;
        file.topic_mut("crypto-checkout.analytics-events")
            .unwrap()
            .partitions = 2;
        let topology = file.validate("<test>").unwrap();
        let state = matching(&real(), "development", &[1]);
        let plan = Plan::compute(&topology, "development", &state, "k").unwrap();
        let approvals: Vec<&str> = plan
            .with(Disposition::NeedsApproval)
            .map(Change::topic)
            .collect();
        assert_eq!(
            approvals,
            [
                DOMAIN,
                "crypto-checkout.domain-events.dlq",
                "crypto-checkout.domain-events.dlq.parked"
            ]
        );
        let refused: Vec<&Change> = plan.with(Disposition::Refused).collect();
        // The topic, its dead-letter topic and its parking lot, which follow the source's partition count.
        assert!(
            matches!(
                refused.as_slice(),
                [
                    Change::DecreasePartitions { from: 3, to: 2, .. },
                    Change::DecreasePartitions { from: 3, to: 2, .. },
                    Change::DecreasePartitions { from: 3, to: 2, .. }
                ]
            ),
            "{plan}"
        );
        assert_eq!(
            refused.iter().map(|c| c.topic()).collect::<Vec<_>>(),
            [
                "crypto-checkout.analytics-events",
                "crypto-checkout.analytics-events.dlq",
                "crypto-checkout.analytics-events.dlq.parked"
            ]
        );
    }

    #[test]
    fn replication_drift_prints_a_reassignment_and_holds_min_isr() {
        let topology = real();
        // Created with the development profile (RF 1) on a 3-broker cluster, planned as production (RF 3).
        let state = matching(&topology, "development", &[1, 2, 3]);
        let plan = Plan::compute(&topology, "production", &state, "k").unwrap();
        assert_eq!(plan.count(Disposition::Manual), 13, "{plan}");
        let rf = plan
            .changes
            .iter()
            .find(|c| matches!(c, Change::ReplicationFactor { .. }) && c.topic() == DOMAIN);
        let Some(Change::ReplicationFactor {
            live,
            desired,
            reassignment,
            ..
        }) = rf
        else {
            panic!("{plan}")
        };
        assert_eq!((live.as_slice(), *desired), (&[1][..], 3));
        let json: serde_json::Value = serde_json::from_str(reassignment).unwrap();
        let partitions = json["partitions"].as_array().unwrap();
        assert_eq!(partitions.len(), 12);
        for p in partitions {
            let replicas: BTreeSet<i64> = p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_i64().unwrap())
                .collect();
            assert_eq!(replicas.len(), 3, "{p}");
        }
        let alter = plan
            .changes
            .iter()
            .find(|c| matches!(c, Change::AlterConfigs { .. }) && c.topic() == DOMAIN);
        let Some(Change::AlterConfigs { configs, diffs, .. }) = alter else {
            panic!("{plan}")
        };
        assert_eq!(configs[MIN_INSYNC_REPLICAS], "1", "held at the live RF");
        assert!(
            diffs.iter().all(|d| d.key != MIN_INSYNC_REPLICAS),
            "already 1: no diff"
        );
    }

    #[test]
    fn only_the_files_namespace_is_reported_as_unknown() {
        let topology = real();
        let mut state = matching(&topology, "development", &[1]);
        for name in [
            "crypto-checkout.legacy-events",
            "__consumer_offsets",
            "test-0a1b2c",
            "crypto-checkoutx.a",
        ] {
            let topic = LiveTopic {
                name: name.into(),
                partitions: vec![],
                configs: BTreeMap::new(),
                error: None,
            };
            state.topics.insert(name.into(), topic);
        }
        let plan = Plan::compute(&topology, "development", &state, "k").unwrap();
        let unknown: Vec<&str> = plan.with(Disposition::Manual).map(Change::topic).collect();
        assert_eq!(unknown, ["crypto-checkout.legacy-events"]);
        assert!(
            plan.to_string()
                .contains("--delete --topic crypto-checkout.legacy-events")
        );
    }

    #[test]
    fn a_cluster_smaller_than_the_replication_factor_is_an_error() {
        let topology = real();
        let empty = ClusterState {
            brokers: vec![1],
            topics: BTreeMap::new(),
            broker_defaults: BTreeMap::new(),
        };
        let err = Plan::compute(&topology, "production", &empty, "k").unwrap_err();
        assert!(
            matches!(
                err,
                TopologyError::ClusterTooSmall {
                    replication_factor: 3,
                    brokers: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn broker_defaults_that_differ_from_the_profile_are_notes() {
        let topology = real();
        let mut state = matching(&topology, "production", &[1, 2, 3]);
        state.broker_defaults = BTreeMap::from([
            ("log.retention.hours".to_string(), "168".to_string()),
            ("log.segment.bytes".to_string(), "1073741824".to_string()),
        ]);
        let plan = Plan::compute(&topology, "production", &state, "k").unwrap();
        assert!(plan.is_in_sync());
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(
            plan.notes[0].contains("log.retention.ms is 604800000"),
            "{:?}",
            plan.notes
        );
    }
}
