//! `verify` while the log grows: several appenders commit rows through `audit::handler::append` while the
//! verifier runs in a loop. Every verification must see one consistent state of the log — intact, its head
//! naming its last row — and successive verifications a log that only grows. (The first `verify` read the head
//! and the rows in separate snapshots and reported a false break whenever a row committed in between.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use audit::chain::Provenance;
use audit::handler::{Appended, append};
use flows::Scenario;

const APPENDERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_sees_an_intact_growing_log_while_appenders_commit() {
    let events = flows::generate(&Scenario::new(613, 8, 120)).events;
    assert!(events.len() > 600, "{} events", events.len());
    let db = testkit::fresh_database().await;
    let total = events.len();

    let done = Arc::new(AtomicBool::new(false));
    let mut appenders = Vec::new();
    for lane in 0..APPENDERS {
        let pool = db.pool.clone();
        let mine: Vec<_> = events
            .iter()
            .skip(lane)
            .step_by(APPENDERS)
            .cloned()
            .collect();
        appenders.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("appender connection");
            for (n, envelope) in mine.iter().enumerate() {
                let text = String::from_utf8(events::encode(envelope).expect("valid event"))
                    .expect("UTF-8 JSON");
                let provenance = Provenance {
                    topic: "crypto-checkout.domain-events".into(),
                    partition: lane as i32,
                    offset: n as i64,
                };
                // Half the appends in an explicit transaction, half committing on their own.
                let appended = if n % 2 == 0 {
                    append(&mut conn, envelope, text, &provenance).await
                } else {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
                    let appended = append(&mut tx, envelope, text, &provenance).await;
                    tx.commit().await.expect("commit");
                    appended
                };
                assert!(
                    matches!(appended.expect("append"), Appended::Row(_)),
                    "every event is new"
                );
            }
        }));
    }
    let watcher = {
        let done = done.clone();
        let handles = std::mem::take(&mut appenders);
        tokio::spawn(async move {
            for handle in handles {
                handle.await.expect("appender task");
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut conn = db.pool.acquire().await.expect("verifier connection");
    let mut seen = Vec::new();
    let mut last = 0i64;
    loop {
        let finished = done.load(Ordering::Acquire);
        let v = audit::verify::verify(&mut conn).await.expect("verify");
        assert!(
            v.intact(),
            "verification {} reported a break that is not there: {:?}",
            seen.len() + 1,
            v.first_break
        );
        assert_eq!(
            v.rows as i64, v.head_seq,
            "the head names the last row read"
        );
        assert!(
            v.head_seq >= last,
            "the log shrank from {last} to {} rows",
            v.head_seq
        );
        last = v.head_seq;
        seen.push(v.head_seq);
        if finished {
            break;
        }
    }
    watcher.await.expect("appenders");
    assert_eq!(last as usize, total, "the last verification saw every row");
    let growing: std::collections::BTreeSet<i64> = seen
        .iter()
        .copied()
        .filter(|&s| s > 0 && (s as usize) < total)
        .collect();
    assert!(
        growing.len() >= 3,
        "the verifier should have seen the log mid-growth several times: {seen:?}"
    );
    // The verifier's connection is usable afterwards (its read-only transaction ended).
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n as usize, total);

    // Inside a caller's transaction the snapshot would be the caller's: refused, naming why.
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let err = audit::verify::verify(&mut tx).await.unwrap_err();
    assert!(
        matches!(err, audit::verify::VerifyError::InTransaction),
        "{err}"
    );
    assert!(err.to_string().contains("outside any transaction"), "{err}");
}
