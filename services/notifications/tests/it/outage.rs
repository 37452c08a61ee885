//! An SMTP outage pauses only e-mail: with the relay down, SMS keep flowing, the e-mail channel's breaker opens,
//! no e-mail spends a retry or reaches the DLQ; once the relay is back every e-mail arrives, once.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_pauses_email_only_and_resumes_without_losing_or_repeating() {
    let setup = Setup::new().await;
    setup.smtp.stop();
    let service = setup.start(|_| {}).await;
    let (emails, sms) = helpers::emails_and_sms(4, "+1555000100");
    let all: Vec<_> = emails.iter().chain(&sms).cloned().collect();
    setup.request(&all).await;

    // SMS flow while the relay is down.
    setup
        .posts(&helpers::sms_path(), sms.len(), Duration::from_secs(30))
        .await;
    // The e-mail channel is paused: its breaker open or probing, its rows pending with no attempt spent.
    flows::harness::eventually(
        Duration::from_secs(10),
        "the e-mail breaker to open",
        || {
            let state = gauge(&service, "email");
            async move { state >= 1.0 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = helpers::rows(&setup.bus).await;
    for r in rows.iter().filter(|r| r.1 == "email") {
        assert_eq!(
            (r.2.as_str(), r.3),
            ("pending", 0),
            "paused, not failing: {r:?}"
        );
    }
    for r in rows.iter().filter(|r| r.1 == "sms") {
        assert_eq!(r.2, "sent", "{r:?}");
    }
    assert_eq!(gauge(&service, "sms"), 0.0, "the SMS breaker stays closed");
    assert!(
        service.counter(
            "notification_attempts_total",
            Some(("outcome", "unreachable"))
        ) >= 1.0
    );
    assert!(setup.smtp.mails().is_empty());

    // The relay comes back: the probe succeeds and every e-mail is sent, once.
    setup.smtp.resume().await;
    let mails = setup.mails(emails.len(), Duration::from_secs(30)).await;
    setup
        .rows_until("every row sent", |r| {
            r.len() == all.len() && r.iter().all(|r| r.2 == "sent")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails = setup.smtp.mails().len().max(mails.len());
    assert_eq!(mails, emails.len(), "each e-mail accepted once");
    let ids: BTreeSet<String> = setup
        .smtp
        .mails()
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    let expected: BTreeSet<String> = emails.iter().map(helpers::message_id).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        setup.http.received(None).len(),
        sms.len(),
        "no SMS sent twice"
    );
    assert_eq!(gauge(&service, "email"), 0.0, "closed again");
    let dlq = flows::harness::end_offsets(&events::topics::dead_letter_topic(
        &setup.bus.notification_topic,
    ))
    .await;
    assert_eq!(dlq.iter().sum::<i64>(), 0, "an outage dead-letters nothing");
    service.stop().await;
}

fn gauge(service: &flows::service::InProcess, channel: &str) -> f64 {
    service
        .running
        .registry
        .gather()
        .into_iter()
        .filter(|f| f.name() == "notification_channel_breaker_state")
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "channel" && l.value() == channel)
        })
        .map(|m| m.get_gauge().get_value())
        .sum()
}
