//! Test plumbing of the notifications service: a bus (with its notification topic), an SMTP sink, an HTTP
//! receiver (the SMS sandbox and webhook endpoints), the service in this process, requests written through the
//! outbox, and waits that fail naming what they waited for.

use std::collections::BTreeMap;
use std::time::Duration;

use events::notification::{Channel, NotificationRequested, Recipient, RecipientKind};
use events::{EventId, MerchantId, NotificationId};
use flows::harness::{Bus, Publisher};
use flows::receiver::{Received, Receiver};
use flows::service::InProcess;
use flows::smtp::{Mail, SmtpSink};
use notifications::{NotificationSettings, Notifications};
use runtime::{Backoff, RetryPolicy};
use secrecy::SecretString;
use service_kit::Settings;

/// The SMS sandbox's account.
pub const SID: &str = "ACtest0001";
pub const TOKEN: &str = "sandbox-token";

/// A bus, an SMTP sink, a receiver, the webhook key, and the outbox publisher.
pub struct Setup {
    pub bus: Bus,
    pub smtp: SmtpSink,
    pub http: Receiver,
    pub key: String,
    pub publisher: Option<Publisher>,
}

impl Setup {
    pub async fn new() -> Setup {
        let bus = Bus::new().await;
        let publisher = Some(bus.start_publisher().await);
        Setup {
            bus,
            smtp: SmtpSink::start().await,
            http: Receiver::start().await,
            key: webhooks::signing::SecretBox::generate_key(),
            publisher,
        }
    }

    pub fn secret_box(&self) -> webhooks::signing::SecretBox {
        webhooks::signing::SecretBox::from_base64(&self.key).expect("a generated key")
    }

    /// The service's settings on this bus under a fresh group: the sink, the sandbox, quick retries (5 × 100 ms
    /// doubling) and breaker probes, `tweak`ed.
    pub fn settings(
        &self,
        tweak: impl FnOnce(&mut NotificationSettings),
    ) -> (Settings<NotificationSettings>, String) {
        let group = testkit::unique_name("notifications");
        let mut settings = flows::service::settings::<Notifications>(
            &self.bus,
            &group,
            std::slice::from_ref(&self.bus.notification_topic),
            flows::service::fast_options(),
        );
        let s = &mut settings.service;
        s.email.port = self.smtp.port();
        s.email.timeout = Duration::from_secs(5);
        s.sms.base_url = self.http.url("sms");
        s.sms.account_sid = SID.into();
        s.sms.auth_token = Some(SecretString::from(TOKEN));
        s.sms.timeout = Duration::from_secs(5);
        s.webhook.allow_http = true;
        s.webhook.allowed_networks = vec!["127.0.0.0/8".into()];
        s.webhook.encryption_key = Some(SecretString::from(self.key.clone()));
        s.webhook.timeout = Duration::from_secs(5);
        s.dispatch.poll_interval = Duration::from_millis(20);
        s.dispatch.lease = Duration::from_secs(10);
        s.dispatch.breaker_probe_initial = Duration::from_millis(200);
        s.dispatch.breaker_probe_max = Duration::from_millis(500);
        quick_retries(s);
        tweak(s);
        (settings, group)
    }

    /// Starts the service with `tweak`ed settings.
    pub async fn start(&self, tweak: impl FnOnce(&mut NotificationSettings)) -> InProcess {
        let (settings, group) = self.settings(tweak);
        InProcess::start_with::<Notifications>(settings, group).await
    }

    /// Appends `requests` to the outbox in one transaction (the publisher sends them to the bus's topic).
    pub async fn request(&self, requests: &[NotificationRequested]) {
        let mut tx = self.bus.pool().begin().await.expect("begin");
        outbox::append_batch(&mut tx, requests)
            .await
            .expect("append to the outbox");
        tx.commit().await.expect("commit");
    }

    /// Sets `recipient`'s contact; returns the webhook secret when a URL was given.
    pub async fn contact(
        &self,
        recipient: &str,
        email: Option<&str>,
        phone: Option<&str>,
        webhook_url: Option<&str>,
    ) -> Option<String> {
        notifications::contacts::set(
            self.bus.pool(),
            Some(&self.secret_box()),
            recipient,
            &notifications::contacts::ContactUpdate {
                email: email.map(str::to_string),
                phone: phone.map(str::to_string),
                webhook_url: webhook_url.map(str::to_string),
                locale: None,
            },
        )
        .await
        .expect("set the contact")
        .map(|s| s.expose())
    }

