//! The webhook tables: what the consumer records per batch, what the dispatcher claims and finishes, what the
//! operator lists and requeues. Every function is a handful of statements whatever the number of rows.
//!
//! Guarantees:
//! - [`fan_out`] records, in one transaction, one message per event some live endpoint of its merchant subscribes
//!   to and one delivery per (endpoint, event) — a derived id, so recording a batch again changes nothing.
//!   Deliveries to a disabled endpoint are recorded as failed (`recover` sends them later).
//! - [`claim`] hands out only the head of each (endpoint, order key) queue, never more than `per_endpoint` leases
//!   per endpoint, and never a delivery another dispatcher holds an unexpired lease on (rows locked with
//!   `SKIP LOCKED`, the lease re-checked under the lock).
//! - [`finish`] applies results only where the lease token still matches (a dispatcher whose lease ran out cannot
//!   overwrite the one that took over), records every attempt, keeps each endpoint's failure clock and disables
//!   endpoints that answered 410 or kept failing for the configured time, in one transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use events::payload::{EndpointDisabledReason, WebhookEndpointDisabled};

use crate::endpoints::{DeliveryId, EndpointId};

/// Namespace of derived delivery ids: `UUID v5(DELIVERY_NAMESPACE, endpoint uuid ‖ event uuid)`. Never changes.
pub const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_3f0a_9d2b_4c57_8e61_0b7a_d4f2_93c5);

/// The id of the delivery of `event` to `endpoint`.
pub fn delivery_id(endpoint: Uuid, event: Uuid) -> Uuid {
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(endpoint.as_bytes());
    name[16..].copy_from_slice(event.as_bytes());
    Uuid::new_v5(&DELIVERY_NAMESPACE, &name)
}

/// The `webhook-id` of a delivery (and of its redeliveries): `msg_` + the first delivery's id, without hyphens.
pub fn msg_id(first_delivery: Uuid) -> String {
    format!("msg_{}", first_delivery.simple())
}

/// An event as the consumer records it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: Uuid,
    pub merchant_id: Uuid,
    /// Webhook type (`invoice.paid`).
    pub webhook_type: String,
    pub occurred_at: DateTime<Utc>,
    pub order_key: String,
    /// The record it came in (for the body, and the dead letter after the last attempt).
    pub record: StoredRecord,
}

/// What [`fan_out`] recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FannedOut {
    /// Deliveries newly recorded as pending.
    pub pending: u64,
    /// Deliveries newly recorded as failed (their endpoint is disabled).
    pub to_disabled: u64,
}

