//! The analytics service against the real broker and database: generated flows and checkout views aggregated
//! exactly once into the per-merchant daily figures the generator expects — through duplicates, invalid records
//! and SIGKILLed processes.

mod helpers;

mod aggregates;
mod sigkill;
