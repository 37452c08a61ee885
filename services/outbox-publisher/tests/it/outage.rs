//! The broker goes away for a while: the publisher keeps retrying, the backlog grows (and shows in metrics),
//! nothing is lost or reordered, and the backlog drains when the broker returns. Uses a broker of its own.

use std::time::{Duration, Instant};

use events::InvoiceId;
use testkit::broker::DedicatedBroker;
use testkit::{Infra, create_topic_with, fresh_database};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_grows_the_backlog_which_drains_in_order_when_it_returns() {
    let mut broker = tokio::task::spawn_blocking(DedicatedBroker::start)
        .await
        .unwrap();
    let bootstrap = broker.bootstrap_servers();
    let db = fresh_database().await;
    create_sequences(&db.pool).await;
    let own = Infra {
        bootstrap_servers: bootstrap.clone(),
        database_url: db.url.clone(),
        brokers: 1,
    };
    let topic = create_topic_with(&own, "outage", 6, &[]).await;
    let mut cfg = config(&bootstrap, &db.url, &topic);
    cfg.service.status_interval = Duration::from_millis(200);
    let publisher = start_publisher(cfg).await;
    let metrics_url = format!("http://{}/metrics", publisher.running.ops_addr);

    let keys: Vec<InvoiceId> = (0..20).map(|_| InvoiceId::new()).collect();
    for i in 0..100 {
        write_events(&db.pool, keys[i % keys.len()], 2, Duration::ZERO).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox_rows(&db.pool).await > 0 {
        assert!(Instant::now() < deadline, "first phase not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Outage: writers keep committing; nothing can be published.
    let mut broker_handle = tokio::task::spawn_blocking(move || {
        broker.stop();
        broker
    });
    broker = (&mut broker_handle).await.unwrap();
    for i in 0..150 {
        write_events(&db.pool, keys[i % keys.len()], 2, Duration::ZERO).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        outbox_rows(&db.pool).await,
        300,
        "nothing is deleted while the broker is down"
    );
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("outbox_backlog_rows 300"),
        "backlog not visible in metrics:\n{metrics}"
    );

    // The broker returns: the backlog drains.
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while outbox_rows(&db.pool).await > 0 {
        assert!(
            Instant::now() < deadline,
            "backlog did not drain after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected = sequences(&db.pool).await;
    let b = bootstrap.clone();
    let received =
        tokio::task::spawn_blocking(move || read_all(&b, &topic, 500, Duration::from_secs(30)))
            .await
            .unwrap();
    let duplicates = assert_complete_and_ordered(&received, &expected);
    println!("outage test: 500 events, {duplicates} duplicates");
    publisher.stop().await;
    drop(broker);
}
