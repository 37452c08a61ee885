//! The on-disk format of `checkoutctl topics backup` (version 1, decision 0041): what a backup directory holds,
//! how it is written so a crash never leaves it inconsistent, and how it is read back and checked.
//!
//! Layout, one directory per topic under the backup root:
//! ```text
//! DIR/<topic>/manifest.json                     the checkpoint: per partition the next source offset to copy,
//!                                               the segments and their committed lengths, gaps, group positions
//! DIR/<topic>/p<partition>-<first offset, 20 digits>.jsonl   a segment: one JSON object per line
//! ```
//! A segment line is one record: `{"partition":P,"offset":O,"timestamp":MS,"timestamp_type":"create",
//! "key":B64|null,"value":B64|null,"headers":[{"name":N,"value":B64|null}]}` (standard base64 with padding).
//!
//! Guarantees:
//! - **The manifest is the truth.** Only the bytes a manifest lists (`Segment::bytes`) belong to the backup;
//!   segment data is fsynced before the manifest that counts it is written (tmp file, fsync, rename, fsync of
//!   the directory), so a crash at any point leaves the previous manifest with fully durable segments. Bytes
//!   after a segment's committed length, and files no manifest lists, are leftovers of a crash: [`TopicDir::open`]
//!   truncates / removes them, and the backup copies those records again from `next_offset` — no gap, no
//!   duplicate.
//! - **Checked on reading.** [`read_segment`] refuses a line that does not parse, an offset out of order or out of
//!   the segment's range, and a count or length that differs from the manifest (a missing or truncated file is
//!   a [`FormatError`], never a silently shorter restore).
//! - **Versioned.** `format` and `version` are checked; an unknown version is refused rather than misread.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// `format` of every manifest.
pub const FORMAT: &str = "checkoutctl-topic-backup";
/// The version this code writes and reads.
pub const VERSION: u32 = 1;
/// The manifest's file name inside a topic's directory.
pub const MANIFEST: &str = "manifest.json";

/// Why a backup cannot be read or continued.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a backup manifest: {why}")]
    Manifest { path: PathBuf, why: String },
    #[error("{path}: format {format} version {version} is not {FORMAT} version {VERSION}")]
    Version {
        path: PathBuf,
        format: String,
        version: u32,
    },
    #[error("{path} line {line}: {why}")]
    Segment {
        path: PathBuf,
        line: u64,
        why: String,
    },
    #[error("{topic}/{partition}: {why}")]
    Gap {
        topic: String,
        partition: i32,
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FormatError + '_ {
    move |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One header of a record; `value` `None` is a null header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    #[serde(with = "b64")]
    pub value: Option<Vec<u8>>,
}

/// One record as backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub partition: i32,
    /// Its offset in the source topic.
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// `create` or `log_append` (the source topic's timestamp type).
    pub timestamp_type: String,
    #[serde(with = "b64")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "b64")]
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

mod b64 {
    use super::{Engine, STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A segment file of one partition, as far as the manifest counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// File name inside the topic's directory.
    pub file: String,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// Committed length: bytes after it are not part of the backup.
    pub bytes: u64,
}

/// Source offsets the backup could not copy (removed by retention before it read them): `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
}

/// One partition's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The next source offset to copy: every committed record below it (and at or after the first copied one)
    /// is in the segments, except the [`Gap`]s.
    pub next_offset: i64,
    pub records: u64,
    pub gaps: Vec<Gap>,
    pub segments: Vec<Segment>,
}

/// The checkpoint of one topic's backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub topic: String,
    pub partitions: i32,
    /// When this manifest was written (ms since the epoch).
    pub updated_at_ms: i64,
    /// Per partition.
    pub state: BTreeMap<i32, PartitionState>,
    /// The Kafka-committed positions (next offset to read) of the groups consuming the topic, per partition, as
    /// read at `groups_at_ms`: a topic's deletion removes its committed offsets, so restore needs this copy.
    pub groups: BTreeMap<String, BTreeMap<i32, i64>>,
    pub groups_at_ms: Option<i64>,
}

impl Manifest {
    pub fn new(topic: &str, partitions: i32) -> Self {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            topic: topic.into(),
            partitions,
            updated_at_ms: 0,
            state: (0..partitions)
                .map(|p| (p, PartitionState::default()))
                .collect(),
            groups: BTreeMap::new(),
            groups_at_ms: None,
        }
    }

    /// Records in the backup, all partitions.
    pub fn records(&self) -> u64 {
        self.state.values().map(|s| s.records).sum()
    }
}

