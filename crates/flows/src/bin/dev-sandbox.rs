//! `dev-sandbox`: the notification providers of the local stack (`make run`, docker-compose), on loopback by
//! default — an SMTP server that keeps every message as `<dir>/mail/<time>-<n>.eml`, and an SMS API in Twilio's
//! shape (`POST /2010-04-01/Accounts/{sid}/Messages.json` → 201 with a `sid`) that keeps every request as
//! `<dir>/sms/<time>-<n>.json` — and the merchants' webhook endpoints of `checkoutctl simulate`: an HTTP receiver
//! whose first path segment under `/hooks/` says how it answers (kept in memory only, the last 10 000 requests):
//!
//! | path | answer |
//! | --- | --- |
//! | `/hooks/ok/…` | 200 |
//! | `/hooks/flaky/…` | 503 to the first two attempts of each `webhook-id`, then 200 |
//! | `/hooks/hang/…` | holds the request 30 s without answering (the webhooks service times out at 15 s) |
//! | `/hooks/down/…` | 500, always (retries, then the dead-letter topic) |
//!
//! Development only: no TLS, any credentials accepted.
//!
//! ```text
//! dev-sandbox [--dir .dev] [--smtp 127.0.0.1:2525] [--sms 127.0.0.1:2526] [--webhooks 127.0.0.1:2527]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flows::receiver::Behaviour;

fn main() -> std::process::ExitCode {
    let mut dir = PathBuf::from(".dev");
    let mut smtp: SocketAddr = "127.0.0.1:2525".parse().expect("an address");
    let mut sms: SocketAddr = "127.0.0.1:2526".parse().expect("an address");
    let mut hooks: SocketAddr = "127.0.0.1:2527".parse().expect("an address");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        let parsed = match arg.as_str() {
            "--dir" => {
                dir = PathBuf::from(value());
                Ok(())
            }
            "--smtp" => value().parse().map(|a| smtp = a),
            "--sms" => value().parse().map(|a| sms = a),
            "--webhooks" => value().parse().map(|a| hooks = a),
            "-h" | "--help" => {
                println!(
                    "dev-sandbox [--dir .dev] [--smtp 127.0.0.1:2525] [--sms 127.0.0.1:2526] \
                     [--webhooks 127.0.0.1:2527]"
                );
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("dev-sandbox: unknown argument {other}");
                return std::process::ExitCode::from(2);
            }
        };
        if let Err(e) = parsed {
            eprintln!("dev-sandbox: {arg}: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async move {
        let mail = flows::smtp::SmtpSink::start_on(smtp, Some(dir.join("mail"))).await;
        let texts = flows::receiver::Receiver::start_on(sms, Some(dir.join("sms"))).await;
        let webhooks = flows::receiver::Receiver::start_on(hooks, None).await;
        webhooks.keep_at_most(10_000);
        webhooks.set_prefix("hooks/ok/", Behaviour::Ok);
        webhooks.set_prefix(
            "hooks/flaky/",
            Behaviour::FailFirst { n: 2, status: 503 },
        );
        webhooks.set_prefix("hooks/hang/", Behaviour::Hang(Duration::from_secs(30)));
        webhooks.set_prefix("hooks/down/", Behaviour::Always(500));
        println!(
            "SMTP on {} → {}/mail/*.eml; SMS API on http://{} → {}/sms/*.json; webhook endpoints on http://{}/hooks/{{ok,flaky,hang,down}}/…",
            mail.addr,
            dir.display(),
            texts.addr,
            dir.display(),
            webhooks.addr
        );
        // Ctrl-C, or SIGTERM (make run's stop; its default action ends the process): every file is already
        // written, nothing to flush.
        let _ = tokio::signal::ctrl_c().await;
    });
    std::process::ExitCode::SUCCESS
}
