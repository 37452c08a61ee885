//! `dev-sandbox`: the notification providers of the local stack (`make run`, docker-compose), on loopback by
//! default — an SMTP server that keeps every message as `<dir>/mail/<time>-<n>.eml`, and an SMS API in Twilio's
//! shape (`POST /2010-04-01/Accounts/{sid}/Messages.json` → 201 with a `sid`) that keeps every request as
//! `<dir>/sms/<time>-<n>.json`. Development only: no TLS, any credentials accepted.
//!
//! ```text
//! dev-sandbox [--dir .dev] [--smtp 127.0.0.1:2525] [--sms 127.0.0.1:2526]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut dir = PathBuf::from(".dev");
    let mut smtp: SocketAddr = "127.0.0.1:2525".parse().expect("an address");
    let mut sms: SocketAddr = "127.0.0.1:2526".parse().expect("an address");
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
            "-h" | "--help" => {
                println!("dev-sandbox [--dir .dev] [--smtp 127.0.0.1:2525] [--sms 127.0.0.1:2526]");
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
        println!(
            "SMTP on {} → {}/mail/*.eml; SMS API on http://{} → {}/sms/*.json",
            mail.addr,
            dir.display(),
            texts.addr,
            dir.display()
        );
        // Ctrl-C, or SIGTERM (make run's stop; its default action ends the process): every file is already
        // written, nothing to flush.
        let _ = tokio::signal::ctrl_c().await;
    });
    std::process::ExitCode::SUCCESS
}