/// Records the deliveries of `events` (one partition batch) in one transaction.
pub async fn fan_out(pool: &PgPool, events: &[Incoming]) -> Result<FannedOut, sqlx::Error> {
    if events.is_empty() {
        return Ok(FannedOut::default());
    }
    let mut merchants: Vec<Uuid> = events.iter().map(|e| e.merchant_id).collect();
    merchants.sort();
    merchants.dedup();
    let mut tx = pool.begin().await?;
    let endpoints = sqlx::query(
        "SELECT endpoint_id, merchant_id, event_types, status FROM webhook_endpoints
          WHERE removed_at IS NULL AND merchant_id = ANY($1)",
    )
    .bind(&merchants)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_merchant: HashMap<Uuid, Vec<(Uuid, Vec<String>, bool)>> = HashMap::new();
    for row in &endpoints {
        by_merchant
            .entry(row.try_get("merchant_id")?)
            .or_default()
            .push((
                row.try_get("endpoint_id")?,
                row.try_get("event_types")?,
                row.try_get::<String, _>("status")? == "enabled",
            ));
    }
    let mut d = DeliveryColumns::default();
    let mut wanted = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let mut any = false;
        for (endpoint, types, enabled) in by_merchant.get(&event.merchant_id).into_iter().flatten()
        {
            if !types.is_empty() && !types.contains(&event.webhook_type) {
                continue;
            }
            any = true;
            let id = delivery_id(*endpoint, event.event_id);
            d.ids.push(id);
            d.msg_ids.push(msg_id(id));
            d.endpoints.push(*endpoint);
            d.events.push(event.event_id);
            d.order_keys.push(event.order_key.clone());
            d.positions.push(event.record.offset);
            d.enabled.push(*enabled);
        }
        if any {
            wanted.push(i);
        }
    }
    if wanted.is_empty() {
        tx.commit().await?;
        return Ok(FannedOut::default());
    }
    let ids: Vec<Uuid> = wanted.iter().map(|&i| events[i].event_id).collect();
    let merchants: Vec<Uuid> = wanted.iter().map(|&i| events[i].merchant_id).collect();
    let types: Vec<String> = wanted
        .iter()
        .map(|&i| events[i].webhook_type.clone())
        .collect();
    let occurred: Vec<DateTime<Utc>> = wanted.iter().map(|&i| events[i].occurred_at).collect();
    let records: Vec<&StoredRecord> = wanted.iter().map(|&i| &events[i].record).collect();
    let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
    let partitions: Vec<i32> = records.iter().map(|r| r.partition).collect();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    let timestamps: Vec<Option<i64>> = records.iter().map(|r| r.timestamp).collect();
    let keys: Vec<Option<&[u8]>> = records.iter().map(|r| r.key.as_deref()).collect();
    let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
    let headers: Vec<&serde_json::Value> = records.iter().map(|r| &r.headers).collect();
    sqlx::query(
        "INSERT INTO webhook_messages (event_id, merchant_id, event_type, occurred_at, source_topic,
                source_partition, source_offset, source_timestamp, record_key, record_value, record_headers)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::int[],
                $7::bigint[], $8::bigint[], $9::bytea[], $10::bytea[], $11::jsonb[])
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&merchants)
    .bind(&types)
    .bind(&occurred)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&timestamps)
    .bind(&keys)
    .bind(&values)
    .bind(&headers)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, msg_id, endpoint_id, event_id, order_key, position, status,
                finished_at, last_error)
         SELECT d.id, d.msg_id, d.endpoint_id, d.event_id, d.order_key, d.position,
                CASE WHEN d.enabled THEN 'pending' ELSE 'failed' END,
                CASE WHEN d.enabled THEN NULL ELSE now() END,
                CASE WHEN d.enabled THEN NULL ELSE 'endpoint disabled' END
           FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::bigint[], $7::bool[])
                AS d(id, msg_id, endpoint_id, event_id, order_key, position, enabled)
         ON CONFLICT (endpoint_id, event_id) WHERE redelivery_of IS NULL DO NOTHING
         RETURNING status",
    )
    .bind(&d.ids)
    .bind(&d.msg_ids)
    .bind(&d.endpoints)
    .bind(&d.events)
    .bind(&d.order_keys)
    .bind(&d.positions)
    .bind(&d.enabled)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let pending = inserted
        .iter()
        .filter(|r| r.get::<String, _>("status") == "pending")
        .count() as u64;
    Ok(FannedOut {
        pending,
        to_disabled: inserted.len() as u64 - pending,
    })
}

#[derive(Default)]
struct DeliveryColumns {
    ids: Vec<Uuid>,
    msg_ids: Vec<String>,
    endpoints: Vec<Uuid>,
    events: Vec<Uuid>,
    order_keys: Vec<String>,
    positions: Vec<i64>,
    enabled: Vec<bool>,
}

/// A delivery handed to this dispatcher under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: Uuid,
    pub msg_id: String,
    pub endpoint_id: Uuid,
    pub order_key: String,
    /// Place in its queue when claimed: 1 is the head.
    pub rank: i64,
    pub url: String,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub record: StoredRecord,
    /// Sealed secrets signing now, newest first.
    pub sealed_secrets: Vec<Vec<u8>>,
}

/// The original Kafka record of a message.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: serde_json::Value,
}

