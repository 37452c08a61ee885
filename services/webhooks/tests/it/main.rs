//! The webhooks service against the real broker, database and HTTP receivers on loopback: generated flows arrive
//! signed and in order, the retry schedule, dead letters, 410, redirects, redeliver and recover, a hanging endpoint
//! that does not hold up the others, and processes SIGKILLed mid-delivery.

mod helpers;

mod delivery;
mod edges;
mod failures;
mod isolation;
mod sigkill;
