//! Integration tests of the consumer runtime against the real broker and database (`make up`). Each test makes
//! its own topics, groups and databases; none skips when the infrastructure is missing — it fails, naming it.

mod at_least_once;
mod eos_db;
mod eos_kafka;
mod helpers;
mod rebalance;
mod scheduling;
mod sigkill;
mod topics;
