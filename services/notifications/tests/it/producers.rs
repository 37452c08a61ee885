//! The producers end to end, through the outbox and the notification topic to an SMTP server: the settlement
//! service's completed and held settlements, and a disabled webhook endpoint, each become one e-mail to the
//! merchant's e-mail of the merchant contract — the expectation taken from the flow generator's truth (its plan's
//! contacts), not from the services.

use std::collections::BTreeSet;
use std::time::Duration;

use flows::Scenario;
use flows::service::InProcess;

use crate::helpers::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_and_held_settlements_reach_the_merchant_by_email_once() {
    let setup = Setup::new().await;
    let flows = flows::generate(&Scenario::new(7601, 4, 40).settled_by_service());
    let expected = flows.expected_settlements();
    // Where each merchant is reached: the e-mail of the merchant contract (MerchantCreated v2, moved by a
    // SettingsUpdated v2 for merchants whose plan updates them), as the plan has it at the horizon. No contact is
    // set by hand: the notifications service reads it from the merchants' read model.
    let email_of = |merchant: events::MerchantId| -> String {
        let m = flows
            .plan
            .merchants
            .iter()
            .find(|m| m.id == merchant)
            .expect("a planned merchant");
        m.settings_at(flows.plan.horizon)
            .contact
            .email
            .clone()
            .expect("the generator gives every merchant an e-mail")
    };
    // What the merchants must be told: (address, what the subject names).
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &expected {
        let to = email_of(s.merchant_id);
        if s.held {
            wanted.insert((
                to.clone(),
                format!("Settlement of invoice {} held", s.invoice_id),
            ));
        }
        if s.status == "completed" {
            wanted.insert((to, format!("Settlement {} paid out", s.settlement_id)));
        }
    }
    assert!(
        wanted.len() >= 2,
        "the scenario settles something: {expected:?}"
    );
    assert!(
        flows.plan.merchants.iter().any(|m| m.update.is_some()),
        "some merchant's e-mail moves with a settings update"
    );
    let topics = std::slice::from_ref(&setup.bus.domain_topic);
    let projections = InProcess::start::<projections::Projections>(&setup.bus, topics).await;
    let settlement = InProcess::start::<settlement::Settlement>(&setup.bus, topics).await;
    setup.bus.append(&flows.events, 50).await;
    // The read model has every merchant's final contact before the first notification is sent: sent at once, a
    // request for a merchant not projected yet has no destination (decision 0031).
    let finals: Vec<String> = flows
        .plan
        .merchants
        .iter()
        .map(|m| email_of(m.id))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let projected: i64 =
            sqlx::query_scalar("SELECT count(*) FROM proj_merchants WHERE contact_email = ANY($1)")
                .bind(&finals)
                .fetch_one(setup.bus.pool())
                .await
                .unwrap();
        if projected == finals.len() as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projections applied {projected} of {} merchant contacts in 60 s",
            finals.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let notifications = setup.start(|_| {}).await;
    let mails = setup.mails(wanted.len(), Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = setup.smtp.mails().len().max(mails.len());
    let got: Vec<(String, String)> = setup
        .smtp
        .mails()
        .iter()
        .map(|m| (m.rcpt_to.join(","), m.header("Subject").unwrap_or_default()))
        .collect();
    assert_eq!(
        mails,
        wanted.len(),
        "one e-mail per completed or held settlement: {got:#?}"
    );
    for (to, subject) in &wanted {
        assert!(
            got.iter()
                .any(|(t, s)| t == to && s.starts_with(subject.as_str())),
            "no e-mail to {to} about `{subject}`: {got:#?}"
        );
    }
    projections.stop().await;
    settlement.stop().await;
    notifications.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_webhook_endpoint_reaches_the_merchant_by_email() {
    let setup = Setup::new().await;
    let merchant = events::MerchantId::new();
    setup
        .contact(
            &merchant.to_string(),
            Some("hooks@merchant.example"),
            None,
            None,
        )
        .await;
    let guard = webhooks::ssrf::Guard {
        allow_http: true,
        allowed: "127.0.0.0/8".parse().unwrap(),
    };
    let (endpoint, _) = webhooks::endpoints::add(
        setup.bus.pool(),
        &guard,
        &setup.secret_box(),
        webhooks::endpoints::NewEndpoint {
            merchant_id: merchant,
            url: &setup.http.url("merchant-hook"),
            event_types: &[],
            description: "test",
        },
    )
    .await
    .unwrap();
    let service = setup.start(|_| {}).await;
    webhooks::endpoints::disable(
        setup.bus.pool(),
        endpoint.endpoint_id,
        "moved to a new URL",
        &events::Metadata::system("test").unwrap(),
    )
    .await
    .unwrap();
    let mails = setup.mails(1, Duration::from_secs(30)).await;
    let mail = &mails[0];
    assert_eq!(mail.rcpt_to, ["hooks@merchant.example"]);
    assert_eq!(
        mail.header("Subject"),
        Some(format!(
            "Webhook endpoint {} was disabled",
            endpoint.endpoint_id
        ))
    );
    let plain = mail.part("text/plain").unwrap();
    assert!(
        plain.contains("an operator disabled it: moved to a new URL"),
        "{plain}"
    );
    service.stop().await;
}

#[test]
fn every_request_settlement_derives_from_a_realistic_flow_passes_the_contract() {
    let flows = flows::generate(&Scenario::new(7602, 30, 1500).settled_by_service());
    let events = flows.events_with_expected_settlements();
    let requests = settlement::notify::requests(&events);
    let expected = flows.expected_settlements();
    let want = expected.iter().filter(|s| s.held).count()
        + expected.iter().filter(|s| s.status == "completed").count();
    assert_eq!(
        requests.len(),
        want,
        "one per completed and per held settlement"
    );
    for r in &requests {
        events::Publishable::to_outbox_record(r)
            .unwrap_or_else(|e| panic!("{r:?} breaks the contract: {e}"));
    }
}
