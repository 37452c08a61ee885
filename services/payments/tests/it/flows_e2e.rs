//! End to end against the generator's truth, with the generator playing the chain (scanner mode,
//! `flows::generate_scanned`): merchants, invoices, expiries and cancellations go through the outbox, the scanners'
//! reports (sightings, confirmations, reorganisations, drops, duplicates) to `integration-events`; the real
//! payments service turns them into payment events and `InvoicePaid`, and the projections, the settlement service,
//! analytics, audit and webhooks downstream must end exactly where the truth — computed from the plan, never from
//! a service — says: read models, settlements (net of the platform fee), the ledger, the daily aggregates (the
//! checkout page's views, methods chosen and abandonments included, recorded through the producer API), every
//! domain event of the run on the topic (by type and aggregate, [`flows::Flows::expected_domain_events`]) and in
//! the audit log exactly once with its hash chain intact, and every event a merchant's endpoint subscribes to
//! received by a real HTTP receiver on loopback, signed, under one stable `webhook-id` — with nothing refused or
//! dead-lettered.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use events::{Envelope, EventData, EventType, MerchantId};
use flows::Scenario;
use flows::harness::{Bus, create_integration_topic};
use flows::receiver::{Received, Receiver};
use flows::service::InProcess;
use payments::Payments;
use webhooks::Webhooks;
use webhooks::endpoints::NewEndpoint;
use webhooks::signing::SecretBox;

/// What odd merchants' endpoints subscribe to (even ones: everything).
const SOME_TYPES: [&str; 4] = [
    "invoice.paid",
    "payment.confirmed",
    "payment.failed",
    "settlement.completed",
];

/// A merchant's endpoint on the receiver: its path, merchant, subscriptions (empty: all) and signing secret.
struct Endpoint {
    path: String,
    merchant: MerchantId,
    types: Vec<String>,
    secret: String,
}

/// The webhooks service with loopback allowed through its SSRF guard, and one endpoint per merchant of `flows` on
/// `receiver` (registered before any event flows, so every event of the run finds it).
async fn webhooks_with_endpoints(
    bus: &Bus,
    receiver: &Receiver,
    merchants: &[MerchantId],
) -> (InProcess, Vec<Endpoint>) {
    let key = SecretBox::generate_key();
    let secret_box = SecretBox::from_base64(&key).expect("a generated key");
    let guard = webhooks::ssrf::Guard {
        allow_http: true,
        allowed: "127.0.0.0/8".parse().expect("a network"),
    };
    let mut endpoints = Vec::new();
    for (i, merchant) in merchants.iter().enumerate() {
        let types: Vec<String> = if i % 2 == 0 {
            Vec::new()
        } else {
            SOME_TYPES.iter().map(|t| t.to_string()).collect()
        };
        let path = format!("m{i}");
        let (_, secret) = webhooks::endpoints::add(
            bus.pool(),
            &guard,
            &secret_box,
            NewEndpoint {
                merchant_id: *merchant,
                url: &receiver.url(&path),
                event_types: &types,
                description: "end to end",
            },
        )
        .await
        .expect("register the endpoint");
        endpoints.push(Endpoint {
            path,
            merchant: *merchant,
            types,
            secret: secret.expose(),
        });
    }
    let group = testkit::unique_name("webhooks");
    let mut settings = flows::service::settings::<Webhooks>(
        bus,
        &group,
        std::slice::from_ref(&bus.domain_topic),
        flows::service::fast_options(),
    );
    settings.service.delivery = webhooks::DeliverySettings {
        encryption_key: Some(key.into()),
        allowed_networks: vec!["127.0.0.0/8".into()],
        allow_http: true,
        poll_interval: Duration::from_millis(20),
        ..webhooks::DeliverySettings::default()
    };
    (
        InProcess::start_with::<Webhooks>(settings, group).await,
        endpoints,
    )
}

/// (event type, aggregate id) → how many: what tells the events of a run apart when their ids are the services'.
fn kinds<'a>(
    events: impl IntoIterator<Item = &'a Envelope>,
) -> BTreeMap<(EventType, uuid::Uuid), usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry((e.event_type(), e.aggregate_id().as_uuid()))
            .or_default() += 1;
    }
    out
}

