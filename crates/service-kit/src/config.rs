//! Typed configuration: built-in defaults, then an optional TOML file, then environment variables.
//!
//! Every service reads a [`Settings<S>`]: the common sections (`kafka`, `database`, `http`, `log`) and its own
//! section `service` of type `S`. Layers, later ones winning:
//!
//! 1. the defaults of the types (`#[serde(default)]`);
//! 2. the TOML file given by `--config` or `CHECKOUT_CONFIG`, when there is one (a missing file is an error);
//! 3. `CHECKOUT__SECTION__KEY` variables, e.g. `CHECKOUT__HTTP__LISTEN=0.0.0.0:9102`; a librdkafka property
//!    of `kafka.client` is `CHECKOUT__KAFKA__CLIENT__` plus its name with `__` for each dot
//!    (`CHECKOUT__KAFKA__CLIENT__SASL__PASSWORD` sets `sasl.password`), its value kept as a string;
//! 4. the two well-known variables that `make up` writes to `.dev/env` and docker-compose sets:
//!    `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL`.
//!
//! Guarantees: an unknown key anywhere is an error naming it (a typo fails at start-up instead of being
//! ignored); durations are typed (`"30s"`, `"500ms"`); a `kafka.client` property that the spec, the group
//! policy or the consumer runtime owns is an error naming it and its owner ([`KafkaSettings::validate`]);
//! secrets — the database URL and the credentials among the `kafka.client` properties
//! ([`crate::kafka::is_secret`]) — never appear in `Debug` or `Serialize` output, only in the clients built
//! from the settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kafka::{self, ReservedProperties};

/// The environment variable naming a configuration file, when `--config` is not given.
pub const CONFIG_FILE_ENV: &str = "CHECKOUT_CONFIG";
/// Prefix of the nested environment overrides (`CHECKOUT__HTTP__LISTEN`).
pub const ENV_PREFIX: &str = "CHECKOUT__";
/// Settings keys (after the `__` → `.` mapping) that name one `kafka.client` property.
const CLIENT_PROPERTY_PREFIX: &str = "kafka.client.";
/// Well-known variables mapped straight onto settings (the names in `.dev/env` and docker-compose).
pub const WELL_KNOWN_ENV: &[(&str, &str)] = &[
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("DATABASE_URL", "database.url"),
];

/// A configuration that could not be loaded; the message names the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
    /// `kafka.client` sets properties that would break delivery.
    #[error("invalid configuration: {0}")]
    ReservedKafkaProperties(#[from] ReservedProperties),
}

