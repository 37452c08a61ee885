//! `apply_batch` directly against the database (no broker): generated flows applied in batches of 1, 7 and 500
//! end equal to the generator's truth and, column for column (versions and `last_event_*` included), to the
//! per-event SQL the read models had before (`oracle.rs`) — also with stale facts re-emitted under new event ids;
//! applying everything again changes nothing; a batch with an event about an unknown invoice fails at that
//! event's index and leaves nothing behind; a second owner of the same keys waits for the first to commit.

use std::time::{Duration, Instant};

use events::{Envelope, EventId, EventType, examples};
use flows::{Scenario, check};
use projections::apply::{Applied, ApplyError, BatchFailed, apply_batch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::helpers::snapshot;
use crate::oracle;

/// Applies `events` in consecutive chunks of `size` (which keeps every key's events in order), one transaction
/// per chunk; returns the outcomes, the statements per chunk and the time taken.
async fn apply_in_chunks(
    pool: &PgPool,
    events: &[Envelope],
    size: usize,
) -> (Vec<Applied>, Vec<usize>, Duration) {
    let started = Instant::now();
    let (mut outcomes, mut statements) = (Vec::new(), Vec::new());
    for chunk in events.chunks(size) {
        let mut tx = pool.begin().await.unwrap();
        let done = apply_batch(&mut tx, chunk)
            .await
            .unwrap_or_else(|e| panic!("a batch of the flow failed: {e:?}"));
        tx.commit().await.unwrap();
        assert_eq!(done.outcomes.len(), chunk.len());
        outcomes.extend(done.outcomes);
        statements.push(done.statements);
    }
    (outcomes, statements, started.elapsed())
}

/// Fails listing the first rows only in `actual` or only in `expected` (snapshots of [`snapshot`]).
fn assert_same_rows(actual: &[String], expected: &[String], what: &str) {
    if actual == expected {
        return;
    }
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let b: std::collections::HashSet<&String> = b.iter().collect();
        a.iter()
            .filter(|r| !b.contains(r))
            .take(8)
            .cloned()
            .collect()
    };
    panic!(
        "{what} ({} rows vs {} expected)\nonly in actual:\n  {}\nonly in expected:\n  {}",
        actual.len(),
        expected.len(),
        only(actual, expected).join("\n  "),
        only(expected, actual).join("\n  ")
    );
}

async fn assert_truth(pool: &PgPool, truth: &flows::Truth, what: &str) {
    let actual = check::projections(pool).await.unwrap();
    let differences = check::projections_diff(truth, &actual);
    assert!(
        differences.is_empty(),
        "{what}: the read models differ from the truth:\n{}",
        differences.join("\n")
    );
}

