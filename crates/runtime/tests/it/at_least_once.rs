//! At-least-once consumption: DLQ routing, retry schedules, offsets committed after the DLQ ack, rebalancing,
//! graceful shutdown and the operations endpoints.

use std::time::Duration;

use prometheus::Registry;
use runtime::dlq;
use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS, WEBHOOK_DELIVERY};
use runtime::{Consumer, ConsumerOptions, HandlerError};
use service_kit::ops::{OpsServer, Readiness};

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

fn counter_value(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    registry
        .gather()
        .into_iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .find_map(|m| {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            matches.then(|| m.get_counter().get_value())
        })
}

/// Seconds between consecutive calls.
fn gaps(calls: &[Call]) -> Vec<f64> {
    calls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect()
}

fn assert_delays(observed: &[f64], expected: &[f64]) {
    assert_eq!(
        observed.len(),
        expected.len(),
        "observed {observed:?}, expected {expected:?}"
    );
    for (o, e) in observed.iter().zip(expected) {
        // Never early; late by at most 1.5 s on a loaded machine.
        assert!(
            *o >= e * 0.95 && *o <= e + 1.5,
            "delay {o:.3}s where the policy says {e}s (all: {observed:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advances_offset_past_poison_messages() {
    let topic = topic("poison", 1).await;
    let mut poison = rec(0, "inv_1", "poison");
    poison.headers = vec![("event_id".into(), "e-2".into())];
    produce(
        &topic,
        &[
            rec(0, "inv_1", "ok-0"),
            rec(0, "inv_1", "ok-1"),
            poison,
            rec(0, "inv_1", "ok-3"),
            rec(0, "inv_1", "ok-4"),
        ],
    )
    .await;
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, PolicyOverrides::default());
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"poison") => Err(HandlerError::schema("expected value at line 1 column 1")),
        _ => Ok(()),
    });
    let registry = Registry::new();
    let consumer = Consumer::builder(policy, kafka())
        .handler(handler.clone())
        .database(database().await)
        .registry(&registry)
        .options(fast_options())
        .build()
        .unwrap();
    let running = Running::start(consumer);

    let (g, t) = (group.clone(), topic.clone());
    wait_for(
        MINUTE,
        "the offset committed past the poison record",
        move || committed(&g, &t, 1) == [5],
    )
    .await;
    let letters = dead_letters(&topic, 1).await;
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    let letter = &letters[0];
    use rdkafka::Message;
    assert_eq!(letter.key(), Some(&b"inv_1"[..]), "original key");
    assert_eq!(value(letter), "poison", "original value");
    assert_eq!(
        header(letter, "event_id").as_deref(),
        Some("e-2"),
        "original headers"
    );
    let source = blocking({
        let topic = topic.clone();
        move || read_topic(&topic, "read_committed", 5, Duration::ZERO, MINUTE)
    })
    .await;
    let original_ts = source[2].timestamp().to_millis().unwrap().to_string();
    let expect = [
        (dlq::ORIGINAL_TOPIC, topic.as_str()),
        (dlq::ORIGINAL_PARTITION, "0"),
        (dlq::ORIGINAL_OFFSET, "2"),
        (dlq::ORIGINAL_TIMESTAMP, original_ts.as_str()),
        (dlq::CONSUMER_GROUP, group.as_str()),
        (dlq::ERROR_CLASS, "schema"),
        (
            dlq::ERROR_MESSAGE,
            "schema error: expected value at line 1 column 1",
        ),
        (dlq::ATTEMPTS, "1"),
    ];
    for (name, expected) in expect {
        assert_eq!(
            header(letter, name).as_deref(),
            Some(expected),
            "header {name}"
        );
    }
    for name in [dlq::FIRST_FAILURE, dlq::LAST_FAILURE] {
        let at = header(letter, name).unwrap_or_else(|| panic!("header {name}"));
        chrono::DateTime::parse_from_rfc3339(&at).unwrap_or_else(|e| panic!("{name} = {at}: {e}"));
    }
    assert_eq!(
        handler.calls_for("poison").len(),
        1,
        "a schema error is never retried"
    );
    let processed: Vec<String> = handler
        .calls()
        .into_iter()
        .filter(|c| c.value != "poison")
        .map(|c| c.value)
        .collect();
    assert_eq!(
        processed,
        ["ok-0", "ok-1", "ok-3", "ok-4"],
        "in order, past the poison record"
    );
    let labels = [("group", group.as_str()), ("error_class", "schema")];
    assert_eq!(
        counter_value(
            &registry,
            "checkout_consumer_records_dead_lettered_total",
            &labels
        ),
        Some(1.0)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_retry_in_place_with_backoff_and_never_dead_letter() {
    let topic = topic("transient", 1).await;
    produce(
        &topic,
        &[
            rec(0, "k", "before"),
            rec(0, "k", "flaky"),
            rec(0, "k", "after"),
        ],
    )
    .await;
    // webhook-delivery: transient retries wait the settings table's 1 s, then 2 s.
    let policy = policy(WEBHOOK_DELIVERY, &topic, PolicyOverrides::default());
    let group = policy.group.clone();
    let handler = Scripted::new(|r, attempt| match r.value.as_deref() {
        Some(b"flaky") if attempt < 3 => Err(HandlerError::transient("endpoint answered 503")),
        _ => Ok(()),
    });
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(database().await)
            .options(fast_options())
            .build()
            .unwrap(),
    );

    let (g, t) = (group.clone(), topic.clone());
    wait_for(MINUTE, "all three records committed", move || {
        committed(&g, &t, 1) == [3]
    })
    .await;
    let flaky = handler.calls_for("flaky");
    assert_eq!(
        flaky.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3],
        "succeeds on the third attempt"
    );
    assert_delays(&gaps(&flaky), &[1.0, 2.0]);
    let after = handler.calls_for("after");
    assert_eq!(after.len(), 1);
    assert!(
        after[0].at > flaky[2].at,
        "the next record waits for the retried one (order kept)"
    );
    let letters = dead_letters(&topic, 0).await;
    assert!(
        letters.is_empty(),
        "a transient error is never dead-lettered"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_errors_exhaust_the_policy_then_dead_letter_and_commit_only_after_the_ack() {
    // Two partitions: partition 0 holds the failing record, partition 1 must keep flowing meanwhile. The DLQ
    // refuses the dead letter at first (its records may not exceed 64 bytes): the partition stalls — alone, the
    // circuit breaker stays closed — and its offset stays at the failed record until the DLQ acknowledges it.
    let topic = topic("business", 2).await;
    produce(
        &topic,
        &[
            rec(0, "a", "p0-before"),
            rec(0, "a", "bad"),
            rec(0, "a", "p0-after"),
            rec(1, "b", "p1-a"),
        ],
    )
    .await;
    let dlq = format!("{topic}.dlq");
    testkit::set_topic_config(&dlq, "max.message.bytes", "64").await;
    // read-model-projections, the spec's real schedule: 3 retries waiting 1 s, 2 s, 4 s. A stalled write is
    // tried again after the transient cap (2 s here).
    let overrides = PolicyOverrides {
        transient_backoff_cap: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, overrides);
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"bad") => Err(HandlerError::business("invoice inv_9 does not exist")),
        _ => Ok(()),
    });
    let registry = Registry::new();
    let readiness = Readiness::default();
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(database().await)
            .registry(&registry)
            .readiness(readiness.clone())
            .options(fast_options())
            .build()
            .unwrap(),
    );

    let h = handler.clone();
    wait_for(MINUTE, "the first retry", move || {
        h.calls_for("bad").len() >= 2
    })
    .await;
    produce(&topic, &[rec(1, "b", "p1-b")]).await;
    let h = handler.clone();
    wait_for(
        Duration::from_secs(10),
        "partition 1 to flow while partition 0 retries",
        move || !h.calls_for("p1-b").is_empty(),
    )
    .await;
    assert!(
        handler.calls_for("bad").len() < 4,
        "p1-b was processed while `bad` was still being retried"
    );

    let h = handler.clone();
    wait_for(MINUTE, "the fourth and last attempt", move || {
        h.calls_for("bad").len() == 4
    })
    .await;
    let r = registry.clone();
    wait_for(
        MINUTE,
        "the refused dead letter to stall the partition",
        move || {
            counter_value(&r, "checkout_consumer_partition_stalls_total", &[])
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    produce(&topic, &[rec(1, "b", "p1-c")]).await;
    let h = handler.clone();
    wait_for(
        Duration::from_secs(10),
        "partition 1 to flow while partition 0 stalls",
        move || !h.calls_for("p1-c").is_empty(),
    )
    .await;
    assert!(
        readiness.check().is_ok(),
        "a refused dead letter does not open the consumer-wide breaker: {:?}",
        readiness.check()
    );
    let (g, t) = (group.clone(), topic.clone());
    let before_ack = blocking(move || committed(&g, &t, 2)).await;
    assert!(
        before_ack[0] <= 1,
        "committed {before_ack:?} past the failed record before its DLQ ack"
    );
    assert!(
        handler.calls_for("p0-after").is_empty(),
        "nothing of its key after the failed record runs before it is settled"
    );

    testkit::set_topic_config(&dlq, "max.message.bytes", "1048576").await;
    let (g, t) = (group.clone(), topic.clone());
    wait_for(
        MINUTE,
        "partition 0 committed past the dead letter",
        move || committed(&g, &t, 2) == [3, 3],
    )
    .await;
    let letters = dead_letters(&topic, 1).await;
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(
        header(&letters[0], dlq::ATTEMPTS).as_deref(),
        Some("4"),
        "1 attempt + 3 retries"
    );
    assert_eq!(
        header(&letters[0], dlq::ERROR_CLASS).as_deref(),
        Some("business")
    );
    assert_eq!(
        header(&letters[0], dlq::ORIGINAL_OFFSET).as_deref(),
        Some("1")
    );
    let bad = handler.calls_for("bad");
    assert_eq!(bad.len(), 4, "no attempt after the policy is exhausted");

    assert_delays(&gaps(&bad), &[1.0, 2.0, 4.0]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalance_drains_and_commits_revoked_partitions() {
    let topic = topic("rebalance", 4).await;
    produce_numbered(&topic, 0, 400).await;
    let policy = policy(
        READ_MODEL_PROJECTIONS,
        &topic,
        PolicyOverrides {
            batch_size: Some(20),
            ..Default::default()
        },
    );
    let group = policy.group.clone();
    // One handler (and call log) shared by both consumers; slow enough that the rebalance happens mid-stream.
    let handler = Scripted::new(|_, _| {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    });
    let db = database().await;
    let build = |p| {
        Consumer::builder(p, kafka())
            .handler(handler.clone())
            .database(db.clone())
            .options(fast_options())
            .build()
            .unwrap()
    };
    let first = Running::start(build(policy.clone()));
    let h = handler.clone();
    wait_for(MINUTE, "the first consumer to make progress", move || {
        h.calls().len() >= 50
    })
    .await;
    let second = Running::start(build(policy));
    let g = group.clone();
    wait_for(MINUTE, "two members with two partitions each", move || {
        let members = group_members(&g);
        members.len() == 2 && members.values().all(|ps| ps.len() == 2)
    })
    .await;
    let (g, t) = (group.clone(), topic.clone());
    let ends = end_offsets(&topic, 4);
    wait_for(MINUTE, "everything committed", move || {
        committed(&g, &t, 4) == ends
    })
    .await;
    let mut seen = std::collections::HashMap::new();
    for call in handler.calls() {
        *seen.entry((call.partition, call.offset)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 400, "every record processed");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "revoked partitions were drained and committed, so nothing runs twice: {twice:?}"
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_leaves_the_group_and_ops_endpoints_report() {
    let topic = topic("shutdown", 2).await;
    produce_numbered(&topic, 0, 50).await;
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, PolicyOverrides::default());
    let group = policy.group.clone();
    let registry = Registry::new();
    let readiness = Readiness::default();
    let ops_stop = tokio_util::sync::CancellationToken::new();
    let ops = OpsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        registry.clone(),
        readiness.clone(),
        ops_stop.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", ops.addr);
    let http = reqwest::Client::new();
    let handler = Scripted::ok();
    let consumer = Consumer::builder(policy, kafka())
        .handler(handler.clone())
        .database(database().await)
        .registry(&registry)
        .readiness(readiness.clone())
        .options(ConsumerOptions {
            commit_interval: Duration::from_secs(3600),
            ..fast_options()
        })
        .build()
        .unwrap();
    assert_eq!(
        http.get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503,
        "not ready before assignment"
    );
    let running = Running::start(consumer);
    let h = handler.clone();
    wait_for(MINUTE, "all records processed", move || {
        h.calls().len() == 50
    })
    .await;
    assert_eq!(
        http.get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // one lag sample
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        format!(
            "checkout_consumer_records_processed_total{{group=\"{group}\",topic=\"{topic}\"}} 50"
        ),
        format!(
            "checkout_consumer_lag_messages{{group=\"{group}\",partition=\"0\",topic=\"{topic}\"}} 0"
        ),
        format!("checkout_consumer_circuit_breaker_state{{group=\"{group}\"}} 0"),
        format!("checkout_consumer_assigned_partitions{{group=\"{group}\"}} 2"),
        "checkout_consumer_processing_seconds_bucket".to_string(),
        "checkout_consumer_end_to_end_latency_seconds_bucket".to_string(),
        "checkout_consumer_rebalances_total".to_string(),
    ] {
        assert!(
            metrics.contains(&needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    // The periodic commit is an hour away: only the shutdown commits.
    let (g, t) = (group.clone(), topic.clone());
    assert_eq!(blocking(move || committed(&g, &t, 2)).await, [-1, -1]);
    running.stop().await;
    let (g, t) = (group.clone(), topic.clone());
    let ends = end_offsets(&topic, 2);
    assert_eq!(
        blocking(move || committed(&g, &t, 2)).await,
        ends,
        "the shutdown committed everything done"
    );
    let g = group.clone();
    assert!(
        blocking(move || group_members(&g)).await.is_empty(),
        "the consumer left its group"
    );
    assert_eq!(
        http.get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    ops_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_reported_per_partition_from_the_watermarks() {
    let topic = topic("lag", 2).await;
    // Partition 0: five records go through, the sixth is stuck (transient forever), four more wait behind it.
    let records: Vec<In> = (0..10).map(|i| rec(0, "k", &format!("p0-{i}"))).collect();
    produce(&topic, &records).await;
    produce(&topic, &[rec(1, "k", "p1-0"), rec(1, "k", "p1-1")]).await;
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, PolicyOverrides::default());
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"p0-5") => Err(HandlerError::transient("lock timeout")),
        _ => Ok(()),
    });
    let registry = Registry::new();
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler)
            .database(database().await)
            .registry(&registry)
            .options(fast_options())
            .build()
            .unwrap(),
    );
    let gauge = move |partition: &str| -> Option<f64> {
        registry
            .gather()
            .into_iter()
            .filter(|f| f.name() == "checkout_consumer_lag_messages")
            .flat_map(|f| f.get_metric().to_vec())
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "partition" && l.value() == partition)
            })
            .map(|m| m.get_gauge().get_value())
    };
    let g = gauge.clone();
    wait_for(
        MINUTE,
        "lag 5 on partition 0 and 0 on partition 1",
        move || g("0") == Some(5.0) && g("1") == Some(0.0),
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_wait_longer_than_the_poll_interval_keeps_the_consumer_in_its_group() {
    let topic = topic("long-wait", 2).await;
    produce(
        &topic,
        &[
            rec(0, "a", "slow"),
            rec(0, "a", "next"),
            rec(1, "b", "other"),
        ],
    )
    .await;
    // The member is evicted when it does not poll for 13 s (or heartbeat for 6 s); the retry waits 16 s.
    let overrides = PolicyOverrides {
        session_timeout: Some(Duration::from_secs(6)),
        heartbeat_interval: Some(Duration::from_secs(1)),
        retry: Some(runtime::RetryPolicy {
            max_retries: 1,
            backoff: runtime::Backoff::Fixed {
                interval: Duration::from_secs(16),
            },
        }),
        ..Default::default()
    };
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, overrides);
    let group = policy.group.clone();
    let options = ConsumerOptions {
        max_poll_interval: Duration::from_secs(13),
        drain_timeout: Duration::from_secs(1),
        db_timeout: Duration::from_secs(2),
        ..fast_options()
    };
    let handler = Scripted::new(|r, attempt| match r.value.as_deref() {
        Some(b"slow") if attempt == 1 => Err(HandlerError::business("the merchant is locked")),
        _ => Ok(()),
    });
    let registry = Registry::new();
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(database().await)
            .registry(&registry)
            .options(options)
            .build()
            .unwrap(),
    );
    let (g, t) = (group.clone(), topic.clone());
    wait_for(MINUTE, "everything committed", move || {
        committed(&g, &t, 2) == [2, 1]
    })
    .await;
    assert_delays(&gaps(&handler.calls_for("slow")), &[16.0]);
    for kind in ["revoke", "lost"] {
        let n = counter_value(
            &registry,
            "checkout_consumer_rebalances_total",
            &[("kind", kind)],
        );
        assert!(
            n.is_none_or(|n| n == 0.0),
            "{kind} happened {n:?} times: the consumer left its group"
        );
    }
    assert_eq!(
        counter_value(
            &registry,
            "checkout_consumer_rebalances_total",
            &[("kind", "assign")]
        ),
        Some(1.0)
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_and_resuming_backlogged_partitions_never_reorders_or_duplicates() {
    const PER_PARTITION: i64 = 3000;
    let topic = topic("backpressure", 2).await;
    for p in 0..2 {
        let records: Vec<In> = (0..PER_PARTITION)
            .map(|i| rec(p, "k", &format!("{p}-{i}-{}", "x".repeat(80))))
            .collect();
        produce(&topic, &records).await;
    }
    // Small batches, the smallest buffer and a slowish handler: the partitions are paused and resumed many times.
    let policy = policy(
        READ_MODEL_PROJECTIONS,
        &topic,
        PolicyOverrides {
            batch_size: Some(10),
            ..Default::default()
        },
    );
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| {
        if r.offset % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    });
    let registry = Registry::new();
    let options = ConsumerOptions {
        buffer_bytes_per_partition: 64 << 10,
        ..fast_options()
    };
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(database().await)
            .registry(&registry)
            .options(options)
            .build()
            .unwrap(),
    );
    let (g, t) = (group.clone(), topic.clone());
    wait_for(MINUTE, "everything committed", move || {
        committed(&g, &t, 2) == [PER_PARTITION, PER_PARTITION]
    })
    .await;
    running.stop().await;
    for p in 0..2 {
        let offsets: Vec<i64> = handler
            .calls()
            .iter()
            .filter(|c| c.partition == p)
            .map(|c| c.offset)
            .collect();
        assert_eq!(
            offsets,
            (0..PER_PARTITION).collect::<Vec<_>>(),
            "partition {p}: each offset once, in order"
        );
    }
    let pauses = counter_value(
        &registry,
        "checkout_consumer_partition_pauses_total",
        &[("group", group.as_str())],
    );
    assert!(
        pauses.is_some_and(|n| n >= 2.0),
        "the backlog paused the partitions ({pauses:?} pauses)"
    );
}
