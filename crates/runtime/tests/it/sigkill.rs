//! Processes killed with SIGKILL (no drain, no commit, no leaving the group): redelivery with at-least-once,
//! exactly-once in both modes, and a group taking over a dead member's partitions.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;

use crate::helpers::*;

const MINUTE: Duration = Duration::from_secs(60);

fn args(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
        .filter(|a| !a.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_redelivers_and_the_idempotency_helper_cancels_the_effects() {
    const N: usize = 300;
    let db = testkit::fresh_database().await;
    for ddl in [
        "CREATE TABLE testbed_calls (event_id uuid NOT NULL)",
        "CREATE TABLE testbed_effects (event_id uuid NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&db.pool).await.unwrap();
    }
    let topic = topic("redeliver", 3).await;
    let records: Vec<In> = (0..N)
        .map(|i| In {
            partition: None,
            key: uuid::Uuid::new_v4().to_string(),
            value: i.to_string(),
            headers: vec![],
        })
        .collect();
    produce(&topic, &records).await;
    let group = testkit::unique_name("redeliver");
    let run = |commit_interval: &str| {
        let mut a = args(&[
            ("group", &group),
            ("input", &topic),
            ("guarantee", "at-least-once"),
            ("handler", "idempotent"),
            ("database-url", &db.url),
            ("instance-id", "redeliver-0"),
            ("commit-interval", commit_interval),
        ]);
        a.push("--static-membership".into());
        Testbed::spawn(&a)
    };
    let calls = |pool: sqlx::PgPool| async move {
        let (calls, effects, distinct): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM testbed_calls), (SELECT count(*) FROM testbed_effects), \
             (SELECT count(DISTINCT event_id) FROM testbed_effects)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (calls, effects, distinct)
    };

    // First life: processes everything but never commits (the commit interval is an hour), then SIGKILL.
    let first = run("1h");
    eventually_async(MINUTE, "every record handled once", || async {
        calls(db.pool.clone()).await.0 >= N as i64
    })
    .await;
    let (g, t) = (group.clone(), topic.clone());
    assert_eq!(
        blocking(move || committed(&g, &t, 3)).await,
        [-1, -1, -1],
        "nothing committed before the kill"
    );
    first.kill();

    // Second life: everything is redelivered; the effects are applied once.
    let second = run("200ms");
    let ends = end_offsets(&topic, 3);
    let (g, t) = (group.clone(), topic.clone());
    wait_for(MINUTE, "the second life to commit everything", move || {
        committed(&g, &t, 3) == ends
    })
    .await;
    second.terminate();
    let (calls, effects, distinct) = calls(db.pool.clone()).await;
    assert!(
        calls >= 2 * N as i64,
        "every record was delivered again after the kill ({calls} calls for {N} records)"
    );
    assert_eq!(
        (effects, distinct),
        (N as i64, N as i64),
        "each effect exactly once"
    );
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer_group = $1")
            .bind(&group)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(processed, N as i64);
}

/// Runs the testbed over `total` records produced in chunks, SIGKILLing it `kills` times at a random point
/// (0–1.5 s) after it got its partitions. Returns the last life, running, once it has its partitions.
async fn run_with_kills(
    topic: &str,
    total: usize,
    kills: usize,
    testbed_args: &[String],
) -> Testbed {
    let chunk = total / (kills + 1);
    let mut produced = 0;
    for _ in 0..kills {
        let bed = Testbed::spawn(testbed_args);
        bed.wait_ready_async(MINUTE).await;
        // Feed this life while it runs and kill it shortly after: the kill lands while records are being
        // processed (and, in mode (a), inside an open transaction), however fast or loaded the machine is.
        produce_numbered(topic, produced, chunk).await;
        produced += chunk;
        let pause = rand::rng().random_range(0..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        bed.kill();
    }
    produce_numbered(topic, produced, total - produced).await;
    let last = Testbed::spawn(testbed_args);
    last.wait_ready_async(MINUTE).await;
    last
}

fn assert_each_once(values: impl IntoIterator<Item = String>, total: usize) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
    let missing: Vec<usize> = (0..total)
        .filter(|i| !counts.contains_key(&i.to_string()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing (first 10): {missing:?}");
    assert_eq!(counts.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_kafka_transactions_survives_20_sigkills() {
    const N: usize = 50_000;
    const P: i32 = 6;
    let input = topic("eos-a-in", P).await;
    let output = topic("eos-a-out", P).await;
    let group = testkit::unique_name("eos-a");
    let db = testkit::fresh_database().await;
    let mut a = args(&[
        ("group", &group),
        ("input", &input),
        ("output", &output),
        ("database-url", &db.url),
        ("guarantee", "exactly-once-kafka"),
        ("handler", "transform"),
        ("instance-id", "eos-a-0"),
    ]);
    a.push("--static-membership".into());
    let last = run_with_kills(&input, N, 20, &a).await;
    let ends = end_offsets(&input, P);
    let (g, t) = (group.clone(), input.clone());
    wait_for(3 * MINUTE, "the last life to commit all input", move || {
        committed(&g, &t, P) == ends
    })
    .await;
    blocking(move || last.terminate()).await;
    let o = output.clone();
    let out =
        blocking(move || read_topic(&o, "read_committed", N, Duration::from_secs(3), 3 * MINUTE))
            .await;
    assert_each_once(out.iter().map(value), N);
    // The kills hit open transactions: their outputs are in the log, aborted, invisible to read_committed.
    let all = blocking(move || {
        read_topic(
            &output,
            "read_uncommitted",
            N,
            Duration::from_secs(3),
            3 * MINUTE,
        )
    })
    .await;
    eprintln!(
        "mode (a): {} records in the output log, {} committed",
        all.len(),
        out.len()
    );
    assert!(
        all.len() > N,
        "no kill landed in an open transaction: the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_into_postgres_survives_20_sigkills() {
    const N: usize = 50_000;
    const P: i32 = 6;
    let db = testkit::fresh_database().await;
    sqlx::query("CREATE TABLE testbed_sink (value text NOT NULL, partition int NOT NULL, \"offset\" bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let input = topic("eos-b-in", P).await;
    let group = testkit::unique_name("eos-b");
    let mut a = args(&[
        ("group", &group),
        ("input", &input),
        ("guarantee", "exactly-once-db"),
        ("handler", "db-sink"),
        ("database-url", &db.url),
        ("instance-id", "eos-b-0"),
    ]);
    a.push("--static-membership".into());
    let last = run_with_kills(&input, N, 20, &a).await;
    let ends = end_offsets(&input, P);
    let expected: Vec<(i32, i64)> = ends
        .iter()
        .enumerate()
        .map(|(p, e)| (p as i32, *e))
        .collect();
    eventually_async(3 * MINUTE, "the stored offsets to reach the end", || async {
        let stored: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 ORDER BY partition",
        )
        .bind(&group)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        stored == expected
    })
    .await;
    blocking(move || last.terminate()).await;
    let values: Vec<String> = sqlx::query_scalar("SELECT value FROM testbed_sink")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(values.len(), N, "one row per input record");
    assert_each_once(values, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_consumers_share_twelve_partitions_and_survivors_take_over_a_killed_one() {
    const N: usize = 6_000;
    const P: i32 = 12;
    let input = topic("group-in", P).await;
    let output = topic("group-out", P).await;
    let group = testkit::unique_name("group");
    let db = testkit::fresh_database().await;
    let bed = |i: usize| {
        Testbed::spawn(&args(&[
            ("group", &group),
            ("database-url", &db.url),
            ("input", &input),
            ("output", &output),
            ("guarantee", "at-least-once"),
            ("handler", "transform"),
            ("instance-id", &format!("member-{i}")),
            ("session-timeout", "6s"),
            ("heartbeat-interval", "1s"),
        ]))
    };
    let mut beds: Vec<Testbed> = (0..4).map(bed).collect();
    for b in &beds {
        b.wait_ready_async(MINUTE).await;
    }
    let members_with = |count: usize, each: usize| {
        let g = group.clone();
        move || {
            let members = group_members(&g);
            members.len() == count && members.values().all(|ps| ps.len() == each)
        }
    };
    wait_for(
        MINUTE,
        "4 members with 3 partitions each",
        members_with(4, 3),
    )
    .await;
    produce_numbered(&input, 0, N / 2).await;
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "some progress", move || {
        committed(&g, &t, P).iter().any(|c| *c > 0)
    })
    .await;

    beds.remove(0).kill();
    produce_numbered(&input, N / 2, N / 2).await;
    wait_for(
        MINUTE,
        "the 3 survivors to own 4 partitions each",
        members_with(3, 4),
    )
    .await;
    let ends = end_offsets(&input, P);
    let (g, t) = (group.clone(), input.clone());
    wait_for(MINUTE, "every input committed", move || {
        committed(&g, &t, P) == ends
    })
    .await;
    for b in beds {
        blocking(move || b.terminate()).await;
    }
    let out =
        blocking(move || read_topic(&output, "read_committed", N, Duration::from_secs(2), MINUTE))
            .await;
    let seen: std::collections::HashSet<String> = out.iter().map(value).collect();
    let missing: Vec<usize> = (0..N)
        .filter(|i| !seen.contains(&i.to_string()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "lost records (first 10): {missing:?}");
}
