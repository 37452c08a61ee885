//! Test plumbing of the webhooks service: a bus, a receiver on loopback, the service in this process with a
//! fresh encryption key and loopback allowed through the SSRF guard, endpoints, and the expectation — which
//! events each endpoint must receive — taken from the generated flows (the plan's events), never from the service.

use std::time::Duration;

use events::{Envelope, MerchantId};
use flows::harness::Bus;
use flows::receiver::Receiver;
use flows::service::InProcess;
use runtime::{Backoff, RetryPolicy};
use secrecy::SecretString;
use service_kit::Settings;
use webhooks::endpoints::{self, EndpointId, NewEndpoint};
use webhooks::signing::SecretBox;
use webhooks::ssrf::Guard;
use webhooks::{DeliverySettings, WebhookSettings, Webhooks};

/// A bus, a receiver and the key the service and the tests share.
pub struct Setup {
    pub bus: Bus,
    pub receiver: Receiver,
    pub key: String,
}

impl Setup {
    pub async fn new() -> Setup {
        Setup {
            bus: Bus::new().await,
            receiver: Receiver::start().await,
            key: SecretBox::generate_key(),
        }
    }

    pub fn secret_box(&self) -> SecretBox {
        SecretBox::from_base64(&self.key).expect("a generated key")
    }

    /// The delivery settings of the tests: loopback allowed, `http` accepted, quick polling.
    pub fn delivery(&self) -> DeliverySettings {
        DeliverySettings {
            encryption_key: Some(SecretString::from(self.key.clone())),
            allowed_networks: vec!["127.0.0.0/8".into()],
            allow_http: true,
            poll_interval: Duration::from_millis(20),
            ..DeliverySettings::default()
        }
    }

    /// The service's settings on this bus under a fresh group, `tweak`ed.
    pub fn settings(
        &self,
        tweak: impl FnOnce(&mut WebhookSettings),
    ) -> (Settings<WebhookSettings>, String) {
        let group = testkit::unique_name("webhooks");
        let mut settings = flows::service::settings::<Webhooks>(
            &self.bus,
            &group,
            std::slice::from_ref(&self.bus.domain_topic),
            flows::service::fast_options(),
        );
        settings.service.delivery = self.delivery();
        tweak(&mut settings.service);
        (settings, group)
    }

    /// Starts the service with `tweak`ed settings.
    pub async fn start(&self, tweak: impl FnOnce(&mut WebhookSettings)) -> InProcess {
        let (settings, group) = self.settings(tweak);
        InProcess::start_with::<Webhooks>(settings, group).await
    }

    /// Registers an endpoint of `merchant` at the receiver's path `path`; returns its id and secret.
    pub async fn endpoint(
        &self,
        merchant: MerchantId,
        path: &str,
        types: &[&str],
    ) -> (EndpointId, String) {
        let guard = Guard {
            allow_http: true,
            allowed: "127.0.0.0/8".parse().unwrap(),
        };
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        let (endpoint, secret) = endpoints::add(
            self.bus.pool(),
            &guard,
            &self.secret_box(),
            NewEndpoint {
                merchant_id: merchant,
                url: &self.receiver.url(path),
                event_types: &types,
                description: "test",
            },
        )
        .await
        .expect("register the endpoint");
        (endpoint.endpoint_id, secret.expose())
    }
}

/// The spec's number of retries, quick: 5 retries 100 ms × 2ⁿ.
pub fn quick_retries(settings: &mut WebhookSettings) {
    settings.consumer.policy.retry = Some(RetryPolicy {
        max_retries: 5,
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            factor: 2,
        },
    });
}

/// The merchants of `flows`, in the order their first event comes.
pub fn merchants(flows: &flows::Flows) -> Vec<MerchantId> {
    let mut seen = Vec::new();
    for e in &flows.events {
        if !seen.contains(&e.merchant_id()) {
            seen.push(e.merchant_id());
        }
    }
    seen
}

