//! `checkoutctl topics` against the real broker of `make up` (1 broker, development profile): apply creates
//! and configures exactly what the file says, re-applying is a no-op, and the guarded operations (partition
//! increase, partition decrease, topics missing from the file, hand-made overrides) behave as the spec's
//! "Topic Management" table asks. One test binary for the crate (see STYLE.md). The production profile on 3
//! brokers is in `tests/cluster.rs`.

mod apply;
mod command;
mod guards;
mod helpers;
mod names;
