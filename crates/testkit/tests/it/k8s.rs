//! The Kubernetes manifests (deploy/k8s), checked offline: every overlay renders with kustomize and validates
//! with kubeconform against the JSON schemas kept in deploy/k8s/schemas (Kubernetes, Strimzi, KEDA, Prometheus
//! Operator; no network), and the rendered resources keep the deployment's rules — the spec's consumer counts,
//! one Deployment and one ScaledObject per consumer group, never more replicas than partitions, a
//! PodDisruptionBudget per Deployment, a grace period that outlasts the drain, no secret in a ConfigMap, the
//! Kafka cluster of each environment as deploy/kafka/topics.yaml says.
//!
//! kustomize and kubeconform are installed by `deploy/local/tools` (which `make test` runs first) into
//! .dev/tools/bin; `KUSTOMIZE` / `KUBECONFORM` name other binaries. A missing tool fails the test, naming the
//! command that installs it: nothing here skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use testkit::workspace_root;

const ENVIRONMENTS: [&str; 4] = ["development", "staging", "production", "dr"];

/// The spec's "Consumer Group Configuration" and "Consumer Group Monitoring" per service binary: its group, the
/// topics it consumes, the consumers in production, the lag alert (the ScaledObject's threshold). Audit has no
/// lag alert in the spec: it takes the read models' (same policy shape, decision 0030); notifications has none
/// either: it takes webhook delivery's (decision 0031); payment ingestion is not in the spec: settlement's (decision
/// 0034).
const CONSUMERS: &[(&str, &str, &[&str], i64, i64)] = &[
    (
        "projections",
        "read-model-projections",
        &["crypto-checkout.domain-events"],
        4,
        500,
    ),
    (
        "webhooks",
        "webhook-delivery",
        &["crypto-checkout.domain-events"],
        2,
        100,
    ),
    (
        "settlement",
        "settlement-processing",
        &["crypto-checkout.domain-events"],
        2,
        10,
    ),
    (
        "analytics",
        "analytics-aggregation",
        &[
            "crypto-checkout.domain-events",
            "crypto-checkout.analytics-events",
        ],
        1,
        1000,
    ),
    (
        "audit",
        "audit-logging",
        &["crypto-checkout.domain-events"],
        1,
        500,
    ),
    (
        "notifications",
        "notification-delivery",
        &["crypto-checkout.notification-events"],
        3,
        100,
    ),
    (
        "payments",
        "payment-ingestion",
        &[
            "crypto-checkout.integration-events",
            "crypto-checkout.domain-events",
        ],
        2,
        10,
    ),
];
/// Not a consumer group: two replicas share the 64 key buckets (decision 0030).
const PUBLISHER: (&str, i64) = ("outbox-publisher", 2);
/// bus-monitor (decision 0033) and its replicas: one, or the lag would be exported twice.
const MONITOR: (&str, i64) = ("bus-monitor", 1);
/// The runtime's default `drain_timeout` and the publisher's default `shutdown_grace`, when the config omits them.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
const DEFAULT_PUBLISHER_GRACE: Duration = Duration::from_secs(20);
/// What a pod needs beyond the drain: the synchronous commit, leaving the group, flushing the producer.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(10);

fn tool(name: &str, var: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".dev/tools/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {} — install it with `deploy/local/tools` (`make test` runs it), or set {var}",
        path.display()
    );
    path
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn overlay(env: &str) -> PathBuf {
    workspace_root().join("deploy/k8s/overlays").join(env)
}

/// `kustomize build` of the environment's overlay, rendered once per test binary.
fn rendered(env: &str) -> &'static str {
    static RENDERED: OnceLock<BTreeMap<&'static str, String>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let kustomize = tool("kustomize", "KUSTOMIZE");
        ENVIRONMENTS
            .iter()
            .map(|env| {
                (
                    *env,
                    run(Command::new(&kustomize).arg("build").arg(overlay(env))),
                )
            })
            .collect()
    })[env]
        .as_str()
}

