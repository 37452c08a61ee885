//! `checkoutctl webhooks`: merchants' webhook endpoints and their deliveries.
//!
//! - `endpoint add --merchant MER_ID --url URL [--events TYPE,…]` registers an endpoint after the SSRF guard
//!   accepted its URL (resolution included) and prints its id and its secret — the only time the secret is shown;
//! - `endpoint list [--merchant]`, `show`, `disable`, `enable`, `remove`, `rotate-secret [--grace]` (the old
//!   secret keeps signing beside the new one for the grace period; the new one is printed once);
//! - `deliveries [--merchant|--endpoint|--status] [--limit] [--json]`: deliveries with every attempt;
//! - `redeliver DELIVERY_ID`: sends one delivery again (a new delivery, same `webhook-id`);
//! - `recover --endpoint ID --since TIME`: requeues every failed delivery since then, in order.
//!
//! Guarantees: secrets appear only in the output of `add` and `rotate-secret`, never in `list`, `show`, `--json`
//! of those or any log; the guard and the encryption key are the service's (`WEBHOOK_ALLOWED_NETWORKS`,
//! `CHECKOUT_ENVIRONMENT`, `WEBHOOK_ENCRYPTION_KEY`). Refused input exits 1 with the reason; nothing is written.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use events::MerchantId;
use serde::Serialize;
use webhooks::endpoints::{self, DeliveryId, Endpoint, EndpointError, EndpointId, NewEndpoint};
use webhooks::store::{self, DeliveryFilter, DeliveryView, RedeliverError};
use webhooks::{DeliverySettings, EnvOverrides};

use crate::invoice_cmd::{table_or, time};
use crate::{Io, Run, block_on, exit};

