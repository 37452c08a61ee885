//! Webhook endpoints: register, list, show, enable, disable, remove, rotate the secret — what `checkoutctl
//! webhooks endpoint …` runs.
//!
//! Guarantees: a URL is registered only after the SSRF guard accepted it (resolution included); the signing
//! secret is generated here, stored only encrypted, and returned once, by [`add`] and [`rotate_secret`]; nothing
//! else returns it and [`Endpoint`] has no secret field. Rotation keeps the previous secret signing until its
//! grace period ends. Removing an endpoint keeps its delivery log. Ids: `ep_<uuid>` for endpoints,
//! `dlv_<uuid>` for deliveries (a bare UUID is accepted too).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use events::{EventType, MerchantId};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::body::{parse_subscription, webhook_type};
use crate::signing::{SecretBox, SigningSecret};
use crate::ssrf::{Guard, GuardError};

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("A ", $what, " id: `", $prefix, "_<uuid>`.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "_{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let bare = s.strip_prefix(concat!($prefix, "_")).unwrap_or(s);
                Uuid::parse_str(bare)
                    .ok()
                    .filter(|u| !u.is_nil())
                    .map($name)
                    .ok_or_else(|| {
                        format!(
                            concat!("`{}` is not a ", $what, " id (", $prefix, "_<uuid>)"),
                            s
                        )
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

prefixed_id!(EndpointId, "ep", "webhook endpoint");
prefixed_id!(DeliveryId, "dlv", "webhook delivery");

/// An endpoint as stored (no secret).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub endpoint_id: EndpointId,
    pub merchant_id: MerchantId,
    pub url: String,
    /// Subscribed webhook types; empty: every type.
    pub event_types: Vec<String>,
    pub description: String,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
    /// Secrets signing now (2 during a rotation's grace period).
    pub active_secrets: i64,
}

/// Why an endpoint operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("refused URL: {0}")]
    Url(#[from] GuardError),
    #[error("{0}")]
    EventTypes(String),
    #[error("no webhook endpoint {0}")]
    NotFound(EndpointId),
    #[error("webhook endpoint {0} was removed")]
    Removed(EndpointId),
    #[error("database")]
    Db(#[from] sqlx::Error),
    #[error("recording the disabled endpoint")]
    Disable(#[from] crate::store::DisableError),
}

/// What `add` needs.
pub struct NewEndpoint<'a> {
    pub merchant_id: MerchantId,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub description: &'a str,
}

/// Normalises subscriptions to webhook types, refusing unknown names; sorted, without duplicates.
pub fn subscriptions(names: &[String]) -> Result<Vec<String>, EndpointError> {
    let mut types: Vec<EventType> = names
        .iter()
        .map(|n| parse_subscription(n.trim()))
        .collect::<Result<_, _>>()
        .map_err(EndpointError::EventTypes)?;
    types.sort();
    types.dedup();
    Ok(types.into_iter().map(webhook_type).collect())
}

/// Registers an endpoint; returns it and its secret (shown once).
pub async fn add(
    pool: &PgPool,
    guard: &Guard,
    key: &SecretBox,
    new: NewEndpoint<'_>,
) -> Result<(Endpoint, SigningSecret), EndpointError> {
    let url = guard.check_url(new.url).await?;
    let event_types = subscriptions(new.event_types)?;
    let id = EndpointId(Uuid::now_v7());
    let secret = SigningSecret::generate();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_endpoints (endpoint_id, merchant_id, url, event_types, description)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.0)
    .bind(new.merchant_id.as_uuid())
    .bind(url.as_str())
    .bind(&event_types)
    .bind(new.description)
    .execute(&mut *tx)
    .await?;
    add_secret(&mut tx, key, id, &secret).await?;
    tx.commit().await?;
    Ok((show(pool, id).await?, secret))
}

/// Stores `secret`, sealed, as the endpoint's newest (the caller holds the endpoint's row lock, or created it).
async fn add_secret(
    tx: &mut sqlx::PgConnection,
    key: &SecretBox,
    id: EndpointId,
    secret: &SigningSecret,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoint_secrets (endpoint_id, secret_no, sealed)
         SELECT $1, coalesce(max(secret_no), 0) + 1, $2 FROM webhook_endpoint_secrets WHERE endpoint_id = $1",
    )
    .bind(id.0)
    .bind(key.seal(id.0, secret))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

const SELECT: &str = "SELECT e.endpoint_id, e.merchant_id, e.url, e.event_types, e.description, e.status,
        e.disabled_reason, e.disabled_at, e.failing_since, e.created_at, e.removed_at,
        (SELECT count(*) FROM webhook_endpoint_secrets s
          WHERE s.endpoint_id = e.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > now())) AS active_secrets
     FROM webhook_endpoints e";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Endpoint, sqlx::Error> {
    use sqlx::Row;
    Ok(Endpoint {
        endpoint_id: EndpointId(row.try_get("endpoint_id")?),
        merchant_id: MerchantId::from_uuid(row.try_get("merchant_id")?)
            .map_err(crate::store::id_error)?,
        url: row.try_get("url")?,
        event_types: row.try_get("event_types")?,
        description: row.try_get("description")?,
        status: row.try_get("status")?,
        disabled_reason: row.try_get("disabled_reason")?,
        disabled_at: row.try_get("disabled_at")?,
        failing_since: row.try_get("failing_since")?,
        created_at: row.try_get("created_at")?,
        removed_at: row.try_get("removed_at")?,
        active_secrets: row.try_get("active_secrets")?,
    })
}

/// One endpoint (removed ones too).
pub async fn show(pool: &PgPool, id: EndpointId) -> Result<Endpoint, EndpointError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE e.endpoint_id = $1"
    )))
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(EndpointError::NotFound(id))?;
    Ok(from_row(&row)?)
}

