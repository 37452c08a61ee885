//! The audit service against the real broker and database: every generated event logged once with its
//! metadata, duplicates ignored, invalid records dead-lettered, the chain verified, tampering detected (as a
//! superuser), UPDATE/DELETE refused, and SIGKILLed processes losing and duplicating nothing.

mod helpers;

mod concurrent_verify;
mod log;
mod sigkill;
mod tamper;
