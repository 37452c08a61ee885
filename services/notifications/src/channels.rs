//! The three channels: how one rendered notification is sent, and what the provider's answer means.
//!
//! Every send comes to an [`Outcome`]:
//! - `Accepted`: the provider took it (SMTP 250 after the data, HTTP 2xx);
//! - `Rejected`: the provider refused it for good — SMTP 5yz, HTTP 4xx other than 408 and 429, or a destination
//!   the SSRF guard refuses — dead-lettered at once with the provider's reason;
//! - `Failed`: worth another try — SMTP 4yz, HTTP 5xx, 408, 429, a timeout, a broken answer — retried on the
//!   group's schedule, then dead-lettered;
//! - `Unreachable`: the channel's one provider did not answer at all (connection refused or reset before any
//!   reply, TLS failure) — not an attempt: the channel's breaker opens and the notification waits, retries
//!   intact. The webhook channel has no single provider (every recipient has its own server), so there a
//!   connection failure is `Failed`, never `Unreachable`: one merchant's dead server must not pause the others.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;
use webhooks::signing::{SigningSecret, signature_header};
use webhooks::ssrf::Guard;

use crate::templates::Rendered;
use crate::{EmailSettings, SmsSettings, SmtpTls, WebhookChannelSettings};

/// What one send came to (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted {
        provider_id: Option<String>,
        segments: Option<i32>,
    },
    Rejected(String),
    Failed(String),
    Unreachable(String),
}

impl Outcome {
    /// The `outcome` label of `notification_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
            Outcome::Unreachable(_) => "unreachable",
        }
    }
}

/// The `Message-ID` of a notification: `<ntf_…@domain of From>`, the same on every attempt, so a receiving
/// system can discard a copy sent again after a crash.
pub fn message_id(notification: Uuid, from: &Mailbox) -> String {
    let id = events::NotificationId::from_uuid(notification)
        .map_or_else(|_| notification.to_string(), |i| i.to_string());
    format!("<{id}@{}>", from.email.domain())
}

/// The e-mail channel: one SMTP relay.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Email {
    pub fn new(settings: &EmailSettings) -> anyhow::Result<Email> {
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
                .port(settings.port)
                .timeout(Some(settings.timeout));
        builder = match settings.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::Starttls => {
                builder.tls(Tls::Required(TlsParameters::new(settings.host.clone())?))
            }
            SmtpTls::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(settings.host.clone())?)),
        };
        if let Some(user) = &settings.username {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Email {
            transport: builder.build(),
            from: crate::templates::from_address(&settings.from)?,
        })
    }

    /// The message for `to`: `From`, `To`, `Subject`, `Date`, the derived `Message-ID`, multipart/alternative
    /// text + HTML.
    pub fn message(
        &self,
        notification: Uuid,
        to: &str,
        rendered: &Rendered,
    ) -> Result<Message, String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("`{to}` is not a mailbox: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject.clone())
            .message_id(Some(message_id(notification, &self.from)))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| format!("the message does not build: {e}"))
    }

    pub async fn send(&self, notification: Uuid, to: &str, rendered: &Rendered) -> Outcome {
        let message = match self.message(notification, to, rendered) {
            Ok(m) => m,
            Err(why) => return Outcome::Rejected(why),
        };
        match self.transport.send(message).await {
            // The relay's queue id is in its free text; the Message-ID is what follows the e-mail everywhere.
            Ok(_) => Outcome::Accepted {
                provider_id: Some(message_id(notification, &self.from)),
                segments: None,
            },
            Err(e) => classify_smtp(&e),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn classify_smtp(e: &lettre::transport::smtp::Error) -> Outcome {
    let text = chain(e);
    if e.is_permanent() {
        Outcome::Rejected(format!("SMTP {text}"))
    } else if e.is_transient() || e.is_timeout() || e.is_response() {
        Outcome::Failed(format!("SMTP {text}"))
    } else if e.is_client() {
        Outcome::Rejected(format!("SMTP client: {text}"))
    } else {
        // Connection refused or reset before a reply, TLS: the relay is down for every message.
        Outcome::Unreachable(format!("SMTP relay unreachable: {text}"))
    }
}

/// SMS segments of `body`: GSM-7 when every character is in the GSM 03.38 alphabet (160 characters in one
/// segment, 153 per segment of a longer one; the extension characters `^{}\[~]|€` take two), otherwise UCS-2
/// (70, 67 per part; characters outside the BMP take two).
pub fn sms_segments(body: &str) -> i32 {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "^{}\\[~]|€\u{c}";
    let gsm: Option<usize> = body.chars().try_fold(0usize, |n, c| {
        if BASIC.contains(c) {
            Some(n + 1)
        } else if EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (units, single, multi) = match gsm {
        Some(septets) => (septets, 160, 153),
        None => (body.chars().map(char::len_utf16).sum(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(multi) as i32
    }
}

/// The SMS channel: Twilio's Messages API shape — `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, a form
/// with `To`, `From`, `Body`, HTTP basic auth with the account sid and token; 201 with the message's `sid`.
pub struct Sms {
    client: reqwest::Client,
    url: String,
    settings: SmsSettings,
}

impl Sms {
    pub fn new(settings: &SmsSettings) -> anyhow::Result<Sms> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Sms {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                settings.base_url.trim_end_matches('/'),
                settings.account_sid
            ),
            settings: settings.clone(),
        })
    }

    pub async fn send(&self, to: &str, body: &str) -> Outcome {
        let segments = sms_segments(body);
        let token = self
            .settings
            .auth_token
            .as_ref()
            .map(|t| t.expose_secret().to_string());
        let request = self
            .client
            .post(&self.url)
            .basic_auth(&self.settings.account_sid, token)
            .form(&[
                ("To", to),
                ("From", self.settings.from.as_str()),
                ("Body", body),
            ]);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Outcome::Unreachable(format!("SMS provider unreachable: {}", chain(&e)));
            }
            Err(e) => return Outcome::Failed(format!("SMS provider: {}", chain(&e))),
        };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match status {
            200..=299 => Outcome::Accepted {
                provider_id: json["sid"].as_str().map(str::to_string),
                segments: Some(segments),
            },
            _ => {
                let reason = match (json["code"].as_i64(), json["message"].as_str()) {
                    (Some(code), Some(message)) => format!("{status} (code {code}): {message}"),
                    (None, Some(message)) => format!("{status}: {message}"),
                    _ => format!("{status}: {}", excerpt(&body)),
                };
                http_failure(status, format!("SMS provider answered {reason}"))
            }
        }
    }
}

fn excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}

