//! The transactional outbox: the only path from the services' databases into Kafka, for records of every topic.
//!
//! - [`writer`]: services call [`append`] / [`append_batch`] inside their own sqlx transaction, with any
//!   [`events::Publishable`] record — domain events, the analytics topic's `CheckoutViewed`, every contract of
//!   the `events` crate. The record is validated and encoded by the `events` crate first, so an invalid record
//!   fails the caller's transaction; each row carries its record's own topic, key and headers; the publisher is
//!   woken by `NOTIFY` when the transaction commits.
//! - [`publisher`]: produces each row to its own topic with the spec's producer settings, awaits the broker's
//!   acknowledgements per batch, then deletes the rows. Guarantees, per key (a topic and partition key): records
//!   reach Kafka in the commit order of the writers' transactions; nothing committed is skipped (there is no
//!   high-water mark to skip past: a row stays until it is acknowledged); duplicates happen only when a
//!   publisher dies between the broker's ack and the delete, and carry the same `event_id` header for consumers
//!   to drop.
//! - [`lease`]: replicas share the 64 key buckets through PostgreSQL advisory locks, so several publishers run at
//!   once and a key is only ever published by the replica owning its bucket.
//! - [`checkout`]: the checkout page's producer API for the analytics topic (`record_view` in the caller's
//!   transaction, `record_views` in short transactions), with retry-safe derived record ids.
//! - [`store`]: every SQL statement on the outbox tables, in one place; [`admin`]: backlog status and the
//!   release/drop of quarantined (poison) rows for operators.

pub mod admin;
pub mod checkout;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod publisher;
pub mod store;
pub mod writer;

pub use error::OutboxError;
pub use publisher::{Publisher, PublisherSettings};
pub use writer::{NOTIFY_CHANNEL, append, append_batch};