/// `events` with about one in ten re-emitted under a fresh event id further down the list: stale and repeated
/// facts (a second creation, detection, confirmation, failure, settlement outcome, …) the rules must absorb.
fn with_restated_facts(events: &[Envelope], seed: u64) -> Vec<Envelope> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Envelope> = events.to_vec();
    for (i, event) in events.iter().enumerate() {
        if rng.random_bool(0.1) {
            let mut parts = event.clone().into_parts();
            parts.event_id = EventId::new();
            let at = rng.random_range(i + 1..=events.len());
            let restated = Envelope::from_parts(parts).unwrap();
            // Positions shift as copies are inserted; anywhere after the original keeps it after the original.
            let at = at.min(out.len());
            let original = out
                .iter()
                .position(|e| e.event_id() == event.event_id())
                .unwrap();
            out.insert(at.max(original + 1), restated);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_any_size_equal_the_truth_and_the_per_event_sql() {
    let flows = flows::generate(&Scenario::new(606, 20, 300));
    let n = flows.events.len();

    // The reference: the per-event SQL, one transaction per event.
    let reference = testkit::fresh_database().await;
    let started = Instant::now();
    for event in &flows.events {
        let mut tx = reference.pool.begin().await.unwrap();
        assert_eq!(
            oracle::apply(&mut tx, event).await.unwrap(),
            oracle::Applied::Applied
        );
        tx.commit().await.unwrap();
    }
    let per_event = started.elapsed();
    assert_truth(&reference.pool, &flows.truth, "per-event SQL").await;
    let expected = snapshot(&reference.pool).await;
    println!(
        "per-event SQL: {n} events in {:.0} ms ({:.0} events/s)",
        per_event.as_secs_f64() * 1e3,
        n as f64 / per_event.as_secs_f64()
    );

    for size in [1, 7, 500] {
        let db = testkit::fresh_database().await;
        let (outcomes, statements, took) = apply_in_chunks(&db.pool, &flows.events, size).await;
        assert!(outcomes.iter().all(|o| *o == Applied::Applied));
        assert_truth(&db.pool, &flows.truth, &format!("batches of {size}")).await;
        assert_same_rows(
            &snapshot(&db.pool).await,
            &expected,
            &format!("batches of {size} differ from the per-event SQL"),
        );
        println!(
            "batches of {size:>3}: {n} events in {:.0} ms ({:.0} events/s), {} statements in all, at most {} per batch",
            took.as_secs_f64() * 1e3,
            n as f64 / took.as_secs_f64(),
            statements.iter().sum::<usize>(),
            statements.iter().max().unwrap()
        );

        // Everything again, in other chunks: all duplicates, not a byte changed.
        let before = snapshot(&db.pool).await;
        let (again, _, _) = apply_in_chunks(&db.pool, &flows.events, 97).await;
        assert!(again.iter().all(|o| *o == Applied::Duplicate));
        assert_same_rows(
            &snapshot(&db.pool).await,
            &before,
            "re-applying changed the read models",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_and_repeated_facts_under_new_ids_fold_like_the_per_event_sql() {
    let flows = flows::generate(&Scenario::new(607, 10, 150));
    let events = with_restated_facts(&flows.events, 607);
    assert!(events.len() > flows.events.len());

    let reference = testkit::fresh_database().await;
    for event in &events {
        let mut tx = reference.pool.begin().await.unwrap();
        oracle::apply(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
    }
    let expected = snapshot(&reference.pool).await;
    for size in [1, 7, 500] {
        let db = testkit::fresh_database().await;
        apply_in_chunks(&db.pool, &events, size).await;
        assert_same_rows(
            &snapshot(&db.pool).await,
            &expected,
            &format!("batches of {size} differ from the per-event SQL on restated facts"),
        );
    }
}

/// A `ByService` scenario with the settlement events the settlement service must write (held for suspended
/// merchants, released on reinstatement, still held at the horizon): the read models equal that mode's truth —
/// settlements, balances, histories, reinstated merchants — and the per-event SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn by_service_flows_with_the_expected_settlements_equal_their_truth() {
    let flows = flows::generate(&Scenario::new(616, 25, 400).settled_by_service());
    let events = flows.events_with_expected_settlements();
    assert!(
        flows
            .expected_settlements()
            .iter()
            .any(|x| x.held && x.status == "completed")
    );
    let reference = testkit::fresh_database().await;
    for event in &events {
        let mut tx = reference.pool.begin().await.unwrap();
        oracle::apply(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_truth(&reference.pool, &flows.truth, "per-event SQL, ByService").await;
    let expected = snapshot(&reference.pool).await;
    for size in [7, 500] {
        let db = testkit::fresh_database().await;
        apply_in_chunks(&db.pool, &events, size).await;
        assert_truth(
            &db.pool,
            &flows.truth,
            &format!("ByService, batches of {size}"),
        )
        .await;
        assert_same_rows(
            &snapshot(&db.pool).await,
            &expected,
            &format!("ByService batches of {size} differ from the per-event SQL"),
        );
    }
}

/// A merchant suspended, reinstated, suspended again and reinstated again, with stale restatements of each
/// fact in between: the fold and the per-event SQL agree on every column, in batches of any size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspensions_and_reinstatements_fold_like_the_per_event_sql() {
    use events::EventData;
    let base = examples::example(EventType::MerchantCreated).timestamp();
    let at = |hours: i64| base + chrono::TimeDelta::hours(hours);
    let event = |t: EventType, hours: i64| {
        let mut parts = examples::example(t).into_parts();
        parts.event_id = EventId::new();
        parts.timestamp = at(hours);
        match &mut parts.event_data {
            EventData::MerchantSuspended(e) => e.suspended_at = at(hours),
            EventData::MerchantReinstated(e) => e.reinstated_at = at(hours),
            _ => {}
        }
        Envelope::from_parts(parts).unwrap()
    };
    let (created, suspended, reinstated) = (
        EventType::MerchantCreated,
        EventType::MerchantSuspended,
        EventType::MerchantReinstated,
    );
    let events = [
        event(created, 0),
        event(reinstated, 1), // never suspended
        event(suspended, 2),
        event(suspended, 3), // an ongoing suspension keeps its start
        event(reinstated, 4),
        event(suspended, 2), // stale: reinstated since
        event(reinstated, 4),
        event(suspended, 5),
        event(reinstated, 4), // stale: suspended since
        event(reinstated, 6),
        event(suspended, 7),
    ];
    let reference = testkit::fresh_database().await;
    for event in &events {
        let mut tx = reference.pool.begin().await.unwrap();
        oracle::apply(&mut tx, event).await.unwrap();
        tx.commit().await.unwrap();
    }
    let expected = snapshot(&reference.pool).await;
    let (status, suspended_at, reinstated_at): (
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as("SELECT status, suspended_at, reinstated_at FROM proj_merchants")
        .fetch_one(&reference.pool)
        .await
        .unwrap();
    assert_eq!(
        (status.as_str(), suspended_at, reinstated_at),
        ("suspended", at(7), at(6))
    );
    for size in [1, 3, 500] {
        let db = testkit::fresh_database().await;
        apply_in_chunks(&db.pool, &events, size).await;
        assert_same_rows(
            &snapshot(&db.pool).await,
            &expected,
            &format!(
                "batches of {size} differ from the per-event SQL on suspensions and reinstatements"
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_within_a_batch_are_recognised() {
    let flows = flows::generate(&Scenario::new(608, 2, 10));
    let db = testkit::fresh_database().await;
    let mut batch: Vec<Envelope> = flows.events[..10].to_vec();
    batch.insert(5, flows.events[2].clone());
    batch.push(flows.events[9].clone());
    let mut tx = db.pool.begin().await.unwrap();
    let done = apply_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    let duplicates: Vec<usize> = done
        .outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == Applied::Duplicate)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(duplicates, [5, 11]);

    // Applying the rest on top equals applying the flow once.
    let (_, _, _) = apply_in_chunks(&db.pool, &flows.events[10..], 50).await;
    assert_truth(&db.pool, &flows.truth, "with in-batch duplicates").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_about_an_unknown_invoice_fails_the_batch_at_its_index_and_leaves_nothing() {
    let flows = flows::generate(&Scenario::new(609, 5, 60));
    let db = testkit::fresh_database().await;
    let half = flows.events.len() / 2;
    apply_in_chunks(&db.pool, &flows.events[..half], 100).await;
    let before = snapshot(&db.pool).await;

    let k = 13;
    let mut batch: Vec<Envelope> = flows.events[half..half + 30].to_vec();
    // A payment of an invoice the read models never saw created.
    batch.insert(k, examples::example(EventType::PaymentDetected));
    let mut tx = db.pool.begin().await.unwrap();
    let failed = apply_batch(&mut tx, &batch).await.unwrap_err();
    tx.rollback().await.unwrap();
    match failed {
        BatchFailed {
            index: Some(i),
            error: ApplyError::Unknown(why),
        } => {
            assert_eq!(i, k);
            assert!(why.contains("invoice"), "{why}");
        }
        other => panic!("expected the batch to fail at {k}, got {other:?}"),
    }
    assert_same_rows(
        &snapshot(&db.pool).await,
        &before,
        "a failed batch left something behind",
    );

    // Without it, the same batch applies (which is what the runtime does next).
    batch.remove(k);
    let mut tx = db.pool.begin().await.unwrap();
    let done = apply_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert!(done.outcomes.iter().all(|o| *o == Applied::Applied));
    apply_in_chunks(&db.pool, &flows.events[half + 30..], 100).await;
    assert_truth(&db.pool, &flows.truth, "after the failed batch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_owner_of_the_same_keys_waits_for_the_first_and_sees_its_work() {
    let flows = flows::generate(&Scenario::new(610, 3, 30));
    let db = testkit::fresh_database().await;
    let batch: Vec<Envelope> = flows.events[..40].to_vec();

    // The zombie: applied, not committed yet.
    let mut zombie = db.pool.begin().await.unwrap();
    apply_batch(&mut zombie, &batch).await.unwrap();

    // The new owner of the partition gets the same records.
    let owner = {
        let (pool, batch) = (db.pool.clone(), batch.clone());
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let done = apply_batch(&mut tx, &batch).await.unwrap();
            tx.commit().await.unwrap();
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !owner.is_finished(),
        "the new owner must wait for the zombie's locks"
    );
    zombie.commit().await.unwrap();
    let done = owner.await.unwrap();
    assert!(
        done.outcomes.iter().all(|o| *o == Applied::Duplicate),
        "after the zombie's commit, its events are duplicates to the new owner"
    );
}
