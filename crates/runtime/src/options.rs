//! The runtime's operational settings (not in the spec): deadlines, intervals, bounds, instance identity.
//!
//! Guarantees: every knob has a safe default, durations are typed (`"10s"`), unknown keys are rejected, and
//! [`ConsumerOptions::validate`] checks the dependent ones against the group policy at start-up (a drain deadline
//! shorter than the session timeout, commit intervals shorter than the transaction timeout, …). The
//! `[service.consumer]` section that holds them is `crate::service::ConsumerSettings`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::policy::GroupPolicy;

/// Operational settings of one consumer instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerOptions {
    /// This instance's stable identity (e.g. the pod name). Used in `client.id`, in the `transactional.id` of
    /// mode (a) — a restarted instance with the same id fences its predecessor's producer and aborts its open
    /// transaction at once — and as `group.instance.id` when `static_membership` is on. Must be unique among
    /// live instances of the group. Default: a random id per process.
    pub instance_id: Option<String>,
    /// Kafka static membership (KIP-345): a restart within the session timeout keeps the assignment without a
    /// rebalance. A stopped static member is only replaced after the session timeout.
    pub static_membership: bool,
    /// How many partitions may run a handler at the same time.
    pub max_parallel_partitions: usize,
    /// At-least-once and mode (b): how often done offsets are committed to Kafka (asynchronously). Mode (a): how
    /// often a transaction holding only offsets (no outputs, no dead letters) is committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Mode (a): how often the open transaction is committed (with the offsets of the records done in it) once it
    /// holds outputs or dead letters, which `read_committed` readers see only then. Mode (b): the longest a lane's
    /// database transaction of back-to-back units stays open while the lane keeps working (it commits sooner when
    /// the lane waits, or holds 16 units; decision 0056).
    #[serde(with = "humantime_serde")]
    pub transaction_commit_interval: Duration,
    /// Mode (a): librdkafka `transaction.timeout.ms`.
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Mode (a): the timeout of every transactional call (init, send offsets, commit, abort).
    #[serde(with = "humantime_serde")]
    pub transactional_call_timeout: Duration,
    /// librdkafka `max.poll.interval.ms`. The poll thread polls continuously; only a rebalance callback holds it
    /// — draining revoked lanes (at most `drain_timeout`) and reading mode (b)'s stored positions (at most
    /// `db_timeout`) — so this must exceed their sum with a margin, or a slow rebalance makes the member leave
    /// its group.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// On revoke and shutdown: how long in-flight work may take to finish before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long to wait for the broker to acknowledge output and DLQ records.
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Mode (b): the timeout of the runtime's own database statements (begin, offset store, commit).
    #[serde(with = "humantime_serde")]
    pub db_timeout: Duration,
    /// The circuit breaker's first probe interval; it doubles after each failed probe up to `breaker_probe_max`.
    #[serde(with = "humantime_serde")]
    pub breaker_probe_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub breaker_probe_max: Duration,
    /// Records of a partition waiting for its lane (beyond its queue of `batch_size`) before the partition is
    /// paused, in bytes (key, value, headers, plus ~128 bytes each). Pausing is costly — librdkafka drops what
    /// it prefetched for the partition and fetches it again on resume — so this is a few fetches' worth. The
    /// runtime's memory is about `min(partitions × this, buffer_bytes_total) + partitions × 2 batches` plus
    /// librdkafka's prefetch.
    pub buffer_bytes_per_partition: usize,
    /// The same bound for all assigned partitions together: each partition may stash
    /// `min(buffer_bytes_per_partition, buffer_bytes_total / assigned partitions)` (at least 64 KiB), so a member
    /// that owns many partitions (two topics, or a group that shrank to one member) stays inside the same memory.
    pub buffer_bytes_total: usize,
    /// librdkafka's prefetch bound for the whole consumer (`queued.max.messages.kbytes`; librdkafka lowers
    /// `fetch.max.bytes` to it). 4 MiB: it costs more memory than it says (librdkafka's per-message structures
    /// and the fetch buffers come on top), and with the short `fetch_queue_backoff` a refill is milliseconds away
    /// (decision 0048) — or up to `fetch_wait_max` behind a fetch the broker holds (decision 0055).
    pub queued_max_messages_kbytes: u32,
    /// The most one fetch brings for one partition (`max.partition.fetch.bytes`, compressed bytes as stored; a
    /// record batch larger than this still comes whole). 64 KiB rather than librdkafka's 1 MiB: a fetch response
    /// is decoded into the partition's stash at once, and 1 MiB of well-compressed small records is tens of
    /// thousands of records — more than a partition's stash share (2 MiB with 12 partitions), so a partition
    /// whose lane was busy paused, and librdkafka dropped and later fetched and decoded again what it had
    /// prefetched for it (`make bench-runtime`, mode (b): 40–70 pauses and ~400k records/s with 1 MiB, 1–2 pauses
    /// and ~670k with 64 KiB; at-least-once unchanged; decision 0049). At most 1 MiB.
    pub max_partition_fetch_bytes: usize,
    /// How long librdkafka postpones the next fetch of a partition once its prefetch bound is reached
    /// (`fetch.queue.backoff.ms`). librdkafka's default of 1 s made a consumer with a prefetch bound of 8 MiB stop
    /// and go: it emptied its queue, then waited up to a second for the next fetch (`make bench-runtime`: 304k
    /// records/s with 1 s, 466k with 10 ms; decision 0048).
    #[serde(with = "humantime_serde")]
    pub fetch_queue_backoff: Duration,
    /// The longest the broker holds a fetch that found nothing new (`fetch.wait.max.ms`). librdkafka keeps one
    /// fetch in flight per broker, so a partition that becomes fetchable while one is held — resumed after a
    /// pause, seeked after an outage, back from a full-queue back-off — waits for it: with librdkafka's 500 ms,
    /// a resumed partition's next record came 210–471 ms after the resume while the other partition was idle,
    /// with 100 ms 12–95 ms (`cargo bench -p runtime --bench resume`, decision 0055). The price is one empty fetch
    /// per broker every 100 ms when nothing arrives. Between 1 ms and 5 s.
    #[serde(with = "humantime_serde")]
    pub fetch_wait_max: Duration,
    /// How often partition lag is sampled (librdkafka statistics).
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
    /// Where a group without a committed offset starts: `earliest` (default: nothing is skipped) or `latest`.
    pub auto_offset_reset: String,
    /// Wait before re-creating the consumer after a failure that requires it.
    #[serde(with = "humantime_serde")]
    pub restart_backoff: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            instance_id: None,
            static_membership: false,
            max_parallel_partitions: 16,
            commit_interval: Duration::from_secs(1),
            transaction_commit_interval: Duration::from_millis(100),
            transaction_timeout: Duration::from_secs(60),
            transactional_call_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            produce_timeout: Duration::from_secs(30),
            db_timeout: Duration::from_secs(30),
            breaker_probe_initial: Duration::from_secs(1),
            breaker_probe_max: Duration::from_secs(30),
            buffer_bytes_per_partition: 4 << 20,
            buffer_bytes_total: 24 << 20,
            queued_max_messages_kbytes: 4096,
            fetch_queue_backoff: Duration::from_millis(10),
            max_partition_fetch_bytes: 64 << 10,
            fetch_wait_max: Duration::from_millis(100),
            lag_interval: Duration::from_secs(5),
            auto_offset_reset: "earliest".into(),
            restart_backoff: Duration::from_secs(1),
        }
    }
}