/// The differences of two [`kinds`] maps, at most 10 lines.
fn kinds_diff(
    expected: &BTreeMap<(EventType, uuid::Uuid), usize>,
    actual: &BTreeMap<(EventType, uuid::Uuid), usize>,
) -> Vec<String> {
    let mut keys: Vec<_> = expected.keys().chain(actual.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| expected.get(k) != actual.get(k))
        .take(10)
        .map(|k| {
            format!(
                "{:?} {}: expected {}, found {}",
                k.0,
                k.1,
                expected.get(k).copied().unwrap_or(0),
                actual.get(k).copied().unwrap_or(0)
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scanner_reports_through_payments_end_where_the_truth_says() {
    let mut scenario = Scenario::new(1414, 16, 360).settled_by_service();
    scenario.days = 2;
    let flows = flows::generate_scanned(&scenario);
    let expected = flows.expected_settlements();
    let expected_events = flows.expected_domain_events();
    // The checkout page's records beyond the views are in the truth, of both abandonment reasons.
    let days = flows.truth.daily.values();
    let (methods, left, expired) = days.fold((0, 0, 0), |(m, l, e), d| {
        (
            m + d.methods_chosen.values().sum::<i64>(),
            l + d.checkouts_abandoned_left,
            e + d.checkouts_abandoned_expired,
        )
    });
    assert!(
        methods >= 20 && left >= 10 && expired >= 5,
        "methods {methods}, abandoned left {left} / expired {expired}"
    );
    let reports = flows.scanner_reports();
    let phases = flows.scanner_phases();
    let bus = Bus::new().await;
    let integration = create_integration_topic().await;
    let publisher = bus.start_publisher().await;
    let payments =
        InProcess::start::<Payments>(&bus, &[integration.clone(), bus.domain_topic.clone()]).await;
    let domain = std::slice::from_ref(&bus.domain_topic);
    let projections = InProcess::start::<projections::Projections>(&bus, domain).await;
    let settlement = InProcess::start::<settlement::Settlement>(&bus, domain).await;
    let analytics = InProcess::start::<analytics::Analytics>(
        &bus,
        &[bus.domain_topic.clone(), bus.analytics_topic.clone()],
    )
    .await;
    let audit = InProcess::start::<audit::Audit>(&bus, domain).await;
    let receiver = Receiver::start().await;
    let merchants: Vec<MerchantId> = flows.plan.merchants.iter().map(|m| m.id).collect();
    let (hooks, endpoints) = webhooks_with_endpoints(&bus, &receiver, &merchants).await;

    // The checkout page's records through its producer API (outbox → publisher → analytics topic).
    let page = flows::emit::checkout_events(&flows.plan);
    assert_eq!(
        outbox::checkout::record_events(bus.pool(), &page)
            .await
            .expect("record the checkout page's records"),
        page.len()
    );

    let started = Instant::now();
    bus.feed_scanned(
        &integration,
        &payments.group,
        &phases,
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "{} domain events and {} reports fed in {} phases in {:.1}s",
        flows.events.len(),
        reports.len(),
        phases.len(),
        started.elapsed().as_secs_f64()
    );

    // Read models, settlements, ledger and aggregates equal the truth.
    flows::check::wait_for_projections(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    let expected_rows = flows::check::expected_settlement_rows(&expected);
    let started = Instant::now();
    loop {
        let actual = flows::check::settlement_rows(bus.pool()).await.unwrap();
        let diff = flows::check::settlement_rows_diff(&expected_rows, &actual);
        if diff.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "settlements differ from the truth:\n{}",
            diff.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ledger = flows::check::ledger_diff(bus.pool(), &expected, &flows.owed_back())
        .await
        .unwrap();
    assert!(ledger.is_empty(), "ledger:\n{}", ledger.join("\n"));
    let started = Instant::now();
    loop {
        let actual = flows::check::analytics(bus.pool()).await.unwrap();
        let diff = flows::check::analytics_diff(&flows.truth, &actual);
        if diff.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "aggregates differ from the truth:\n{}",
            diff.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Counts from the plan: what the payments service emitted, event by event type, and the fee split.
    let plan = &flows.plan;
    let h = plan.horizon;
    let by = |at: &chrono::DateTime<chrono::Utc>| *at <= h;
    let payments_all: Vec<_> = plan.invoices.iter().flat_map(|i| &i.payments).collect();
    let want_detected = payments_all.iter().filter(|p| by(&p.detected_at)).count();
    let want_confirmed = payments_all
        .iter()
        .filter(|p| p.confirmed_at.is_some_and(|a| by(&a)))
        .count();
    let want_failed = payments_all
        .iter()
        .filter(|p| p.failed.is_some_and(|(a, _)| by(&a)))
        .count();
    let want_paid = plan
        .invoices
        .iter()
        .filter(|i| i.paid.as_ref().is_some_and(|p| by(&p.at)))
        .count();
    let on_topic = flows::harness::read_topic(
        &bus.domain_topic,
        expected_events.len(),
        Duration::from_secs(60),
    )
    .await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut fee_checked = 0;
    for m in &on_topic {
        use rdkafka::Message;
        let event = events::decode(m.payload().unwrap()).unwrap();
        *counts.entry(event.event_type().as_str()).or_default() += 1;
        if let EventData::SettlementCompleted(s) = event.data() {
            // Net of the platform fee at the merchant's rate (1 % for most), as the plan has it.
            let want = expected
                .iter()
                .find(|x| x.invoice_id == s.invoice_id)
                .expect("a settlement of the truth");
            assert_eq!(
                (s.gross_amount, s.platform_fee_amount, s.net_amount),
                (want.gross_amount, want.platform_fee_amount, want.net_amount)
            );
            assert_eq!(
                s.platform_fee_amount.checked_add(s.net_amount),
                Some(s.gross_amount)
            );
            fee_checked += 1;
        }
    }
    for (t, n) in [
        ("PaymentDetected", want_detected),
        ("PaymentConfirmed", want_confirmed),
        ("PaymentFailed", want_failed),
        ("InvoicePaid", want_paid),
    ] {
        assert_eq!(counts.get(t).copied().unwrap_or(0), n, "{t}: {counts:?}");
    }
    assert!(want_paid >= 100 && want_failed >= 10, "{counts:?}");
    assert!(fee_checked >= 50, "{fee_checked} completed settlements");
    assert!(expected.iter().any(|s| s.held), "some settlements held");

    // Every domain event of the run, once (the publisher may publish a row twice: one per id), is what the plan says.
    let mut published: Vec<Envelope> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &on_topic {
        use rdkafka::Message;
        let event = events::decode(m.payload().unwrap()).unwrap();
        if seen.insert(event.event_id()) {
            published.push(event);
        }
    }
    let diff = kinds_diff(&kinds(&expected_events), &kinds(&published));
    assert!(
        diff.is_empty(),
        "the domain topic differs from the plan:\n{}",
        diff.join("\n")
    );

    // Audit: every one of them in the log exactly once, numbered without gaps, the hash chain intact.
    let started = Instant::now();
    loop {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
            .fetch_one(bus.pool())
            .await
            .unwrap();
        if rows as usize >= published.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the audit log has {rows} of {} events",
            published.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    flows::check::assert_audit_log(bus.pool(), &published).await;
    let mut conn = bus.pool().acquire().await.unwrap();
    let verification = audit::verify::verify(&mut conn).await.unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.rows as usize, published.len());
    drop(conn);

    // Webhooks: each endpoint received every event of its merchant it subscribes to (by the plan), signed, under
    // one webhook-id per event, at least once — and nothing else.
    let by_id: HashMap<String, &Envelope> = published
        .iter()
        .map(|e| (e.event_id().to_string(), e))
        .collect();
    let mut delivered = 0;
    for endpoint in &endpoints {
        let subscribed = |e: &&Envelope| {
            e.merchant_id() == endpoint.merchant
                && (endpoint.types.is_empty()
                    || endpoint
                        .types
                        .contains(&webhooks::body::webhook_type(e.event_type())))
        };
        let want = kinds(expected_events.iter().filter(subscribed));
        let n: usize = want.values().sum();
        let got =
            flows::receiver::wait_delivered(&receiver, &endpoint.path, n, Duration::from_secs(60))
                .await;
        flows::receiver::check_requests(&got, &[endpoint.secret.as_str()]);
        let answered: Vec<&Received> = got
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect();
        let mut events_received: BTreeMap<String, &Envelope> = BTreeMap::new();
        for r in &answered {
            let id = flows::receiver::event_id(r);
            let event = by_id.get(&id).unwrap_or_else(|| {
                panic!(
                    "/{}: webhook of {id}, not an event of the run",
                    endpoint.path
                )
            });
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["data"]["event_type"], event.event_type().as_str());
            events_received.insert(id, event);
        }
        let diff = kinds_diff(&want, &kinds(events_received.values().copied()));
        assert!(
            diff.is_empty(),
            "/{} (merchant {}, subscribed to {:?}):\n{}",
            endpoint.path,
            endpoint.merchant,
            endpoint.types,
            diff.join("\n")
        );
        delivered += n;
    }
    assert!(delivered >= 500, "{delivered} webhooks");

    // Nothing refused or dead-lettered anywhere.
    for group in [
        &payments.group,
        &projections.group,
        &settlement.group,
        &analytics.group,
        &audit.group,
        &hooks.group,
    ] {
        let refused = flows::service::refusals(&bus, group).await;
        assert!(refused.is_empty(), "{group}: {}", refused.join("\n"));
    }
    let dead: i64 = flows::harness::end_offsets(&events::topics::dead_letter_topic(&integration))
        .await
        .iter()
        .sum();
    assert_eq!(dead, 0, "reports dead-lettered");

    hooks.stop().await;
    audit.stop().await;
    analytics.stop().await;
    settlement.stop().await;
    projections.stop().await;
    payments.stop().await;
    publisher.stop().await;
}
