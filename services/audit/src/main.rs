//! `audit`: see [`audit::Audit`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<audit::Audit>()
}
