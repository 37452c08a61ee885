//! Kafka client settings. The spec's producer table lives here, as data, once.
//!
//! [`SPEC_PRODUCER_SETTINGS`] mirrors "Delivery Guarantees → Producer Configuration" of the spec. Producers built
//! with [`producer_config`] also use the `murmur2_random` partitioner, which hashes keys exactly like the Java
//! client's default partitioner, so a key lands on the same partition whichever client produced it.
//!
//! Guarantees about the user's extra client properties (`kafka.client` in the settings, for TLS/SASL and the
//! like):
//! - **A property that would break delivery is a start-up error, never a warning.** [`check_client_properties`]
//!   (called by [`crate::KafkaSettings::validate`], hence by every settings load) refuses each reserved
//!   property — the spec's producer settings, the partitioner, the bootstrap servers, and what the consumer
//!   runtime and the group policy set — naming the key and which setting owns it ([`Owner`]). librdkafka's
//!   aliases (`request.required.acks`, `metadata.broker.list`, …) and `topic.`-prefixed spellings are the same
//!   property and refused alike.
//! - [`client_config`] never applies a reserved property, whatever it is given, so code that builds a
//!   [`crate::KafkaSettings`] by hand cannot override them either.
//! - **Secrets never print**: [`is_secret`] names the properties whose values are redacted in `Debug` and
//!   `Serialize` of the settings; [`client_config`] still passes the real value to librdkafka.

use std::fmt;

use rdkafka::ClientConfig;

use crate::config::{ClientProperties, KafkaSettings};

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