fn resources(env: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered(env))
        .map(|doc| Value::deserialize(doc).expect("kustomize writes YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().expect("metadata.name")
}

fn int(value: &Value, what: &str) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: not an integer: {value:?}"))
}

fn consumer(
    service: &str,
) -> Option<&'static (
    &'static str,
    &'static str,
    &'static [&'static str],
    i64,
    i64,
)> {
    CONSUMERS.iter().find(|c| c.0 == service)
}

/// The topics file: partitions per topic, and each environment's profile.
#[derive(Deserialize)]
struct TopicsFile {
    environments: BTreeMap<String, Profile>,
    topics: Vec<Topic>,
}

#[derive(Deserialize)]
struct Profile {
    brokers: i64,
    replication_factor: i64,
    min_insync_replicas: i64,
    retention: String,
    compression: String,
    segment_size: String,
    max_message_size: String,
}

#[derive(Deserialize)]
struct Topic {
    name: String,
    partitions: i64,
}

fn topics_file() -> TopicsFile {
    let path = workspace_root().join("deploy/kafka/topics.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).expect("topics.yaml parses")
}

/// "30s", "500ms", "7d", "12h" (the forms our configs and topics.yaml use).
fn duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => panic!("duration {text:?}: unknown unit"),
    }
}

/// "100MiB", "1GiB", "1MiB" or a byte count.
fn bytes(text: &str) -> i64 {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("size {text:?}"));
    n * match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => panic!("size {text:?}: unknown unit"),
    }
}

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn container(deployment: &Value) -> &Value {
    let containers = pod_spec(deployment)["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "{}: one container", name(deployment));
    &containers[0]
}

/// The service's config.toml: the ConfigMap mounted at /etc/crypto-checkout/config.
fn config_of(deployment: &Value, docs: &[Value]) -> toml::Table {
    let volumes = pod_spec(deployment)["volumes"].as_sequence().unwrap();
    let volume = volumes
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap_or_else(|| panic!("{}: no config volume", name(deployment)));
    let map_name = volume["configMap"]["name"].as_str().unwrap();
    let map = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|m| name(m) == map_name)
        .unwrap_or_else(|| panic!("{}: ConfigMap {map_name} not rendered", name(deployment)));
    let text = map["data"]["config.toml"]
        .as_str()
        .expect("config.toml key");
    toml::from_str(text).unwrap_or_else(|e| panic!("{map_name}: config.toml: {e}"))
}

#[test]
fn every_overlay_renders_and_validates_against_the_schemas_offline() {
    let kubeconform = tool("kubeconform", "KUBECONFORM");
    let schemas = workspace_root().join("deploy/k8s/schemas");
    for env in ENVIRONMENTS {
        let file = std::env::temp_dir().join(format!("k8s-{env}-{}.yaml", std::process::id()));
        std::fs::write(&file, rendered(env)).unwrap();
        // Only local schema locations: kubeconform never reaches the network. -strict: an unknown field is an
        // error; a kind without a schema is an error too (no -ignore-missing-schemas).
        let summary = run(Command::new(&kubeconform)
            .arg("-strict")
            .arg("-summary")
            .arg("-schema-location")
            .arg(format!(
                "{}/kubernetes/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                schemas.display()
            ))
            .arg("-schema-location")
            .arg(format!(
                "{}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
                schemas.display()
            ))
            .arg(&file));
        std::fs::remove_file(&file).ok();
        let count = resources(env).len();
        assert!(
            summary.contains(&format!(
                "{count} resources found in 1 file - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0"
            )),
            "{env}: {summary}"
        );
    }
}

