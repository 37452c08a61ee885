//! `analytics`: see [`analytics::Analytics`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<analytics::Analytics>()
}
