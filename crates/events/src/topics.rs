//! Topic names, from the spec's "Core Topics" and "Dead Letter Topics" tables.
//!
//! Guarantees: these constants are the only spelling of topic names in the workspace; every domain event
//! goes to [`DOMAIN_EVENTS`] (see [`crate::Envelope::topic`]).

/// All business domain events; 12 partitions, keyed per [`crate::PartitionKeyField`].
pub const DOMAIN_EVENTS: &str = "crypto-checkout.domain-events";
/// External system events.
pub const INTEGRATION_EVENTS: &str = "crypto-checkout.integration-events";
/// Email, SMS and webhook notification events.
pub const NOTIFICATION_EVENTS: &str = "crypto-checkout.notification-events";
/// Metrics and reporting events.
pub const ANALYTICS_EVENTS: &str = "crypto-checkout.analytics-events";

/// Dead letters of [`DOMAIN_EVENTS`].
pub const DOMAIN_EVENTS_DLQ: &str = "crypto-checkout.domain-events.dlq";
/// Dead letters of [`INTEGRATION_EVENTS`].
pub const INTEGRATION_EVENTS_DLQ: &str = "crypto-checkout.integration-events.dlq";
/// Dead letters of [`NOTIFICATION_EVENTS`].
pub const NOTIFICATION_EVENTS_DLQ: &str = "crypto-checkout.notification-events.dlq";

/// The dead-letter topic of a source topic, if it has one.
pub fn dead_letter_topic(source: &str) -> Option<&'static str> {
    match source {
        DOMAIN_EVENTS => Some(DOMAIN_EVENTS_DLQ),
        INTEGRATION_EVENTS => Some(INTEGRATION_EVENTS_DLQ),
        NOTIFICATION_EVENTS => Some(NOTIFICATION_EVENTS_DLQ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_follow_the_spec() {
        assert_eq!(
            dead_letter_topic(DOMAIN_EVENTS),
            Some("crypto-checkout.domain-events.dlq")
        );
        assert_eq!(dead_letter_topic(ANALYTICS_EVENTS), None);
        assert_eq!(dead_letter_topic(DOMAIN_EVENTS_DLQ), None);
    }
}
