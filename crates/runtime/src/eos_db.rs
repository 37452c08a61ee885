//! Mode (b), exactly-once into PostgreSQL: the handlers' writes and the consumer's offset in one transaction.
//!
//! Guarantees:
//! - A batch (up to `batch_size` records of one partition) runs in one database transaction with its offset:
//!   `consumer_offsets.next_offset` = the offset after its last record. When a record fails, the transaction is
//!   rolled back, the records before it are run again in a new transaction and committed with the failed
//!   record's offset, and the failed record is then retried (or dead-lettered) in transactions of its own. (No
//!   `SAVEPOINT` per record: that is two round trips per record against three per batch; failures are rare and
//!   a replay of the prefix is cheap — see decision 0007.) Handlers of this mode must keep their effects in the database
//!   transaction: a rolled-back run leaves no trace only there.
//! - The offset is written with a compare-and-set against the value this lane read at assignment or wrote last
//!   (`UPDATE … WHERE next_offset = expected`, or an insert when there was no row): a consumer that lost the
//!   partition — a zombie — finds another value, rolls back and stops ([`Fenced`]). Exactly one transaction can
//!   move an offset from a given value, so each record's writes commit exactly once.
//! - On assignment the consumer reads the stored offsets ([`load_offsets`]) and starts there; Kafka's committed
//!   offsets are written afterwards for lag tools only.
//! - Output records ([`crate::HandlerCtx::produce`]) are acknowledged by the broker before the database commit:
//!   at-least-once for them (use an outbox table for exactly-once publishing). DLQ records too: a crash between
//!   the DLQ ack and the offset commit can dead-letter a record twice (the DLQ's provenance headers identify it).

use std::collections::HashMap;
use std::future::Future;

use rdkafka::producer::FutureProducer;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::{ErrorClass, HandlerError, classify_sqlx};
use crate::handler::Handler;
use crate::lane::{BatchOutcome, Fenced, Lane};
use crate::produce;
use crate::record::{OutputRecord, Record};

/// The stored next offsets of `group` for the given partitions (absent: no row yet).
pub(crate) async fn load_offsets(
    pool: &PgPool,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<HashMap<(String, i32), i64>, sqlx::Error> {
    let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = ANY($2)",
    )
    .bind(group)
    .bind(&topics)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, offset)| ((topic, partition), offset))
        .filter(|(tp, _)| partitions.contains(tp))
        .collect())
}

