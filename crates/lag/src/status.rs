//! Burrow's status rules (linkedin/Burrow, `core/internal/evaluator`), applied to a window of commit
//! observations per partition.
//!
//! A partition's window holds its last N commit observations: (committed offset, lag at that moment, commit
//! time). Burrow reads every commit from `__consumer_offsets`; we read committed offsets each poll, so the
//! tracker ([`crate::tracker`]) adds an observation when a commit is *visible*: the offset moved, the mode (b)
//! row's `updated_at` moved, or the group has live members (a live classic-protocol member commits on its
//! schedule, so its unchanged offset is Burrow's "committing an offset that does not change"). A group with no
//! members and an unmoved offset adds nothing — exactly like a dead consumer in Burrow — so time runs out on
//! its last commit.
//!
//! Guarantees — the rules, in Burrow's order, each pinned by a table test:
//! 1. current lag ≤ `allowed_lag` → **OK**, whatever the history;
//! 2. **STOP** when `now − last commit > last commit − first commit` (no commit for longer than the window
//!    spans), unless the partition's end offset was at or below the last commit within the recent broker
//!    samples (the consumer was caught up a moment ago);
//! 3. **REWIND** when the committed offset went back inside the window and never got back to where it was;
//! 4. only when the lag was above `allowed_lag` in *every* observation of the window:
//!    **STALL** when the offset never changed across the window, else **WARN** when the lag never decreased;
//! 5. otherwise **OK**. An empty window is OK (nothing to judge).
//!
//! Group status = the worst partition's ([`Status`] is ordered by severity); **ERR** is reserved for a group whose
//! offsets could not be read. Unlike Burrow, which folds STOP/STALL/REWIND into ERR at group level, the group
//! keeps the partition's specific status (an alert can say *why*).

use serde::Serialize;

/// A consumer group's or partition's status, ordered by severity; the numbers are the metric's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok = 0,
    Warn = 1,
    Stall = 2,
    Stop = 3,
    Rewind = 4,
    Err = 5,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
            Status::Rewind => "REWIND",
            Status::Err => "ERR",
        }
    }

    /// The value of `kafka_consumergroup_status`.
    pub const fn value(self) -> i64 {
        self as i64
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One commit observation of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub offset: i64,
    /// End offset − committed offset when the commit was observed (≥ 0).
    pub lag: i64,
    /// Commit time, ms since the epoch.
    pub at_ms: i64,
}

/// Evaluates one partition: `window` oldest first, `current_lag` now, `recent_ends` the partition's end offsets
/// of the last polls, `now_ms` the wall clock.
pub fn evaluate(
    window: &[Commit],
    current_lag: i64,
    recent_ends: &[i64],
    now_ms: i64,
    allowed_lag: i64,
) -> Status {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Status::Ok;
    };
    if current_lag <= allowed_lag {
        return Status::Ok;
    }
    let stopped = now_ms - last.at_ms > last.at_ms - first.at_ms;
    let recently_caught_up = recent_ends.iter().any(|&end| end <= last.offset);
    if stopped && !recently_caught_up {
        return Status::Stop;
    }
    if let Some(i) = (1..window.len()).find(|&i| window[i].offset < window[i - 1].offset) {
        let before = window[i - 1].offset;
        if !window[i..].iter().any(|c| c.offset >= before) {
            return Status::Rewind;
        }
    }
    if window.iter().all(|c| c.lag > allowed_lag) {
        if window.windows(2).all(|w| w[0].offset == w[1].offset) {
            return Status::Stall;
        }
        if window.windows(2).all(|w| w[1].lag >= w[0].lag) {
            return Status::Warn;
        }
    }
    Status::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (offset, lag, at in seconds)
    fn w(points: &[(i64, i64, i64)]) -> Vec<Commit> {
        points
            .iter()
            .map(|&(offset, lag, s)| Commit {
                offset,
                lag,
                at_ms: s * 1000,
            })
            .collect()
    }

    #[test]
    fn burrow_rules_table() {
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[(i64, i64, i64)], i64, &[i64], i64, Status)] = &[
            // (name, window, current lag, recent end offsets, now (s), expected)
            ("empty window", &[], 100, &[], 100, Status::Ok),
            (
                "no lag now, even after a stop",
                &[(10, 5, 0), (10, 5, 10)],
                0,
                &[10],
                1000,
                Status::Ok,
            ),
            (
                "advancing, lag shrinking",
                &[(10, 50, 0), (20, 45, 10), (30, 30, 20)],
                30,
                &[60],
                25,
                Status::Ok,
            ),
            (
                "lag zero somewhere in the window",
                &[(10, 0, 0), (10, 5, 10), (10, 9, 20)],
                9,
                &[19],
                25,
                Status::Ok,
            ),
            // No commit for longer than the window spans.
            (
                "stopped",
                &[(10, 5, 0), (20, 5, 10)],
                50,
                &[70],
                21,
                Status::Stop,
            ),
            (
                "one commit, then nothing",
                &[(10, 5, 0)],
                5,
                &[15],
                10,
                Status::Stop,
            ),
            (
                "not yet stopped",
                &[(10, 5, 0), (20, 3, 10)],
                50,
                &[70],
                19,
                Status::Ok,
            ),
            // Burrow: recently caught up (an end offset at or below the last commit) delays STOP.
            (
                "stopped but recently caught up",
                &[(10, 0, 0), (20, 0, 10)],
                5,
                &[20, 25],
                100,
                Status::Ok,
            ),
            // Committing (fresh timestamps) the same offset with lag everywhere.
            (
                "stalled",
                &[(10, 5, 0), (10, 8, 10), (10, 12, 20)],
                12,
                &[22],
                25,
                Status::Stall,
            ),
            (
                "rewind",
                &[(100, 5, 0), (120, 5, 10), (50, 80, 20)],
                80,
                &[130],
                25,
                Status::Rewind,
            ),
            (
                "rewind recovered",
                &[(100, 5, 0), (50, 80, 10), (120, 10, 20)],
                10,
                &[130],
                25,
                Status::Ok,
            ),
            // Rewind is judged even when the lag was zero before it (Burrow checks it before rule 1's gate).
            (
                "rewind after zero lag",
                &[(100, 0, 0), (0, 100, 10), (10, 90, 20)],
                90,
                &[100],
                25,
                Status::Rewind,
            ),
            (
                "advancing, lag never decreasing",
                &[(10, 5, 0), (20, 5, 10), (30, 7, 20)],
                7,
                &[37],
                25,
                Status::Warn,
            ),
            (
                "advancing, lag decreased once",
                &[(10, 5, 0), (20, 6, 10), (30, 4, 20)],
                4,
                &[34],
                25,
                Status::Ok,
            ),
            (
                "allowed lag",
                &[(10, 5, 0), (10, 5, 10)],
                5,
                &[15],
                1000,
                Status::Ok,
            ),
        ];
        for (name, window, lag, ends, now, expected) in cases {
            let allowed = if *name == "allowed lag" { 5 } else { 0 };
            assert_eq!(
                evaluate(&w(window), *lag, ends, now * 1000, allowed),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn severity_order_is_the_metric_order() {
        use Status::*;
        let all = [Ok, Warn, Stall, Stop, Rewind, Err];
        for (i, s) in all.iter().enumerate() {
            assert_eq!(s.value(), i as i64);
        }
        assert_eq!(all.iter().max(), Some(&Err));
        assert!(Stop > Stall && Rewind > Stop);
    }
}
