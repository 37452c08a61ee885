//! `settlement`: see [`settlement::Settlement`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<settlement::Settlement>()
}
