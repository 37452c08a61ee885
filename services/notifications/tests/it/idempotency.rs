//! Each notification accepted by a provider once: the same request written three times, a second consumer group
//! replaying the whole topic, and processes SIGKILLed while e-mails and SMS flow (counted at the servers).

use std::collections::BTreeMap;
use std::time::Duration;

use events::notification::Channel;
use flows::service::{Extra, KillRun};

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_and_replayed_requests_are_sent_once() {
    let setup = Setup::new().await;
    let service = setup.start(|_| {}).await;
    let (_, recipient) = helpers::merchant();
    let email = helpers::request(
        recipient.clone(),
        Channel::Email,
        "settlement_completed",
        "en",
        Some("a@merchant.example"),
    );
    let sms = helpers::request(
        recipient,
        Channel::Sms,
        "settlement_completed",
        "en",
        Some("+15550004444"),
    );
    // Each request on the topic three times: once through the outbox, then twice more as a publisher that
    // re-sent after a lost acknowledgement would (the outbox itself refuses a second row with the same id).
    setup.request(&[email.clone(), sms.clone()]).await;
    let raw: Vec<(String, Vec<u8>)> = [&email, &sms]
        .iter()
        .map(|r| (r.partition_key(), r.encode().unwrap()))
        .collect();
    for _ in 0..2 {
        flows::harness::produce(&setup.bus.notification_topic, &raw).await;
    }
    setup.mails(1, Duration::from_secs(30)).await;
    setup
        .posts(&helpers::sms_path(), 1, Duration::from_secs(30))
        .await;
    setup
        .rows_until("both sent", |r| {
            r.len() == 2 && r.iter().all(|r| r.2 == "sent")
        })
        .await;
    service.stop().await;
    // Another group reads the topic from the beginning: six records, nothing new.
    let replay = setup.start(|_| {}).await;
    flows::harness::eventually(
        Duration::from_secs(30),
        "the replay to consume the topic",
        || {
            let consumed = replay.counter("checkout_consumer_records_processed_total", None);
            async move { consumed >= 6.0 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.smtp.mails().len(), 1, "the e-mail was accepted once");
    assert_eq!(
        setup.http.received(None).len(),
        1,
        "the SMS was accepted once"
    );
    assert_eq!(
        replay.counter("notification_requests_recorded_total", None),
        0.0,
        "the replay recorded nothing"
    );
    replay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_mid_delivery_every_notification_arrives_and_none_is_sent_again_once_recorded_sent()
 {
    let mut setup = Setup::new().await;
    // Kills must land mid-attempt: the relay takes 150 ms to accept each message.
    setup.smtp.delay(Duration::from_millis(150));
    setup.stop_publisher().await;
    let mut requests = Vec::new();
    for i in 0..30 {
        let (_, recipient) = helpers::merchant();
        requests.push(helpers::request(
            recipient.clone(),
            Channel::Email,
            "settlement_completed",
            "en",
            Some(&format!("kill{i}@merchant.example")),
        ));
        requests.push(helpers::request(
            recipient,
            Channel::Sms,
            "settlement_held",
            "en",
            Some(&format!("+1555100{i:04}")),
        ));
    }
    // KillRun writes a flow's domain events through the outbox; these requests go in before it starts, the
    // publisher it starts sends them to the notification topic while the processes are killed.
    setup.request(&requests).await;
    let flows = flows::generate(&flows::Scenario::new(7501, 1, 2));
    let extra = Extra {
        toml: format!(
            "[service.email]\nport = {}\ntimeout = \"5s\"\n\
             [service.sms]\nbase_url = \"{}\"\naccount_sid = \"{}\"\nauth_token = \"{}\"\ntimeout = \"5s\"\n\
             [service.webhook]\ntimeout = \"5s\"\n\
             [service.dispatch]\npoll_interval = \"20ms\"\nlease = \"8s\"\nconcurrency = 4\n\
             breaker_probe_initial = \"200ms\"\nbreaker_probe_max = \"500ms\"\n\
             [service.consumer.policy.retry]\nmax_retries = 5\n\
             [service.consumer.policy.retry.backoff]\nkind = \"exponential\"\ninitial = \"100ms\"\nfactor = 2\n",
            setup.smtp.port(),
            setup.http.url("sms"),
            helpers::SID,
            helpers::TOKEN,
        ),
        env: Vec::new(),
    };
    let run = KillRun::run_with(
        &setup.bus,
        std::path::Path::new(env!("CARGO_BIN_EXE_notifications")),
        std::slice::from_ref(&setup.bus.notification_topic),
        &flows,
        2,
        6,
        &extra,
    )
    .await;
    let rows = setup
        .rows_until("every notification sent", |r| {
            r.len() == requests.len() && r.iter().all(|r| r.2 == "sent")
        })
        .await;
    assert_eq!(rows.len(), requests.len());
    // Count at the servers.
    let mut per_message: BTreeMap<String, usize> = BTreeMap::new();
    for m in setup.smtp.mails() {
        *per_message.entry(m.rcpt_to.join(",")).or_default() += 1;
    }
    for r in setup.http.received(Some(&helpers::sms_path())) {
        *per_message
            .entry(helpers::form(&r)["To"].clone())
            .or_default() += 1;
    }
    assert_eq!(
        per_message.len(),
        requests.len(),
        "every notification reached its provider"
    );
    let again: Vec<_> = per_message.iter().filter(|(_, n)| **n > 1).collect();
    // Exactly once is not to be had from an SMTP relay or Twilio's API (no idempotency key): a process killed
    // between the provider's acceptance and the row's `sent` sends that notification again. What must hold: a
    // provider sees a notification more often than once only for attempts that were interrupted — claimed and
    // never settled (`claims - attempts`) — never because a `sent` row was sent again or a replay re-sent it.
    let bookkeeping: Vec<(Option<String>, i32, i32)> =
        sqlx::query_as("SELECT sent_to, claims, attempts FROM notification_deliveries")
            .fetch_all(setup.bus.pool())
            .await
            .unwrap();
    let interrupted: BTreeMap<String, i32> = bookkeeping
        .into_iter()
        .map(|(to, claims, attempts)| (to.expect("sent"), claims - attempts))
        .collect();
    let mut extra_sends = 0;
    for (destination, n) in &per_message {
        let in_doubt = *interrupted
            .get(destination)
            .unwrap_or_else(|| panic!("{destination}: no row sent to it"));
        assert!(
            (*n as i32 - 1) <= in_doubt,
            "{destination} reached its provider {n} times with {in_doubt} interrupted attempts"
        );
        extra_sends += n - 1;
    }
    println!(
        "{} notifications, {} accepted more than once ({extra_sends} extra sends) after {} SIGKILLs: {again:?}",
        requests.len(),
        again.len(),
        run.kills
    );
    run.finish().await;
}
