//! Topic names, from the spec's "Core Topics" and "Dead Letter Topics" tables, plus the analytics DLQ the spec
//! lacks (decision 0020).
//!
//! Guarantees: these constants are the only spelling of topic names in the workspace, and the same set as
//! `deploy/kafka/topics.yaml` (a test in `crates/topology` compares them); every core topic has a dead-letter
//! topic, and a dead-letter topic is always named by the one rule [`dead_letter_topic`] (`<source>.dlq`), for the
//! spec's topics and for tests' private topics alike; its parking lot (decision 0035) likewise by [`parked_topic`]
//! (`<source>.dlq.parked`). Every domain event goes to [`DOMAIN_EVENTS`] (see
//! [`crate::Envelope::topic`]); every other contract names its topic through [`crate::Publishable::topic`].

/// All business domain events; 12 partitions, keyed per [`crate::PartitionKeyField`].
pub const DOMAIN_EVENTS: &str = "crypto-checkout.domain-events";
/// External system events.
pub const INTEGRATION_EVENTS: &str = "crypto-checkout.integration-events";
/// Email, SMS and webhook notification events.
pub const NOTIFICATION_EVENTS: &str = "crypto-checkout.notification-events";
/// Metrics and reporting events.
pub const ANALYTICS_EVENTS: &str = "crypto-checkout.analytics-events";

/// The bus-monitor's canary: end-to-end probes produced and consumed back by the monitor itself (decision 0033).
/// An operational topic: no business records, no dead-letter topic, a few partitions and a short retention.
pub const CANARY: &str = "crypto-checkout.canary";

/// Operational topics: declared in `deploy/kafka/topics.yaml` under `operational_topics`, not consumed by any
/// consumer group of the platform.
pub const OPERATIONAL_TOPICS: [&str; 1] = [CANARY];

/// Dead letters of [`DOMAIN_EVENTS`].
pub const DOMAIN_EVENTS_DLQ: &str = "crypto-checkout.domain-events.dlq";
/// Dead letters of [`INTEGRATION_EVENTS`].
pub const INTEGRATION_EVENTS_DLQ: &str = "crypto-checkout.integration-events.dlq";
/// Dead letters of [`NOTIFICATION_EVENTS`].
pub const NOTIFICATION_EVENTS_DLQ: &str = "crypto-checkout.notification-events.dlq";
/// Dead letters of [`ANALYTICS_EVENTS`]. Not in the spec's table: the analytics-aggregation group consumes
/// [`ANALYTICS_EVENTS`] and must be able to dead-letter a bad record (decision 0020).
pub const ANALYTICS_EVENTS_DLQ: &str = "crypto-checkout.analytics-events.dlq";

/// The core topics, in the spec's order.
pub const CORE_TOPICS: [&str; 4] = [
    DOMAIN_EVENTS,
    INTEGRATION_EVENTS,
    NOTIFICATION_EVENTS,
    ANALYTICS_EVENTS,
];

/// The dead-letter topics, one per core topic, in the order of [`CORE_TOPICS`].
pub const DEAD_LETTER_TOPICS: [&str; 4] = [
    DOMAIN_EVENTS_DLQ,
    INTEGRATION_EVENTS_DLQ,
    NOTIFICATION_EVENTS_DLQ,
    ANALYTICS_EVENTS_DLQ,
];

/// Suffix of every dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The dead-letter topic of `source`: `<source>.dlq`. One rule for every topic, including the uniquely named
/// topics of tests (their DLQ is created next to them).
pub fn dead_letter_topic(source: &str) -> String {
    format!("{source}{DLQ_SUFFIX}")
}

/// Whether `topic` is a dead-letter topic (ends in [`DLQ_SUFFIX`]).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(DLQ_SUFFIX)
}

/// Suffix of every parking-lot topic (decision 0035): `<source>.dlq.parked`.
pub const PARKED_SUFFIX: &str = ".parked";

/// The parking lot of dead-letter topic `dlq`: `<dlq>.parked`. A record that fails again after an operator
/// replayed it from `dlq` goes there instead of back to `dlq`, so a replay never loops (decision 0035).
pub fn parked_topic(dlq: &str) -> String {
    format!("{dlq}{PARKED_SUFFIX}")
}

/// Whether `topic` is a parking-lot topic (`<source>.dlq.parked`).
pub fn is_parked_topic(topic: &str) -> bool {
    topic
        .strip_suffix(PARKED_SUFFIX)
        .is_some_and(is_dead_letter_topic)
}

/// The parking lots of [`DEAD_LETTER_TOPICS`], in the same order.
pub const PARKED_TOPICS: [&str; 4] = [
    "crypto-checkout.domain-events.dlq.parked",
    "crypto-checkout.integration-events.dlq.parked",
    "crypto-checkout.notification-events.dlq.parked",
    "crypto-checkout.analytics-events.dlq.parked",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_topic_has_its_dead_letter_topic_by_the_one_rule() {
        for (core, dlq) in CORE_TOPICS.iter().zip(DEAD_LETTER_TOPICS) {
            assert_eq!(dead_letter_topic(core), dlq);
            assert!(is_dead_letter_topic(dlq) && !is_dead_letter_topic(core));
        }
        assert_eq!(
            dead_letter_topic(ANALYTICS_EVENTS),
            "crypto-checkout.analytics-events.dlq"
        );
        assert_eq!(dead_letter_topic("test-1a2b3c"), "test-1a2b3c.dlq");
    }

    #[test]
    fn every_dead_letter_topic_has_its_parking_lot_by_the_one_rule() {
        for (dlq, parked) in DEAD_LETTER_TOPICS.iter().zip(PARKED_TOPICS) {
            assert_eq!(parked_topic(dlq), parked);
            assert!(is_parked_topic(parked) && !is_parked_topic(dlq));
            assert!(!is_dead_letter_topic(parked));
        }
        assert!(!is_parked_topic("crypto-checkout.domain-events.parked"));
    }

    #[test]
    fn names_follow_the_naming_convention() {
        for name in CORE_TOPICS
            .iter()
            .chain(DEAD_LETTER_TOPICS.iter())
            .chain(PARKED_TOPICS.iter())
            .chain(OPERATIONAL_TOPICS.iter())
        {
            assert!(name.starts_with("crypto-checkout."), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'.'),
                "{name}"
            );
        }
    }
}
