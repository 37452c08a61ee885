//! Records in and out: an owned copy of a consumed Kafka message, and a record a handler asks to produce.
//!
//! Guarantees: a [`Record`] carries the message exactly as consumed (key, value and headers byte for byte,
//! topic, partition, offset, timestamp), which is what the DLQ forwards. The runtime is generic over raw records;
//! [`Record::decode_with`] is the one seam to a decoder, and [`Record::decode_event`] applies the event contract
//! (`events::decode`): every decode error — undecodable bytes, an invalid envelope, an unknown type or
//! version — becomes a [`HandlerError::Schema`] (no retry, straight to the DLQ).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers, OwnedHeaders};

use crate::error::HandlerError;

/// One consumed message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch (create or log-append time), when the broker reported one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Headers in order; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// An owned copy of `msg`, read from `topic`.
    pub fn from_message(msg: &BorrowedMessage<'_>, topic: Arc<str>) -> Record {
        Record {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers: msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Roughly the memory it holds: its bytes plus a fixed overhead for the struct and allocations.
    pub(crate) fn approx_size(&self) -> usize {
        let bytes = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        128 + bytes(&self.key)
            + bytes(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| 32 + k.len() + bytes(v))
                .sum::<usize>()
    }

    /// The first header called `name`, if it has a value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The first header called `name`, as text (invalid UTF-8 replaced), if it has a value.
    pub fn header_text(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The value, or a schema error when the record has none (a tombstone is not an event).
    pub fn value_bytes(&self) -> Result<&[u8], HandlerError> {
        self.value
            .as_deref()
            .ok_or_else(|| HandlerError::schema("the record has no value"))
    }

    /// Decodes the value with `decode` (e.g. `events::decode`); any failure is a schema error.
    pub fn decode_with<T, E>(
        &self,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, HandlerError>
    where
        E: Into<crate::error::BoxError>,
    {
        decode(self.value_bytes()?).map_err(|e| HandlerError::Schema(e.into()))
    }

    /// The event of the contract (decoded, upcast, validated) on a record keyed by the event's partition key (the
    /// spec's "Partition Key Selection"); any contract violation is a schema error, and so is a record keyed
    /// otherwise or not at all: it may sit in another partition than its aggregate's other events, so per-key
    /// order cannot hold for it.
    pub fn decode_event(&self) -> Result<events::Envelope, HandlerError> {
        let event = self.decode_with(events::decode)?;
        let expected = event.partition_key();
        match self.key.as_deref() {
            Some(key) if key == expected.as_bytes() => Ok(event),
            Some(key) => Err(HandlerError::schema(format!(
                "the record's key {:?} is not the partition key of its {} event ({expected}): it may sit in \
                 another partition than its aggregate's events, out of their order",
                String::from_utf8_lossy(&key[..key.len().min(128)]),
                event.event_type(),
            ))),
            None => Err(HandlerError::schema(format!(
                "the record has no key; its {} event's partition key is {expected}",
                event.event_type(),
            ))),
        }
    }

    /// [`Self::event_time`] in milliseconds since the epoch (what the lane's latency metric reads per record:
    /// without a date conversion for the Kafka timestamp).
    pub fn event_time_millis(&self) -> Option<i64> {
        self.envelope_time()
            .map(|t| t.timestamp_millis())
            .or(self.timestamp)
    }

    /// When the event happened, for the end-to-end latency metric: the envelope's `timestamp` field when the
    /// value is a JSON envelope, else the Kafka timestamp.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        self.envelope_time()
            .or_else(|| self.timestamp.and_then(DateTime::from_timestamp_millis))
    }

    /// The envelope's `timestamp` field, when the value is a JSON object that has one.
    fn envelope_time(&self) -> Option<DateTime<Utc>> {
        #[derive(serde::Deserialize)]
        struct EnvelopeTime {
            timestamp: DateTime<Utc>,
        }
        self.value
            .as_deref()
            .filter(|v| v.first() == Some(&b'{'))
            .and_then(|v| serde_json::from_slice::<EnvelopeTime>(v).ok())
            .map(|e| e.timestamp)
    }
}

/// A record a handler asks the runtime to produce (see [`crate::HandlerCtx::produce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub topic: String,
    /// Leave `None` to let the producer's partitioner (murmur2 of the key) choose.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl OutputRecord {
    pub fn new(
        topic: impl Into<String>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        OutputRecord {
            topic: topic.into(),
            partition: None,
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// Its key, value and headers in bytes: what the broker's record size limits count, but the framing.
    pub fn bytes(&self) -> usize {
        let bytes = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        bytes(&self.key)
            + bytes(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + bytes(v))
                .sum::<usize>()
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    pub(crate) fn owned_headers(&self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (key, value) in &self.headers {
            headers = headers.insert(rdkafka::message::Header {
                key,
                value: value.as_deref(),
            });
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp: Some(1_700_000_000_000),
            key: None,
            value: Some(value.to_vec()),
            headers: vec![
                ("event_id".into(), Some(b"abc".to_vec())),
                ("empty".into(), None),
            ],
        }
    }

    #[test]
    fn decode_errors_are_schema_errors() {
        let r = record(b"not json");
        let err = r
            .decode_with(|b| serde_json::from_slice::<serde_json::Value>(b))
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::Schema);
        let ok: serde_json::Value = record(b"{\"a\":1}")
            .decode_with(|b| serde_json::from_slice(b))
            .unwrap();
        assert_eq!(ok["a"], 1);
        let tombstone = Record {
            value: None,
            ..record(b"")
        };
        assert_eq!(
            tombstone.value_bytes().unwrap_err().class(),
            crate::ErrorClass::Schema
        );
    }

    #[test]
    fn contract_violations_are_schema_errors() {
        let err = record(br#"{"event_id":"evt_1"}"#)
            .decode_event()
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::Schema);
        let example = events::examples::example(events::EventType::InvoiceCreated);
        let bytes = events::encode(&example).unwrap();
        let keyed = |key: Option<&str>| Record {
            key: key.map(|k| k.as_bytes().to_vec()),
            ..record(&bytes)
        };
        let own_key = example.partition_key();
        assert_eq!(keyed(Some(&own_key)).decode_event().unwrap(), example);
        for wrong in [None, Some("mer_someone_else")] {
            let err = keyed(wrong).decode_event().unwrap_err();
            assert_eq!(err.class(), crate::ErrorClass::Schema, "key {wrong:?}");
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(cause.contains(&own_key), "{cause}");
        }
        assert_eq!(
            record(&bytes).event_time(),
            Some(example.timestamp()),
            "the latency clock is the envelope's"
        );
    }

    #[test]
    fn event_time_prefers_the_envelope_timestamp() {
        let r = record(br#"{"event_id":"x","timestamp":"2025-01-15T10:00:00Z","event_data":{}}"#);
        assert_eq!(
            r.event_time().unwrap().to_rfc3339(),
            "2025-01-15T10:00:00+00:00"
        );
        assert_eq!(r.event_time_millis(), Some(1_736_935_200_000));
        let r = record(b"opaque");
        assert_eq!(
            r.event_time().unwrap().timestamp_millis(),
            1_700_000_000_000
        );
        assert_eq!(r.event_time_millis(), Some(1_700_000_000_000));
    }

    #[test]
    fn headers_are_found_by_name() {
        let r = record(b"");
        assert_eq!(r.header("event_id"), Some(&b"abc"[..]));
        assert_eq!(r.header("empty"), None);
        assert_eq!(r.header("missing"), None);
    }
}
