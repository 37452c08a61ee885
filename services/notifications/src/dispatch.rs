//! The dispatcher: one loop per channel — claim due rows, render, send, settle each row at once.
//!
//! Guarantees:
//! - at-least-once, and never again once accepted: a row is `sent` right after the provider's acceptance (one
//!   statement per row, no batching), and only `pending` rows are ever claimed. A process killed between the
//!   acceptance and that statement leaves the row to its lease, and it is sent once more (the same `Message-ID` /
//!   `webhook-id`): the only window in which a provider sees a notification twice.
//! - one breaker per channel (`runtime::breaker`): an [`Outcome::Unreachable`] opens the channel's breaker; while
//!   it is open that channel claims nothing (its rows keep their retries and wait), the other channels carry on;
//!   after the probe interval one row is tried (half-open) and any answer from the provider closes it.
//! - a request for a merchant the merchants' read model does not know yet (its MerchantCreated is on another
//!   topic; the projection may lag) waits for it, looking again every 5 s without spending an attempt, up to
//!   `unknown_merchant_wait` (15 min) after it was requested; a recipient that is known but has no address for
//!   the channel is `no_destination` at once.
//! - decision 0007's policy: `Rejected` and unrenderable rows are dead-lettered at once; `Failed` rows wait the
//!   schedule's delay (2, 4, 8, 16, 32 s) and after the last retry are dead-lettered. A dead letter carries the
//!   runtime's provenance headers (class `business`, attempts, first/last failure) plus `notification.id`,
//!   `notification.channel` and `notification.reason`, and is acknowledged by the broker before the row is marked
//!   `failed` (a failed write leaves the row to its lease: tried again).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::notification::{Channel, NotificationRequested};
use rdkafka::producer::FutureProducer;
use runtime::breaker::{Breaker, BreakerState};
use runtime::error::ErrorClass;
use runtime::retry::FailureLog;
use runtime::service::ServiceContext;
use runtime::{HandlerError, OutputRecord, Record};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use webhooks::signing::SecretBox;

use crate::channels::{self, Outcome};
use crate::contacts::Lookup;
use crate::metrics::DispatchMetrics;
use crate::store::{self, Claimed, Settle};
use crate::templates::Templates;
use crate::{DispatchSettings, NotificationSettings};

/// Headers added to a dead letter besides the runtime's provenance.
pub const DLQ_NOTIFICATION_ID: &str = "notification.id";
pub const DLQ_CHANNEL: &str = "notification.channel";
/// Why it failed: `rejected`, `retries_exhausted`, `no_destination`, `template`.
pub const DLQ_REASON: &str = "notification.reason";

/// What an attempt led to, before settling.
#[derive(Debug)]
enum Verdict {
    Send(Outcome),
    /// Nothing could be sent (no destination, unrenderable, bad record): permanent, with the metric's reason.
    Invalid {
        reason: &'static str,
        error: String,
    },
    /// Not sendable yet (a merchant the read model does not know yet): asked again after [`WAIT_RECHECK`],
    /// without spending an attempt.
    Wait(String),
}

/// How often a request waiting for its merchant looks again.
const WAIT_RECHECK: Duration = Duration::from_secs(5);

/// The dispatcher of one process.
pub struct Dispatcher {
    pool: PgPool,
    settings: DispatchSettings,
    schedule: Vec<Duration>,
    templates: Templates,
    email: channels::Email,
    sms: channels::Sms,
    webhook: channels::Webhook,
    /// The key of webhook secrets, when configured (only the webhook channel needs it).
    secret_box: Option<SecretBox>,
    timeouts: [(Channel, Duration); 3],
    metrics: DispatchMetrics,
    producer: FutureProducer,
    group: String,
}