/// Merchants' webhook endpoints and deliveries (DATABASE_URL; WEBHOOK_ENCRYPTION_KEY for secrets).
#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    command: WebhooksCommand,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum WebhooksCommand {
    /// Register, list, show, disable, enable, remove endpoints, rotate their secrets.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Deliveries, newest first, with every attempt (time, status, latency, response excerpt, error).
    Deliveries {
        #[arg(long)]
        merchant: Option<MerchantId>,
        #[arg(long)]
        endpoint: Option<EndpointId>,
        /// `pending`, `delivered` or `failed`.
        #[arg(long, value_parser = ["pending", "delivered", "failed"])]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON (every attempt included).
        #[arg(long)]
        json: bool,
    },
    /// Send one delivery again: a new delivery marked as a redelivery, with the same `webhook-id`.
    Redeliver {
        delivery: DeliveryId,
        #[arg(long)]
        json: bool,
    },
    /// Requeue every failed delivery of an endpoint since TIME (whose redeliveries, if any, failed too), in order.
    Recover {
        #[arg(long)]
        endpoint: EndpointId,
        /// RFC 3339 time, e.g. 2026-11-30T00:00:00Z.
        #[arg(long)]
        since: DateTime<Utc>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum EndpointCommand {
    /// Register an endpoint; prints its id and its signing secret (shown this once).
    Add {
        #[arg(long)]
        merchant: MerchantId,
        /// `https://…` (`http://` only with CHECKOUT_ENVIRONMENT=development); refused when it resolves to a
        /// private, loopback, link-local, … address outside WEBHOOK_ALLOWED_NETWORKS.
        #[arg(long)]
        url: String,
        /// Webhook types to subscribe to (`invoice.paid,settlement.completed` or contract names); default: all.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
    /// Endpoints not removed (of one merchant); never their secrets.
    List {
        #[arg(long)]
        merchant: Option<MerchantId>,
        #[arg(long)]
        json: bool,
    },
    /// One endpoint; never its secrets.
    Show {
        endpoint: EndpointId,
        #[arg(long)]
        json: bool,
    },
    /// Stop sending; pending deliveries become failed (use `recover` after `enable`).
    Disable {
        endpoint: EndpointId,
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
    },
    /// Send again; the failure clock of the auto-disable rule starts over.
    Enable { endpoint: EndpointId },
    /// Remove for good (its delivery log stays).
    Remove { endpoint: EndpointId },
    /// A new secret; the current one keeps signing beside it for --grace. Prints the new secret once.
    RotateSecret {
        endpoint: EndpointId,
        /// How long the current secret keeps signing (e.g. 24h, 0s).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
        #[arg(long)]
        json: bool,
    },
}

/// The secret and its endpoint, printed once.
#[derive(Serialize)]
struct WithSecret<'a> {
    endpoint: &'a Endpoint,
    secret: &'a str,
}

impl Run for WebhooksArgs {
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
            let code = match self.command {
                WebhooksCommand::Endpoint { command } => endpoint(command, &pool, io).await?,
                WebhooksCommand::Deliveries {
                    merchant,
                    endpoint,
                    status,
                    limit,
                    json,
                } => {
                    let filter = DeliveryFilter {
                        merchant: merchant.map(|m| m.as_uuid()),
                        endpoint: endpoint.map(|e| e.0),
                        status,
                        limit: limit.clamp(1, 10_000),
                    };
                    let list = store::deliveries(&pool, &filter).await?;
                    if json {
                        print_json(io, &list)?;
                    } else {
                        write!(io.stdout, "{}", deliveries_table(&list))?;
                    }
                    exit::OK
                }
                WebhooksCommand::Redeliver { delivery, json } => {
                    match store::redeliver(&pool, delivery).await {
                        Ok(new) => {
                            if json {
                                print_json(
                                    io,
                                    &serde_json::json!({"redelivery": new, "of": delivery}),
                                )?;
                            } else {
                                writeln!(io.stdout, "{new} queued: a redelivery of {delivery}")?;
                            }
                            exit::OK
                        }
                        Err(RedeliverError::Db(e)) => return Err(e.into()),
                        Err(refused) => refuse(io, &refused)?,
                    }
                }
                WebhooksCommand::Recover {
                    endpoint,
                    since,
                    json,
                } => match store::recover(&pool, endpoint, since).await {
                    Ok(new) => {
                        if json {
                            print_json(io, &serde_json::json!({"requeued": new}))?;
                        } else {
                            writeln!(
                                io.stdout,
                                "{} failed deliveries of {endpoint} since {} requeued",
                                new.len(),
                                time(&since)
                            )?;
                        }
                        exit::OK
                    }
                    Err(RedeliverError::Db(e)) => return Err(e.into()),
                    Err(refused) => refuse(io, &refused)?,
                },
            };
            Ok(code)
        })
    }
}

async fn endpoint(
    command: EndpointCommand,
    pool: &sqlx::PgPool,
    io: &mut Io<'_>,
) -> anyhow::Result<u8> {
    let env = EnvOverrides::from_env();
    let settings = DeliverySettings::default();
    let result = match command {
        EndpointCommand::Add {
            merchant,
            url,
            events,
            description,
            json,
        } => {
            let guard = settings.guard(&env)?;
            let key = settings.secret_box(&env)?;
            let new = NewEndpoint {
                merchant_id: merchant,
                url: &url,
                event_types: &events,
                description: &description,
            };
            endpoints::add(pool, &guard, &key, new)
                .await
                .map(|(e, secret)| print_secret(io, &e, &secret.expose(), json))
        }
        EndpointCommand::RotateSecret {
            endpoint,
            grace,
            json,
        } => {
            let key = settings.secret_box(&env)?;
            endpoints::rotate_secret(pool, &key, endpoint, grace)
                .await
                .map(|(e, secret)| print_secret(io, &e, &secret.expose(), json))
        }
        EndpointCommand::List { merchant, json } => {
            endpoints::list(pool, merchant).await.map(|list| {
                if json {
                    print_json(io, &list)
                } else {
                    write!(io.stdout, "{}", endpoints_table(&list)).map_err(Into::into)
                }
            })
        }
        EndpointCommand::Show { endpoint, json } => {
            endpoints::show(pool, endpoint).await.map(|e| {
                if json {
                    print_json(io, &e)
                } else {
                    write!(io.stdout, "{}", endpoints_table(std::slice::from_ref(&e)))
                        .map_err(Into::into)
                }
            })
        }
        EndpointCommand::Disable { endpoint, reason } => {
            endpoints::disable(pool, endpoint, &reason, &operator()?)
                .await
                .map(|e| writeln!(io.stdout, "{} {}", e.endpoint_id, e.status).map_err(Into::into))
        }
        EndpointCommand::Enable { endpoint } => endpoints::enable(pool, endpoint)
            .await
            .map(|e| writeln!(io.stdout, "{} {}", e.endpoint_id, e.status).map_err(Into::into)),
        EndpointCommand::Remove { endpoint } => endpoints::remove(pool, endpoint, &operator()?)
            .await
            .map(|e| writeln!(io.stdout, "{} removed", e.endpoint_id).map_err(Into::into)),
    };
    match result {
        Ok(printed) => {
            printed?;
            Ok(exit::OK)
        }
        Err(EndpointError::Db(e)) => Err(e.into()),
        Err(refused) => refuse(io, &refused),
    }
}

