//! Lag in seconds, the kafka-lag-exporter way: per partition a bounded table of (end offset, wall time)
//! samples; the lag in seconds of a committed offset `c` is `now − t(c)`, where `t(c)` is the interpolated time
//! at which the partition's end offset was `c`.
//!
//! Guarantees (pinned by the table tests below):
//! - `c ≥` the latest sampled end offset → `Some(0)`: a caught-up consumer has no lag, however long the topic
//!   has been idle (one sample is enough to know that).
//! - Fewer than two distinct end offsets and `c` behind → `None` (no metric sample): nothing to interpolate.
//! - `c` between two samples → linear interpolation between them; `c` older than the table → extrapolation
//!   along the line through the two oldest samples.
//! - The result is never negative, never NaN or infinite.
//! - A sample is stored only when the end offset **changes**, with the time it was first seen: an idle topic
//!   neither fills the table with copies nor moves the time of its last offset forward (which would make a
//!   consumer stuck just behind an idle end look younger than it is). When the end offset goes backwards (the
//!   topic was deleted and re-created, or truncated), the table restarts.

use std::collections::VecDeque;

/// One sample: the partition's end offset and the wall time (ms since the epoch) it was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub offset: i64,
    pub at_ms: i64,
}

/// The bounded table of one partition.
#[derive(Debug, Clone)]
pub struct LagTable {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl LagTable {
    /// A table keeping at most `capacity` samples (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            capacity: capacity.max(2),
        }
    }

    /// Records the end offset seen at `at_ms` (see the module's guarantees).
    pub fn record(&mut self, offset: i64, at_ms: i64) {
        match self.samples.back() {
            Some(last) if last.offset == offset => return,
            Some(last) if offset < last.offset || at_ms < last.at_ms => self.samples.clear(),
            _ => {}
        }
        self.samples.push_back(Sample { offset, at_ms });
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The latest end offset recorded.
    pub fn latest(&self) -> Option<i64> {
        self.samples.back().map(|s| s.offset)
    }

    /// The lag in seconds of committed offset `committed` at `now_ms`, or `None` when it cannot be computed.
    pub fn lag_seconds(&self, committed: i64, now_ms: i64) -> Option<f64> {
        let last = self.samples.back()?;
        if committed >= last.offset {
            return Some(0.0);
        }
        if self.samples.len() < 2 {
            return None;
        }
        let (a, b) = match self.samples.iter().position(|s| s.offset > committed) {
            // Older than the table: the line through the two oldest samples.
            Some(0) => (self.samples[0], self.samples[1]),
            Some(i) => (self.samples[i - 1], self.samples[i]),
            None => unreachable!("committed < the last offset"),
        };
        // Offsets strictly increase along the table, so b.offset > a.offset.
        let slope = (b.at_ms - a.at_ms) as f64 / (b.offset - a.offset) as f64;
        let at = a.at_ms as f64 + (committed - a.offset) as f64 * slope;
        let lag = (now_ms as f64 - at) / 1000.0;
        lag.is_finite().then_some(lag.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn table(points: &[(i64, i64)]) -> LagTable {
        let mut t = LagTable::new(100);
        for &(offset, secs) in points {
            t.record(offset, secs * S);
        }
        t
    }

    #[test]
    fn lag_seconds_table() {
        // (name, samples (offset, s), committed, now (s), expected)
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[(i64, i64)], i64, i64, Option<f64>)] = &[
            ("empty table", &[], 5, 100, None),
            ("at latest, one sample", &[(100, 10)], 100, 50, Some(0.0)),
            ("at latest", &[(0, 0), (100, 10)], 100, 50, Some(0.0)),
            (
                "ahead of the latest sample",
                &[(0, 0), (100, 10)],
                120,
                50,
                Some(0.0),
            ),
            ("fewer than 2 samples, behind", &[(100, 10)], 50, 50, None),
            (
                "exactly on a sample",
                &[(0, 0), (100, 10), (200, 20)],
                100,
                30,
                Some(20.0),
            ),
            (
                "interpolation",
                &[(0, 0), (100, 10), (200, 20)],
                150,
                30,
                Some(15.0),
            ),
            (
                "interpolation, uneven",
                &[(0, 0), (100, 10), (110, 60)],
                105,
                60,
                Some(25.0),
            ),
            (
                "extrapolation below the oldest",
                &[(100, 10), (200, 20)],
                50,
                20,
                Some(15.0),
            ),
            // The line through the two oldest samples, whatever the later ones say.
            (
                "extrapolation uses the oldest two",
                &[(100, 10), (200, 20), (210, 100)],
                0,
                100,
                Some(100.0),
            ),
            // Idle for hours, consumer caught up: 0, not hours.
            (
                "idle topic, caught up",
                &[(0, 0), (500, 60), (500, 3600), (500, 7200)],
                500,
                7200,
                Some(0.0),
            ),
            // Idle for hours, consumer just behind the idle end: the record at 499 has waited since before the
            // end was first seen at 60 s; the table kept that time instead of moving it forward.
            (
                "idle topic, behind",
                &[(0, 0), (500, 60), (500, 7200)],
                499,
                7200,
                Some(7200.0 - 59.88),
            ),
            (
                "flat table, behind",
                &[(500, 0), (500, 3600)],
                400,
                3600,
                None,
            ),
            (
                "never negative (clock skew)",
                &[(0, 100), (100, 200)],
                50,
                10,
                Some(0.0),
            ),
        ];
        for (name, points, committed, now, expected) in cases {
            let got = table(points).lag_seconds(*committed, now * S);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() < 1e-6, "{name}: {g} != {e}"),
                _ => assert_eq!(got, *expected, "{name}"),
            }
        }
    }

    #[test]
    fn the_table_is_bounded_and_restarts_when_the_end_goes_back() {
        let mut t = LagTable::new(3);
        for i in 0..10 {
            t.record(i * 10, i * S);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.samples().next().unwrap().offset, 70);
        t.record(5, 20 * S);
        assert_eq!(t.len(), 1);
        assert_eq!(t.latest(), Some(5));
        // Unchanged offsets keep the first time seen.
        t.record(5, 30 * S);
        assert_eq!(t.samples().next().unwrap().at_ms, 20 * S);
    }
}
