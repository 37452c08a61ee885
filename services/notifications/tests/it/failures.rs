//! What providers refuse: a 4xx from the SMS API and an SMTP 5yz are dead-lettered at once with the provider's
//! reason; 5xx are retried on the policy's schedule and dead-lettered after the last retry; a provider that fails
//! twice then accepts gets the notification once; a request nobody can deliver (no contact on file) is
//! dead-lettered with that reason; one for a merchant not known yet waits for it.

use std::time::Duration;

use events::notification::Channel;
use flows::harness::header;
use flows::receiver::Behaviour;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_4xx_is_dead_lettered_at_once_with_its_reason() {
    let setup = Setup::new().await;
    setup.http.set(&helpers::sms_path(), Behaviour::Always(400));
    setup.smtp.refuse(
        "nobody@",
        "550 5.1.1 <nobody@merchant.example>: mailbox unavailable",
    );
    let service = setup.start(|_| {}).await;
    let (_, recipient) = helpers::merchant();
    let sms = helpers::request(
        recipient.clone(),
        Channel::Sms,
        "settlement_completed",
        "en",
        Some("+15550001111"),
    );
    let email = helpers::request(
        recipient,
        Channel::Email,
        "settlement_completed",
        "en",
        Some("nobody@merchant.example"),
    );
    setup.request(&[sms.clone(), email.clone()]).await;
    let letters = helpers::dead_letters(&setup.bus, 2).await;
    for letter in &letters {
        let id = header(letter, "notification.id").expect("notification.id");
        let (channel, reason) = if id == sms.notification_id.to_string() {
            ("sms", "400")
        } else {
            assert_eq!(id, email.notification_id.to_string());
            ("email", "mailbox unavailable")
        };
        assert_eq!(
            header(letter, "notification.channel").as_deref(),
            Some(channel)
        );
        assert_eq!(
            header(letter, "notification.reason").as_deref(),
            Some("rejected")
        );
        assert_eq!(
            header(letter, "dlq.attempts").as_deref(),
            Some("1"),
            "no retry after a 4xx"
        );
        let message = header(letter, "dlq.error.message").unwrap_or_default();
        assert!(
            message.contains(reason),
            "{channel}: the provider's reason in {message}"
        );
        if channel == "email" {
            assert!(message.contains("550"), "the SMTP code in {message}");
        }
        assert_eq!(
            header(letter, "dlq.original.topic").as_deref(),
            Some(setup.bus.notification_topic.as_str())
        );
        assert_eq!(
            header(letter, "dlq.consumer.group").as_deref(),
            Some(service.group.as_str())
        );
    }
    let rows = setup
        .rows_until("both failed", |r| {
            r.len() == 2 && r.iter().all(|r| r.2 == "failed")
        })
        .await;
    assert!(
        rows.iter()
            .all(|r| r.3 == 1 && r.4.as_deref() == Some("permanent")),
        "{rows:?}"
    );
    assert_eq!(
        setup.http.received(None).len(),
        1,
        "one attempt at the SMS API"
    );
    assert!(setup.smtp.mails().is_empty());
    assert_eq!(
        service.counter("notification_failed_total", Some(("reason", "rejected"))),
        2.0
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_is_retried_on_the_schedule_then_dead_lettered_and_a_recovering_provider_gets_it_once()
 {
    let setup = Setup::new().await;
    let failing = "sms-failing";
    let service = setup
        .start(|s| s.sms.base_url = setup.http.url(failing))
        .await;
    let path = format!(
        "{failing}/2010-04-01/Accounts/{}/Messages.json",
        helpers::SID
    );
    setup.http.set(&path, Behaviour::Always(503));
    let (_, recipient) = helpers::merchant();
    let doomed = helpers::request(
        recipient.clone(),
        Channel::Sms,
        "settlement_completed",
        "en",
        Some("+15550002222"),
    );
    setup.request(std::slice::from_ref(&doomed)).await;
    let letters = helpers::dead_letters(&setup.bus, 1).await;
    let letter = &letters[0];
    assert_eq!(
        header(letter, "dlq.attempts").as_deref(),
        Some("6"),
        "1 attempt + 5 retries"
    );
    assert_eq!(
        header(letter, "notification.reason").as_deref(),
        Some("retries_exhausted")
    );
    assert!(
        header(letter, "dlq.error.message")
            .unwrap_or_default()
            .contains("503")
    );
    let at = |name: &str| {
        chrono::DateTime::parse_from_rfc3339(&header(letter, name).expect(name)).unwrap()
    };
    let waited = (at("dlq.last.failure") - at("dlq.first.failure"))
        .to_std()
        .unwrap();
    // 100 + 200 + 400 + 800 + 1600 ms between the first and the last attempt.
    assert!(
        waited >= Duration::from_millis(3000),
        "the retries waited {waited:?}"
    );
    assert_eq!(setup.http.received(Some(&path)).len(), 6);

    service.stop().await;

    // Two 503s, then accepted: sent once, after three attempts (another provider path, so the receiver counts
    // this request's answers from the start; the new group's replay of the first request adds nothing).
    let recovering = "sms-recovering";
    let path = format!(
        "{recovering}/2010-04-01/Accounts/{}/Messages.json",
        helpers::SID
    );
    setup
        .http
        .set(&path, Behaviour::FailFirst { n: 2, status: 503 });
    let service = setup
        .start(|s| s.sms.base_url = setup.http.url(recovering))
        .await;
    let recovers = helpers::request(
        recipient,
        Channel::Sms,
        "settlement_held",
        "en",
        Some("+15550003333"),
    );
    setup.request(std::slice::from_ref(&recovers)).await;
    let rows = setup
        .rows_until("the second one sent", |r| {
            r.iter()
                .any(|r| r.0 == recovers.notification_id.as_uuid() && r.2 == "sent")
        })
        .await;
    let row = rows
        .iter()
        .find(|r| r.0 == recovers.notification_id.as_uuid())
        .unwrap();
    assert_eq!(row.3, 3, "{row:?}");
    assert_eq!(setup.http.received(Some(&path)).len(), 3);
    assert_eq!(
        rows.len(),
        2,
        "the replayed request added nothing: {rows:?}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_without_destination_or_contact_is_dead_lettered_with_that_reason() {
    let setup = Setup::new().await;
    let service = setup.start(|_| {}).await;
    // Known (a contact on file) but without an e-mail address: no_destination at once.
    let (_, recipient) = helpers::merchant();
    setup
        .contact(&recipient.id, None, Some("+15550001111"), None)
        .await;
    let orphan = helpers::request(
        recipient,
        Channel::Email,
        "settlement_completed",
        "en",
        None,
    );
    setup.request(std::slice::from_ref(&orphan)).await;
    let letters = helpers::dead_letters(&setup.bus, 1).await;
    assert_eq!(
        header(&letters[0], "notification.reason").as_deref(),
        Some("no_destination")
    );
    assert!(
        header(&letters[0], "dlq.error.message")
            .unwrap_or_default()
            .contains("no email contact on file")
    );
    service.stop().await;
}

/// The chaos run's finding: a merchant's notification can reach its topic before the merchants' read model has
/// the merchant (two topics, no order between them). It must wait for the merchant — without spending the retry
/// schedule — and be sent once the merchant is known; only after `unknown_merchant_wait` is it dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_for_a_merchant_not_known_yet_waits_for_it_then_is_sent_or_dead_lettered() {
    let setup = Setup::new().await;
    let service = setup
        .start(|s| s.dispatch.unknown_merchant_wait = Duration::from_secs(8))
        .await;
    let (_, early) = helpers::merchant();
    let (_, never) = helpers::merchant();
    let waits = helpers::request(
        early.clone(),
        Channel::Email,
        "settlement_completed",
        "en",
        None,
    );
    let gives_up = helpers::request(never, Channel::Email, "settlement_completed", "en", None);
    setup.request(&[waits.clone(), gives_up.clone()]).await;
    let id = |r: &events::notification::NotificationRequested| r.notification_id.as_uuid();
    // Both wait: pending, no attempt spent, the reason on the row.
    let rows = setup
        .rows_until("both waiting", |r| {
            r.len() == 2
                && r.iter().all(|r| {
                    r.2 == "pending"
                        && r.5
                            .as_deref()
                            .is_some_and(|e| e.contains("not in the merchants"))
                })
        })
        .await;
    assert!(rows.iter().all(|r| r.3 == 0), "{rows:?}");
    // The merchant becomes known: sent, as a first attempt.
    setup
        .contact(&early.id, Some("late@merchant.example"), None, None)
        .await;
    let mails = setup.mails(1, Duration::from_secs(30)).await;
    assert_eq!(mails[0].rcpt_to, ["late@merchant.example"]);
    assert_eq!(
        mails[0].header("Message-ID").as_deref(),
        Some(helpers::message_id(&waits).as_str())
    );
    // The other never does: dead-lettered once its wait is over.
    let letters = helpers::dead_letters(&setup.bus, 1).await;
    assert_eq!(
        header(&letters[0], "notification.id").as_deref(),
        Some(gives_up.notification_id.to_string().as_str())
    );
    assert_eq!(
        header(&letters[0], "notification.reason").as_deref(),
        Some("no_destination")
    );
    let rows = setup
        .rows_until("settled", |r| r.iter().all(|r| r.2 != "pending"))
        .await;
    let status = |n| rows.iter().find(|r| r.0 == n).map(|r| (r.2.clone(), r.3));
    assert_eq!(status(id(&waits)), Some(("sent".into(), 1)));
    assert_eq!(status(id(&gives_up)).map(|s| s.0), Some("failed".into()));
    service.stop().await;
}
