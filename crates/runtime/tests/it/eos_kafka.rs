//! Mode (a), exactly-once within Kafka: outputs, dead letters and offsets commit together.

use std::time::Duration;

use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS};
use runtime::{Consumer, Guarantee, HandlerError};

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_dead_letters_commit_atomically_with_the_offsets() {
    let input = topic("eos-a-unit-in", 2).await;
    let output = topic("eos-a-unit-out", 2).await;
    let mut records: Vec<In> = (0..20)
        .map(|i| rec(i % 2, &i.to_string(), &i.to_string()))
        .collect();
    records[7].value = "poison".into();
    produce(&input, &records).await;
    let overrides = PolicyOverrides {
        guarantee: Some(Guarantee::ExactlyOnceKafka),
        ..Default::default()
    };
    let policy = policy(READ_MODEL_PROJECTIONS, &input, overrides);
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
