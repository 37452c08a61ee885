//! `checkoutctl dlq replay TOPIC …`: produces dead-lettered records back to their original topic (decision 0035).
//!
//! Guarantees:
//! - **Dry run by default**: the selection is printed (what would be replayed, up to `--max`) and nothing is
//!   produced; `--execute` replays at most `--max` records (default 100), at most `--rate` per second.
//! - **Selection**: records past the operator cursor (`--include-purged`: from the earliest retained), narrowed
//!   by `--offsets P:FROM-TO` (inclusive, repeatable), `--since`/`--until` (the DLQ write time), `--group` (the
//!   failing consumer group, `dlq.consumer.group`) and `--error-class` (`dlq.error.class`); all given must hold.
//!   Records are replayed in DLQ order per partition (the DLQ partition follows the key, so a key's records keep
//!   their order).
//! - **What is produced**: to `dlq.original.topic`, partition `dlq.original.partition`, the original key, value
//!   and headers (the DLQ's `dlq.*` provenance headers and an earlier replay's `replay.*` headers removed), plus
//!   the replay headers of `runtime::dlq::REPLAY_HEADERS` — replay id (one per run), the DLQ topic, partition and
//!   offset read from, the replay count (an earlier count plus one), the operator, the time and the failing group.
//!   The producer is the platform's idempotent producer (`service_kit::kafka::producer_config`: acks=all,
//!   idempotence, Java-compatible partitioner); each record is acknowledged before the next is sent.
//! - **No loop**: the consumer runtime sends a record carrying `replay.id` that fails again to `<dlq>.parked`,
//!   never back to the DLQ (`runtime::dlq`).
//! - **Recorded**: an executed replay is a row of `operator_actions` (action `dlq.replay`: operator, selection,
//!   how many matched and were produced, the replay id, any error) — also when it stopped part-way. The database
//!   is reached before the first record is produced.
//! - The cursor is not moved: after checking the replayed records were processed, `checkoutctl dlq purge` moves
//!   it (see the runbook).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::dlq;
use serde::Serialize;

use crate::dlq_cmd::{Ctx, DlqRecord, partitions, rfc3339, scan};
use crate::{Io, exit};

/// Which records to replay, and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The DLQ (or parking lot) to replay from.
    pub topic: String,
    /// `PARTITION:FROM-TO`, `PARTITION:FROM-`, `PARTITION:-TO` or `PARTITION:OFFSET` (inclusive; repeatable).
    #[arg(long = "offsets")]
    pub offsets: Vec<String>,
    /// Only records dead-lettered at or after this time (RFC 3339, or a duration ago like `2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records dead-lettered before this time (RFC 3339, or a duration ago like `30m`).
    #[arg(long)]
    pub until: Option<String>,
    /// Only records this consumer group failed (`dlq.consumer.group`).
    #[arg(long)]
    pub group: Option<String>,
    /// Only records of this error class (`dlq.error.class`): schema, business, transient or infrastructure.
    #[arg(long)]
    pub error_class: Option<String>,
    /// Also select records before the operator cursor (already purged).
    #[arg(long)]
    pub include_purged: bool,
    /// Produce them (default: print what would be replayed).
    #[arg(long)]
    pub execute: bool,
    /// Most records replayed by one run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max: u64,
    /// Most records produced per second.
    #[arg(long, default_value_t = 20.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Who is doing this, for the replay headers and operator_actions (default: $USER).
    #[arg(long)]
    pub operator: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate between 0 and 100000 per second"
        )),
    }
}

/// An inclusive offset range of one partition; an open end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffsetRange {
    pub partition: i32,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl OffsetRange {
    /// Parses `P:FROM-TO`, `P:FROM-`, `P:-TO` or `P:OFFSET`.
    pub fn parse(s: &str) -> anyhow::Result<OffsetRange> {
        let bad = || format!("`{s}` is not PARTITION:FROM-TO (or P:FROM-, P:-TO, P:OFFSET)");
        let (p, range) = s.split_once(':').with_context(bad)?;
        let partition = p
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p >= 0)
            .with_context(bad)?;
        let offset = |t: &str| -> anyhow::Result<Option<i64>> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Some)
                .with_context(bad)
        };
        let (from, to) = match range.split_once('-') {
            Some((a, b)) => match (offset(a)?, offset(b)?) {
                (None, None) => bail!(bad()),
                bounds => bounds,
            },
            None => {
                let o = offset(range)?.with_context(bad)?;
                (Some(o), Some(o))
            }
        };
        if let (Some(a), Some(b)) = (from, to)
            && a > b
        {
            bail!("`{s}`: the range ends before it starts");
        }
        Ok(OffsetRange {
            partition,
            from,
            to,
        })
    }

    fn contains(&self, partition: i32, offset: i64) -> bool {
        self.partition == partition
            && self.from.is_none_or(|f| offset >= f)
            && self.to.is_none_or(|t| offset <= t)
    }
}

