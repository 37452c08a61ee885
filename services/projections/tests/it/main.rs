//! The projections service against the real broker and database: generated checkout flows published through
//! the outbox and the publisher, read models compared with the generator's own truth; duplicates, the DLQ, the
//! rebuild and SIGKILLed processes; `apply_batch` against the database alone, compared with the truth and with
//! the per-event SQL it replaced (`oracle`). Each test has its own database, topics and consumer group.

mod helpers;
mod oracle;

mod batches;
mod dlq;
mod duplicates;
mod edges;
mod flows_e2e;
mod rebuild;
mod sigkill;
