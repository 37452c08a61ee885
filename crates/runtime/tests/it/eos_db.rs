//! Mode (b), exactly-once into PostgreSQL, through a database outage.

use std::time::Duration;

use prometheus::Registry;
use runtime::policy::{PolicyOverrides, SETTLEMENT_PROCESSING};
use runtime::{Consumer, ConsumerOptions, Guarantee, READY_BREAKER};
use service_kit::ops::Readiness;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

async fn stored_offsets(pool: &PgPool, group: &str) -> Vec<(i32, i64)> {
    sqlx::query_as("SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 ORDER BY partition")
        .bind(group)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn sink_counts(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT (partition, \"offset\")) FROM sink")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_pauses_consumption_without_dlq_or_offset_advance() {
    let db = testkit::fresh_database().await;
    sqlx::query("CREATE TABLE sink (value text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let proxy = PgProxy::start(&db.url).await;
    let consumer_pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&proxy.url(&db.url))
        .await
        .unwrap();

    let topic = topic("db-outage", 2).await;
    let policy = policy(SETTLEMENT_PROCESSING, &topic, PolicyOverrides::default());
    assert_eq!(policy.guarantee, Guarantee::ExactlyOnceDb);
    let group = policy.group.clone();
    let readiness = Readiness::default();
    let registry = Registry::new();
    let consumer = Consumer::builder(policy, kafka())
        .handler(Scripted::ok().with_db_sink())
        .database(consumer_pool)
        .registry(&registry)
        .readiness(readiness.clone())
        .options(ConsumerOptions {
            db_timeout: Duration::from_secs(5),
            ..fast_options()
        })
        .build()
        .unwrap();
    let running = Running::start(consumer);

    produce_numbered(&topic, 0, 100).await;
    let ends = end_offsets(&topic, 2);
    let expected: Vec<(i32, i64)> = ends
        .iter()
        .enumerate()
        .map(|(p, e)| (p as i32, *e))
        .collect();
    eventually_async(MINUTE, "the first 100 records stored", || async {
        stored_offsets(&db.pool, &group).await == expected
    })
    .await;
    let (g, t) = (group.clone(), topic.clone());
    let e = ends.clone();
    wait_for(MINUTE, "the informational Kafka commit", move || {
        committed(&g, &t, 2) == e
    })
    .await;

    proxy.cut();
    produce_numbered(&topic, 100, 100).await;
    eventually_async(MINUTE, "the circuit breaker to open", || async {
        readiness
            .check()
            .is_err_and(|unmet| unmet.iter().any(|u| u.starts_with(READY_BREAKER)))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stored_offsets(&db.pool, &group).await,
        expected,
        "no stored offset advances during the outage"
    );
    assert_eq!(sink_counts(&db.pool).await, (100, 100));
    let (g, t) = (group.clone(), topic.clone());
    assert_eq!(
        blocking(move || committed(&g, &t, 2)).await,
        ends,
        "no Kafka offset advances during the outage"
    );
    let state = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "checkout_consumer_circuit_breaker_state")
        .map(|f| f.get_metric()[0].get_gauge().get_value());
    assert!(
        state.is_some_and(|s| s > 0.0),
        "breaker state metric shows it open or half-open: {state:?}"
    );

    proxy.restore();
    let ends = end_offsets(&topic, 2);
    let expected: Vec<(i32, i64)> = ends
        .iter()
        .enumerate()
        .map(|(p, e)| (p as i32, *e))
        .collect();
    eventually_async(MINUTE, "processing to resume after the outage", || async {
        stored_offsets(&db.pool, &group).await == expected
    })
    .await;
    assert_eq!(
        sink_counts(&db.pool).await,
        (200, 200),
        "every record's row exactly once, nothing lost"
    );
    eventually_async(Duration::from_secs(10), "ready again", || async {
        readiness.check().is_ok()
    })
    .await;
    let letters = dead_letters(&topic, 0).await;
    assert!(letters.is_empty(), "an outage is never dead-lettered");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_mid_batch_commits_the_prefix_once_and_is_dead_lettered_alone() {
    let db = testkit::fresh_database().await;
    sqlx::query("CREATE TABLE sink (value text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let topic = topic("db-midbatch", 1).await;
    let values: Vec<String> = (0..10)
        .map(|i| {
            if i == 5 {
                "bad".into()
            } else {
                format!("v{i}")
            }
        })
        .collect();
    produce(
        &topic,
        &values.iter().map(|v| rec(0, "k", v)).collect::<Vec<_>>(),
    )
    .await;
    // A shortened business policy: one retry after 100 ms.
    let overrides = PolicyOverrides {
        retry: Some(runtime::RetryPolicy {
            max_retries: 1,
            backoff: runtime::Backoff::Fixed {
                interval: Duration::from_millis(100),
            },
        }),
        ..Default::default()
    };
    let policy = policy(SETTLEMENT_PROCESSING, &topic, overrides);
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"bad") => Err(runtime::HandlerError::business("settlement already exists")),
        _ => Ok(()),
    })
    .with_db_sink();
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(db.pool.clone())
            .options(fast_options())
            .build()
            .unwrap(),
    );
    eventually_async(MINUTE, "the stored offset past every record", || async {
        stored_offsets(&db.pool, &group).await == [(0, 10)]
    })
    .await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT value FROM sink ORDER BY \"offset\"")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let expected: Vec<String> = values.iter().filter(|v| *v != "bad").cloned().collect();
    assert_eq!(
        rows, expected,
        "the records around the failed one, each exactly once"
    );
    assert_eq!(
        handler.calls_for("bad").len(),
        2,
        "one attempt and one retry"
    );
    let letters = dead_letters(&topic, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        header(&letters[0], runtime::dlq::ATTEMPTS).as_deref(),
        Some("2")
    );
    running.stop().await;
}
