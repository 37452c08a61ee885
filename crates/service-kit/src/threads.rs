//! The async runtime every consumer service runs on, and the scheduling class of its threads (decision 0054).
//!
//! A consumer's one serial stage is its poll thread: it takes every record from librdkafka and hands it to a lane.
//! Everything else (the lanes' handlers and database round trips, the operations server) runs on the async
//! runtime's workers, which sleep and wake thousands of times a second. Linux lets a waking thread of the normal
//! class preempt the running one, so on a busy machine each wake-up of a worker took the poll thread off its core
//! (`make bench-runtime`, mode (b): ~2,100 preemptions of the poll thread by the process's own workers per 1M
//! records, ~0.3 s of it waiting for a core).
//!
//! Guarantees:
//! - [`runtime`] builds a multi-threaded tokio runtime whose worker and blocking threads run in `SCHED_BATCH`:
//!   the same share of CPU and the same nice value as before, but a waking worker does not preempt a running
//!   thread; it waits for a free core or the scheduler's tick (milliseconds, and only when every core is busy).
//! - [`Class::Normal`] puts a thread back in the normal class; the consumer runtime's poll thread does that first,
//!   so it (and librdkafka's threads, which it creates and which inherit its class) is preempted only by other
//!   normal threads. Threads inherit the class of the thread that creates them.
//! - Switching between these two classes needs no privilege. Where it fails (another OS, a seccomp profile that
//!   forbids it), the runtime still builds and the thread keeps its class: the failure is returned to the caller,
//!   which logs it. Scheduling is a matter of speed here, never of correctness.

use std::io;

/// A Linux scheduling class a thread of ours may take (both need no privilege; nice values are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_OTHER`: a waking thread may preempt the running one.
    Normal,
    /// `SCHED_BATCH`: the same CPU share, but a waking thread never preempts; the tick decides.
    Batch,
}

impl Class {
    #[cfg(target_os = "linux")]
    fn policy(self) -> libc::c_int {
        match self {
            Class::Normal => libc::SCHED_OTHER,
            Class::Batch => libc::SCHED_BATCH,
        }
    }
}

/// Puts the calling thread in `class`.
pub fn set_current(class: Class) -> io::Result<()> {
    set_thread(0, class)
}

/// Puts the thread with kernel id `tid` (0: the calling thread) in `class`. The bench uses it to switch the
/// runtime's workers between classes between two runs.
pub fn set_thread(tid: u32, class: Class) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = libc::pid_t::try_from(tid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "no such thread id"))?;
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is the calling thread.
        let rc = unsafe { libc::sched_setscheduler(tid, class.policy(), &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, class);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "scheduling classes are set on Linux only",
        ))
    }
}

/// The calling thread's class, or `None` when it is neither of ours (a real-time class) or cannot be read.
pub fn current() -> Option<Class> {
    of_thread(0)
}

/// The class of the thread with kernel id `tid` (0: the calling thread), or `None` when it is neither of ours or
/// cannot be read (no such thread).
pub fn of_thread(tid: u32) -> Option<Class> {
    #[cfg(target_os = "linux")]
    {
        let tid = libc::pid_t::try_from(tid).ok()?;
        // SAFETY: a plain query by thread id; a stale id only makes it fail.
        match unsafe { libc::sched_getscheduler(tid) } {
            libc::SCHED_OTHER => Some(Class::Normal),
            libc::SCHED_BATCH => Some(Class::Batch),
            _ => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

/// A multi-threaded tokio runtime (all drivers enabled, one worker per core) whose threads run in
/// [`Class::Batch`]. A thread that cannot change class keeps running in its own, and the first such failure is
/// reported once on stderr (tracing may not be installed yet when threads start).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            if let Err(err) = set_current(Class::Batch) {
                REPORTED.call_once(|| {
                    eprintln!("async runtime threads keep the normal scheduling class: {err}")
                });
            }
        })
        .build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_threads_run_in_batch_and_a_thread_goes_back_to_normal() {
        let runtime = runtime().unwrap();
        let (worker, blocking) = runtime.block_on(async {
            let worker = tokio::spawn(async { current() }).await.unwrap();
            let blocking = tokio::task::spawn_blocking(current).await.unwrap();
            (worker, blocking)
        });
        assert_eq!(worker, Some(Class::Batch), "a worker thread");
        assert_eq!(blocking, Some(Class::Batch), "a blocking thread");

        // A thread started from a worker inherits its class; the poll thread's first step puts it back.
        let (inherited, restored) = runtime.block_on(async {
            tokio::spawn(async {
                std::thread::spawn(|| {
                    let inherited = current();
                    set_current(Class::Normal).unwrap();
                    (inherited, current())
                })
                .join()
                .unwrap()
            })
            .await
            .unwrap()
        });
        assert_eq!(inherited, Some(Class::Batch));
        assert_eq!(restored, Some(Class::Normal));
    }
}
