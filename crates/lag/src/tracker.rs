//! The state between polls: per partition the lag-seconds table and the recent end offsets, per group and
//! partition the window of commit observations; [`Tracker::observe`] turns one [`Snapshot`] (what the broker and
//! the database said at one instant) into a [`Report`].
//!
//! Guarantees:
//! - lag in messages = end offset − committed offset, never negative; a partition the group never committed is
//!   counted from the partition's **earliest** offset (what a new consumer with `auto.offset.reset = earliest`,
//!   the runtime's default, would read), and has no `committed` value;
//! - lag in seconds per [`crate::seconds`], of the committed offset (or of the earliest offset when none);
//! - status per [`crate::status`]; a group whose offsets could not be read, whose topic does not exist, or that
//!   the broker does not know at all (no members, no commit) is **ERR** with the reason; the group's status is
//!   its worst partition's;
//! - state of partitions and groups that are no longer observed is dropped, so a re-created topic or group
//!   starts afresh and nothing grows without bound.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::seconds::LagTable;
use crate::status::{Commit, Status, evaluate};

/// Where a group's committed offsets are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetSource {
    /// The group's offsets committed to Kafka (at-least-once and mode (a) groups).
    Kafka,
    /// Mode (b) groups (`ExactlyOnceDb`): the `consumer_offsets` table, the offsets the group resumes from. (The
    /// runtime also commits them to Kafka, for tools only.)
    Database,
}

impl OffsetSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            OffsetSource::Kafka => "kafka",
            OffsetSource::Database => "database",
        }
    }
}

/// A consumer group to watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The group id.
    pub group: String,
    /// The topics it consumes.
    pub topics: Vec<String>,
    /// Where its offsets are.
    #[serde(default = "kafka")]
    pub offsets: OffsetSource,
}

fn kafka() -> OffsetSource {
    OffsetSource::Kafka
}

/// A topic partition.
pub type Tp = (String, i32);

/// A partition's earliest (low watermark) and end (high watermark) offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ends {
    pub earliest: i64,
    pub latest: i64,
}

/// A committed offset; `updated_at_ms` when the store records its commit time (the mode (b) table does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub updated_at_ms: Option<i64>,
}

/// What was read about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupReading {
    /// The broker's group state (`Stable`, `Empty`, `Dead`, …).
    pub state: String,
    pub members: usize,
    /// Committed offsets; a partition without a commit is absent.
    pub committed: BTreeMap<Tp, Committed>,
}

/// One poll: the partitions' ends and each group's reading (or why it could not be read).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at_ms: i64,
    pub ends: BTreeMap<Tp, Ends>,
    pub groups: Vec<(GroupSpec, Result<GroupReading, String>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub earliest: i64,
    pub latest: i64,
    pub lag: i64,
    pub lag_seconds: Option<f64>,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub offsets: OffsetSource,
    pub status: Status,
    /// Why the status is ERR.
    pub error: Option<String>,
    pub state: Option<String>,
    pub members: Option<usize>,
    pub max_lag: Option<i64>,
    pub max_lag_seconds: Option<f64>,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub at_ms: i64,
    pub ends: BTreeMap<String, BTreeMap<i32, Ends>>,
    pub groups: Vec<GroupReport>,
}

/// Tunables of the evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerSettings {
    /// Commit observations per partition judged by the status rules (Burrow's `intervals`, default 10).
    pub window: usize,
    /// Samples kept per partition for lag in seconds.
    pub table_size: usize,
    /// Lag at or below which a partition is OK (Burrow's `allowed-lag`, default 0).
    pub allowed_lag: i64,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            window: 10,
            table_size: 360,
            allowed_lag: 0,
        }
    }
}

struct PartitionState {
    table: LagTable,
    recent_ends: VecDeque<i64>,
}

#[derive(Default)]
struct Window {
    commits: VecDeque<Commit>,
    updated_at_ms: Option<i64>,
}

/// The state kept between polls.
pub struct Tracker {
    settings: TrackerSettings,
    partitions: HashMap<Tp, PartitionState>,
    windows: HashMap<(String, Tp), Window>,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings: TrackerSettings {
                window: settings.window.max(1),
                ..settings
            },
            partitions: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// Records `snapshot` and evaluates every group in it.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Report {
        let now = snapshot.at_ms;
        let window_len = self.settings.window;
        let table_size = self.settings.table_size;
        for (tp, ends) in &snapshot.ends {
            let state = self
                .partitions
                .entry(tp.clone())
                .or_insert_with(|| PartitionState {
                    table: LagTable::new(table_size),
                    recent_ends: VecDeque::new(),
                });
            state.table.record(ends.latest, now);
            state.recent_ends.push_back(ends.latest);
            while state.recent_ends.len() > window_len {
                state.recent_ends.pop_front();
            }
        }
        self.partitions
            .retain(|tp, _| snapshot.ends.contains_key(tp));

