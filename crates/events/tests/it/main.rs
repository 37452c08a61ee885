//! Integration tests of the event contract, compiled as one binary.
//!
//! - `contract`: the spec's examples and every rejection the issue lists, through the public API.
//! - `roundtrip`: property tests, one per event type: encode/decode round trips, relaxed input, keys.
//! - `schemas`: committed JSON Schemas are current, valid draft 2020-12, and agree with the codec.
//! - `strategies`: proptest generators of valid envelopes of every type; `helpers`: small utilities.

mod contract;
mod helpers;
mod roundtrip;
mod schemas;
mod strategies;
