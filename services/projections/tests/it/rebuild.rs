//! `projections rebuild`: replaying the topic gives exactly the live read models; the swap is atomic for
//! readers; a rebuild while events keep arriving loses and duplicates nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flows::Scenario;
use flows::harness::Bus;
use projections::rebuild::{RebuildOptions, rebuild};

use crate::helpers::*;

fn options(bus: &Bus, swap: bool) -> RebuildOptions {
    RebuildOptions {
        swap,
        ..RebuildOptions::new(bus.domain_topic.clone(), flows::harness::kafka())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_from_the_topic_equals_the_live_tables() {
    let flows = flows::generate(&Scenario::new(404, 20, 300));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    wait_consumed(&bus, &service.group).await;
    let before = snapshot(bus.pool()).await;

    let report = rebuild(&bus.db.url, &options(&bus, false), |_| {})
        .await
        .expect("dry run");
    assert!(report.identical(), "{:#?}", report.differences);
    assert_eq!(report.records as usize, flows.events.len());
    assert_eq!(report.applied as usize, flows.events.len());
    assert!(!report.swapped);
    let invoices = report
        .differences
        .iter()
        .find(|d| d.table == "proj_invoices")
        .unwrap();
    assert_eq!(invoices.rebuilt_rows as usize, flows.truth.invoices.len());
    assert_eq!(
        snapshot(bus.pool()).await,
        before,
        "a dry run changes nothing"
    );
    let scratch: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'projections_rebuild')",
    )
    .fetch_one(bus.pool())
    .await
    .unwrap();
    assert!(!scratch, "the scratch schema is dropped");

    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_the_old_or_the_rebuilt_read_models_never_a_mix() {
    let flows = flows::generate(&Scenario::new(405, 20, 300));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 200).await;
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    wait_consumed(&bus, &service.group).await;

    // A projection bug wiped half the invoices' history and corrupted balances.
    sqlx::raw_sql(
        "DELETE FROM proj_invoice_history WHERE invoice_id IN \
             (SELECT invoice_id FROM proj_invoices ORDER BY invoice_id LIMIT 100); \
         DELETE FROM proj_invoices WHERE invoice_id IN (SELECT invoice_id FROM proj_invoices ORDER BY invoice_id LIMIT 100); \
         UPDATE proj_merchant_balances SET settled_net = settled_net + 1;",
    )
    .execute(bus.pool())
    .await
    .unwrap();
    let observe = "SELECT (SELECT count(*) FROM proj_invoices)::text || '/' || \
                          (SELECT count(*) FROM proj_invoice_history)::text || '/' || \
                          (SELECT coalesce(sum(settled_net), 0) FROM proj_merchant_balances)::text";
    let broken: String = sqlx::query_scalar(observe)
        .fetch_one(bus.pool())
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (pool, stop) = (bus.pool().clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let s: String = sqlx::query_scalar(observe).fetch_one(&pool).await.unwrap();
                seen.push(s);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    let report = rebuild(&bus.db.url, &options(&bus, true), |_| {})
        .await
        .expect("rebuild");
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    assert!(report.swapped && !report.identical(), "{report:#?}");
    let fixed: String = sqlx::query_scalar(observe)
        .fetch_one(bus.pool())
        .await
        .unwrap();
    assert_ne!(broken, fixed);
    assert!(
        seen.len() > 10,
        "the reader read during the rebuild ({} reads)",
        seen.len()
    );
    for observation in &seen {
        assert!(
            *observation == broken || *observation == fixed,
            "a reader saw {observation}: neither the old ({broken}) nor the rebuilt ({fixed}) state"
        );
    }
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(5)).await;

    service.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_events_keep_arriving_loses_and_duplicates_nothing() {
    let flows = flows::generate(&Scenario::new(406, 20, 400));
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    let (first, second) = flows.events.split_at(flows.events.len() / 2);
    bus.append(first, 200).await;
    wait_consumed(&bus, &service.group).await;

    // The second half trickles in (~4 s) while the rebuild replays and swaps.
    let writer = {
        let events = second.to_vec();
        let pool = bus.pool().clone();
        tokio::spawn(async move {
            for chunk in events.chunks(50) {
                let mut tx = pool.begin().await.unwrap();
                outbox::append_batch(&mut tx, chunk).await.unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(
                    4000 / (events.len() as u64 / 50).max(1),
                ))
                .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = rebuild(&bus.db.url, &options(&bus, true), |line| {
        println!("rebuild: {line}")
    })
    .await
    .expect("rebuild");
    writer.await.unwrap();
    assert!(report.swapped);
    println!(
        "rebuild during traffic: {} records, {} caught up under the lock, {:.2}s",
        report.records, report.caught_up, report.seconds
    );
    wait_for_truth(bus.pool(), &flows.truth, Duration::from_secs(90)).await;
    wait_consumed(&bus, &service.group).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM proj_applied_events")
        .fetch_one(bus.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, flows.events.len());

    service.stop().await;
    publisher.stop().await;
}
