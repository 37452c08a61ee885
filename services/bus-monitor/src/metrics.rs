//! The Prometheus series of the lag monitor. The names are a contract with the alert rules and dashboards:
//!
//! | name | labels | meaning |
//! | --- | --- | --- |
//! | `kafka_consumergroup_group_lag` | group, topic, partition | end offset − committed offset (from the earliest offset when the partition has no commit) |
//! | `kafka_consumergroup_group_lag_seconds` | group, topic, partition | kafka-lag-exporter's interpolated lag in seconds; absent until computable |
//! | `kafka_consumergroup_group_max_lag` | group | the largest partition lag |
//! | `kafka_consumergroup_group_max_lag_seconds` | group | the largest partition lag in seconds; absent when none is computable |
//! | `kafka_consumergroup_group_offset` | group, topic, partition | the committed offset; absent when the partition has none |
//! | `kafka_partition_latest_offset` | topic, partition | high watermark |
//! | `kafka_partition_earliest_offset` | topic, partition | low watermark |
//! | `kafka_consumergroup_status` | group | 0 OK, 1 WARN, 2 STALL, 3 STOP, 4 REWIND, 5 ERR |
//! | `kafka_consumergroup_members` | group | members of the group (absent when the group could not be read) |
//! | `bus_monitor_group_info` | group, offsets | 1; `offsets` is `kafka` or `database` (mode (b): the `consumer_offsets` table) |
//! | `bus_monitor_poll_errors_total` | | polls that failed (broker unreachable) plus groups that could not be read |
//! | `bus_monitor_poll_seconds` | | duration of a poll (histogram) |
//!
//! Guarantees: after [`LagMetrics::apply`], exactly the series of the report exist — the series of a partition,
//! topic or group that is no longer reported are removed, and a series whose value is not computable (lag in
//! seconds, offset without commit) is absent rather than 0.

use std::collections::BTreeSet;

use lag::Report;
use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts, Registry};

pub struct LagMetrics {
    lag: IntGaugeVec,
    lag_seconds: GaugeVec,
    max_lag: IntGaugeVec,
    max_lag_seconds: GaugeVec,
    offset: IntGaugeVec,
    latest: IntGaugeVec,
    earliest: IntGaugeVec,
    status: IntGaugeVec,
    members: IntGaugeVec,
    info: IntGaugeVec,
    pub poll_errors: IntCounter,
    pub poll_seconds: Histogram,
    /// Label sets written by the previous apply, per family.
    previous: Families,
}

#[derive(Default)]
struct Families {
    gtp: [BTreeSet<Vec<String>>; 3],
    g: [BTreeSet<Vec<String>>; 4],
    tp: BTreeSet<Vec<String>>,
    info: BTreeSet<Vec<String>>,
}

