//! The rules a parsed file must follow before anything talks to a cluster, and [`Topology`], the proof that
//! they hold.
//!
//! Naming convention (spec "Topic Naming Convention"): `{system}.{context}.{event-type}`, where the spec's own
//! names (`crypto-checkout.domain-events`) write context and event type as one segment. So a core topic is
//! `{system}` followed by one or two lower-case kebab-case segments (`[a-z0-9]+(-[a-z0-9]+)*`), never ending in
//! `.dlq`; a dead-letter topic is exactly `<source>.dlq` for a declared core topic, one per source, and
//! brings its parking lot `<source>.dlq.parked` (decision 0035; the whole name within Kafka's limit). No
//! underscores (Kafka treats `.` and `_` as colliding in metric names) and at most 249 characters (Kafka's
//! limit). Kebab-case segments also make every name a valid Kubernetes resource name for the Strimzi export.
//!
//! Every problem is collected, not only the first, and names its topic or environment and its field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{Problem, TopologyError};
use crate::model::{EnvironmentProfile, TopologyFile};

/// Kafka's longest topic name.
const MAX_TOPIC_NAME: usize = 249;
/// Kafka 4's smallest `segment.bytes`.
const MIN_SEGMENT_BYTES: u64 = 1 << 20;
/// Kafka's int configs (`segment.bytes`, `max.message.bytes`, partition counts) are Java ints.
const MAX_INT: u64 = i32::MAX as u64;

/// A file that passed [`TopologyFile::validate`]. The only way to plan, apply or export.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    file: TopologyFile,
    /// `<dlq>.parked` of every dead-letter topic, in file order (decision 0035).
    parked: Vec<String>,
}

impl Topology {
    /// Loads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        TopologyFile::load(path)?.validate(&path.display().to_string())
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        TopologyFile::parse(text, origin)?.validate(origin)
    }

    pub fn file(&self) -> &TopologyFile {
        &self.file
    }

    pub fn into_file(self) -> TopologyFile {
        self.file
    }

    pub fn system(&self) -> &str {
        &self.file.system
    }

    /// The same topology under another `{system}` (see [`TopologyFile::with_system`]), validated again.
    pub fn with_system(&self, system: &str) -> Result<Topology, TopologyError> {
        self.file
            .clone()
            .with_system(system)
            .validate(&format!("topology renamed to `{system}`"))
    }

    /// The profile of `name`, or an error listing the environments the file defines.
    pub fn environment(&self, name: &str) -> Result<&EnvironmentProfile, TopologyError> {
        self.file
            .environments
            .get(name)
            .ok_or_else(|| TopologyError::UnknownEnvironment {
                name: name.to_string(),
                known: self.file.environments.keys().cloned().collect(),
            })
    }

    /// Every topic name the file declares, core topics first, then dead-letter and operational topics.
    pub fn topic_names(&self) -> impl Iterator<Item = &str> {
        let core = self.file.topics.iter().map(|t| t.name.as_str());
        core.chain(self.file.dead_letter_topics.iter().map(|d| d.name.as_str()))
            .chain(self.parked.iter().map(String::as_str))
            .chain(self.file.operational_topics.iter().map(|t| t.name.as_str()))
    }
}