/// Claims up to `limit` queues — the first `chain` pending deliveries of an (endpoint, order key) whose head is due
/// and none of which is leased — at most `per_endpoint` queues leased per endpoint, for `lease`. Rows come back in
/// queue order, each with its rank in its queue (`Claimed::rank`, 1 = the head): a dispatcher sends a queue's rows
/// one after the other and only the unbroken run from rank 1 (a row another claimer locked first breaks it).
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    per_endpoint: i64,
    chain: i64,
    lease: std::time::Duration,
    token: Uuid,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH q AS (
             SELECT delivery_id, endpoint_id, order_key, next_attempt_at,
                    row_number() OVER w AS rank,
                    coalesce(bool_or(lease_until > now()) OVER (PARTITION BY endpoint_id, order_key), false)
                        AS queue_busy
               FROM webhook_deliveries WHERE status = 'pending'
             WINDOW w AS (PARTITION BY endpoint_id, order_key ORDER BY position, created_at)
         ), busy AS (
             SELECT endpoint_id, count(DISTINCT order_key) AS n FROM webhook_deliveries
              WHERE status = 'pending' AND lease_until > now() GROUP BY endpoint_id
         ), picked AS (
             SELECT endpoint_id, order_key FROM (
                 SELECT q.endpoint_id, q.order_key, q.next_attempt_at,
                        coalesce(b.n, 0)
                            + row_number() OVER (PARTITION BY q.endpoint_id ORDER BY q.next_attempt_at) AS slot
                   FROM q LEFT JOIN busy b USING (endpoint_id)
                  WHERE q.rank = 1 AND NOT q.queue_busy AND q.next_attempt_at <= now()
             ) h
              WHERE slot <= $2 ORDER BY next_attempt_at LIMIT $1
         ), chained AS (
             SELECT q.delivery_id, q.rank FROM q JOIN picked p USING (endpoint_id, order_key)
              WHERE q.rank <= $3 AND q.next_attempt_at <= now()
         ), locked AS (
             SELECT d.delivery_id FROM webhook_deliveries d
              WHERE d.delivery_id IN (SELECT delivery_id FROM chained)
                AND d.status = 'pending' AND (d.lease_until IS NULL OR d.lease_until <= now())
              FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE webhook_deliveries d SET lease_until = now() + make_interval(secs => $4), lease_token = $5
               FROM locked WHERE d.delivery_id = locked.delivery_id
             RETURNING d.delivery_id, d.msg_id, d.endpoint_id, d.order_key, d.event_id, d.attempts, d.created_at
         )
         SELECT c.delivery_id, c.msg_id, c.endpoint_id, c.order_key, ch.rank, c.attempts, c.created_at, e.url,
                m.source_topic, m.source_partition, m.source_offset, m.source_timestamp, m.record_key,
                m.record_value, m.record_headers,
                (SELECT min(a.started_at) FROM webhook_attempts a WHERE a.delivery_id = c.delivery_id)
                    AS first_attempt_at,
                ARRAY(SELECT s.sealed FROM webhook_endpoint_secrets s
                       WHERE s.endpoint_id = c.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())
                       ORDER BY s.secret_no DESC) AS sealed_secrets
           FROM claimed c
           JOIN chained ch ON ch.delivery_id = c.delivery_id
           JOIN webhook_endpoints e ON e.endpoint_id = c.endpoint_id
           JOIN webhook_messages m ON m.event_id = c.event_id
          ORDER BY c.endpoint_id, c.order_key, ch.rank",
    )
    .bind(limit)
    .bind(per_endpoint)
    .bind(chain)
    .bind(lease.as_secs_f64())
    .bind(token)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Claimed {
                delivery_id: r.try_get("delivery_id")?,
                msg_id: r.try_get("msg_id")?,
                endpoint_id: r.try_get("endpoint_id")?,
                order_key: r.try_get("order_key")?,
                rank: r.try_get("rank")?,
                url: r.try_get("url")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
                first_attempt_at: r.try_get("first_attempt_at")?,
                record: StoredRecord {
                    topic: r.try_get("source_topic")?,
                    partition: r.try_get("source_partition")?,
                    offset: r.try_get("source_offset")?,
                    timestamp: r.try_get("source_timestamp")?,
                    key: r.try_get("record_key")?,
                    value: r.try_get("record_value")?,
                    headers: r.try_get("record_headers")?,
                },
                sealed_secrets: r.try_get("sealed_secrets")?,
            })
        })
        .collect()
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// The last attempt failed (already dead-lettered).
    Failed,
    /// The endpoint answered 410 Gone: the delivery fails and the endpoint is disabled.
    Gone,
}

