//! docker-compose.yml cannot run here (no Docker engine), so this test reads it and checks that it agrees with
//! the code: every service binary of the workspace has a compose service; long-running services listen on the
//! operations port of `service_kit::services`, publish it, have a health check on it, and set only environment
//! variables that the configuration loader accepts; the Kafka and PostgreSQL addresses match the kafka and
//! postgres services. `docker-compose config` (Debian's package; `deploy/local/tools` installs it, `make test`
//! runs that) must accept the file: it needs no engine. A missing docker-compose fails the test.

use std::collections::BTreeMap;

use serde::Deserialize;
use service_kit::Settings;
use testkit::workspace_root;

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<serde_yaml::Value>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<String>,
    command: Option<Vec<String>>,
    healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

fn compose() -> Compose {
    let path = workspace_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml exists");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// The binaries under `services/`: each package's name, plus any `[[bin]]` names.
fn workspace_binaries() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("services")).expect("services/ exists") {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Value = toml::from_str(&text).unwrap();
        match doc.get("bin").and_then(|b| b.as_array()) {
            Some(bins) => names.extend(
                bins.iter()
                    .filter_map(|b| b.get("name")?.as_str().map(str::to_string)),
            ),
            None => names.push(doc["package"]["name"].as_str().unwrap().to_string()),
        }
    }
    names.sort();
    names
}

#[test]
fn every_service_binary_has_a_compose_service_that_agrees_with_the_code() {
    let compose = compose();
    let binaries = workspace_binaries();
    assert!(!binaries.is_empty(), "no binaries found under services/");
    let kafka = &compose.services["kafka"];
    let postgres = &compose.services["postgres"];
    assert!(
        kafka
            .image
            .as_deref()
            .is_some_and(|i| i.starts_with("apache/kafka:")),
        "official Kafka image"
    );
    let expected_db_url = format!(
        "postgres://{user}:{pw}@postgres:5432/{db}",
        user = postgres.environment["POSTGRES_USER"],
        pw = postgres.environment["POSTGRES_PASSWORD"],
        db = postgres.environment["POSTGRES_DB"],
    );
    assert!(kafka.environment["KAFKA_ADVERTISED_LISTENERS"].contains("PLAINTEXT://kafka:9092"));

    for name in &binaries {
        let service = compose
            .services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml lacks a `{name}` service"));
        assert!(
            service.build.is_some() || service.image.as_deref() == Some("crypto-checkout:local"),
            "{name}: image"
        );
        assert_eq!(
            service
                .command
                .as_ref()
                .and_then(|c| c.first())
                .map(String::as_str),
            Some(name.as_str()),
            "{name}: runs its binary"
        );
        let env = &service.environment;
        assert_eq!(
            env.get("KAFKA_BOOTSTRAP_SERVERS").map(String::as_str),
            Some("kafka:9092"),
            "{name}: KAFKA_BOOTSTRAP_SERVERS"
        );
        if let Some(url) = env.get("DATABASE_URL") {
            assert_eq!(
                url, &expected_db_url,
                "{name}: DATABASE_URL matches the postgres service"
            );
        }

        if let Some(spec) = service_kit::services::spec(name) {
            let listen = env
                .get("CHECKOUT__HTTP__LISTEN")
                .unwrap_or_else(|| panic!("{name}: CHECKOUT__HTTP__LISTEN"));
            assert_eq!(
                listen,
                &format!("0.0.0.0:{}", spec.ops_port),
                "{name}: operations port"
            );
            let published = format!("{0}:{0}", spec.ops_port);
            assert!(
                service.ports.contains(&published),
                "{name}: publishes {published}"
            );
            let ready = format!("http://localhost:{}/ready", spec.ops_port);
            assert!(
                service
                    .healthcheck
                    .as_ref()
                    .is_some_and(|h| h.test.contains(&ready)),
                "{name}: a health check on {ready}"
            );
        }
        assert_loader_accepts(name, env);
    }
}

/// Loads the service's environment through the real configuration loader; unknown variables fail it.
fn assert_loader_accepts(name: &str, env: &BTreeMap<String, String>) {
    let vars = env.iter().map(|(k, v)| (k.clone(), v.clone()));
    let figment = service_kit::config::figment(None, vars).expect("no file to read");
    if let Err(err) = Settings::<serde_json::Value>::from_figment(figment) {
        panic!("{name}: docker-compose environment rejected by the configuration loader: {err}");
    }
}

#[test]
fn the_compose_kafka_matches_the_spec_development_environment() {
    let kafka = &compose().services["kafka"].environment;
    for (key, value) in [
        ("KAFKA_DEFAULT_REPLICATION_FACTOR", "1"),
        ("KAFKA_MIN_INSYNC_REPLICAS", "1"),
        ("KAFKA_LOG_RETENTION_HOURS", "168"),
        ("KAFKA_LOG_SEGMENT_BYTES", "104857600"),
        ("KAFKA_MESSAGE_MAX_BYTES", "1048576"),
        ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"),
    ] {
        assert_eq!(kafka.get(key).map(String::as_str), Some(value), "{key}");
    }
}

#[test]
fn docker_compose_config_accepts_the_file() {
    let root = workspace_root();
    let output = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "--quiet"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}): install it with `deploy/local/tools` (`make test` runs it)")
        });
    assert!(
        output.status.success(),
        "docker-compose config rejects docker-compose.yml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn prometheus_scrapes_every_service_of_the_table_with_the_rules_of_make_run() {
    // The same template and script as `make run` (deploy/monitoring/render-config), with one `NAME=NAME:PORT`
    // per service of service_kit::services and bus-monitor as its own job.
    let compose = compose();
    let prometheus = compose
        .services
        .get("prometheus")
        .expect("a prometheus service");
    let command = prometheus.command.clone().unwrap_or_default().join(" ");
    let words: Vec<&str> = command.split_whitespace().collect();
    assert!(
        command.contains("deploy/monitoring/render-config")
            || command.contains("/etc/crypto-checkout/monitoring/render-config"),
        "{command}"
    );
    for spec in service_kit::services::SERVICES {
        if spec.name == "bus-monitor" {
            let bus = format!("{}:{}", spec.name, spec.ops_port);
            assert!(
                words.contains(&bus.as_str()),
                "bus-monitor at {bus}: {command}"
            );
        } else {
            let target = format!("{0}={0}:{1}", spec.name, spec.ops_port);
            assert!(
                words.contains(&target.as_str()),
                "{target} is not scraped: {command}"
            );
        }
    }
    assert!(prometheus.ports.iter().any(|p| p == "9090:9090"));
}
