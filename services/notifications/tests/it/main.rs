//! The notifications service against the real broker, database, an SMTP server on a socket and HTTP receivers
//! on loopback: e-mails arrive with their headers and both parts, SMS in Twilio's shape, signed webhook
//! notifications; an SMTP outage pauses only e-mail; provider refusals and exhausted retries are dead-lettered
//! with their reason; duplicates, replays and SIGKILLs never send a notification twice where the service can
//! know it was sent; settlement's requests travel through the outbox to an inbox.

mod helpers;

mod delivery;
mod failures;
mod idempotency;
mod outage;
mod producers;
mod silent;
