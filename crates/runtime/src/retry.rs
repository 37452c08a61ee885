//! What to do after a handler failure: the spec's "Error Classification" table as one pure function.
//!
//! Guarantees: [`decide`] maps (class, failure history, policy) to exactly one [`Decision`]:
//! - schema → dead-letter now;
//! - business → retry after `policy.retry.delay(n)` for the n-th business failure while `n ≤ max_retries`,
//!   then dead-letter (so the DLQ gets the record after `max_retries + 1` failed business attempts);
//! - transient → retry after `policy.transient_delay(n)` for the n-th consecutive transient failure, forever;
//! - infrastructure → open the circuit breaker and retry when it lets us (never dead-letter).
//!
//! [`FailureLog`] is what the DLQ's provenance headers report: attempts, first and last failure time.

use std::time::{Duration, SystemTime};

use crate::error::ErrorClass;
use crate::policy::GroupPolicy;

/// The next step for a record whose latest attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait, then try the same record again (in place: order within the partition is kept).
    RetryAfter(Duration),
    /// Give up on the record: write it to the DLQ, then continue with the next one.
    DeadLetter,
    /// A dependency is down: open the circuit breaker, then try again when it allows.
    OpenBreaker,
}

/// The failures of one record so far (in this consumer's ownership of its partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureLog {
    /// Attempts made, all failed.
    pub attempts: u32,
    /// Failed attempts that were business errors.
    pub business_failures: u32,
    /// Transient failures since the last non-transient one (drives the transient backoff).
    pub consecutive_transient: u32,
    pub first_failure: SystemTime,
    pub last_failure: SystemTime,
    pub last_class: ErrorClass,
}

impl FailureLog {
    /// The log after a first failed attempt.
    pub fn first(class: ErrorClass, at: SystemTime) -> FailureLog {
        let mut log = FailureLog {
            attempts: 0,
            business_failures: 0,
            consecutive_transient: 0,
            first_failure: at,
            last_failure: at,
            last_class: class,
        };
        log.record(class, at);
        log
    }

    /// Adds a failed attempt.
    pub fn record(&mut self, class: ErrorClass, at: SystemTime) {
        self.attempts += 1;
        self.last_failure = at;
        self.last_class = class;
        match class {
            ErrorClass::Business => self.business_failures += 1,
            ErrorClass::Transient => self.consecutive_transient += 1,
            ErrorClass::Schema | ErrorClass::Infrastructure => {}
        }
        if class != ErrorClass::Transient {
            self.consecutive_transient = 0;
        }
    }
}

/// The decision after the failure recorded last in `log` (whose class is `log.last_class`).
pub fn decide(policy: &GroupPolicy, log: &FailureLog) -> Decision {
    match log.last_class {
        ErrorClass::Schema => Decision::DeadLetter,
        ErrorClass::Business if log.business_failures > policy.retry.max_retries => {
            Decision::DeadLetter
        }
        ErrorClass::Business => Decision::RetryAfter(policy.retry.delay(log.business_failures)),
        ErrorClass::Transient => {
            Decision::RetryAfter(policy.transient_delay(log.consecutive_transient))
        }
        ErrorClass::Infrastructure => Decision::OpenBreaker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::*;

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    /// Replays `classes` as consecutive failures of one record and returns each decision.
    fn replay(group: &str, classes: &[ErrorClass]) -> Vec<Decision> {
        let policy = GroupPolicy::spec(group).unwrap();
        let t = SystemTime::UNIX_EPOCH;
        let mut log = FailureLog::first(classes[0], t);
        let mut out = vec![decide(&policy, &log)];
        for class in &classes[1..] {
            log.record(*class, t);
            out.push(decide(&policy, &log));
        }
        out
    }

    #[test]
    fn business_errors_wait_the_spec_schedule_then_dead_letter() {
        use Decision::*;
        let b = ErrorClass::Business;
        assert_eq!(
            replay(READ_MODEL_PROJECTIONS, &[b; 4]),
            [
                RetryAfter(s(1)),
                RetryAfter(s(2)),
                RetryAfter(s(4)),
                DeadLetter
            ]
        );
        assert_eq!(
            replay(WEBHOOK_DELIVERY, &[b; 6]),
            [
                RetryAfter(s(2)),
                RetryAfter(s(4)),
                RetryAfter(s(8)),
                RetryAfter(s(16)),
                RetryAfter(s(32)),
                DeadLetter
            ]
        );
        let settlement = replay(SETTLEMENT_PROCESSING, &[b; 11]);
        assert_eq!(settlement[..10], [RetryAfter(s(5)); 10]);
        assert_eq!(settlement[10], DeadLetter);
        assert_eq!(
            replay(ANALYTICS_AGGREGATION, &[b; 3]),
            [RetryAfter(s(10)), RetryAfter(s(10)), DeadLetter]
        );
    }

    #[test]
    fn schema_errors_go_straight_to_the_dlq() {
        assert_eq!(
            replay(SETTLEMENT_PROCESSING, &[ErrorClass::Schema]),
            [Decision::DeadLetter]
        );
        // Even after business retries, a schema failure is final.
        assert_eq!(
            replay(
                READ_MODEL_PROJECTIONS,
                &[ErrorClass::Business, ErrorClass::Schema]
            )[1],
            Decision::DeadLetter
        );
    }

    #[test]
    fn transient_errors_back_off_exponentially_and_never_dead_letter() {
        let waits = replay(WEBHOOK_DELIVERY, &[ErrorClass::Transient; 40]);
        assert_eq!(
            waits[..3],
            [
                Decision::RetryAfter(s(1)),
                Decision::RetryAfter(s(2)),
                Decision::RetryAfter(s(4))
            ]
        );
        assert!(
            waits
                .iter()
                .all(|d| matches!(d, Decision::RetryAfter(w) if *w <= s(30)))
        );
        // Transient failures do not use up the business budget.
        let mixed = replay(
            READ_MODEL_PROJECTIONS,
            &[
                ErrorClass::Transient,
                ErrorClass::Transient,
                ErrorClass::Business,
                ErrorClass::Transient,
            ],
        );
        assert_eq!(mixed[2], Decision::RetryAfter(s(1)));
        assert_eq!(
            mixed[3],
            Decision::RetryAfter(Duration::from_millis(100)),
            "backoff restarts"
        );
    }

    #[test]
    fn infrastructure_errors_open_the_breaker_and_never_dead_letter() {
        assert!(
            replay(SETTLEMENT_PROCESSING, &[ErrorClass::Infrastructure; 50])
                .iter()
                .all(|d| *d == Decision::OpenBreaker)
        );
    }

    #[test]
    fn the_log_counts_attempts_and_keeps_first_and_last_failure() {
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + s(3);
        let mut log = FailureLog::first(ErrorClass::Business, t0);
        log.record(ErrorClass::Infrastructure, t1);
        assert_eq!((log.attempts, log.business_failures), (2, 1));
        assert_eq!((log.first_failure, log.last_failure), (t0, t1));
    }
}