/// Who disables an endpoint from here: the `metadata` of its `WebhookEndpointDisabled`.
fn operator() -> anyhow::Result<events::Metadata> {
    let actor = events::Actor::new(events::ActorKind::Admin, "checkoutctl")?;
    Ok(events::Metadata::new(actor))
}

fn refuse(io: &mut Io<'_>, why: &dyn std::fmt::Display) -> anyhow::Result<u8> {
    writeln!(io.stderr, "refused: {why}")?;
    Ok(exit::INVALID)
}

fn print_json(io: &mut Io<'_>, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *io.stdout, value)?;
    writeln!(io.stdout)?;
    Ok(())
}

fn print_secret(
    io: &mut Io<'_>,
    endpoint: &Endpoint,
    secret: &str,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        return print_json(io, &WithSecret { endpoint, secret });
    }
    writeln!(io.stdout, "endpoint {}", endpoint.endpoint_id)?;
    writeln!(io.stdout, "secret   {secret}")?;
    writeln!(
        io.stderr,
        "The secret is shown this once: store it where the merchant's receiver verifies signatures."
    )?;
    Ok(())
}

fn endpoints_table(list: &[Endpoint]) -> String {
    table_or(
        "no endpoints",
        &[
            "endpoint", "merchant", "status", "events", "secrets", "url", "created",
        ],
        list.iter().map(|e| {
            let status = match (&e.removed_at, &e.disabled_reason) {
                (Some(_), _) => "removed".to_string(),
                (None, Some(reason)) => format!("disabled ({reason})"),
                (None, None) if e.failing_since.is_some() => "enabled, failing".to_string(),
                _ => e.status.clone(),
            };
            vec![
                e.endpoint_id.to_string(),
                e.merchant_id.to_string(),
                status,
                if e.event_types.is_empty() {
                    "all".into()
                } else {
                    e.event_types.join(",")
                },
                e.active_secrets.to_string(),
                e.url.clone(),
                time(&e.created_at),
            ]
        }),
    )
}

fn deliveries_table(list: &[DeliveryView]) -> String {
    table_or(
        "no deliveries",
        &[
            "delivery",
            "webhook-id",
            "endpoint",
            "type",
            "status",
            "attempts",
            "last",
            "created",
        ],
        list.iter().map(|d| {
            let last = match (&d.last_status, &d.last_error) {
                (Some(code), _) => code.to_string(),
                (None, Some(err)) => err.chars().take(40).collect(),
                (None, None) => "-".into(),
            };
            let status = match (&d.redelivery_of, d.next_attempt_at) {
                (_, Some(next)) => format!("{} (next {})", d.status, time(&next)),
                (Some(of), None) => format!("{} (redelivery of {of})", d.status),
                (None, None) => d.status.clone(),
            };
            vec![
                d.delivery_id.to_string(),
                d.webhook_id.clone(),
                d.endpoint_id.to_string(),
                d.event_type.clone(),
                status,
                d.attempts.to_string(),
                last,
                time(&d.created_at),
            ]
        }),
    )
}
