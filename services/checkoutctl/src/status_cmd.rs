//! `checkoutctl status`: one compact summary of the live platform ([`crate::live::Snapshot`]), once or every
//! few seconds (`--watch`), for people (a block redrawn in place on a terminal, plain lines otherwise — CI,
//! `nohup`, a pipe) or machines (`--json`, one JSON object per line).
//!
//! Guarantees: reads only. Exit codes: 0 the snapshot is complete and verify holds (or is off); 1 verify found a
//! violation; 2 a source could not be read (Prometheus, PostgreSQL, or verify could not check) — the summary
//! still shows what could be read, and names what could not. `--watch` runs until Ctrl-C (exit 0) or, with
//! `--for`, for that long, then takes a last snapshot with a fresh verify and exits with its code.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use service_kit::KafkaSettings;

use crate::live::{Collector, Snapshot, Sources, short_topic};
use crate::verify::{self, Options, parse_duration};
use crate::{Io, Run, block_on, exit};

/// Where the live numbers come from: shared by `status` and `console`.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Prometheus' base URL (`make run` starts it on 127.0.0.1:9090).
    #[arg(
        long,
        env = "CHECKOUT_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub prometheus: String,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Kafka bootstrap servers (for verify); `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Run `checkoutctl verify` (without the audit hash chain) at most this often; 0 = every snapshot.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub verify_every: Duration,
    /// Do not run verify at all.
    #[arg(long)]
    pub no_verify: bool,
    /// Verify: differences younger than this are in flight, not violations.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Verify: the domain-events topic.
    #[arg(long, default_value = events::topics::DOMAIN_EVENTS)]
    pub topic: String,
    /// Verify: the read-model projections' consumer group.
    #[arg(long, default_value = runtime::policy::READ_MODEL_PROJECTIONS)]
    pub projections_group: String,
    /// Verify: the audit log's consumer group.
    #[arg(long, default_value = runtime::policy::AUDIT_LOGGING)]
    pub audit_group: String,
    /// Verify: the settlement service's consumer group.
    #[arg(long, default_value = runtime::policy::SETTLEMENT_PROCESSING)]
    pub settlement_group: String,
    /// Bound of each Prometheus request and of PostgreSQL/Kafka connections.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl LiveArgs {
    /// The collector these arguments describe, or why there is none. Call it inside the runtime.
    pub fn collector(&self, invoices: usize) -> anyhow::Result<Collector> {
        let database_url = self
            .database_url
            .clone()
            .ok_or(verify::VerifyError::NoDatabaseUrl)?;
        let bootstrap = self.bootstrap_servers.clone();
        if bootstrap.is_none() && !self.no_verify {
            return Err(verify::VerifyError::NoBootstrapServers.into());
        }
        Ok(Collector::new(Sources {
            prometheus: self.prometheus.clone(),
            database_url,
            kafka: KafkaSettings {
                bootstrap_servers: bootstrap.unwrap_or_default(),
                client: Default::default(),
            },
            verify: Options {
                grace: self.grace,
                topic: self.topic.clone(),
                projections_group: self.projections_group.clone(),
                audit_group: self.audit_group.clone(),
                settlement_group: self.settlement_group.clone(),
                max_violations: 1,
                audit_chain: false,
                timeout: self.timeout,
            },
            verify_every: (!self.no_verify).then_some(self.verify_every),
            timeout: self.timeout,
            invoices,
        })?)
    }
}

