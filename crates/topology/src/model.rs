//! The declarative file (`deploy/kafka/topics.yaml`) exactly as written, and its parsing.
//!
//! Guarantees: every struct denies unknown fields, so a typo (`partitons`) is an error, never a silently
//! ignored line; a parse error names the topic (by its `name`, not its index) or the environment and the field,
//! with the line and column. Rules that span fields (naming, ranges, cross-references) live in
//! [`crate::validate`]; this module only knows the shape.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Problem, TopologyError};
use crate::units::{ByteSize, CleanupPolicy, Compression, TimeSpan, TopicKind};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// `{system}` of the naming convention; every topic name starts with `{system}.`.
    pub system: String,
    /// The spec's environments (development, staging, production, dr), by name.
    pub environments: BTreeMap<String, EnvironmentProfile>,
    /// The core topics.
    pub topics: Vec<TopicSpec>,
    /// One `<source>.dlq` per core topic that has failed-event processing.
    pub dead_letter_topics: Vec<DeadLetterSpec>,
    /// Topics of the bus's own operation, outside the spec's tables (the bus-monitor's canary, decision 0033):
    /// same shape and rules as core topics, but no consumer group of the platform reads them and they have no
    /// dead-letter topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operational_topics: Vec<TopicSpec>,
}

/// One column of the spec's "Environment Specifications" and "Cluster Settings" tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentProfile {
    pub purpose: String,
    /// Brokers the environment's cluster has (checked against the live cluster, never changed).
    pub brokers: u32,
    pub replication_factor: u32,
    /// `min.insync.replicas` of every topic.
    pub min_insync_replicas: u32,
    /// The broker default `log.retention.*` for topics the file does not declare. Declared topics carry their
    /// own retention in every environment (decision 0006), so this is reported, never applied to a topic.
    pub retention: TimeSpan,
    /// `compression.type` of every topic.
    pub compression: Compression,
    /// `segment.bytes` of every topic.
    pub segment_size: ByteSize,
    /// `max.message.bytes` of every topic.
    pub max_message_size: ByteSize,
    /// `cleanup.policy` by kind of topic (decision 0005).
    pub cleanup_policy: CleanupPolicies,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupPolicies {
    /// For event logs and DLQs: must be `delete` (compaction would delete history).
    pub event_log: CleanupPolicy,
    /// For state/snapshot topics (latest value per key).
    pub snapshot: CleanupPolicy,
}

/// A row of the spec's "Core Topics" table (or an operational topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub kind: TopicKind,
    pub partitions: u32,
    /// `retention.ms`, in every environment.
    pub retention: TimeSpan,
    pub purpose: String,
    pub key_strategy: String,
}

/// A row of the spec's "Dead Letter Topics" table. Its partition count follows its source topic, so a failed
/// record can go to the DLQ partition of the same number and keep its key's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// `<source>.dlq`.
    pub name: String,
    pub source: String,
    pub retention: TimeSpan,
    pub purpose: String,
    /// Retention of its parking lot `<name>.parked` (decision 0035): where a record that fails again after an
    /// operator replayed it goes. Same partition count as the DLQ, an event log too.
    pub parked_retention: TimeSpan,
}

impl DeadLetterSpec {
    /// `<name>.parked`: the parking lot of this DLQ.
    pub fn parked_name(&self) -> String {
        format!("{}.parked", self.name)
    }
}

impl TopologyFile {
    /// Reads and parses a file (shape only; see [`TopologyFile::validate`]).
    pub fn load(path: &Path) -> Result<TopologyFile, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        TopologyFile::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `origin` names it in errors (a path, or `<test>`).
    pub fn parse(text: &str, origin: &str) -> Result<TopologyFile, TopologyError> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let location = err.inner().location().map(|l| (l.line(), l.column()));
            let problem = locate(text, err.path(), strip_location(&err.inner().to_string()));
            TopologyError::Parse {
                origin: origin.to_string(),
                problem,
                location,
            }
        })
    }

    /// The same file with `{system}` replaced: every name and DLQ source that starts with `{old}.` is renamed.
    /// Tests apply their own copy of the real file this way, next to other tests and the real topics.
    pub fn with_system(mut self, system: &str) -> TopologyFile {
        let old = format!("{}.", self.system);
        let rename = |name: &mut String| {
            if let Some(rest) = name.strip_prefix(&old) {
                *name = format!("{system}.{rest}");
            }
        };
        self.topics.iter_mut().for_each(|t| rename(&mut t.name));
        self.operational_topics
            .iter_mut()
            .for_each(|t| rename(&mut t.name));
        for dlq in &mut self.dead_letter_topics {
            rename(&mut dlq.name);
            rename(&mut dlq.source);
        }
        self.system = system.to_string();
        self
    }

    /// The file as YAML (without the comments of the original).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("the model always serialises")
    }

    pub fn topic_mut(&mut self, name: &str) -> Option<&mut TopicSpec> {
        self.topics.iter_mut().find(|t| t.name == name)
    }
}