/// The smallest stash a partition gets, whatever the budget: below it pauses would cost more than they save.
pub const MIN_STASH_BYTES: usize = 64 << 10;

impl ConsumerOptions {
    /// How many bytes one of `assigned` partitions may stash before it is paused (see
    /// [`ConsumerOptions::buffer_bytes_total`]).
    pub fn stash_limit(&self, assigned: usize) -> usize {
        let share = self.buffer_bytes_total / assigned.max(1);
        self.buffer_bytes_per_partition
            .min(share)
            .max(MIN_STASH_BYTES)
    }

    /// Checks the settings that depend on each other or on the policy.
    pub fn validate(&self, policy: &GroupPolicy) -> Result<(), RuntimeError> {
        let bad = |why: String| Err(RuntimeError::Config(why));
        if self.buffer_bytes_per_partition < MIN_STASH_BYTES {
            return bad("buffer_bytes_per_partition must be at least 64 KiB".into());
        }
        if self.buffer_bytes_total < MIN_STASH_BYTES {
            return bad("buffer_bytes_total must be at least 64 KiB".into());
        }
        if self.max_parallel_partitions == 0 {
            return bad("max_parallel_partitions must be at least 1".into());
        }
        if self.drain_timeout >= policy.session_timeout {
            return bad(format!(
                "drain_timeout ({:?}) must be shorter than the session timeout ({:?})",
                self.drain_timeout, policy.session_timeout
            ));
        }
        if self.max_poll_interval < self.drain_timeout + self.db_timeout + Duration::from_secs(10) {
            return bad(format!(
                "max_poll_interval ({:?}) must exceed drain_timeout + db_timeout ({:?}) by at least 10s: a rebalance \
                 callback may take that long, and overrunning it makes the member leave its group",
                self.max_poll_interval,
                self.drain_timeout + self.db_timeout
            ));
        }
        if self.transaction_commit_interval.is_zero() || self.commit_interval.is_zero() {
            return bad("commit intervals must be positive".into());
        }
        if self.transactional_call_timeout >= self.transaction_timeout
            || self.transaction_commit_interval >= self.transaction_timeout
        {
            return bad("transactional_call_timeout and transaction_commit_interval must be shorter than transaction_timeout".into());
        }
        if self.breaker_probe_initial.is_zero()
            || self.breaker_probe_max < self.breaker_probe_initial
        {
            return bad(
                "breaker_probe_initial must be positive and not above breaker_probe_max".into(),
            );
        }
        if self.fetch_queue_backoff > Duration::from_secs(300) {
            return bad(format!(
                "fetch_queue_backoff ({:?}) must not exceed 300s (librdkafka's bound)",
                self.fetch_queue_backoff
            ));
        }
        if !(1 << 10..=1 << 20).contains(&self.max_partition_fetch_bytes) {
            return bad(format!(
                "max_partition_fetch_bytes ({}) must be between 1 KiB and 1 MiB: larger fetches overflow a \
                 partition's stash and make it pause",
                self.max_partition_fetch_bytes
            ));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(5)).contains(&self.fetch_wait_max) {
            return bad(format!(
                "fetch_wait_max ({:?}) must be between 1ms and 5s: it is how long a partition that becomes \
                 fetchable may wait behind a fetch the broker holds",
                self.fetch_wait_max
            ));
        }
        if !matches!(self.auto_offset_reset.as_str(), "earliest" | "latest") {
            return bad(format!(
                "auto_offset_reset must be earliest or latest, not {:?}",
                self.auto_offset_reset
            ));
        }
        if self
            .instance_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return bad("instance_id must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SETTLEMENT_PROCESSING;
    use crate::service::ConsumerSettings;

    /// Why a service section with these options cannot resolve its policy.
    fn rejected(options: ConsumerOptions) -> String {
        ConsumerSettings {
            options,
            ..Default::default()
        }
        .policy(SETTLEMENT_PROCESSING)
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn a_service_section_resolves_to_the_spec_policy_with_overrides() {
        let config: ConsumerSettings = serde_json::from_value(serde_json::json!({
            "policy": { "batch_size": 20 },
            "options": { "instance_id": "settlement-0", "drain_timeout": "15s" },
        }))
        .unwrap();
        let policy = config.policy(SETTLEMENT_PROCESSING).unwrap();
        assert_eq!(policy.batch_size, 20);
        assert_eq!(policy.session_timeout, Duration::from_secs(45));
        assert_eq!(config.options.drain_timeout, Duration::from_secs(15));
    }

    #[test]
    fn a_drain_deadline_longer_than_the_session_is_rejected() {
        let err = rejected(ConsumerOptions {
            drain_timeout: Duration::from_secs(60),
            max_poll_interval: Duration::from_secs(120),
            ..Default::default()
        });
        assert!(err.contains("drain_timeout"), "{err}");
    }

    #[test]
    fn max_poll_interval_must_outlast_the_callbacks() {
        let err = rejected(ConsumerOptions {
            max_poll_interval: Duration::from_secs(20),
            ..Default::default()
        });
        assert!(err.contains("max_poll_interval"), "{err}");
    }

    #[test]
    fn the_fetch_backoff_is_short_by_default_and_bounded_like_librdkafkas() {
        assert_eq!(
            ConsumerOptions::default().fetch_queue_backoff,
            Duration::from_millis(10),
            "librdkafka's 1 s default stalls a consumer whose prefetch bound is reached"
        );
        let err = rejected(ConsumerOptions {
            fetch_queue_backoff: Duration::from_secs(301),
            ..Default::default()
        });
        assert!(err.contains("fetch_queue_backoff"), "{err}");
    }

    #[test]
    fn a_held_fetch_is_short_by_default_and_bounded() {
        assert_eq!(
            ConsumerOptions::default().fetch_wait_max,
            Duration::from_millis(100),
            "librdkafka's 500 ms makes a resumed partition wait behind a fetch held for idle ones"
        );
        for wait in [Duration::ZERO, Duration::from_millis(5001)] {
            let err = rejected(ConsumerOptions {
                fetch_wait_max: wait,
                ..Default::default()
            });
            assert!(err.contains("fetch_wait_max"), "{err}");
        }
    }

    #[test]
    fn a_partitions_fetch_is_small_by_default_and_bounded() {
        assert_eq!(
            ConsumerOptions::default().max_partition_fetch_bytes,
            64 << 10
        );
        for bytes in [512, (1 << 20) + 1] {
            let err = rejected(ConsumerOptions {
                max_partition_fetch_bytes: bytes,
                ..Default::default()
            });
            assert!(err.contains("max_partition_fetch_bytes"), "{err}");
        }
    }

    #[test]
    fn the_stash_budget_is_shared_by_the_assigned_partitions_with_a_floor() {
        let o = ConsumerOptions {
            buffer_bytes_per_partition: 4 << 20,
            buffer_bytes_total: 32 << 20,
            ..Default::default()
        };
        // Few partitions: the per-partition bound; many: an equal share of the total; never below the floor.
        assert_eq!(o.stash_limit(0), 4 << 20);
        assert_eq!(o.stash_limit(8), 4 << 20);
        assert_eq!(o.stash_limit(16), 2 << 20);
        assert_eq!(o.stash_limit(24), (32 << 20) / 24);
        assert_eq!(o.stash_limit(10_000), MIN_STASH_BYTES);
        let err = rejected(ConsumerOptions {
            buffer_bytes_total: 1024,
            ..Default::default()
        });
        assert!(err.contains("buffer_bytes_total"), "{err}");
    }
}