/// A time given as RFC 3339 or as a duration before `now_ms` (`2h`), in ms since the epoch.
pub fn parse_time(s: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.timestamp_millis());
    }
    match humantime::parse_duration(s.trim()) {
        Ok(d) => Ok(now_ms - d.as_millis() as i64),
        Err(_) => bail!(
            "`{s}` is neither an RFC 3339 time (2026-11-30T12:00:00Z) nor a duration ago (2h)"
        ),
    }
}

const ERROR_CLASSES: [&str; 4] = ["schema", "business", "transient", "infrastructure"];

/// The resolved selection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    pub offsets: Vec<OffsetRange>,
    /// ms since the epoch, inclusive.
    pub since: Option<i64>,
    /// ms since the epoch, exclusive.
    pub until: Option<i64>,
    pub group: Option<String>,
    pub error_class: Option<String>,
    pub include_purged: bool,
}

impl Selection {
    /// Resolves the arguments (times relative to `now_ms`); every malformed part is an error naming it.
    pub fn from_args(args: &ReplayArgs, now_ms: i64) -> anyhow::Result<Selection> {
        let offsets = args
            .offsets
            .iter()
            .map(|s| OffsetRange::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let since = args
            .since
            .as_deref()
            .map(|s| parse_time(s, now_ms))
            .transpose()?;
        let until = args
            .until
            .as_deref()
            .map(|s| parse_time(s, now_ms))
            .transpose()?;
        if let (Some(a), Some(b)) = (since, until)
            && a >= b
        {
            bail!("--since is not before --until: nothing could match");
        }
        if let Some(class) = &args.error_class
            && !ERROR_CLASSES.contains(&class.as_str())
        {
            bail!("--error-class {class}: one of {}", ERROR_CLASSES.join(", "));
        }
        Ok(Selection {
            offsets,
            since,
            until,
            group: args.group.clone(),
            error_class: args.error_class.clone(),
            include_purged: args.include_purged,
        })
    }

    /// Whether `r` is selected (every given criterion holds; a time criterion needs a timestamp).
    pub fn matches(&self, r: &DlqRecord) -> bool {
        (self.offsets.is_empty()
            || self
                .offsets
                .iter()
                .any(|o| o.contains(r.partition, r.offset)))
            && self
                .since
                .is_none_or(|s| r.timestamp.is_some_and(|t| t >= s))
            && self
                .until
                .is_none_or(|u| r.timestamp.is_some_and(|t| t < u))
            && self
                .group
                .as_ref()
                .is_none_or(|g| r.header_text(dlq::CONSUMER_GROUP).as_ref() == Some(g))
            && self
                .error_class
                .as_ref()
                .is_none_or(|c| r.header_text(dlq::ERROR_CLASS).as_ref() == Some(c))
    }
}

/// Paces sends to at most `rate` per second: the first is immediate, each next one at least `1/rate` after the
/// previous one's slot; idle time is not saved up, so there is never a burst.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: None,
        }
    }

    /// How long to wait, from `now`, before the next send (and books that slot).
    pub fn delay(&mut self, now: Instant) -> Duration {
        let slot = self.next.map_or(now, |n| n.max(now));
        self.next = Some(slot + self.interval);
        slot - now
    }
}