/// serde_yaml prefixes its own path (`topics[0]: `) and appends " at line L column C"; we report both our way.
fn strip_location(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains([' ', '`']) => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Turns a serde path (`topics[2].partitons`) into "topic `crypto-checkout.x`, field `partitons`", reading the
/// topic's name from the document itself when it can be read.
fn locate(text: &str, path: &serde_path_to_error::Path, message: String) -> Problem {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let field_from = |i: usize| {
        let mut field = String::new();
        for segment in &segments[i..] {
            match segment {
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(key);
                }
                Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                Segment::Unknown => {}
            }
        }
        // An unknown field is reported on its parent; the message names it.
        if field.is_empty() {
            unknown_field(&message).unwrap_or_default()
        } else {
            field
        }
    };
    match segments.as_slice() {
        [Segment::Map { key: list }, Segment::Seq { index }, ..]
            if list == "topics" || list == "dead_letter_topics" || list == "operational_topics" =>
        {
            let kind = match list.as_str() {
                "topics" => "topic",
                "operational_topics" => "operational topic",
                _ => "dead-letter topic",
            };
            let subject = match name_at(text, list, *index) {
                Some(name) => format!("{kind} `{name}`"),
                None => format!("{kind} #{} (no readable name)", index + 1),
            };
            Problem::new(subject, field_from(2), message)
        }
        [Segment::Map { key: list }, Segment::Map { key: env }, ..] if list == "environments" => {
            Problem::new(format!("environment `{env}`"), field_from(2), message)
        }
        _ => Problem::new("file", field_from(0), message),
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

fn name_at(text: &str, list: &str, index: usize) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    doc.get(list)?
        .get(index)?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
system: demo
environments:
  development:
    purpose: Local development
    brokers: 1
    replication_factor: 1
    min_insync_replicas: 1
    retention: 7d
    compression: producer
    segment_size: 100MiB
    max_message_size: 1MiB
    cleanup_policy: { event_log: delete, snapshot: delete }
topics:
  - name: demo.domain-events
    kind: event-log
    partitions: 12
    retention: 30d
    purpose: All business domain events
    key_strategy: Aggregate ID
dead_letter_topics: []
"#;

    fn parse_err(text: &str) -> (Problem, String) {
        match TopologyFile::parse(text, "<test>") {
            Err(e @ TopologyError::Parse { .. }) => {
                let display = e.to_string();
                let TopologyError::Parse { problem, .. } = e else {
                    unreachable!()
                };
                (problem, display)
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_topic_field_names_the_topic_and_the_field() {
        let (problem, display) =
            parse_err(&MINIMAL.replace("    partitions: 12", "    partitons: 12"));
        assert_eq!(problem.subject, "topic `demo.domain-events`");
        assert_eq!(problem.field, "partitons");
        assert!(
            display.contains("line ") && !display.contains("topics[0]"),
            "{display}"
        );
    }

    #[test]
    fn an_unknown_environment_field_names_the_environment_and_the_field() {
        let (problem, _) =
            parse_err(&MINIMAL.replace("    brokers: 1", "    brokers: 1\n    replicas: 3"));
        assert_eq!(problem.subject, "environment `development`");
        assert_eq!(problem.field, "replicas");
    }

    #[test]
    fn a_bad_unit_names_the_topic_and_the_field() {
        let (problem, _) = parse_err(&MINIMAL.replace("retention: 30d", "retention: 30"));
        assert_eq!(problem.subject, "topic `demo.domain-events`");
        assert_eq!(problem.field, "retention");
        assert!(problem.message.contains("no unit"), "{problem}");
    }

    #[test]
    fn a_negative_partition_count_is_a_type_error_on_that_field() {
        let (problem, _) = parse_err(&MINIMAL.replace("partitions: 12", "partitions: -3"));
        assert_eq!(
            (problem.subject.as_str(), problem.field.as_str()),
            ("topic `demo.domain-events`", "partitions")
        );
    }

    #[test]
    fn compression_none_is_refused_on_its_environment() {
        let (problem, _) =
            parse_err(&MINIMAL.replace("compression: producer", "compression: none"));
        assert_eq!(
            (problem.subject.as_str(), problem.field.as_str()),
            ("environment `development`", "compression")
        );
    }

    #[test]
    fn an_unknown_top_level_field_is_refused() {
        let (problem, _) = parse_err(&format!("{MINIMAL}\nconsumer_groups: []\n"));
        assert_eq!(
            (problem.subject.as_str(), problem.field.as_str()),
            ("file", "consumer_groups")
        );
    }

    #[test]
    fn renaming_the_system_renames_topics_and_dlq_sources() {
        let mut file = TopologyFile::parse(MINIMAL, "<test>").unwrap();
        file.dead_letter_topics.push(DeadLetterSpec {
            name: "demo.domain-events.dlq".into(),
            source: "demo.domain-events".into(),
            retention: TimeSpan::from_days(30),
            purpose: "Failed".into(),
            parked_retention: TimeSpan::from_days(180),
        });
        let renamed = file.with_system("cc-1234");
        assert_eq!(renamed.system, "cc-1234");
        assert_eq!(renamed.topics[0].name, "cc-1234.domain-events");
        assert_eq!(
            renamed.dead_letter_topics[0].name,
            "cc-1234.domain-events.dlq"
        );
        assert_eq!(
            renamed.dead_letter_topics[0].source,
            "cc-1234.domain-events"
        );
    }

    #[test]
    fn the_yaml_form_round_trips() {
        let file = TopologyFile::parse(MINIMAL, "<test>").unwrap();
        assert_eq!(
            TopologyFile::parse(&file.to_yaml(), "<again>").unwrap(),
            file
        );
    }
}
