//! The settlement service against the real broker and database: generated flows settle exactly as the
//! generator's truth says (amounts, times, holds and releases, the ledger, the events), a replay into a fresh
//! group changes nothing, processes SIGKILLed while events flow and duplicates published again lose and
//! duplicate nothing, the database refuses an unbalanced or changed ledger.

mod helpers;

mod flows_e2e;
mod ledger;
mod sigkill;