/// Headers in order; a header may have no value.
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// The record to produce for `r`: destination topic and partition, key, value, and headers (see the module
/// docs). `None` when `r` lacks its original topic (not a record the runtime dead-lettered).
pub fn replayed(
    r: &DlqRecord,
    replay_id: &str,
    operator: &str,
    at: &str,
) -> Option<(String, Option<i32>, Headers)> {
    let topic = r.header_text(dlq::ORIGINAL_TOPIC)?;
    let partition = r
        .header_text(dlq::ORIGINAL_PARTITION)
        .and_then(|p| p.parse::<i32>().ok());
    let count = r
        .header_text(dlq::REPLAY_COUNT)
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut headers: Headers = r
        .headers
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(dlq::PROVENANCE_PREFIX) && !k.starts_with(dlq::REPLAY_PREFIX)
        })
        .cloned()
        .collect();
    let group = r.header_text(dlq::CONSUMER_GROUP).unwrap_or_default();
    for (name, value) in [
        (dlq::REPLAY_ID, replay_id.to_string()),
        (dlq::REPLAY_FROM_TOPIC, r.topic.to_string()),
        (dlq::REPLAY_FROM_PARTITION, r.partition.to_string()),
        (dlq::REPLAY_FROM_OFFSET, r.offset.to_string()),
        (dlq::REPLAY_COUNT, count.to_string()),
        (dlq::REPLAY_OPERATOR, operator.to_string()),
        (dlq::REPLAY_AT, at.to_string()),
        (dlq::REPLAY_GROUP, group),
    ] {
        headers.push((name.to_string(), Some(value.into_bytes())));
    }
    Some((topic, partition, headers))
}

#[derive(Debug, Serialize)]
struct Selected {
    partition: i32,
    offset: i64,
    timestamp: Option<String>,
    group: Option<String>,
    error_class: Option<String>,
    original: Option<String>,
}

impl Selected {
    fn of(r: &DlqRecord) -> Selected {
        Selected {
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp.map(rfc3339),
            group: r.header_text(dlq::CONSUMER_GROUP),
            error_class: r.header_text(dlq::ERROR_CLASS),
            original: r.header_text(dlq::ORIGINAL_TOPIC).map(|t| {
                format!(
                    "{t}/{}@{}",
                    r.header_text(dlq::ORIGINAL_PARTITION).unwrap_or_default(),
                    r.header_text(dlq::ORIGINAL_OFFSET).unwrap_or_default()
                )
            }),
        }
    }
}

/// Most records a replay reads while selecting.
const SCAN_LIMIT: usize = 1_000_000;

