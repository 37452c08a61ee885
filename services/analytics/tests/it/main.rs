//! The analytics service against the real broker and database: generated flows and checkout views aggregated
//! exactly once into the per-merchant daily figures the generator expects — through duplicates, invalid records
//! and SIGKILLed processes; and `aggregate_batch` on its own (batches of any size, repeats, an unknown invoice).

mod helpers;

mod aggregates;
mod batch;
mod producers;
mod sigkill;