/// The events of `merchant` an endpoint subscribed to `types` (empty: all) must receive, in commit order.
pub fn expected<'a>(
    flows: &'a flows::Flows,
    merchant: MerchantId,
    types: &[&str],
) -> Vec<&'a Envelope> {
    flows
        .events
        .iter()
        .filter(|e| e.merchant_id() == merchant)
        .filter(|e| {
            types.is_empty()
                || types.contains(&webhooks::body::webhook_type(e.event_type()).as_str())
        })
        .collect()
}

pub use flows::receiver::{check_requests, event_id, wait_delivered};

/// A delivery row: (status, attempts, last status, redelivery of).
pub type Row = (String, i32, Option<i32>, Option<uuid::Uuid>);

/// Endpoints answering 200 (`ok{i}`) for `merchants`: (path, merchant, signing secret) each.
pub async fn healthy_endpoints(
    setup: &Setup,
    merchants: &[(usize, MerchantId)],
) -> Vec<(String, MerchantId, String)> {
    let mut healthy = Vec::new();
    for (i, merchant) in merchants {
        let path = format!("ok{i}");
        let (_, secret) = setup.endpoint(*merchant, &path, &[]).await;
        healthy.push((path, *merchant, secret));
    }
    healthy
}

/// Waits until every endpoint of `healthy` received the webhooks the plan gives its merchant (60 s at most), each
/// signed with its secret.
pub async fn wait_healthy_delivered(
    setup: &Setup,
    flows: &flows::Flows,
    healthy: &[(String, MerchantId, String)],
) {
    for (path, merchant, secret) in healthy {
        let n = expected(flows, *merchant, &[]).len();
        let got = wait_delivered(&setup.receiver, path, n, Duration::from_secs(60)).await;
        check_requests(&got, &[secret.as_str()]);
    }
}

/// Waits (30 s at most) until the endpoint's delivery rows satisfy `done`; fails showing the last rows.
pub async fn eventually_rows(setup: &Setup, endpoint: EndpointId, done: impl Fn(&[Row]) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let rows = delivery_rows(&setup.bus, endpoint).await;
        if done(&rows) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deliveries of {endpoint} stayed {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoint's deliveries, oldest first.
pub async fn delivery_rows(bus: &Bus, endpoint: EndpointId) -> Vec<Row> {
    sqlx::query_as(
        "SELECT status, attempts, last_status, redelivery_of FROM webhook_deliveries
          WHERE endpoint_id = $1 ORDER BY created_at, position",
    )
    .bind(endpoint.0)
    .fetch_all(bus.pool())
    .await
    .expect("read deliveries")
}

/// Appends `events` to the outbox (one transaction each 50).
pub async fn append(bus: &Bus, events: &[&Envelope]) {
    let owned: Vec<Envelope> = events.iter().map(|e| (*e).clone()).collect();
    bus.append(&owned, 50).await;
}

/// The `WebhookEndpointDisabled` events on the bus's domain topic, once there are at least `n` of them (the whole
/// topic is read again until then: 30 s at most).
pub async fn disabled_events(bus: &Bus, n: usize) -> Vec<Envelope> {
    let started = std::time::Instant::now();
    loop {
        let found: Vec<Envelope> =
            flows::harness::read_topic(&bus.domain_topic, 0, Duration::from_secs(2))
                .await
                .iter()
                .filter_map(|m| {
                    use rdkafka::Message;
                    events::decode(m.payload()?).ok()
                })
                .filter(|e| e.event_type() == events::EventType::WebhookEndpointDisabled)
                .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} of {n} WebhookEndpointDisabled",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (10 s at most) until counter `name{label}` of `service` is `value` (the service counts just after it
/// recorded the results the tests wait for); fails with the last value.
pub async fn counted(service: &InProcess, name: &str, label: (&str, &str), value: f64) {
    let started = std::time::Instant::now();
    loop {
        let now = service.counter(name, Some(label));
        if now == value {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name}{{{}=\"{}\"}} is {now}, not {value}",
            label.0,
            label.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