/// The file name of the segment of `partition` starting at `first_offset`.
pub fn segment_name(partition: i32, first_offset: i64) -> String {
    format!("p{partition}-{first_offset:020}.jsonl")
}

/// The directory of `topic` under the backup root (topic names are `[a-zA-Z0-9._-]`, safe as a path).
pub fn topic_dir(root: &Path, topic: &str) -> PathBuf {
    root.join(topic)
}

/// Reads and checks the manifest of `dir` (`Ok(None)`: there is none yet).
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, FormatError> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| FormatError::Manifest {
            path: path.clone(),
            why: e.to_string(),
        })?;
    let format = value["format"].as_str().unwrap_or_default().to_string();
    let version = value["version"].as_u64().unwrap_or_default() as u32;
    if format != FORMAT || version != VERSION {
        return Err(FormatError::Version {
            path,
            format,
            version,
        });
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| FormatError::Manifest {
        path: path.clone(),
        why: e.to_string(),
    })?;
    check_manifest(&manifest).map_err(|why| FormatError::Manifest { path, why })?;
    Ok(Some(manifest))
}

/// The manifest's own consistency: segments in order, inside `next_offset`, counts adding up.
fn check_manifest(m: &Manifest) -> Result<(), String> {
    if m.state.len() != m.partitions.max(0) as usize || m.state.keys().copied().ne(0..m.partitions)
    {
        return Err(format!(
            "{} partition(s) declared, states for {:?}",
            m.partitions,
            m.state.keys().collect::<Vec<_>>()
        ));
    }
    for (p, s) in &m.state {
        let mut previous: Option<i64> = None;
        for seg in &s.segments {
            if seg.file != segment_name(*p, seg.first_offset)
                || seg.first_offset > seg.last_offset
                || seg.records == 0
                || seg.records as i64 > seg.last_offset - seg.first_offset + 1
                || previous.is_some_and(|prev| seg.first_offset <= prev)
                || seg.last_offset >= s.next_offset
            {
                return Err(format!("partition {p}: inconsistent segment {seg:?}"));
            }
            previous = Some(seg.last_offset);
        }
        if s.segments.iter().map(|g| g.records).sum::<u64>() != s.records {
            return Err(format!(
                "partition {p}: {} records counted, segments hold another number",
                s.records
            ));
        }
    }
    Ok(())
}

/// Writes `manifest` into `dir` atomically: a temporary file, fsync, rename over the old one, fsync of `dir`.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), FormatError> {
    let path = dir.join(MANIFEST);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let text = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&text).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// One line of a segment, newline included.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).expect("a record serialises");
    line.push(b'\n');
    line
}

/// Appends records to the segments of one topic's partitions and keeps the manifest that counts them.
pub struct TopicDir {
    dir: PathBuf,
    pub manifest: Manifest,
    /// Per partition, the open last segment (index into its `segments`, writer, uncommitted records/bytes).
    open: BTreeMap<i32, OpenSegment>,
    segment_bytes: u64,
    /// Records appended since the last commit.
    uncommitted: u64,
}

struct OpenSegment {
    writer: BufWriter<File>,
    pending: Segment,
    /// `pending` is already the last entry of the manifest's segments (an existing segment being continued).
    listed: bool,
    /// The partition's `next_offset` once the pending records are committed.
    next_offset: i64,
    records: u64,
}

