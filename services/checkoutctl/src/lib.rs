//! `checkoutctl`: the operator command line of the crypto checkout event bus, as a library.
//!
//! Guarantees: every command group is a clap `Args` type implementing [`Run`], and writes only through the
//! [`Io`] it is given, so tests drive commands in memory exactly as the binary does. Exit codes are uniform:
//! [`exit::OK`], [`exit::INVALID`] when the input broke a contract, [`exit::FAILURE`] when the command could
//! not do its job (unreadable file, bad arguments).
//!
//! Adding a command group (say `topics`): write `src/topics_cmd.rs` with a `TopicsArgs` implementing
//! [`Run`], declare `pub mod topics_cmd;` here, and add one line to the `subcommands!` list in `main.rs`.

use std::io::{BufRead, Write};
use std::process::ExitCode;

pub mod analytics_cmd;
pub mod audit_cmd;
pub mod backup;
pub mod backup_format;
pub mod console_cmd;
pub mod db_cmd;
pub mod dlq_cmd;
pub mod dlq_replay;
pub mod dr_cmd;
pub mod events_cmd;
pub mod groups_cmd;
pub mod groups_reset;
pub mod invoice_cmd;
pub mod live;
pub mod merchant_cmd;
pub mod notifications_cmd;
pub mod outbox_cmd;
pub mod projections_cmd;
pub mod scanner_cmd;
pub mod settlement_cmd;
pub mod simulate;
pub mod simulate_cmd;
pub mod status_cmd;
pub mod topics_cmd;
pub mod verify;
pub mod verify_cmd;
pub mod webhooks_cmd;

/// Exit codes shared by all commands.
pub mod exit {
    /// Everything was fine.
    pub const OK: u8 = 0;
    /// The input was read but is not valid (e.g. an event breaks the contract).
    pub const INVALID: u8 = 1;
    /// The command could not run (unreadable input, bad arguments); clap uses 2 for usage errors too.
    pub const FAILURE: u8 = 2;
}

/// Runs an async command body on a runtime of its own (commands are short-lived; one thread is plenty).
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// Connects to the database of `--database-url` / `DATABASE_URL`, or says how to set it.
pub async fn connect(database_url: Option<String>) -> anyhow::Result<sqlx::PgConnection> {
    use anyhow::Context;
    use sqlx::Connection;
    let url =
        database_url.context("DATABASE_URL is not set (pass --database-url or source .dev/env)")?;
    sqlx::PgConnection::connect(&url)
        .await
        .context("connecting to PostgreSQL")
}

/// A Kafka client configuration for `--bootstrap-servers` / `KAFKA_BOOTSTRAP_SERVERS`, with the client properties
/// a service would use (`CHECKOUT__KAFKA__CLIENT__…`: SASL, TLS), or says how to set it.
pub fn kafka_client_config(bootstrap: Option<String>) -> anyhow::Result<rdkafka::ClientConfig> {
    use anyhow::Context;
    let bootstrap = bootstrap.context(
        "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-servers or source .dev/env)",
    )?;
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", &bootstrap);
    for (key, value) in service_kit::config::client_properties_from(std::env::vars())
        .context("CHECKOUT__KAFKA__CLIENT__* properties")?
        .iter()
    {
        config.set(key, value);
    }
    Ok(config)
}

/// The standard streams, injectable for tests.
pub struct Io<'a> {
    /// Standard input.
    pub stdin: &'a mut dyn BufRead,
    /// Standard output: results only, so it can be piped.
    pub stdout: &'a mut dyn Write,
    /// Standard error: diagnostics and summaries.
    pub stderr: &'a mut dyn Write,
}

/// A command group.
pub trait Run {
    /// Runs the command; `Err` means it could not do its job (exit code [`exit::FAILURE`]).
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8>;
}

/// Test support: parses command group `A` from `args` as the binary would (under the name `name`), runs it in
/// memory with an empty stdin, and returns its exit code, standard output and standard error.
#[cfg(test)]
pub(crate) fn run_in_memory<A: clap::Args + clap::FromArgMatches + Run>(
    name: &str,
    args: impl IntoIterator<Item = impl Into<String>>,
) -> (u8, String, String) {
    #[derive(clap::Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once(name.to_string()).chain(args.into_iter().map(Into::into));
    let cli = <Cli<A> as clap::Parser>::try_parse_from(argv).unwrap();
    let (mut stdin, mut stdout, mut stderr) = (&b""[..], Vec::new(), Vec::new());
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    let code = cli.args.run(&mut io).unwrap();
    (
        code,
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Runs a parsed command against the process's standard streams and turns the outcome into an exit code;
/// failures are printed with their whole cause chain.
pub fn run_main(command: impl Run) -> ExitCode {
    let stdin = std::io::stdin();
    let (mut stdin, mut stdout, mut stderr) = (
        stdin.lock(),
        std::io::stdout().lock(),
        std::io::stderr().lock(),
    );
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    match command.run(&mut io) {
        Ok(code) => ExitCode::from(code),
        // `checkoutctl … | head` closes the pipe early; that is the reader's choice, not a failure.
        Err(error) if is_broken_pipe(&error) => ExitCode::from(exit::OK),
        Err(error) => {
            // Nothing more useful to do if stderr itself is gone.
            let _ = writeln!(io.stderr, "error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Declares the top-level command list of `main.rs`: one line per command group, `Name(ArgsType)`. The
/// group's help text comes from the doc comment (or `#[command(about)]`) of its `Args` type.
#[macro_export]
macro_rules! subcommands {
    ($($(#[$meta:meta])* $variant:ident($args:ty)),* $(,)?) => {
        /// Operate the crypto checkout event bus.
        #[derive(Debug, clap::Parser)]
        #[command(name = "checkoutctl", version)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }

        #[derive(Debug, clap::Subcommand)]
        enum Command {
            $($(#[$meta])* $variant($args),)*
        }

        impl $crate::Run for Command {
            fn run(self, io: &mut $crate::Io<'_>) -> anyhow::Result<u8> {
                match self {
                    $(Command::$variant(args) => $crate::Run::run(args, io),)*
                }
            }
        }
    };
}
