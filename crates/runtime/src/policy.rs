//! The consumer groups' policies, as data, in one place.
//!
//! Guarantees: [`GroupPolicy::spec`] returns exactly the numbers of the spec's tables — "Consumer Group
//! Configuration" (group, topics, guarantee), "Consumer Configuration Settings" (batch size = max poll records,
//! session timeout, heartbeat, retry backoff) and "Retry Configuration" (max retries, backoff) — for the four
//! groups the spec lists, and our documented choices for `audit-logging`, `notification-delivery` and
//! `payment-ingestion` (decision 0034), which the spec's settings and retry tables leave out (see
//! `docs/decisions/0007-consumer-runtime.md`). A unit test pins every number. Configuration can override any field ([`PolicyOverrides`]); [`GroupPolicy::validate`] rejects
//! inconsistent results at start-up.
//!
//! How the two retry notions are read (decision 0007):
//! - **Business errors** follow [`RetryPolicy`]: one first attempt, then `max_retries` retries waiting
//!   [`RetryPolicy::delay`]`(1..=max_retries)` before each; the record goes to the DLQ when the last retry fails
//!   (read-model-projections: fails at t=0, 1 s, 3 s, 7 s → DLQ after the 4th failed attempt).
//! - **Transient errors** retry in place forever, waiting `retry_backoff` (the settings table's "Retry Backoff")
//!   doubled on each failure up to `transient_backoff_cap`; they never go to the DLQ.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The topic names: `events::topics` is their one home (checked against `deploy/kafka/topics.yaml`).
pub use events::topics;
/// The dead-letter topic of a source topic: `events::topics`' one rule.
pub use events::topics::dead_letter_topic;

/// The processing guarantee of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Offsets are committed after the handler's work (and its output records and DLQ writes) are durable;
    /// a crash redelivers, handlers are idempotent (see [`crate::idempotency`]).
    AtLeastOnce,
    /// Mode (a): the handler's output records, DLQ records and the consumed offsets are committed in one Kafka
    /// transaction; input is read `read_committed`.
    ExactlyOnceKafka,
    /// Mode (b): the handler's database writes and the consumed offsets (table `consumer_offsets`) are committed
    /// in one PostgreSQL transaction; on assignment the consumer seeks to the stored offsets.
    ExactlyOnceDb,
}

impl Guarantee {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AtLeastOnce => "at_least_once",
            Self::ExactlyOnceKafka => "exactly_once_kafka",
            Self::ExactlyOnceDb => "exactly_once_db",
        }
    }
}

/// How long to wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// `initial`, `initial × factor`, `initial × factor²`, …
    Exponential {
        #[serde(with = "humantime_serde")]
        initial: Duration,
        factor: u32,
    },
    /// A retry every `interval`: the spec's "Linear (5s intervals)", read as retries spaced `interval` apart,
    /// so that the attempt times grow linearly (5 s, 10 s, 15 s, … after the first failure).
    Linear {
        #[serde(with = "humantime_serde")]
        interval: Duration,
    },
    /// The same `interval` before every retry (the spec's "Fixed (10s)").
    Fixed {
        #[serde(with = "humantime_serde")]
        interval: Duration,
    },
}

impl Backoff {
    /// The wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        match *self {
            Backoff::Exponential { initial, factor } => {
                let exp = retry.saturating_sub(1).min(32);
                initial.saturating_mul(factor.saturating_pow(exp))
            }
            Backoff::Linear { interval } | Backoff::Fixed { interval } => interval,
        }
    }
}

/// The retry policy for business errors: `max_retries` retries after the first attempt, then the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based, `1..=max_retries`).
    pub fn delay(&self, retry: u32) -> Duration {
        self.backoff.delay(retry)
    }

    /// Every wait of the policy, in order.
    pub fn schedule(&self) -> Vec<Duration> {
        (1..=self.max_retries).map(|n| self.delay(n)).collect()
    }
}

/// Everything the runtime needs to know about one consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPolicy {
    /// The consumer group id.
    pub group: String,
    /// Topics the group subscribes to.
    pub topics: Vec<String>,
    pub guarantee: Guarantee,
    /// The spec's "Batch Size" and "Max Poll Records": the most records a partition lane holds and processes
    /// at once (its queue capacity, and in mode (b) the records per database transaction).
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The spec's "Retry Backoff": the first wait after a transient error (doubling after each further one).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between transient retries.
    #[serde(with = "humantime_serde")]
    pub transient_backoff_cap: Duration,
    /// Business errors: retries before the DLQ.
    pub retry: RetryPolicy,
}

