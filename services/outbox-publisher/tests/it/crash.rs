//! Publisher replicas SIGKILLed mid-batch and restarted while writers keep committing: nothing is lost, per-key
//! order (first occurrences) equals commit order, and duplicates appear only as re-sends after a crash.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use events::InvoiceId;
use rand::Rng;
use testkit::{create_topic, fresh_database, infra, workspace_root};

use crate::helpers::*;

fn spawn_publisher(config_file: &std::path::Path, db_url: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_outbox-publisher"))
        .arg("--config")
        .arg(config_file)
        .env("KAFKA_BOOTSTRAP_SERVERS", &infra().bootstrap_servers)
        .env("DATABASE_URL", db_url)
        .env("CHECKOUT__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn,outbox=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn outbox-publisher")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishers_sigkilled_mid_batch_lose_nothing_and_keep_per_key_order() {
    let db = fresh_database().await;
    create_sequences(&db.pool).await;
    let topic = create_topic(12).await;
    let dir = workspace_root()
        .join(".dev/tmp")
        .join(testkit::unique_name("crash"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("publisher.toml");
    std::fs::write(
        &config_file,
        format!(
            "[service]\nbatch_size = 200\nheartbeat_interval = \"300ms\"\npoll_interval = \"500ms\"\n\
             [service.topic_routes]\n\"{}\" = \"{topic}\"\n",
            events::topics::DOMAIN_EVENTS
        ),
    )
    .unwrap();
    let log = dir.join("publishers.log");
    let mut children: Vec<Child> = (0..2)
        .map(|_| spawn_publisher(&config_file, &db.url, &log))
        .collect();

    // Writers commit for ~10 s while a killer SIGKILLs a random replica every 0.4–1.2 s and restarts it.
    let keys: Vec<InvoiceId> = (0..60).map(|_| InvoiceId::new()).collect();
    let stop_at = Instant::now() + Duration::from_secs(10);
    let mut writers = Vec::new();
    for _ in 0..4 {
        let pool = db.pool.clone();
        let keys = keys.clone();
        writers.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let (key, count) = {
                    let mut rng = rand::rng();
                    (
                        keys[rng.random_range(0..keys.len())],
                        rng.random_range(1..=3),
                    )
                };
                write_events(&pool, key, count, Duration::ZERO).await;
            }
        }));
    }
    let mut kills = 0;
    while Instant::now() < stop_at {
        let pause = Duration::from_millis(rand::rng().random_range(400..1200));
        tokio::time::sleep(pause).await;
        let victim = rand::rng().random_range(0..children.len());
        children[victim].kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
        children[victim].wait().unwrap();
        kills += 1;
        children[victim] = spawn_publisher(&config_file, &db.url, &log);
    }
    for writer in writers {
        writer.await.unwrap();
    }

    // Let the survivors drain, then stop them too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_rows(&db.pool).await > 0 {
        assert!(
            Instant::now() < deadline,
            "outbox not drained; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }

    let expected = sequences(&db.pool).await;
    let events_written: u64 = expected.values().sum();
    let bootstrap = infra().bootstrap_servers.clone();
    let received = tokio::task::spawn_blocking(move || {
        read_all(
            &bootstrap,
            &topic,
            events_written as usize,
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    let duplicates = assert_complete_and_ordered(&received, &expected);
    println!(
        "crash test: {kills} SIGKILLs, {events_written} events, {duplicates} duplicates ({:.2}%)",
        100.0 * duplicates as f64 / events_written as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