/// One finished attempt.
#[derive(Debug, Clone)]
pub struct Finished {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub token: Uuid,
    /// This attempt's number (1-based).
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    pub status_code: Option<i32>,
    pub excerpt: Option<String>,
    pub error: Option<String>,
    pub next: Next,
}

/// What [`finish`] changed.
#[derive(Debug, Default)]
pub struct FinishReport {
    /// Results applied (the lease was still ours).
    pub applied: usize,
    /// Endpoints disabled now, with the reason.
    pub disabled: Vec<Disable>,
}

/// Applies `results` and releases `released` (delivery, lease token) in one transaction; disables endpoints that answered 410 or whose failures began more than
/// `auto_disable_after` ago (telling the merchant and the audit log: `WebhookEndpointDisabled` in the outbox, as
/// `actor`).
pub async fn finish(
    pool: &PgPool,
    results: &[Finished],
    released: &[(Uuid, Uuid)],
    auto_disable_after: std::time::Duration,
    actor: &events::Metadata,
) -> Result<FinishReport, DisableError> {
    let mut report = FinishReport::default();
    if results.is_empty() && released.is_empty() {
        return Ok(report);
    }
    let mut tx = pool.begin().await?;
    if !released.is_empty() {
        // Claimed but not attempted (a chain stopped early): free them, unchanged, if the lease is still ours.
        sqlx::query(
            "UPDATE webhook_deliveries d SET lease_until = NULL, lease_token = NULL
               FROM UNNEST($1::uuid[], $2::uuid[]) AS u(id, token)
              WHERE d.delivery_id = u.id AND d.lease_token = u.token",
        )
        .bind(released.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(released.iter().map(|(_, t)| *t).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let status = |n: &Next| match n {
        Next::Delivered => "delivered",
        Next::RetryAt(_) => "pending",
        Next::Failed | Next::Gone => "failed",
    };
    let ids: Vec<Uuid> = results.iter().map(|r| r.delivery_id).collect();
    let tokens: Vec<Uuid> = results.iter().map(|r| r.token).collect();
    let statuses: Vec<&str> = results.iter().map(|r| status(&r.next)).collect();
    let next_at: Vec<Option<DateTime<Utc>>> = results
        .iter()
        .map(|r| match r.next {
            Next::RetryAt(t) => Some(t),
            _ => None,
        })
        .collect();
    let codes: Vec<Option<i32>> = results.iter().map(|r| r.status_code).collect();
    let errors: Vec<Option<String>> = results.iter().map(|r| r.error.clone()).collect();
    let applied: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_deliveries d
            SET status = u.status, attempts = d.attempts + 1, lease_until = NULL, lease_token = NULL,
                next_attempt_at = coalesce(u.next_at, d.next_attempt_at), last_status = u.code,
                last_error = u.error, finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int[], $6::text[])
                AS u(id, token, status, next_at, code, error)
          WHERE d.delivery_id = u.id AND d.lease_token = u.token AND d.status = 'pending'
         RETURNING d.delivery_id",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&statuses)
    .bind(&next_at)
    .bind(&codes)
    .bind(&errors)
    .fetch_all(&mut *tx)
    .await?;
    let applied: std::collections::HashSet<Uuid> = applied.into_iter().collect();
    let mine: Vec<&Finished> = results
        .iter()
        .filter(|r| applied.contains(&r.delivery_id))
        .collect();
    report.applied = mine.len();
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, latency_ms, status_code, response_excerpt,
                error)
         SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[],
                $7::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(mine.iter().map(|r| r.delivery_id).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.status_code).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.excerpt.clone()).collect::<Vec<_>>())
    .bind(mine.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    // Each endpoint's failure clock: the last result of the batch decides (a success stops it).
    let mut last: BTreeMap<Uuid, (bool, DateTime<Utc>)> = BTreeMap::new();
    let mut gone: Vec<Disable> = Vec::new();
    for r in &mine {
        last.insert(r.endpoint_id, (r.next == Next::Delivered, r.started_at));
        if r.next == Next::Gone && !gone.iter().any(|d| d.endpoint == r.endpoint_id) {
            gone.push(Disable {
                endpoint: r.endpoint_id,
                reason: EndpointDisabledReason::Gone,
                details: "the endpoint answered 410 Gone".into(),
            });
        }
    }
    let endpoints: Vec<Uuid> = last.keys().copied().collect();
    let ok: Vec<bool> = last.values().map(|(ok, _)| *ok).collect();
    let at: Vec<DateTime<Utc>> = last.values().map(|(_, at)| *at).collect();
    let failing: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE webhook_endpoints e
            SET failing_since = CASE WHEN u.ok THEN NULL ELSE coalesce(e.failing_since, u.at) END
           FROM UNNEST($1::uuid[], $2::bool[], $3::timestamptz[]) AS u(id, ok, at)
          WHERE e.endpoint_id = u.id
         RETURNING e.endpoint_id, e.failing_since",
    )
    .bind(&endpoints)
    .bind(&ok)
    .bind(&at)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .filter_map(|(id, since): (Uuid, Option<DateTime<Utc>>)| since.map(|s| (id, s)))
    .collect();
    let limit = chrono::Duration::from_std(auto_disable_after).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    for (endpoint, since) in failing {
        if now - since >= limit && !gone.iter().any(|d| d.endpoint == endpoint) {
            gone.push(Disable {
                endpoint,
                reason: EndpointDisabledReason::Failing,
                details: format!(
                    "every attempt failed since {} (auto-disable after {})",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    humantime::format_duration(auto_disable_after)
                ),
            });
        }
    }
    report.disabled = disable_endpoints(&mut tx, &gone, actor).await?;
    tx.commit().await?;
    Ok(report)
}

