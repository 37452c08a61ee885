//! Two `audit` processes SIGKILLed several times while events flow: every event ends in the log exactly once and
//! the chain verifies.

use std::path::Path;
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use flows::service::KillRun;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_sigkilled_mid_stream_log_every_event_exactly_once() {
    let flows = flows::generate(&Scenario::new(609, 25, 400));
    let bus = Bus::new().await;
    let binary = Path::new(env!("CARGO_BIN_EXE_audit"));
    let run = KillRun::run(
        &bus,
        binary,
        std::slice::from_ref(&bus.domain_topic),
        &flows,
        2,
        6,
    )
    .await;
    wait_for_rows(bus.pool(), flows.events.len(), Duration::from_secs(120)).await;
    // Redeliveries still in flight can only be duplicates: give them a moment, then the log must be exact.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_log_matches(bus.pool(), &flows.events).await;
    assert!(verify(bus.pool()).await.intact());
    run.finish().await;
}
