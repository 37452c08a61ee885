//! The dispatcher: pending deliveries → signed HTTP POSTs → results, retries, dead letters, disabled endpoints.
//!
//! Guarantees:
//! - at-least-once: a delivery is marked delivered only after a 2xx answer; a process killed mid-attempt leaves its
//!   lease to run out and the delivery is sent again, with the same `webhook-id`;
//! - isolation: attempts run concurrently (`concurrency` per process) and each endpoint holds at most
//!   `per_endpoint` leases, so a hanging endpoint takes at most that many slots for `timeout` each while every
//!   other endpoint's deliveries keep flowing; retries wait in the table (`next_attempt_at`), never in a slot;
//! - order: only the head of each (endpoint, order key) queue is sent, so one invoice's webhooks reach an
//!   endpoint in event order (a later one waits while an earlier one is retried; a failed one no longer blocks);
//! - each attempt: `webhook-id`, `webhook-timestamp` (the attempt's time) and `webhook-signature` (every active
//!   secret), `content-type: application/json`, the user agent; `timeout` from connection to the first KiB of the
//!   answer; redirects are never followed (3xx is a failure); only 2xx succeeds; 410 disables the endpoint;
//!   `Retry-After` may lengthen a wait up to the schedule's longest delay, never add an attempt;
//! - after the last retry the original record is dead-lettered with the runtime's provenance headers (plus the
//!   delivery and endpoint ids), acknowledged by the broker before the delivery is marked failed;
//! - results are written in batches (one transaction per loop turn, [`store::finish`]); a failed write is retried
//!   on the next turn, and leases that ran out meanwhile only cause another attempt.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use reqwest::header::{HeaderMap, HeaderValue};
use runtime::error::ErrorClass;
use runtime::retry::FailureLog;
use runtime::service::ServiceContext;
use runtime::{HandlerError, OutputRecord, Record};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::DispatchMetrics;
use crate::signing::{SecretBox, signature_header};
use crate::ssrf::Guard;
use crate::store::{self, Claimed, Finished, Next};
use crate::{DeliverySettings, EnvOverrides, WebhookSettings};

/// Woken by this process's consumer when it recorded new deliveries, so that they are claimed at once rather than
/// at the next poll (deliveries another replica recorded wait for the poll).
static RECORDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Tells this process's dispatcher that deliveries were recorded.
pub fn recorded() {
    RECORDED.notify_one();
}

/// Bytes of a response body kept with its attempt.
pub const EXCERPT_BYTES: usize = 1024;

/// Headers added to a dead letter besides the runtime's provenance.
pub const DLQ_DELIVERY_ID: &str = "webhook.delivery_id";
pub const DLQ_ENDPOINT_ID: &str = "webhook.endpoint_id";
pub const DLQ_WEBHOOK_ID: &str = "webhook.id";

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: the class (`timeout`, `connect`, `refused`, `error`) and the error with its causes.
    NoAnswer { class: &'static str, error: String },
}

impl Outcome {
    /// The `status_class` label.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Status { code, .. } => match code {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Outcome::NoAnswer { class, .. } => class,
        }
    }
}

/// Where a delivery goes after attempt number `attempt` (1-based) came to `outcome`, under `schedule` (the delays
/// before retry 1, 2, …; its length is the number of retries).
pub fn decide(outcome: &Outcome, attempt: u32, schedule: &[Duration], now: DateTime<Utc>) -> Next {
    let retry_after = match outcome {
        Outcome::Status {
            code: 200..=299, ..
        } => return Next::Delivered,
        Outcome::Status { code: 410, .. } => return Next::Gone,
        Outcome::Status { retry_after, .. } => *retry_after,
        Outcome::NoAnswer { .. } => None,
    };
    let Some(&scheduled) = schedule.get(attempt as usize - 1) else {
        return Next::Failed;
    };
    let longest = schedule.iter().copied().max().unwrap_or(scheduled);
    let wait = match retry_after {
        Some(asked) => scheduled.max(asked.min(longest)),
        None => scheduled,
    };
    Next::RetryAt(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX))
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The dispatcher of one process.
pub struct Dispatcher {
    pool: PgPool,
    client: reqwest::Client,
    guard: Guard,
    key: SecretBox,
    schedule: Vec<Duration>,
    settings: DeliverySettings,
    metrics: DispatchMetrics,
    producer: FutureProducer,
    group: String,
    /// Who disables endpoints (the `metadata` of `WebhookEndpointDisabled`).
    actor: events::Metadata,
}

/// One attempt's result with what settling it needs.
struct Done {
    claimed: Claimed,
    finished: Finished,
    outcome: Outcome,
    latency: Duration,
}

