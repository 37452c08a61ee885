//! A webhook receiver on loopback for tests, benchmarks and `make run`: a real HTTP server whose paths behave as
//! told (answer 2xx, fail a number of times, fail always, answer 410, redirect, hang), recording every request.
//! It is also the SMS sandbox: a path ending in `/Messages.json` answers an accepted POST as Twilio's Messages API
//! does (201, `{"sid":"SM…","status":"queued"}`).
//! [`verify`] checks a Standard Webhooks signature with an implementation of its own (HMAC-SHA256 written out
//! from SHA-256 here), independent of the service's; [`wait_delivered`] and [`check_requests`] are what the tests
//! of the webhooks service and the end-to-end tests wait for and check of the requests a path received.
//!
//! Guarantees: every request is recorded with its time, path, headers and body before it is answered; a path's
//! behaviour can be changed while the server runs, and a path prefix can carry a behaviour for every path under
//! it (`make run`'s webhook receiver: `/hooks/flaky/<merchant>`); with [`Receiver::keep_at_most`] the record is
//! bounded (the oldest half is forgotten when it is full); dropping the [`Receiver`] stops the server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

/// How a path answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with a short body.
    Ok,
    /// This status (with `Retry-After` when given) for the first `n` requests of each `webhook-id`, then 200.
    FailFirst { n: usize, status: u16 },
    /// Always this status.
    Always(u16),
    /// 302 to `/ok`.
    Redirect,
    /// Never answers (holds the request for this long, then drops it).
    Hang(Duration),
    /// Answers 200 after this delay.
    Slow(Duration),
    /// Answers 200 with a body of this many bytes (a receiver that sends far more than anyone reads).
    Huge(usize),
    /// Slow loris: answers 200 at once, then sends its body one byte per this interval, forever.
    Trickle(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub wall: chrono::DateTime<chrono::Utc>,
    pub path: String,
    pub webhook_id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    /// `authorization` (the SMS sandbox's basic auth).
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    /// The status answered (None: hung).
    pub answered: Option<u16>,
}

#[derive(Default)]
struct Inner {
    behaviours: HashMap<String, Behaviour>,
    /// Behaviours of every path under a prefix, first match wins (an exact path's behaviour comes first).
    prefixes: Vec<(String, Behaviour)>,
    /// At most this many requests (and `webhook-id` counts) are remembered, when set.
    keep: Option<usize>,
    received: Vec<Received>,
    seen: HashMap<(String, String), usize>,
    /// Where each request is also written as `<n>.json` (`make run`'s SMS sandbox), when set.
    dir: Option<std::path::PathBuf>,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port and serves `/{name}` paths (any name; unknown ones behave as [`Behaviour::Ok`]).
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), None).await
    }

    /// Binds `addr`; with `dir`, also writes each request there as `<time>-<n>.json` (path, headers, body).
    pub async fn start_on(addr: SocketAddr, dir: Option<std::path::PathBuf>) -> Receiver {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        let inner = Arc::new(Mutex::new(Inner {
            dir,
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(handle).get(ok))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the receiver on {addr}: {e}"));
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, task }
    }

    /// The URL of path `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Makes path `name` behave as `behaviour` from now on.
    pub fn set(&self, name: &str, behaviour: Behaviour) {
        self.inner
            .lock()
            .unwrap()
            .behaviours
            .insert(format!("/{name}"), behaviour);
    }

    /// Makes every path starting with `/{prefix}` that has no behaviour of its own behave as `behaviour`.
    pub fn set_prefix(&self, prefix: &str, behaviour: Behaviour) {
        self.inner
            .lock()
            .unwrap()
            .prefixes
            .push((format!("/{prefix}"), behaviour));
    }

    /// Remembers at most `n` requests (and `n` `webhook-id` counts of [`Behaviour::FailFirst`]): when full, the
    /// oldest half is forgotten. For long runs (`make run`).
    pub fn keep_at_most(&self, n: usize) {
        self.inner.lock().unwrap().keep = Some(n.max(2));
    }

    /// Every request so far (of path `name`, when given), in arrival order.
    pub fn received(&self, name: Option<&str>) -> Vec<Received> {
        let path = name.map(|n| format!("/{n}"));
        self.inner
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| path.as_ref().is_none_or(|p| &r.path == p))
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ok() -> &'static str {
    "webhook receiver"
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let webhook_id = header("webhook-id");
    let (behaviour, index) = {
        let mut inner = inner.lock().unwrap();
        let behaviour = inner
            .behaviours
            .get(&path)
            .or_else(|| {
                inner
                    .prefixes
                    .iter()
                    .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                    .map(|(_, b)| b)
            })
            .cloned()
            .unwrap_or(Behaviour::Ok);
        if inner.keep.is_some_and(|keep| inner.seen.len() >= keep) {
            inner.seen.clear();
        }
        let seen = inner
            .seen
            .entry((path.clone(), webhook_id.clone().unwrap_or_default()))
            .or_default();
        *seen += 1;
        (behaviour, *seen - 1)
    };
    let status = match &behaviour {
        Behaviour::Ok | Behaviour::Slow(_) | Behaviour::Huge(_) | Behaviour::Trickle(_) => {
            Some(200)
        }
        Behaviour::FailFirst { n, status } if index < *n => Some(*status),
        Behaviour::FailFirst { .. } => Some(200),
        Behaviour::Always(status) => Some(*status),
        Behaviour::Redirect => Some(302),
        Behaviour::Hang(_) => None,
    };
    let received = Received {
        at: Instant::now(),
        wall: chrono::Utc::now(),
        path: path.clone(),
        webhook_id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        authorization: header("authorization"),
        body: body.to_vec(),
        answered: status,
    };
    {
        let mut inner = inner.lock().unwrap();
        if let Some(dir) = &inner.dir {
            let file = dir.join(format!(
                "{}-{:05}.json",
                received.wall.format("%Y%m%dT%H%M%S"),
                inner.received.len() + 1
            ));
            let json = serde_json::json!({
                "path": received.path,
                "content_type": received.content_type,
                "body": String::from_utf8_lossy(&received.body),
                "answered": received.answered,
            });
            let _ = std::fs::write(file, serde_json::to_vec_pretty(&json).unwrap_or_default());
        }
        if let Some(keep) = inner.keep
            && inner.received.len() >= keep
        {
            inner.received.drain(..keep / 2);
        }
        inner.received.push(received);
    }
    // An SMS provider's (Twilio's) Messages API answers 201 with the message's sid.
    if path.ends_with("/Messages.json") && behaviour == Behaviour::Ok {
        let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
        return (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            serde_json::json!({"sid": sid, "status": "queued"}).to_string(),
        )
            .into_response();
    }
    match behaviour {
        Behaviour::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Behaviour::Slow(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "ok").into_response()
        }
        Behaviour::Redirect => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        Behaviour::Huge(n) => (StatusCode::OK, vec![b'x'; n]).into_response(),
        Behaviour::Trickle(every) => {
            let bytes = futures_util::stream::unfold((), move |()| async move {
                tokio::time::sleep(every).await;
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"x")),
                    (),
                ))
            });
            (StatusCode::OK, axum::body::Body::from_stream(bytes)).into_response()
        }
        _ => {
            let status = StatusCode::from_u16(status.unwrap_or(200)).unwrap_or(StatusCode::OK);
            (status, format!("answered {}", status.as_u16())).into_response()
        }
    }
}

