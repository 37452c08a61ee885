//! `webhooks`: the webhook-delivery consumer group — merchants' signed webhooks, at-least-once.
//!
//! Two halves in one service (decision 0029):
//! - the **consumer** ([`handler`]) reads domain events under the spec's policy and, per partition batch, records
//!   one delivery per (subscribed endpoint, event) in PostgreSQL ([`store::fan_out`]) before its offsets are
//!   committed — so an event is never lost, and recording it again changes nothing;
//! - the **dispatcher** ([`dispatch`]) sends pending deliveries: signed per Standard Webhooks ([`signing`]), with
//!   a stable `webhook-id`, through the SSRF guard ([`ssrf`]), retried on the spec's schedule (5 retries, 2–32 s)
//!   per delivery, so one failing endpoint never holds up another; deliveries of one endpoint with the same order
//!   key (the invoice, or the merchant) go one at a time, in order. After the last attempt the event is
//!   dead-lettered with provenance; a 410 or failures for `auto_disable_after` disable the endpoint.
//!
//! Endpoints are managed by `checkoutctl webhooks` ([`endpoints`]); the body is documented in [`body`].

pub mod body;
pub mod dispatch;
pub mod endpoints;
pub mod handler;
pub mod metrics;
pub mod signing;
pub mod ssrf;
pub mod store;

use std::time::Duration;

use runtime::service::{
    Companion, ConsumerService, ConsumerSettings, ServiceContext, ServiceSettings,
};
use runtime::{GroupPolicy, Guarantee};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Variable naming the networks the SSRF guard lets through (comma-separated CIDRs); read by the service (when
/// `[service.delivery] allowed_networks` is empty) and by `checkoutctl`.
pub const ALLOWED_NETWORKS_ENV: &str = "WEBHOOK_ALLOWED_NETWORKS";
/// Variable holding the key that encrypts endpoint secrets at rest (base64 of 32 bytes); read by the service (when
/// `[service.delivery] encryption_key` is unset) and by `checkoutctl`. Give both the same key.
pub const ENCRYPTION_KEY_ENV: &str = "WEBHOOK_ENCRYPTION_KEY";
/// `development` accepts `http` webhook URLs; every other environment (and none) requires `https`.
pub const ENVIRONMENT_ENV: &str = "CHECKOUT_ENVIRONMENT";

/// `[service]` of the webhooks service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    pub consumer: ConsumerSettings,
    pub delivery: DeliverySettings,
}

impl ServiceSettings for WebhookSettings {
    fn consumer(&self) -> &ConsumerSettings {
        &self.consumer
    }
    fn consumer_mut(&mut self) -> &mut ConsumerSettings {
        &mut self.consumer
    }
}

/// `[service.delivery]`: how the dispatcher sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Key encrypting endpoint secrets (base64 of 32 bytes); unset: `WEBHOOK_ENCRYPTION_KEY`. Required.
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
    /// Networks the SSRF guard lets through (CIDRs); empty: `WEBHOOK_ALLOWED_NETWORKS` (empty by default).
    pub allowed_networks: Vec<String>,
    /// Accept `http` URLs (development only); `CHECKOUT_ENVIRONMENT=development` turns it on.
    pub allow_http: bool,
    /// Per attempt, connection to last byte (the spec: 15 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts in flight at once in this process.
    pub concurrency: usize,
    /// Queues (an invoice's or a merchant's webhooks to one endpoint) in flight at once per endpoint, over every
    /// replica: what one slow endpoint can take.
    pub per_endpoint: usize,
    /// Deliveries of one queue claimed together and sent one after the other (order kept; the rest of a chain is
    /// released when one fails).
    pub chain: usize,
    /// How often pending deliveries are looked for when there is nothing to do.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed delivery is this process's; after that another dispatcher may send it again (the
    /// same `webhook-id`). Longer than `timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// An endpoint whose every attempt failed for this long is disabled (Svix: 5 days).
    #[serde(with = "humantime_serde")]
    pub auto_disable_after: Duration,
    /// Sent as `user-agent`.
    pub user_agent: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            encryption_key: None,
            allowed_networks: Vec::new(),
            allow_http: false,
            timeout: Duration::from_secs(15),
            concurrency: 64,
            per_endpoint: 4,
            chain: 20,
            poll_interval: Duration::from_millis(50),
            lease: Duration::from_secs(30),
            auto_disable_after: Duration::from_secs(5 * 24 * 3600),
            user_agent: format!("crypto-checkout-webhooks/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What the environment says about the guard and the key: the variables above, each when set (the fallback of
/// the service's settings; `checkoutctl`'s only source).
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    pub allowed_networks: Option<String>,
    pub encryption_key: Option<SecretString>,
    pub environment: Option<String>,
}

