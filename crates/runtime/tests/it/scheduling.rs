//! The scheduling classes of a consumer's threads on the runtime the services run on (decision 0054): the async
//! runtime's workers in the batch class, the poll thread — the one serial stage — back in the normal class.

use std::time::Duration;

use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS};
use runtime::{Consumer, GroupPolicy};
use service_kit::threads::{self, Class};

use crate::helpers::*;

/// Kernel ids of this process's threads whose name (`comm`, at most 15 bytes) is `name`.
fn threads_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn on_the_services_runtime_the_poll_thread_runs_in_the_normal_class_and_the_workers_in_batch() {
    let runtime = threads::runtime().expect("the services' runtime");
    runtime.block_on(async {
        let topic = topic("sched", 1).await;
        produce(&topic, &[rec(0, "inv_1", "v1")]).await;
        // The poll thread is named `poll-<group>`, cut to 15 bytes by the kernel: a short group keeps it unique.
        let group = testkit::unique_name("s");
        let policy = GroupPolicy::resolve(
            READ_MODEL_PROJECTIONS,
            &PolicyOverrides {
                group: Some(group.clone()),
                topics: Some(vec![topic.clone()]),
                ..Default::default()
            },
        )
        .expect("valid policy");
        let handler = Scripted::ok();
        let consumer = Consumer::builder(policy, kafka())
            .handler(handler.clone())
            .database(database().await)
            .options(fast_options())
            .build()
            .unwrap();
        let running = Running::start(consumer);
        let calls = handler.calls.clone();
        wait_for(Duration::from_secs(60), "the record handled", move || {
            !calls.lock().unwrap().is_empty()
        })
        .await;

        let poll_name: String = format!("poll-{group}").chars().take(15).collect();
        let poll = threads_named(&poll_name);
        assert_eq!(poll.len(), 1, "one thread named {poll_name}: {poll:?}");
        assert_eq!(
            threads::of_thread(poll[0]),
            Some(Class::Normal),
            "the poll thread was started from a batch worker and must take the normal class back"
        );
        // (Other tests' runtimes name their workers alike: this one's are asked from one of its tasks.)
        let worker = tokio::spawn(async { threads::current() }).await.unwrap();
        assert_eq!(
            worker,
            Some(Class::Batch),
            "a worker of the services' runtime"
        );
        running.stop().await;
    });
}