impl Dispatcher {
    pub fn new(ctx: &ServiceContext<'_, NotificationSettings>) -> anyhow::Result<Dispatcher> {
        let s = ctx.settings;
        s.validate()?;
        let env = webhooks::EnvOverrides::from_env();
        let networks = match &env.allowed_networks {
            Some(list) if s.webhook.allowed_networks.is_empty() => list.clone(),
            _ => s.webhook.allowed_networks.join(","),
        };
        let guard = webhooks::ssrf::Guard {
            allow_http: s.webhook.allow_http || env.environment.as_deref() == Some("development"),
            allowed: networks
                .parse()
                .map_err(|e| anyhow::anyhow!("webhook.allowed_networks: {e}"))?,
        };
        let secret_box = match s
            .webhook
            .encryption_key
            .as_ref()
            .or(env.encryption_key.as_ref())
        {
            Some(key) => Some(SecretBox::from_base64(key.expose_secret())?),
            None => None,
        };
        Ok(Dispatcher {
            pool: ctx.pool.clone(),
            settings: s.dispatch.clone(),
            schedule: ctx.policy.retry.schedule(),
            templates: Templates::new(),
            email: channels::Email::new(&s.email)?,
            sms: channels::Sms::new(&s.sms)?,
            webhook: channels::Webhook::new(&s.webhook, guard)?,
            secret_box,
            timeouts: [
                (Channel::Email, s.email.timeout),
                (Channel::Sms, s.sms.timeout),
                (Channel::Webhook, s.webhook.timeout),
            ],
            metrics: DispatchMetrics::register(ctx.registry)?,
            producer: service_kit::kafka::producer_config(ctx.kafka).create()?,
            group: ctx.policy.group.clone(),
        })
    }

