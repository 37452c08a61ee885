// `sqlx::migrate!` embeds the migrations at compile time but does not tell cargo to watch the directory, so a
// new migration file would not rebuild the crate (and binaries would carry a stale schema).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