        let mut seen: HashSet<(String, Tp)> = HashSet::new();
        let mut groups = Vec::new();
        for (spec, reading) in &snapshot.groups {
            let report = match reading {
                Err(why) => {
                    // Keep its windows: a transient failure must not erase the history.
                    seen.extend(
                        self.windows
                            .keys()
                            .filter(|(g, _)| *g == spec.group)
                            .cloned(),
                    );
                    error_report(spec, why.clone())
                }
                Ok(reading) => self.evaluate_group(spec, reading, snapshot, &mut seen),
            };
            groups.push(report);
        }
        self.windows.retain(|key, _| seen.contains(key));

        let mut ends: BTreeMap<String, BTreeMap<i32, Ends>> = BTreeMap::new();
        for ((topic, partition), e) in &snapshot.ends {
            ends.entry(topic.clone())
                .or_default()
                .insert(*partition, *e);
        }
        Report {
            at_ms: now,
            ends,
            groups,
        }
    }

    fn evaluate_group(
        &mut self,
        spec: &GroupSpec,
        reading: &GroupReading,
        snapshot: &Snapshot,
        seen: &mut HashSet<(String, Tp)>,
    ) -> GroupReport {
        let now = snapshot.at_ms;
        let missing: Vec<&str> = spec
            .topics
            .iter()
            .filter(|t| !snapshot.ends.keys().any(|(topic, _)| topic == *t))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return error_report(spec, format!("topic(s) not found: {}", missing.join(", ")));
        }
        if reading.members == 0 && reading.committed.is_empty() {
            return error_report(
                spec,
                format!(
                    "group not found: no members (state {}) and no committed offset",
                    if reading.state.is_empty() {
                        "unknown"
                    } else {
                        &reading.state
                    }
                ),
            );
        }
        let alive = reading.members > 0;
        let mut partitions = Vec::new();
        for ((topic, partition), ends) in &snapshot.ends {
            if !spec.topics.contains(topic) {
                continue;
            }
            let tp = (topic.clone(), *partition);
            let committed = reading.committed.get(&tp).copied();
            let position = committed.map_or(ends.earliest, |c| c.offset);
            let lag = (ends.latest - position).max(0);
            let state = self.partitions.get(&tp).expect("recorded above");
            let lag_seconds = state.table.lag_seconds(position, now);
            let key = (spec.group.clone(), tp);
            let window = self.windows.entry(key.clone()).or_default();
            seen.insert(key);
            if let Some(c) = committed {
                let moved = window
                    .commits
                    .back()
                    .is_none_or(|last| last.offset != c.offset);
                let touched = c.updated_at_ms.is_some() && c.updated_at_ms != window.updated_at_ms;
                if moved || touched || alive {
                    let at_ms = if touched {
                        c.updated_at_ms.unwrap_or(now)
                    } else {
                        now
                    };
                    window.commits.push_back(Commit {
                        offset: c.offset,
                        lag,
                        at_ms,
                    });
                    window.updated_at_ms = c.updated_at_ms;
                    while window.commits.len() > self.settings.window {
                        window.commits.pop_front();
                    }
                }
            }
            let commits: Vec<Commit> = window.commits.iter().copied().collect();
            let ends_recent: Vec<i64> = state.recent_ends.iter().copied().collect();
            let status = evaluate(&commits, lag, &ends_recent, now, self.settings.allowed_lag);
            partitions.push(PartitionReport {
                topic: topic.clone(),
                partition: *partition,
                committed: committed.map(|c| c.offset),
                earliest: ends.earliest,
                latest: ends.latest,
                lag,
                lag_seconds,
                status,
            });
        }
        let status = partitions
            .iter()
            .map(|p| p.status)
            .max()
            .unwrap_or(Status::Ok);
        let max_lag = partitions.iter().map(|p| p.lag).max();
        let max_lag_seconds = partitions
            .iter()
            .filter_map(|p| p.lag_seconds)
            .fold(None, |acc: Option<f64>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            });
        GroupReport {
            group: spec.group.clone(),
            offsets: spec.offsets,
            status,
            error: None,
            state: Some(reading.state.clone()),
            members: Some(reading.members),
            max_lag,
            max_lag_seconds,
            partitions,
        }
    }
}

