//! What the live cluster has, read with rdkafka's AdminClient: brokers, and for each topic its partitions with
//! their replica lists (metadata) and its configs with their source (DescribeConfigs).
//!
//! Metadata requests are blocking in librdkafka, so they run on `spawn_blocking`; admin requests are futures
//! driven by the admin client's own thread. Every request has a deadline ([`Cluster::timeout`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use crate::error::TopologyError;

/// A connection to one cluster.
#[derive(Clone)]
pub struct Cluster {
    admin: Arc<AdminClient<DefaultClientContext>>,
    bootstrap_servers: String,
    timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .finish()
    }
}

/// A partition as metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePartition {
    pub id: i32,
    /// Broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// -1 while the partition has no leader.
    pub leader: i32,
}

/// A config value of a topic and whether it is a topic-level override (as opposed to a broker default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    pub value: Option<String>,
    pub is_override: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTopic {
    pub name: String,
    /// Sorted by id.
    pub partitions: Vec<LivePartition>,
    /// Filled for the topics that were asked for in [`Cluster::state`]; empty for the others.
    pub configs: BTreeMap<String, LiveConfig>,
    /// Set while metadata cannot describe the topic (just created, leader moving): retry later.
    pub error: Option<String>,
}

impl LiveTopic {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The distinct replica counts of the partitions (one value when the topic is uniform).
    pub fn replication_factors(&self) -> Vec<i32> {
        let mut factors: Vec<i32> = self
            .partitions
            .iter()
            .map(|p| p.replicas.len() as i32)
            .collect();
        factors.sort_unstable();
        factors.dedup();
        factors
    }

    /// The smallest replica count of any partition.
    pub fn min_replication_factor(&self) -> i32 {
        self.partitions
            .iter()
            .map(|p| p.replicas.len() as i32)
            .min()
            .unwrap_or(0)
    }

    pub fn all_partitions_have_a_leader(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.iter().all(|p| p.leader >= 0)
    }

    /// The topic-level overrides only.
    pub fn overrides(&self) -> impl Iterator<Item = (&str, &str)> {
        self.configs
            .iter()
            .filter(|(_, c)| c.is_override)
            .filter_map(|(k, c)| c.value.as_deref().map(|v| (k.as_str(), v)))
    }
}

/// The cluster at one moment.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// Broker ids, sorted.
    pub brokers: Vec<i32>,
    pub topics: BTreeMap<String, LiveTopic>,
    /// Config name → value of the broker with the lowest id (static and dynamic defaults).
    pub broker_defaults: BTreeMap<String, String>,
}

impl Cluster {
    pub fn connect(bootstrap_servers: &str) -> Result<Cluster, TopologyError> {
        Self::connect_with(bootstrap_servers, std::iter::empty())
    }

    /// [`Cluster::connect`] with extra librdkafka client properties (`security.protocol`, `sasl.*`, `ssl.*`)
    /// for a cluster that requires authentication or TLS.
    pub fn connect_with<'a>(
        bootstrap_servers: &str,
        properties: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Cluster, TopologyError> {
        let mut config = ClientConfig::new();
        for (key, value) in properties {
            config.set(key, value);
        }
        let admin = config
            .set("bootstrap.servers", bootstrap_servers)
            // Admin requests only; errors surface through results, not librdkafka's log.
            .set("log_level", "3")
            .create()
            .map_err(TopologyError::kafka("client creation"))?;
        Ok(Cluster {
            admin: Arc::new(admin),
            bootstrap_servers: bootstrap_servers.to_string(),
            timeout: Duration::from_secs(30),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn admin(&self) -> &AdminClient<DefaultClientContext> {
        &self.admin
    }

    pub(crate) fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Brokers and every topic; the configs of the topics named in `describe` (when they exist).
    pub async fn state<'a>(
        &self,
        describe: impl IntoIterator<Item = &'a str>,
    ) -> Result<ClusterState, TopologyError> {
        let (brokers, mut topics) = self.metadata().await?;
        let readable = |n: &&str| {
            topics
                .get(*n)
                .is_some_and(|t: &LiveTopic| t.error.is_none())
        };
        let names: Vec<&str> = describe.into_iter().filter(readable).collect();
        let mut resources: Vec<ResourceSpecifier> =
            names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
        let first_broker = brokers.first().copied();
        resources.extend(first_broker.map(ResourceSpecifier::Broker));

        let mut broker_defaults = BTreeMap::new();
        if !resources.is_empty() {
            let results = self
                .admin
                .describe_configs(&resources, &self.options())
                .await
                .map_err(TopologyError::kafka("describe configs"))?;
            for (resource, result) in resources.iter().zip(results) {
                let config = result.map_err(|code| TopologyError::TopicOperation {
                    topic: match resource {
                        ResourceSpecifier::Topic(name) => name.to_string(),
                        other => format!("{other:?}"),
                    },
                    operation: "describe the configs of",
                    code,
                })?;
                match resource {
                    ResourceSpecifier::Topic(name) => {
                        let topic = topics
                            .get_mut(*name)
                            .expect("only existing topics are described");
                        topic.configs = config
                            .entries
                            .into_iter()
                            .map(|e| {
                                let is_override = e.source == ConfigSource::DynamicTopic;
                                (
                                    e.name,
                                    LiveConfig {
                                        value: e.value,
                                        is_override,
                                    },
                                )
                            })
                            .collect();
                    }
                    _ => {
                        broker_defaults = config
                            .entries
                            .into_iter()
                            .filter_map(|e| Some((e.name, e.value?)))
                            .collect();
                    }
                }
            }
        }
        Ok(ClusterState {
            brokers,
            topics,
            broker_defaults,
        })
    }

    async fn metadata(&self) -> Result<(Vec<i32>, BTreeMap<String, LiveTopic>), TopologyError> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.timeout;
        let metadata =
            tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
                .await
                .expect("the metadata request does not panic")
                .map_err(TopologyError::kafka("metadata request"))?;
        let mut brokers: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
        brokers.sort_unstable();
        let mut topics = BTreeMap::new();
        for topic in metadata.topics() {
            // Deleted between listing and describing: absent.
            if topic.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                continue;
            }
            let mut partitions: Vec<LivePartition> = topic
                .partitions()
                .iter()
                .map(|p| LivePartition {
                    id: p.id(),
                    replicas: p.replicas().to_vec(),
                    leader: p.leader(),
                })
                .collect();
            partitions.sort_by_key(|p| p.id);
            let name = topic.name().to_string();
            let error = topic
                .error()
                .map(|code| RDKafkaErrorCode::from(code).to_string());
            topics.insert(
                name.clone(),
                LiveTopic {
                    name,
                    partitions,
                    configs: BTreeMap::new(),
                    error,
                },
            );
        }
        Ok((brokers, topics))
    }
}
