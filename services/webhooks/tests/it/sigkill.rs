//! Webhook processes SIGKILLed while events flow and receivers answer slowly (kills land mid-attempt): every
//! subscribed event still reaches its endpoint, at least once, and every attempt of one delivery carries the same
//! webhook id; the table ends with every delivery delivered.

use std::time::Duration;

use flows::Scenario;
use flows::receiver::Behaviour;
use flows::service::{Extra, KillRun};

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_mid_delivery_every_webhook_arrives_with_a_stable_id() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7401, 3, 45));
    let merchants = helpers::merchants(&flows);
    let mut paths = Vec::new();
    for (i, merchant) in merchants.iter().enumerate() {
        let path = format!("slow{i}");
        setup
            .receiver
            .set(&path, Behaviour::Slow(Duration::from_millis(150)));
        let (endpoint, secret) = setup.endpoint(*merchant, &path, &[]).await;
        paths.push((path, *merchant, secret, endpoint));
    }
    let extra = Extra {
        toml: "[service.delivery]\nallow_http = true\nallowed_networks = [\"127.0.0.0/8\"]\n\
               timeout = \"1s\"\nlease = \"2s\"\npoll_interval = \"20ms\"\n"
            .into(),
        env: vec![(webhooks::ENCRYPTION_KEY_ENV.into(), setup.key.clone())],
    };
    let run = KillRun::run_with(
        &setup.bus,
        std::path::Path::new(env!("CARGO_BIN_EXE_webhooks")),
        std::slice::from_ref(&setup.bus.domain_topic),
        &flows,
        2,
        8,
        &extra,
    )
    .await;
    for (path, merchant, secret, endpoint) in &paths {
        let expected = helpers::expected(&flows, *merchant, &[]);
        let got = helpers::wait_delivered(
            &setup.receiver,
            path,
            expected.len(),
            Duration::from_secs(90),
        )
        .await;
        helpers::check_requests(&got, &[secret.as_str()]);
        let ids: std::collections::BTreeSet<String> = got.iter().map(helpers::event_id).collect();
        assert_eq!(ids.len(), expected.len(), "/{path}");
        helpers::eventually_rows(&setup, *endpoint, |rows| {
            rows.len() == expected.len() && rows.iter().all(|r| r.0 == "delivered")
        })
        .await;
    }
    let all = setup.receiver.received(None).len();
    let distinct: usize = paths
        .iter()
        .map(|(_, m, _, _)| helpers::expected(&flows, *m, &[]).len())
        .sum();
    println!(
        "{} requests for {distinct} deliveries ({} again after kills)",
        all,
        all - distinct
    );
    run.finish().await;
}