impl TopicDir {
    /// Opens (or starts) the backup of `topic` with `partitions` partitions in `dir`, undoing what a crash
    /// after the last manifest left: segment bytes past their committed length are cut, unlisted segment files
    /// removed. A backup of another partition count is refused (the topic was re-created differently).
    pub fn open(
        dir: &Path,
        topic: &str,
        partitions: i32,
        segment_bytes: u64,
    ) -> Result<Self, FormatError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let manifest = match read_manifest(dir)? {
            Some(m) if m.topic != topic || m.partitions != partitions => {
                return Err(FormatError::Manifest {
                    path: dir.join(MANIFEST),
                    why: format!(
                        "it is the backup of {} with {} partition(s), not of {topic} with {partitions}: \
                         back up into another directory",
                        m.topic, m.partitions
                    ),
                });
            }
            Some(m) => m,
            None => Manifest::new(topic, partitions),
        };
        let listed: BTreeMap<&str, u64> = manifest
            .state
            .values()
            .flat_map(|s| s.segments.iter().map(|g| (g.file.as_str(), g.bytes)))
            .collect();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.ends_with(".jsonl") {
                continue;
            }
            let path = entry.path();
            match listed.get(name.as_str()) {
                None => fs::remove_file(&path).map_err(io(&path))?,
                Some(&bytes) => {
                    let len = entry.metadata().map_err(io(&path))?.len();
                    if len < bytes {
                        return Err(FormatError::Segment {
                            path,
                            line: 0,
                            why: format!("{len} bytes, the manifest counts {bytes}: data was lost"),
                        });
                    }
                    if len > bytes {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io(&path))?;
                        f.set_len(bytes).map_err(io(&path))?;
                        f.sync_all().map_err(io(&path))?;
                    }
                }
            }
        }
        for s in manifest.state.values() {
            for seg in &s.segments {
                if !dir.join(&seg.file).exists() {
                    return Err(FormatError::Segment {
                        path: dir.join(&seg.file),
                        line: 0,
                        why: "listed in the manifest but missing".into(),
                    });
                }
            }
        }
        Ok(TopicDir {
            dir: dir.to_path_buf(),
            manifest,
            open: BTreeMap::new(),
            segment_bytes,
            uncommitted: 0,
        })
    }

    /// The next source offset to copy of `partition`, counting records appended but not yet committed.
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.open.get(&partition).map_or_else(
            || {
                self.manifest
                    .state
                    .get(&partition)
                    .map_or(0, |s| s.next_offset)
            },
            |o| o.next_offset,
        )
    }

    /// Notes that source offsets `[from, to)` of `partition` were removed before the backup read them.
    pub fn gap(&mut self, partition: i32, from: i64, to: i64) {
        if let Some(s) = self.manifest.state.get_mut(&partition) {
            s.gaps.push(Gap { from, to });
            if s.next_offset < to {
                s.next_offset = to;
            }
        }
        if let Some(o) = self.open.get_mut(&partition) {
            o.next_offset = o.next_offset.max(to);
        }
    }

    /// Moves `partition`'s next offset to `next` when it is past the last record (transaction markers at the
    /// end of a partition have offsets but no record).
    pub fn advance(&mut self, partition: i32, next: i64) {
        match self.open.get_mut(&partition) {
            Some(o) => o.next_offset = o.next_offset.max(next),
            None => {
                if let Some(s) = self.manifest.state.get_mut(&partition) {
                    s.next_offset = s.next_offset.max(next);
                }
            }
        }
    }

    /// Appends `record` (buffered; durable at the next [`TopicDir::commit`]). Records of a partition must come
    /// in increasing offsets at or after its next offset; older ones (re-delivered) are skipped (`false`).
    pub fn append(&mut self, record: &Record) -> Result<bool, FormatError> {
        let p = record.partition;
        if record.offset < self.next_offset(p) {
            return Ok(false);
        }
        let full = self
            .open
            .get(&p)
            .is_some_and(|o| o.pending.bytes >= self.segment_bytes);
        if full {
            self.close(p)?;
        }
        if !self.open.contains_key(&p) {
            let state = self.manifest.state.get(&p).cloned().unwrap_or_default();
            let reuse = state
                .segments
                .last()
                .filter(|s| s.bytes < self.segment_bytes)
                .cloned();
            let (segment, listed) = match reuse {
                Some(s) => (s, true),
                None => (
                    Segment {
                        file: segment_name(p, record.offset),
                        first_offset: record.offset,
                        last_offset: record.offset,
                        records: 0,
                        bytes: 0,
                    },
                    false,
                ),
            };
            let path = self.dir.join(&segment.file);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.open.insert(
                p,
                OpenSegment {
                    writer: BufWriter::with_capacity(1 << 20, file),
                    pending: segment,
                    listed,
                    next_offset: state.next_offset,
                    records: 0,
                },
            );
        }
        let o = self.open.get_mut(&p).expect("opened above");
        let line = encode(record);
        let path = self.dir.join(&o.pending.file);
        o.writer.write_all(&line).map_err(io(&path))?;
        o.pending.bytes += line.len() as u64;
        o.pending.records += 1;
        o.pending.last_offset = record.offset;
        o.records += 1;
        o.next_offset = record.offset + 1;
        self.uncommitted += 1;
        Ok(true)
    }

    /// Flushes and fsyncs the segment of `p` and folds it into the in-memory manifest (not yet written).
    fn close(&mut self, p: i32) -> Result<(), FormatError> {
        let Some(mut o) = self.open.remove(&p) else {
            return Ok(());
        };
        let path = self.dir.join(&o.pending.file);
        o.writer.flush().map_err(io(&path))?;
        o.writer.get_ref().sync_data().map_err(io(&path))?;
        let state = self.manifest.state.entry(p).or_default();
        if o.listed {
            *state.segments.last_mut().expect("listed") = o.pending;
        } else if o.pending.records > 0 {
            state.segments.push(o.pending);
        }
        state.records += o.records;
        state.next_offset = state.next_offset.max(o.next_offset);
        Ok(())
    }

    /// Makes everything appended durable: segments flushed and fsynced, then the manifest written atomically.
    /// Returns the records committed by this call.
    pub fn commit(&mut self, now_ms: i64) -> Result<u64, FormatError> {
        let open: Vec<i32> = self.open.keys().copied().collect();
        for p in open {
            self.close(p)?;
        }
        self.manifest.updated_at_ms = now_ms;
        write_manifest(&self.dir, &self.manifest)?;
        Ok(std::mem::take(&mut self.uncommitted))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads one segment as the manifest counts it, checking every line; calls `each` per record in order.
pub fn read_segment(
    dir: &Path,
    partition: i32,
    segment: &Segment,
    mut each: impl FnMut(Record) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let path = dir.join(&segment.file);
    let file = File::open(&path).map_err(io(&path))?;
    let len = file.metadata().map_err(io(&path))?.len();
    if len < segment.bytes {
        return Err(FormatError::Segment {
            path,
            line: 0,
            why: format!(
                "{len} bytes, the manifest counts {}: truncated",
                segment.bytes
            ),
        });
    }
    let mut reader = BufReader::new(file.take(segment.bytes));
    let mut line = Vec::new();
    let (mut n, mut previous) = (0u64, None::<i64>);
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io(&path))?;
        if read == 0 {
            break;
        }
        n += 1;
        let bad = |why: String| FormatError::Segment {
            path: path.clone(),
            line: n,
            why,
        };
        if line.last() != Some(&b'\n') {
            return Err(bad("incomplete last line".into()));
        }
        let record: Record = serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))?;
        if record.partition != partition {
            return Err(bad(format!(
                "a record of partition {} in a segment of partition {partition}",
                record.partition
            )));
        }
        if previous.is_some_and(|p| record.offset <= p)
            || record.offset < segment.first_offset
            || record.offset > segment.last_offset
        {
            return Err(bad(format!(
                "offset {} out of order (previous {previous:?}, segment {}..={})",
                record.offset, segment.first_offset, segment.last_offset
            )));
        }
        previous = Some(record.offset);
        each(record)?;
    }
    if n != segment.records || previous != Some(segment.last_offset) {
        return Err(FormatError::Segment {
            path,
            line: n,
            why: format!(
                "{n} records ending at {previous:?}, the manifest counts {} ending at {}",
                segment.records, segment.last_offset
            ),
        });
    }
    Ok(())
}