/// Moves the stored offset from `expected` to `next`; `false` when another writer got there first.
async fn store_offset(
    conn: &mut PgConnection,
    group: &str,
    topic: &str,
    partition: i32,
    expected: Option<i64>,
    next: i64,
) -> Result<bool, sqlx::Error> {
    let result = match expected {
        Some(expected) => {
            sqlx::query(
                "UPDATE consumer_offsets SET next_offset = $4, updated_at = now() \
                 WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
            )
            .bind(group)
            .bind(topic)
            .bind(partition)
            .bind(next)
            .bind(expected)
            .execute(conn)
            .await?
        }
        None => {
            sqlx::query(
                "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(group)
            .bind(topic)
            .bind(partition)
            .bind(next)
            .execute(conn)
            .await?
        }
    };
    Ok(result.rows_affected() == 1)
}

/// A failure of the runtime's own statements: a lost connection is infrastructure; anything else the database
/// refused is retried in place as transient (it is not the record's fault).
fn runtime_error(err: sqlx::Error) -> HandlerError {
    match classify_sqlx(&err) {
        ErrorClass::Infrastructure => HandlerError::infrastructure(err),
        _ => HandlerError::transient(err),
    }
}

/// Runs `op` with the configured statement deadline; a timeout is an infrastructure failure.
async fn bounded<T, H: Handler>(
    lane: &Lane<H>,
    op: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, HandlerError> {
    let timeout = lane.shared.options.db_timeout;
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result.map_err(runtime_error),
        Err(_) => Err(HandlerError::infrastructure(format!(
            "database statement timed out after {timeout:?}"
        ))),
    }
}

/// Runs `records` in one transaction and commits the successful prefix with its offset. A record failing in
/// the middle rolls the transaction back; the records before it are then run again (a replay: their first run
/// was rolled back, so nothing of it is visible) and committed alone, and the failure is reported for the
/// record after them.
pub(crate) async fn process<H: Handler>(
    lane: &mut Lane<H>,
    pool: &PgPool,
    producer: &FutureProducer,
    records: &[Record],
    attempt: u32,
) -> Result<BatchOutcome, Fenced> {
    let mut limit = records.len();
    let mut failure_after_prefix = None;
    loop {
        let batch = &records[..limit];
        let mut tx = match bounded(lane, pool.begin()).await {
            Ok(tx) => tx,
            Err(error) => return Ok(BatchOutcome::failed_at_start(error)),
        };
        let mut outputs = Vec::new();
        let mut failure = None;
        for (index, record) in batch.iter().enumerate() {
            let (result, outs) = lane.call(record, attempt, Some(&mut *tx)).await;
            match result {
                Ok(()) => outputs.extend(outs),
                Err(error) => {
                    failure = Some((index, error));
                    break;
                }
            }
        }
        if let Some((index, error)) = failure {
            let _ = tx.rollback().await;
            if index == 0 || error.class() == ErrorClass::Infrastructure {
                return Ok(BatchOutcome::failed_at_start(error));
            }
            limit = index;
            failure_after_prefix = Some(error);
            continue;
        }
        if let Err(error) =
            produce::send_all(producer, &outputs, lane.shared.options.produce_timeout).await
        {
            return Ok(BatchOutcome::failed_at_start(error));
        }
        if let Err(error) = commit_offset(lane, tx, batch[limit - 1].offset + 1).await? {
            return Ok(BatchOutcome::failed_at_start(error));
        }
        lane.mark_done(batch);
        return Ok(BatchOutcome {
            done: limit,
            failure: failure_after_prefix,
        });
    }
}

/// Writes `letter` and awaits its acknowledgement, then moves the stored offset past `record`.
pub(crate) async fn dead_letter<H: Handler>(
    lane: &mut Lane<H>,
    pool: &PgPool,
    producer: &FutureProducer,
    record: &Record,
    letter: &OutputRecord,
) -> Result<Result<(), HandlerError>, Fenced> {
    if let Err(error) = produce::send_all(
        producer,
        std::slice::from_ref(letter),
        lane.shared.options.produce_timeout,
    )
    .await
    {
        return Ok(Err(error));
    }
    let tx = match bounded(lane, pool.begin()).await {
        Ok(tx) => tx,
        Err(error) => return Ok(Err(error)),
    };
    if let Err(error) = commit_offset(lane, tx, record.offset + 1).await? {
        return Ok(Err(error));
    }
    lane.mark_skipped(record);
    Ok(Ok(()))
}

/// Stores `next` (compare-and-set) and commits `tx`. `Err(Fenced)` when another writer moved the offset.
async fn commit_offset<H: Handler>(
    lane: &mut Lane<H>,
    mut tx: Transaction<'static, Postgres>,
    next: i64,
) -> Result<Result<(), HandlerError>, Fenced> {
    let group = lane.shared.policy.group.clone();
    let stored = bounded(
        lane,
        store_offset(
            &mut tx,
            &group,
            &lane.topic,
            lane.partition,
            lane.stored,
            next,
        ),
    )
    .await;
    match stored {
        Ok(true) => {}
        Ok(false) => {
            let _ = tx.rollback().await;
            tracing::warn!(
                expected = ?lane.stored, next,
                "the stored offset moved under us: another consumer owns this partition; stopping (fenced)"
            );
            return Err(Fenced);
        }
        Err(error) => return Ok(Err(error)),
    }
    if let Err(error) = bounded(lane, tx.commit()).await {
        // Whether the commit happened is unknown; the next compare-and-set tells (and fences us if it did).
        return Ok(Err(error));
    }
    lane.stored = Some(next);
    Ok(Ok(()))
}
