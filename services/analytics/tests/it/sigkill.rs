//! Two `analytics` processes SIGKILLed several times while events and views flow: the aggregates end exactly as
//! expected — nothing lost, nothing counted twice (exactly-once into the database).

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
    Command::new(env!("CARGO_BIN_EXE_analytics"))
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
        .expect("spawn analytics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sigkilled_mid_stream_count_every_event_exactly_once() {
    let flows = flows::generate(&Scenario::new(609, 25, 400));
    let bus = Bus::new().await;
    let group = testkit::unique_name("analytics-kill");
    let dir = testkit::workspace_root().join(".dev/tmp").join(&group);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("analytics.toml");
    // A short session so that a killed member's partitions move on quickly.
    std::fs::write(
        &config,
        format!(
            "[service.consumer.policy]\ngroup = \"{group}\"\ntopics = [\"{}\", \"{}\"]\n\
             session_timeout = \"6s\"\nheartbeat_interval = \"1s\"\n\
             [service.consumer.options]\ncommit_interval = \"200ms\"\ndrain_timeout = \"3s\"\n",
            bus.domain_topic, bus.analytics_topic
        ),
    )
    .unwrap();
    let log = dir.join("analytics.log");
    let mut children: Vec<Child> = (0..2).map(|_| spawn(&config, &bus, &log)).collect();
    let publisher = bus.start_publisher().await;
    let views = {
        let (bus_topic, records) = (bus.analytics_topic.clone(), flows.analytics.clone());
        tokio::spawn(async move {
            for chunk in records.chunks(records.len().div_ceil(8).max(1)) {
                let raw: Vec<(String, Vec<u8>)> = chunk
                    .iter()
                    .map(|r| (r.key.clone(), r.value.clone()))
                    .collect();
                flows::harness::produce(&bus_topic, &raw).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    };
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
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(700..1500))).await;
        let victim = rand::rng().random_range(0..children.len());
        children[victim].kill().expect("SIGKILL");
        children[victim].wait().unwrap();
        children[victim] = spawn(&config, &bus, &log);
    }
    writer.await.unwrap();
    views.await.unwrap();
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(120)).await;
    wait_consumed(&bus, &group).await;
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer_group = $1")
            .bind(&group)
            .fetch_one(bus.pool())
            .await
            .unwrap();
    assert_eq!(
        processed as usize,
        flows.events.len() + flows.analytics.len()
    );
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    publisher.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
