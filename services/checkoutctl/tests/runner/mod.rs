//! The real `checkoutctl` binary, run as an operator would: arguments and environment in, exit code and output
//! out. Shared by the CLI integration tests.

#![allow(dead_code)] // each test binary uses a part

use std::process::Command;

/// Runs `checkoutctl ARGS` with `env` set (a `None` value removes the variable); returns (exit code, stdout,
/// stderr).
pub fn checkoutctl(args: &[&str], env: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_checkoutctl"));
    command.args(args);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command.output().expect("run checkoutctl");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8 output");
    (
        output.status.code().expect("an exit code"),
        text(output.stdout),
        text(output.stderr),
    )
}

/// Runs `checkoutctl ARGS` against the test broker and `database_url`.
pub fn on_stack(database_url: &str, args: &[&str]) -> (i32, String, String) {
    checkoutctl(
        args,
        &[
            (
                "KAFKA_BOOTSTRAP_SERVERS",
                Some(testkit::infra().bootstrap_servers.as_str()),
            ),
            ("DATABASE_URL", Some(database_url)),
        ],
    )
}
