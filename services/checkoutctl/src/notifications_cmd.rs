//! `checkoutctl notifications`: notification deliveries and recipients' contacts (decision 0031).
//!
//! - `list [--recipient ID] [--status pending|sent|failed] [--channel email|sms|webhook] [--limit N] [--json]`:
//!   deliveries, newest first — channel, template, status, attempts, where it went, the provider's id, the last
//!   error;
//! - `contact set RECIPIENT [--email A] [--phone +E164] [--webhook-url URL] [--locale L]`: where a recipient's
//!   notifications go when a request names no destination; a webhook URL gets a new signing secret, printed this
//!   once (sealed with `WEBHOOK_ENCRYPTION_KEY`, like merchant webhook secrets);
//! - `contact list [--recipient ID] [--json]`: contacts, never secrets.
//!
//! Refused input exits 1 with the reason; nothing is written.

use anyhow::Context as _;
use notifications::contacts::{self, ContactError, ContactUpdate};
use notifications::store::{self, Filter, View};

use crate::invoice_cmd::{table_or, time};
use crate::{Io, Run, block_on, exit};

/// Notification deliveries and contacts (DATABASE_URL; WEBHOOK_ENCRYPTION_KEY for webhook contacts).
#[derive(Debug, clap::Args)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    command: NotificationsCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum NotificationsCommand {
    /// Deliveries, newest first.
    List {
        /// A recipient id (`mer_…`, or a customer reference).
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long, value_parser = ["pending", "sent", "failed"])]
        status: Option<String>,
        #[arg(long, value_parser = ["email", "sms", "webhook"])]
        channel: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Recipients' contact details.
    Contact {
        #[command(subcommand)]
        command: ContactCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ContactCommand {
    /// Set (part of) a recipient's contact; fields not given keep their value.
    Set {
        recipient: String,
        #[arg(long)]
        email: Option<String>,
        /// E.164, e.g. +15551234567.
        #[arg(long)]
        phone: Option<String>,
        /// Where webhook notifications go; prints the new signing secret once.
        #[arg(long)]
        webhook_url: Option<String>,
        #[arg(long)]
        locale: Option<String>,
    },
    /// Contacts (of one recipient); never secrets.
    List {
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

impl Run for NotificationsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let url = self
            .database_url
            .context("DATABASE_URL is not set (pass --database-url or source .dev/env)")?;
        block_on(async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .context("connecting to PostgreSQL")?;
            match self.command {
                NotificationsCommand::List {
                    recipient,
                    status,
                    channel,
                    limit,
                    json,
                } => {
                    let filter = Filter {
                        recipient,
                        status,
                        channel,
                        limit: limit.clamp(1, 10_000),
                    };
                    let list = store::list(&pool, &filter).await?;
                    if json {
                        serde_json::to_writer_pretty(&mut *io.stdout, &list)?;
                        writeln!(io.stdout)?;
                    } else {
                        write!(io.stdout, "{}", deliveries_table(&list))?;
                    }
                    Ok(exit::OK)
                }
                NotificationsCommand::Contact {
                    command:
                        ContactCommand::Set {
                            recipient,
                            email,
                            phone,
                            webhook_url,
                            locale,
                        },
                } => {
                    let env = webhooks::EnvOverrides::from_env();
                    let key = match &env.encryption_key {
                        Some(k) => Some(webhooks::signing::SecretBox::from_base64(
                            secrecy::ExposeSecret::expose_secret(k),
                        )?),
                        None => None,
                    };
                    let update = ContactUpdate {
                        email,
                        phone,
                        webhook_url,
                        locale,
                    };
                    match contacts::set(&pool, key.as_ref(), &recipient, &update).await {
                        Ok(secret) => {
                            writeln!(io.stdout, "contact of {recipient} set")?;
                            if let Some(secret) = secret {
                                writeln!(
                                    io.stdout,
                                    "webhook signing secret (shown this once): {}",
                                    secret.expose()
                                )?;
                            }
                            Ok(exit::OK)
                        }
                        Err(ContactError::Db(e)) => Err(e.into()),
                        Err(refused) => {
                            writeln!(io.stderr, "error: {refused}")?;
                            Ok(exit::INVALID)
                        }
                    }
                }
                NotificationsCommand::Contact {
                    command: ContactCommand::List { recipient, json },
                } => {
                    let list = contacts::list(&pool, recipient.as_deref()).await?;
                    if json {
                        serde_json::to_writer_pretty(&mut *io.stdout, &list)?;
                        writeln!(io.stdout)?;
                    } else {
                        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                        write!(
                            io.stdout,
                            "{}",
                            table_or(
                                "no contacts",
                                &["RECIPIENT", "EMAIL", "PHONE", "WEBHOOK URL", "LOCALE"],
                                list.iter().map(|c| vec![
                                    c.recipient_id.clone(),
                                    opt(&c.email),
                                    opt(&c.phone),
                                    opt(&c.webhook_url),
                                    opt(&c.locale),
                                ]),
                            )
                        )?;
                    }
                    Ok(exit::OK)
                }
            }
        })
    }
}

/// The deliveries as a table.
pub fn deliveries_table(list: &[View]) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    table_or(
        "no notifications",
        &[
            "NOTIFICATION",
            "RECIPIENT",
            "CHANNEL",
            "TEMPLATE",
            "STATUS",
            "ATTEMPTS",
            "SENT TO",
            "PROVIDER ID",
            "REQUESTED",
            "LAST ERROR",
        ],
        list.iter().map(|v| {
            vec![
                events::NotificationId::from_uuid(v.notification_id)
                    .map_or_else(|_| v.notification_id.to_string(), |i| i.to_string()),
                v.recipient_id.clone(),
                v.channel.clone(),
                format!("{} ({})", v.template, v.locale),
                match (&v.status[..], v.next_attempt_at) {
                    ("pending", Some(at)) if v.attempts > 0 => {
                        format!("pending, next {}", time(&at))
                    }
                    (s, _) => s.to_string(),
                },
                v.attempts.to_string(),
                opt(&v.sent_to),
                opt(&v.provider_id),
                time(&v.requested_at),
                opt(&v.last_error).chars().take(120).collect(),
            ]
        }),
    )
}