/// An endpoint to disable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disable {
    pub endpoint: Uuid,
    pub reason: EndpointDisabledReason,
    pub details: String,
}

/// Why disabling failed.
#[derive(Debug, thiserror::Error)]
pub enum DisableError {
    #[error("database")]
    Db(#[from] sqlx::Error),
    #[error("appending WebhookEndpointDisabled to the outbox")]
    Outbox(#[from] outbox::OutboxError),
    #[error("WebhookEndpointDisabled breaks the contract")]
    Contract(#[from] events::ContractError),
}

/// Disables the enabled ones of `endpoints`, fails their pending deliveries and appends a
/// `WebhookEndpointDisabled` per endpoint disabled now to the outbox — all in `tx`; returns those disabled now.
pub async fn disable_endpoints(
    tx: &mut PgConnection,
    endpoints: &[Disable],
    actor: &events::Metadata,
) -> Result<Vec<Disable>, DisableError> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = endpoints.iter().map(|d| d.endpoint).collect();
    let reasons: Vec<String> = endpoints.iter().map(|d| d.details.clone()).collect();
    let disabled: Vec<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE webhook_endpoints e SET status = 'disabled', disabled_reason = u.reason, disabled_at = now()
           FROM UNNEST($1::uuid[], $2::text[]) AS u(id, reason)
          WHERE e.endpoint_id = u.id AND e.status = 'enabled'
         RETURNING e.endpoint_id, e.merchant_id, e.disabled_at",
    )
    .bind(&ids)
    .bind(&reasons)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', finished_at = now(), lease_until = NULL,
                lease_token = NULL, last_error = 'endpoint disabled'
          WHERE endpoint_id = ANY($1) AND status = 'pending'",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(disabled.len());
    let mut notices = Vec::with_capacity(disabled.len());
    for (endpoint, merchant, at) in disabled {
        let d = endpoints
            .iter()
            .find(|d| d.endpoint == endpoint)
            .expect("asked for");
        let merchant = events::MerchantId::from_uuid(merchant).map_err(id_error)?;
        let details: String = d
            .details
            .chars()
            .take(events::payload::MAX_DETAILS_CHARS)
            .collect();
        notices.push(events::Envelope::new(
            merchant,
            WebhookEndpointDisabled {
                endpoint_id: EndpointId(endpoint).to_string(),
                reason: d.reason,
                disabled_at: at,
                details: (!details.is_empty()).then_some(details),
            },
            actor.clone(),
        )?);
        out.push(d.clone());
    }
    outbox::append_batch(&mut *tx, &notices).await?;
    // The merchant hears of it by e-mail, requested in the same transaction (decision 0031); the id is derived
    // from the event's, so the request is the event's and no other.
    let requests: Vec<events::NotificationRequested> = notices
        .iter()
        .filter_map(|notice| {
            let events::EventData::WebhookEndpointDisabled(d) = notice.data() else {
                return None;
            };
            let reason = serde_json::to_value(d.reason)
                .ok()?
                .as_str()
                .map(str::to_string)?;
            let parameters = [
                ("endpoint_id", d.endpoint_id.clone()),
                ("reason", reason),
                ("disabled_at", events::time::format_utc(&d.disabled_at)),
                ("details", d.details.clone().unwrap_or_default()),
            ];
            Some(events::NotificationRequested {
                notification_id: events::NotificationId::derived(
                    notice.event_id(),
                    "webhook_endpoint_disabled.email",
                ),
                requested_at: d.disabled_at,
                recipient: events::notification::Recipient::merchant(notice.merchant_id()),
                channel: events::notification::Channel::Email,
                template: "webhook_endpoint_disabled".into(),
                locale: "en".into(),
                parameters: parameters
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                destination: None,
                causation_id: Some(notice.event_id()),
            })
        })
        .collect();
    outbox::append_batch(&mut *tx, &requests).await?;
    Ok(out)
}

/// Age of the oldest pending delivery, in seconds (0 when none is pending).
pub async fn oldest_pending_seconds(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
           FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}

/// Which deliveries to list.
#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub merchant: Option<Uuid>,
    pub endpoint: Option<Uuid>,
    pub status: Option<String>,
    pub limit: i64,
}