#[test]
fn production_runs_the_specs_consumer_counts_and_staging_and_dr_the_same() {
    for env in ["production", "staging", "dr"] {
        let docs = resources(env);
        for deployment in of_kind(&docs, "Deployment") {
            let service = name(deployment);
            let expected = match consumer(service) {
                Some(c) => c.3,
                None if service == PUBLISHER.0 => PUBLISHER.1,
                None if service == MONITOR.0 => MONITOR.1,
                None => panic!("{env}: unexpected Deployment {service}"),
            };
            // DR is a standby: nothing runs until the failover (KEDA paused at 0).
            let replicas = int(&deployment["spec"]["replicas"], service);
            assert_eq!(
                replicas,
                if env == "dr" { 0 } else { expected },
                "{env}: {service} replicas"
            );
            if let Some(scaled) = of_kind(&docs, "ScaledObject")
                .into_iter()
                .find(|s| name(s) == service)
            {
                assert_eq!(
                    int(&scaled["spec"]["minReplicaCount"], service),
                    expected,
                    "{env}: {service} minReplicaCount"
                );
                let paused =
                    &scaled["metadata"]["annotations"]["autoscaling.keda.sh/paused-replicas"];
                assert_eq!(
                    paused.as_str(),
                    (env == "dr").then_some("0"),
                    "{env}: {service} KEDA paused"
                );
            }
        }
    }
}

