//! `payments`: see [`payments::Payments`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<payments::Payments>()
}
