//! Rebalances, restarts and kills that used to lose or stall work: partitions left unowned after a member died,
//! a killed transactional member freezing its partitions, mode (b) starting from Kafka's informational offset,
//! retry budgets reset by a restart, and a consumer started without its dead-letter topic.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use runtime::policy::{PolicyOverrides, READ_MODEL_PROJECTIONS, SETTLEMENT_PROCESSING};
use runtime::{Backoff, Consumer, Guarantee, HandlerError, RetryPolicy, RuntimeError};

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

fn args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .collect()
}

/// Busy threads on every core until dropped: the machine is loaded while the group rebalances.
struct CpuLoad(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl CpuLoad {
    fn start() -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        CpuLoad(stop, threads)
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// Whether `members` (the coordinator's view) are `live` members owning every partition `0..partitions` of
/// `topic` exactly once.
fn owned_by(group: &str, topic: &str, partitions: i32, live: usize) -> Result<(), String> {
    let members = group_members(group);
    let mut owned: Vec<i32> = members
        .values()
        .flatten()
        .filter(|(t, _)| t == topic)
        .map(|(_, p)| *p)
        .collect();
    owned.sort_unstable();
    let all: Vec<i32> = (0..partitions).collect();
    if members.len() == live && owned == all {
        Ok(())
    } else {
        Err(format!(
            "{} members, partitions owned {owned:?}",
            members.len()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_each_of_20_sigkills_under_cpu_load_the_live_members_own_every_partition() {
    const P: i32 = 12;
    const SESSION: Duration = Duration::from_secs(6);
    // The testbed drains for at most 5 s; the bound is session timeout + drain + 5 s.
    const BOUND: Duration = Duration::from_secs(6 + 5 + 5);
    let db = testkit::fresh_database().await;
    let input = topic("churn-in", P).await;
    let output = topic("churn-out", P).await;
    let group = testkit::unique_name("churn");
    let bed = || {
        Testbed::spawn(&args(&[
            ("group", &group),
            ("input", &input),
            ("output", &output),
            ("guarantee", "at-least-once"),
            ("handler", "transform"),
            ("database-url", &db.url),
            ("session-timeout", "6s"),
            ("heartbeat-interval", "1s"),
            ("commit-interval", "200ms"),
        ]))
    };
    let mut beds: Vec<Testbed> = (0..3).map(|_| bed()).collect();
    for b in &beds {
        b.wait_ready_async(MINUTE).await;
    }
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "3 members owning every partition", move || {
        owned_by(&g, &t, P, 3).is_ok()
    })
    .await;

    // Records keep flowing, so lanes are busy and commits are in flight when members die.
    let feeder = Feeder::start(&input, 200, Duration::from_millis(100));
    let load = CpuLoad::start();
    let mut worst = Duration::ZERO;
    for kill in 0..20 {
        let victim = rand::rng().random_range(0..beds.len());
        beds.remove(victim).kill();
        let killed = Instant::now();
        let (g, t) = (group.clone(), input.clone());
        let owned = poll_until(killed, BOUND, Duration::from_millis(250), move || {
            owned_by(&g, &t, P, 2)
        })
        .await;
        if let Err(last) = owned {
            panic!(
                "kill {kill}: the 2 live members did not own every partition within {BOUND:?} (session \
                 {SESSION:?}); last seen: {last}"
            );
        }
        worst = worst.max(killed.elapsed());
        beds.push(bed());
        let (g, t) = (group.clone(), input.clone());
        wait_for(MINUTE, "the replacement to join and share", move || {
            owned_by(&g, &t, P, 3).is_ok()
        })
        .await;
    }
    drop(load);
    let produced = feeder.stop().await;
    let ends = end_offsets(&input, P);
    let (g, t) = (group.clone(), input.clone());
    let caught_up = poll_until(
        Instant::now(),
        MINUTE,
        Duration::from_millis(100),
        move || {
            let now = committed(&g, &t, P);
            if now == ends {
                Ok(())
            } else {
                Err(format!("committed {now:?}, ends {ends:?}"))
            }
        },
    )
    .await;
    if let Err(state) = caught_up {
        let members = group_members(&group);
        panic!("every input was not committed within {MINUTE:?}: {state}; members {members:?}");
    }
    for b in beds {
        blocking(move || b.terminate()).await;
    }
    let out = blocking(move || {
        read_topic(
            &output,
            "read_committed",
            produced,
            Duration::from_secs(2),
            MINUTE,
        )
    })
    .await;
    let seen: BTreeSet<String> = out.iter().map(value).collect();
    let missing: Vec<usize> = (0..produced)
        .filter(|i| !seen.contains(&i.to_string()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost records (first 10): {missing:?}");
    println!("20 SIGKILLs under CPU load; slowest takeover {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_transactional_member_does_not_freeze_its_partitions() {
    // Mode (a) with the default options (no instance id, no static membership): the survivor must take over the
    // killed member's partitions within 15 s, not after the killed transaction's timeout (60 s).
    const P: i32 = 4;
    let db = testkit::fresh_database().await;
    let input = topic("freeze-in", P).await;
    let output = topic("freeze-out", P).await;
    let group = testkit::unique_name("freeze");
    let bed = || {
        Testbed::spawn(&args(&[
            ("group", &group),
            ("input", &input),
            ("output", &output),
            ("guarantee", "exactly-once-kafka"),
            ("handler", "transform"),
            ("database-url", &db.url),
            ("session-timeout", "6s"),
            ("heartbeat-interval", "1s"),
        ]))
    };
    let (survivor, victim) = (bed(), bed());
    survivor.wait_ready_async(MINUTE).await;
    victim.wait_ready_async(MINUTE).await;
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "2 members sharing the partitions", move || {
        owned_by(&g, &t, P, 2).is_ok()
    })
    .await;
    // Records keep flowing through the kill, so the victim dies inside an open transaction that holds offsets
    // (records produced only before the kill may all be done by then, and an idle member's transaction is empty).
    let feeder = Feeder::start(&input, 50, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(3)).await;
    victim.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let produced = feeder.stop().await;
    let ends = end_offsets(&input, P);
    let (g, t) = (group.clone(), input.clone());
    let caught_up = poll_until(
        killed,
        Duration::from_secs(15),
        Duration::from_millis(200),
        move || match committed_or_unstable(&g, &t, P) {
            Some(c) if c == ends => Ok(()),
            other => Err(format!("committed {other:?}, ends {ends:?}")),
        },
    )
    .await;
    if let Err(last) = caught_up {
        panic!("the survivor did not commit the killed member's partitions within 15 s: {last}");
    }
    println!(
        "the survivor caught up {:?} after the kill",
        killed.elapsed()
    );
    blocking(move || survivor.terminate()).await;
    let out = blocking(move || {
        read_topic(
            &output,
            "read_committed",
            produced,
            Duration::from_secs(2),
            MINUTE,
        )
    })
    .await;
    let values: Vec<String> = out.iter().map(value).collect();
    let distinct: BTreeSet<&String> = values.iter().collect();
    assert_eq!(values.len(), produced, "exactly once: no duplicate output");
    assert_eq!(distinct.len(), produced, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_b_without_a_stored_position_starts_at_the_beginning_not_at_kafkas_offset() {
    let db = testkit::fresh_database().await;
    sqlx::query(
        "CREATE TABLE sink (value text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let topic = topic("b-start", 1).await;
    produce(
        &topic,
        &(0..10)
            .map(|i| rec(0, "k", &format!("v{i}")))
            .collect::<Vec<_>>(),
    )
    .await;
    let policy = policy(SETTLEMENT_PROCESSING, &topic, PolicyOverrides::default());
    assert_eq!(policy.guarantee, Guarantee::ExactlyOnceDb);
    // Kafka holds an (informational) offset of 6 for the group, the database none: the database is the truth.
    let (g, t) = (policy.group.clone(), topic.clone());
    blocking(move || commit_offset(&g, &t, 0, 6)).await;
    let running = Running::start(
        Consumer::builder(policy, kafka())
            .handler(Scripted::ok().with_db_sink())
            .database(db.pool.clone())
            .options(fast_options())
            .build()
            .unwrap(),
    );
    let pool = db.pool.clone();
    eventually_async(MINUTE, "all 10 records in the sink", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sink")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 10
        }
    })
    .await;
    running.stop().await;
    let offsets: Vec<i64> = sqlx::query_scalar("SELECT \"offset\" FROM sink ORDER BY \"offset\"")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_attempts_survive_a_restart_and_the_dlq_counts_them_all() {
    let db = testkit::fresh_database().await;
    let topic = topic("attempts", 1).await;
    produce(&topic, &[rec(0, "k", "bad"), rec(0, "k", "after")]).await;
    // 3 retries 400 ms apart: 4 attempts in all, whoever makes them.
    let overrides = PolicyOverrides {
        retry: Some(RetryPolicy {
            max_retries: 3,
            backoff: Backoff::Fixed {
                interval: Duration::from_millis(400),
            },
        }),
        ..Default::default()
    };
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, overrides);
    let group = policy.group.clone();
    let handler = Scripted::new(|r, _| match r.value.as_deref() {
        Some(b"bad") => Err(HandlerError::business("unknown invoice")),
        _ => Ok(()),
    });
    let start = || {
        Running::start(
            Consumer::builder(policy.clone(), kafka())
                .handler(handler.clone())
                .database(db.pool.clone())
                .options(fast_options())
                .build()
                .unwrap(),
        )
    };
    // First life: two attempts, then a restart (a deployment, a rebalance).
    let first = start();
    let h = handler.clone();
    wait_for(MINUTE, "two attempts", move || {
        h.calls_for("bad").len() >= 2
    })
    .await;
    first.stop().await;
    let before = handler.calls_for("bad").len();
    let second = start();
    let (g, t) = (group.clone(), topic.clone());
    wait_for(MINUTE, "the record dead-lettered and passed", move || {
        committed(&g, &t, 1) == [2]
    })
    .await;
    second.stop().await;
    let letters = dead_letters(&topic, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        handler.calls_for("bad").len(),
        4,
        "{before} attempts before the restart; the policy's 4 in all, not 4 more after it"
    );
    assert_eq!(
        header(&letters[0], runtime::dlq::ATTEMPTS).as_deref(),
        Some("4"),
        "dlq.attempts is the true count"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_retry_attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a settled record's attempts are forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_refuses_to_start_without_its_dead_letter_topic() {
    let topic = testkit::create_topic_with(testkit::infra(), "no-dlq", 1, &[]).await;
    let policy = policy(READ_MODEL_PROJECTIONS, &topic, PolicyOverrides::default());
    let consumer = Consumer::builder(policy, kafka())
        .handler(Scripted::ok())
        .database(database().await)
        .options(fast_options())
        .build()
        .unwrap();
    let result = tokio::time::timeout(
        MINUTE,
        consumer.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("refuses at once");
    match result {
        Err(RuntimeError::Config(why)) => {
            assert!(why.contains(&format!("{topic}.dlq")), "{why}")
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_assigned_while_the_database_is_down_wait_paused_then_start_at_their_stored_position()
 {
    let db = testkit::fresh_database().await;
    sqlx::query(
        "CREATE TABLE sink (value text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let topic = topic("b-wait", 2).await;
    produce_numbered(&topic, 0, 40).await;
    let policy = policy(SETTLEMENT_PROCESSING, &topic, PolicyOverrides::default());
    // A previous owner stored partition 0 up to offset 5 (with 7 applied ahead) and partition 1 not at all.
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, ahead) \
         VALUES ($1, $2, 0, 5, '{7}')",
    )
    .bind(&policy.group)
    .bind(&topic)
    .execute(&db.pool)
    .await
    .unwrap();
    let proxy = PgProxy::start(&db.url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&proxy.url(&db.url))
        .unwrap();
    proxy.cut();
    let readiness = service_kit::ops::Readiness::default();
    let running = Running::start(
        Consumer::builder(policy.clone(), kafka())
            .handler(Scripted::ok().with_db_sink())
            .database(pool)
            .readiness(readiness.clone())
            .options(runtime::ConsumerOptions {
                db_timeout: Duration::from_secs(2),
                ..fast_options()
            })
            .build()
            .unwrap(),
    );
    let r = readiness.clone();
    wait_for(
        MINUTE,
        "the consumer to report that it waits for its start",
        move || {
            r.check()
                .is_err_and(|unmet| unmet.iter().any(|u| u.contains("cannot read where")))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sink")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing is processed before the start is known");
    proxy.restore();
    let ends = end_offsets(&topic, 2);
    let expected = (ends[0] - 5 - 1) + ends[1];
    let pool = db.pool.clone();
    eventually_async(MINUTE, "the records after the stored positions", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sink")
                .fetch_one(&pool)
                .await
                .unwrap()
                >= expected
        }
    })
    .await;
    running.stop().await;
    let p0: Vec<i64> =
        sqlx::query_scalar("SELECT \"offset\" FROM sink WHERE partition = 0 ORDER BY \"offset\"")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let want: Vec<i64> = (5..ends[0]).filter(|o| *o != 7).collect();
    assert_eq!(
        p0, want,
        "partition 0 from its stored position, 7 skipped (applied ahead before)"
    );
    let p1: i64 = sqlx::query_scalar("SELECT count(*) FROM sink WHERE partition = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(p1, ends[1], "partition 1 from the beginning");
}
