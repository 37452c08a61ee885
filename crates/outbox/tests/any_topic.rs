//! The outbox carries records of every topic: domain events and analytics `CheckoutViewed` records appended in
//! one transaction reach their own topics (test-unique, through `topic_routes`) with their own keys — invoice
//! and merchant ids for domain events, the UTC date for views — in per-key append order, byte for byte as
//! encoded. An invalid record fails the append, and the transaction it was in leaves nothing behind. A key is
//! (topic, partition key): a poison record blocks its key on its own topic only. Against the real broker and
//! database of `make up`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use events::{
    CheckoutViewed, Envelope, EventId, EventType, InvoiceId, MerchantId, Publishable, examples,
    topics,
};
use outbox::{OutboxError, Publisher, PublisherSettings};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use service_kit::KafkaSettings;

const PARTITIONS: i32 = 3;

/// `event_type` about `invoice` (its key), with a fresh id.
fn invoice_event(event_type: EventType, invoice: InvoiceId) -> Envelope {
    let mut parts = examples::example(event_type).into_parts();
    parts.event_id = EventId::new();
    parts.aggregate_id = invoice.into();
    Envelope::from_parts(parts).expect("valid event")
}

/// A `MerchantCreated` of `merchant` (its key), with a fresh id.
fn merchant_event(merchant: MerchantId) -> Envelope {
    let mut parts = examples::example(EventType::MerchantCreated).into_parts();
    parts.event_id = EventId::new();
    parts.aggregate_id = merchant.into();
    Envelope::from_parts(parts).expect("valid event")
}

fn day(n: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T22:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + TimeDelta::hours(n * 24)
}

/// What a topic returned, per key in offset order: (event id header, value).
type ByKey = BTreeMap<String, Vec<(String, Vec<u8>)>>;