    /// Sends on every channel until `shutdown`; attempts in flight finish (each within its timeout).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let mut loops = tokio::task::JoinSet::new();
        for channel in Channel::ALL {
            let (this, shutdown) = (this.clone(), shutdown.clone());
            loops.spawn(async move { this.channel_loop(channel, shutdown).await });
        }
        {
            let (this, shutdown) = (this.clone(), shutdown.clone());
            loops.spawn(async move {
                this.gauge_loop(shutdown).await;
                Ok(())
            });
        }
        while let Some(done) = loops.join_next().await {
            done??;
        }
        Ok(())
    }

    async fn gauge_loop(&self, shutdown: CancellationToken) {
        loop {
            if let Ok(rows) = store::pending_by_channel(&self.pool).await {
                for c in crate::metrics::CHANNELS {
                    let n = rows.iter().find(|(ch, _)| ch == c).map_or(0, |(_, n)| *n);
                    self.metrics.pending.with_label_values(&[c]).set(n);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    async fn channel_loop(
        &self,
        channel: Channel,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let gauge = self.metrics.breaker.with_label_values(&[channel.as_str()]);
        let breaker = Breaker::new(
            self.settings.breaker_probe_initial,
            self.settings.breaker_probe_max,
            move |state: BreakerState| gauge.set(state.gauge()),
        );
        loop {
            // A closed breaker hands out permits without looking at the token: stop here.
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(permit) = breaker.acquire(&shutdown).await else {
                return Ok(());
            };
            let limit = if permit.is_probe() {
                1
            } else {
                self.settings.concurrency
            };
            let token = Uuid::now_v7();
            let claimed = match store::claim(&self.pool, channel, limit, self.settings.lease, token)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(channel = channel.as_str(), error = %e, "claiming notifications failed");
                    drop(permit);
                    self.idle(&shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permit);
                self.idle(&shutdown, self.settings.poll_interval).await;
                continue;
            }
            let results = futures_util::future::join_all(
                claimed.into_iter().map(|c| self.attempt(channel, c, token)),
            )
            .await;
            let unreachable = results.iter().any(|r| matches!(r, Ok(true)));
            if let Some(e) = results.into_iter().find_map(Result::err) {
                tracing::warn!(channel = channel.as_str(), error = %format!("{e:#}"), "settling notifications failed");
            }
            if unreachable {
                permit.infra_failure();
            } else {
                permit.success();
            }
        }
    }

    async fn idle(&self, shutdown: &CancellationToken, wait: Duration) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    fn timeout(&self, channel: Channel) -> Duration {
        self.timeouts
            .iter()
            .find(|(c, _)| *c == channel)
            .map_or(Duration::from_secs(15), |(_, t)| *t)
    }

    /// One attempt of `claimed`, settled; `Ok(true)` when the channel was unreachable.
    async fn attempt(
        &self,
        channel: Channel,
        claimed: Claimed,
        token: Uuid,
    ) -> anyhow::Result<bool> {
        let started = std::time::Instant::now();
        let verdict = match tokio::time::timeout(
            channels::deadline(self.timeout(channel)),
            self.send(channel, &claimed),
        )
        .await
        {
            Ok(v) => v,
            Err(_) => Verdict::Send(Outcome::Failed(format!(
                "no answer within {:?}",
                channels::deadline(self.timeout(channel))
            ))),
        };
        let label = channel.as_str();
        self.metrics
            .send_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        let attempt = claimed.attempts + 1;
        let now = Utc::now();
        let (settle, dead) = match &verdict {
            Verdict::Send(outcome) => {
                self.metrics
                    .attempts
                    .with_label_values(&[label, outcome.label()])
                    .inc();
                match outcome {
                    Outcome::Accepted {
                        provider_id,
                        segments,
                    } => (
                        Settle::Sent {
                            sent_to: String::new(),
                            provider_id: provider_id.clone(),
                            segments: *segments,
                        },
                        None,
                    ),
                    Outcome::Rejected(why) => (
                        Settle::Failed {
                            class: "permanent",
                            error: why.clone(),
                        },
                        Some(("rejected", why.clone())),
                    ),
                    Outcome::Failed(why) => match self.schedule.get(claimed.attempts as usize) {
                        Some(delay) => (
                            Settle::RetryAt {
                                at: now
                                    + chrono::Duration::from_std(*delay)
                                        .unwrap_or(chrono::Duration::MAX),
                                error: why.clone(),
                            },
                            None,
                        ),
                        None => (
                            Settle::Failed {
                                class: "transient",
                                error: why.clone(),
                            },
                            Some(("retries_exhausted", why.clone())),
                        ),
                    },
                    Outcome::Unreachable(why) => {
                        tracing::warn!(channel = label, error = %why, "channel unreachable; pausing it");
                        (Settle::Release, None)
                    }
                }
            }
            Verdict::Wait(why) => (
                Settle::WaitUntil {
                    at: now + chrono::Duration::from_std(WAIT_RECHECK).unwrap_or_default(),
                    error: why.clone(),
                },
                None,
            ),
            Verdict::Invalid { reason, error } => {
                self.metrics
                    .attempts
                    .with_label_values(&[label, "invalid"])
                    .inc();
                (
                    Settle::Failed {
                        class: "permanent",
                        error: error.clone(),
                    },
                    Some((*reason, error.clone())),
                )
            }
        };
        if let Some((reason, why)) = &dead {
            let letter = self.dead_letter(channel, &claimed, attempt, now, reason, why);
            runtime::produce::send_all(&self.producer, &[letter], Duration::from_secs(30))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "dead-lettering notification {}: {}",
                        claimed.notification_id,
                        e.chain()
                    )
                })?;
            self.metrics
                .failed
                .with_label_values(&[label, *reason])
                .inc();
        }
        let settle = match settle {
            Settle::Sent {
                provider_id,
                segments,
                ..
            } => {
                self.metrics.sent.with_label_values(&[label]).inc();
                if let Some(n) = segments {
                    self.metrics.sms_segments.inc_by(n.max(0) as u64);
                }
                Settle::Sent {
                    sent_to: self.sent_to(&claimed, channel).await,
                    provider_id,
                    segments,
                }
            }
            other => other,
        };
        let unreachable = settle == Settle::Release;
        if !store::settle(&self.pool, claimed.notification_id, token, &settle).await? {
            tracing::warn!(notification = %claimed.notification_id, "lease lost before settling");
        }
        Ok(unreachable)
    }

    /// Where an accepted notification went (for the list), without another lookup when it was requested.
    async fn sent_to(&self, claimed: &Claimed, channel: Channel) -> String {
        match &claimed.destination {
            Some(d) => d.clone(),
            None => crate::contacts::destination(&self.pool, &claimed.recipient_id, channel)
                .await
                .ok()
                .flatten()
                .map(|(d, _)| d)
                .unwrap_or_default(),
        }
    }

    async fn send(&self, channel: Channel, claimed: &Claimed) -> Verdict {
        let request = match NotificationRequested::decode(&claimed.record.value) {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Invalid {
                    reason: "template",
                    error: format!("the stored request: {e}"),
                };
            }
        };
        let (destination, sealed) = match &request.destination {
            Some(d) => (d.clone(), None),
            None => match crate::contacts::lookup(&self.pool, &request.recipient.id, channel).await
            {
                Ok(Lookup::Found(address, sealed)) => (address, sealed),
                Ok(Lookup::UnknownMerchant) => {
                    let waited = (Utc::now() - request.requested_at)
                        .to_std()
                        .unwrap_or_default();
                    let why = format!(
                        "no {} contact on file for {}: the merchant is not in the merchants' read model \
                         (waited {}s of {}s for it)",
                        channel.as_str(),
                        request.recipient.id,
                        waited.as_secs(),
                        self.settings.unknown_merchant_wait.as_secs()
                    );
                    return if waited < self.settings.unknown_merchant_wait {
                        Verdict::Wait(why)
                    } else {
                        Verdict::Invalid {
                            reason: "no_destination",
                            error: why,
                        }
                    };
                }
                Ok(Lookup::NoneOnFile) => {
                    return Verdict::Invalid {
                        reason: "no_destination",
                        error: format!(
                            "no {} contact on file for {} and none in the request",
                            channel.as_str(),
                            request.recipient.id
                        ),
                    };
                }
                Err(e) => {
                    return Verdict::Send(Outcome::Unreachable(format!("reading contacts: {e}")));
                }
            },
        };
        let rendered =
            match self
                .templates
                .render(&request.template, &request.locale, &request.parameters)
            {
                Ok(r) => r,
                Err(e) => {
                    return Verdict::Invalid {
                        reason: "template",
                        error: e.to_string(),
                    };
                }
            };
        let id = claimed.notification_id;
        match channel {
            Channel::Email => Verdict::Send(self.email.send(id, &destination, &rendered).await),
            Channel::Sms => Verdict::Send(self.sms.send(&destination, &rendered.sms).await),
            Channel::Webhook => {
                let sealed = match sealed {
                    Some(s) => Some(s),
                    None => match crate::contacts::sealed_secret(&self.pool, &request.recipient.id)
                        .await
                    {
                        Ok(s) => s,
                        Err(e) => {
                            return Verdict::Send(Outcome::Unreachable(format!(
                                "reading contacts: {e}"
                            )));
                        }
                    },
                };
                let secret = match (&self.secret_box, sealed) {
                    (Some(key), Some(sealed)) => {
                        match key.open(
                            crate::contacts::recipient_key(&request.recipient.id),
                            &sealed,
                        ) {
                            Ok(s) => s,
                            Err(e) => {
                                return Verdict::Invalid {
                                    reason: "no_destination",
                                    error: e.to_string(),
                                };
                            }
                        }
                    }
                    (None, _) => {
                        return Verdict::Invalid {
                            reason: "no_destination",
                            error: format!(
                                "no {} to open webhook secrets",
                                webhooks::ENCRYPTION_KEY_ENV
                            ),
                        };
                    }
                    (_, None) => {
                        return Verdict::Invalid {
                            reason: "no_destination",
                            error: format!(
                                "no webhook signing secret on file for {}",
                                request.recipient.id
                            ),
                        };
                    }
                };
                let body = channels::Webhook::body(id, &request, &rendered);
                Verdict::Send(self.webhook.send(id, &destination, &secret, body).await)
            }
        }
    }

    fn dead_letter(
        &self,
        channel: Channel,
        claimed: &Claimed,
        attempt: i32,
        now: DateTime<Utc>,
        reason: &str,
        why: &str,
    ) -> OutputRecord {
        let r = &claimed.record;
        let headers = r
            .headers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| {
                let name = pair.get(0)?.as_str()?.to_string();
                let value = pair.get(1)?.as_str().map(|v| v.as_bytes().to_vec());
                Some((name, value))
            })
            .collect();
        let record = Record {
            topic: r.topic.as_str().into(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.clone(),
            value: Some(r.value.clone()),
            headers,
        };
        let first = claimed.first_failure_at.unwrap_or(now);
        let log = FailureLog {
            attempts: attempt as u32,
            business_failures: attempt as u32,
            consecutive_transient: 0,
            first_failure: first.into(),
            last_failure: now.into(),
            last_class: ErrorClass::Business,
        };
        let error = HandlerError::business(format!(
            "{} notification {} failed after {attempt} attempt(s) ({reason}): {why}",
            channel.as_str(),
            events::NotificationId::from_uuid(claimed.notification_id)
                .map_or_else(|_| claimed.notification_id.to_string(), |i| i.to_string()),
        ));
        runtime::dlq::dead_letter(&record, &self.group, &error, &log)
            .header(
                DLQ_NOTIFICATION_ID,
                events::NotificationId::from_uuid(claimed.notification_id)
                    .map_or_else(|_| claimed.notification_id.to_string(), |i| i.to_string()),
            )
            .header(DLQ_CHANNEL, channel.as_str())
            .header(DLQ_REASON, reason)
    }
}