#[test]
fn one_deployment_and_one_scaled_object_per_consumer_group_on_its_lag() {
    for env in ENVIRONMENTS {
        let docs = resources(env);
        let deployments: BTreeSet<&str> =
            of_kind(&docs, "Deployment").into_iter().map(name).collect();
        let expected: BTreeSet<&str> = CONSUMERS
            .iter()
            .map(|c| c.0)
            .chain([PUBLISHER.0, MONITOR.0])
            .collect();
        assert_eq!(deployments, expected, "{env}: Deployments");
        let mut groups = BTreeSet::new();
        for scaled in of_kind(&docs, "ScaledObject") {
            let target = scaled["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
            let (service, group, topics, _, lag) = *consumer(target).unwrap_or_else(|| {
                panic!(
                    "{env}: ScaledObject {} scales {target}, not a consumer",
                    name(scaled)
                )
            });
            let mut seen_topics = Vec::new();
            for trigger in scaled["spec"]["triggers"].as_sequence().unwrap() {
                let meta = &trigger["metadata"];
                assert_eq!(trigger["type"], "kafka", "{env}: {service}");
                assert_eq!(
                    meta["consumerGroup"].as_str(),
                    Some(group),
                    "{env}: {service} group"
                );
                assert_eq!(
                    meta["lagThreshold"].as_str(),
                    Some(lag.to_string().as_str()),
                    "{env}: {service}: the spec's lag alert"
                );
                assert_eq!(
                    meta["allowIdleConsumers"].as_str(),
                    Some("false"),
                    "{env}: {service}"
                );
                seen_topics.push(meta["topic"].as_str().unwrap());
            }
            assert_eq!(
                seen_topics, topics,
                "{env}: {service}: a trigger per topic of the group"
            );
            assert!(groups.insert(group), "{env}: group {group} scaled twice");
        }
        let all: BTreeSet<&str> = CONSUMERS.iter().map(|c| c.1).collect();
        assert_eq!(
            groups, all,
            "{env}: every consumer group has its ScaledObject"
        );
    }
}

#[test]
fn max_replicas_never_exceed_the_partitions_of_the_groups_topics() {
    let file = topics_file();
    let partitions: BTreeMap<&str, i64> = file
        .topics
        .iter()
        .map(|t| (t.name.as_str(), t.partitions))
        .collect();
    for env in ENVIRONMENTS {
        let docs = resources(env);
        for scaled in of_kind(&docs, "ScaledObject") {
            let max = int(&scaled["spec"]["maxReplicaCount"], name(scaled));
            let min = int(&scaled["spec"]["minReplicaCount"], name(scaled));
            assert!(min <= max, "{env}: {}: min {min} > max {max}", name(scaled));
            // A member beyond the partitions of every topic the group reads would sit idle.
            let most = scaled["spec"]["triggers"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|t| {
                    let topic = t["metadata"]["topic"].as_str().unwrap();
                    *partitions
                        .get(topic)
                        .unwrap_or_else(|| panic!("{env}: {topic} is not in topics.yaml"))
                })
                .max()
                .unwrap();
            assert!(
                max <= most,
                "{env}: {}: maxReplicaCount {max} > {most} partitions",
                name(scaled)
            );
        }
    }
}

#[test]
fn every_deployment_has_a_disruption_budget_probes_and_a_locked_down_container() {
    for env in ENVIRONMENTS {
        let docs = resources(env);
        let budgets = of_kind(&docs, "PodDisruptionBudget");
        let monitors = of_kind(&docs, "PodMonitor");
        let users: BTreeSet<&str> = of_kind(&docs, "KafkaUser").into_iter().map(name).collect();
        for deployment in of_kind(&docs, "Deployment") {
            let service = name(deployment);
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            let selects = |selector: &Value| {
                selector["matchLabels"]
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &labels[k] == v)
            };
            let covering: Vec<_> = budgets
                .iter()
                .filter(|b| selects(&b["spec"]["selector"]))
                .collect();
            assert_eq!(
                covering.len(),
                1,
                "{env}: {service}: one PodDisruptionBudget"
            );
            assert!(
                monitors.iter().any(|m| selects(&m["spec"]["selector"])),
                "{env}: {service}: a PodMonitor"
            );
            assert!(users.contains(service), "{env}: {service}: a KafkaUser");

            let spec = service_kit::services::spec(service)
                .unwrap_or_else(|| panic!("{service} is not in service_kit::services"));
            let c = container(deployment);
            assert_eq!(
                c["command"][0].as_str(),
                Some(service),
                "{env}: runs its binary"
            );
            assert_eq!(
                int(&c["ports"][0]["containerPort"], service),
                i64::from(spec.ops_port),
                "{env}: {service}: the operations port of service_kit::services"
            );
            assert_eq!(
                c["livenessProbe"]["httpGet"]["path"], "/health",
                "{env}: {service}"
            );
            assert_eq!(
                c["readinessProbe"]["httpGet"]["path"], "/ready",
                "{env}: {service}"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{env}: {service}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{env}: {service}");
            assert_eq!(
                pod_spec(deployment)["securityContext"]["runAsNonRoot"],
                true,
                "{env}: {service}"
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{env}: {service}: requests"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{env}: {service}: limits"
            );

            let config = config_of(deployment, &docs);
            let listen = config["http"]["listen"].as_str().unwrap();
            assert_eq!(
                listen,
                format!("0.0.0.0:{}", spec.ops_port),
                "{env}: {service}: http.listen"
            );
            if consumer(service).is_some() {
                let env_var = c["env"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "CHECKOUT__SERVICE__CONSUMER__OPTIONS__INSTANCE_ID")
                    .unwrap_or_else(|| panic!("{env}: {service}: instance id"));
                assert_eq!(
                    env_var["valueFrom"]["fieldRef"]["fieldPath"],
                    "metadata.name"
                );
            }
        }
    }
}

#[test]
fn the_grace_period_outlasts_the_drain_timeout() {
    for env in ENVIRONMENTS {
        let docs = resources(env);
        for deployment in of_kind(&docs, "Deployment") {
            let service = name(deployment);
            let config = config_of(deployment, &docs);
            let section = config.get("service");
            let drain = if consumer(service).is_some() {
                section
                    .and_then(|s| s.get("consumer"))
                    .and_then(|c| c.get("options"))
                    .and_then(|o| o.get("drain_timeout"))
                    .and_then(|d| d.as_str())
                    .map_or(DEFAULT_DRAIN, duration)
            } else {
                section
                    .and_then(|s| s.get("shutdown_grace"))
                    .and_then(|d| d.as_str())
                    .map_or(DEFAULT_PUBLISHER_GRACE, duration)
            };
            let grace = Duration::from_secs(int(
                &pod_spec(deployment)["terminationGracePeriodSeconds"],
                service,
            ) as u64);
            assert!(
                grace >= drain + SHUTDOWN_MARGIN,
                "{env}: {service}: terminationGracePeriodSeconds {grace:?} must outlast the drain ({drain:?}) by \
                 {SHUTDOWN_MARGIN:?}, or Kubernetes kills it mid-commit"
            );
        }
    }
}

/// Environment variables that must come from a Secret, never a literal.
fn is_secret_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "DATABASE_URL"
        || [
            "PASSWORD",
            "SECRET",
            "TOKEN",
            "ENCRYPTION_KEY",
            "PASSPHRASE",
            "PRIVATE",
        ]
        .iter()
        .any(|w| upper.contains(w))
}