/// All settings of one service: the common sections plus the service's own section `service`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings<S> {
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub service: S,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list (`KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// Extra librdkafka client properties (e.g. `security.protocol`, `sasl.mechanism`) applied to every client.
    /// Reserved properties (the spec's producer settings, the group policy's and the runtime's) are refused by
    /// [`KafkaSettings::validate`]; see [`crate::kafka`]. Secret values are redacted when printed.
    #[serde(default)]
    pub client: ClientProperties,
}

impl KafkaSettings {
    /// Refuses `kafka.client` properties that would break delivery, naming each and which setting owns it.
    /// [`Settings::load`] calls it; so do the outbox publisher and the consumer runtime for settings built in
    /// code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = self.client.keys().find(|k| k.trim().is_empty()) {
            return Err(ConfigError::Inconsistent(format!(
                "kafka.client has a property with an empty name (`{key}`)"
            )));
        }
        kafka::check_client_properties(&self.client)?;
        Ok(())
    }
}

/// librdkafka properties by name (`sasl.password` → `…`). The values of secret properties
/// ([`crate::kafka::is_secret`]) are `[redacted]` in `Debug` and `Serialize`; [`ClientProperties::iter`] and
/// [`ClientProperties::get`] give the real values, for building clients.
///
/// In TOML, quote the names (`"security.protocol" = "SASL_SSL"` under `[kafka.client]`): unquoted, the dots
/// would make nested tables, which are refused naming the key. Integer and boolean values are taken as their
/// text (`"socket.timeout.ms" = 30000`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(BTreeMap<String, String>);

const REDACTED: &str = "[redacted]";

impl ClientProperties {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// The real value of `key`, secret or not.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Every property with its real value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value as it may be shown: `[redacted]` for a secret.
    fn shown<'a>(key: &str, value: &'a str) -> &'a str {
        if kafka::is_secret(key) {
            REDACTED
        } else {
            value
        }
    }
}

impl From<BTreeMap<String, String>> for ClientProperties {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl<const N: usize> From<[(String, String); N]> for ClientProperties {
    fn from(pairs: [(String, String); N]) -> Self {
        Self(pairs.into())
    }
}

impl FromIterator<(String, String)> for ClientProperties {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, Self::shown(k, v))))
            .finish()
    }
}

impl Serialize for ClientProperties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(k, v)| (k, Self::shown(k, v))))
    }
}

impl<'de> Deserialize<'de> for ClientProperties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClientPropertiesVisitor)
    }
}

struct ClientPropertiesVisitor;

impl<'de> serde::de::Visitor<'de> for ClientPropertiesVisitor {
    type Value = ClientProperties;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of librdkafka properties (name = value)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value::<PropertyValue>()? {
                PropertyValue::Text(text) => text,
                PropertyValue::Table => {
                    return Err(A::Error::custom(format!(
                        "kafka.client.{key} is a table, not a value: librdkafka property names contain dots, \
                         so quote them (\"{key}.…\" = \"…\" under [kafka.client])"
                    )));
                }
                PropertyValue::Other(what) => {
                    return Err(A::Error::custom(format!(
                        "kafka.client.\"{key}\" must be a string, an integer or a boolean, not {what}"
                    )));
                }
            };
            if out.insert(key.clone(), value).is_some() {
                return Err(A::Error::custom(format!(
                    "kafka.client.\"{key}\" is given twice"
                )));
            }
        }
        Ok(ClientProperties(out))
    }
}

/// One property's value as written; never echoed in errors (it may be a secret).
enum PropertyValue {
    Text(String),
    Table,
    Other(&'static str),
}

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PropertyValueVisitor)
    }
}

struct PropertyValueVisitor;

impl<'de> serde::de::Visitor<'de> for PropertyValueVisitor {
    type Value = PropertyValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, an integer or a boolean")
    }

    fn visit_str<E>(self, v: &str) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_u128<E>(self, v: u128) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_bool<E>(self, v: bool) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Text(v.to_string()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Other("a float (write it as a string)"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<PropertyValue, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(PropertyValue::Table)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<PropertyValue, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(PropertyValue::Other("a list"))
    }

    fn visit_unit<E>(self) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Other("empty"))
    }

    fn visit_none<E>(self) -> Result<PropertyValue, E> {
        Ok(PropertyValue::Other("empty"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db` (`DATABASE_URL`). Never printed.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: Option<SecretString>,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address of the operations server (`/health`, `/ready`, `/metrics`). Port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: production.
    Json,
    /// Human-readable: development.
    #[default]
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info,rdkafka=warn`; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

fn serialize_redacted<S: serde::Serializer>(
    v: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

impl<S: DeserializeOwned + Serialize + Default> Settings<S> {
    /// Loads settings from the layers described in the module documentation. `file` wins over
    /// `CHECKOUT_CONFIG`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        Self::from_figment(figment(file.as_deref(), std::env::vars())?)
    }

    /// Like [`Settings::load`] for one of the bus's services: its operations server defaults to
    /// `127.0.0.1:<its port>` from [`crate::services::SERVICES`] instead of an ephemeral port.
    pub fn load_service(service: &str, file: Option<&Path>) -> Result<Self, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        let spec = crate::services::spec(service).ok_or_else(|| {
            ConfigError::Inconsistent(format!("{service} is not in the services table"))
        })?;
        let http = HttpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], spec.ops_port)),
        };
        Self::from_figment(layered(http, file.as_deref(), std::env::vars())?)
    }

    /// Extracts settings from an already layered figment (tests use it with a jailed environment).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment.extract().map_err(Box::new)?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::Inconsistent(
                "kafka.bootstrap_servers is not set (set KAFKA_BOOTSTRAP_SERVERS, or source .dev/env after `make up`)"
                    .into(),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Inconsistent(
                "database.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The `kafka.client` properties that `vars` (the process environment, for tools such as `checkoutctl`) give as
/// `CHECKOUT__KAFKA__CLIENT__<NAME>` — the same names, mapping and rules as a service's configuration
/// (`CHECKOUT__KAFKA__CLIENT__SASL__USERNAME` is `sasl.username`), so an operator tool reaches a SASL/TLS cluster
/// with the credentials a service would use. Properties that would break delivery are refused, named.
pub fn client_properties_from(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<ClientProperties, crate::kafka::ReservedProperties> {
    let prefix = format!("{ENV_PREFIX}KAFKA__CLIENT__");
    let mut properties = ClientProperties::new();
    for (name, value) in vars {
        if let Some(rest) = name.strip_prefix(&prefix)
            && !rest.is_empty()
        {
            properties.insert(rest.to_lowercase().replace("__", "."), value);
        }
    }
    crate::kafka::check_client_properties(&properties)?;
    Ok(properties)
}

/// The layered provider: defaults of the common sections, the file, then the environment `vars` (the process's
/// own in production; tests and the docker-compose check pass theirs, so nothing mutates the process
/// environment).
pub fn figment(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    layered(HttpSettings::default(), file, vars)
}

fn layered(
    http: HttpSettings,
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Figment, ConfigError> {
    let mut figment = Figment::new()
        .merge(Serialized::default("database", DatabaseSettings::default()))
        .merge(Serialized::default("http", http))
        .merge(Serialized::default("log", LogSettings::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let (mut prefixed, mut well_known) = (Vec::new(), Vec::new());
    for (name, value) in vars {
        if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            prefixed.push((rest.to_lowercase().replace("__", "."), value));
        } else if let Some((_, key)) = WELL_KNOWN_ENV.iter().find(|(var, _)| *var == name) {
            well_known.push((key.to_string(), value));
        }
    }
    // CHECKOUT__… first, then the well-known names, which win (as documented above).
    for (key, value) in prefixed.into_iter().chain(well_known) {
        let nested = match key.strip_prefix(CLIENT_PROPERTY_PREFIX) {
            // A librdkafka property: its dotted name is one key of the map, its value the text as given.
            Some(property) => {
                let mut client = figment::value::Dict::new();
                client.insert(property.to_string(), value.into());
                figment::util::nest("kafka.client", client.into())
            }
            None => {
                // Typed like figment's own Env provider: "42" is a number, "true" a bool, the rest strings.
                let value: figment::value::Value =
                    value.parse().unwrap_or_else(|never| match never {});
                figment::util::nest(&key, value)
            }
        };
        figment = figment.merge(Serialized::globals(nested));
    }
    Ok(figment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_properties_come_from_the_environment_as_for_services() {
        let vars = [
            (
                "CHECKOUT__KAFKA__CLIENT__SASL__USERNAME",
                "checkoutctl-topics",
            ),
            ("CHECKOUT__KAFKA__CLIENT__SECURITY__PROTOCOL", "SASL_SSL"),
            ("CHECKOUT__LOG__LEVEL", "debug"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9093"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let props = client_properties_from(vars).unwrap();
        assert_eq!(props.get("sasl.username"), Some("checkoutctl-topics"));
        assert_eq!(props.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(props.iter().count(), 2);
        let reserved = [("CHECKOUT__KAFKA__CLIENT__ENABLE__AUTO__COMMIT", "true")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert!(client_properties_from(reserved).is_err());
    }
    use secrecy::ExposeSecret;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Own {
        batch_size: u32,
        #[serde(with = "humantime_serde")]
        backoff: Duration,
    }

    fn load(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings<Own>, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::<Own>::from_figment(figment(file, vars)?)
    }

    #[test]
    fn layers_file_then_prefixed_env_then_well_known_names() {
        let file = std::env::temp_dir().join(format!("svc-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            r#"
            [kafka]
            bootstrap_servers = "file:9092"
            [http]
            listen = "0.0.0.0:9100"
            [service]
            batch_size = 50
            backoff = "500ms"
            "#,
        )
        .unwrap();
        let s = load(
            Some(&file),
            &[
                ("CHECKOUT__HTTP__LISTEN", "127.0.0.1:9200"),
                ("CHECKOUT__LOG__FORMAT", "json"),
                ("CHECKOUT__KAFKA__BOOTSTRAP_SERVERS", "prefixed:9092"),
                ("KAFKA_BOOTSTRAP_SERVERS", "env:9092"),
                ("DATABASE_URL", "postgres://u:secret@h/db"),
                ("UNRELATED", "ignored"),
            ],
        )
        .expect("loads");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "env:9092");
        assert_eq!(s.http.listen, "127.0.0.1:9200".parse().unwrap());
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(
            s.service,
            Own {
                batch_size: 50,
                backoff: Duration::from_millis(500)
            }
        );
        assert_eq!(
            s.database.url.as_ref().unwrap().expose_secret(),
            "postgres://u:secret@h/db"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = load(
            None,
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "k:9092"),
                ("CHECKOUT__HTTP__LISTNE", "127.0.0.1:1"),
            ],
        )
        .expect_err("typo must fail");
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn missing_bootstrap_servers_and_missing_file_are_errors() {
        let err = load(None, &[]).expect_err("no bootstrap servers");
        assert!(err.to_string().contains("bootstrap_servers"), "{err}");
        let err = load(Some(Path::new("/nonexistent/nope.toml")), &[]).expect_err("missing file");
        assert!(matches!(err, ConfigError::MissingFile { .. }), "{err}");
    }

    fn toml(name: &str, text: &str) -> PathBuf {
        let file = std::env::temp_dir().join(format!("svc-{}-{name}.toml", std::process::id()));
        std::fs::write(&file, text).unwrap();
        file
    }

    const BOOTSTRAP: (&str, &str) = ("KAFKA_BOOTSTRAP_SERVERS", "k:9092");

    #[test]
    fn a_reserved_client_property_fails_the_load_naming_it_from_the_file_and_from_the_environment()
    {
        let file = toml(
            "reserved",
            r#"
            [kafka.client]
            "security.protocol" = "SSL"
            "transactional.id" = "tx-value-42"
            "#,
        );
        let err = load(Some(&file), &[BOOTSTRAP]).expect_err("reserved key in the file");
        std::fs::remove_file(&file).unwrap();
        assert!(
            matches!(err, ConfigError::ReservedKafkaProperties(_)),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("kafka.client.\"transactional.id\""), "{text}");
        assert!(text.contains("exactly-once mode (a)"), "{text}");
        assert!(
            !text.contains("tx-value-42"),
            "the value is not echoed: {text}"
        );

        for (var, key) in [
            (
                "CHECKOUT__KAFKA__CLIENT__TRANSACTIONAL__ID",
                "transactional.id",
            ),
            (
                "CHECKOUT__KAFKA__CLIENT__TRANSACTIONAL.ID",
                "transactional.id",
            ),
            (
                "CHECKOUT__KAFKA__CLIENT__ENABLE__AUTO__COMMIT",
                "enable.auto.commit",
            ),
            ("CHECKOUT__KAFKA__CLIENT__ACKS", "acks"),
        ] {
            let err = load(None, &[BOOTSTRAP, (var, "1")]).expect_err(var);
            assert!(
                err.to_string().contains(&format!("kafka.client.\"{key}\"")),
                "{var}: {err}"
            );
        }
    }

    #[test]
    fn allowed_client_properties_load_and_secrets_reach_the_client_config() {
        let file = toml(
            "allowed",
            r#"
            [kafka.client]
            "security.protocol" = "SASL_SSL"
            "sasl.mechanism" = "SCRAM-SHA-512"
            "client.id" = "from-file"
            "socket.timeout.ms" = 30000
            "sasl.password" = "file-secret"
            "#,
        );
        let s = load(
            Some(&file),
            &[
                BOOTSTRAP,
                ("CHECKOUT__KAFKA__CLIENT__CLIENT__ID", "from-env"),
                ("CHECKOUT__KAFKA__CLIENT__SASL__PASSWORD", "env-s3cret"),
                ("CHECKOUT__KAFKA__CLIENT__SASL__USERNAME", "00123"),
                ("CHECKOUT__KAFKA__CLIENT__LOG_LEVEL", "6"),
            ],
        )
        .expect("allowed keys load");
        std::fs::remove_file(&file).unwrap();
        let client = &s.kafka.client;
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("socket.timeout.ms"), Some("30000"));
        assert_eq!(
            client.get("client.id"),
            Some("from-env"),
            "the environment wins"
        );
        assert_eq!(client.get("sasl.username"), Some("00123"), "kept as text");
        assert_eq!(client.get("log_level"), Some("6"));
        let producer = crate::kafka::producer_config(&s.kafka);
        assert_eq!(producer.get("sasl.password"), Some("env-s3cret"));
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("bootstrap.servers"), Some("k:9092"));
    }

    #[test]
    fn kafka_client_secrets_never_print() {
        let secrets = [
            ("sasl.password", "pw-1"),
            ("ssl.key.password", "pw-2"),
            ("ssl.keystore.password", "pw-3"),
            ("sasl.oauthbearer.client.secret", "pw-4"),
            ("ssl.key.pem", "pw-5"),
            ("sasl.oauthbearer.config", "pw-6"),
            ("my.custom.secret.value", "pw-7"),
        ];
        let mut vars: Vec<(String, String)> = vec![(BOOTSTRAP.0.into(), BOOTSTRAP.1.into())];
        vars.push((
            "CHECKOUT__KAFKA__CLIENT__SECURITY__PROTOCOL".into(),
            "SASL_SSL".into(),
        ));
        for (key, value) in secrets {
            let var = format!(
                "CHECKOUT__KAFKA__CLIENT__{}",
                key.to_uppercase().replace('.', "__")
            );
            vars.push((var, value.into()));
        }
        let s = Settings::<Own>::from_figment(figment(None, vars).unwrap()).unwrap();
        let debug = format!("{s:?} {:?} {:#?}", s.kafka, s.kafka.client);
        let json = serde_json::to_string(&s).unwrap();
        let toml_dump = figment::Figment::from(Serialized::defaults(&s))
            .extract::<serde_json::Value>()
            .unwrap()
            .to_string();
        for rendered in [&debug, &json, &toml_dump] {
            for (key, value) in secrets {
                assert!(
                    !rendered.contains(value),
                    "{key}'s value printed: {rendered}"
                );
                assert!(rendered.contains(key), "{key} itself is shown: {rendered}");
            }
            assert!(
                rendered.contains("SASL_SSL"),
                "non-secrets are shown: {rendered}"
            );
            assert!(rendered.contains("[redacted]"), "{rendered}");
        }
        let config = crate::kafka::client_config(&s.kafka);
        for (key, value) in secrets {
            assert_eq!(config.get(key), Some(value), "{key} reaches librdkafka");
        }
    }

    #[test]
    fn an_unquoted_dotted_property_name_is_refused_naming_it() {
        let file = toml(
            "unquoted",
            r#"
            [kafka.client]
            security.protocol = "SSL"
            "#,
        );
        let err = load(Some(&file), &[BOOTSTRAP]).expect_err("nested table");
        std::fs::remove_file(&file).unwrap();
        let text = err.to_string();
        assert!(text.contains("kafka.client.security is a table"), "{text}");
        assert!(text.contains("quote them"), "{text}");
    }

    #[test]
    fn the_database_url_never_prints() {
        let s = load(
            None,
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "k:9092"),
                ("DATABASE_URL", "postgres://u:hunter2@h/db"),
            ],
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }
}
