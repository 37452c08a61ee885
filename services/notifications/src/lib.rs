//! `notifications`: the notification-delivery consumer group — e-mail (SMTP), SMS (a Twilio-shaped HTTP API) and
//! signed webhooks, at-least-once and idempotent by notification id (decision 0031).
//!
//! Two halves in one service, like the webhooks service:
//! - the **consumer** ([`handler`]) reads `NotificationRequested` records under decision 0007's policy and, per
//!   partition batch, records one row per notification in `notification_deliveries` ([`store::record`]) before
//!   its offsets are committed — so a request is never lost, and a redelivered one adds nothing;
//! - the **dispatcher** ([`dispatch`]) runs one loop per channel: it claims due rows under a lease, renders them
//!   ([`templates`]), sends them ([`channels`]) and settles each at once: accepted rows are `sent` and never sent
//!   again; a provider's refusal (4xx, SMTP 5yz) is dead-lettered at once with the provider's reason; 5xx and
//!   timeouts are retried on the policy's schedule (5 retries, 2–32 s), then dead-lettered. Each channel has its
//!   own circuit breaker: an unreachable SMTP relay or SMS API pauses only that channel, without spending
//!   retries, while the others keep sending.
//!
//! Contacts on file (used when a request names no destination) are in `notification_contacts` ([`contacts`]);
//! `checkoutctl notifications` lists deliveries and sets contacts.

pub mod channels;
pub mod contacts;
pub mod dispatch;
pub mod handler;
pub mod metrics;
pub mod store;
pub mod templates;

use std::time::Duration;

use runtime::service::{
    Companion, ConsumerService, ConsumerSettings, ServiceContext, ServiceSettings,
};
use runtime::{GroupPolicy, Guarantee};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `[service]` of the notifications service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    pub consumer: ConsumerSettings,
    pub dispatch: DispatchSettings,
    pub email: EmailSettings,
    pub sms: SmsSettings,
    pub webhook: WebhookChannelSettings,
}

impl ServiceSettings for NotificationSettings {
    fn consumer(&self) -> &ConsumerSettings {
        &self.consumer
    }
    fn consumer_mut(&mut self) -> &mut ConsumerSettings {
        &mut self.consumer
    }
}

/// `[service.dispatch]`: how each channel's loop sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSettings {
    /// Attempts in flight at once per channel in this process.
    pub concurrency: usize,
    /// How often due rows are looked for when there is nothing to do.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed row is this process's; longer than any channel's timeout.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// First wait of an open channel breaker before its probe; doubles up to `breaker_probe_max`.
    #[serde(with = "humantime_serde")]
    pub breaker_probe_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub breaker_probe_max: Duration,
    /// How long a request for a merchant that the merchants' read model does not know yet waits for it (the
    /// MerchantCreated is on another topic, and the projection may lag) before it is dead-lettered as
    /// `no_destination`. Waiting is not an attempt: the retry schedule is untouched.
    #[serde(with = "humantime_serde")]
    pub unknown_merchant_wait: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            concurrency: 8,
            poll_interval: Duration::from_millis(200),
            lease: Duration::from_secs(60),
            breaker_probe_initial: Duration::from_secs(1),
            breaker_probe_max: Duration::from_secs(30),
            unknown_merchant_wait: Duration::from_secs(15 * 60),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback, the development sink).
    None,
    /// STARTTLS required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[service.email]`: the SMTP relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// AUTH (PLAIN or LOGIN, whichever the server offers) when set.
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// `From:` (`Crypto Checkout <notifications@checkout.example>`); its domain ends every `Message-ID`.
    pub from: String,
    /// Per message: connection to the server's answer to the data.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Crypto Checkout <notifications@checkout.localhost>".into(),
            timeout: Duration::from_secs(15),
        }
    }
}

