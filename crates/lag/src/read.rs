//! Reading a [`Snapshot`]: watermarks and group membership from the broker, committed offsets from Kafka
//! (an OffsetFetch through a client that carries the group's id but never subscribes, so it never joins the
//! group nor disturbs its members) or from the mode (b) table `consumer_offsets` in PostgreSQL.
//!
//! rdkafka 0.39 has no AdminClient ListConsumerGroupOffsets; `committed_offsets` on an unsubscribed consumer is
//! the same OffsetFetch request.
//!
//! Guarantees: every librdkafka call here is blocking and runs in [`tokio::task::spawn_blocking`] (the async
//! entry points) — never on an async worker thread; each call has a timeout; a group that cannot be read
//! becomes an `Err` in the snapshot (status ERR), and only a broker that does not answer a metadata request
//! fails [`Reader::snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use sqlx::PgPool;

use crate::tracker::{Committed, Ends, GroupReading, GroupSpec, OffsetSource, Snapshot, Tp};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] KafkaError),
    #[error("the broker did not answer ({what}): {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading consumer_offsets of group {group}: {source}")]
    Database {
        group: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("group {group} is stored in the database (mode b) but no database is configured")]
    NoDatabase { group: String },
    #[error("a blocking Kafka read panicked or was cancelled: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> LagError {
    let what = what.into();
    move |source| LagError::Kafka { what, source }
}

/// The platform's consumer groups: `runtime::policy::GROUPS` with their topics; mode (b) groups read their
/// offsets from the database.
pub fn platform_groups() -> Vec<GroupSpec> {
    runtime::policy::GROUPS
        .iter()
        .filter_map(|g| runtime::policy::GroupPolicy::spec(g))
        .map(|p| GroupSpec {
            offsets: match p.guarantee {
                runtime::Guarantee::ExactlyOnceDb => OffsetSource::Database,
                _ => OffsetSource::Kafka,
            },
            group: p.group,
            topics: p.topics,
        })
        .collect()
}

