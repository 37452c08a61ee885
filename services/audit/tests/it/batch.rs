//! `append_batch` straight against a fresh database (no broker): generated events appended in batches of any
//! size end in the log once each, in order, numbered without gaps, and the chain verifies — also when mixed with
//! rows appended one at a time by the original `audit_append`, and when several appenders race.

use std::time::Instant;

use audit::chain::{AuditRow, Provenance, TAG};
use audit::handler::{Appended, ToAppend, append_batch};
use events::Envelope;
use flows::Scenario;
use sqlx::PgPool;

use crate::helpers::*;

/// The generated events with the text and provenance the handler would see (partition by key, offsets per
/// partition in order).
fn consumed(events: &[Envelope]) -> Vec<(Envelope, String, Provenance)> {
    let mut next = [0i64; 12];
    events
        .iter()
        .map(|e| {
            let text = String::from_utf8(events::encode(e).unwrap()).unwrap();
            let key = e.partition_key();
            let partition = (key.bytes().map(u32::from).sum::<u32>() % 12) as usize;
            let provenance = Provenance {
                topic: "crypto-checkout.domain-events".into(),
                partition: partition as i32,
                offset: next[partition],
            };
            next[partition] += 1;
            (e.clone(), text, provenance)
        })
        .collect()
}

fn items(consumed: &[(Envelope, String, Provenance)]) -> Vec<ToAppend<'_>> {
    consumed
        .iter()
        .map(|(envelope, text, provenance)| ToAppend {
            envelope,
            text,
            provenance,
        })
        .collect()
}