impl TopologyFile {
    /// Checks every rule; `origin` names the file in the error.
    pub fn validate(self, origin: &str) -> Result<Topology, TopologyError> {
        let problems = problems(&self);
        if problems.is_empty() {
            let parked = self
                .dead_letter_topics
                .iter()
                .map(|d| d.parked_name())
                .collect();
            Ok(Topology { file: self, parked })
        } else {
            Err(TopologyError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }
}

fn problems(file: &TopologyFile) -> Vec<Problem> {
    let mut out = Vec::new();
    let system = file.system.as_str();
    if !is_kebab_segment(system) {
        out.push(Problem::new(
            "file",
            "system",
            format!("`{system}` must be one lower-case kebab-case word"),
        ));
    }

    if file.environments.is_empty() {
        out.push(Problem::new(
            "file",
            "environments",
            "at least one environment is required",
        ));
    }
    for (name, env) in &file.environments {
        check_environment(name, env, &mut out);
    }

    let mut seen = BTreeSet::new();
    let mut core = BTreeMap::new();
    let operational: BTreeSet<&str> = file
        .operational_topics
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for topic in file.topics.iter().chain(&file.operational_topics) {
        let is_operational = operational.contains(topic.name.as_str());
        let subject = if is_operational {
            format!("operational topic `{}`", topic.name)
        } else {
            format!("topic `{}`", topic.name)
        };
        if let Err(why) = check_core_name(&topic.name, system) {
            out.push(Problem::new(&subject, "name", why));
        }
        if !seen.insert(topic.name.as_str()) {
            out.push(Problem::new(&subject, "name", "declared twice"));
        }
        if topic.partitions == 0 {
            out.push(Problem::new(
                &subject,
                "partitions",
                "must be at least 1 (got 0)",
            ));
        } else if u64::from(topic.partitions) > MAX_INT {
            out.push(Problem::new(
                &subject,
                "partitions",
                "is larger than Kafka allows",
            ));
        }
        if topic.retention.as_millis() == 0 {
            out.push(Problem::new(&subject, "retention", "must be longer than 0"));
        }
        require_text(&subject, "purpose", &topic.purpose, &mut out);
        require_text(&subject, "key_strategy", &topic.key_strategy, &mut out);
        if !is_operational {
            core.insert(topic.name.as_str(), topic);
        }
    }

    let mut sources = BTreeSet::new();
    for dlq in &file.dead_letter_topics {
        let subject = format!("dead-letter topic `{}`", dlq.name);
        if !seen.insert(dlq.name.as_str()) {
            out.push(Problem::new(&subject, "name", "declared twice"));
        }
        if !core.contains_key(dlq.source.as_str()) {
            out.push(Problem::new(
                &subject,
                "source",
                format!("`{}` is not a declared core topic", dlq.source),
            ));
        } else if !sources.insert(dlq.source.as_str()) {
            out.push(Problem::new(
                &subject,
                "source",
                format!("`{}` already has a dead-letter topic", dlq.source),
            ));
        }
        let expected = format!("{}.dlq", dlq.source);
        if dlq.name != expected {
            out.push(Problem::new(
                &subject,
                "name",
                format!("must be `{expected}` (`<source>.dlq`)"),
            ));
        } else if dlq.parked_name().len() > MAX_TOPIC_NAME {
            out.push(Problem::new(
                &subject,
                "name",
                format!("is longer than Kafka's {MAX_TOPIC_NAME} characters"),
            ));
        }
        if dlq.retention.as_millis() == 0 {
            out.push(Problem::new(&subject, "retention", "must be longer than 0"));
        }
        if dlq.parked_retention.as_millis() == 0 {
            out.push(Problem::new(
                &subject,
                "parked_retention",
                "must be longer than 0",
            ));
        }
        require_text(&subject, "purpose", &dlq.purpose, &mut out);
    }
    out
}

fn check_environment(name: &str, env: &EnvironmentProfile, out: &mut Vec<Problem>) {
    let subject = format!("environment `{name}`");
    if !is_kebab_segment(name) {
        out.push(Problem::new(
            &subject,
            "",
            "the name must be one lower-case kebab-case word",
        ));
    }
    require_text(&subject, "purpose", &env.purpose, out);
    if env.brokers == 0 {
        out.push(Problem::new(
            &subject,
            "brokers",
            "must be at least 1 (got 0)",
        ));
    }
    if env.replication_factor == 0 {
        out.push(Problem::new(
            &subject,
            "replication_factor",
            "must be at least 1 (got 0)",
        ));
    } else if env.replication_factor > env.brokers {
        out.push(Problem::new(
            &subject,
            "replication_factor",
            format!(
                "{} is more than the {} broker(s) of the environment",
                env.replication_factor, env.brokers
            ),
        ));
    }
    if env.min_insync_replicas == 0 {
        out.push(Problem::new(
            &subject,
            "min_insync_replicas",
            "must be at least 1 (got 0)",
        ));
    } else if env.min_insync_replicas > env.replication_factor {
        out.push(Problem::new(
            &subject,
            "min_insync_replicas",
            format!(
                "{} is more than the replication factor {}: every acks=all write would fail",
                env.min_insync_replicas, env.replication_factor
            ),
        ));
    }
    if env.retention.as_millis() == 0 {
        out.push(Problem::new(&subject, "retention", "must be longer than 0"));
    }
    let segment = env.segment_size.as_bytes();
    if !(MIN_SEGMENT_BYTES..=MAX_INT).contains(&segment) {
        out.push(Problem::new(
            &subject,
            "segment_size",
            format!(
                "{} is outside Kafka's range 1MiB..{MAX_INT} bytes",
                env.segment_size
            ),
        ));
    }
    let max_message = env.max_message_size.as_bytes();
    if max_message == 0 || max_message > MAX_INT {
        out.push(Problem::new(
            &subject,
            "max_message_size",
            format!("{} is outside 1..{MAX_INT} bytes", env.max_message_size),
        ));
    } else if max_message > segment {
        out.push(Problem::new(
            &subject,
            "max_message_size",
            "is larger than segment_size: no segment could hold it",
        ));
    }
    if env.cleanup_policy.event_log.compact {
        out.push(Problem::new(
            &subject,
            "cleanup_policy.event_log",
            "event logs must use `delete`: compaction keeps only the latest record per key and would delete the \
             event history that projections are rebuilt from (decision 0005)",
        ));
    }
}

fn require_text(subject: &str, field: &str, value: &str, out: &mut Vec<Problem>) {
    if value.trim().is_empty() {
        out.push(Problem::new(subject, field, "must not be empty"));
    }
}

/// `[a-z0-9]+(-[a-z0-9]+)*`
fn is_kebab_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// `{system}.{context}` or `{system}.{context}.{event-type}`, not ending in `.dlq`.
pub(crate) fn check_core_name(name: &str, system: &str) -> Result<(), String> {
    let convention =
        format!("names follow `{system}.{{context}}.{{event-type}}`, lower-case kebab-case");
    if name.len() > MAX_TOPIC_NAME {
        return Err(format!(
            "is longer than Kafka's {MAX_TOPIC_NAME} characters"
        ));
    }
    let Some(rest) = name.strip_prefix(system).and_then(|r| r.strip_prefix('.')) else {
        return Err(format!("must start with `{system}.`: {convention}"));
    };
    let segments: Vec<&str> = rest.split('.').collect();
    if !(1..=2).contains(&segments.len()) || !segments.iter().all(|s| is_kebab_segment(s)) {
        return Err(format!(
            "`{name}` breaks the naming convention: {convention}"
        ));
    }
    if segments.last() == Some(&"dlq") {
        return Err(
            "a core topic must not end in `.dlq`: declare it under dead_letter_topics".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeadLetterSpec;

    fn real() -> TopologyFile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kafka/topics.yaml");
        TopologyFile::load(&path).expect("the real file parses")
    }

    fn problems_of(file: TopologyFile) -> Vec<Problem> {
        match file.validate("<test>") {
            Err(TopologyError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn has(problems: &[Problem], subject: &str, field: &str) -> bool {
        problems
            .iter()
            .any(|p| p.subject == subject && p.field == field)
    }

    #[test]
    fn the_real_file_is_valid() {
        real().validate("deploy/kafka/topics.yaml").unwrap();
    }

    #[test]
    fn a_name_outside_the_naming_convention_is_refused_naming_topic_and_field() {
        for bad in [
            "crypto-checkout.Domain-Events",
            "crypto-checkout.domain_events",
            "payments.domain-events",
            "crypto-checkout.a.b.c",
            "crypto-checkout.",
            "crypto-checkout.-x",
        ] {
            let mut file = real();
            file.topics[3].name = bad.to_string();
            let problems = problems_of(file);
            assert!(
                has(&problems, &format!("topic `{bad}`"), "name"),
                "{bad}: {problems:?}"
            );
        }
    }

    #[test]
    fn the_three_segment_form_of_the_convention_is_accepted() {
        assert!(check_core_name("crypto-checkout.payments.confirmed", "crypto-checkout").is_ok());
        assert!(check_core_name("crypto-checkout.domain-events", "crypto-checkout").is_ok());
    }

    #[test]
    fn a_parking_lot_needs_a_retention() {
        let mut file = real();
        file.dead_letter_topics[0].parked_retention = crate::units::TimeSpan::from_days(0);
        assert!(has(
            &problems_of(file),
            "dead-letter topic `crypto-checkout.domain-events.dlq`",
            "parked_retention"
        ));
    }

    #[test]
    fn a_core_topic_ending_in_dlq_is_refused() {
        let mut file = real();
        file.topics[3].name = "crypto-checkout.analytics.dlq".into();
        assert!(has(
            &problems_of(file),
            "topic `crypto-checkout.analytics.dlq`",
            "name"
        ));
    }

    #[test]
    fn a_dead_letter_topic_must_be_its_source_plus_dlq() {
        let mut file = real();
        file.dead_letter_topics[0].name = "crypto-checkout.domain-events-dlq".into();
        assert!(has(
            &problems_of(file),
            "dead-letter topic `crypto-checkout.domain-events-dlq`",
            "name"
        ));

        let mut file = real();
        file.dead_letter_topics.push(DeadLetterSpec {
            name: "crypto-checkout.nothing.dlq".into(),
            source: "crypto-checkout.nothing".into(),
            retention: crate::units::TimeSpan::from_days(1),
            purpose: "x".into(),
            parked_retention: crate::units::TimeSpan::from_days(1),
        });
        assert!(has(
            &problems_of(file),
            "dead-letter topic `crypto-checkout.nothing.dlq`",
            "source"
        ));

        let mut file = real();
        let again = file.dead_letter_topics[0].clone();
        file.dead_letter_topics.push(again);
        assert!(has(
            &problems_of(file),
            "dead-letter topic `crypto-checkout.domain-events.dlq`",
            "name"
        ));
    }

    #[test]
    fn zero_partitions_is_refused_naming_topic_and_field() {
        let mut file = real();
        file.topics[0].partitions = 0;
        let problems = problems_of(file);
        assert!(
            has(
                &problems,
                "topic `crypto-checkout.domain-events`",
                "partitions"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unknown_environment_is_an_error_listing_the_known_ones() {
        let topology = real().validate("<test>").unwrap();
        let err = topology.environment("prod").unwrap_err().to_string();
        assert!(
            err.contains("`prod`") && err.contains("production") && err.contains("development"),
            "{err}"
        );
    }

    #[test]
    fn min_isr_above_replication_factor_is_refused() {
        let mut file = real();
        file.environments
            .get_mut("production")
            .unwrap()
            .min_insync_replicas = 4;
        assert!(has(
            &problems_of(file),
            "environment `production`",
            "min_insync_replicas"
        ));
    }

    #[test]
    fn replication_above_the_broker_count_is_refused() {
        let mut file = real();
        file.environments
            .get_mut("development")
            .unwrap()
            .replication_factor = 3;
        assert!(has(
            &problems_of(file),
            "environment `development`",
            "replication_factor"
        ));
    }

    #[test]
    fn a_compacted_event_log_is_refused() {
        let mut file = real();
        file.environments
            .get_mut("production")
            .unwrap()
            .cleanup_policy
            .event_log = crate::units::CleanupPolicy::COMPACT_DELETE;
        assert!(has(
            &problems_of(file),
            "environment `production`",
            "cleanup_policy.event_log"
        ));
    }

    #[test]
    fn sizes_outside_kafkas_ranges_are_refused() {
        let mut file = real();
        let dev = file.environments.get_mut("development").unwrap();
        dev.segment_size = crate::units::ByteSize::from_bytes(1000);
        dev.max_message_size = crate::units::ByteSize::from_bytes(0);
        let problems = problems_of(file);
        assert!(has(&problems, "environment `development`", "segment_size"));
        assert!(has(
            &problems,
            "environment `development`",
            "max_message_size"
        ));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut file = real();
        file.topics[0].partitions = 0;
        file.topics[1].purpose = " ".into();
        assert_eq!(problems_of(file).len(), 2);
    }

    #[test]
    fn a_renamed_topology_is_still_valid() {
        let topology = real().validate("<test>").unwrap();
        let renamed = topology.with_system("cc-0a1b2c3d4e5f").unwrap();
        assert!(
            renamed
                .topic_names()
                .all(|n| n.starts_with("cc-0a1b2c3d4e5f."))
        );
        assert!(topology.with_system("Not_Valid").is_err());
    }
}