impl EnvOverrides {
    pub fn from_env() -> Self {
        EnvOverrides {
            allowed_networks: std::env::var(ALLOWED_NETWORKS_ENV).ok(),
            encryption_key: std::env::var(ENCRYPTION_KEY_ENV)
                .ok()
                .map(SecretString::from),
            environment: std::env::var(ENVIRONMENT_ENV).ok(),
        }
    }
}

/// Why the delivery settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{ALLOWED_NETWORKS_ENV} / allowed_networks: {0}")]
    Networks(String),
    #[error("no key to encrypt webhook secrets: set {ENCRYPTION_KEY_ENV} (base64 of 32 bytes)")]
    NoKey,
    #[error(transparent)]
    Key(#[from] signing::SecretError),
    #[error("{0}")]
    Invalid(String),
}

impl DeliverySettings {
    /// The SSRF guard these settings and `env` describe.
    pub fn guard(&self, env: &EnvOverrides) -> Result<ssrf::Guard, SettingsError> {
        let networks = match &env.allowed_networks {
            Some(list) if self.allowed_networks.is_empty() => list.clone(),
            _ => self.allowed_networks.join(","),
        };
        Ok(ssrf::Guard {
            allow_http: self.allow_http || env.environment.as_deref() == Some("development"),
            allowed: networks.parse().map_err(SettingsError::Networks)?,
        })
    }

    /// The key for secrets at rest.
    pub fn secret_box(&self, env: &EnvOverrides) -> Result<signing::SecretBox, SettingsError> {
        let key = self
            .encryption_key
            .as_ref()
            .or(env.encryption_key.as_ref())
            .ok_or(SettingsError::NoKey)?;
        Ok(signing::SecretBox::from_base64(key.expose_secret())?)
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.lease <= self.timeout {
            return Err(SettingsError::Invalid(format!(
                "delivery.lease ({:?}) must be longer than delivery.timeout ({:?})",
                self.lease, self.timeout
            )));
        }
        if self.concurrency == 0 || self.per_endpoint == 0 || self.chain == 0 {
            return Err(SettingsError::Invalid(
                "delivery.concurrency, delivery.per_endpoint and delivery.chain must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The webhook-delivery service (operations port 9103).
pub struct Webhooks;

impl ConsumerService for Webhooks {
    const NAME: &'static str = "webhooks";
    const GROUP: &'static str = runtime::policy::WEBHOOK_DELIVERY;
    const ABOUT: &'static str = "Delivers merchants' webhooks: every domain event of a merchant becomes one \
        signed delivery (Standard Webhooks) per subscribed endpoint, recorded before the offset is committed, sent \
        with a stable webhook-id, retried 5 times (2, 4, 8, 16, 32 s), then dead-lettered. Endpoints: \
        `checkoutctl webhooks`. Needs WEBHOOK_ENCRYPTION_KEY; WEBHOOK_ALLOWED_NETWORKS lets private networks \
        through the SSRF guard (development, tests).";
    type Settings = WebhookSettings;
    type Handler = runtime::Batched<handler::FanOut>;

    async fn handler(ctx: ServiceContext<'_, WebhookSettings>) -> anyhow::Result<Self::Handler> {
        ctx.settings.delivery.validate()?;
        let metrics = metrics::FanOutMetrics::register(ctx.registry)?;
        Ok(runtime::Batched(handler::FanOut::new(
            ctx.pool.clone(),
            metrics,
        )))
    }

    async fn companion(
        ctx: ServiceContext<'_, WebhookSettings>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<Companion>> {
        let dispatcher = dispatch::Dispatcher::new(&ctx, &EnvOverrides::from_env())?;
        Ok(Some(tokio::spawn(dispatcher.run(shutdown))))
    }

    /// The spec: at-least-once, with the deliveries table as the idempotency method.
    fn check_policy(policy: &GroupPolicy) -> Result<(), String> {
        match policy.guarantee {
            Guarantee::AtLeastOnce => Ok(()),
            other => Err(format!(
                "webhook delivery calls merchants' servers, which no transaction covers: the guarantee must be \
                 at_least_once, not {}",
                other.as_str()
            )),
        }
    }
}
