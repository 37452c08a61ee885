//! Test helpers for the real Kafka broker and PostgreSQL that `make up` starts.
//!
//! Guarantees:
//! - **Never skips.** When the broker or the database cannot be reached, the helper panics with the address it
//!   tried and how to fix it (`make up`); no test returns early because infrastructure is missing.
//! - **Isolation.** [`create_topic`] makes a uniquely named topic and [`fresh_database`] a uniquely named
//!   database with every migration applied, so tests run in parallel without seeing each other's data.
//!   Consumer groups should come from [`unique_name`] too.
//!
//! Where the infrastructure is: `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` from the environment when set,
//! otherwise from `.dev/env` at the workspace root (written by `make up`). [`three_broker_infra`] reads
//! `.dev/env.b3`, written by `make up BROKERS=3`.

pub mod broker;
pub mod pg_proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::{Connection, PgConnection, PgPool};

/// Where the broker and the database are.
#[derive(Debug, Clone)]
pub struct Infra {
    pub bootstrap_servers: String,
    pub database_url: String,
    /// Brokers in the cluster (1 or 3); topics are created with this replication factor.
    pub brokers: i32,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

fn read_env_file(path: &Path) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// The default infrastructure (panics with instructions when it is not configured).
pub fn infra() -> &'static Infra {
    static INFRA: OnceLock<Infra> = OnceLock::new();
    INFRA.get_or_init(|| {
        let file = workspace_root().join(".dev/env");
        let from_file = read_env_file(&file).unwrap_or_default();
        let get = |key: &str| std::env::var(key).ok().or_else(|| from_file.get(key).cloned());
        let (Some(bootstrap_servers), Some(database_url)) = (get("KAFKA_BOOTSTRAP_SERVERS"), get("DATABASE_URL"))
        else {
            panic!(
                "tests need a real Kafka and PostgreSQL: KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL are not set and {} \
                 does not exist or lacks them. Run `make up` (or `make test`, which runs it).",
                file.display()
            );
        };
        let brokers = get("KAFKA_BROKERS").and_then(|b| b.parse().ok()).unwrap_or(1);
        Infra { bootstrap_servers, database_url, brokers }
    })
}

/// The 3-broker cluster of `make up BROKERS=3` (panics with instructions when it was not started).
pub fn three_broker_infra() -> Infra {
    let file = workspace_root().join(".dev/env.b3");
    let Some(vars) = read_env_file(&file) else {
        panic!(
            "this test needs the 3-broker cluster: {} does not exist. Run `make up BROKERS=3`.",
            file.display()
        );
    };
    Infra {
        bootstrap_servers: vars["KAFKA_BOOTSTRAP_SERVERS"].clone(),
        database_url: vars["DATABASE_URL"].clone(),
        brokers: 3,
    }
}

/// `prefix-<12 hex chars>`: topic, group and database names that no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Asks the broker for its metadata; `Err` names the address and the cause.
pub fn check_kafka(bootstrap_servers: &str, timeout: Duration) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("log_level", "0")
        .create()
        .map_err(|e| format!("cannot create a Kafka client for {bootstrap_servers}: {e}"))?;
    consumer
        .fetch_metadata(None, timeout)
        .map(|_| ())
        .map_err(|e| format!("Kafka at {bootstrap_servers} did not answer a metadata request within {timeout:?}: {e}"))
}

/// Panics (loudly, with the fix) unless the broker answers.
pub fn require_kafka(bootstrap_servers: &str) {
    if let Err(why) = check_kafka(bootstrap_servers, Duration::from_secs(15)) {
        panic!("{why}. Tests need a real broker: run `make up`.");
    }
}

/// Connects to PostgreSQL; `Err` names the server and the cause (never the password).
pub async fn check_postgres(database_url: &str) -> Result<PgConnection, String> {
    let connect = PgConnection::connect(database_url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!(
            "cannot connect to PostgreSQL at {}: {e}",
            redact(database_url)
        )),
        Err(_) => Err(format!(
            "PostgreSQL at {} did not answer within 10s",
            redact(database_url)
        )),
    }
}

/// `postgres://user:***@host:port/db`
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// An admin client for the default infrastructure.
pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &infra().bootstrap_servers)
        .create()
        .expect("admin client")
}

/// Creates a uniquely named topic with `partitions` partitions on the default cluster and waits until every
/// partition has a leader. Returns its name.
pub async fn create_topic(partitions: i32) -> String {
    create_topic_with(infra(), "test", partitions, &[]).await
}

