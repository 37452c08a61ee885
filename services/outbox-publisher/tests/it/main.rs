//! The outbox publisher's guarantees, each on the real broker and database: nothing lost (late commits
//! included), per-key commit order with several replicas and with replicas SIGKILLed mid-batch, duplicates
//! only after a crash, poison rows quarantined without blocking other keys, broker outages ridden out.

mod helpers;

mod crash;
mod guarantees;
mod outage;
mod poison;