/// 4xx other than 408 and 429 is the provider's final word; everything else may pass on another try.
fn http_failure(status: u16, reason: String) -> Outcome {
    match status {
        408 | 429 => Outcome::Failed(reason),
        400..=499 => Outcome::Rejected(reason),
        _ => Outcome::Failed(reason),
    }
}

/// The webhook channel: a JSON POST signed per Standard Webhooks with the recipient's secret
/// (`webhooks::signing`, the merchant webhooks' code), through the merchant webhooks' SSRF guard.
pub struct Webhook {
    client: reqwest::Client,
    guard: Guard,
}

impl Webhook {
    pub fn new(settings: &WebhookChannelSettings, guard: Guard) -> anyhow::Result<Webhook> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(guard.resolver())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(settings.user_agent.clone())
            .build()?;
        Ok(Webhook { client, guard })
    }

    /// The body: `{"type":"notification.<template>","timestamp":…,"data":{…}}`.
    pub fn body(
        notification: Uuid,
        request: &events::NotificationRequested,
        rendered: &Rendered,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": format!("notification.{}", request.template),
            "timestamp": events::time::format_utc(&request.requested_at),
            "data": {
                "notification_id": events::NotificationId::from_uuid(notification).map(|i| i.to_string()).unwrap_or_default(),
                "recipient": request.recipient,
                "template": request.template,
                "locale": rendered.locale,
                "subject": rendered.subject,
                "text": rendered.text,
                "parameters": request.parameters,
            }
        }))
        .expect("JSON of strings")
    }

    /// The `webhook-id`: `msg_` and the notification id's hex, the same on every attempt.
    pub fn msg_id(notification: Uuid) -> String {
        format!("msg_{}", notification.simple())
    }

    pub async fn send(
        &self,
        notification: Uuid,
        url: &str,
        secret: &SigningSecret,
        body: Vec<u8>,
    ) -> Outcome {
        let url = match self.guard.check_url(url).await {
            Ok(url) => url,
            Err(e) => return Outcome::Rejected(format!("refused by the SSRF guard: {e}")),
        };
        let id = Self::msg_id(notification);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature_header(std::slice::from_ref(secret), &id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Accepted {
                provider_id: Some(id),
                segments: None,
            },
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                http_failure(
                    status,
                    format!("the endpoint answered {status}: {}", excerpt(&text)),
                )
            }
            Err(e) => Outcome::Failed(format!("webhook: {}", chain(&e))),
        }
    }
}

/// How long an attempt may take in all, whatever the client's own timeouts do.
pub fn deadline(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_segments_follow_gsm7_and_ucs2_limits() {
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"a".repeat(306)), 2);
        assert_eq!(sms_segments(&"a".repeat(307)), 3);
        // Extension characters take two septets.
        assert_eq!(sms_segments(&"€".repeat(80)), 1);
        assert_eq!(sms_segments(&"€".repeat(81)), 2);
        // Anything outside GSM-7 makes the whole message UCS-2.
        assert_eq!(sms_segments(&format!("{}ł", "a".repeat(69))), 1);
        assert_eq!(sms_segments(&format!("{}ł", "a".repeat(70))), 2);
        assert_eq!(sms_segments("Zurückgehalten: 12.00 EUR"), 1);
    }

    #[test]
    fn http_answers_are_classified() {
        assert!(matches!(
            http_failure(400, "x".into()),
            Outcome::Rejected(_)
        ));
        assert!(matches!(
            http_failure(404, "x".into()),
            Outcome::Rejected(_)
        ));
        assert!(matches!(http_failure(429, "x".into()), Outcome::Failed(_)));
        assert!(matches!(http_failure(408, "x".into()), Outcome::Failed(_)));
        assert!(matches!(http_failure(503, "x".into()), Outcome::Failed(_)));
    }

    #[test]
    fn the_message_id_is_derived_from_the_notification() {
        let from: Mailbox = "Checkout <n@checkout.example>".parse().unwrap();
        let id = Uuid::now_v7();
        assert_eq!(
            message_id(id, &from),
            format!("<ntf_{id}@checkout.example>")
        );
        assert_eq!(Webhook::msg_id(id), format!("msg_{}", id.simple()));
    }
}
