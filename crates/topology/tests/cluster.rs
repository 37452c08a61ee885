//! The production profile on the 3-broker cluster of `make up BROKERS=3` (RF 3, min ISR 2), and replication
//! factor drift, which only a multi-broker cluster can show.
//!
//! Too heavy for the default suite (three more JVMs): this test target has `test = false`, so `cargo test
//! --workspace` leaves it out, and `make test-cluster` starts the cluster and runs it by name:
//!
//! ```sh
//! BROKERS=3 SKIP_MIGRATE=1 ./deploy/local/up
//! cargo test -p topology --test cluster
//! ```
//!
//! They never skip: an unreachable cluster fails them, naming the address.

#[path = "it/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::BTreeSet;
use std::time::Duration;

use topology::{ApplyOptions, Change, Cluster, Disposition, Outcome, Plan, apply};

use helpers::{assert_cluster_matches, delete_namespace, isolated, observe, real_file};

fn three_brokers() -> Cluster {
    let infra = testkit::three_broker_infra();
    testkit::require_kafka(&infra.bootstrap_servers);
    Cluster::connect(&infra.bootstrap_servers).expect("admin client")
}

#[tokio::test]
async fn production_profile_on_three_brokers() {
    let cluster = three_brokers();
    let bootstrap = cluster.bootstrap_servers().to_string();
    let topology = isolated(real_file());

    let report = apply(&cluster, &topology, "production", &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.outcome(),
        Outcome::Applied,
        "{}\n{report}",
        report.plan
    );
    assert_cluster_matches(&bootstrap, &topology, "production").await;
    for (name, observed) in observe(&bootstrap, topology.system()).await {
        assert_eq!(observed.replication_factors, BTreeSet::from([3]), "{name}");
        assert_eq!(observed.overrides["min.insync.replicas"], "2", "{name}");
        assert_eq!(observed.overrides["compression.type"], "lz4", "{name}");
        assert_eq!(observed.overrides["segment.bytes"], "1073741824", "{name}");
    }

    let again = apply(&cluster, &topology, "production", &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(again.outcome(), Outcome::InSync, "{}", again.plan);

    delete_namespace(&bootstrap, topology.system()).await;
}

#[tokio::test]
async fn replication_factor_drift_is_reported_not_changed_and_the_printed_reassignment_fixes_it() {
    let cluster = three_brokers();
    let bootstrap = cluster.bootstrap_servers().to_string();
    let topology = isolated(real_file());

    // Created as development (RF 1, min ISR 1), then applied as production (RF 3, min ISR 2).
    apply(&cluster, &topology, "development", &ApplyOptions::default())
        .await
        .unwrap();
    let report = apply(&cluster, &topology, "production", &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::NeedsApproval, "{report}");
    assert_eq!(
        report.plan.count(Disposition::Manual),
        13,
        "{}",
        report.plan
    );
    assert!(
        report
            .plan
            .to_string()
            .contains("kafka-reassign-partitions.sh"),
        "{}",
        report.plan
    );
    // A broker answers DescribeConfigs from its copy of the metadata log, which may trail the controller that
    // applied the change by a moment on a freshly started cluster: read until every topic shows the applied
    // compression (bounded), then check everything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let observed = loop {
        let observed = observe(&bootstrap, topology.system()).await;
        let settled = observed
            .values()
            .all(|t| t.overrides.get("compression.type").map(String::as_str) == Some("lz4"));
        if settled || std::time::Instant::now() >= deadline {
            break observed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    for (name, topic) in &observed {
        assert_eq!(
            topic.replication_factors,
            BTreeSet::from([1]),
            "{name}: apply never changes RF"
        );
        assert_eq!(
            topic.overrides["min.insync.replicas"], "1",
            "{name}: held at the live RF, writes still work"
        );
        assert_eq!(
            topic.overrides["compression.type"], "lz4",
            "{name}: the other settings are applied"
        );
    }

    // The operator runs the printed reassignment for one topic ...
    let analytics = format!("{}.analytics-events", topology.system());
    let reassignment = report
        .pending
        .iter()
        .find_map(|c| match c {
            Change::ReplicationFactor {
                topic,
                reassignment,
                ..
            } if *topic == analytics => Some(reassignment.clone()),
            _ => None,
        })
        .expect("a reassignment for analytics-events");
    let json = std::env::temp_dir().join(format!("{}-reassign.json", topology.system()));
    std::fs::write(&json, &reassignment).unwrap();
    let output = kafka_reassign_partitions(&bootstrap, &json);
    assert!(
        output.status.success(),
        "kafka-reassign-partitions --execute failed: {output:?}"
    );

    // ... and once it completes, the topic has RF 3 and the next apply raises min ISR to the file's 2.
    let mut done = false;
    for _ in 0..120 {
        let observed = observe(&bootstrap, topology.system()).await;
        if observed[&analytics].replication_factors == BTreeSet::from([3]) {
            let plan = Plan::read(&cluster, &topology, "production").await.unwrap();
            if plan
                .changes
                .iter()
                .all(|c| c.topic() != analytics || c.disposition() == Disposition::Automatic)
            {
                done = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(done, "the reassignment did not complete within 60s");
    apply(&cluster, &topology, "production", &ApplyOptions::default())
        .await
        .unwrap();
    let observed = observe(&bootstrap, topology.system()).await;
    assert_eq!(observed[&analytics].overrides["min.insync.replicas"], "2");

    let _ = std::fs::remove_file(&json);
    delete_namespace(&bootstrap, topology.system()).await;
}

/// Kafka's own `kafka-reassign-partitions` from the jars `make up` cached, as the operator would run it.
/// (`deploy/local/kafka-cli` does not list this tool, so its class is started the same way kafka-cli does.)
fn kafka_reassign_partitions(bootstrap: &str, json: &std::path::Path) -> std::process::Output {
    let root = testkit::workspace_root();
    let libs = std::fs::read_dir(root.join(".dev/cache"))
        .expect(".dev/cache exists after make up")
        .filter_map(|e| e.ok().map(|e| e.path().join("libs")))
        .find(|libs| libs.join(".complete").exists())
        .expect("the Kafka jars cached by make up");
    std::process::Command::new("java")
        .arg("-Xmx256m")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            root.join("deploy/local/kafka/log4j2-tools.properties")
                .display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.reassign.ReassignPartitionsCommand")
        .args(["--bootstrap-server", bootstrap, "--reassignment-json-file"])
        .arg(json)
        .arg("--execute")
        .output()
        .expect("java runs")
}