/// `[service.sms]`: the SMS provider (Twilio's Messages API shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// `https://api.twilio.com`; the sandbox's URL in development and tests.
    pub base_url: String,
    pub account_sid: String,
    #[serde(skip_serializing)]
    pub auth_token: Option<SecretString>,
    /// The sending number (E.164) or messaging service.
    pub from: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmsSettings {
    fn default() -> Self {
        SmsSettings {
            base_url: "http://127.0.0.1:2526".into(),
            account_sid: "ACdevelopment".into(),
            auth_token: None,
            from: "+15005550006".into(),
            timeout: Duration::from_secs(15),
        }
    }
}

/// `[service.webhook]`: the webhook channel (signed like merchant webhooks, through the same SSRF guard).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookChannelSettings {
    /// Networks the SSRF guard lets through; empty: `WEBHOOK_ALLOWED_NETWORKS`.
    pub allowed_networks: Vec<String>,
    /// Accept `http` URLs (development only); `CHECKOUT_ENVIRONMENT=development` turns it on.
    pub allow_http: bool,
    /// Key of the secrets at rest; unset: `WEBHOOK_ENCRYPTION_KEY`. Needed only to send webhook notifications.
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub user_agent: String,
}

impl Default for WebhookChannelSettings {
    fn default() -> Self {
        WebhookChannelSettings {
            allowed_networks: Vec::new(),
            allow_http: false,
            encryption_key: None,
            timeout: Duration::from_secs(15),
            user_agent: format!(
                "crypto-checkout-notifications/{}",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

impl NotificationSettings {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        let d = &self.dispatch;
        anyhow::ensure!(
            d.concurrency >= 1,
            "dispatch.concurrency must be at least 1"
        );
        let longest = self
            .email
            .timeout
            .max(self.sms.timeout)
            .max(self.webhook.timeout);
        anyhow::ensure!(
            d.lease > longest,
            "dispatch.lease ({:?}) must be longer than every channel's timeout ({longest:?})",
            d.lease
        );
        anyhow::ensure!(
            d.breaker_probe_initial <= d.breaker_probe_max,
            "dispatch.breaker_probe_initial must not exceed breaker_probe_max"
        );
        templates::from_address(&self.email.from)?;
        url::Url::parse(&self.sms.base_url)
            .map_err(|e| anyhow::anyhow!("sms.base_url `{}`: {e}", self.sms.base_url))?;
        Ok(())
    }
}

/// The notification-delivery service (operations port 9107).
pub struct Notifications;

impl ConsumerService for Notifications {
    const NAME: &'static str = "notifications";
    const GROUP: &'static str = runtime::policy::NOTIFICATION_DELIVERY;
    const ABOUT: &'static str = "Delivers notifications: every NotificationRequested becomes one e-mail (SMTP), \
        SMS (a Twilio-shaped API) or signed webhook, recorded by notification id before the offset is committed, \
        sent at least once and never again once a provider accepted it, retried 5 times (2, 4, 8, 16, 32 s), \
        then dead-lettered; a provider's 4xx is dead-lettered at once; one circuit breaker per channel. \
        Deliveries and contacts: `checkoutctl notifications`.";
    type Settings = NotificationSettings;
    type Handler = runtime::Batched<handler::Recorder>;

    async fn handler(
        ctx: ServiceContext<'_, NotificationSettings>,
    ) -> anyhow::Result<Self::Handler> {
        ctx.settings.validate()?;
        let metrics = metrics::RecordMetrics::register(ctx.registry)?;
        Ok(runtime::Batched(handler::Recorder::new(
            ctx.pool.clone(),
            metrics,
        )))
    }

    async fn companion(
        ctx: ServiceContext<'_, NotificationSettings>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<Companion>> {
        let dispatcher = dispatch::Dispatcher::new(&ctx)?;
        Ok(Some(tokio::spawn(dispatcher.run(shutdown))))
    }

    /// The spec: at-least-once, with the deliveries table as the idempotency method.
    fn check_policy(policy: &GroupPolicy) -> Result<(), String> {
        match policy.guarantee {
            Guarantee::AtLeastOnce => Ok(()),
            other => Err(format!(
                "notification delivery calls providers no transaction covers: the guarantee must be \
                 at_least_once, not {}",
                other.as_str()
            )),
        }
    }
}
