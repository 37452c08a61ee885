//! `checkoutctl verify`: the money-conservation check operators and tests run against a live system
//! (checks in [`crate::verify`]; decision 0028).
//!
//! Guarantees: reads only. Exit 0 when every check holds — a short summary of what was checked, the counts,
//! what is in flight and the time taken; exit 1 when any does not, naming the first violation (which invoice,
//! settlement, merchant, currency or event; expected vs found); exit 2 when it cannot check at all (database or
//! Kafka unreachable, missing topic, a failing query) — never a pass then. `--json` prints the whole report
//! (every check, pass/fail, counts, violations up to `--max-violations`, elapsed ms), or `{"ok": false,
//! "error": …}` when it cannot check. Passwords in database URLs are never printed.

use std::time::Duration;

use service_kit::KafkaSettings;

use crate::verify::{self, Options, Report, VerifyError, format_duration, parse_duration};
use crate::{Io, Run, block_on, exit};

/// Check that money is conserved across settlements, the ledger, the read models and the audit log
/// (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS).
///
/// Checks, in one consistent snapshot of the database: (a) every invoice that the read models say is paid and
/// confirmed has exactly one settlement and no other invoice has any; (b) each settlement's gross is the
/// invoice's total, its fee and net are platform_fee at the merchant's rate, fee + net = gross; (c) the ledger
/// balances to zero per currency and its settlement and payout journals match the settlements; (d) each
/// merchant's read-model balance equals its ledger balance per currency, and each settlement is in the read
/// models as it is; (e) the projections, audit and settlement groups consumed the topic, and the read models and
/// the audit log hold the same events; (f) the audit hash chain verifies.
///
/// Differences younger than --grace are work in flight (counted, not violations). Exit 0: all hold; 1: a
/// violation (the first is named); 2: could not check.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Differences younger than this are in flight, not violations (e.g. 30s, 500ms, 2m; 0 for a quiescent
    /// system).
    #[arg(long, default_value = "30s", value_parser = parse_grace)]
    grace: Duration,
    /// Print the whole report as JSON.
    #[arg(long)]
    json: bool,
    /// Violations listed in the report (all are counted).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_violations: u32,
    /// Skip recomputing the audit hash chain (check f), the slowest check, e.g. when running every few seconds.
    #[arg(long)]
    no_audit_chain: bool,
    /// The domain-events topic.
    #[arg(long, default_value = events::topics::DOMAIN_EVENTS)]
    topic: String,
    /// The read-model projections' consumer group.
    #[arg(long, default_value = runtime::policy::READ_MODEL_PROJECTIONS)]
    projections_group: String,
    /// The audit log's consumer group.
    #[arg(long, default_value = runtime::policy::AUDIT_LOGGING)]
    audit_group: String,
    /// The settlement service's consumer group (positions stored in PostgreSQL).
    #[arg(long, default_value = runtime::policy::SETTLEMENT_PROCESSING)]
    settlement_group: String,
    /// How long to wait for PostgreSQL to accept the connection and for each Kafka request.
    #[arg(long, default_value = "10s", value_parser = parse_grace)]
    timeout: Duration,
    /// PostgreSQL URL; `make up` writes it to .dev/env.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Kafka bootstrap servers; `make up` writes them to .dev/env.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

impl Run for VerifyArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let options = Options {
            grace: self.grace,
            topic: self.topic,
            projections_group: self.projections_group,
            audit_group: self.audit_group,
            settlement_group: self.settlement_group,
            max_violations: self.max_violations as usize,
            audit_chain: !self.no_audit_chain,
            timeout: self.timeout,
        };
        let outcome = match (self.database_url, self.bootstrap_servers) {
            (None, _) => Err(VerifyError::NoDatabaseUrl),
            (_, None) => Err(VerifyError::NoBootstrapServers),
            (Some(url), Some(bootstrap)) => {
                let kafka = KafkaSettings {
                    bootstrap_servers: bootstrap,
                    client: Default::default(),
                };
                block_on(async move { Ok(verify::verify(&url, &kafka, &options).await) })?
            }
        };
        let report = match outcome {
            Ok(report) => report,
            Err(error) => {
                let error = anyhow::Error::new(error).context("cannot verify");
                if self.json {
                    let body = serde_json::json!({
                        "ok": false,
                        "checked": false,
                        "error": format!("{error:#}"),
                    });
                    serde_json::to_writer_pretty(&mut *io.stdout, &body)?;
                    writeln!(io.stdout)?;
                }
                return Err(error);
            }
        };
        if self.json {
            serde_json::to_writer_pretty(&mut *io.stdout, &report)?;
            writeln!(io.stdout)?;
        } else {
            write!(io.stdout, "{}", human(&report))?;
        }
        Ok(if report.ok { exit::OK } else { exit::INVALID })
    }
}

/// Violations printed per failing check in the human output.
const SHOWN_PER_CHECK: usize = 5;