/// The dotted keys of a TOML table whose names say secret (`[service.delivery] encryption_key`, a password…).
fn secret_keys(table: &toml::Table, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        if is_secret_variable(key) {
            found.push(path.clone());
        }
        if let Some(inner) = value.as_table() {
            found.extend(secret_keys(inner, &format!("{path}.")));
        }
    }
    found
}

#[test]
fn no_secret_in_a_config_map_or_a_literal_variable() {
    for env in ENVIRONMENTS {
        let docs = resources(env);
        for map in of_kind(&docs, "ConfigMap") {
            let map_name = name(map);
            for (key, value) in map["data"].as_mapping().unwrap() {
                let (key, value) = (key.as_str().unwrap(), value.as_str().unwrap());
                assert!(
                    !is_secret_variable(key),
                    "{env}: ConfigMap {map_name} has {key}"
                );
                assert!(
                    !value.contains("postgres://") && !value.contains("postgresql://"),
                    "{env}: ConfigMap {map_name}: a database URL"
                );
                if key.ends_with(".toml") {
                    let config: toml::Table = toml::from_str(value).unwrap();
                    let secrets = secret_keys(&config, "");
                    assert!(
                        secrets.is_empty(),
                        "{env}: {map_name}: {secrets:?} belong in a Secret"
                    );
                    assert!(
                        config.get("database").and_then(|d| d.get("url")).is_none(),
                        "{env}: {map_name}: database.url belongs in a Secret"
                    );
                    if let Some(client) = config.get("kafka").and_then(|k| k.get("client")) {
                        for property in client.as_table().unwrap().keys() {
                            assert!(
                                !service_kit::kafka::is_secret(property),
                                "{env}: {map_name}: kafka.client.{property} is a secret"
                            );
                        }
                    }
                }
            }
        }
        for workload in docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job")
        {
            for container in workload["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
            {
                for var in container["env"].as_sequence().into_iter().flatten() {
                    let var_name = var["name"].as_str().unwrap();
                    if is_secret_variable(var_name) {
                        assert!(
                            var["value"].is_null()
                                && var["valueFrom"]["secretKeyRef"]["name"].is_string(),
                            "{env}: {} {}: {var_name} must come from a Secret",
                            workload["kind"].as_str().unwrap(),
                            name(workload)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn each_environments_kafka_cluster_is_its_topics_profile() {
    let file = topics_file();
    for env in ENVIRONMENTS {
        let profile = &file.environments[env];
        let docs = resources(env);
        let kafka = of_kind(&docs, "Kafka");
        assert_eq!(kafka.len(), 1, "{env}: one Kafka");
        let config = &kafka[0]["spec"]["kafka"]["config"];
        let brokers: i64 = of_kind(&docs, "KafkaNodePool")
            .iter()
            .filter(|p| {
                p["spec"]["roles"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|r| r == "broker")
            })
            .map(|p| int(&p["spec"]["replicas"], name(p)))
            .sum();
        assert_eq!(brokers, profile.brokers, "{env}: brokers");
        let number = |key: &str| int(&config[key], &format!("{env}: {key}"));
        assert_eq!(
            number("default.replication.factor"),
            profile.replication_factor,
            "{env}"
        );
        assert_eq!(
            number("offsets.topic.replication.factor"),
            profile.replication_factor,
            "{env}"
        );
        assert_eq!(
            number("min.insync.replicas"),
            profile.min_insync_replicas,
            "{env}"
        );
        assert_eq!(
            number("log.retention.hours") as u64 * 3600,
            duration(&profile.retention).as_secs(),
            "{env}: retention"
        );
        assert_eq!(
            number("log.segment.bytes"),
            bytes(&profile.segment_size),
            "{env}: segments"
        );
        assert_eq!(
            number("message.max.bytes"),
            bytes(&profile.max_message_size),
            "{env}: messages"
        );
        assert_eq!(
            config["compression.type"].as_str(),
            Some(profile.compression.as_str()),
            "{env}"
        );
        assert_eq!(config["auto.create.topics.enable"], false, "{env}");

        // The topics are the export of the same profile (kept equal to `checkoutctl topics export` by
        // checkoutctl's test): every declared topic, with the profile's replication.
        let topics = of_kind(&docs, "KafkaTopic");
        assert!(!topics.is_empty(), "{env}: KafkaTopics");
        for topic in topics {
            assert_eq!(
                int(&topic["spec"]["replicas"], name(topic)),
                profile.replication_factor,
                "{env}"
            );
            assert_eq!(
                topic["metadata"]["labels"]["strimzi.io/cluster"],
                kafka[0]["metadata"]["name"]
            );
        }
    }
}

#[test]
fn each_services_config_and_variables_pass_the_configuration_loader() {
    for env in ENVIRONMENTS {
        let docs = resources(env);
        for deployment in of_kind(&docs, "Deployment") {
            let service = name(deployment);
            let file = std::env::temp_dir()
                .join(format!("k8s-{env}-{service}-{}.toml", std::process::id()));
            std::fs::write(
                &file,
                toml::to_string(&config_of(deployment, &docs)).unwrap(),
            )
            .unwrap();
            let vars: Vec<(String, String)> = container(deployment)["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|var| {
                    let var_name = var["name"].as_str().unwrap().to_string();
                    let value = match var["value"].as_str() {
                        Some(value) => value.to_string(),
                        None if var_name == "DATABASE_URL" => {
                            "postgres://u:p@db:5432/checkout".into()
                        }
                        None => "from-the-cluster".into(),
                    };
                    (var_name, value)
                })
                .collect();
            let loaded = service_kit::config::figment(Some(&file), vars)
                .and_then(service_kit::Settings::<serde_json::Value>::from_figment);
            std::fs::remove_file(&file).ok();
            if let Err(err) = loaded {
                panic!(
                    "{env}: {service}: the configuration loader rejects its ConfigMap and variables: {err}"
                );
            }
        }
    }
}

/// The rule files Prometheus loads in `make run`, parsed: the `groups` of every deploy/monitoring/rules/*.yaml,
/// in file-name order.
fn monitoring_rule_groups() -> Vec<Value> {
    let dir = workspace_root().join("deploy/monitoring/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule file in {}", dir.display());
    files
        .iter()
        .flat_map(|file| {
            let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            doc["groups"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{}: no groups", file.display()))
                .clone()
        })
        .collect()
}

#[test]
fn the_prometheus_rule_and_the_brokers_exporter_rules_are_generated_from_deploy_monitoring() {
    // The committed files are what deploy/monitoring/export-k8s writes now (`make deploy-rules` after editing a
    // rule file).
    let out = std::env::temp_dir().join(format!("k8s-export-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new(workspace_root().join("deploy/monitoring/export-k8s")).arg(&out));
    for file in ["prometheus-rules.yaml", "kafka-metrics.yaml"] {
        let committed =
            std::fs::read_to_string(workspace_root().join("deploy/k8s/base").join(file)).unwrap();
        let fresh = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            committed == fresh,
            "deploy/k8s/base/{file} is stale: run `make deploy-rules` (deploy/monitoring/export-k8s)"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();

    // And what it writes means the same as the sources, read independently of the script: in every environment
    // one PrometheusRule carrying exactly the rule files' groups, and the brokers' exporter rules equal to
    // deploy/monitoring/jmx-exporter.yaml, referenced by the environment's Kafka.
    let groups = monitoring_rule_groups();
    let jmx: Value = serde_yaml::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/monitoring/jmx-exporter.yaml"))
            .unwrap(),
    )
    .unwrap();
    for env in ENVIRONMENTS {
        let docs = resources(env);
        let rules = of_kind(&docs, "PrometheusRule");
        assert_eq!(rules.len(), 1, "{env}: one PrometheusRule");
        assert_eq!(
            rules[0]["spec"]["groups"].as_sequence().unwrap(),
            &groups,
            "{env}: the PrometheusRule's groups are deploy/monitoring/rules'"
        );
        assert_eq!(
            rules[0]["metadata"]["labels"]["app.kubernetes.io/part-of"], "crypto-checkout",
            "{env}: the label a ruleSelector matches"
        );
        let kafka = of_kind(&docs, "Kafka");
        assert_eq!(kafka.len(), 1, "{env}: one Kafka");
        let reference = &kafka[0]["spec"]["kafka"]["metricsConfig"]["valueFrom"]["configMapKeyRef"];
        let map = of_kind(&docs, "ConfigMap")
            .into_iter()
            .find(|m| m["metadata"]["name"] == reference["name"])
            .unwrap_or_else(|| {
                panic!(
                    "{env}: the Kafka's metricsConfig names no rendered ConfigMap: {reference:?}"
                )
            });
        let text = map["data"][reference["key"].as_str().unwrap()]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{env}: no key {:?} in the metrics ConfigMap",
                    reference["key"]
                )
            });
        assert_eq!(
            serde_yaml::from_str::<Value>(text).unwrap(),
            jmx,
            "{env}: the brokers run deploy/monitoring/jmx-exporter.yaml"
        );
    }
}

/// Every `job="…"` an alert expression selects on.
fn jobs_the_rules_select() -> BTreeSet<String> {
    let job = regex::Regex::new(r#"job\s*=\s*"([^"]+)""#).unwrap();
    let mut jobs = BTreeSet::new();
    for group in monitoring_rule_groups() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            jobs.extend(job.captures_iter(expr).map(|c| c[1].to_string()));
        }
    }
    jobs
}

#[test]
fn the_pod_monitors_label_targets_as_the_rules_expect() {
    // The rules were written against deploy/monitoring/prometheus.yml's job names and its `service` label; the
    // Prometheus Operator would name the job "<namespace>/<PodMonitor>" and set no `service`, and every `up{job=…}`
    // alert would then watch nothing. Each PodMonitor relabels its targets to the local names.
    let relabelled = |monitor: &Value, label: &str| -> Option<String> {
        monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
            .as_sequence()?
            .iter()
            .find(|r| r["targetLabel"] == label && r["sourceLabels"].is_null())
            .and_then(|r| r["replacement"].as_str().map(str::to_string))
    };
    let wanted = jobs_the_rules_select();
    assert!(
        wanted.contains("kafka") && wanted.contains("checkout-services"),
        "{wanted:?}"
    );
    for env in ENVIRONMENTS {
        let docs = resources(env);
        let monitors = of_kind(&docs, "PodMonitor");
        let jobs: BTreeSet<String> = monitors
            .iter()
            .map(|m| {
                relabelled(m, "job")
                    .unwrap_or_else(|| panic!("{env}: PodMonitor {} sets no job", name(m)))
            })
            .collect();
        assert!(
            wanted.is_subset(&jobs),
            "{env}: the rules select jobs {wanted:?}; the PodMonitors make {jobs:?}"
        );
        for deployment in of_kind(&docs, "Deployment") {
            let service = name(deployment);
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            let monitor = monitors
                .iter()
                .find(|m| {
                    m["spec"]["selector"]["matchLabels"]
                        .as_mapping()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| &labels[k] == v)
                })
                .unwrap_or_else(|| panic!("{env}: {service}: no PodMonitor"));
            let job = if service == "bus-monitor" {
                "bus-monitor"
            } else {
                "checkout-services"
            };
            assert_eq!(
                relabelled(monitor, "job").as_deref(),
                Some(job),
                "{env}: {service}: job"
            );
            assert_eq!(
                relabelled(monitor, "service").as_deref(),
                Some(service),
                "{env}: {service}: the label `service`"
            );
        }
    }
}