/// A delivery with its attempts, as `checkoutctl webhooks deliveries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub delivery_id: DeliveryId,
    pub webhook_id: String,
    pub endpoint_id: EndpointId,
    pub merchant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub redelivery_of: Option<DeliveryId>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempt_log: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub latency_ms: i32,
    pub status_code: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
}

/// Deliveries matching `filter`, newest first, with their attempts (two statements).
pub async fn deliveries(
    pool: &PgPool,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.delivery_id, d.msg_id, d.endpoint_id, m.merchant_id, d.event_id, m.event_type, d.redelivery_of,
                d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.finished_at
           FROM webhook_deliveries d JOIN webhook_messages m ON m.event_id = d.event_id
          WHERE ($1::uuid IS NULL OR m.merchant_id = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2)
            AND ($3::text IS NULL OR d.status = $3)
          ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $4",
    )
    .bind(filter.merchant)
    .bind(filter.endpoint)
    .bind(&filter.status)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get("delivery_id")).collect();
    let attempts = sqlx::query(
        "SELECT delivery_id, attempt, started_at, latency_ms, status_code, response_excerpt, error
           FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut log: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
    for a in &attempts {
        log.entry(a.try_get("delivery_id")?)
            .or_default()
            .push(<AttemptView as sqlx::FromRow<_>>::from_row(a)?);
    }
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get("delivery_id")?;
            let status: String = r.try_get("status")?;
            Ok(DeliveryView {
                delivery_id: DeliveryId(id),
                webhook_id: r.try_get("msg_id")?,
                endpoint_id: EndpointId(r.try_get("endpoint_id")?),
                merchant_id: events::MerchantId::from_uuid(r.try_get("merchant_id")?)
                    .map_err(id_error)?
                    .to_string(),
                event_id: events::EventId::from_uuid(r.try_get("event_id")?)
                    .map_err(id_error)?
                    .to_string(),
                event_type: r.try_get("event_type")?,
                redelivery_of: r
                    .try_get::<Option<Uuid>, _>("redelivery_of")?
                    .map(DeliveryId),
                next_attempt_at: (status == "pending")
                    .then(|| r.try_get("next_attempt_at"))
                    .transpose()?,
                status,
                attempts: r.try_get("attempts")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                created_at: r.try_get("created_at")?,
                finished_at: r.try_get("finished_at")?,
                attempt_log: log.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// A stored id the event contract refuses (the nil UUID) is a decoding error.
pub(crate) fn id_error(e: events::id::IdError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Why a redelivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("no webhook delivery {0}")]
    NotFound(DeliveryId),
    #[error("delivery {0} is still pending: it will be attempted again by itself")]
    Pending(DeliveryId),
    #[error("endpoint {0} is {1}: enable it first (`checkoutctl webhooks endpoint enable {0}`)")]
    EndpointOff(EndpointId, String),
    #[error("database")]
    Db(#[from] sqlx::Error),
}

/// Requeues one delivery as a new delivery marked as a redelivery of the original (same `webhook-id`).
pub async fn redeliver(pool: &PgPool, id: DeliveryId) -> Result<DeliveryId, RedeliverError> {
    let row = sqlx::query(
        "SELECT d.status, d.endpoint_id, e.status AS endpoint_status, e.removed_at IS NOT NULL AS removed
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id
          WHERE d.delivery_id = $1",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(RedeliverError::NotFound(id))?;
    let endpoint = EndpointId(row.try_get("endpoint_id")?);
    if row.try_get::<bool, _>("removed")? {
        return Err(RedeliverError::EndpointOff(endpoint, "removed".into()));
    }
    let endpoint_status: String = row.try_get("endpoint_status")?;
    if endpoint_status != "enabled" {
        return Err(RedeliverError::EndpointOff(endpoint, endpoint_status));
    }
    if row.try_get::<String, _>("status")? == "pending" {
        return Err(RedeliverError::Pending(id));
    }
    let new = requeue(pool, &[id.0]).await?;
    Ok(DeliveryId(new[0]))
}

/// Requeues every failed delivery of `endpoint` created since `since` whose latest redelivery (if any) failed
/// too; returns the new deliveries' ids, in the order they will be sent.
pub async fn recover(
    pool: &PgPool,
    endpoint: EndpointId,
    since: DateTime<Utc>,
) -> Result<Vec<DeliveryId>, RedeliverError> {
    let row = sqlx::query(
        "SELECT status, removed_at IS NOT NULL AS removed FROM webhook_endpoints WHERE endpoint_id = $1",
    )
    .bind(endpoint.0)
    .fetch_optional(pool)
    .await?
    .ok_or(RedeliverError::EndpointOff(endpoint, "unknown".into()))?;
    let status: String = row.try_get("status")?;
    if row.try_get::<bool, _>("removed")? || status != "enabled" {
        return Err(RedeliverError::EndpointOff(
            endpoint,
            if row.try_get::<bool, _>("removed")? {
                "removed".into()
            } else {
                status
            },
        ));
    }
    // The latest delivery of each (event) chain, when it failed and the chain began since `since`.
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT latest.delivery_id FROM (
             SELECT DISTINCT ON (coalesce(d.redelivery_of, d.delivery_id)) d.delivery_id, d.status, d.position,
                    d.created_at,
                    (SELECT o.created_at FROM webhook_deliveries o
                      WHERE o.delivery_id = coalesce(d.redelivery_of, d.delivery_id)) AS chain_started
               FROM webhook_deliveries d
              WHERE d.endpoint_id = $1
              ORDER BY coalesce(d.redelivery_of, d.delivery_id), d.created_at DESC
         ) latest
          WHERE latest.status = 'failed' AND latest.chain_started >= $2
          ORDER BY latest.position, latest.created_at",
    )
    .bind(endpoint.0)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(requeue(pool, &ids)
        .await?
        .into_iter()
        .map(DeliveryId)
        .collect())
}

/// New pending deliveries repeating `originals` (in this order), each naming the first delivery of its chain.
async fn requeue(pool: &PgPool, originals: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    let new: Vec<Uuid> = originals.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, msg_id, endpoint_id, event_id, redelivery_of, order_key,
                position, status)
         SELECT u.new_id, d.msg_id, d.endpoint_id, d.event_id, coalesce(d.redelivery_of, d.delivery_id),
                d.order_key, d.position, 'pending'
           FROM UNNEST($1::uuid[], $2::uuid[]) AS u(old_id, new_id)
           JOIN webhook_deliveries d ON d.delivery_id = u.old_id",
    )
    .bind(originals)
    .bind(&new)
    .execute(pool)
    .await?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_derived_and_webhook_ids_have_the_msg_form() {
        let (e, v) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(delivery_id(e, v), delivery_id(e, v));
        assert_ne!(delivery_id(e, v), delivery_id(v, e));
        let id = msg_id(delivery_id(e, v));
        assert!(
            id.starts_with("msg_") && id.len() == 36 && !id.contains('-'),
            "{id}"
        );
    }
}