/// One compact summary of the live platform: events/s per topic, lag per group (messages, seconds), end-to-end
/// p95, dead letters, settlements and fees, webhook success, invoices by status and verify's result
/// (Prometheus + DATABASE_URL + KAFKA_BOOTSTRAP_SERVERS).
///
/// Exit 0: complete and verify ✓; 1: verify found a violation; 2: a source could not be read.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Print a summary every --interval until Ctrl-C (or --for).
    #[arg(long)]
    watch: bool,
    /// Time between summaries with --watch.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    interval: Duration,
    /// With --watch: stop after this long, with a last snapshot and a fresh verify deciding the exit code.
    #[arg(long = "for", value_parser = parse_duration)]
    run_for: Option<Duration>,
    /// Print each snapshot as one line of JSON.
    #[arg(long)]
    json: bool,
    /// Plain lines even on a terminal (no redrawing).
    #[arg(long)]
    plain: bool,
}

impl Run for StatusArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        if self.interval.is_zero() {
            anyhow::bail!("--interval must be positive");
        }
        let redraw = !self.json && !self.plain && std::io::stdout().is_terminal();
        block_on(async move {
            // In the runtime: the pool starts its maintenance task.
            let collector = self.live.collector(0)?;
            if !self.watch {
                let snapshot = collector.snapshot(true).await;
                print(io, &snapshot, self.json, false)?;
                return Ok(code(&snapshot));
            }
            let started = Instant::now();
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
                }
                if let Some(limit) = self.run_for
                    && started.elapsed() >= limit
                {
                    let snapshot = collector.snapshot(true).await;
                    print(io, &snapshot, self.json, false)?;
                    return Ok(code(&snapshot));
                }
                let snapshot = collector.snapshot(false).await;
                print(io, &snapshot, self.json, redraw)?;
            }
        })
    }
}

/// The exit code a snapshot stands for.
pub fn code(snapshot: &Snapshot) -> u8 {
    match &snapshot.verify {
        _ if !snapshot.complete() => exit::FAILURE,
        Some(v) if !v.ok => exit::INVALID,
        _ => exit::OK,
    }
}

fn print(io: &mut Io<'_>, snapshot: &Snapshot, json: bool, redraw: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *io.stdout, snapshot)?;
        writeln!(io.stdout)?;
    } else {
        if redraw {
            // Home and clear: the block replaces the previous one.
            write!(io.stdout, "\x1b[H\x1b[2J")?;
        }
        write!(io.stdout, "{}", human(snapshot))?;
        if !redraw {
            writeln!(io.stdout)?;
        }
    }
    io.stdout.flush()?;
    Ok(())
}

fn fmt_rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_seconds(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.1}s"),
    }
}

