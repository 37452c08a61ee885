//! Smoke tests of the foundation against the real broker and database that `make up` starts: the spec's producer
//! settings, per-key order through a consumer group, Kafka transactions, migrations, and docker-compose agreeing
//! with the code. One test binary for the crate (see STYLE.md).

mod compose;
mod database;
mod kafka;
