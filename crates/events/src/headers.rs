//! Kafka header names derived from the envelope (see [`crate::Envelope::kafka_headers`]).
//!
//! Guarantees: headers repeat envelope fields so that brokers' tooling, the DLQ and consumers can route and
//! de-duplicate without parsing the value; the value (the envelope) stays the source of truth. Names are the
//! envelope's field names, plus the conventional `content-type` and W3C `traceparent`.

/// Event id, for de-duplication.
pub const EVENT_ID: &str = "event_id";
/// Event type name.
pub const EVENT_TYPE: &str = "event_type";
/// Event version, as a decimal string.
pub const EVENT_VERSION: &str = "event_version";
/// Aggregate type name.
pub const AGGREGATE_TYPE: &str = "aggregate_type";
/// Aggregate id.
pub const AGGREGATE_ID: &str = "aggregate_id";
/// Correlation id, when the envelope has one.
pub const CORRELATION_ID: &str = "correlation_id";
/// Causation id, when the envelope has one.
pub const CAUSATION_ID: &str = "causation_id";
/// Media type of the value.
pub const CONTENT_TYPE: &str = "content-type";
/// W3C trace context, when the metadata has one.
pub const TRACEPARENT: &str = "traceparent";

/// The value of [`CONTENT_TYPE`]: the envelope is UTF-8 JSON.
pub const CONTENT_TYPE_JSON: &str = "application/json";