/// The summary as people read it: a few lines, each one aspect.
pub fn human(s: &Snapshot) -> String {
    let mut out = String::new();
    let verdict = match &s.verify {
        None => "verify off".to_string(),
        Some(v) if v.ok => format!("verify ✓ ({} in flight)", v.in_flight),
        Some(v) => match (&v.first_violation, &v.error) {
            (Some(first), _) => format!("verify ✗ {} violation(s), first: {first}", v.violations),
            (None, Some(e)) => format!("verify could not check: {e}"),
            (None, None) => "verify ✗".to_string(),
        },
    };
    out.push_str(&format!(
        "{}  {verdict}\n",
        s.taken_at.format("%Y-%m-%d %H:%M:%SZ")
    ));
    let join = |items: Vec<String>| {
        if items.is_empty() {
            "–".to_string()
        } else {
            items.join(" · ")
        }
    };
    out.push_str(&format!(
        "  events/s  {}\n",
        join(
            s.topics
                .iter()
                .map(|t| format!(
                    "{} {}",
                    short_topic(&t.topic),
                    fmt_rate(t.events_per_second)
                ))
                .collect()
        )
    ));
    out.push_str(&format!(
        "  lag       {}\n",
        join(
            s.groups
                .iter()
                .map(|g| format!(
                    "{} {}/{}",
                    g.group,
                    g.lag_messages.map_or("–".into(), |m| format!("{m:.0}")),
                    fmt_seconds(g.lag_seconds)
                ))
                .collect()
        )
    ));
    let webhooks = match s.webhooks.success_ratio {
        None => "no attempts in 5m".to_string(),
        Some(r) => format!(
            "{:.1}% 2xx of {:.0} attempts in 5m",
            r * 100.0,
            s.webhooks.attempts_5m
        ),
    };
    let dead = s
        .dead_lettered
        .iter()
        .filter(|d| d.records > 0)
        .map(|d| format!("{} {}", d.group, d.records))
        .collect::<Vec<_>>();
    out.push_str(&format!(
        "  e2e p95   {}   dead-lettered {}{}   webhooks {webhooks}\n",
        fmt_seconds(s.end_to_end_p95_seconds),
        s.dead_lettered_total,
        if dead.is_empty() {
            String::new()
        } else {
            format!(" ({})", dead.join(", "))
        }
    ));
    out.push_str(&format!(
        "  settled   {}\n",
        join(
            s.settlements
                .iter()
                .map(|c| format!(
                    "{} {} (gross {}, fees {}{})",
                    c.currency,
                    c.settlements,
                    c.gross,
                    c.fees,
                    if c.held > 0 {
                        format!(", {} held", c.held)
                    } else {
                        String::new()
                    }
                ))
                .collect()
        )
    ));
    out.push_str(&format!(
        "  invoices  {}\n",
        join(
            s.invoices_by_status
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect()
        )
    ));
    for p in &s.problems {
        out.push_str(&format!("  ! {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{GroupLag, TopicRate, VerifyOutcome, Webhooks};

    fn snapshot() -> Snapshot {
        Snapshot {
            taken_at: chrono::DateTime::parse_from_rfc3339("2026-11-30T17:40:05Z")
                .unwrap()
                .into(),
            topics: vec![TopicRate {
                topic: "crypto-checkout.domain-events".into(),
                events_per_second: 42.06,
            }],
            groups: vec![GroupLag {
                group: "read-model-projections".into(),
                lag_messages: Some(3.0),
                lag_seconds: Some(0.25),
            }],
            end_to_end_p95_seconds: Some(1.5),
            dead_lettered: vec![],
            dead_lettered_total: 0,
            settlements: vec![],
            webhooks: Webhooks {
                attempts_5m: 0.0,
                success_ratio: None,
            },
            invoices_by_status: [("confirmed".to_string(), 7)].into(),
            recent_invoices: vec![],
            verify: Some(VerifyOutcome {
                ok: true,
                at: chrono::Utc::now(),
                violations: 0,
                in_flight: 2,
                first_violation: None,
                error: None,
                elapsed_ms: 5,
            }),
            problems: vec![],
        }
    }

    #[test]
    fn the_summary_names_each_aspect_on_its_line() {
        let text = human(&snapshot());
        assert!(
            text.starts_with("2026-11-30 17:40:05Z  verify ✓ (2 in flight)\n"),
            "{text}"
        );
        assert!(text.contains("events/s  domain-events 42.1\n"), "{text}");
        assert!(
            text.contains("lag       read-model-projections 3/250ms\n"),
            "{text}"
        );
        assert!(
            text.contains("e2e p95   1.5s   dead-lettered 0   webhooks no attempts in 5m\n"),
            "{text}"
        );
        assert!(text.contains("invoices  confirmed 7\n"), "{text}");
        assert_eq!(code(&snapshot()), exit::OK);
    }

    #[test]
    fn a_violation_is_exit_1_and_a_missing_source_exit_2() {
        let mut s = snapshot();
        s.verify.as_mut().unwrap().ok = false;
        s.verify.as_mut().unwrap().first_violation = Some("a: b".into());
        assert_eq!(code(&s), exit::INVALID);
        assert!(human(&s).contains("verify ✗ 0 violation(s), first: a: b"));
        s.problems
            .push("Prometheus at http://x/ is unreachable".into());
        assert_eq!(code(&s), exit::FAILURE);
        assert!(human(&s).contains("  ! Prometheus at http://x/ is unreachable\n"));
    }
}
