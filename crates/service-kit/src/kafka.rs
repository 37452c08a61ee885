//! Kafka client settings. The spec's producer table lives here, as data, once.
//!
//! [`SPEC_PRODUCER_SETTINGS`] mirrors "Delivery Guarantees → Producer Configuration" of the spec. Producers built
//! with [`producer_config`] also use the `murmur2_random` partitioner, which hashes keys exactly like the Java
//! client's default partitioner, so a key lands on the same partition whichever client produced it.
//! User-supplied client properties (`kafka.client` in the settings, for TLS/SASL and the like) are applied first
//! and can never override the spec's settings.

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// The spec's producer configuration, verbatim.
pub const SPEC_PRODUCER_SETTINGS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("retries", "2147483647"),
    ("max.in.flight.requests.per.connection", "5"),
    ("enable.idempotence", "true"),
    ("compression.type", "lz4"),
    ("batch.size", "16384"),
    ("linger.ms", "10"),
];

/// Java-compatible key hashing (murmur2 of the key bytes; random for null keys, which we never send).
pub const PARTITIONER: (&str, &str) = ("partitioner", "murmur2_random");

/// Keys that the settings' free-form `client` map may not set, because the spec or our guarantees fix them.
fn is_reserved(key: &str) -> bool {
    SPEC_PRODUCER_SETTINGS.iter().any(|(k, _)| *k == key)
        || key == PARTITIONER.0
        || key == "enable.auto.commit"
        || key == "bootstrap.servers"
}

/// Bootstrap servers plus the user's extra client properties (reserved keys skipped with a warning).
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &settings.client {
        if is_reserved(key) {
            tracing::warn!(key, "ignoring kafka.client.{key}: it is fixed by the spec");
        } else {
            config.set(key, value);
        }
    }
    config.set("bootstrap.servers", &settings.bootstrap_servers);
    config
}

/// An idempotent producer configured exactly per the spec, with the Java-compatible partitioner.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    for (key, value) in SPEC_PRODUCER_SETTINGS {
        config.set(*key, *value);
    }
    config.set(PARTITIONER.0, PARTITIONER.1);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_settings_win_over_user_properties() {
        let settings = KafkaSettings {
            bootstrap_servers: "k:9092".into(),
            client: [
                ("acks".to_string(), "1".to_string()),
                ("client.id".to_string(), "me".to_string()),
            ]
            .into(),
        };
        let config = producer_config(&settings);
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("client.id"), Some("me"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
    }
}