/// Reads `expected` records from every partition of `topic`, from the beginning.
fn read(topic: &str, expected: usize) -> ByKey {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &testkit::infra().bootstrap_servers)
        .set("group.id", testkit::unique_name("outbox-any-topic"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = ByKey::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let (mut seen, deadline) = (0, Instant::now() + Duration::from_secs(60));
    while seen < expected {
        assert!(
            Instant::now() < deadline,
            "{topic}: {seen} of {expected} records after 60s"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let key =
            String::from_utf8(message.key().expect("every record has a key").to_vec()).unwrap();
        let partition = *partition_of
            .entry(key.clone())
            .or_insert(message.partition());
        assert_eq!(
            partition,
            message.partition(),
            "{key}: one key, one partition"
        );
        let headers = message.headers().expect("headers");
        let event_id = headers
            .iter()
            .find(|h| h.key == events::headers::EVENT_ID)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("event_id header");
        out.entry(key)
            .or_default()
            .push((event_id, message.payload().unwrap_or_default().to_vec()));
        seen += 1;
    }
    // Nothing more than expected.
    if let Some(Ok(extra)) = consumer.poll(Duration::from_secs(1)) {
        panic!("{topic}: an unexpected record at offset {}", extra.offset());
    }
    out
}

/// What was appended, per key in append order: (event id, bytes).
fn expected<P: Publishable>(records: &[P], into: &mut ByKey) {
    for record in records {
        into.entry(record.partition_key())
            .or_default()
            .push((record.event_id().to_string(), record.encode().unwrap()));
    }
}

async fn outbox_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_and_checkout_views_in_one_transaction_reach_their_own_topics_keys_and_order()
{
    let infra = testkit::infra();
    let db = testkit::fresh_database().await;
    let domain_topic = testkit::create_topic_with(infra, "outbox-domain", PARTITIONS, &[]).await;
    let analytics_topic =
        testkit::create_topic_with(infra, "outbox-analytics", PARTITIONS, &[]).await;

    // Four invoices with three events each, two merchants, and views over three UTC days (22:00 + 30 min
    // steps: the views of one evening straddle midnight, so one day's key is written between two others').
    let invoices: Vec<InvoiceId> = (0..4).map(|_| InvoiceId::new()).collect();
    let merchants: Vec<MerchantId> = (0..2).map(|_| MerchantId::new()).collect();
    let mut domain = Vec::new();
    for event_type in [
        EventType::InvoiceCreated,
        EventType::InvoiceExpired,
        EventType::InvoiceCancelled,
    ] {
        for invoice in &invoices {
            domain.push(invoice_event(event_type, *invoice));
        }
    }
    domain.extend(merchants.iter().map(|m| merchant_event(*m)));
    let views: Vec<CheckoutViewed> = (0..18)
        .map(|n| {
            CheckoutViewed::new(
                merchants[n % 2],
                invoices[n % 4],
                day(n as i64 / 6) + TimeDelta::minutes(30 * (n as i64 % 6)),
            )
        })
        .collect();
    let view_keys: std::collections::BTreeSet<String> =
        views.iter().map(CheckoutViewed::partition_key).collect();
    assert_eq!(view_keys.len(), 4, "{view_keys:?}");

    // One transaction: domain events, views, and a batch mixing both contracts.
    let (first_domain, mixed_domain) = domain.split_at(domain.len() - 2);
    let (first_views, mixed_views) = views.split_at(views.len() - 2);
    let mixed: Vec<&dyn Publishable> = vec![
        &mixed_views[0],
        &mixed_domain[0],
        &mixed_views[1],
        &mixed_domain[1],
    ];
    let mut tx = db.pool.begin().await.unwrap();
    outbox::append_batch(&mut tx, first_domain).await.unwrap();
    for view in first_views {
        outbox::append(&mut tx, view).await.unwrap();
    }
    outbox::append_batch(&mut tx, &mixed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        outbox_rows(&db.pool).await as usize,
        domain.len() + views.len()
    );
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT topic, partition_key, aggregate_type, aggregate_id FROM outbox WHERE event_type = 'CheckoutViewed' \
         ORDER BY id LIMIT 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [(
            topics::ANALYTICS_EVENTS.to_string(),
            views[0].partition_key(),
            "Invoice".to_string(),
            views[0].invoice_id.to_string()
        )]
    );

    // An invalid record fails the append naming the field; its transaction leaves nothing behind.
    let mut tx = db.pool.begin().await.unwrap();
    let late_view = CheckoutViewed::new(merchants[0], invoices[0], day(5));
    outbox::append(&mut tx, &late_view).await.unwrap();
    let valid = invoice_event(EventType::InvoiceCreated, invoices[0]);
    let invalid = invoice_event(EventType::InvoicePaid, invoices[1]);
    let invalid = {
        let own = invalid.event_id();
        invalid.with_causation_id(own)
    };
    let batch: Vec<&dyn Publishable> = vec![&valid, &late_view, &invalid];
    let err = outbox::append_batch(&mut tx, &batch).await.unwrap_err();
    let OutboxError::Invalid(contract) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(contract.path(), "$.causation_id", "{contract}");
    assert!(!err.is_retriable());
    tx.rollback().await.unwrap();
    assert_eq!(
        outbox_rows(&db.pool).await as usize,
        domain.len() + views.len()
    );

    // Publish, routing the spec's topics to this test's.
    let settings = PublisherSettings {
        topic_routes: [
            (topics::DOMAIN_EVENTS.to_string(), domain_topic.clone()),
            (
                topics::ANALYTICS_EVENTS.to_string(),
                analytics_topic.clone(),
            ),
        ]
        .into(),
        ..Default::default()
    };
    let kafka = KafkaSettings {
        bootstrap_servers: infra.bootstrap_servers.clone(),
        client: Default::default(),
    };
    let metrics = outbox::metrics::Metrics::register(&prometheus::Registry::new()).unwrap();
    let mut publisher =
        Publisher::new(db.pool.clone(), db.url.clone(), &kafka, settings, metrics).unwrap();
    let buckets: Vec<i16> = (0..64).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_rows(&db.pool).await > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain in 60s");
        let outcome = publisher.publish_batch(&buckets).await.unwrap();
        assert_eq!(outcome.quarantined, 0, "{outcome:?}");
    }

    // Each record on its own topic, under its own key, in append order per key, byte for byte.
    let mut want_domain = ByKey::new();
    expected(first_domain, &mut want_domain);
    expected(mixed_domain, &mut want_domain);
    let mut want_views = ByKey::new();
    expected(first_views, &mut want_views);
    expected(mixed_views, &mut want_views);
    let got_domain = read(&domain_topic, domain.len());
    let got_views = read(&analytics_topic, views.len());
    assert_eq!(got_domain, want_domain, "domain events per key");
    assert_eq!(got_views, want_views, "checkout views per key");
    assert_eq!(
        got_views
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        view_keys
    );
    assert!(
        got_domain
            .keys()
            .all(|k| k.starts_with("inv_") || k.starts_with("mer_")),
        "{:?}",
        got_domain.keys()
    );
    for (key, records) in &got_views {
        for (_, bytes) in records {
            let view = CheckoutViewed::decode(bytes).unwrap();
            assert_eq!(
                &view.partition_key(),
                key,
                "a view is keyed by its UTC date"
            );
        }
    }
}