/// Same as [`create_topic`] on a given cluster, with a name prefix and topic configs.
pub async fn create_topic_with(
    infra: &Infra,
    prefix: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> String {
    let name = unique_name(prefix);
    create_named_topic_with(infra, &name, partitions, configs).await;
    name
}

/// Creates topic `name` (e.g. the `<topic>.dlq` and `<topic>.dlq.parked` of a test's topic) with `partitions`
/// partitions on the default cluster and waits until every partition has a leader.
pub async fn create_named_topic(name: &str, partitions: i32) {
    create_named_topic_with(infra(), name, partitions, &[]).await;
}

async fn create_named_topic_with(
    infra: &Infra,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    require_kafka(&infra.bootstrap_servers);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &infra.bootstrap_servers)
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(infra.brokers));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .expect("create_topics request");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("creating topic {topic} failed: {code}");
        }
    }
    wait_for_leaders(&infra.bootstrap_servers, name, partitions);
}

fn wait_for_leaders(bootstrap_servers: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create()
        .expect("metadata client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let ready = md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} has no leader for every partition after 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes `topic` on the default cluster and waits until its name is free again (deletion is asynchronous: a
/// topic of the same name cannot be created before). Panics when the deletion fails or is not done within 30 s.
pub async fn delete_topic(topic: &str) {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin()
        .delete_topics(&[topic], &opts)
        .await
        .expect("delete_topics request")
    {
        if let Err((topic, code)) = result {
            panic!("deleting topic {topic} failed: {code}");
        }
    }
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &infra().bootstrap_servers)
            .create()
            .expect("metadata client");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let gone = consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok_and(|md| md.topics().iter().all(|t| t.name() != topic));
            if gone {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "topic {topic} is still listed 30 s after its deletion"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("the deletion wait");
}

/// A database of its own for one test, with every migration applied. It is dropped by the next test run after
/// it is a few hours old (tests may be inspected after a failure), or by `make clean`.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

const TEST_DB_PREFIX: &str = "t_";
const TEST_DB_MAX_AGE_SECS: u64 = 6 * 3600;

/// Sets one topic-level config of `topic` (e.g. `max.message.bytes`) on the default cluster.
pub async fn set_topic_config(topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &infra().bootstrap_servers)
        .create()
        .expect("admin client");
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .expect("alter_configs request")
        .pop()
        .expect("one result")
        .unwrap_or_else(|e| panic!("setting {key}={value} on {topic} failed: {e:?}"));
}

/// Creates a fresh database on the default server and applies the workspace's migrations.
pub async fn fresh_database() -> TestDb {
    fresh_database_on(&infra().database_url).await
}

/// Same as [`fresh_database`] on the server of `server_url` (any database on it; e.g. a benchmark's own instance).
pub async fn fresh_database_on(server_url: &str) -> TestDb {
    let mut admin = match check_postgres(server_url).await {
        Ok(conn) => conn,
        Err(why) => panic!("{why}. Tests need a real PostgreSQL: run `make up`."),
    };
    drop_stale_test_databases(&mut admin).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let name = format!(
        "{TEST_DB_PREFIX}{now}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed (the user needs CREATEDB): {e}"));
    let url = with_database(server_url, &name);
    let pool = PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {name} failed: {e}"));
    service_kit::db::MIGRATOR
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("migrations failed on {name}: {e}"));
    TestDb { name, url, pool }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

async fn drop_stale_test_databases(admin: &mut PgConnection) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
                .fetch_all(&mut *admin)
                .await
                .unwrap_or_default();
        for name in names {
            let created = name
                .strip_prefix(TEST_DB_PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|c| now.saturating_sub(c) > TEST_DB_MAX_AGE_SECS) {
                let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *admin)
                    .await;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/checkout", "t_1"),
            "postgres://u:p@h:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/checkout?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact("postgres://postgres:secret@127.0.0.1:5/db"),
            "postgres://postgres:***@127.0.0.1:5/db"
        );
    }

    #[test]
    fn an_unreachable_broker_is_an_error_naming_its_address() {
        let err = check_kafka("127.0.0.1:1", Duration::from_secs(2))
            .expect_err("nothing listens on port 1");
        assert!(err.contains("127.0.0.1:1"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_an_error_naming_its_address() {
        let err = check_postgres("postgres://u:pw@127.0.0.1:1/db")
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.contains("127.0.0.1:1") && !err.contains("pw"), "{err}");
    }
}
