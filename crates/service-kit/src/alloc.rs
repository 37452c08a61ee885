//! jemalloc is the global allocator of every binary that links the service kit (all services, `checkoutctl`, the
//! tests and benchmarks), instead of glibc's malloc (decision 0046).
//!
//! Why: measured in `make bench-memory` (1M-event backlog, every consumer at once, 2 cores), glibc's per-thread
//! arenas made the consumers about half as fast (librdkafka's threads allocate every fetched record, tokio's
//! workers free them) and kept freed memory resident. With jemalloc the publisher drained the same backlog in 31 s
//! instead of 63 s and the consumers committed 1.6–2× as many records in the same minute.
//!
//! Guarantees: freed memory goes back to the system within about a second (`dirty_decay_ms:1000`,
//! `muzzy_decay_ms:0`, purged by jemalloc's background thread), so resident memory follows what the runtime's
//! buffers hold (`runtime::ConsumerOptions`) rather than its past peaks. Operators can override the settings with
//! the `_RJEM_MALLOC_CONF` environment variable (jemalloc's `MALLOC_CONF`, with this build's symbol prefix).

use std::ffi::c_char;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options: a C string pointer under the (prefixed) name jemalloc reads at start-up.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: the pointer is to a `'static` C string literal, never written.
unsafe impl Sync for MallocConf {}

#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

#[cfg(test)]
mod tests {
    /// The options took: jemalloc reports the decay it runs with (the symbol is read, not ignored).
    #[test]
    fn jemalloc_runs_with_our_options() {
        let decay: isize = unsafe { mallctl_read(c"opt.dirty_decay_ms") };
        assert_eq!(decay, 1000);
        let background: bool = unsafe { mallctl_read(c"opt.background_thread") };
        assert!(background);
    }

    /// `mallctl` read of a plain value.
    unsafe fn mallctl_read<T: Copy + Default>(name: &std::ffi::CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "mallctl {name:?}");
        value
    }
}