pub async fn run(ctx: &Ctx, args: ReplayArgs, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let topic = args.topic.clone();
    if !events::topics::is_dead_letter_topic(&topic) && !events::topics::is_parked_topic(&topic) {
        bail!(
            "{topic} is neither a dead-letter topic (`*.dlq`) nor a parking lot (`*.dlq.parked`)"
        );
    }
    let selection = Selection::from_args(&args, lag::read::now_ms())?;
    let parts = partitions(ctx, &topic).await?;
    let include_purged = selection.include_purged;
    let keep = {
        let s = selection.clone();
        move |r: &DlqRecord| s.matches(r)
    };
    let (matched, truncated) = scan(
        ctx,
        &parts,
        move |_, cursor, ends| {
            if include_purged {
                ends.earliest
            } else {
                cursor
            }
        },
        keep,
        SCAN_LIMIT,
    )
    .await?;
    let chosen: Vec<&DlqRecord> = matched.iter().take(args.max as usize).collect();
    // A letter whose value the runtime cut (runtime::dlq::VALUE_TRUNCATED, decision 0036) is not the record:
    // replaying it would publish a corrupt one. Its original is at dlq.original.topic/partition/offset.
    let (cut, chosen): (Vec<&DlqRecord>, Vec<&DlqRecord>) = chosen
        .into_iter()
        .partition(|r| r.header_text(dlq::VALUE_TRUNCATED).is_some());
    if let Some(bad) = cut.first() {
        writeln!(
            io.stderr,
            "warning: {} selected record(s) carry only the first bytes of their value ({}) and are skipped: \
             fetch the original from its {}/{}/{} (first: {}/{}@{} was {}@{}:{})",
            cut.len(),
            dlq::VALUE_TRUNCATED,
            dlq::ORIGINAL_TOPIC,
            dlq::ORIGINAL_PARTITION,
            dlq::ORIGINAL_OFFSET,
            bad.topic,
            bad.partition,
            bad.offset,
            bad.header_text(dlq::ORIGINAL_TOPIC).unwrap_or_default(),
            bad.header_text(dlq::ORIGINAL_PARTITION).unwrap_or_default(),
            bad.header_text(dlq::ORIGINAL_OFFSET).unwrap_or_default(),
        )?;
    }
    let (replayable, unreplayable): (Vec<&DlqRecord>, Vec<&DlqRecord>) = chosen
        .into_iter()
        .partition(|r| r.header_text(dlq::ORIGINAL_TOPIC).is_some());
    if let Some(bad) = unreplayable.first() {
        writeln!(
            io.stderr,
            "warning: {} selected record(s) have no {} header and are skipped (first: {}/{}@{})",
            unreplayable.len(),
            dlq::ORIGINAL_TOPIC,
            bad.topic,
            bad.partition,
            bad.offset
        )?;
    }

    let mut report = serde_json::json!({
        "topic": topic,
        "selection": selection,
        "matched": matched.len(),
        "matched_truncated": truncated,
        "skipped_cut": cut.len(),
        "max": args.max,
        "executed": args.execute,
        "selected": replayable.iter().map(|r| Selected::of(r)).collect::<Vec<_>>(),
    });
    let mut code = exit::OK;
    if args.execute && !replayable.is_empty() {
        let pool = ctx.pool().await?;
        let operator = crate::groups_reset::actor_or_user(args.operator.clone());
        let replay_id = uuid::Uuid::new_v4().to_string();
        let outcome = produce(ctx, &replayable, &replay_id, &operator, args.rate, io).await;
        let (produced, error) = match &outcome {
            Ok(n) => (*n, None),
            Err((n, e)) => (*n, Some(format!("{e:#}"))),
        };
        let first = replayable.first().map(|r| (r.partition, r.offset));
        let details = serde_json::json!({
            "replay_id": replay_id,
            "selection": selection,
            "max": args.max,
            "rate": args.rate,
            "matched": matched.len(),
            "produced": produced,
            "first": first,
            "replayed": replayable[..produced].iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>(),
            "error": error,
        });
        crate::groups_reset::record_action(&pool, &operator, "dlq.replay", &topic, details).await?;
        report["replay_id"] = replay_id.clone().into();
        report["produced"] = produced.into();
        if let Some(e) = &error {
            writeln!(
                io.stderr,
                "error: the replay stopped after {produced} of {} record(s): {e}",
                replayable.len()
            )?;
            code = exit::INVALID;
        }
    }
    if args.json {
        writeln!(io.stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(code);
    }
    writeln!(
        io.stdout,
        "{:>9} {:>10}  {:<24} {:<28} {:<14} ORIGINAL",
        "PARTITION", "OFFSET", "DEAD-LETTERED", "GROUP", "ERROR CLASS"
    )?;
    for r in &replayable {
        let s = Selected::of(r);
        writeln!(
            io.stdout,
            "{:>9} {:>10}  {:<24} {:<28} {:<14} {}",
            s.partition,
            s.offset,
            s.timestamp.as_deref().unwrap_or("-"),
            s.group.as_deref().unwrap_or("-"),
            s.error_class.as_deref().unwrap_or("-"),
            s.original.as_deref().unwrap_or("-")
        )?;
    }
    let more = matched.len().saturating_sub(args.max as usize);
    let cap = if more > 0 {
        format!(" ({more} more matched beyond --max {})", args.max)
    } else {
        String::new()
    };
    if args.execute {
        writeln!(
            io.stdout,
            "replayed {} record(s) (replay id {}){cap}; recorded in operator_actions. The cursor did not move: \
             once they are processed, `checkoutctl dlq purge {topic} --through P:O`",
            report["produced"].as_u64().unwrap_or(0),
            report["replay_id"].as_str().unwrap_or("-")
        )?;
    } else {
        writeln!(
            io.stdout,
            "dry run: would replay {} record(s){cap}; nothing produced; pass --execute (at most --max {}, --rate {}/s)",
            replayable.len(),
            args.max,
            args.rate
        )?;
    }
    Ok(code)
}

/// Produces `records` one at a time (each acknowledged before the next), paced; progress on stderr every few
/// seconds. `Err((produced, why))` when a send fails.
async fn produce(
    ctx: &Ctx,
    records: &[&DlqRecord],
    replay_id: &str,
    operator: &str,
    rate: f64,
    io: &mut Io<'_>,
) -> Result<usize, (usize, anyhow::Error)> {
    let producer: FutureProducer = match service_kit::kafka::producer_config(&ctx.kafka).create() {
        Ok(p) => p,
        Err(e) => return Err((0, anyhow::Error::new(e).context("creating the producer"))),
    };
    let at = rfc3339(lag::read::now_ms());
    let mut pacer = Pacer::new(rate);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut by_topic: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let Some((topic, partition, headers)) = replayed(r, replay_id, operator, &at) else {
            continue;
        };
        tokio::time::sleep(pacer.delay(Instant::now())).await;
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in &headers {
            owned = owned.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(owned);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = r.key.as_deref() {
            record = record.key(k);
        }
        if let Some(v) = r.value.as_deref() {
            record = record.payload(v);
        }
        if let Err((e, _)) = producer.send(record, ctx.timeout).await {
            return Err((
                i,
                anyhow::Error::new(e).context(format!(
                    "producing {}/{}@{} to {topic}",
                    r.topic, r.partition, r.offset
                )),
            ));
        }
        *by_topic.entry(topic).or_default() += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let _ = writeln!(
                io.stderr,
                "progress: {}/{} replayed in {:.0?}",
                i + 1,
                records.len(),
                started.elapsed()
            );
        }
    }
    for (topic, n) in &by_topic {
        let _ = writeln!(io.stderr, "{n} record(s) produced to {topic}");
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_504_000_000; // 2025-11-30T12:00:00Z

    fn args(extra: &[&str]) -> ReplayArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ReplayArgs,
        }
        let argv = ["replay", "t.dlq"].iter().chain(extra.iter());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().args
    }

    fn record(partition: i32, offset: i64, ts: i64, group: &str, class: &str) -> DlqRecord {
        DlqRecord {
            topic: "t.dlq".into(),
            partition,
            offset,
            timestamp: Some(ts),
            key: Some(b"k1".to_vec()),
            value: Some(b"{\"a\":1}".to_vec()),
            headers: vec![
                ("event_id".into(), Some(b"e1".to_vec())),
                (dlq::ORIGINAL_TOPIC.into(), Some(b"t".to_vec())),
                (dlq::ORIGINAL_PARTITION.into(), Some(b"2".to_vec())),
                (dlq::ORIGINAL_OFFSET.into(), Some(b"17".to_vec())),
                (dlq::CONSUMER_GROUP.into(), Some(group.as_bytes().to_vec())),
                (dlq::ERROR_CLASS.into(), Some(class.as_bytes().to_vec())),
            ],
        }
    }

    #[test]
    fn offset_ranges_parse_every_form_and_refuse_junk() {
        let r = |s| OffsetRange::parse(s).unwrap();
        assert_eq!(
            r("3:10-20"),
            OffsetRange {
                partition: 3,
                from: Some(10),
                to: Some(20)
            }
        );
        assert_eq!((r("0:5-").from, r("0:5-").to), (Some(5), None));
        assert_eq!((r("0:-5").from, r("0:-5").to), (None, Some(5)));
        assert_eq!((r("1:7").from, r("1:7").to), (Some(7), Some(7)));
        for bad in [
            "7", "x:1-2", "-1:1-2", "0:a-b", "0:9-3", "0:", "0:-", "0:1-2-3",
        ] {
            assert!(OffsetRange::parse(bad).is_err(), "{bad}");
        }
        assert!(r("2:10-20").contains(2, 10) && r("2:10-20").contains(2, 20));
        assert!(!r("2:10-20").contains(2, 21) && !r("2:10-20").contains(1, 15));
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        assert_eq!(parse_time("2025-11-30T12:00:00Z", 0).unwrap(), NOW);
        assert_eq!(parse_time("2h", NOW).unwrap(), NOW - 7_200_000);
        assert_eq!(parse_time("90s", NOW).unwrap(), NOW - 90_000);
        assert!(parse_time("yesterday", NOW).is_err());
    }

    #[test]
    fn a_selection_needs_every_criterion_given() {
        let all = Selection::from_args(&args(&[]), NOW).unwrap();
        let r = record(0, 5, NOW - 1000, "g1", "schema");
        assert!(all.matches(&r));
        let s = Selection::from_args(
            &args(&[
                "--group",
                "g1",
                "--error-class",
                "schema",
                "--offsets",
                "0:0-9",
                "--offsets",
                "1:100-",
                "--since",
                "1h",
                "--until",
                "2025-11-30T12:00:00Z",
            ]),
            NOW,
        )
        .unwrap();
        assert!(s.matches(&r));
        assert!(s.matches(&record(1, 100, NOW - 1000, "g1", "schema")));
        assert!(
            !s.matches(&record(0, 10, NOW - 1000, "g1", "schema")),
            "offset"
        );
        assert!(
            !s.matches(&record(2, 5, NOW - 1000, "g1", "schema")),
            "partition"
        );
        assert!(
            !s.matches(&record(0, 5, NOW - 1000, "g2", "schema")),
            "group"
        );
        assert!(
            !s.matches(&record(0, 5, NOW - 1000, "g1", "business")),
            "class"
        );
        assert!(
            !s.matches(&record(0, 5, NOW - 3_700_000, "g1", "schema")),
            "too old"
        );
        assert!(
            !s.matches(&record(0, 5, NOW, "g1", "schema")),
            "until is exclusive"
        );
        let mut no_ts = r.clone();
        no_ts.timestamp = None;
        assert!(!s.matches(&no_ts));

        assert!(Selection::from_args(&args(&["--error-class", "oops"]), NOW).is_err());
        assert!(Selection::from_args(&args(&["--since", "1h", "--until", "2h"]), NOW).is_err());
        assert!(Selection::from_args(&args(&["--offsets", "1"]), NOW).is_err());
    }

    #[test]
    fn the_pacer_spaces_sends_and_saves_no_burst() {
        let mut p = Pacer::new(10.0);
        let t0 = Instant::now();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(p.delay(t0)), 0);
        assert_eq!(ms(p.delay(t0)), 100);
        assert_eq!(ms(p.delay(t0)), 200);
        // Sent at its slot (t0 + 200 ms): the next waits a whole interval.
        assert_eq!(ms(p.delay(t0 + Duration::from_millis(200))), 100);
        // After a long pause: immediate, then spaced again (no saved-up burst).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(ms(p.delay(later)), 0);
        assert_eq!(ms(p.delay(later)), 100);
        assert!(
            parse_rate("0").is_err() && parse_rate("-1").is_err() && parse_rate("NaN").is_err()
        );
        assert_eq!(parse_rate("2.5"), Ok(2.5));
    }

    #[test]
    fn a_replayed_record_keeps_key_and_headers_and_carries_the_replay_headers() {
        let r = record(4, 9, NOW, "g1", "business");
        let (topic, partition, headers) = replayed(&r, "rid", "alice", "T").unwrap();
        assert_eq!((topic.as_str(), partition), ("t", Some(2)));
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let mut expected = vec!["event_id"];
        expected.extend(dlq::REPLAY_HEADERS);
        assert_eq!(
            names, expected,
            "provenance headers dropped, replay headers appended"
        );
        let get = |hs: &[(String, Option<Vec<u8>>)], n: &str| {
            hs.iter()
                .find(|(k, _)| k == n)
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(get(&headers, dlq::REPLAY_FROM_OFFSET).as_deref(), Some("9"));
        assert_eq!(
            get(&headers, dlq::REPLAY_FROM_PARTITION).as_deref(),
            Some("4")
        );
        assert_eq!(get(&headers, dlq::REPLAY_COUNT).as_deref(), Some("1"));
        assert_eq!(get(&headers, dlq::REPLAY_GROUP).as_deref(), Some("g1"));
        assert_eq!(
            get(&headers, dlq::REPLAY_OPERATOR).as_deref(),
            Some("alice")
        );

        // A parked record (replayed once, failed again) replayed again: count 2, one set of replay headers.
        let mut parked = r.clone();
        parked.topic = "t.dlq.parked".into();
        parked
            .headers
            .insert(1, (dlq::REPLAY_ID.into(), Some(b"old".to_vec())));
        parked
            .headers
            .insert(2, (dlq::REPLAY_COUNT.into(), Some(b"1".to_vec())));
        let (_, _, headers) = replayed(&parked, "rid2", "bob", "T").unwrap();
        assert_eq!(get(&headers, dlq::REPLAY_COUNT).as_deref(), Some("2"));
        assert_eq!(get(&headers, dlq::REPLAY_ID).as_deref(), Some("rid2"));
        assert_eq!(
            headers.iter().filter(|(k, _)| k == dlq::REPLAY_ID).count(),
            1
        );

        let mut foreign = r.clone();
        foreign.headers.retain(|(k, _)| k != dlq::ORIGINAL_TOPIC);
        assert!(replayed(&foreign, "rid", "a", "T").is_none());
    }
}
