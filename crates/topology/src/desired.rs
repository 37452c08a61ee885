//! The one place where the file becomes Kafka settings: for an environment, every declared topic with its
//! partition count, replication factor and the **complete** set of topic-level configs.
//!
//! | Kafka topic config    | from                                                                  |
//! | --------------------- | --------------------------------------------------------------------- |
//! | `retention.ms`        | the topic's `retention` (every environment; decision 0006)            |
//! | `cleanup.policy`      | the environment's `cleanup_policy` for the topic's `kind` (0005)      |
//! | `compression.type`    | the environment's `compression` (0006)                                |
//! | `segment.bytes`       | the environment's `segment_size`                                      |
//! | `max.message.bytes`   | the environment's `max_message_size`                                  |
//! | `min.insync.replicas` | the environment's `min_insync_replicas`                               |
//!
//! Every value is pinned as a topic-level override, so a topic never silently changes when a broker default
//! does. The set is complete on purpose: Kafka's AlterConfigs replaces all overrides of a topic, so anything not
//! in this map is removed by `apply`.
//!
//! Dead-letter topics are event logs with their source's partition count (a failed record keeps its
//! partition number and so its key's order); so are their parking lots `<dlq>.parked` (decision 0035), with the
//! DLQ entry's `parked_retention`.

use std::collections::BTreeMap;

use crate::error::TopologyError;
use crate::units::TopicKind;
use crate::validate::Topology;

pub const RETENTION_MS: &str = "retention.ms";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const COMPRESSION_TYPE: &str = "compression.type";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// One topic as the cluster of an environment should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub kind: TopicKind,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Kafka config name → value, complete (see the module docs).
    pub configs: BTreeMap<&'static str, String>,
    /// The source topic when this is a dead-letter topic.
    pub dead_letter_of: Option<String>,
    /// The dead-letter topic when this is its parking lot (`<dlq>.parked`, decision 0035).
    pub parking_lot_of: Option<String>,
}

impl Topology {
    /// Every declared topic for environment `env`: core topics in file order, then dead-letter topics, then their
    /// parking lots, then operational topics.
    pub fn desired(&self, env: &str) -> Result<Vec<DesiredTopic>, TopologyError> {
        let profile = self.environment(env)?;
        let file = self.file();
        let topic = |name: &str,
                     kind: TopicKind,
                     partitions: u32,
                     retention_ms: u64,
                     dead_letter_of: Option<&str>| {
            let cleanup = match kind {
                TopicKind::EventLog => profile.cleanup_policy.event_log,
                TopicKind::Snapshot => profile.cleanup_policy.snapshot,
            };
            let configs = BTreeMap::from([
                (RETENTION_MS, retention_ms.to_string()),
                (CLEANUP_POLICY, cleanup.as_kafka().to_string()),
                (COMPRESSION_TYPE, profile.compression.as_kafka().to_string()),
                (SEGMENT_BYTES, profile.segment_size.as_bytes().to_string()),
                (
                    MAX_MESSAGE_BYTES,
                    profile.max_message_size.as_bytes().to_string(),
                ),
                (MIN_INSYNC_REPLICAS, profile.min_insync_replicas.to_string()),
            ]);
            DesiredTopic {
                name: name.to_string(),
                kind,
                // Validation bounds both by i32::MAX.
                partitions: partitions as i32,
                replication_factor: profile.replication_factor as i32,
                configs,
                dead_letter_of: dead_letter_of.map(str::to_string),
                parking_lot_of: None,
            }
        };
        let mut out: Vec<DesiredTopic> = file
            .topics
            .iter()
            .map(|t| topic(&t.name, t.kind, t.partitions, t.retention.as_millis(), None))
            .collect();
        for dlq in &file.dead_letter_topics {
            let source = file
                .topics
                .iter()
                .find(|t| t.name == dlq.source)
                .expect("validated: the source is declared");
            out.push(topic(
                &dlq.name,
                TopicKind::EventLog,
                source.partitions,
                dlq.retention.as_millis(),
                Some(&dlq.source),
            ));
        }
        for dlq in &file.dead_letter_topics {
            let source = file
                .topics
                .iter()
                .find(|t| t.name == dlq.source)
                .expect("validated: the source is declared");
            let mut parked = topic(
                &dlq.parked_name(),
                TopicKind::EventLog,
                source.partitions,
                dlq.parked_retention.as_millis(),
                None,
            );
            parked.parking_lot_of = Some(dlq.name.clone());
            out.push(parked);
        }
        out.extend(
            file.operational_topics
                .iter()
                .map(|t| topic(&t.name, t.kind, t.partitions, t.retention.as_millis(), None)),
        );
        Ok(out)
    }
}