/// Appends `items` in chunks of `chunk`, each chunk in its own transaction; returns the outcomes in order.
async fn append_in_chunks(pool: &PgPool, items: &[ToAppend<'_>], chunk: usize) -> Vec<Appended> {
    let mut out = Vec::with_capacity(items.len());
    for part in items.chunks(chunk) {
        let mut tx = pool.begin().await.unwrap();
        out.extend(append_batch(&mut tx, part).await.unwrap());
        tx.commit().await.unwrap();
    }
    out
}

async fn logged_ids(pool: &PgPool) -> Vec<uuid::Uuid> {
    sqlx::query_scalar("SELECT event_id FROM audit_log ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_any_size_log_every_event_once_in_order_and_the_chain_verifies() {
    let flows = flows::generate(&Scenario::new(611, 10, 150));
    let consumed = consumed(&flows.events);
    let items = items(&consumed);
    let order: Vec<uuid::Uuid> = flows
        .events
        .iter()
        .map(|e| e.event_id().as_uuid())
        .collect();
    for chunk in [1, 7, 500] {
        // Given a fresh log
        let db = testkit::fresh_database().await;
        // When every event is appended in batches of `chunk`
        let outcomes = append_in_chunks(&db.pool, &items, chunk).await;
        // Then each was appended as the next row, in order
        let expected: Vec<Appended> = (1..=items.len() as i64).map(Appended::Row).collect();
        assert_eq!(outcomes, expected, "chunk {chunk}");
        assert_log_matches(&db.pool, &flows.events).await;
        assert_eq!(logged_ids(&db.pool).await, order, "chunk {chunk}");
        let verification = verify(&db.pool).await;
        assert!(verification.intact(), "chunk {chunk}: {verification:?}");
        assert_eq!(verification.head_seq as usize, items.len());

        // When everything is appended again (redelivery, re-publication)
        let again = append_in_chunks(&db.pool, &items, chunk).await;
        // Then nothing changes
        assert!(
            again.iter().all(|a| *a == Appended::Duplicate),
            "chunk {chunk}"
        );
        let after = verify(&db.pool).await;
        assert!(after.intact());
        assert_eq!(
            (after.head_seq, &after.head_hash),
            (verification.head_seq, &verification.head_hash)
        );
        assert_eq!(logged_ids(&db.pool).await, order);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeats_inside_a_batch_and_already_logged_events_are_skipped_without_a_gap() {
    let flows = flows::generate(&Scenario::new(612, 2, 10));
    let consumed = consumed(&flows.events[..6]);
    let items = items(&consumed);
    let db = testkit::fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    // Given events 0 and 1 logged
    assert_eq!(
        append_batch(&mut conn, &items[..2]).await.unwrap(),
        [Appended::Row(1), Appended::Row(2)]
    );
    // When a batch repeats event 1, holds event 2 twice and event 0 again
    let batch = [
        items[1], items[2], items[3], items[2], items[0], items[4], items[4],
    ];
    let outcomes = append_batch(&mut conn, &batch).await.unwrap();
    // Then only the first sight of each new event is appended, numbered on without a gap
    use Appended::{Duplicate as D, Row};
    assert_eq!(outcomes, [D, Row(3), Row(4), D, D, Row(5), D]);
    let ids: Vec<uuid::Uuid> = [0, 1, 2, 3, 4]
        .iter()
        .map(|&i| flows.events[i].event_id().as_uuid())
        .collect();
    assert_eq!(logged_ids(&db.pool).await, ids);
    assert!(verify(&db.pool).await.intact());
    // An empty batch does nothing.
    assert!(append_batch(&mut conn, &[]).await.unwrap().is_empty());
}

/// Appends one row through the original single-row SQL function, as the first version of the handler did.
async fn append_one_by_audit_append(pool: &PgPool, item: &ToAppend<'_>) -> Option<i64> {
    let row = AuditRow::new(
        0,
        Vec::new(),
        item.envelope,
        item.text.to_string(),
        item.provenance,
        chrono::Utc::now(),
    );
    sqlx::query_scalar(
        "SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22)",
    )
    .bind(row.event_id)
    .bind(&row.event_type)
    .bind(row.event_version)
    .bind(&row.aggregate_type)
    .bind(&row.aggregate_id)
    .bind(&row.merchant_id)
    .bind(&row.invoice_id)
    .bind(&row.actor)
    .bind(&row.ip_address)
    .bind(&row.user_agent)
    .bind(&row.request_id)
    .bind(&row.source)
    .bind(&row.correlation_id)
    .bind(&row.causation_id)
    .bind(row.occurred_at)
    .bind(row.recorded_at)
    .bind(&row.kafka_topic)
    .bind(row.kafka_partition)
    .bind(row.kafka_offset)
    .bind(&row.event)
    .bind(TAG)
    .bind(row.canonical_rest())
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_of_the_single_and_the_batch_function_form_one_chain() {
    let flows = flows::generate(&Scenario::new(613, 3, 30));
    let consumed = consumed(&flows.events);
    let items = items(&consumed);
    let db = testkit::fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    // Given rows appended alternately by audit_append (one) and audit_append_batch (several)
    let mut seq = 0i64;
    for (n, part) in items.chunks(5).enumerate() {
        if n % 2 == 0 {
            for item in part {
                seq += 1;
                assert_eq!(append_one_by_audit_append(&db.pool, item).await, Some(seq));
            }
        } else {
            for outcome in append_batch(&mut conn, part).await.unwrap() {
                seq += 1;
                assert_eq!(outcome, Appended::Row(seq));
            }
        }
    }
    // Then the chain verifies (chain.rs recomputes every hash) and holds each event once, in order
    let verification = verify(&db.pool).await;
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.rows as usize, items.len());
    assert_log_matches(&db.pool, &flows.events).await;
    // And a duplicate is refused either way
    assert_eq!(append_one_by_audit_append(&db.pool, &items[3]).await, None);
    assert_eq!(
        append_batch(&mut conn, &items[6..8]).await.unwrap(),
        [Appended::Duplicate, Appended::Duplicate]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batch_appenders_keep_each_partitions_order_and_one_chain() {
    let flows = flows::generate(&Scenario::new(614, 10, 200));
    let consumed = consumed(&flows.events);
    let db = testkit::fresh_database().await;
    // Given one appender per partition, racing, each in batches of 25 (autocommit)
    let mut tasks = Vec::new();
    for partition in 0..12 {
        let mine: Vec<(Envelope, String, Provenance)> = consumed
            .iter()
            .filter(|(_, _, p)| p.partition == partition)
            .cloned()
            .collect();
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let items = items(&mine);
            let mut conn = pool.acquire().await.unwrap();
            for part in items.chunks(25) {
                append_batch(&mut conn, part).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Then every event is logged once, the chain verifies, and each partition's events are in its order
    assert_log_matches(&db.pool, &flows.events).await;
    assert!(verify(&db.pool).await.intact());
    let logged: Vec<(i32, i64)> =
        sqlx::query_as("SELECT kafka_partition, kafka_offset FROM audit_log ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    for partition in 0..12 {
        let offsets: Vec<i64> = logged
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn how_long_a_500_event_batch_takes() {
    let flows = flows::generate(&Scenario::new(615, 30, 400));
    let consumed = consumed(&flows.events);
    let items = items(&consumed);
    assert!(items.len() >= 2000, "{} events", items.len());
    let db = testkit::fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut timings = Vec::new();
    for part in items.chunks(500).take(4) {
        let started = Instant::now();
        let outcomes = append_batch(&mut conn, part).await.unwrap();
        timings.push(started.elapsed());
        assert_eq!(outcomes.len(), 500);
    }
    let again = Instant::now();
    append_batch(&mut conn, &items[..500]).await.unwrap();
    let duplicates = again.elapsed();
    println!(
        "audit append_batch of 500 events (autocommit): {timings:?}; 500 duplicates: {duplicates:?}"
    );
    assert!(verify(&db.pool).await.intact());
}
