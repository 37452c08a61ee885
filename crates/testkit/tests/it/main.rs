//! Smoke tests of the foundation against the real broker and database that `make up` starts: the spec's producer
//! settings, per-key order through a consumer group, Kafka transactions, migrations, docker-compose agreeing
//! with the code, the Kubernetes manifests validated offline, and the monitoring rules and dashboards. One test
//! binary for the crate (see STYLE.md).

mod compose;
mod database;
mod k8s;
mod kafka;
mod monitoring;
