//! `aggregate_batch` straight against a fresh database (no broker): generated flows and checkout views pushed
//! through it in batches of 1, 7 and 1000 — each partition's records in order, one transaction per batch as in
//! mode (b) — end in exactly the aggregates the generator expects; applying everything again changes nothing;
//! an unknown invoice fails the batch at its index and leaves no trace.

use std::time::Instant;

use analytics::aggregate::{Outcome, Shard, aggregate_batch};
use analytics::checkout_events::{Input, decode};
use events::EventType;
use flows::{Flows, Scenario, check};
use sqlx::PgPool;

use crate::helpers::snapshot;

const GROUP: &str = "analytics-aggregation";
const PARTITIONS: u32 = 12;

/// The records of both topics as one lane per (topic, partition) would see them, in order.
fn lanes(flows: &Flows) -> Vec<(Shard, Vec<Input>)> {
    lanes_of(flows, &flows.events)
}

/// [`lanes`] with `events` as the domain events.
fn lanes_of(flows: &Flows, events: &[events::Envelope]) -> Vec<(Shard, Vec<Input>)> {
    let partition = |key: &str| (key.bytes().map(u32::from).sum::<u32>() % PARTITIONS) as i32;
    let mut lanes: Vec<(Shard, Vec<Input>)> = Vec::new();
    let mut push = |topic: &str, key: &str, input: Input| {
        let shard = Shard {
            topic: topic.to_string(),
            partition: partition(key),
        };
        match lanes.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, inputs)) => inputs.push(input),
            None => lanes.push((shard, vec![input])),
        }
    };
    for event in events {
        push(
            "domain-events",
            &event.partition_key(),
            Input::Domain(Box::new(event.clone())),
        );
    }
    for record in &flows.analytics {
        push(
            "analytics-events",
            &record.key,
            decode(&record.value).expect("a valid view"),
        );
    }
    lanes
}

/// Applies every lane in batches of `chunk`, taking one batch of each lane in turn, each batch in its own
/// transaction; returns the outcomes.
async fn apply_all(pool: &PgPool, lanes: &[(Shard, Vec<Input>)], chunk: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut cursors = vec![0usize; lanes.len()];
    loop {
        let mut progressed = false;
        for ((shard, inputs), cursor) in lanes.iter().zip(cursors.iter_mut()) {
            if *cursor >= inputs.len() {
                continue;
            }
            let end = (*cursor + chunk).min(inputs.len());
            let mut tx = pool.begin().await.unwrap();
            let batch = aggregate_batch(&mut tx, GROUP, shard, &inputs[*cursor..end])
                .await
                .unwrap_or_else(|e| panic!("{shard:?} batch at {}: {e:?}", *cursor));
            tx.commit().await.unwrap();
            outcomes.extend(batch);
            *cursor = end;
            progressed = true;
        }
        if !progressed {
            return outcomes;
        }
    }
}

async fn processed(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer_group = $1")
        .bind(GROUP)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_any_size_aggregate_exactly_the_truth_and_a_second_pass_changes_nothing() {
    let flows = flows::generate(&Scenario::new(711, 15, 250));
    let lanes = lanes(&flows);
    let total = flows.events.len() + flows.analytics.len();
    for chunk in [1, 7, 1000] {
        // Given a fresh database
        let db = testkit::fresh_database().await;
        // When every record is aggregated in batches of `chunk`
        let outcomes = apply_all(&db.pool, &lanes, chunk).await;
        // Then each counted once and the aggregates are the truth
        assert_eq!(outcomes.len(), total);
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Aggregated),
            "chunk {chunk}"
        );
        let actual = check::analytics(&db.pool).await.unwrap();
        let differences = check::analytics_diff(&flows.truth, &actual);
        assert!(
            differences.is_empty(),
            "chunk {chunk}:\n{}",
            differences.join("\n")
        );
        assert_eq!(processed(&db.pool).await as usize, total);

        // When everything is applied again (redelivered or re-published)
        let before = snapshot(&db.pool).await;
        let again = apply_all(&db.pool, &lanes, chunk).await;
        // Then every record is a duplicate and nothing changed
        assert!(
            again.iter().all(|o| *o == Outcome::Duplicate),
            "chunk {chunk}"
        );
        assert_eq!(snapshot(&db.pool).await, before, "chunk {chunk}");
        assert_eq!(processed(&db.pool).await as usize, total);
    }
}

