//! `projections`: see [`projections::Projections`] and `runtime::service::main`.

fn main() -> std::process::ExitCode {
    runtime::service::main::<projections::Projections>()
}
