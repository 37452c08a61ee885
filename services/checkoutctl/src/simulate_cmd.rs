//! `checkoutctl simulate`: the checkout simulator (`crate::simulate`, decision 0037) as a command — the only
//! thing that injects traffic into a running platform (`make run` starts it).
//!
//! Guarantees: progress goes to stderr (one line per `--progress-every`), and to `--status-file` as JSON, replaced
//! atomically (write + rename), for `make run`'s summary; the final summary goes to stdout (`--json`: the
//! report's JSON). The first Ctrl-C (SIGINT) stops starting new things and lets what is in flight play out; a
//! second one, or SIGTERM, stops at once. Exit codes: 0 the run ended (its summary says whether it was cut short),
//! 2 it could not run (database or broker unreachable, a record refused).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use webhooks::{DeliverySettings, EnvOverrides};

use crate::simulate::{self, Counts, Deps, Options};
use crate::{Io, Run, block_on, exit};

/// Play merchants, customers and chains around the bus: sign-ups, webhook endpoints, suspensions, checkout views,
/// invoices (through the outbox), scanner reports (integration-events), expiries and cancellations.
///
/// The rate is in invoices per second. Each invoice brings 1–3 checkout views, 0–2 payments (each ~5–25 scanner
/// reports: a sighting and its confirmations), and the events the services derive from it (payment events,
/// InvoicePaid, settlement, notifications, webhook deliveries): about 25 records on the bus per invoice (~10 scanner
/// reports, ~11 domain events, ~2 views, notifications), measured in decision 0037. Fates:
/// paid (40%, some surviving a reorg), paid in two (10%), over-paid (8%), paid late (6%), expired (12%), expired
/// after a partial payment (6%), cancelled (6%), reorganised out then paid (8%); one invoice in five has its
/// reports duplicated and reordered. Needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS (.dev/env); webhook
/// endpoints need WEBHOOK_ENCRYPTION_KEY, WEBHOOK_ALLOWED_NETWORKS and CHECKOUT_ENVIRONMENT=development as the
/// webhooks service does. The first Ctrl-C lets in-flight invoices play out, a second one (or SIGTERM) stops at once.
/// Exit codes: 0 the run ended (the summary says if it was cut short), 2 it could not run or a report was refused.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// New invoices per second (fractions allowed, e.g. 0.5).
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Stop starting new things after this long (e.g. 5m); what is in flight still plays out. Default: until
    /// Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the draws (fates, amounts); default: from the clock. Ids are unique per run anyway.
    #[arg(long)]
    seed: Option<u64>,
    /// Merchants signed up at the start; more sign up as invoices come (2% of checkouts).
    #[arg(long, default_value_t = 8)]
    merchants: usize,
    /// At most this many merchants.
    #[arg(long, default_value_t = 60)]
    max_merchants: usize,
    /// Invoices' payment window (created → expires_at); at least 30s.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Mean time between merchant suspensions (each reinstated within the window); 0s: none.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    suspend_every: Duration,
    /// Base URL of the webhook receiver (dev-sandbox: http://127.0.0.1:2527); half the merchants register an
    /// endpoint there that answers, fails twice per delivery or hangs. Without it, no endpoints.
    #[arg(long, env = "CHECKOUT_SIM_WEBHOOK_RECEIVER")]
    webhook_receiver: Option<String>,
    /// The scanners' topic.
    #[arg(long, default_value = events::topics::INTEGRATION_EVENTS)]
    integration_topic: String,
    /// How often to print progress.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress_every: Duration,
    /// Also write the counts there as JSON at every progress line (replaced atomically).
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
}

fn line(c: &Counts) -> String {
    format!(
        "simulate {:>6.0}s: {} invoices ({:.1}/s), {} in flight, {} merchants ({} suspended), {} views, {} payments, \
         {} scanner reports, {} expired, {} cancelled, {} paid and confirmed",
        c.seconds,
        c.invoices,
        c.invoices as f64 / c.seconds.max(1.0),
        c.in_flight,
        c.merchants,
        c.merchants_suspended_now,
        c.checkout_views,
        c.payments,
        c.scanner_reports,
        c.expiries,
        c.cancellations,
        c.expected_confirmed,
    )
}

