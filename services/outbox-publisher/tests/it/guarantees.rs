//! Nothing lost, per-key commit order with several replicas, validation in the caller's transaction,
//! NOTIFY wake-up, operations endpoints and graceful shutdown.

use std::time::{Duration, Instant};

use events::{EventType, InvoiceId};
use rand::Rng;
use testkit::{create_topic, fresh_database, infra};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_lost_and_per_key_commit_order_with_late_commits_and_three_replicas() {
    let db = fresh_database().await;
    create_sequences(&db.pool).await;
    let topic = create_topic(12).await;
    let bootstrap = infra().bootstrap_servers.clone();
    let mut publishers = Vec::new();
    for _ in 0..3 {
        publishers.push(start_publisher(config(&bootstrap, &db.url, &topic)).await);
    }

    // 8 writers, 40 keys, 1–3 events a transaction; one transaction in five lingers up to 40 ms while holding
    // its ids, so later ids of other keys commit before it (the late-commit trap).
    let keys: Vec<InvoiceId> = (0..40).map(|_| InvoiceId::new()).collect();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let pool = db.pool.clone();
        let keys = keys.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..60 {
                let (key, count, linger) = {
                    let mut rng = rand::rng();
                    let linger = if rng.random_bool(0.2) {
                        rng.random_range(5..40)
                    } else {
                        0
                    };
                    (
                        keys[rng.random_range(0..keys.len())],
                        rng.random_range(1..=3),
                        Duration::from_millis(linger),
                    )
                };
                write_events(&pool, key, count, linger).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = sequences(&db.pool).await;
    let total: u64 = expected.values().sum();

    let received = tokio::task::spawn_blocking(move || {
        read_all(&bootstrap, &topic, total as usize, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let duplicates = assert_complete_and_ordered(&received, &expected);
    assert_eq!(
        duplicates, 0,
        "no publisher crashed, so there must be no duplicates"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_rows(&db.pool).await > 0 {
        assert!(Instant::now() < deadline, "published rows were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for publisher in publishers {
        publisher.stop().await;
    }
}

#[tokio::test]
async fn an_invalid_event_fails_the_callers_transaction_and_nothing_is_written() {
    let db = fresh_database().await;
    let mut tx = db.pool.begin().await.unwrap();
    outbox::append(
        &mut tx,
        &events::examples::example(EventType::InvoiceCancelled),
    )
    .await
    .expect("valid event");
    let err = outbox::append(&mut tx, &oversized_event())
        .await
        .expect_err("an oversized event is rejected");
    assert!(matches!(err, outbox::OutboxError::Invalid(_)), "{err:?}");
    assert!(!err.is_retriable());
    drop(tx); // the caller rolls back on the error
    assert_eq!(outbox_rows(&db.pool).await, 0);
}

/// A well-formed event whose encoding exceeds the contract's 1 MB limit: 30,000 payment ids.
fn oversized_event() -> events::Envelope {
    let mut parts = events::examples::example(EventType::InvoicePaid).into_parts();
    match &mut parts.event_data {
        events::EventData::InvoicePaid(paid) => {
            paid.payment_ids = (0..30_000).map(|_| events::PaymentId::new()).collect();
        }
        other => panic!("example of InvoicePaid is {other:?}"),
    }
    events::Envelope::from_parts(parts).expect("valid apart from its size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_idle_publisher_without_polling() {
    let db = fresh_database().await;
    create_sequences(&db.pool).await;
    let topic = create_topic(3).await;
    let bootstrap = infra().bootstrap_servers.clone();
    let mut cfg = config(&bootstrap, &db.url, &topic);
    cfg.service.poll_interval = Duration::from_secs(120);
    let publisher = start_publisher(cfg).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // idle, owning its buckets

    let key = InvoiceId::new();
    write_events(&db.pool, key, 1, Duration::ZERO).await;
    let started = Instant::now();
    let expected = sequences(&db.pool).await;
    let received = tokio::task::spawn_blocking(move || {
        read_all(&bootstrap, &topic, 1, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert_complete_and_ordered(&received, &expected);
    // Far below the 120 s poll interval: the NOTIFY woke it.
    assert!(started.elapsed() < Duration::from_secs(20));
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_ready_metrics_and_shuts_down_with_nothing_acknowledged_left_behind() {
    let db = fresh_database().await;
    create_sequences(&db.pool).await;
    let topic = create_topic(3).await;
    let bootstrap = infra().bootstrap_servers.clone();
    let publisher = start_publisher(config(&bootstrap, &db.url, &topic)).await;
    let base = format!("http://{}", publisher.running.ops_addr);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    for _ in 0..20 {
        write_events(&db.pool, InvoiceId::new(), 2, Duration::ZERO).await;
    }
    let expected = sequences(&db.pool).await;
    let b = bootstrap.clone();
    let t = topic.clone();
    let received =
        tokio::task::spawn_blocking(move || read_all(&b, &t, 40, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(assert_complete_and_ordered(&received, &expected), 0);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status();
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let published = metrics
            .lines()
            .any(|l| l.starts_with("outbox_published_total") && l.ends_with(" 40"));
        if ready == 200
            && published
            && metrics.contains("outbox_backlog_rows")
            && metrics.contains("outbox_batch_publish_seconds_bucket")
        {
            break;
        }
        assert!(Instant::now() < deadline, "ready={ready}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    publisher.stop().await;
    assert_eq!(
        outbox_rows(&db.pool).await,
        0,
        "acknowledged rows are deleted before shutdown completes"
    );
    let replicas: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_publishers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(replicas, 0, "a stopped replica deregisters");
}
