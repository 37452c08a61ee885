//! Each test applies its own copy of the real `deploy/kafka/topics.yaml`, renamed into a unique namespace
//! (`cc-<12 hex>.domain-events`, still valid under the naming convention), so tests never see each other's
//! topics nor the real ones. What a test applied is read back with an independent admin client (not this
//! crate's [`topology::Cluster`]) and compared with the file. The namespace's topics are deleted at the end of a
//! passing test; a failing test leaves them for inspection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use topology::{Cluster, DesiredTopic, Topology, TopologyFile};

pub fn real_file_path() -> PathBuf {
    testkit::workspace_root().join(topology::DEFAULT_FILE)
}

/// The real file, parsed but not renamed.
pub fn real_file() -> TopologyFile {
    TopologyFile::load(&real_file_path()).expect("deploy/kafka/topics.yaml parses")
}

/// A unique `{system}` for one test.
pub fn unique_system() -> String {
    testkit::unique_name("cc")
}

/// `file` renamed into a fresh namespace and validated.
pub fn isolated(file: TopologyFile) -> Topology {
    file.with_system(&unique_system())
        .validate("<test copy>")
        .expect("the renamed file is valid")
}

/// `topology` with a change to its file, still in the same namespace.
pub fn changed(topology: &Topology, change: impl FnOnce(&mut TopologyFile)) -> Topology {
    let mut file = topology.file().clone();
    change(&mut file);
    file.validate("<changed test copy>")
        .expect("the changed file is valid")
}

/// The default (1-broker) cluster; panics loudly when it is unreachable.
pub fn cluster() -> Cluster {
    let bootstrap = &testkit::infra().bootstrap_servers;
    testkit::require_kafka(bootstrap);
    Cluster::connect(bootstrap).expect("admin client")
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// A topic as an independent client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub partitions: i32,
    /// Distinct replica counts over the partitions.
    pub replication_factors: BTreeSet<usize>,
    /// Topic-level overrides only.
    pub overrides: BTreeMap<String, String>,
}

/// Every topic of `{system}.` on the cluster at `bootstrap`.
pub async fn observe(bootstrap: &str, system: &str) -> BTreeMap<String, Observed> {
    let prefix = format!("{system}.");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("metadata client");
    let metadata =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(15)))
            .await
            .unwrap()
            .expect("metadata");
    let mut out = BTreeMap::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&prefix))
    {
        out.insert(
            topic.name().to_string(),
            Observed {
                partitions: topic.partitions().len() as i32,
                replication_factors: topic
                    .partitions()
                    .iter()
                    .map(|p| p.replicas().len())
                    .collect(),
                overrides: BTreeMap::new(),
            },
        );
    }
    let names: Vec<String> = out.keys().cloned().collect();
    let resources: Vec<ResourceSpecifier> =
        names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    if !resources.is_empty() {
        let results = admin(bootstrap)
            .describe_configs(&resources, &AdminOptions::new())
            .await
            .expect("describe");
        for (name, result) in names.iter().zip(results) {
            let config = result.unwrap_or_else(|code| panic!("describe configs of {name}: {code}"));
            out.get_mut(name).unwrap().overrides = config
                .entries
                .into_iter()
                .filter(|e| e.source == ConfigSource::DynamicTopic)
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
        }
    }
    out
}

/// Asserts that the cluster holds exactly the file's topics for `env`, each exactly as the file says: partition
/// count, replication factor of every partition, and the complete set of topic-level overrides.
pub async fn assert_cluster_matches(bootstrap: &str, topology: &Topology, env: &str) {
    let observed = observe(bootstrap, topology.system()).await;
    let desired = topology.desired(env).unwrap();
    let names: BTreeSet<&String> = desired.iter().map(|t| &t.name).collect();
    assert_eq!(
        observed.keys().collect::<BTreeSet<_>>(),
        names,
        "the namespace holds exactly the file's topics"
    );
    for topic in &desired {
        assert_topic_matches(&observed[&topic.name], topic);
    }
}

pub fn assert_topic_matches(observed: &Observed, topic: &DesiredTopic) {
    assert_eq!(
        observed.partitions, topic.partitions,
        "{}: partitions",
        topic.name
    );
    assert_eq!(
        observed.replication_factors,
        BTreeSet::from([topic.replication_factor as usize]),
        "{}: replication factor of every partition",
        topic.name
    );
    let want: BTreeMap<String, String> = topic
        .configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        observed.overrides, want,
        "{}: topic-level configs",
        topic.name
    );
}

/// Deletes the namespace's topics (test clean-up; the library never deletes).
pub async fn delete_namespace(bootstrap: &str, system: &str) {
    let names: Vec<String> = observe(bootstrap, system).await.into_keys().collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if !names.is_empty() {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        admin(bootstrap)
            .delete_topics(&names, &opts)
            .await
            .expect("delete test topics");
    }
}

/// Writes `topology` to a temporary YAML file for the command-line entry point.
pub fn write_temp(topology: &Topology) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yaml", topology.system()));
    std::fs::write(&path, topology.file().to_yaml()).expect("write the test copy");
    path
}
