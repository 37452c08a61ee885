//! Mode (a), exactly-once within Kafka: outputs, dead letters and offsets commit together.

use std::time::Duration;

use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS};
use runtime::{Consumer, ConsumerOptions, GroupPolicy, Guarantee, HandlerError};

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

/// The projections policy over `input`, in mode (a), with a group of its own.
fn mode_a(input: &str) -> GroupPolicy {
    let overrides = PolicyOverrides {
        guarantee: Some(Guarantee::ExactlyOnceKafka),
        ..Default::default()
    };
    policy(READ_MODEL_PROJECTIONS, input, overrides)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_dead_letters_commit_atomically_with_the_offsets() {
    let input = topic("eos-a-unit-in", 2).await;
    let output = topic("eos-a-unit-out", 2).await;
    let mut records: Vec<In> = (0..20)
        .map(|i| rec(i % 2, &i.to_string(), &i.to_string()))
        .collect();
    records[7].value = "poison".into();
    produce(&input, &records).await;
    let policy = mode_a(&input);
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"poison") => Err(HandlerError::schema("unknown event_version 9")),
        _ => Ok(()),
    })
    .with_output(&output);
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler)
            .database(database().await)
            .options(fast_options())
            .build()
            .unwrap(),
    );
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "all input committed", move || {
        committed(&g, &t, 2) == [10, 10]
    })
    .await;
    running.stop().await;
    let out = blocking(move || {
        read_topic(
            &output,
            "read_committed",
            19,
            Duration::from_secs(1),
            MINUTE,
        )
    })
    .await;
    let mut values: Vec<String> = out.iter().map(value).collect();
    values.sort_by_key(|v| v.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..20).filter(|i| *i != 7).map(|i| i.to_string()).collect();
    assert_eq!(values, expected, "every output exactly once");
    let letters = dead_letters(&input, 1).await;
    assert_eq!(
        letters.len(),
        1,
        "the dead letter is committed with the offsets"
    );
    assert_eq!(value(&letters[0]), "poison");
}

/// A transaction that holds only offsets is committed at at-least-once's `commit_interval`, not every
/// `transaction_commit_interval`: nobody waits to read it. The first output in it makes it due at the short
/// interval, and it carries the offsets done before it along; a graceful stop commits what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_offsets_alone_waits_for_the_offset_cadence_and_an_output_makes_it_due() {
    let input = topic("eos-a-cadence-in", 1).await;
    let output = topic("eos-a-cadence-out", 1).await;
    let quiet = |from: usize, n: usize| -> Vec<In> {
        (from..from + n)
            .map(|i| rec(0, &i.to_string(), "quiet"))
            .collect()
    };
    produce(&input, &quiet(0, 50)).await;
    let policy = mode_a(&input);
    let group = policy.group.clone();
    let handler = Scripted::ok().with_output_of(&output, |v| v == "loud");
    let calls = handler.calls.clone();
    let options = ConsumerOptions {
        // Longer than this test: only an output or the stop can commit.
        commit_interval: Duration::from_secs(240),
        transaction_commit_interval: Duration::from_millis(100),
        ..fast_options()
    };
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler)
            .database(database().await)
            .options(options)
            .build()
            .unwrap(),
    );
    let handled = move |n: usize| {
        let calls = calls.clone();
        move || calls.lock().unwrap().len() >= n
    };
    wait_for(MINUTE, "the 50 quiet records handled", handled(50)).await;
    // Ten transaction intervals later, offsets alone are still uncommitted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (g, t) = (group.clone(), input.clone());
    assert_eq!(
        blocking(move || committed(&g, &t, 1)).await,
        [-1],
        "a transaction of offsets alone waits for commit_interval"
    );
    produce(&input, &[rec(0, "50", "loud")]).await;
    let (g, t) = (group.clone(), input.clone());
    // Well within the 240 s offset cadence: the output made the transaction due.
    wait_for(MINUTE, "the output's transaction committed", move || {
        committed(&g, &t, 1) == [51]
    })
    .await;
    let out =
        blocking(move || read_topic(&output, "read_committed", 1, Duration::from_secs(1), MINUTE))
            .await;
    assert_eq!(out.iter().map(value).collect::<Vec<_>>(), ["loud"]);
    produce(&input, &quiet(51, 10)).await;
    wait_for(MINUTE, "the 10 later quiet records handled", handled(61)).await;
    running.stop().await;
    assert_eq!(
        blocking(move || committed(&group, &input, 1)).await,
        [61],
        "a graceful stop commits the offsets-only transaction"
    );
}

/// A lane left with offsets alone commits them when `commit_interval` has passed, without waiting for more work
/// or a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_alone_are_committed_by_the_idle_lane_after_the_offset_cadence() {
    let input = topic("eos-a-idle-in", 1).await;
    let output = topic("eos-a-idle-out", 1).await;
    let records: Vec<In> = (0..20).map(|i| rec(0, &i.to_string(), "quiet")).collect();
    produce(&input, &records).await;
    let policy = mode_a(&input);
    let group = policy.group.clone();
    let options = ConsumerOptions {
        commit_interval: Duration::from_secs(2),
        ..fast_options()
    };
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(Scripted::ok().with_output_of(&output, |v| v == "loud"))
            .database(database().await)
            .options(options)
            .build()
            .unwrap(),
    );
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "the idle lane's offsets committed", move || {
        committed(&g, &t, 1) == [20]
    })
    .await;
    running.stop().await;
}
