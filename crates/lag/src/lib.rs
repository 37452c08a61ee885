//! Consumer-group lag from the broker's view, shared by `bus-monitor` (Prometheus) and `checkoutctl groups`.
//!
//! - [`seconds`]: lag in seconds, kafka-lag-exporter's interpolation over a bounded table of end-offset samples;
//! - [`status`]: Burrow's status rules over a window of commit observations;
//! - [`tracker`]: the state between polls, turning a [`tracker::Snapshot`] into a [`tracker::Report`];
//! - [`read`]: reading a snapshot — committed offsets (Kafka's, without joining the group, or the mode (b)
//!   `consumer_offsets` table), watermarks and membership — with every blocking librdkafka call off the async
//!   runtime.
//!
//! Guarantees: the pure modules decide everything (tested by tables); [`read`] only gathers facts, and a group
//! that cannot be read is an error *in* the snapshot (status ERR), never a failed poll — only an unreachable
//! broker fails [`read::Reader::snapshot`].

pub mod read;
pub mod seconds;
pub mod status;
pub mod tracker;

pub use read::{LagError, Reader, platform_groups};
pub use status::Status;
pub use tracker::{
    GroupReport, GroupSpec, OffsetSource, PartitionReport, Report, Tracker, TrackerSettings,
};
