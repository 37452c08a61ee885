//! Generated flows through the real outbox, broker and service to real HTTP receivers: every subscribed event
//! arrives, signed, in per-invoice order, once per endpoint (by webhook id); nothing for merchants without
//! endpoints; rotation signs with both secrets during the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flows::Scenario;
use webhooks::endpoints;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subscribed_event_arrives_signed_in_order_once_per_endpoint() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7101, 4, 40));
    let merchants = helpers::merchants(&flows);
    let paid_and_settled = ["invoice.paid", "SettlementCompleted"];
    let (_, s0) = setup.endpoint(merchants[0], "m0", &[]).await;
    let (_, s1) = setup.endpoint(merchants[1], "m1", &paid_and_settled).await;
    let (_, s1b) = setup.endpoint(merchants[1], "m1b", &[]).await;
    // merchants[2] and [3] have no endpoint.
    let service = setup.start(|_| {}).await;
    let publisher = setup.bus.start_publisher().await;
    helpers::append(&setup.bus, &flows.events.iter().collect::<Vec<_>>()).await;

    let paths = [
        ("m0", merchants[0], &[][..], &s0),
        (
            "m1",
            merchants[1],
            &["invoice.paid", "settlement.completed"][..],
            &s1,
        ),
        ("m1b", merchants[1], &[][..], &s1b),
    ];
    for (path, merchant, types, secret) in paths {
        let expected = helpers::expected(&flows, merchant, types);
        assert!(
            !expected.is_empty(),
            "{path}: the scenario has events for it"
        );
        let got = helpers::wait_delivered(
            &setup.receiver,
            path,
            expected.len(),
            Duration::from_secs(60),
        )
        .await;
        helpers::check_requests(&got, &[secret.as_str()]);
        let got_ids: BTreeSet<String> = got.iter().map(helpers::event_id).collect();
        let want_ids: BTreeSet<String> =
            expected.iter().map(|e| e.event_id().to_string()).collect();
        assert_eq!(
            got_ids, want_ids,
            "/{path}: the events of its merchant and subscription"
        );
        // Per invoice (the order key), first arrivals follow commit order; the body names the right type.
        let by_id: BTreeMap<String, &events::Envelope> = expected
            .iter()
            .map(|e| (e.event_id().to_string(), *e))
            .collect();
        let mut firsts: Vec<String> = Vec::new();
        for r in &got {
            let id = helpers::event_id(r);
            if !firsts.contains(&id) {
                firsts.push(id);
            }
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let event = by_id[&helpers::event_id(r)];
            assert_eq!(
                body["type"],
                webhooks::body::webhook_type(event.event_type())
            );
            assert_eq!(
                body["data"]["aggregate_id"],
                event.aggregate_id().to_string()
            );
        }
        let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in &firsts {
            per_key
                .entry(by_id[id].partition_key())
                .or_default()
                .push(id.clone());
        }
        for (key, arrived) in per_key {
            let committed: Vec<String> = expected
                .iter()
                .filter(|e| e.partition_key() == key)
                .map(|e| e.event_id().to_string())
                .collect();
            assert_eq!(arrived, committed, "/{path}: order of key {key}");
        }
    }
    // Nothing else arrived anywhere.
    let all = setup.receiver.received(None);
    assert!(
        all.iter()
            .all(|r| ["/m0", "/m1", "/m1b"].contains(&r.path.as_str()))
    );
    // The table agrees (its results are written just after the answers): every delivery delivered at the first
    // attempt, and counted.
    let mut rows: Vec<(String, i32)> = Vec::new();
    let all_delivered =
        flows::harness::eventually(Duration::from_secs(30), "every delivery recorded", || {
            let pool = setup.bus.pool().clone();
            async move {
                let rows: Vec<(String, i32)> =
                    sqlx::query_as("SELECT status, attempts FROM webhook_deliveries")
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                rows.iter().all(|(s, _)| s == "delivered")
            }
        });
    all_delivered.await;
    rows.extend(
        sqlx::query_as::<_, (String, i32)>("SELECT status, attempts FROM webhook_deliveries")
            .fetch_all(setup.bus.pool())
            .await
            .unwrap(),
    );
    assert!(rows.iter().all(|(_, a)| *a == 1), "{rows:?}");
    let metrics = service.check_ops_endpoints().await;
    assert!(
        metrics.contains("webhook_attempts_total{status_class=\"2xx\"}"),
        "{metrics}"
    );
    let registry = service.running.registry.clone();
    let n = rows.len() as f64;
    flows::harness::eventually(Duration::from_secs(10), "deliveries counted", || {
        let counted = flows::service::counter(
            &registry,
            "webhook_deliveries_total",
            Some(("outcome", "delivered")),
        );
        async move { counted >= n }
    })
    .await;
    publisher.stop().await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_secret_signs_beside_the_old_one_until_its_grace_ends() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7102, 1, 12));
    let merchant = helpers::merchants(&flows)[0];
    let (endpoint, old) = setup.endpoint(merchant, "rot", &[]).await;
    let expected = helpers::expected(&flows, merchant, &[]);
    let third = expected.len() / 3;
    let service = setup.start(|_| {}).await;
    let publisher = setup.bus.start_publisher().await;

    helpers::append(&setup.bus, &expected[..third]).await;
    let before =
        helpers::wait_delivered(&setup.receiver, "rot", third, Duration::from_secs(60)).await;
    helpers::check_requests(&before, &[&old]);
    assert!(
        before
            .iter()
            .all(|r| !r.signature.as_deref().unwrap().contains(' ')),
        "one secret, one signature"
    );

    let (shown, new) = endpoints::rotate_secret(
        setup.bus.pool(),
        &setup.secret_box(),
        endpoint,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let new = new.expose();
    assert_eq!(shown.active_secrets, 2);
    helpers::append(&setup.bus, &expected[third..2 * third]).await;
    let during =
        helpers::wait_delivered(&setup.receiver, "rot", 2 * third, Duration::from_secs(60)).await;
    for r in &during[before.len()..] {
        let (id, ts, sig) = (
            r.webhook_id.as_deref().unwrap(),
            r.timestamp.as_deref().unwrap(),
            r.signature.as_deref().unwrap(),
        );
        assert_eq!(
            sig.split(' ').count(),
            2,
            "two signatures during the grace period: {sig}"
        );
        assert!(
            flows::receiver::verify(&new, id, ts, &r.body, sig),
            "the new secret verifies"
        );
        assert!(
            flows::receiver::verify(&old, id, ts, &r.body, sig),
            "the old secret verifies"
        );
    }

    // A rotation without grace: only the newest secret signs from now on.
    let (shown, newest) = endpoints::rotate_secret(
        setup.bus.pool(),
        &setup.secret_box(),
        endpoint,
        Duration::ZERO,
    )
    .await
    .unwrap();
    let newest = newest.expose();
    assert_eq!(shown.active_secrets, 1);
    helpers::append(&setup.bus, &expected[2 * third..]).await;
    let after = helpers::wait_delivered(
        &setup.receiver,
        "rot",
        expected.len(),
        Duration::from_secs(60),
    )
    .await;
    let seen = during.len();
    for r in &after[seen..] {
        let (id, ts, sig) = (
            r.webhook_id.as_deref().unwrap(),
            r.timestamp.as_deref().unwrap(),
            r.signature.as_deref().unwrap(),
        );
        assert!(!sig.contains(' '), "{sig}");
        assert!(flows::receiver::verify(&newest, id, ts, &r.body, sig));
        assert!(
            !flows::receiver::verify(&new, id, ts, &r.body, sig)
                && !flows::receiver::verify(&old, id, ts, &r.body, sig)
        );
    }
    publisher.stop().await;
    service.stop().await;
}
