//! Typed configuration: built-in defaults, then an optional TOML file, then environment variables.
//!
//! Every service reads a [`Settings<S>`]: the common sections (`kafka`, `database`, `http`, `log`) and its own
//! section `service` of type `S`. Layers, later ones winning:
//!
//! 1. the defaults of the types (`#[serde(default)]`);
//! 2. the TOML file given by `--config` or `CHECKOUT_CONFIG`, when there is one (a missing file is an error);
//! 3. `CHECKOUT__SECTION__KEY` variables, e.g. `CHECKOUT__HTTP__LISTEN=0.0.0.0:9102`;
//! 4. the two well-known variables that `make up` writes to `.dev/env` and docker-compose sets:
//!    `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL`.
//!
//! Guarantees: an unknown key anywhere is an error naming it (a typo fails at start-up instead of being
//! ignored); durations are typed (`"30s"`, `"500ms"`); the database URL is a secret that `Debug` never prints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The environment variable naming a configuration file, when `--config` is not given.
pub const CONFIG_FILE_ENV: &str = "CHECKOUT_CONFIG";
/// Prefix of the nested environment overrides (`CHECKOUT__HTTP__LISTEN`).
pub const ENV_PREFIX: &str = "CHECKOUT__";
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
    /// They cannot override the spec's producer settings; see [`crate::kafka`].
    #[serde(default)]
    pub client: BTreeMap<String, String>,
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
        // Typed like figment's own Env provider: "42" is a number, "true" a bool, the rest strings.
        let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
        figment = figment.merge(Serialized::globals(figment::util::nest(&key, value)));
    }
    Ok(figment)
}

#[cfg(test)]
mod tests {
    use super::*;
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