#[tokio::test]
async fn a_quarantined_record_blocks_its_key_on_its_own_topic_only() {
    let db = testkit::fresh_database().await;
    // Three rows with the same partition key: two on one topic, one on another.
    let insert = |topic: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO outbox (event_id, topic, partition_key, bucket, aggregate_type, aggregate_id, \
                                     event_type, event_version, payload) \
                 VALUES ($1, $2, 'mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d', 7, 'Merchant', \
                         'mer_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d', 'X', 1, '{}') RETURNING id",
            )
            .bind(uuid::Uuid::new_v4())
            .bind(topic)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let poison = insert(topics::NOTIFICATION_EVENTS).await;
    let behind = insert(topics::NOTIFICATION_EVENTS).await;
    let other_topic = insert(topics::DOMAIN_EVENTS).await;
    outbox::store::quarantine(&db.pool, poison, "poison")
        .await
        .unwrap();
    let rows = outbox::store::fetch_publishable(&db.pool, &[7], 100, &[])
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [other_topic],
        "{behind} waits behind {poison}; the domain topic flows"
    );
    let mut conn = db.pool.acquire().await.unwrap();
    let backlog = outbox::store::backlog(&mut conn).await.unwrap();
    assert_eq!((backlog.quarantined, backlog.blocked), (1, 1));
}

/// The backlog figure is exact while small and an id-span estimate once large, and it is never below the truth:
/// 12,000 rows counted by the test itself (one quarantined), then a gap published out of order.
/// (`EXACT_COUNT_LIMIT` is 1,000: 250 rows are counted, 12,000 estimated.)
#[tokio::test]
async fn the_backlog_is_counted_while_small_and_estimated_from_the_id_span_when_large() {
    let db = testkit::fresh_database().await;
    let insert = |n: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO outbox (event_id, topic, partition_key, bucket, aggregate_type, aggregate_id, \
                                     event_type, event_version, payload) \
                 SELECT gen_random_uuid(), 't', 'k' || (g % 97), (g % 64)::smallint, 'Merchant', 'mer_x', 'X', 1, '{}' \
                 FROM generate_series(1, $1) g",
            )
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let backlog = || {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            outbox::store::backlog(&mut conn).await.unwrap()
        }
    };
    let empty = backlog().await;
    assert_eq!((empty.rows, empty.rows_estimated), (0, false));

    insert(250).await;
    let small = backlog().await;
    assert_eq!((small.rows, small.rows_estimated), (250, false));
    assert!(small.oldest_age_seconds >= 0.0);

    insert(12_000 - 250).await;
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    outbox::store::quarantine(&db.pool, first, "poison")
        .await
        .unwrap();
    let large = backlog().await;
    assert!(large.rows_estimated);
    assert_eq!(large.rows, 12_000, "no gaps: the span is the count");
    assert_eq!(large.quarantined, 1);
    // The first row is g = 1 of the first insert, key k1; every other row with g % 97 == 1 waits behind it.
    let same_key = |n: i64| (1..=n).filter(|g| g % 97 == 1).count() as i64;
    assert_eq!(large.blocked, same_key(250) + same_key(12_000 - 250) - 1);

    // 500 rows in the middle published (deleted) ahead of their turn: the estimate is an upper bound.
    sqlx::query("DELETE FROM outbox WHERE id BETWEEN $1 + 5000 AND $1 + 5499")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    let truth: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(truth, 11_500);
    let gapped = backlog().await;
    assert!(gapped.rows_estimated);
    assert_eq!(gapped.rows, 12_000, "the span still covers the gap");
}