    /// Waits (`timeout`) until the sink holds at least `n` messages; returns them all.
    pub async fn mails(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let started = std::time::Instant::now();
        loop {
            let mails = self.smtp.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(
                started.elapsed() < timeout,
                "{} of {n} e-mails arrived within {timeout:?}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (`timeout`) until path `path` received at least `n` requests; returns them.
    pub async fn posts(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let started = std::time::Instant::now();
        loop {
            let got = self.http.received(Some(path));
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < timeout,
                "/{path}: {} of {n} requests within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (30 s) until the delivery rows satisfy `done`; fails showing them.
    pub async fn rows_until(&self, what: &str, done: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        let started = std::time::Instant::now();
        loop {
            let rows = rows(&self.bus).await;
            if done(&rows) {
                return rows;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: deliveries stayed {rows:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_publisher(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.stop().await;
        }
    }
}

/// The path of the SMS sandbox's Messages API.
pub fn sms_path() -> String {
    format!("sms/2010-04-01/Accounts/{SID}/Messages.json")
}

/// Decision 0007's number of retries, quick: 5 retries 100 ms × 2ⁿ.
pub fn quick_retries(settings: &mut NotificationSettings) {
    settings.consumer.policy.retry = Some(RetryPolicy {
        max_retries: 5,
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2,
        },
    });
}

/// `n` merchants' settlement e-mails (`m{i}@merchant.example`) and SMS (`{phone_prefix}{i}`), in English: the
/// e-mail requests and the SMS requests.
pub fn emails_and_sms(
    n: usize,
    phone_prefix: &str,
) -> (Vec<NotificationRequested>, Vec<NotificationRequested>) {
    (0..n)
        .map(|i| {
            let (_, recipient) = merchant();
            (
                request(
                    recipient.clone(),
                    Channel::Email,
                    "settlement_completed",
                    "en",
                    Some(&format!("m{i}@merchant.example")),
                ),
                request(
                    recipient,
                    Channel::Sms,
                    "settlement_completed",
                    "en",
                    Some(&format!("{phone_prefix}{i}")),
                ),
            )
        })
        .unzip()
}

/// A request to `recipient` over `channel`.
pub fn request(
    recipient: Recipient,
    channel: Channel,
    template: &str,
    locale: &str,
    destination: Option<&str>,
) -> NotificationRequested {
    let parameters: BTreeMap<String, String> = match template {
        "settlement_completed" => [
            ("settlement_id", "set_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
            ("invoice_id", "inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e"),
            ("gross_amount", "100.00"),
            ("fee_amount", "1.00"),
            ("net_amount", "99.00"),
            ("currency", "EUR"),
        ]
        .as_slice(),
        "settlement_held" => [
            ("settlement_id", "set_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6d"),
            ("invoice_id", "inv_0194b3c2-5d1e-7a8b-9c0d-1e2f3a4b5c6e"),
            ("net_amount", "49.50"),
            ("currency", "USD"),
            ("reason", "merchant_suspended"),
        ]
        .as_slice(),
        _ => [].as_slice(),
    }
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    NotificationRequested {
        notification_id: NotificationId::derived(EventId::new(), template),
        requested_at: chrono::Utc::now(),
        recipient,
        channel,
        template: template.into(),
        locale: locale.into(),
        parameters,
        destination: destination.map(str::to_string),
        causation_id: None,
    }
}

/// A merchant recipient.
pub fn merchant() -> (MerchantId, Recipient) {
    let m = MerchantId::new();
    (m, Recipient::merchant(m))
}

/// A customer recipient.
pub fn customer() -> Recipient {
    Recipient {
        kind: RecipientKind::Customer,
        id: testkit::unique_name("cus"),
    }
}

/// A delivery row: (notification id, channel, status, attempts, failure class, last error).
pub type Row = (
    uuid::Uuid,
    String,
    String,
    i32,
    Option<String>,
    Option<String>,
);

pub async fn rows(bus: &Bus) -> Vec<Row> {
    sqlx::query_as(
        "SELECT notification_id, channel, status, attempts, failure_class, last_error
           FROM notification_deliveries ORDER BY created_at, notification_id",
    )
    .fetch_all(bus.pool())
    .await
    .expect("read notification_deliveries")
}

/// The `Message-ID` the service gives `request`'s e-mail.
pub fn message_id(request: &NotificationRequested) -> String {
    format!("<{}@checkout.localhost>", request.notification_id)
}

/// The dead letters of the bus's notification topic, once there are `n`.
pub async fn dead_letters(bus: &Bus, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let dlq = events::topics::dead_letter_topic(&bus.notification_topic);
    let letters = flows::harness::read_topic(&dlq, n, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), n, "dead letters on {dlq}");
    letters
}

/// The form fields of an SMS request.
pub fn form(r: &Received) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&r.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
