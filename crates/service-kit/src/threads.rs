//! The async runtime every consumer service runs on, and the scheduling class of its threads (decision 0054).
//!
//! A consumer's one serial stage is its poll thread: it takes every record from librdkafka and hands it to a lane.
//! Everything else (the lanes' handlers and database round trips, the operations server) runs on the async
//! runtime's workers, which sleep and wake thousands of times a second. Linux lets a waking thread of the normal
//! class preempt the running one, so on a busy machine each wake-up of a worker took the poll thread off its core
//! (a scheduler trace of a 1M-record mode (b) bench round: 3,066 preemptions of the poll thread, 2,097 of them by
//! the process's own workers).
//!
//! Guarantees:
//! - [`runtime`] builds a multi-threaded tokio runtime whose worker and blocking threads run in `SCHED_BATCH`:
//!   the same share of CPU and the same nice value as before, but a waking worker does not preempt a running
//!   thread; it waits for a free core or the scheduler's tick (milliseconds, and only when every core is busy).
//! - Only threads in the normal class are moved: a class an operator chose (`chrt`, systemd's
//!   `CPUSchedulingPolicy`) is left alone, and so is the calling thread's when [`to_normal`] finds it in neither.
//! - [`to_normal`] puts a batch thread back in the normal class; the consumer runtime's poll thread does that
//!   first, so it — and librdkafka's threads, which it creates and which inherit its class — is preempted only by
//!   other normal threads. [`with_class`] runs a closure in a class and restores the previous one (the runtime
//!   creates mode (a)'s transactional producers that way on a blocking thread). Threads inherit the class of the
//!   thread that creates them.
//! - Switching between these two classes needs no privilege. Where it fails (another OS, a seccomp profile that
//!   forbids it, musl, which does not implement the call), the thread keeps its class and nothing else changes:
//!   [`runtime`] reports the first failure once on stderr (it may run before tracing is installed), the poll
//!   thread logs a warning each time it starts. Scheduling is a matter of speed here, never of correctness.

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
/// runtime's workers between classes between two runs; a thread id that was reused names another thread, so
/// only ids read from this process's `/proc/self/task` a moment before are safe to pass.
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
        // SAFETY: a plain query by thread id, no memory passed.
        let policy = unsafe { libc::sched_getscheduler(tid) };
        // The reset-on-fork flag may come or'ed into the policy.
        match policy & !libc::SCHED_RESET_ON_FORK {
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

/// Moves the calling thread from the batch to the normal class; a thread in any other class is left alone.
pub fn to_normal() -> io::Result<()> {
    match current() {
        Some(Class::Batch) => set_current(Class::Normal),
        _ => Ok(()),
    }
}

/// Runs `f` with the calling thread in `class` (when it is in one of ours), then puts it back in the class it
/// had. A failure to switch runs `f` in the thread's class anyway.
pub fn with_class<T>(class: Class, f: impl FnOnce() -> T) -> T {
    let before = current();
    let switched = before.is_some_and(|b| b != class) && set_current(class).is_ok();
    let result = f();
    if switched && let Some(before) = before {
        let _ = set_current(before);
    }
    result
}

/// A multi-threaded tokio runtime (all drivers enabled, one worker per core) whose threads run in
/// [`Class::Batch`] (those that start in the normal class). A thread that cannot change class keeps its own, and
/// the first such failure is reported once on stderr (tracing may not be installed yet when threads start).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            if current() != Some(Class::Normal) {
                return;
            }
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
                    to_normal().unwrap();
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

        // A closure in another class, and the class restored after it.
        let (inside, after) = runtime.block_on(async {
            tokio::task::spawn_blocking(|| (with_class(Class::Normal, current), current()))
                .await
                .unwrap()
        });
        assert_eq!(inside, Some(Class::Normal));
        assert_eq!(after, Some(Class::Batch));
    }
}
