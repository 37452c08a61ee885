//! Each channel end to end: a request written through the outbox reaches an SMTP server on a socket (headers,
//! both parts, the derived Message-ID, AUTH), the SMS sandbox (Twilio's form, basic auth, segments counted) and a
//! webhook endpoint (signed like merchant webhooks, checked by an independent verifier); the rows say sent, the
//! metrics count per channel.

use std::time::Duration;

use events::notification::Channel;
use flows::receiver::verify;

use crate::helpers::{self, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_email_arrives_with_its_headers_and_both_parts() {
    let setup = Setup::new().await;
    let (merchant, recipient) = helpers::merchant();
    setup
        .contact(
            &merchant.to_string(),
            Some("owner@merchant.example"),
            None,
            None,
        )
        .await;
    let service = setup
        .start(|s| {
            s.email.username = Some("relay-user".into());
            s.email.password = Some("relay-password".to_string().into());
        })
        .await;
    // One to the contact on file, in English; one to an address of the request's own, in German.
    let on_file = helpers::request(
        recipient.clone(),
        Channel::Email,
        "settlement_completed",
        "en",
        None,
    );
    let explicit = helpers::request(
        helpers::customer(),
        Channel::Email,
        "settlement_held",
        "de-AT",
        Some("kunde@example.org"),
    );
    setup.request(&[on_file.clone(), explicit.clone()]).await;
    let mails = setup.mails(2, Duration::from_secs(30)).await;
    assert_eq!(mails.len(), 2);
    let find = |id: &str| {
        mails
            .iter()
            .find(|m| m.header("Message-ID").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no e-mail with Message-ID {id}: {mails:#?}"))
    };
    let en = find(&helpers::message_id(&on_file));
    assert_eq!(en.rcpt_to, ["owner@merchant.example"]);
    assert_eq!(en.mail_from, "notifications@checkout.localhost");
    assert_eq!(
        en.auth_user.as_deref(),
        Some("relay-user"),
        "AUTH as configured"
    );
    assert_eq!(en.header("To").as_deref(), Some("owner@merchant.example"));
    let from = en.header("From").unwrap_or_default();
    assert!(
        from.contains("Crypto Checkout") && from.ends_with("<notifications@checkout.localhost>"),
        "{from}"
    );
    assert_eq!(
        en.header("Subject").as_deref(),
        Some("Settlement set_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d paid out: 99.00 EUR")
    );
    assert!(en.header("Date").is_some());
    assert!(
        en.header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")),
        "{:?}",
        en.header("Content-Type")
    );
    let parts = en.parts();
    let types: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["text/plain; charset=utf-8", "text/html; charset=utf-8"],
        "multipart/alternative, text then HTML"
    );
    let plain = en.part("text/plain").unwrap();
    assert!(plain.contains("Paid out:     99.00 EUR"), "{plain}");
    let html = en.part("text/html").unwrap();
    assert!(html.contains("<th>99.00 EUR</th>"), "{html}");
    let de = find(&helpers::message_id(&explicit));
    assert_eq!(de.rcpt_to, ["kunde@example.org"]);
    assert!(
        de.header("Subject")
            .is_some_and(|s| s.contains("=?utf-8?") || s.contains("zurückgehalten")),
        "the German subject: {:?}",
        de.header("Subject")
    );
    let plain = de.part("text/plain").unwrap();
    assert!(
        plain.contains("Guten Tag") && plain.contains("zurückgehalten"),
        "German, falling back from de-AT: {plain}"
    );

    let rows = setup
        .rows_until("both sent", |r| {
            r.len() == 2 && r.iter().all(|r| r.2 == "sent")
        })
        .await;
    assert!(rows.iter().all(|r| r.3 == 1), "one attempt each: {rows:?}");
    let listed = notifications::store::list(
        setup.bus.pool(),
        &notifications::store::Filter {
            recipient: Some(merchant.to_string()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sent_to.as_deref(), Some("owner@merchant.example"));
    assert_eq!(
        service.counter("notification_sent_total", Some(("channel", "email"))),
        2.0
    );
    let metrics = service.check_ops_endpoints().await;
    assert!(
        metrics.contains("notification_send_seconds_bucket{channel=\"email\""),
        "{metrics}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sms_goes_to_the_provider_api_with_its_segments_counted() {
    let setup = Setup::new().await;
    let (merchant, recipient) = helpers::merchant();
    setup
        .contact(&merchant.to_string(), None, Some("+4915112345678"), None)
        .await;
    let service = setup.start(|_| {}).await;
    let request = helpers::request(recipient, Channel::Sms, "settlement_completed", "en", None);
    setup.request(std::slice::from_ref(&request)).await;
    let got = setup
        .posts(&helpers::sms_path(), 1, Duration::from_secs(30))
        .await;
    let form = helpers::form(&got[0]);
    assert_eq!(form["To"], "+4915112345678");
    assert_eq!(form["From"], "+15005550006");
    assert_eq!(
        form["Body"],
        "Crypto Checkout: settlement of invoice inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e paid out, 99.00 EUR."
    );
    assert_eq!(
        got[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        helpers::SID,
        helpers::TOKEN
    ));
    assert_eq!(
        got[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    setup
        .rows_until("sent", |r| r.len() == 1 && r[0].2 == "sent")
        .await;
    let (sid, segments): (Option<String>, Option<i32>) = sqlx::query_as(
        "SELECT provider_id, segments FROM notification_deliveries WHERE notification_id = $1",
    )
    .bind(request.notification_id.as_uuid())
    .fetch_one(setup.bus.pool())
    .await
    .unwrap();
    assert!(
        sid.is_some_and(|s| s.starts_with("SM")),
        "the provider's sid is kept"
    );
    assert_eq!(segments, Some(1));
    assert_eq!(
        service.counter("notification_sms_segments_total", None),
        1.0
    );
    assert_eq!(
        service.counter("notification_sent_total", Some(("channel", "sms"))),
        1.0
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_notification_is_signed_like_merchant_webhooks() {
    let setup = Setup::new().await;
    let (merchant, recipient) = helpers::merchant();
    let secret = setup
        .contact(
            &merchant.to_string(),
            None,
            None,
            Some(&setup.http.url("hook")),
        )
        .await
        .expect("a webhook contact gets a secret");
    let service = setup.start(|_| {}).await;
    let request = helpers::request(recipient, Channel::Webhook, "settlement_held", "en", None);
    setup.request(std::slice::from_ref(&request)).await;
    let got = setup.posts("hook", 1, Duration::from_secs(30)).await;
    let r = &got[0];
    let id = r.webhook_id.as_deref().expect("webhook-id");
    assert_eq!(
        id,
        format!("msg_{}", request.notification_id.as_uuid().simple())
    );
    assert!(
        verify(
            &secret,
            id,
            r.timestamp.as_deref().expect("webhook-timestamp"),
            &r.body,
            r.signature.as_deref().expect("webhook-signature"),
        ),
        "the signature verifies with the contact's secret (independent verifier)"
    );
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "notification.settlement_held");
    assert_eq!(
        body["data"]["notification_id"],
        request.notification_id.to_string()
    );
    assert_eq!(body["data"]["parameters"]["net_amount"], "49.50");
    assert!(
        r.user_agent
            .as_deref()
            .is_some_and(|u| u.starts_with("crypto-checkout-notifications/"))
    );
    setup
        .rows_until("sent", |r| r.len() == 1 && r[0].2 == "sent")
        .await;
    service.stop().await;
}