impl Dispatcher {
    /// From the service's context: its settings, policy (the retry schedule), pool, registry and broker.
    pub fn new(
        ctx: &ServiceContext<'_, WebhookSettings>,
        env: &EnvOverrides,
    ) -> anyhow::Result<Self> {
        let settings = ctx.settings.delivery.clone();
        settings.validate()?;
        let guard = settings.guard(env)?;
        let key = settings.secret_box(env)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(guard.resolver())
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(settings.per_endpoint)
            .user_agent(settings.user_agent.clone())
            .build()?;
        let producer = service_kit::kafka::producer_config(ctx.kafka).create()?;
        Ok(Dispatcher {
            pool: ctx.pool.clone(),
            client,
            guard,
            key,
            schedule: ctx.policy.retry.schedule(),
            metrics: DispatchMetrics::register(ctx.registry)?,
            settings,
            producer,
            group: ctx.policy.group.clone(),
            actor: events::Metadata::system("webhooks")?,
        })
    }

    /// Sends until `shutdown`; then lets attempts in flight finish (up to `timeout`) and records them.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut inflight: JoinSet<ChainDone> = JoinSet::new();
        let mut done: Vec<Done> = Vec::new();
        let mut released: Vec<(Uuid, Uuid)> = Vec::new();
        let mut last_claim = Instant::now() - self.settings.poll_interval;
        let mut more = false;
        let mut last_gauge = Instant::now() - Duration::from_secs(60);
        let mut db_failures = 0u32;
        tracing::info!(
            concurrency = self.settings.concurrency,
            per_endpoint = self.settings.per_endpoint,
            schedule = ?self.schedule,
            "webhook dispatcher started"
        );
        loop {
            let saturated = inflight.len() >= self.settings.concurrency;
            // Saturated: a whole poll interval (a finished attempt wakes us sooner), never a busy loop.
            let wait = if saturated {
                self.settings.poll_interval
            } else {
                self.settings
                    .poll_interval
                    .saturating_sub(last_claim.elapsed())
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                    let finished = std::iter::once(joined).chain(std::iter::from_fn(|| inflight.try_join_next()));
                    for chain in finished.flatten() {
                        done.extend(chain.done);
                        released.extend(chain.released);
                    }
                }
                _ = RECORDED.notified(), if !saturated => more = true,
                // More may be due and a slot is free: claim at once; otherwise wait for a slot or the poll.
                _ = tokio::time::sleep(wait), if !more || saturated => {}
                _ = std::future::ready(()), if more && !saturated => {}
            }
            if !done.is_empty() || !released.is_empty() {
                match self.settle(&mut done, &mut released).await {
                    Ok(()) => db_failures = 0,
                    Err(err) => {
                        db_failures += 1;
                        tracing::warn!(
                            error = format!("{err:#}"),
                            pending = done.len(),
                            "recording webhook results failed; retrying"
                        );
                        tokio::time::sleep(Duration::from_millis(
                            200 * u64::from(db_failures.min(10)),
                        ))
                        .await;
                    }
                }
            }
            if last_gauge.elapsed() >= Duration::from_secs(5) {
                last_gauge = Instant::now();
                if let Ok(age) = store::oldest_pending_seconds(&self.pool).await {
                    self.metrics.oldest_pending.set(age);
                }
            }
            let free = self.settings.concurrency.saturating_sub(inflight.len());
            if free == 0 || (!more && last_claim.elapsed() < self.settings.poll_interval) {
                continue;
            }
            last_claim = Instant::now();
            let token = Uuid::now_v7();
            match store::claim(
                &self.pool,
                free as i64,
                self.settings.per_endpoint as i64,
                self.settings.chain as i64,
                self.settings.lease,
                token,
            )
            .await
            {
                Ok(claimed) => {
                    let queues = queues(claimed, token, &mut released);
                    more = queues.len() == free;
                    for queue in queues {
                        inflight.spawn(self.chain(queue, token));
                    }
                }
                Err(err) => {
                    more = false;
                    tracing::warn!(error = %err, "claiming webhook deliveries failed; retrying");
                }
            }
        }
        // Drain: attempts in flight end within the timeout; record what they came to.
        let deadline = tokio::time::Instant::now() + self.settings.timeout + Duration::from_secs(1);
        while !inflight.is_empty() {
            match tokio::time::timeout_at(deadline, inflight.join_next()).await {
                Ok(Some(Ok(chain))) => {
                    done.extend(chain.done);
                    released.extend(chain.released);
                }
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        inflight.abort_all();
        for _ in 0..3 {
            if done.is_empty() && released.is_empty() {
                break;
            }
            if let Err(err) = self.settle(&mut done, &mut released).await {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "recording webhook results at shutdown failed"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        tracing::info!(unrecorded = done.len(), "webhook dispatcher stopped");
        Ok(())
    }

    /// Dead-letters the deliveries that failed for good, then records every result; `done` is emptied on success.
    async fn settle(
        &self,
        done: &mut Vec<Done>,
        released: &mut Vec<(Uuid, Uuid)>,
    ) -> anyhow::Result<()> {
        let letters: Vec<OutputRecord> = done
            .iter()
            .filter(|d| d.finished.next == Next::Failed)
            .map(|d| self.dead_letter(d))
            .collect();
        if !letters.is_empty() {
            runtime::produce::send_all(&self.producer, &letters, Duration::from_secs(30))
                .await
                .map_err(|e| {
                    anyhow::anyhow!("dead-lettering failed webhook deliveries: {}", e.chain())
                })?;
        }
        let results: Vec<Finished> = done.iter().map(|d| d.finished.clone()).collect();
        let report = store::finish(
            &self.pool,
            &results,
            released,
            self.settings.auto_disable_after,
            &self.actor,
        )
        .await?;
        for d in done.iter() {
            self.metrics
                .attempts
                .with_label_values(&[d.outcome.class()])
                .inc();
            self.metrics
                .attempt_duration
                .observe(d.latency.as_secs_f64());
            let outcome = match d.finished.next {
                Next::Delivered => {
                    if let Some(ts) = d.claimed.record.timestamp {
                        let age = Utc::now().timestamp_millis() - ts;
                        self.metrics
                            .event_to_delivered
                            .observe(age.max(0) as f64 / 1000.0);
                    }
                    "delivered"
                }
                Next::Failed => "failed",
                Next::Gone => "gone",
                Next::RetryAt(_) => continue,
            };
            self.metrics.deliveries.with_label_values(&[outcome]).inc();
        }
        for d in &report.disabled {
            let label = match d.reason {
                events::payload::EndpointDisabledReason::Gone => "gone",
                _ => "failing",
            };
            self.metrics
                .endpoints_disabled
                .with_label_values(&[label])
                .inc();
            tracing::warn!(endpoint = %crate::endpoints::EndpointId(d.endpoint), reason = %d.details,
                "webhook endpoint disabled");
        }
        done.clear();
        released.clear();
        Ok(())
    }

    fn dead_letter(&self, d: &Done) -> OutputRecord {
        let r = &d.claimed.record;
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
        let first = d.claimed.first_attempt_at.unwrap_or(d.finished.started_at);
        let log = FailureLog {
            attempts: d.finished.attempt as u32,
            business_failures: d.finished.attempt as u32,
            consecutive_transient: 0,
            first_failure: first.into(),
            last_failure: d.finished.started_at.into(),
            last_class: ErrorClass::Business,
        };
        let error = HandlerError::business(format!(
            "webhook delivery {} to endpoint {} failed {} attempts; last: {}",
            crate::endpoints::DeliveryId(d.claimed.delivery_id),
            crate::endpoints::EndpointId(d.claimed.endpoint_id),
            d.finished.attempt,
            d.finished.error.as_deref().unwrap_or("-")
        ));
        runtime::dlq::dead_letter(&record, &self.group, &error, &log)
            .header(
                DLQ_DELIVERY_ID,
                crate::endpoints::DeliveryId(d.claimed.delivery_id).to_string(),
            )
            .header(
                DLQ_ENDPOINT_ID,
                crate::endpoints::EndpointId(d.claimed.endpoint_id).to_string(),
            )
            .header(DLQ_WEBHOOK_ID, d.claimed.msg_id.clone())
    }

    /// One queue's claimed deliveries (in order), sent one after the other until one fails or the lease would run
    /// out before the next could finish: those not attempted are released (a task of its own).
    fn chain(
        &self,
        queue: Vec<Claimed>,
        token: Uuid,
    ) -> impl Future<Output = ChainDone> + Send + 'static {
        let client = self.client.clone();
        let guard = self.guard.clone();
        let key = self.key.clone();
        let schedule = self.schedule.clone();
        let timeout = self.settings.timeout;
        let lease = self.settings.lease;
        async move {
            let leased = Instant::now();
            let mut out = ChainDone::default();
            let mut queue = queue.into_iter();
            for claimed in queue.by_ref() {
                if !out.done.is_empty()
                    && leased.elapsed() + timeout + Duration::from_secs(1) > lease
                {
                    out.released.push((claimed.delivery_id, token));
                    break;
                }
                let done = attempt(&client, &guard, &key, &schedule, timeout, claimed, token).await;
                let delivered = done.finished.next == Next::Delivered;
                out.done.push(done);
                if !delivered {
                    break;
                }
            }
            out.released.extend(queue.map(|c| (c.delivery_id, token)));
            out
        }
    }
}

/// What a chain task came to: its attempts, and the deliveries it did not attempt (with the lease token).
#[derive(Default)]
struct ChainDone {
    done: Vec<Done>,
    released: Vec<(Uuid, Uuid)>,
}

/// One attempt of `claimed`.
async fn attempt(
    client: &reqwest::Client,
    guard: &Guard,
    key: &SecretBox,
    schedule: &[Duration],
    timeout: Duration,
    claimed: Claimed,
    token: Uuid,
) -> Done {
    let started_at = Utc::now();
    let clock = Instant::now();
    let (outcome, excerpt) = send(client, guard, key, &claimed, timeout).await;
    let latency = clock.elapsed();
    let attempt = claimed.attempts + 1;
    let next = decide(&outcome, attempt as u32, schedule, Utc::now());
    let (status_code, error) = match &outcome {
        Outcome::Status { code, .. } => (
            Some(i32::from(*code)),
            (!(200..300).contains(code)).then(|| format!("HTTP {code}")),
        ),
        Outcome::NoAnswer { error, .. } => (None, Some(error.clone())),
    };
    Done {
        finished: Finished {
            delivery_id: claimed.delivery_id,
            endpoint_id: claimed.endpoint_id,
            token,
            attempt,
            started_at,
            latency_ms: latency.as_millis().min(i32::MAX as u128) as i32,
            status_code,
            excerpt,
            error,
            next,
        },
        claimed,
        outcome,
        latency,
    }
}

/// Claimed rows (in queue order) → one chain per (endpoint, order key): the unbroken run from its head; any other
/// row (another claimer locked one before it) goes to `released`.
fn queues(
    claimed: Vec<Claimed>,
    token: Uuid,
    released: &mut Vec<(Uuid, Uuid)>,
) -> Vec<Vec<Claimed>> {
    let mut out: Vec<Vec<Claimed>> = Vec::new();
    for c in claimed {
        let same = out
            .last()
            .and_then(|q| q.last())
            .is_some_and(|last| last.endpoint_id == c.endpoint_id && last.order_key == c.order_key);
        match out.last_mut() {
            Some(queue) if same && queue.last().is_some_and(|last| last.rank + 1 == c.rank) => {
                queue.push(c)
            }
            _ if same || c.rank != 1 => released.push((c.delivery_id, token)),
            _ => out.push(vec![c]),
        }
    }
    out
}

/// Builds, signs and sends one attempt; returns its outcome and the first KiB of the answer.
async fn send(
    client: &reqwest::Client,
    guard: &Guard,
    key: &SecretBox,
    claimed: &Claimed,
    timeout: Duration,
) -> (Outcome, Option<String>) {
    let no_answer = |class: &'static str, error: String| (Outcome::NoAnswer { class, error }, None);
    let url = match guard.parse_url(&claimed.url) {
        Ok(url) => url,
        Err(err) => return no_answer("refused", err.to_string()),
    };
    let body = match events::decode(&claimed.record.value)
        .map_err(|e| e.to_string())
        .and_then(|event| crate::body::render(&event).map_err(|e| e.to_string()))
    {
        Ok(body) => body,
        Err(err) => return no_answer("error", format!("the event does not render: {err}")),
    };
    let secrets = match claimed
        .sealed_secrets
        .iter()
        .map(|s| key.open(claimed.endpoint_id, s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return no_answer("error", "the endpoint has no active secret".into()),
        Err(err) => return no_answer("error", err.to_string()),
    };
    let timestamp = Utc::now().timestamp();
    let mut headers = HeaderMap::new();
    let signature = signature_header(&secrets, &claimed.msg_id, timestamp, &body);
    for (name, value) in [
        ("webhook-id", claimed.msg_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
        ("content-type", "application/json".to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let exchange = async {
        let mut response = client.post(url).headers(headers).body(body).send().await?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let mut excerpt = Vec::new();
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await? {
                Some(chunk) => excerpt.extend_from_slice(&chunk),
                None => break,
            }
        }
        Ok::<_, reqwest::Error>((code, retry_after, excerpt))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => no_answer("timeout", format!("no complete answer within {timeout:?}")),
        Ok(Err(err)) => {
            let class = if err.is_timeout() {
                "timeout"
            } else if is_refused(&err) {
                "refused"
            } else if err.is_connect() {
                "connect"
            } else {
                "error"
            };
            no_answer(class, service_kit::telemetry::error_chain(&err))
        }
        Ok(Ok((code, retry_after, excerpt))) => (
            Outcome::Status { code, retry_after },
            Some(excerpt_text(&excerpt)),
        ),
    }
}

fn is_refused(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<crate::ssrf::GuardError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

/// At most [`EXCERPT_BYTES`] of `bytes` as text, cut on a character boundary.
fn excerpt_text(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]).into_owned();
    while text.len() > EXCERPT_BYTES {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<Duration> {
        [2, 4, 8, 16, 32].map(Duration::from_secs).to_vec()
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn only_2xx_delivers_410_is_gone_the_rest_retries_on_the_schedule_then_fails() {
        let now = Utc::now();
        let at = |s: i64| Next::RetryAt(now + chrono::Duration::seconds(s));
        assert_eq!(decide(&status(200), 1, &schedule(), now), Next::Delivered);
        assert_eq!(decide(&status(204), 6, &schedule(), now), Next::Delivered);
        assert_eq!(decide(&status(410), 1, &schedule(), now), Next::Gone);
        for (attempt, wait) in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 32)] {
            assert_eq!(decide(&status(500), attempt, &schedule(), now), at(wait));
        }
        assert_eq!(decide(&status(500), 6, &schedule(), now), Next::Failed);
        assert_eq!(
            decide(&status(301), 1, &schedule(), now),
            at(2),
            "3xx fails"
        );
        let timeout = Outcome::NoAnswer {
            class: "timeout",
            error: "t".into(),
        };
        assert_eq!(decide(&timeout, 6, &schedule(), now), Next::Failed);
        assert_eq!(decide(&timeout, 1, &[], now), Next::Failed, "no retries");
    }

    #[test]
    fn retry_after_lengthens_a_wait_within_the_schedule_never_shortens_it() {
        let now = Utc::now();
        let asked = |secs| Outcome::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        let at = |s: i64| Next::RetryAt(now + chrono::Duration::seconds(s));
        assert_eq!(decide(&asked(10), 1, &schedule(), now), at(10));
        assert_eq!(decide(&asked(1), 2, &schedule(), now), at(4));
        assert_eq!(decide(&asked(3600), 1, &schedule(), now), at(32));
        assert_eq!(decide(&asked(3600), 6, &schedule(), now), Next::Failed);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 30 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 30 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn excerpts_are_at_most_a_kib_on_a_character_boundary() {
        let text = excerpt_text("é".repeat(1000).as_bytes());
        assert!(text.len() <= EXCERPT_BYTES);
        assert_eq!(excerpt_text(b"ok"), "ok");
    }

    fn claimed(endpoint: u128, key: &str, rank: i64) -> Claimed {
        Claimed {
            delivery_id: Uuid::now_v7(),
            msg_id: "msg_x".into(),
            endpoint_id: Uuid::from_u128(endpoint),
            order_key: key.into(),
            rank,
            url: "https://example.com".into(),
            attempts: 0,
            created_at: Utc::now(),
            first_attempt_at: None,
            record: store::StoredRecord {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                timestamp: None,
                key: None,
                value: vec![],
                headers: serde_json::Value::Null,
            },
            sealed_secrets: vec![],
        }
    }

    #[test]
    fn a_chain_is_the_unbroken_run_from_its_queues_head_the_rest_is_released() {
        let token = Uuid::now_v7();
        let rows = vec![
            claimed(1, "inv_a", 1),
            claimed(1, "inv_a", 2),
            claimed(1, "inv_a", 4), // rank 3 was locked by another claimer: 4 must wait
            claimed(1, "inv_b", 2), // no head: released
            claimed(1, "inv_b", 3),
            claimed(2, "inv_a", 1), // another endpoint, same key: its own queue
        ];
        let ids: Vec<Uuid> = rows.iter().map(|c| c.delivery_id).collect();
        let mut released = Vec::new();
        let queues = queues(rows, token, &mut released);
        let got: Vec<Vec<Uuid>> = queues
            .iter()
            .map(|q| q.iter().map(|c| c.delivery_id).collect())
            .collect();
        assert_eq!(got, [vec![ids[0], ids[1]], vec![ids[5]]]);
        assert_eq!(
            released,
            [(ids[2], token), (ids[3], token), (ids[4], token)]
        );
    }

    #[test]
    fn status_classes() {
        for (code, class) in [(200, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx")] {
            assert_eq!(status(code).class(), class);
        }
    }
}
