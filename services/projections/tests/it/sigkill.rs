//! Two `projections` processes SIGKILLed several times while events flow: the read models end equal to the
//! truth — nothing lost, nothing applied twice.

use std::path::Path;
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use flows::service::KillRun;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sigkilled_mid_stream_end_in_the_same_read_models() {
    let flows = flows::generate(&Scenario::new(505, 25, 400));
    let bus = Bus::new().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_projections"));
    let run = KillRun::run(
        &bus,
        binary,
        std::slice::from_ref(&bus.domain_topic),
        &flows,
        2,
        6,
    )
    .await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(120)).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM proj_applied_events")
        .fetch_one(bus.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, flows.events.len());
    run.finish().await;
}
