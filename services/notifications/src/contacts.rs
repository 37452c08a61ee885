//! Contacts: where a recipient's notifications go when a request names no destination, and the signing secret
//! of its webhook notifications. A merchant's e-mail and phone come from the merchant contract (MerchantCreated
//! and SettingsUpdated v2, in the merchants' read model); `notification_contacts` holds overrides per recipient
//! (`checkoutctl notifications contact set`), customers' contacts and webhook notification URLs, and wins.
//!
//! Guarantees: the webhook secret is stored only encrypted (`webhooks::signing::SecretBox`, the key of merchant
//! webhook secrets, bound to the recipient), and shown once when set; addresses are checked per channel by the
//! contract's own rules ([`Channel::check_destination`]).

use events::notification::Channel;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;
use webhooks::signing::{SecretBox, SigningSecret};

/// Namespace of [`recipient_key`]. Fixed; changing it makes every sealed secret unreadable.
const RECIPIENT_NAMESPACE: Uuid = Uuid::from_u128(0x8e3c2d1a_4b5f_4c6d_9e7f_0a1b2c3d4e5f);

/// The associated data a recipient's secret is sealed with.
pub fn recipient_key(recipient_id: &str) -> Uuid {
    Uuid::new_v5(&RECIPIENT_NAMESPACE, recipient_id.as_bytes())
}

/// What to set (a `None` leaves the field as it is).
#[derive(Debug, Clone, Default)]
pub struct ContactUpdate {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
    pub locale: Option<String>,
}

/// A contact as listed (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct Contact {
    pub recipient_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub webhook_url: Option<String>,
    pub locale: Option<String>,
}

/// Why a contact cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum ContactError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Sets `recipient`'s contact details; a new webhook URL gets a new signing secret, returned (shown once).
pub async fn set(
    pool: &PgPool,
    key: Option<&SecretBox>,
    recipient: &str,
    update: &ContactUpdate,
) -> Result<Option<SigningSecret>, ContactError> {
    if recipient.is_empty() || recipient.len() > 128 {
        return Err(ContactError::Invalid(
            "a recipient id has 1–128 characters".into(),
        ));
    }
    for (channel, value) in [
        (Channel::Email, &update.email),
        (Channel::Sms, &update.phone),
        (Channel::Webhook, &update.webhook_url),
    ] {
        if let Some(why) = value.as_deref().and_then(|v| channel.check_destination(v)) {
            return Err(ContactError::Invalid(why));
        }
    }
    let rkey = recipient_key(recipient);
    let secret = match &update.webhook_url {
        Some(_) => {
            let key = key.ok_or_else(|| {
                ContactError::Invalid(format!(
                    "a webhook contact needs {} to seal its secret",
                    webhooks::ENCRYPTION_KEY_ENV
                ))
            })?;
            let secret = SigningSecret::generate();
            Some((key.seal(rkey, &secret), secret))
        }
        None => None,
    };
    sqlx::query(
        "INSERT INTO notification_contacts
             (recipient_id, recipient_key, email, phone, webhook_url, webhook_secret_sealed, locale)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (recipient_id) DO UPDATE SET
             email = coalesce(EXCLUDED.email, notification_contacts.email),
             phone = coalesce(EXCLUDED.phone, notification_contacts.phone),
             webhook_url = coalesce(EXCLUDED.webhook_url, notification_contacts.webhook_url),
             webhook_secret_sealed = coalesce(EXCLUDED.webhook_secret_sealed,
                                              notification_contacts.webhook_secret_sealed),
             locale = coalesce(EXCLUDED.locale, notification_contacts.locale),
             updated_at = now()",
    )
    .bind(recipient)
    .bind(rkey)
    .bind(&update.email)
    .bind(&update.phone)
    .bind(&update.webhook_url)
    .bind(secret.as_ref().map(|(sealed, _)| sealed.clone()))
    .bind(&update.locale)
    .execute(pool)
    .await?;
    Ok(secret.map(|(_, s)| s))
}

/// Every contact (or `recipient`'s).
pub async fn list(pool: &PgPool, recipient: Option<&str>) -> Result<Vec<Contact>, sqlx::Error> {
    sqlx::query_as(
        "SELECT recipient_id, email, phone, webhook_url, locale FROM notification_contacts
          WHERE $1::text IS NULL OR recipient_id = $1 ORDER BY recipient_id",
    )
    .bind(recipient)
    .fetch_all(pool)
    .await
}

/// (email, phone, webhook URL, sealed webhook secret, whether the recipient is known at all).
type ContactRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    bool,
);

/// What [`lookup`] found for a recipient and a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The address, and for webhooks the sealed secret.
    Found(String, Option<Vec<u8>>),
    /// The recipient is known (an override on file, or a merchant in the merchants' read model) and has no
    /// address for the channel: permanent.
    NoneOnFile,
    /// A merchant that neither has an override nor is in the merchants' read model **yet**: its
    /// MerchantCreated comes on the domain topic, the request on the notification topic, and nothing orders
    /// the two (the projection may lag, e.g. while its service restarts). Worth retrying, not a verdict.
    UnknownMerchant,
}

/// Where `recipient`'s notifications of `channel` go (see [`Lookup`]). An override on file
/// (`notification_contacts`) comes first, per channel; for a merchant (`mer_…`) the contact of the merchant
/// contract follows (MerchantCreated / SettingsUpdated v2, kept by the merchants' read model `proj_merchants`).
/// One statement.
pub async fn lookup(
    pool: &PgPool,
    recipient: &str,
    channel: Channel,
) -> Result<Lookup, sqlx::Error> {
    let merchant = recipient
        .parse::<events::MerchantId>()
        .ok()
        .map(|m| m.as_uuid());
    let (email, phone, url, sealed, known): ContactRow = sqlx::query_as(
        "SELECT coalesce(c.email, m.contact_email), coalesce(c.phone, m.contact_phone), c.webhook_url,
                c.webhook_secret_sealed, (c.recipient_id IS NOT NULL OR m.merchant_id IS NOT NULL)
           FROM (SELECT 1) AS one
           LEFT JOIN notification_contacts c ON c.recipient_id = $1
           LEFT JOIN proj_merchants m ON m.merchant_id = $2",
    )
    .bind(recipient)
    .bind(merchant)
    .fetch_one(pool)
    .await?;
    let found = match channel {
        Channel::Email => email.map(|e| (e, None)),
        Channel::Sms => phone.map(|p| (p, None)),
        Channel::Webhook => url.map(|u| (u, sealed)),
    };
    Ok(match found {
        Some((address, sealed)) => Lookup::Found(address, sealed),
        None if merchant.is_some() && !known => Lookup::UnknownMerchant,
        None => Lookup::NoneOnFile,
    })
}

/// [`lookup`]'s address, when there is one.
pub async fn destination(
    pool: &PgPool,
    recipient: &str,
    channel: Channel,
) -> Result<Option<(String, Option<Vec<u8>>)>, sqlx::Error> {
    Ok(match lookup(pool, recipient, channel).await? {
        Lookup::Found(address, sealed) => Some((address, sealed)),
        Lookup::NoneOnFile | Lookup::UnknownMerchant => None,
    })
}

/// The sealed webhook secret of `recipient`, when one is on file.
pub async fn sealed_secret(pool: &PgPool, recipient: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, Option<Vec<u8>>>(
        "SELECT webhook_secret_sealed FROM notification_contacts WHERE recipient_id = $1",
    )
    .bind(recipient)
    .fetch_optional(pool)
    .await?
    .flatten())
}