/// The `data.event_id` of a webhook request's body (the webhooks service's body, `services/webhooks/src/body.rs`).
pub fn event_id(r: &Received) -> String {
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    body["data"]["event_id"]
        .as_str()
        .expect("data.event_id")
        .to_string()
}

/// Waits until path `path` of `receiver` received at least one request for each of `n` distinct webhook ids with a
/// 2xx answer; returns every request of the path. Fails after `timeout` saying how many arrived.
pub async fn wait_delivered(
    receiver: &Receiver,
    path: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let got = receiver.received(Some(path));
        let delivered: std::collections::BTreeSet<&str> = got
            .iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .filter_map(|r| r.webhook_id.as_deref())
            .collect();
        if delivered.len() >= n {
            return got;
        }
        assert!(
            started.elapsed() < timeout,
            "/{path}: {} of {n} webhooks delivered within {timeout:?} ({} requests)",
            delivered.len(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks what every request of a path carries: the Standard Webhooks headers (`webhook-id` `msg_…`, a
/// `webhook-timestamp` within 10 minutes, a `webhook-signature` that verifies with one of `secrets` by [`verify`],
/// an implementation independent of the service's), JSON, the webhooks service's user agent; and one webhook id per
/// event id (a redelivered event keeps its id). Panics naming the first request that does not.
pub fn check_requests(requests: &[Received], secrets: &[&str]) {
    let mut ids: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for r in requests {
        let id = r.webhook_id.as_deref().expect("webhook-id");
        assert!(id.starts_with("msg_"), "{id}");
        let ts = r.timestamp.as_deref().expect("webhook-timestamp");
        let ts_secs: i64 = ts.parse().expect("a unix timestamp");
        assert!(
            (chrono::Utc::now().timestamp() - ts_secs).abs() < 600,
            "timestamp {ts}"
        );
        let signature = r.signature.as_deref().expect("webhook-signature");
        assert!(
            secrets
                .iter()
                .any(|s| verify(s, id, ts, &r.body, signature)),
            "signature {signature} of {id} does not verify"
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert!(
            r.user_agent
                .as_deref()
                .is_some_and(|u| u.starts_with("crypto-checkout-webhooks/"))
        );
        let event = event_id(r);
        let previous = ids.insert(event.clone(), id.to_string());
        assert!(
            previous.is_none_or(|p| p == id),
            "event {event} reached one endpoint under two webhook ids"
        );
    }
}

/// HMAC-SHA256 (RFC 2104) written out: `H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ m))`, 64-byte blocks.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Whether `signature_header` (space-separated `v1,…`) holds a valid signature of `id.timestamp.body` under the
/// Standard Webhooks secret `whsec` (`whsec_` + base64).
pub fn verify(whsec: &str, id: &str, timestamp: &str, body: &[u8], signature_header: &str) -> bool {
    let Some(key) = whsec
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
    else {
        return false;
    };
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!("v1,{}", B64.encode(hmac_sha256(&key, &signed)));
    signature_header.split(' ').any(|s| s == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_verifies_and_a_changed_body_does_not() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        let body = br#"{"test": 2432232314}"#;
        assert!(verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            body,
            sig
        ));
        assert!(verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            body,
            &format!("v1,bm90IGl0 {sig}")
        ));
        assert!(!verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265331",
            body,
            sig
        ));
        assert!(!verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            b"{}",
            sig
        ));
    }
}
