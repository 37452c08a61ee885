//! A row the broker can never accept is quarantined with its error, blocks only the later events of its own
//! key, shows in metrics and status, and is released (after the fix) or dropped by an operator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::{Envelope, EventType, InvoiceId};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use testkit::{create_topic_with, fresh_database, infra};

use crate::helpers::*;

/// An event of `invoice` with `seq`, valid for the contract but ~25 KB: over the test topic's limit, while a
/// producer batch of small events (batch.size 16 KiB) stays under it.
fn padded_event(invoice: InvoiceId, seq: u64) -> Envelope {
    let mut parts = events::examples::example(EventType::InvoicePaid).into_parts();
    parts.aggregate_id = invoice.into();
    parts.event_id = events::EventId::new();
    parts.metadata.request_id = Some(format!("seq-{seq}"));
    if let events::EventData::InvoicePaid(paid) = &mut parts.event_data {
        paid.payment_ids = (0..600).map(|_| events::PaymentId::new()).collect();
    }
    Envelope::from_parts(parts).expect("valid padded event")
}

async fn append_all(pool: &sqlx::PgPool, envelopes: &[Envelope]) {
    let mut tx = pool.begin().await.unwrap();
    outbox::append_batch(&mut tx, envelopes).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_blocks_only_its_key_and_is_released_or_dropped_by_an_operator() {
    let small = events::encode(&invoice_event(InvoiceId::new(), 1))
        .unwrap()
        .len();
    let big = events::encode(&padded_event(InvoiceId::new(), 2))
        .unwrap()
        .len();
    // Above a full producer batch of small events (16 KiB + overhead), below the padded event.
    let limit = 20_000;
    assert!(
        small < 2_000 && big > limit + 2_000,
        "sizes: small={small} big={big}"
    );

    let db = fresh_database().await;
    let topic = create_topic_with(
        infra(),
        "poison",
        6,
        &[("max.message.bytes", &limit.to_string())],
    )
    .await;
    let (released_key, dropped_key) = (InvoiceId::new(), InvoiceId::new());
    let mut expected: HashMap<String, u64> = HashMap::new();
    for key in [released_key, dropped_key] {
        let poison = padded_event(key, 2);
        append_all(
            &db.pool,
            &[invoice_event(key, 1), poison, invoice_event(key, 3)],
        )
        .await;
    }
    for _ in 0..20 {
        let key = InvoiceId::new();
        append_all(&db.pool, &[invoice_event(key, 1), invoice_event(key, 2)]).await;
        expected.insert(key.to_string(), 2);
    }

    let bootstrap = infra().bootstrap_servers.clone();
    let mut cfg = config(&bootstrap, &db.url, &topic);
    cfg.service.status_interval = Duration::from_millis(200);
    let publisher = start_publisher(cfg).await;

    // Every other key flows; the poisoned keys stop after their first event.
    let (b, t) = (bootstrap.clone(), topic.clone());
    let received =
        tokio::task::spawn_blocking(move || read_all(&b, &t, 42, Duration::from_secs(30)))
            .await
            .unwrap();
    let mut partial = expected.clone();
    partial.insert(released_key.to_string(), 1);
    partial.insert(dropped_key.to_string(), 1);
    assert_complete_and_ordered(&received, &partial);

    let mut conn = db.pool.acquire().await.unwrap();
    let status = outbox::admin::status(&mut conn).await.unwrap();
    assert_eq!(
        (status.backlog.quarantined, status.backlog.blocked),
        (2, 2),
        "{status:?}"
    );
    for row in &status.quarantined_rows {
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .contains("max.message.bytes"),
            "{row:?}"
        );
    }
    let metrics_url = format!("http://{}/metrics", publisher.running.ops_addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("outbox_quarantined_rows 2")
            && metrics.contains("outbox_blocked_rows 2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quarantine not in metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The fix: the topic accepts larger records. Release one poison row, drop the other.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("max.message.bytes", "1048576");
    admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // the publisher re-reads topic limits with its heartbeat
    let id_of = |key: InvoiceId| {
        status
            .quarantined_rows
            .iter()
            .find(|r| r.partition_key == key.to_string())
            .unwrap()
            .event_id
    };
    outbox::admin::release(&mut conn, id_of(released_key))
        .await
        .unwrap();
    outbox::admin::drop_row(&mut conn, id_of(dropped_key), "test", "superseded")
        .await
        .unwrap();
    let err = outbox::admin::release(&mut conn, id_of(dropped_key))
        .await
        .expect_err("dropped rows are gone");
    assert!(
        err.to_string().contains("no quarantined outbox row"),
        "{err}"
    );

    let (b, t) = (bootstrap.clone(), topic.clone());
    let received =
        tokio::task::spawn_blocking(move || read_all(&b, &t, 45, Duration::from_secs(30)))
            .await
            .unwrap();
    // Released: 1, 2, 3 in order. Dropped: 1 then 3 (2 is gone by decision), so check it apart.
    let mut full = expected.clone();
    full.insert(released_key.to_string(), 3);
    let dropped = dropped_key.to_string();
    let dropped_seqs: Vec<u64> = received
        .iter()
        .filter(|r| r.key == dropped)
        .map(|r| r.seq)
        .collect();
    assert_eq!(dropped_seqs, vec![1, 3]);
    let others: Vec<Received> = received.into_iter().filter(|r| r.key != dropped).collect();
    assert_complete_and_ordered(&others, &full);

    let kept: (String, String) = sqlx::query_as("SELECT dropped_by, reason FROM outbox_dropped")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, ("test".to_string(), "superseded".to_string()));
    publisher.stop().await;
    assert_eq!(outbox_rows(&db.pool).await, 0);
}