/// Endpoints not removed, of one merchant or of all, oldest first.
pub async fn list(
    pool: &PgPool,
    merchant: Option<MerchantId>,
) -> Result<Vec<Endpoint>, EndpointError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE e.removed_at IS NULL AND ($1::uuid IS NULL OR e.merchant_id = $1)
         ORDER BY e.created_at, e.endpoint_id"
    )))
    .bind(merchant.map(|m| m.as_uuid()))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

async fn live(pool: &PgPool, id: EndpointId) -> Result<Endpoint, EndpointError> {
    let endpoint = show(pool, id).await?;
    if endpoint.removed_at.is_some() {
        return Err(EndpointError::Removed(id));
    }
    Ok(endpoint)
}

/// Disables an endpoint (its pending deliveries are failed, ready for `recover`); the merchant and the audit log
/// learn it from a `WebhookEndpointDisabled` with `actor` as its metadata.
pub async fn disable(
    pool: &PgPool,
    id: EndpointId,
    reason: &str,
    actor: &events::Metadata,
) -> Result<Endpoint, EndpointError> {
    live(pool, id).await?;
    let mut tx = pool.begin().await?;
    operator_disable(&mut tx, id, reason, actor).await?;
    tx.commit().await?;
    show(pool, id).await
}

async fn operator_disable(
    tx: &mut sqlx::PgConnection,
    id: EndpointId,
    reason: &str,
    actor: &events::Metadata,
) -> Result<(), EndpointError> {
    let disable = crate::store::Disable {
        endpoint: id.0,
        reason: events::payload::EndpointDisabledReason::Operator,
        details: reason.to_string(),
    };
    crate::store::disable_endpoints(tx, &[disable], actor).await?;
    Ok(())
}

/// Enables an endpoint again; its failure clock starts over.
pub async fn enable(pool: &PgPool, id: EndpointId) -> Result<Endpoint, EndpointError> {
    live(pool, id).await?;
    sqlx::query(
        "UPDATE webhook_endpoints SET status = 'enabled', disabled_reason = NULL, disabled_at = NULL,
                failing_since = NULL
          WHERE endpoint_id = $1",
    )
    .bind(id.0)
    .execute(pool)
    .await?;
    show(pool, id).await
}

/// Removes an endpoint: nothing more is delivered to it (a `WebhookEndpointDisabled` says so if it was enabled);
/// its log stays.
pub async fn remove(
    pool: &PgPool,
    id: EndpointId,
    actor: &events::Metadata,
) -> Result<Endpoint, EndpointError> {
    live(pool, id).await?;
    let mut tx = pool.begin().await?;
    operator_disable(&mut tx, id, "removed", actor).await?;
    sqlx::query("UPDATE webhook_endpoints SET removed_at = now() WHERE endpoint_id = $1")
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    show(pool, id).await
}

/// A new secret for the endpoint; every secret signing now keeps signing for `grace` (then only the new one).
pub async fn rotate_secret(
    pool: &PgPool,
    key: &SecretBox,
    id: EndpointId,
    grace: Duration,
) -> Result<(Endpoint, SigningSecret), EndpointError> {
    live(pool, id).await?;
    let secret = SigningSecret::generate();
    let grace = grace.as_secs_f64();
    let mut tx = pool.begin().await?;
    // Locks the endpoint's secrets so that two rotations number theirs one after the other.
    sqlx::query("SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1 FOR UPDATE")
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE webhook_endpoint_secrets SET expires_at = now() + make_interval(secs => $2)
          WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now() + make_interval(secs => $2))",
    )
    .bind(id.0)
    .bind(grace)
    .execute(&mut *tx)
    .await?;
    add_secret(&mut tx, key, id, &secret).await?;
    tx.commit().await?;
    Ok((show(pool, id).await?, secret))
}
