//! Two `analytics` processes SIGKILLed several times while events and views flow: the aggregates end exactly as
//! expected — nothing lost, nothing counted twice (exactly-once into the database).

use std::path::Path;
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use flows::service::KillRun;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sigkilled_mid_stream_count_every_event_exactly_once() {
    let flows = flows::generate(&Scenario::new(609, 25, 400));
    let bus = Bus::new().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_analytics"));
    let topics = [bus.domain_topic.clone(), bus.analytics_topic.clone()];
    let run = KillRun::run(&bus, binary, &topics, &flows, 2, 6).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(120)).await;
    wait_consumed(&bus, &run.group).await;
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer_group = $1")
            .bind(&run.group)
            .fetch_one(bus.pool())
            .await
            .unwrap();
    assert_eq!(
        processed as usize,
        flows.events.len() + flows.analytics.len()
    );
    run.finish().await;
}