/// Who sets a reserved property instead of `kafka.client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The spec's producer table: every producer uses `value`.
    SpecProducer { value: &'static str },
    /// The Java-compatible partitioner of every producer ([`PARTITIONER`]).
    Partitioner,
    /// `kafka.bootstrap_servers` (`KAFKA_BOOTSTRAP_SERVERS`).
    BootstrapServers,
    /// The consumer group's policy (the spec's consumer table), overridable at `service.consumer.policy.<setting>`.
    GroupPolicy { setting: &'static str },
    /// One of the consumer runtime's options, `service.consumer.options.<setting>`.
    RuntimeOption { setting: &'static str },
    /// The consumer runtime itself, for the reason given.
    Runtime { why: &'static str },
    /// The producers leave it at librdkafka's default, for the reason given.
    Producer { why: &'static str },
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::SpecProducer { value } => write!(
                f,
                "it is one of the spec's producer settings (\"Delivery Guarantees\"), fixed to {value} for every \
                 producer"
            ),
            Owner::Partitioner => write!(
                f,
                "every producer uses the {} partitioner, so a key lands on the same partition as with the Java client",
                PARTITIONER.1
            ),
            Owner::BootstrapServers => write!(
                f,
                "the brokers are set by kafka.bootstrap_servers (KAFKA_BOOTSTRAP_SERVERS)"
            ),
            Owner::GroupPolicy { setting } => write!(
                f,
                "it is owned by the consumer group's policy (the spec's consumer tables); set \
                 service.consumer.policy.{setting} instead"
            ),
            Owner::RuntimeOption { setting } => write!(
                f,
                "it is owned by the consumer runtime's options; set service.consumer.options.{setting} instead"
            ),
            Owner::Runtime { why } => write!(f, "the consumer runtime sets it: {why}"),
            Owner::Producer { why } => write!(f, "the producers keep librdkafka's default: {why}"),
        }
    }
}

/// Every reserved property (by its canonical name) with its owner, beyond the spec's producer settings.
const RESERVED: &[(&str, Owner)] = &[
    (PARTITIONER.0, Owner::Partitioner),
    ("bootstrap.servers", Owner::BootstrapServers),
    (
        "transactional.id",
        Owner::Runtime {
            why: "exactly-once mode (a) gives each partition's producer an id derived from the group, topic and \
                  partition, so that the partition's next owner fences the previous one",
        },
    ),
    (
        "transaction.timeout.ms",
        Owner::RuntimeOption {
            setting: "transaction_timeout",
        },
    ),
    (
        "enable.gapless.guarantee",
        Owner::Producer {
            why: "a failed record must stay a per-record error (the outbox publisher retries it or quarantines it \
                  and keeps every other key flowing); this turns it into a fatal error that stops the producer",
        },
    ),
    ("group.id", Owner::GroupPolicy { setting: "group" }),
    (
        "group.protocol",
        Owner::Runtime {
            why: "its rebalance handling (offsets committed only for partitions still owned) is written for the \
                  classic protocol with cooperative-sticky assignment",
        },
    ),
    (
        "group.instance.id",
        Owner::RuntimeOption {
            setting: "static_membership (with instance_id)",
        },
    ),
    (
        "partition.assignment.strategy",
        Owner::Runtime {
            why: "it uses cooperative-sticky assignment and its revoke/lost handling depends on it",
        },
    ),
    (
        "session.timeout.ms",
        Owner::GroupPolicy {
            setting: "session_timeout",
        },
    ),
    (
        "heartbeat.interval.ms",
        Owner::GroupPolicy {
            setting: "heartbeat_interval",
        },
    ),
    (
        "max.poll.interval.ms",
        Owner::Runtime {
            why: "it keeps polling while handlers and retry waits run, and a shorter interval would evict a consumer \
                  in the middle of the spec's retry schedule",
        },
    ),
    (
        "enable.auto.commit",
        Owner::Runtime {
            why: "offsets are committed only after the work (and any output or DLQ record) is durable",
        },
    ),
    (
        "enable.auto.offset.store",
        Owner::Runtime {
            why: "offsets are stored only after the work (and any output or DLQ record) is durable",
        },
    ),
    (
        "isolation.level",
        Owner::Runtime {
            why: "consumers read read_committed so that an aborted transaction's records never reach a handler",
        },
    ),
    (
        "auto.offset.reset",
        Owner::RuntimeOption {
            setting: "auto_offset_reset",
        },
    ),
    (
        "enable.partition.eof",
        Owner::Runtime {
            why: "its poll loop treats every event as a record or an error; end-of-partition events are off",
        },
    ),
    (
        "queued.max.messages.kbytes",
        Owner::RuntimeOption {
            setting: "queued_max_messages_kbytes",
        },
    ),
    (
        "fetch.queue.backoff.ms",
        Owner::RuntimeOption {
            setting: "fetch_queue_backoff",
        },
    ),
    (
        "max.partition.fetch.bytes",
        Owner::RuntimeOption {
            setting: "max_partition_fetch_bytes",
        },
    ),
    (
        "fetch.wait.max.ms",
        Owner::RuntimeOption {
            setting: "fetch_wait_max",
        },
    ),
    (
        "statistics.interval.ms",
        Owner::RuntimeOption {
            setting: "lag_interval",
        },
    ),
];

/// librdkafka's other names for reserved properties (alias → canonical name).
const ALIASES: &[(&str, &str)] = &[
    ("request.required.acks", "acks"),
    ("message.send.max.retries", "retries"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("compression.codec", "compression.type"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("metadata.broker.list", "bootstrap.servers"),
    ("auto.commit.enable", "enable.auto.commit"),
    ("fetch.message.max.bytes", "max.partition.fetch.bytes"),
];

/// librdkafka applies a `topic.`-prefixed global property to the default topic configuration under the
/// unprefixed name (`topic.acks` is `acks`).
const TOPIC_PREFIX: &str = "topic.";

/// The canonical name librdkafka resolves `key` to, for comparison: trimmed, lower-case, `topic.` prefix and
/// aliases resolved.
fn canonical(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key.strip_prefix(TOPIC_PREFIX).unwrap_or(&key);
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name)
        .to_string()
}

/// Who owns `key` when `kafka.client` may not set it; `None` for a property the user may set.
pub fn reserved_owner(key: &str) -> Option<Owner> {
    let key = canonical(key);
    SPEC_PRODUCER_SETTINGS
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| Owner::SpecProducer { value })
        .or_else(|| {
            RESERVED
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, owner)| *owner)
        })
}