/// A member of a group, as the broker describes it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub host: String,
    /// The partitions assigned to it (decoded from the consumer protocol's assignment), when readable.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A group as listed by the broker.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<Member>,
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads snapshots. Keeps one metadata client and one offset-fetching client per group (created on first use).
pub struct Reader {
    base: ClientConfig,
    timeout: Duration,
    metadata: BaseConsumer,
    fetchers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl Reader {
    /// `base` carries `bootstrap.servers` and any security properties; `timeout` bounds each broker request.
    pub fn new(base: ClientConfig, timeout: Duration) -> Result<Arc<Self>, LagError> {
        let metadata = base.clone().create().map_err(LagError::Client)?;
        Ok(Arc::new(Self {
            base,
            timeout,
            metadata,
            fetchers: Mutex::new(HashMap::new()),
        }))
    }

    /// Reads everything about `groups` at once (see the module's guarantees). `pool` is needed for mode (b)
    /// groups.
    pub async fn snapshot(
        self: &Arc<Self>,
        groups: &[GroupSpec],
        pool: Option<&PgPool>,
    ) -> Result<Snapshot, LagError> {
        let this = Arc::clone(self);
        let specs = groups.to_vec();
        let (ends, mut readings) =
            tokio::task::spawn_blocking(move || this.read_kafka(&specs)).await??;
        for (spec, slot) in groups.iter().zip(readings.iter_mut()) {
            if spec.offsets != OffsetSource::Database || slot.is_err() {
                continue;
            }
            let result = match pool {
                None => Err(LagError::NoDatabase {
                    group: spec.group.clone(),
                }),
                Some(pool) => read_database(pool, &spec.group, &spec.topics).await,
            };
            match result {
                Ok(committed) => {
                    if let Ok(reading) = slot {
                        reading.committed = committed;
                    }
                }
                Err(err) => *slot = Err(err.to_string()),
            }
        }
        let groups = groups.iter().cloned().zip(readings).collect();
        Ok(Snapshot {
            at_ms: now_ms(),
            ends,
            groups,
        })
    }

    /// Every group the broker knows (blocking; use [`Reader::list_groups`] from async code).
    pub fn list_groups_blocking(&self, group: Option<&str>) -> Result<Vec<GroupInfo>, LagError> {
        let list = self
            .metadata
            .fetch_group_list(group, self.timeout)
            .map_err(kafka("list groups"))?;
        Ok(list
            .groups()
            .iter()
            .map(|g| GroupInfo {
                group: g.name().to_string(),
                state: g.state().to_string(),
                protocol_type: g.protocol_type().to_string(),
                protocol: g.protocol().to_string(),
                members: g
                    .members()
                    .iter()
                    .map(|m| Member {
                        id: m.id().to_string(),
                        client_id: m.client_id().to_string(),
                        host: m.client_host().to_string(),
                        assignment: m
                            .assignment()
                            .and_then(decode_assignment)
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// Every group the broker knows, or only `group`.
    pub async fn list_groups(
        self: &Arc<Self>,
        group: Option<String>,
    ) -> Result<Vec<GroupInfo>, LagError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.list_groups_blocking(group.as_deref())).await?
    }

    /// Blocking: the ends of every partition of the groups' topics, then each group's membership and Kafka
    /// commits.
    #[allow(clippy::type_complexity)]
    fn read_kafka(
        &self,
        groups: &[GroupSpec],
    ) -> Result<(BTreeMap<Tp, Ends>, Vec<Result<GroupReading, String>>), LagError> {
        let metadata = self
            .metadata
            .fetch_metadata(None, self.timeout)
            .map_err(kafka("metadata"))?;
        let mut wanted: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.topics.iter().map(String::as_str))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut ends = BTreeMap::new();
        for topic in metadata.topics() {
            if !wanted.contains(&topic.name()) || topic.error().is_some() {
                continue;
            }
            for p in topic.partitions() {
                let (earliest, latest) = self
                    .metadata
                    .fetch_watermarks(topic.name(), p.id(), self.timeout)
                    .map_err(kafka(format!("watermarks of {}/{}", topic.name(), p.id())))?;
                ends.insert(
                    (topic.name().to_string(), p.id()),
                    Ends { earliest, latest },
                );
            }
        }
        let readings = groups
            .iter()
            .map(|spec| self.read_group(spec, &ends).map_err(|e| e.to_string()))
            .collect();
        Ok((ends, readings))
    }

    fn read_group(
        &self,
        spec: &GroupSpec,
        ends: &BTreeMap<Tp, Ends>,
    ) -> Result<GroupReading, LagError> {
        let info = self.list_groups_blocking(Some(&spec.group))?;
        let (state, members) = info
            .iter()
            .find(|g| g.group == spec.group)
            .map_or((String::new(), 0), |g| (g.state.clone(), g.members.len()));
        let mut committed = BTreeMap::new();
        if spec.offsets == OffsetSource::Kafka {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in ends.keys() {
                if spec.topics.contains(topic) {
                    tpl.add_partition(topic, *partition);
                }
            }
            if tpl.count() > 0 {
                let fetcher = self.fetcher(&spec.group)?;
                let got = fetcher
                    .committed_offsets(tpl, self.timeout)
                    .map_err(kafka(format!("committed offsets of group {}", spec.group)))?;
                for e in got.elements() {
                    if let Some(err) = e.error().err() {
                        return Err(kafka(format!(
                            "committed offset of group {} on {}/{}",
                            spec.group,
                            e.topic(),
                            e.partition()
                        ))(err));
                    }
                    if let Offset::Offset(offset) = e.offset() {
                        committed.insert(
                            (e.topic().to_string(), e.partition()),
                            Committed {
                                offset,
                                updated_at_ms: None,
                            },
                        );
                    }
                }
            }
        }
        Ok(GroupReading {
            state,
            members,
            committed,
        })
    }

    fn fetcher(&self, group: &str) -> Result<Arc<BaseConsumer>, LagError> {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fetchers.get(group) {
            return Ok(Arc::clone(f));
        }
        let consumer: BaseConsumer = self
            .base
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(LagError::Client)?;
        let consumer = Arc::new(consumer);
        fetchers.insert(group.to_string(), Arc::clone(&consumer));
        Ok(consumer)
    }
}

/// Mode (b): the stored positions of `group` on `topics`, with their commit times.
pub async fn read_database(
    pool: &PgPool,
    group: &str,
    topics: &[String],
) -> Result<BTreeMap<Tp, Committed>, LagError> {
    let rows: Vec<(String, i32, i64, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset, (extract(epoch from updated_at) * 1000)::bigint \
         FROM consumer_offsets WHERE consumer_group = $1 AND topic = ANY($2)",
    )
    .bind(group)
    .bind(topics)
    .fetch_all(pool)
    .await
    .map_err(|source| LagError::Database {
        group: group.to_string(),
        source,
    })?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, offset, at)| {
            (
                (topic, partition),
                Committed {
                    offset,
                    updated_at_ms: Some(at),
                },
            )
        })
        .collect())
}

/// Decodes the consumer protocol's `ConsumerProtocolAssignment` (version, [topic, [partition]], user data):
/// `None` when the bytes are not that (another protocol type).
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
    }
    let mut c = Cursor(bytes);
    let _version = c.i16()?;
    let topics = c.i32()?;
    if !(0..=100_000).contains(&topics) {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..topics {
        let len = usize::try_from(c.i16()?).ok()?;
        let topic = String::from_utf8(c.take(len)?.to_vec()).ok()?;
        let n = c.i32()?;
        if !(0..=1_000_000).contains(&n) {
            return None;
        }
        let partitions = (0..n).map(|_| c.i32()).collect::<Option<Vec<_>>>()?;
        out.push((topic, partitions));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_groups_read_mode_b_offsets_from_the_database() {
        let groups = platform_groups();
        assert_eq!(groups.len(), runtime::policy::GROUPS.len());
        let source = |name: &str| groups.iter().find(|g| g.group == name).unwrap().offsets;
        assert_eq!(source("settlement-processing"), OffsetSource::Database);
        assert_eq!(source("analytics-aggregation"), OffsetSource::Database);
        assert_eq!(source("audit-logging"), OffsetSource::Kafka);
    }

    #[test]
    fn decodes_a_consumer_protocol_assignment() {
        let mut b = vec![
            0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 7,
        ];
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_assignment(&b), Some(vec![("t".into(), vec![3, 7])]));
        assert_eq!(decode_assignment(&[0, 1, 0]), None);
    }
}
