//! `notifications`: see [`notifications::Notifications`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<notifications::Notifications>()
}
