//! jemalloc is the allocator of every binary that links the service kit (all services, `checkoutctl`, the
//! tests and benchmarks), instead of glibc's malloc (decision 0046) — for the C code linked into them as well,
//! librdkafka first (decision 0049: the build is unprefixed, so jemalloc's `malloc`, `calloc` and `free` are the
//! process's).
//!
//! Why: measured in `make bench-memory` (1M-event backlog, every consumer at once, 2 cores), glibc's per-thread
//! arenas made the consumers about half as fast (librdkafka's threads allocate every fetched record, tokio's
//! workers free them) and kept freed memory resident. With jemalloc the publisher drained the same backlog in 31 s
//! instead of 63 s and the consumers committed 1.6–2× as many records in the same minute. librdkafka's own
//! allocations (one per fetched message) were still glibc's until 0049: a quarter of its fetch thread's time.
//!
//! Guarantees: freed memory goes back to the system within about a second (`dirty_decay_ms:1000`,
//! `muzzy_decay_ms:0`, purged by jemalloc's background thread), so resident memory follows what the runtime's
//! buffers hold (`runtime::ConsumerOptions`) rather than its past peaks. Operators can override the settings with
//! jemalloc's `MALLOC_CONF` environment variable.

use std::ffi::c_char;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options: a C string pointer under the name jemalloc reads at start-up.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: the pointer is to a `'static` C string literal, never written.
unsafe impl Sync for MallocConf {}

#[unsafe(export_name = "malloc_conf")]
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

    /// librdkafka's C allocations go through jemalloc too (the unprefixed build, decision 0049): jemalloc knows the
    /// arena of a block librdkafka allocated. With glibc's `malloc` behind librdkafka the lookup fails (`EINVAL`).
    #[test]
    fn librdkafka_allocates_with_jemalloc() {
        use rdkafka::bindings::{
            rd_kafka_topic_partition_list_destroy, rd_kafka_topic_partition_list_new,
        };
        let list = unsafe { rd_kafka_topic_partition_list_new(4) };
        assert!(!list.is_null());
        // The list's elements array is a separate `rd_calloc` inside librdkafka.
        let mut block = unsafe { (*list).elems }.cast::<std::ffi::c_void>();
        let mut arena: u32 = 0;
        let mut len = std::mem::size_of::<u32>();
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"arenas.lookup".as_ptr(),
                (&mut arena as *mut u32).cast(),
                &mut len,
                (&mut block as *mut *mut std::ffi::c_void).cast(),
                std::mem::size_of::<*mut std::ffi::c_void>(),
            )
        };
        unsafe { rd_kafka_topic_partition_list_destroy(list) };
        assert_eq!(rc, 0, "jemalloc does not own librdkafka's allocation");
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