/// Whether two values of config `key` mean the same to the broker (`cleanup.policy` is a set).
pub(crate) fn same_value(key: &str, a: &str, b: &str) -> bool {
    if key == CLEANUP_POLICY {
        fn set(s: &str) -> std::collections::BTreeSet<&str> {
            s.split(',').map(str::trim).collect()
        }
        set(a) == set(b)
    } else {
        a.trim() == b.trim()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn real() -> Topology {
        Topology::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kafka/topics.yaml"),
        )
        .unwrap()
    }

    fn by_name<'a>(topics: &'a [DesiredTopic], name: &str) -> &'a DesiredTopic {
        topics
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} is declared"))
    }

    #[test]
    fn the_spec_topics_and_partitions_and_retentions() {
        let topics = real().desired("production").unwrap();
        let expected = [
            ("crypto-checkout.domain-events", 12, 30),
            ("crypto-checkout.integration-events", 6, 14),
            ("crypto-checkout.notification-events", 6, 7),
            ("crypto-checkout.analytics-events", 3, 90),
            ("crypto-checkout.domain-events.dlq", 12, 30),
            ("crypto-checkout.integration-events.dlq", 6, 14),
            ("crypto-checkout.notification-events.dlq", 6, 7),
            ("crypto-checkout.analytics-events.dlq", 3, 90),
        ];
        // Plus the 4 parking lots (decision 0035: 180 days) and the operational canary topic (decision 0033).
        assert_eq!(topics.len(), expected.len() + 4 + 1);
        for parked in events::topics::PARKED_TOPICS {
            let topic = by_name(&topics, parked);
            let dlq = parked.strip_suffix(".parked").unwrap();
            assert_eq!(topic.parking_lot_of.as_deref(), Some(dlq));
            assert_eq!(
                topic.partitions,
                by_name(&topics, dlq).partitions,
                "{parked}"
            );
            assert_eq!(
                topic.configs[RETENTION_MS],
                (180 * 86_400_000u64).to_string()
            );
        }
        for (name, partitions, days) in expected {
            let topic = by_name(&topics, name);
            assert_eq!(topic.partitions, partitions, "{name}");
            assert_eq!(
                topic.configs[RETENTION_MS],
                (days * 86_400_000u64).to_string(),
                "{name}"
            );
        }
        let canary = by_name(&topics, "crypto-checkout.canary");
        assert_eq!(canary.partitions, 3);
        assert_eq!(canary.configs[RETENTION_MS], "3600000");
        assert_eq!(canary.dead_letter_of, None);
        assert_eq!(topics.last().unwrap().name, "crypto-checkout.canary");
    }

    #[test]
    fn development_settings_are_the_spec_development_column() {
        let topics = real().desired("development").unwrap();
        let t = by_name(&topics, "crypto-checkout.domain-events");
        assert_eq!(t.replication_factor, 1);
        assert_eq!(t.configs[MIN_INSYNC_REPLICAS], "1");
        assert_eq!(t.configs[COMPRESSION_TYPE], "producer");
        assert_eq!(t.configs[SEGMENT_BYTES], "104857600");
        assert_eq!(t.configs[MAX_MESSAGE_BYTES], "1048576");
        assert_eq!(t.configs[CLEANUP_POLICY], "delete");
    }

    #[test]
    fn production_settings_are_the_spec_production_column() {
        let topics = real().desired("production").unwrap();
        for t in &topics {
            assert_eq!(t.replication_factor, 3, "{}", t.name);
            assert_eq!(t.configs[MIN_INSYNC_REPLICAS], "2");
            assert_eq!(t.configs[COMPRESSION_TYPE], "lz4");
            assert_eq!(t.configs[SEGMENT_BYTES], "1073741824");
            assert_eq!(t.configs[MAX_MESSAGE_BYTES], "1048576");
            // Every declared topic is an event log: never compacted (decision 0005).
            assert_eq!(t.configs[CLEANUP_POLICY], "delete", "{}", t.name);
        }
    }

    #[test]
    fn a_snapshot_topic_is_compacted_in_production() {
        let mut file = real().into_file();
        file.topics[3].kind = TopicKind::Snapshot;
        let topology = file.validate("<test>").unwrap();
        let topics = topology.desired("production").unwrap();
        assert_eq!(
            by_name(&topics, "crypto-checkout.analytics-events").configs[CLEANUP_POLICY],
            "compact,delete"
        );
    }

    #[test]
    fn dead_letter_topics_follow_their_sources_partitions() {
        let mut file = real().into_file();
        file.topic_mut("crypto-checkout.domain-events")
            .unwrap()
            .partitions = 24;
        let topics = file.validate("<test>").unwrap().desired("staging").unwrap();
        let dlq = by_name(&topics, "crypto-checkout.domain-events.dlq");
        assert_eq!(
            (dlq.partitions, dlq.dead_letter_of.as_deref()),
            (24, Some("crypto-checkout.domain-events"))
        );
    }

    #[test]
    fn cleanup_policy_lists_compare_as_sets() {
        assert!(same_value(
            CLEANUP_POLICY,
            "delete,compact",
            "compact,delete"
        ));
        assert!(!same_value(CLEANUP_POLICY, "delete", "compact,delete"));
        assert!(!same_value(RETENTION_MS, "1", "2"));
    }
}
