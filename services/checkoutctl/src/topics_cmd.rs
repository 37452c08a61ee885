//! `checkoutctl topics …`: topics and cluster settings as code (deploy/kafka/topics.yaml), by the `topology`
//! crate. Plan and apply talk to the cluster at KAFKA_BOOTSTRAP_SERVERS, with the client properties a service
//! would use (`CHECKOUT__KAFKA__CLIENT__…`: SASL, TLS); export only reads the file.
//!
//! Guarantees (see `topology`): plan changes nothing; apply creates missing topics with every config and
//! alters configs automatically, increases partitions only with approval, never decreases them, never deletes
//! a topic and never changes a replication factor itself. Exit codes are listed in `--help`.

use anyhow::Context;

use crate::{Io, Run, block_on};

/// Topics and cluster settings as code: plan, apply, export (deploy/kafka/topics.yaml).
#[derive(Debug, clap::Args)]
#[command(after_long_help = topology::EXIT_CODES_HELP)]
pub struct TopicsArgs {
    #[command(subcommand)]
    command: topology::TopicsCommand,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", global = true)]
    bootstrap_servers: Option<String>,
}

impl Run for TopicsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let needs_cluster = !matches!(self.command, topology::TopicsCommand::Export { .. });
        let bootstrap = match self.bootstrap_servers {
            Some(servers) => servers,
            None if needs_cluster => {
                anyhow::bail!(
                    "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-server or source .dev/env)"
                )
            }
            None => String::new(),
        };
        // The credentials a service would use: CHECKOUT__KAFKA__CLIENT__SASL__USERNAME is sasl.username.
        let properties: Vec<(String, String)> =
            service_kit::config::client_properties_from(std::env::vars())
                .context("CHECKOUT__KAFKA__CLIENT__* properties")?
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let result = block_on(async move {
            topology::run(self.command, &bootstrap, &properties)
                .await
                .context("topics command failed")
        });
        match result {
            Ok(outcome) => Ok(outcome.code()),
            // The topics commands document exit code 1 for errors and refused changes (2 is clap's usage error).
            Err(err) => {
                writeln!(io.stderr, "error: {err:#}")?;
                Ok(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// deploy/k8s/overlays/ENV/kafka-topics.yaml is checked in (kustomize needs no build) and must stay exactly
    /// `checkoutctl topics export --format strimzi --env ENV` (cluster label: the file's `system`, which is the
    /// overlays' Kafka resource; no namespace: the overlay sets it). `make deploy-topics` rewrites them.
    #[test]
    fn the_checked_in_kafka_topics_are_the_export_of_each_environment() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let topology = topology::Topology::load(&root.join(topology::DEFAULT_FILE)).unwrap();
        for env in ["development", "staging", "production", "dr"] {
            let options = topology::StrimziOptions {
                cluster: topology.system().to_string(),
                namespace: None,
                api_version: Default::default(),
            };
            let exported = topology::export_strimzi(&topology, env, &options).unwrap();
            let path = root.join(format!("deploy/k8s/overlays/{env}/kafka-topics.yaml"));
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == exported,
                "{} is not `checkoutctl topics export --format strimzi --env {env}`: run `make deploy-topics`",
                path.display()
            );
        }
    }
}
