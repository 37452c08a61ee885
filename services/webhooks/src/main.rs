//! `webhooks`: see [`webhooks::Webhooks`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<webhooks::Webhooks>()
}