/// The seven groups of the design.
pub const GROUPS: [&str; 7] = [
    READ_MODEL_PROJECTIONS,
    WEBHOOK_DELIVERY,
    SETTLEMENT_PROCESSING,
    ANALYTICS_AGGREGATION,
    AUDIT_LOGGING,
    NOTIFICATION_DELIVERY,
    PAYMENT_INGESTION,
];
pub const READ_MODEL_PROJECTIONS: &str = "read-model-projections";
pub const WEBHOOK_DELIVERY: &str = "webhook-delivery";
pub const SETTLEMENT_PROCESSING: &str = "settlement-processing";
pub const ANALYTICS_AGGREGATION: &str = "analytics-aggregation";
pub const AUDIT_LOGGING: &str = "audit-logging";
pub const NOTIFICATION_DELIVERY: &str = "notification-delivery";
pub const PAYMENT_INGESTION: &str = "payment-ingestion";

/// Transient retries never wait longer than this by default.
pub const DEFAULT_TRANSIENT_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// One row of the spec's tables: topics, guarantee, batch size, session timeout, retry backoff, retry policy.
type Row = (
    &'static [&'static str],
    Guarantee,
    usize,
    Duration,
    Duration,
    RetryPolicy,
);

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl GroupPolicy {
    /// The policy of a group named in the spec, or `None` for an unknown name.
    pub fn spec(group: &str) -> Option<GroupPolicy> {
        use Guarantee::*;
        use topics::*;
        let exponential = |initial, max_retries| RetryPolicy {
            max_retries,
            backoff: Backoff::Exponential { initial, factor: 2 },
        };
        let linear = |interval, max_retries| RetryPolicy {
            max_retries,
            backoff: Backoff::Linear { interval },
        };
        let fixed = |interval, max_retries| RetryPolicy {
            max_retries,
            backoff: Backoff::Fixed { interval },
        };
        // Heartbeat is 3 s for every group. Settlement and analytics are exactly-once into the database: their
        // results are rows ("unique settlement per invoice", aggregates). Audit and notifications are not in the
        // spec's settings and retry tables — our choices (decision 0007): audit is an append-only log like the
        // read models, and a compliance log must not skip a record lightly (20 retries 15 s apart: 5 minutes of
        // blocking its partition before the DLQ); notifications fail like webhooks (external providers).
        // Payment ingestion is not in the spec either (decision 0034): exactly-once into the database like
        // settlement (its results are money events), batch 100; a report for an address no invoice has yet is
        // usually an InvoiceCreated still on its way, so business errors retry 1, 2, 4, 8, 16 s (31 s) before the
        // DLQ — short, because the key is the scanner, and one stuck report holds up that scanner's later ones.
        #[rustfmt::skip]
        let (topics, guarantee, batch_size, session_timeout, retry_backoff, retry): Row = match group {
            //                        topics                               guarantee      batch  session   retry backoff  business retries
            READ_MODEL_PROJECTIONS => (&[DOMAIN_EVENTS],                   AtLeastOnce,   500,   secs(30), millis(100),   exponential(secs(1), 3)),
            WEBHOOK_DELIVERY =>       (&[DOMAIN_EVENTS],                   AtLeastOnce,   100,   secs(30), secs(1),       exponential(secs(2), 5)),
            SETTLEMENT_PROCESSING =>  (&[DOMAIN_EVENTS],                   ExactlyOnceDb, 50,    secs(45), millis(500),   linear(secs(5), 10)),
            ANALYTICS_AGGREGATION =>  (&[DOMAIN_EVENTS, ANALYTICS_EVENTS], ExactlyOnceDb, 1000,  secs(60), millis(100),   fixed(secs(10), 2)),
            AUDIT_LOGGING =>          (&[DOMAIN_EVENTS],                   AtLeastOnce,   500,   secs(30), millis(100),   linear(secs(15), 20)),
            NOTIFICATION_DELIVERY =>  (&[NOTIFICATION_EVENTS],             AtLeastOnce,   100,   secs(30), secs(1),       exponential(secs(2), 5)),
            PAYMENT_INGESTION =>      (&[INTEGRATION_EVENTS, DOMAIN_EVENTS], ExactlyOnceDb, 100, secs(45), millis(500),   exponential(secs(1), 5)),
            _ => return None,
        };
        Some(GroupPolicy {
            group: group.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            guarantee,
            batch_size,
            session_timeout,
            heartbeat_interval: secs(3),
            retry_backoff,
            transient_backoff_cap: DEFAULT_TRANSIENT_BACKOFF_CAP,
            retry,
        })
    }

    /// The policy of `group` with `overrides` applied and validated: a spec group's row, or — for a group the
    /// spec does not name — a policy written entirely in configuration, which must give `topics`, `guarantee`,
    /// `batch_size` and `retry` (session 30 s, heartbeat 3 s, retry backoff 1 s and the transient cap are
    /// defaulted). A new group needs no code: one `[service.consumer.policy]` section, or one row above.
    pub fn resolve(group: &str, overrides: &PolicyOverrides) -> Result<GroupPolicy, PolicyError> {
        let mut policy = match GroupPolicy::spec(group) {
            Some(policy) => policy,
            None => GroupPolicy::custom(group, overrides)?,
        };
        policy.apply(overrides);
        policy.validate()?;
        Ok(policy)
    }

    /// A group the spec does not name, from configuration alone.
    fn custom(group: &str, o: &PolicyOverrides) -> Result<GroupPolicy, PolicyError> {
        let missing: Vec<&str> = [
            ("topics", o.topics.is_none()),
            ("guarantee", o.guarantee.is_none()),
            ("batch_size", o.batch_size.is_none()),
            ("retry", o.retry.is_none()),
        ]
        .into_iter()
        .filter_map(|(field, absent)| absent.then_some(field))
        .collect();
        let (Some(topics), Some(guarantee), Some(batch_size), Some(retry)) =
            (o.topics.clone(), o.guarantee, o.batch_size, o.retry)
        else {
            return Err(PolicyError::UnknownGroup {
                group: group.to_string(),
                missing: missing.join(", "),
            });
        };
        Ok(GroupPolicy {
            group: group.to_string(),
            topics,
            guarantee,
            batch_size,
            session_timeout: secs(30),
            heartbeat_interval: secs(3),
            retry_backoff: secs(1),
            transient_backoff_cap: DEFAULT_TRANSIENT_BACKOFF_CAP,
            retry,
        })
    }

    /// Applies every field that `overrides` sets.
    pub fn apply(&mut self, o: &PolicyOverrides) {
        if let Some(group) = &o.group {
            self.group = group.clone();
        }
        if let Some(topics) = &o.topics {
            self.topics = topics.clone();
        }
        if let Some(g) = o.guarantee {
            self.guarantee = g;
        }
        if let Some(b) = o.batch_size {
            self.batch_size = b;
        }
        if let Some(d) = o.session_timeout {
            self.session_timeout = d;
        }
        if let Some(d) = o.heartbeat_interval {
            self.heartbeat_interval = d;
        }
        if let Some(d) = o.retry_backoff {
            self.retry_backoff = d;
        }
        if let Some(d) = o.transient_backoff_cap {
            self.transient_backoff_cap = d;
        }
        if let Some(r) = o.retry {
            self.retry = r;
        }
    }

    /// Rejects settings that cannot work: no topics, an empty batch, a heartbeat not well below the session
    /// timeout (librdkafka and the broker want at most a third), an exponential factor below 1.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |why: String| {
            Err(PolicyError::Invalid {
                group: self.group.clone(),
                why,
            })
        };
        if self.group.trim().is_empty() {
            return bad("the group id is empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return bad("topics must name at least one topic".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval * 3 > self.session_timeout {
            return bad(format!(
                "heartbeat_interval ({:?}) must be positive and at most a third of session_timeout ({:?})",
                self.heartbeat_interval, self.session_timeout
            ));
        }
        if self.retry_backoff.is_zero() || self.transient_backoff_cap < self.retry_backoff {
            return bad(
                "retry_backoff must be positive and not above transient_backoff_cap".into(),
            );
        }
        if let Backoff::Exponential { factor: 0, .. } = self.retry.backoff {
            return bad("an exponential backoff needs a factor of at least 1".into());
        }
        Ok(())
    }

    /// The wait after the `n`-th consecutive transient failure (1-based): `retry_backoff × 2^(n-1)`, capped.
    pub fn transient_delay(&self, n: u32) -> Duration {
        let doubled = self
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(31)));
        doubled.min(self.transient_backoff_cap)
    }
}