/// A `kafka.client` property that would override what the spec, the group policy or the runtime sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka.client.\"{key}\" cannot be set: {owner}")]
pub struct ReservedProperty {
    /// The key as written in the settings.
    pub key: String,
    pub owner: Owner,
}

/// Every reserved property a `kafka.client` map sets (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ReservedProperties(pub Vec<ReservedProperty>);

impl fmt::Display for ReservedProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, property) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{property}")?;
        }
        Ok(())
    }
}

/// Refuses every reserved property of `client`, naming each and its owner. The outbox publisher and the
/// consumer runtime call it (through [`KafkaSettings::validate`]) for settings that did not come through
/// [`crate::Settings::load`].
pub fn check_client_properties(client: &ClientProperties) -> Result<(), ReservedProperties> {
    let refused: Vec<ReservedProperty> = client
        .keys()
        .filter_map(|key| {
            reserved_owner(key).map(|owner| ReservedProperty {
                key: key.to_string(),
                owner,
            })
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(ReservedProperties(refused))
    }
}

/// Substrings of property names whose values are credentials.
const SECRET_WORDS: &[&str] = &["password", "secret", "passphrase", "private.key", "token"];
/// Properties librdkafka itself treats as sensitive (redacts in its own logs) that no word above matches.
const SENSITIVE: &[&str] = &[
    "sasl.username",
    "sasl.oauthbearer.config",
    "ssl.key.pem",
    "ssl.key.location",
    "ssl.ca.pem",
    "ssl_key",
];

/// Whether the value of property `key` is a secret, never to be printed: librdkafka's sensitive properties and
/// any name containing `password`, `secret`, `passphrase`, `private.key` or `token`.
pub fn is_secret(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    SENSITIVE.contains(&key.as_str()) || SECRET_WORDS.iter().any(|word| key.contains(word))
}

/// librdkafka properties every client of ours starts with; `kafka.client` may override them.
///
/// `enable.sparse.connections = false`: connect to each broker as soon as it is known. With librdkafka's default
/// (connect only on demand, at most one on-demand connection per 50 ms) a new client drops its bootstrap
/// connection once it learns the brokers and then waits for a timer before it connects again: a transactional
/// producer's `init_transactions` took 55 ms, or 505 ms in about a third of the starts (its coordinator query
/// retries every 500 ms), so a rebalance stalled mode (a) partitions for half a second; with it off, 3–6 ms.
/// Consumers join about 50 ms sooner too (decision 0050).
pub const CLIENT_DEFAULTS: &[(&str, &str)] = &[("enable.sparse.connections", "false")];

/// Bootstrap servers, [`CLIENT_DEFAULTS`], and the user's extra client properties over them. Reserved properties
/// are never applied (settings loaded through [`crate::Settings::load`] cannot contain any; a hand-built
/// [`KafkaSettings`] is logged).
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in CLIENT_DEFAULTS {
        config.set(*key, *value);
    }
    for (key, value) in settings.client.iter() {
        match reserved_owner(key) {
            Some(owner) => {
                tracing::error!(key, %owner, "not applying reserved property kafka.client.{key}");
            }
            None => {
                config.set(key, value);
            }
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

    /// The deployments' listener is TLS with SCRAM-SHA-512 (decision 0030): librdkafka refuses to create a client
    /// for it unless it was built with OpenSSL (the `rdkafka` `ssl` feature).
    #[test]
    fn librdkafka_is_built_with_tls_and_scram() {
        let mut config = client_config(&settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]));
        config.set("log_level", "0");
        let created: Result<rdkafka::producer::BaseProducer, _> = config.create();
        assert!(created.is_ok(), "{:?}", created.err());
    }

    fn settings(client: &[(&str, &str)]) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: "k:9092".into(),
            client: client
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn spec_settings_win_over_user_properties() {
        let config = producer_config(&settings(&[
            ("acks", "1"),
            ("request.required.acks", "0"),
            ("topic.acks", "0"),
            ("client.id", "me"),
        ]));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("request.required.acks"), None);
        assert_eq!(config.get("topic.acks"), None);
        assert_eq!(config.get("client.id"), Some("me"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
    }

    #[test]
    fn clients_connect_to_every_broker_at_once_unless_told_otherwise() {
        let config = client_config(&settings(&[]));
        assert_eq!(config.get("enable.sparse.connections"), Some("false"));
        assert_eq!(
            producer_config(&settings(&[])).get("enable.sparse.connections"),
            Some("false")
        );
        let config = client_config(&settings(&[("enable.sparse.connections", "true")]));
        assert_eq!(config.get("enable.sparse.connections"), Some("true"));
    }

    #[test]
    fn reserved_properties_are_refused_naming_key_and_owner() {
        for (key, owner_says) in [
            ("acks", "spec's producer settings"),
            ("linger.ms", "fixed to 10"),
            ("queue.buffering.max.ms", "fixed to 10"),
            ("max.in.flight", "spec's producer settings"),
            ("partitioner", "murmur2_random"),
            ("bootstrap.servers", "kafka.bootstrap_servers"),
            ("metadata.broker.list", "kafka.bootstrap_servers"),
            ("transactional.id", "exactly-once mode (a)"),
            (
                "transaction.timeout.ms",
                "service.consumer.options.transaction_timeout",
            ),
            ("group.protocol", "consumer runtime"),
            ("group.id", "service.consumer.policy.group"),
            ("group.instance.id", "static_membership"),
            ("enable.gapless.guarantee", "fatal error"),
            ("enable.auto.commit", "only after the work"),
            ("auto.commit.enable", "only after the work"),
            ("enable.auto.offset.store", "only after the work"),
            ("isolation.level", "read_committed"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            (
                "session.timeout.ms",
                "service.consumer.policy.session_timeout",
            ),
            (
                "heartbeat.interval.ms",
                "service.consumer.policy.heartbeat_interval",
            ),
            ("max.poll.interval.ms", "keeps polling"),
            (
                "auto.offset.reset",
                "service.consumer.options.auto_offset_reset",
            ),
            ("topic.auto.offset.reset", "auto_offset_reset"),
            ("enable.partition.eof", "consumer runtime"),
            ("queued.max.messages.kbytes", "queued_max_messages_kbytes"),
            ("fetch.queue.backoff.ms", "fetch_queue_backoff"),
            ("max.partition.fetch.bytes", "max_partition_fetch_bytes"),
            ("fetch.message.max.bytes", "max_partition_fetch_bytes"),
            ("fetch.wait.max.ms", "fetch_wait_max"),
            (
                "statistics.interval.ms",
                "service.consumer.options.lag_interval",
            ),
            ("Transactional.ID", "exactly-once"),
        ] {
            let err = check_client_properties(&settings(&[(key, "x")]).client)
                .expect_err(key)
                .to_string();
            assert!(err.starts_with(&format!("kafka.client.\"{key}\"")), "{err}");
            assert!(err.contains(owner_says), "{key}: {err}");
            assert!(!err.contains("\"x\""), "the value is not echoed: {err}");
        }
        for (key, _) in SPEC_PRODUCER_SETTINGS {
            assert!(reserved_owner(key).is_some(), "{key}");
        }
    }

    #[test]
    fn every_refused_key_is_reported_at_once() {
        let err = check_client_properties(
            &settings(&[("acks", "1"), ("client.id", "me"), ("group.id", "g")]).client,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["acks", "group.id"]);
    }

    #[test]
    fn connection_and_security_properties_are_allowed() {
        let allowed = settings(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "svc"),
            ("sasl.password", "hunter2"),
            ("client.id", "outbox-1"),
            ("socket.timeout.ms", "30000"),
            ("topic.metadata.refresh.interval.ms", "60000"),
        ]);
        check_client_properties(&allowed.client).unwrap();
        let config = client_config(&allowed);
        assert_eq!(
            config.get("sasl.password"),
            Some("hunter2"),
            "secrets reach librdkafka"
        );
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.credentials.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "some.future.password.thing",
            "SASL.PASSWORD",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "security.protocol",
            "sasl.mechanism",
            "client.id",
            "ssl.ca.location",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
