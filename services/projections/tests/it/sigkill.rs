//! Two `projections` processes SIGKILLed several times while events flow: the read models end equal to the
//! truth — nothing lost, nothing applied twice.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use rand::Rng;

use crate::helpers::*;

fn spawn(config: &Path, bus: &Bus, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_projections"))
        .arg("--config")
        .arg(config)
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            &testkit::infra().bootstrap_servers,
        )
        .env("DATABASE_URL", &bus.db.url)
        .env("CHECKOUT__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn,runtime=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn projections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sigkilled_mid_stream_end_in_the_same_read_models() {
    let flows = flows::generate(&Scenario::new(505, 25, 400));
    let bus = Bus::new().await;
    let group = testkit::unique_name("projections-kill");
    let dir = testkit::workspace_root().join(".dev/tmp").join(&group);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("projections.toml");
    std::fs::write(
        &config,
        format!(
            "[service.consumer.policy]\ngroup = \"{group}\"\ntopics = [\"{}\"]\n\
             session_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n\
             [service.consumer.options]\ncommit_interval = \"200ms\"\ndrain_timeout = \"3s\"\n",
            bus.domain_topic
        ),
    )
    .unwrap();
    let log = dir.join("projections.log");
    let mut children: Vec<Child> = (0..2).map(|_| spawn(&config, &bus, &log)).collect();
    let publisher = bus.start_publisher().await;

    // A short session (set above) so that a killed member's partitions move on quickly.
    // Events arrive over ~8 s while a random process is SIGKILLed every 0.7–1.5 s and started again.
    let writer = {
        let events = flows.events.clone();
        let pool = bus.pool().clone();
        tokio::spawn(async move {
            let chunks = events.len().div_ceil(60);
            for chunk in events.chunks(60) {
                let mut tx = pool.begin().await.unwrap();
                outbox::append_batch(&mut tx, chunk).await.unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(8000 / chunks as u64)).await;
            }
        })
    };
    let mut kills = 0;
    while kills < 6 {
        let pause = rand::rng().random_range(700..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..children.len());
        children[victim].kill().expect("SIGKILL");
        children[victim].wait().unwrap();
        kills += 1;
        children[victim] = spawn(&config, &bus, &log);
    }
    writer.await.unwrap();

    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(120)).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM proj_applied_events")
        .fetch_one(bus.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, flows.events.len());
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    publisher.stop().await;
    println!("{kills} SIGKILLs; logs in {}", log.display());
    let _ = std::fs::remove_dir_all(&dir);
}