fn write_status(path: &PathBuf, c: &Counts) {
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_vec(c)
        .ok()
        .and_then(|bytes| std::fs::write(&tmp, bytes).ok())
        .and_then(|()| std::fs::rename(&tmp, path).ok());
    if ok.is_none() {
        eprintln!("simulate: cannot write {}", path.display());
    }
}

impl Run for SimulateArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let url = self
            .database_url
            .clone()
            .context("DATABASE_URL is not set (pass --database-url or source .dev/env)")?;
        let servers = self.bootstrap_servers.clone().context(
            "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-servers or source .dev/env)",
        )?;
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let options = Options {
            rate: self.rate,
            duration: self.duration,
            seed,
            merchants: self.merchants,
            max_merchants: self.max_merchants,
            window: self.window,
            webhook_receiver: self.webhook_receiver.clone(),
            integration_topic: self.integration_topic.clone(),
            suspend_every: self.suspend_every,
            keep_truth: false,
        };
        let status_file = self.status_file.clone();
        let progress_every = self.progress_every.max(Duration::from_millis(200));
        let report = block_on(async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .context("connecting to PostgreSQL")?;
            let kafka = service_kit::KafkaSettings {
                bootstrap_servers: servers,
                client: Default::default(),
            };
            // The simulator stands in for the chain scanners, which never drop a report: librdkafka retries a
            // report until the cluster takes it (`message.timeout.ms` 0 = no limit; order per key is kept by
            // the idempotent producer) instead of failing the run when a broker is down or the machine is
            // overloaded for longer than the default 5 minutes (seen in the chaos run, decision 0040).
            let producer = service_kit::kafka::producer_config(&kafka)
                .set("message.timeout.ms", "0")
                .create()
                .context("creating the Kafka producer")?;
            let hooks = match &options.webhook_receiver {
                Some(_) => {
                    let env = EnvOverrides::from_env();
                    let settings = DeliverySettings::default();
                    Some((
                        settings.guard(&env).context("the webhook URL guard")?,
                        settings
                            .secret_box(&env)
                            .context("WEBHOOK_ENCRYPTION_KEY (webhook endpoints' secrets)")?,
                    ))
                }
                None => None,
            };
            let deps = Deps {
                pool,
                producer,
                webhooks: hooks,
            };
            let (stop_tx, stop) = watch::channel(false);
            let (abort_tx, abort) = watch::channel(false);
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                let mut interrupts = 0;
                loop {
                    tokio::select! {
                        _ = int.recv() => {
                            interrupts += 1;
                            if interrupts == 1 {
                                eprintln!("simulate: stopping; in-flight invoices play out (Ctrl-C again to stop now)");
                                let _ = stop_tx.send(true);
                            } else {
                                let _ = abort_tx.send(true);
                            }
                        }
                        _ = term.recv() => {
                            let _ = stop_tx.send(true);
                            let _ = abort_tx.send(true);
                        }
                    }
                }
            });
            eprintln!(
                "simulate: {} invoices/s, seed {seed}, window {:?}, {} merchants to start{}",
                options.rate,
                options.window,
                options.merchants,
                options
                    .webhook_receiver
                    .as_deref()
                    .map(|u| format!(", webhook endpoints on {u}"))
                    .unwrap_or_default()
            );
            simulate::run(options, &deps, stop, abort, progress_every, |c| {
                eprintln!("{}", line(c));
                if let Some(path) = &status_file {
                    write_status(path, c);
                }
            })
            .await
        })?;
        if self.json {
            serde_json::to_writer_pretty(&mut *io.stdout, &report)?;
            writeln!(io.stdout)?;
        } else {
            writeln!(io.stdout, "{}", line(&report.counts))?;
            if report.aborted {
                writeln!(
                    io.stdout,
                    "stopped early: {} invoices were still in flight",
                    report.counts.in_flight
                )?;
            }
        }
        Ok(exit::OK)
    }
}