/// Configuration overrides of a [`GroupPolicy`]; every field is optional.
///
/// ```toml
/// [service.consumer.policy]
/// batch_size = 200
/// retry = { max_retries = 3, backoff = { kind = "exponential", initial = "500ms", factor = 2 } }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyOverrides {
    /// Another group id (e.g. a blue/green deployment), keeping the named group's settings.
    pub group: Option<String>,
    pub topics: Option<Vec<String>>,
    pub guarantee: Option<Guarantee>,
    pub batch_size: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub transient_backoff_cap: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "consumer group {group:?} is not one of the spec's ({GROUPS:?}): its policy must be configured in full \
         ([service.consumer.policy] lacks {missing})"
    )]
    UnknownGroup { group: String, missing: String },
    #[error("invalid policy for consumer group {group}: {why}")]
    Invalid { group: String, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    /// The spec's "Retry Configuration" table, verbatim, and the DLQ threshold (= retries exhausted).
    #[test]
    fn retry_schedules_equal_the_spec_table() {
        let cases: [(&str, u32, Vec<Duration>); 4] = [
            (READ_MODEL_PROJECTIONS, 3, vec![s(1), s(2), s(4)]),
            (WEBHOOK_DELIVERY, 5, vec![s(2), s(4), s(8), s(16), s(32)]),
            (SETTLEMENT_PROCESSING, 10, vec![s(5); 10]),
            (ANALYTICS_AGGREGATION, 2, vec![s(10); 2]),
        ];
        for (group, max_retries, schedule) in cases {
            let p = GroupPolicy::spec(group).unwrap();
            assert_eq!(p.retry.max_retries, max_retries, "{group}");
            assert_eq!(p.retry.schedule(), schedule, "{group}");
        }
        assert!(matches!(
            GroupPolicy::spec(SETTLEMENT_PROCESSING)
                .unwrap()
                .retry
                .backoff,
            Backoff::Linear { .. }
        ));
        assert!(matches!(
            GroupPolicy::spec(ANALYTICS_AGGREGATION)
                .unwrap()
                .retry
                .backoff,
            Backoff::Fixed { .. }
        ));
    }

    /// The spec's "Consumer Group Configuration" and "Consumer Configuration Settings" tables.
    #[test]
    fn consumer_settings_equal_the_spec_tables() {
        use Guarantee::*;
        use topics::*;
        let ms = Duration::from_millis;
        type Case = (
            &'static str,
            &'static [&'static str],
            Guarantee,
            usize,
            Duration,
            Duration,
        );
        let cases: [Case; 4] = [
            (
                READ_MODEL_PROJECTIONS,
                &[DOMAIN_EVENTS],
                AtLeastOnce,
                500,
                s(30),
                ms(100),
            ),
            (
                WEBHOOK_DELIVERY,
                &[DOMAIN_EVENTS],
                AtLeastOnce,
                100,
                s(30),
                s(1),
            ),
            (
                SETTLEMENT_PROCESSING,
                &[DOMAIN_EVENTS],
                ExactlyOnceDb,
                50,
                s(45),
                ms(500),
            ),
            (
                ANALYTICS_AGGREGATION,
                &[DOMAIN_EVENTS, ANALYTICS_EVENTS],
                ExactlyOnceDb,
                1000,
                s(60),
                ms(100),
            ),
        ];
        for (group, topics, guarantee, batch, session, backoff) in cases {
            let p = GroupPolicy::spec(group).unwrap();
            assert_eq!(p.group, group);
            assert_eq!(p.topics, topics, "{group}");
            assert_eq!(p.guarantee, guarantee, "{group}");
            assert_eq!(p.batch_size, batch, "{group}");
            assert_eq!(p.session_timeout, session, "{group}");
            assert_eq!(p.heartbeat_interval, s(3), "{group}");
            assert_eq!(p.retry_backoff, backoff, "{group}");
            p.validate().unwrap();
        }
    }

    #[test]
    fn audit_and_notifications_have_documented_policies() {
        let audit = GroupPolicy::spec(AUDIT_LOGGING).unwrap();
        assert_eq!(audit.topics, [topics::DOMAIN_EVENTS]);
        assert_eq!(audit.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(audit.retry.schedule(), vec![s(15); 20]);
        let notifications = GroupPolicy::spec(NOTIFICATION_DELIVERY).unwrap();
        assert_eq!(notifications.topics, [topics::NOTIFICATION_EVENTS]);
        assert_eq!(notifications.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(
            notifications.retry.schedule(),
            GroupPolicy::spec(WEBHOOK_DELIVERY)
                .unwrap()
                .retry
                .schedule()
        );
        let payments = GroupPolicy::spec(PAYMENT_INGESTION).unwrap();
        assert_eq!(
            payments.topics,
            [topics::INTEGRATION_EVENTS, topics::DOMAIN_EVENTS]
        );
        assert_eq!(payments.guarantee, Guarantee::ExactlyOnceDb);
        assert_eq!(
            (payments.batch_size, payments.session_timeout),
            (100, s(45))
        );
        assert_eq!(payments.retry.schedule(), [s(1), s(2), s(4), s(8), s(16)]);
        for group in GROUPS {
            GroupPolicy::spec(group).unwrap().validate().unwrap();
        }
        assert!(GroupPolicy::spec("nope").is_none());
    }

    #[test]
    fn transient_backoff_starts_at_the_settings_table_and_doubles_to_the_cap() {
        let p = GroupPolicy::spec(WEBHOOK_DELIVERY).unwrap();
        let waits: Vec<_> = (1..=7).map(|n| p.transient_delay(n)).collect();
        assert_eq!(waits, [s(1), s(2), s(4), s(8), s(16), s(30), s(30)]);
        assert_eq!(p.transient_delay(1000), s(30));
        let p = GroupPolicy::spec(READ_MODEL_PROJECTIONS).unwrap();
        assert_eq!(p.transient_delay(1), Duration::from_millis(100));
        assert_eq!(p.transient_delay(2), Duration::from_millis(200));
    }

    #[test]
    fn overrides_come_from_configuration_with_typed_durations() {
        let overrides: PolicyOverrides = serde_json::from_value(serde_json::json!({
            "batch_size": 20,
            "session_timeout": "10s",
            "retry": { "max_retries": 2, "backoff": { "kind": "exponential", "initial": "100ms", "factor": 3 } },
        }))
        .unwrap();
        let p = GroupPolicy::resolve(SETTLEMENT_PROCESSING, &overrides).unwrap();
        assert_eq!(p.batch_size, 20);
        assert_eq!(p.session_timeout, s(10));
        assert_eq!(
            p.retry.schedule(),
            [Duration::from_millis(100), Duration::from_millis(300)]
        );
        // Untouched fields keep the spec's values.
        assert_eq!(p.retry_backoff, Duration::from_millis(500));

        let typo = serde_json::from_value::<PolicyOverrides>(serde_json::json!({ "batchsize": 1 }));
        assert!(typo.unwrap_err().to_string().contains("batchsize"));
    }

    #[test]
    fn inconsistent_policies_are_rejected() {
        let heartbeat_too_slow = PolicyOverrides {
            heartbeat_interval: Some(s(20)),
            ..Default::default()
        };
        assert!(GroupPolicy::resolve(READ_MODEL_PROJECTIONS, &heartbeat_too_slow).is_err());
        let no_batch = PolicyOverrides {
            batch_size: Some(0),
            ..Default::default()
        };
        assert!(GroupPolicy::resolve(READ_MODEL_PROJECTIONS, &no_batch).is_err());
        let err = GroupPolicy::resolve("unknown", &PolicyOverrides::default()).unwrap_err();
        assert!(
            matches!(&err, PolicyError::UnknownGroup { missing, .. } if missing == "topics, guarantee, batch_size, retry"),
            "{err}"
        );
    }

    #[test]
    fn a_group_the_spec_does_not_name_is_a_policy_in_configuration() {
        let overrides: PolicyOverrides = serde_json::from_value(serde_json::json!({
            "topics": ["crypto-checkout.integration-events"],
            "guarantee": "at_least_once",
            "batch_size": 200,
            "retry": { "max_retries": 4, "backoff": { "kind": "fixed", "interval": "3s" } },
        }))
        .unwrap();
        let p = GroupPolicy::resolve("fraud-screening", &overrides).unwrap();
        assert_eq!(p.group, "fraud-screening");
        assert_eq!(p.topics, ["crypto-checkout.integration-events"]);
        assert_eq!((p.batch_size, p.guarantee), (200, Guarantee::AtLeastOnce));
        assert_eq!(p.retry.schedule(), [s(3); 4]);
        assert_eq!((p.session_timeout, p.heartbeat_interval), (s(30), s(3)));
        let partial = PolicyOverrides {
            topics: Some(vec!["t".into()]),
            ..Default::default()
        };
        let err = GroupPolicy::resolve("fraud-screening", &partial).unwrap_err();
        assert!(
            err.to_string().contains("guarantee, batch_size, retry"),
            "{err}"
        );
    }
}