impl LagMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gtp = ["group", "topic", "partition"];
        let int = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let float = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let poll_errors = IntCounter::new(
            "bus_monitor_poll_errors_total",
            "Polls that failed (broker unreachable) plus groups whose offsets could not be read.",
        )?;
        registry.register(Box::new(poll_errors.clone()))?;
        let poll_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "bus_monitor_poll_seconds",
                "Duration of one poll of offsets, watermarks and membership.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        registry.register(Box::new(poll_seconds.clone()))?;
        Ok(Self {
            lag: int(
                "kafka_consumergroup_group_lag",
                "Messages behind: end offset minus committed offset (from the earliest offset without a commit).",
                &gtp,
            )?,
            lag_seconds: float(
                "kafka_consumergroup_group_lag_seconds",
                "Seconds behind, interpolated from end-offset samples (kafka-lag-exporter).",
                &gtp,
            )?,
            max_lag: int(
                "kafka_consumergroup_group_max_lag",
                "The group's largest partition lag in messages.",
                &["group"],
            )?,
            max_lag_seconds: float(
                "kafka_consumergroup_group_max_lag_seconds",
                "The group's largest partition lag in seconds.",
                &["group"],
            )?,
            offset: int(
                "kafka_consumergroup_group_offset",
                "The group's committed offset (the database's for mode (b) groups).",
                &gtp,
            )?,
            latest: int(
                "kafka_partition_latest_offset",
                "The partition's end offset (high watermark).",
                &["topic", "partition"],
            )?,
            earliest: int(
                "kafka_partition_earliest_offset",
                "The partition's earliest offset (low watermark).",
                &["topic", "partition"],
            )?,
            status: int(
                "kafka_consumergroup_status",
                "Burrow-style status: 0 OK, 1 WARN, 2 STALL, 3 STOP, 4 REWIND, 5 ERR.",
                &["group"],
            )?,
            members: int(
                "kafka_consumergroup_members",
                "Members of the consumer group.",
                &["group"],
            )?,
            info: int(
                "bus_monitor_group_info",
                "A watched group; offsets=kafka or database (mode (b), table consumer_offsets).",
                &["group", "offsets"],
            )?,
            poll_errors,
            poll_seconds,
            previous: Families::default(),
        })
    }

    /// Makes the series exactly those of `report` (see the module's guarantees).
    pub fn apply(&mut self, report: &Report) {
        let mut now = Families::default();
        for (topic, partitions) in &report.ends {
            for (partition, ends) in partitions {
                let labels = vec![topic.clone(), partition.to_string()];
                self.latest.with_label_values(&labels).set(ends.latest);
                self.earliest.with_label_values(&labels).set(ends.earliest);
                now.tp.insert(labels);
            }
        }
        for g in &report.groups {
            let group = vec![g.group.clone()];
            self.status.with_label_values(&group).set(g.status.value());
            now.g[0].insert(group.clone());
            let info = vec![g.group.clone(), g.offsets.as_str().to_string()];
            self.info.with_label_values(&info).set(1);
            now.info.insert(info);
            if let Some(members) = g.members {
                self.members.with_label_values(&group).set(members as i64);
                now.g[1].insert(group.clone());
            }
            if let Some(max) = g.max_lag {
                self.max_lag.with_label_values(&group).set(max);
                now.g[2].insert(group.clone());
            }
            if let Some(max) = g.max_lag_seconds {
                self.max_lag_seconds.with_label_values(&group).set(max);
                now.g[3].insert(group.clone());
            }
            for p in &g.partitions {
                let labels = vec![g.group.clone(), p.topic.clone(), p.partition.to_string()];
                self.lag.with_label_values(&labels).set(p.lag);
                now.gtp[0].insert(labels.clone());
                if let Some(s) = p.lag_seconds {
                    self.lag_seconds.with_label_values(&labels).set(s);
                    now.gtp[1].insert(labels.clone());
                }
                if let Some(c) = p.committed {
                    self.offset.with_label_values(&labels).set(c);
                    now.gtp[2].insert(labels);
                }
            }
        }
        let gone = |before: &BTreeSet<Vec<String>>,
                    after: &BTreeSet<Vec<String>>|
         -> Vec<Vec<String>> { before.difference(after).cloned().collect() };
        for labels in gone(&self.previous.tp, &now.tp) {
            let _ = self.latest.remove_label_values(&labels);
            let _ = self.earliest.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.info, &now.info) {
            let _ = self.info.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.gtp[0], &now.gtp[0]) {
            let _ = self.lag.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.gtp[1], &now.gtp[1]) {
            let _ = self.lag_seconds.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.gtp[2], &now.gtp[2]) {
            let _ = self.offset.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.g[0], &now.g[0]) {
            let _ = self.status.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.g[1], &now.g[1]) {
            let _ = self.members.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.g[2], &now.g[2]) {
            let _ = self.max_lag.remove_label_values(&labels);
        }
        for labels in gone(&self.previous.g[3], &now.g[3]) {
            let _ = self.max_lag_seconds.remove_label_values(&labels);
        }
        self.previous = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lag::tracker::{
        Ends, GroupReading, GroupSpec, OffsetSource, Snapshot, Tracker, TrackerSettings,
    };
    use prometheus::{Encoder, TextEncoder};
    use std::collections::BTreeMap;

    fn render(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn series_of_vanished_partitions_and_groups_are_removed() {
        let registry = Registry::new();
        let mut metrics = LagMetrics::register(&registry).unwrap();
        let mut tracker = Tracker::new(TrackerSettings::default());
        let spec = GroupSpec {
            group: "g".into(),
            topics: vec!["t".into()],
            offsets: OffsetSource::Kafka,
        };
        let reading = GroupReading {
            state: "Stable".into(),
            members: 1,
            committed: BTreeMap::from([(
                ("t".into(), 0),
                lag::tracker::Committed {
                    offset: 4,
                    updated_at_ms: None,
                },
            )]),
        };
        let mut snap = Snapshot {
            at_ms: 0,
            ends: BTreeMap::from([
                (
                    ("t".into(), 0),
                    Ends {
                        earliest: 0,
                        latest: 10,
                    },
                ),
                (
                    ("t".into(), 1),
                    Ends {
                        earliest: 0,
                        latest: 3,
                    },
                ),
            ]),
            groups: vec![(spec, Ok(reading))],
        };
        metrics.apply(&tracker.observe(&snap));
        let text = render(&registry);
        assert!(
            text.contains(r#"kafka_consumergroup_group_lag{group="g",partition="0",topic="t"} 6"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kafka_consumergroup_group_lag{group="g",partition="1",topic="t"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kafka_consumergroup_group_offset{group="g",partition="0",topic="t"} 4"#
            )
        );
        assert!(!text.contains(r#"kafka_consumergroup_group_offset{group="g",partition="1""#));
        assert!(text.contains(r#"kafka_consumergroup_group_max_lag{group="g"} 6"#));
        assert!(text.contains(r#"bus_monitor_group_info{group="g",offsets="kafka"} 1"#));

        snap.ends.remove(&("t".to_string(), 1));
        snap.at_ms = 10_000;
        metrics.apply(&tracker.observe(&snap));
        let text = render(&registry);
        assert!(!text.contains(r#"partition="1""#), "{text}");

        snap.groups.clear();
        metrics.apply(&tracker.observe(&snap));
        let text = render(&registry);
        assert!(!text.contains(r#"group="g""#), "{text}");
        assert!(text.contains(r#"kafka_partition_latest_offset{partition="0",topic="t"} 10"#));
    }
}