/// The report as people read it: one line per check, the first violations of failing checks, a verdict
/// naming the first violation.
pub fn human(report: &Report) -> String {
    let mut out = format!(
        "verify: snapshot at {}, grace {}, topic {}\n",
        events::time::format_utc(&report.checked_at),
        format_duration(Duration::from_millis(report.grace_ms)),
        report.topic
    );
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mut line = format!(
            "{:<4}  {:<width$}  {}",
            if check.ok { "ok" } else { "FAIL" },
            check.name,
            check.summary
        );
        if check.in_flight > 0 {
            line.push_str(&format!("; {} in flight", check.in_flight));
        }
        if check.violations > 0 {
            line.push_str(&format!("; {} VIOLATION(S)", check.violations));
        }
        line.push_str(&format!(" ({} ms)\n", check.elapsed_ms));
        out.push_str(&line);
        let listed: Vec<_> = report
            .violations
            .iter()
            .filter(|v| v.check == check.name)
            .collect();
        for v in listed.iter().take(SHOWN_PER_CHECK) {
            out.push_str(&format!(
                "      - {}: {}: expected {}, found {}\n",
                v.subject, v.problem, v.expected, v.found
            ));
        }
        let more = check.violations.saturating_sub(SHOWN_PER_CHECK as u64);
        if more > 0 {
            out.push_str(&format!(
                "      … and {more} more (--json lists up to --max-violations)\n"
            ));
        }
    }
    let in_flight = if report.in_flight_total > 0 {
        format!(", {} in flight", report.in_flight_total)
    } else {
        String::new()
    };
    match report.first_violation() {
        None => out.push_str(&format!(
            "PASS: money is conserved: {} check(s), 0 violations{in_flight}, {} ms\n",
            report.checks.len(),
            report.elapsed_ms
        )),
        Some(first) => out.push_str(&format!(
            "FAIL: {} violation(s) in {} check(s){in_flight}, {} ms; first: {first}\n",
            report.violations_total,
            report.checks.iter().filter(|c| !c.ok).count(),
            report.elapsed_ms
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{CheckResult, Violation};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: VerifyArgs,
    }

    fn check(name: &'static str, violations: u64, in_flight: u64) -> CheckResult {
        CheckResult {
            name,
            description: "",
            ok: violations == 0,
            checked: 10,
            in_flight,
            violations,
            summary: format!("10 things of {name}"),
            elapsed_ms: 3,
        }
    }

    fn report(checks: Vec<CheckResult>, violations: Vec<Violation>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checked_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            grace_ms: 30_000,
            topic: "crypto-checkout.domain-events".into(),
            violations_total: checks.iter().map(|c| c.violations).sum(),
            in_flight_total: checks.iter().map(|c| c.in_flight).sum(),
            checks,
            violations,
            max_violations: 100,
            elapsed_ms: 42,
        }
    }

    #[test]
    fn a_pass_says_what_was_checked_and_what_is_in_flight() {
        let text = human(&report(
            vec![check("settlements", 0, 2), check("ledger", 0, 0)],
            vec![],
        ));
        assert_eq!(
            text,
            "verify: snapshot at 2026-12-01T10:00:00Z, grace 30s, topic crypto-checkout.domain-events\n\
             ok    settlements  10 things of settlements; 2 in flight (3 ms)\n\
             ok    ledger       10 things of ledger (3 ms)\n\
             PASS: money is conserved: 2 check(s), 0 violations, 2 in flight, 42 ms\n"
        );
    }

    #[test]
    fn a_failure_names_the_first_violation() {
        let violation = |n: u32| Violation {
            check: "amounts",
            kind: "fee",
            subject: format!("settlement set_{n}"),
            problem: "fee and net are not platform_fee(16.49 USD, 1%)".into(),
            expected: "fee 0.16 + net 16.33".into(),
            found: "fee 0.17 + net 16.32".into(),
            invoice_id: None,
            settlement_id: None,
            merchant_id: None,
            currency: Some("USD".into()),
            event_id: None,
        };
        let text = human(&report(
            vec![check("settlements", 0, 0), check("amounts", 7, 0)],
            (1..=7).map(violation).collect(),
        ));
        assert!(text.contains("FAIL  amounts      10 things of amounts; 7 VIOLATION(S) (3 ms)\n"));
        assert!(text.contains(
            "      - settlement set_1: fee and net are not platform_fee(16.49 USD, 1%): expected fee 0.16 + net \
             16.33, found fee 0.17 + net 16.32\n"
        ));
        assert!(!text.contains("settlement set_6"), "five per check");
        assert!(text.contains("… and 2 more"));
        assert!(text.ends_with(
            "FAIL: 7 violation(s) in 1 check(s), 42 ms; first: amounts: settlement set_1: fee and net are not \
             platform_fee(16.49 USD, 1%): expected fee 0.16 + net 16.33, found fee 0.17 + net 16.32\n"
        ));
    }

    #[test]
    fn flags_parse_with_sensible_defaults() {
        let cli = Cli::try_parse_from(["verify"]).unwrap();
        assert_eq!(cli.args.grace, Duration::from_secs(30));
        assert_eq!(cli.args.topic, "crypto-checkout.domain-events");
        assert_eq!(cli.args.projections_group, "read-model-projections");
        assert_eq!(cli.args.settlement_group, "settlement-processing");
        let cli = Cli::try_parse_from(["verify", "--grace", "0", "--json"]).unwrap();
        assert_eq!(cli.args.grace, Duration::ZERO);
        assert!(Cli::try_parse_from(["verify", "--grace", "soon"]).is_err());
    }

    #[test]
    fn it_cannot_check_without_a_database() {
        let cli = Cli::try_parse_from(["verify", "--bootstrap-servers", "127.0.0.1:1", "--json"])
            .unwrap();
        let mut args = cli.args;
        args.database_url = None;
        let (mut stdin, mut stdout, mut stderr) = (&b""[..], Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        let error = args.run(&mut io).unwrap_err();
        assert!(format!("{error:#}").contains("DATABASE_URL is not set"));
        let json: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checked"], false);
    }
}