/// A `ByService` scenario with the settlement events the settlement service must write: fees and net settled
/// per day by the `SettlementCompleted`s (at T, or at the reinstatement for a held one) equal that mode's truth;
/// the held ones' `SettlementFailed` and the reinstatements change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn by_service_flows_with_the_expected_settlements_aggregate_their_truth() {
    let flows = flows::generate(&Scenario::new(716, 25, 400).settled_by_service());
    let events = flows.events_with_expected_settlements();
    assert!(events.len() > flows.events.len());
    let db = testkit::fresh_database().await;
    apply_all(&db.pool, &lanes_of(&flows, &events), 50).await;
    let actual = check::analytics(&db.pool).await.unwrap();
    let differences = check::analytics_diff(&flows.truth, &actual);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeats_inside_a_batch_count_once() {
    let flows = flows::generate(&Scenario::new(712, 3, 20));
    let lanes = lanes(&flows);
    let (shard, inputs) = lanes
        .iter()
        .find(|(s, inputs)| s.topic == "domain-events" && inputs.len() >= 4)
        .unwrap();
    let db = testkit::fresh_database().await;
    // Given a lane's records, each sent twice in a row within one batch
    let doubled: Vec<Input> = inputs.iter().flat_map(|i| [i.clone(), i.clone()]).collect();
    let mut tx = db.pool.begin().await.unwrap();
    let outcomes = aggregate_batch(&mut tx, GROUP, shard, &doubled)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Then the first of each pair is aggregated, the second is a duplicate
    for pair in outcomes.chunks(2) {
        assert_eq!(pair, [Outcome::Aggregated, Outcome::Duplicate]);
    }
    let once = snapshot(&db.pool).await;
    // And the same records once each, in another database, give the same aggregates
    let other = testkit::fresh_database().await;
    let mut tx = other.pool.begin().await.unwrap();
    aggregate_batch(&mut tx, GROUP, shard, inputs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(snapshot(&other.pool).await, once);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_invoice_fails_the_batch_at_its_index_and_leaves_nothing() {
    let flows = flows::generate(&Scenario::new(713, 3, 20));
    let lanes = lanes(&flows);
    let (shard, inputs) = lanes
        .iter()
        .find(|(s, inputs)| s.topic == "domain-events" && inputs.len() >= 3)
        .unwrap();
    let db = testkit::fresh_database().await;
    // Given a batch with a confirmation of an invoice never created at index 2
    let orphan = Input::Domain(Box::new(events::examples::example(
        EventType::PaymentConfirmed,
    )));
    let mut batch = inputs[..2].to_vec();
    batch.push(orphan);
    batch.extend(inputs[2..].iter().cloned());
    // When it is aggregated
    let mut tx = db.pool.begin().await.unwrap();
    let failure = aggregate_batch(&mut tx, GROUP, shard, &batch)
        .await
        .expect_err("an unknown invoice");
    tx.rollback().await.unwrap();
    // Then the failure names index 2, a business error, and nothing was kept
    assert_eq!(failure.index, Some(2));
    let error = runtime::HandlerError::from(failure.error);
    assert_eq!(error.class(), runtime::ErrorClass::Business);
    assert!(
        error.chain().contains("unknown to analytics"),
        "{}",
        error.chain()
    );
    assert!(snapshot(&db.pool).await.is_empty());
    assert_eq!(processed(&db.pool).await, 0);
    // And without it the batch goes through
    batch.remove(2);
    let mut tx = db.pool.begin().await.unwrap();
    aggregate_batch(&mut tx, GROUP, shard, &batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(processed(&db.pool).await as usize, batch.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn how_long_a_1000_event_batch_takes() {
    let flows = flows::generate(&Scenario::new(714, 30, 3000));
    let lanes = lanes(&flows);
    let db = testkit::fresh_database().await;
    let mut timings = Vec::new();
    for (shard, inputs) in lanes
        .iter()
        .filter(|(_, inputs)| inputs.len() >= 1000)
        .take(4)
    {
        let started = Instant::now();
        let mut tx = db.pool.begin().await.unwrap();
        aggregate_batch(&mut tx, GROUP, shard, &inputs[..1000])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        timings.push(started.elapsed());
    }
    assert!(!timings.is_empty(), "no lane of 1000 records");
    let (shard, inputs) = lanes.iter().find(|(_, i)| i.len() >= 1000).unwrap();
    let started = Instant::now();
    let mut tx = db.pool.begin().await.unwrap();
    aggregate_batch(&mut tx, GROUP, shard, &inputs[..1000])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    println!(
        "analytics aggregate_batch of 1000 records (incl. commit): {timings:?}; 1000 duplicates: {:?}",
        started.elapsed()
    );
}
