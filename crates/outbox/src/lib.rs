//! The transactional outbox: the only path from the services' databases into `crypto-checkout.domain-events`.
//!
//! - [`writer`]: services call [`append`] / [`append_batch`] inside their own sqlx transaction. The event is
//!   validated and encoded by the `events` crate first, so an invalid event fails the caller's transaction; the
//!   publisher is woken by `NOTIFY` when the transaction commits.
//! - [`publisher`]: produces rows with the spec's producer settings, awaits the broker's acknowledgements per
//!   batch, then deletes the rows. Guarantees, per partition key: events reach Kafka in the commit order of the
//!   writers' transactions; nothing committed is skipped (there is no high-water mark to skip past: a row stays
//!   until it is acknowledged); duplicates happen only when a publisher dies between the broker's ack and the
//!   delete, and carry the same `event_id` header for consumers to drop.
//! - [`lease`]: replicas share the 64 key buckets through PostgreSQL advisory locks, so several publishers run at
//!   once and a key is only ever published by the replica owning its bucket.
//! - [`store`]: every SQL statement on the outbox tables, in one place; [`admin`]: backlog status and the
//!   release/drop of quarantined (poison) rows for operators.

pub mod admin;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod publisher;
pub mod store;
pub mod writer;

pub use error::OutboxError;
pub use publisher::{Publisher, PublisherSettings};
pub use writer::{NOTIFY_CHANNEL, append, append_batch};