/// Reads every record of `partition` in offset order.
pub fn read_partition(
    dir: &Path,
    manifest: &Manifest,
    partition: i32,
    mut each: impl FnMut(Record) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let Some(state) = manifest.state.get(&partition) else {
        return Ok(());
    };
    for seg in &state.segments {
        read_segment(dir, partition, seg, &mut each)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            partition,
            offset,
            timestamp: Some(1_700_000_000_000 + offset),
            timestamp_type: "create".into(),
            key: Some(format!("k{offset}").into_bytes()),
            value: (offset % 5 != 0).then(|| vec![0, 159, 146, 150, offset as u8]),
            headers: vec![
                Header {
                    name: "event-id".into(),
                    value: Some(b"e".to_vec()),
                },
                Header {
                    name: "null".into(),
                    value: None,
                },
            ],
        }
    }

    fn all(dir: &Path) -> Vec<Record> {
        let m = read_manifest(dir).unwrap().unwrap();
        let mut out = Vec::new();
        for p in 0..m.partitions {
            read_partition(dir, &m, p, |r| {
                out.push(r);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "backup-format-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_line_round_trips_bytes_nulls_and_headers() {
        let r = record(3, 10);
        let line = encode(&r);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        let null = record(0, 5);
        assert_eq!(null.value, None);
        assert_eq!(
            serde_json::from_slice::<Record>(&encode(&null)).unwrap(),
            null
        );
    }

    #[test]
    fn segments_roll_and_read_back_in_order_with_gaps_in_offsets() {
        let dir = tempdir("roll");
        let mut t = TopicDir::open(&dir, "t", 2, 300).unwrap();
        let mut expected = Vec::new();
        // Offsets with holes (transaction markers), two partitions interleaved.
        for o in [0, 1, 3, 4, 6, 7, 8, 10] {
            for p in 0..2 {
                let r = record(p, o);
                assert!(t.append(&r).unwrap());
                expected.push(r);
            }
        }
        assert_eq!(t.commit(1).unwrap(), 16);
        let m = read_manifest(&dir).unwrap().unwrap();
        assert!(m.state[&0].segments.len() > 1, "{m:?}");
        assert_eq!(m.state[&0].next_offset, 11);
        expected.sort_by_key(|r| (r.partition, r.offset));
        assert_eq!(all(&dir), expected);
        // Re-delivered records are skipped.
        assert!(!t.append(&record(0, 8)).unwrap());
    }

    #[test]
    fn a_crash_before_the_manifest_loses_nothing_and_doubles_nothing() {
        let dir = tempdir("crash");
        let mut t = TopicDir::open(&dir, "t", 1, 1 << 20).unwrap();
        for o in 0..5 {
            t.append(&record(0, o)).unwrap();
        }
        t.commit(1).unwrap();
        // Appended, flushed to the file (as a full buffer would be), but the manifest never written: the crash.
        for o in 5..9 {
            t.append(&record(0, o)).unwrap();
        }
        t.open.get_mut(&0).unwrap().writer.flush().unwrap();
        // And a segment file a crash left behind that no manifest lists.
        fs::write(dir.join(segment_name(0, 9)), encode(&record(0, 9))).unwrap();
        drop(t);
        let mut t = TopicDir::open(&dir, "t", 1, 1 << 20).unwrap();
        assert_eq!(t.next_offset(0), 5);
        assert!(!dir.join(segment_name(0, 9)).exists());
        for o in 5..12 {
            t.append(&record(0, o)).unwrap();
        }
        t.commit(2).unwrap();
        let offsets: Vec<i64> = all(&dir).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn truncated_or_tampered_segments_and_other_versions_are_refused() {
        let dir = tempdir("bad");
        let mut t = TopicDir::open(&dir, "t", 1, 1 << 20).unwrap();
        for o in 0..3 {
            t.append(&record(0, o)).unwrap();
        }
        t.commit(1).unwrap();
        let m = read_manifest(&dir).unwrap().unwrap();
        let seg = dir.join(&m.state[&0].segments[0].file);
        let bytes = fs::read(&seg).unwrap();
        fs::write(&seg, &bytes[..bytes.len() - 10]).unwrap();
        let err = read_partition(&dir, &m, 0, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // Same length, a line swapped for another offset.
        let mut swapped = bytes.clone();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let first = text.lines().next().unwrap();
        let changed = first.replace("\"offset\":0", "\"offset\":7");
        swapped.splice(0..first.len(), changed.bytes());
        fs::write(&seg, &swapped).unwrap();
        let err = read_partition(&dir, &m, 0, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
        // A missing file refuses to resume.
        fs::remove_file(&seg).unwrap();
        assert!(TopicDir::open(&dir, "t", 1, 1 << 20).is_err());
        // Another version.
        let text = fs::read_to_string(dir.join(MANIFEST))
            .unwrap()
            .replace("\"version\": 1", "\"version\": 2");
        fs::write(dir.join(MANIFEST), text).unwrap();
        assert!(matches!(
            read_manifest(&dir),
            Err(FormatError::Version { version: 2, .. })
        ));
        // Another partition count.
        let dir = tempdir("count");
        TopicDir::open(&dir, "t", 1, 100)
            .unwrap()
            .commit(1)
            .unwrap();
        assert!(TopicDir::open(&dir, "t", 2, 100).is_err());
    }
}
