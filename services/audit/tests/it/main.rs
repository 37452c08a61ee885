//! The audit service against the real broker and database: every generated event logged once with its
//! metadata, duplicates ignored, invalid records dead-lettered, the chain verified, tampering detected (as a
//! superuser), UPDATE/DELETE refused, and SIGKILLed processes losing and duplicating nothing; `append_batch` on
//! its own (batches of any size, mixed with the single-row function, racing appenders); `verify` while appends
//! run never reports a break that is not there.

mod helpers;

mod batch;
mod concurrent_verify;
mod log;
mod sigkill;
mod tamper;