/// The checkout page's other producers (`outbox::checkout::record_method_chosen`, `record_abandoned`,
/// `record_events`): an asset its network does not carry is refused before anything is written (the transaction
/// stays usable and commits nothing of it); a record retried after an unknown outcome is appended once, under its
/// derived id; a batch with repeats appends each record once.
#[tokio::test]
async fn checkout_page_records_are_validated_before_writing_and_appended_once_per_id() {
    use events::analytics::{AbandonReason, AbandonStage};
    use events::money::CryptoAsset;
    use events::payload::Network;
    use outbox::checkout;
    let db = testkit::fresh_database().await;
    let merchant = MerchantId::new();
    let invoice = InvoiceId::new();
    let at: DateTime<Utc> = "2026-03-01T23:59:59.250Z".parse().unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    let err = checkout::record_method_chosen(
        &mut tx,
        merchant,
        invoice,
        CryptoAsset::Usdt,
        Network::Bitcoin,
        at,
    )
    .await
    .expect_err("bitcoin does not carry USDT");
    let OutboxError::Invalid(contract) = &err else {
        panic!("not a contract error: {err:?}")
    };
    assert_eq!(contract.path(), "$.network", "{contract}");
    tx.commit().await.unwrap();
    assert_eq!(outbox_rows(&db.pool).await, 0, "nothing written");

    // Retried after an unknown outcome (three transactions): one row each, under the derived ids.
    for _ in 0..3 {
        let mut tx = db.pool.begin().await.unwrap();
        let chosen = checkout::record_method_chosen(
            &mut tx,
            merchant,
            invoice,
            CryptoAsset::Usdt,
            Network::Tron,
            at,
        )
        .await
        .unwrap();
        assert_eq!(chosen.event_id, checkout::method_id(invoice, at));
        assert_eq!(chosen.partition_key(), "2026-03-01");
        let later = at + TimeDelta::seconds(40);
        let abandoned = checkout::record_abandoned(
            &mut tx,
            merchant,
            invoice,
            AbandonStage::AwaitingPayment,
            AbandonReason::LeftPage,
            later,
        )
        .await
        .unwrap();
        assert_eq!(abandoned.event_id, checkout::abandon_id(invoice, later));
        assert_eq!(
            abandoned.partition_key(),
            "2026-03-02",
            "the UTC date of its own time"
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(outbox_rows(&db.pool).await, 2);
    let rows: Vec<(uuid::Uuid, String, String, String)> =
        sqlx::query_as("SELECT event_id, topic, partition_key, event_type FROM outbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [
            (
                checkout::method_id(invoice, at).as_uuid(),
                topics::ANALYTICS_EVENTS.to_string(),
                "2026-03-01".to_string(),
                "PaymentMethodChosen".to_string()
            ),
            (
                checkout::abandon_id(invoice, at + TimeDelta::seconds(40)).as_uuid(),
                topics::ANALYTICS_EVENTS.to_string(),
                "2026-03-02".to_string(),
                "CheckoutAbandoned".to_string()
            ),
        ]
    );

    // A mix with repeats, some already waiting: each new record once.
    let other = InvoiceId::new();
    let view = CheckoutViewed {
        event_id: checkout::view_id(other, at),
        merchant_id: merchant,
        invoice_id: other,
        occurred_at: at,
    };
    let chosen = events::analytics::PaymentMethodChosen {
        event_id: checkout::method_id(other, at),
        merchant_id: merchant,
        invoice_id: other,
        crypto_currency: CryptoAsset::Eth,
        network: Network::Ethereum,
        occurred_at: at,
    };
    let waiting = events::analytics::PaymentMethodChosen {
        event_id: checkout::method_id(invoice, at),
        merchant_id: merchant,
        invoice_id: invoice,
        crypto_currency: CryptoAsset::Usdt,
        network: Network::Tron,
        occurred_at: at,
    };
    let records: Vec<events::AnalyticsEvent> = vec![
        view.clone().into(),
        chosen.clone().into(),
        view.into(),
        waiting.into(),
    ];
    checkout::record_events(&db.pool, &records).await.unwrap();
    assert_eq!(
        outbox_rows(&db.pool).await,
        4,
        "the view and the new choice only"
    );
}