fn error_report(spec: &GroupSpec, why: String) -> GroupReport {
    GroupReport {
        group: spec.group.clone(),
        offsets: spec.offsets,
        status: Status::Err,
        error: Some(why),
        state: None,
        members: None,
        max_lag: None,
        max_lag_seconds: None,
        partitions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GroupSpec {
        GroupSpec {
            group: "g".into(),
            topics: vec!["t".into()],
            offsets: OffsetSource::Kafka,
        }
    }

    fn snap(at_s: i64, latest: i64, committed: Option<i64>, members: usize) -> Snapshot {
        let tp = ("t".to_string(), 0);
        Snapshot {
            at_ms: at_s * 1000,
            ends: BTreeMap::from([(
                tp.clone(),
                Ends {
                    earliest: 0,
                    latest,
                },
            )]),
            groups: vec![(
                spec(),
                Ok(GroupReading {
                    state: if members > 0 { "Stable" } else { "Empty" }.into(),
                    members,
                    committed: committed
                        .map(|offset| {
                            (
                                tp,
                                Committed {
                                    offset,
                                    updated_at_ms: None,
                                },
                            )
                        })
                        .into_iter()
                        .collect(),
                }),
            )],
        }
    }

    #[test]
    fn a_dead_consumer_with_lag_stops_a_live_stuck_one_stalls_a_caught_up_one_is_ok() {
        let mut dead = Tracker::new(TrackerSettings::default());
        let mut stuck = Tracker::new(TrackerSettings::default());
        let mut caught_up = Tracker::new(TrackerSettings::default());
        let mut last = (None, None, None);
        for i in 0..5 {
            let latest = 100 + i * 10;
            last = (
                Some(dead.observe(&snap(i * 10, latest, Some(40), 0))),
                Some(stuck.observe(&snap(i * 10, latest, Some(40), 1))),
                Some(caught_up.observe(&snap(i * 10, latest, Some(latest), 1))),
            );
        }
        let (dead, stuck, caught_up) = (last.0.unwrap(), last.1.unwrap(), last.2.unwrap());
        assert_eq!(dead.groups[0].status, Status::Stop);
        assert_eq!(dead.groups[0].max_lag, Some(100));
        // Samples every 10 s, 10 offsets apart (1 s per offset): offset 40 was the end offset 60 s before the
        // first sample (extrapolated), 100 s before the last poll.
        let secs = dead.groups[0].max_lag_seconds.unwrap();
        assert!((secs - 100.0).abs() < 1e-6, "{secs}");
        assert_eq!(stuck.groups[0].status, Status::Stall);
        assert_eq!(caught_up.groups[0].status, Status::Ok);
        assert_eq!(caught_up.groups[0].max_lag, Some(0));
        assert_eq!(caught_up.groups[0].max_lag_seconds, Some(0.0));
    }

    #[test]
    fn unknown_groups_missing_topics_and_read_errors_are_err() {
        let mut t = Tracker::new(TrackerSettings::default());
        let r = t.observe(&snap(0, 10, None, 0));
        assert_eq!(r.groups[0].status, Status::Err);
        assert!(
            r.groups[0]
                .error
                .as_ref()
                .unwrap()
                .contains("group not found")
        );
        let mut s = snap(0, 10, Some(1), 0);
        s.ends.clear();
        assert!(
            t.observe(&s).groups[0]
                .error
                .as_ref()
                .unwrap()
                .contains("not found: t")
        );
        s.groups[0].1 = Err("coordinator unreachable".into());
        assert_eq!(t.observe(&s).groups[0].status, Status::Err);
    }

    #[test]
    fn a_partition_without_commit_lags_from_the_earliest_offset() {
        let mut t = Tracker::new(TrackerSettings::default());
        let mut s = snap(0, 10, Some(5), 1);
        s.ends.insert(
            ("t".into(), 1),
            Ends {
                earliest: 3,
                latest: 9,
            },
        );
        let r = t.observe(&s);
        let p1 = &r.groups[0].partitions[1];
        assert_eq!((p1.committed, p1.lag), (None, 6));
        assert_eq!(r.groups[0].max_lag, Some(6));
    }
}
