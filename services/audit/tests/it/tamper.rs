//! The database refuses to change history; a superuser who bypasses it (triggers off) is caught by the
//! verifier, which names the first broken row.

use std::time::Duration;

use audit::chain::AuditRow;
use flows::Scenario;
use flows::harness::Bus;
use sqlx::{Connection, PgConnection};

use crate::helpers::*;

async fn exec(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .map(|_| ())
}

async fn row(conn: &mut PgConnection, seq: i64) -> AuditRow {
    sqlx::query_as("SELECT * FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Inserts `r` as it is.
async fn insert(conn: &mut PgConnection, r: &AuditRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (seq, event_id, event_type, event_version, aggregate_type, aggregate_id, merchant_id, \
                                invoice_id, actor, ip_address, user_agent, request_id, source, correlation_id, \
                                causation_id, occurred_at, recorded_at, kafka_topic, kafka_partition, kafka_offset, \
                                event, prev_hash, hash) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23)",
    )
    .bind(r.seq).bind(r.event_id).bind(&r.event_type).bind(r.event_version).bind(&r.aggregate_type)
    .bind(&r.aggregate_id).bind(&r.merchant_id).bind(&r.invoice_id).bind(&r.actor).bind(&r.ip_address)
    .bind(&r.user_agent).bind(&r.request_id).bind(&r.source).bind(&r.correlation_id).bind(&r.causation_id)
    .bind(r.occurred_at).bind(r.recorded_at).bind(&r.kafka_topic).bind(r.kafka_partition).bind(r.kafka_offset)
    .bind(&r.event).bind(&r.prev_hash).bind(&r.hash)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Puts `r` back exactly as it was (triggers must be off).
async fn put_back(conn: &mut PgConnection, r: &AuditRow) {
    insert(conn, r).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_cannot_be_changed_and_tampering_is_detected_at_the_first_broken_row() {
    let flows = flows::generate(&Scenario::new(608, 5, 30));
    let n = flows.events.len() as i64;
    assert!(n > 80, "{n} events");
    let bus = Bus::new().await;
    let publisher = bus.start_publisher().await;
    let service = start(&bus).await;
    bus.append(&flows.events, 100).await;
    wait_for_rows(bus.pool(), flows.events.len(), Duration::from_secs(60)).await;
    service.stop().await;
    publisher.stop().await;
    assert!(verify(bus.pool()).await.intact());

    // The database refuses to change history, whoever asks.
    let mut conn = PgConnection::connect(&bus.db.url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
        "TRUNCATE audit_log",
        "UPDATE audit_chain_head SET seq = 2",
        "DELETE FROM audit_chain_head",
    ] {
        let err = exec(&mut conn, sql).await.expect_err(sql);
        assert!(
            err.to_string().contains("append-only") || err.to_string().contains("only advances"),
            "{sql}: {err}"
        );
    }
    let mut copy = row(&mut conn, 5).await;
    copy.event_id = uuid::Uuid::new_v4();
    copy.seq = n + 7;
    copy.hash = uuid::Uuid::new_v4().as_bytes().repeat(2);
    let err = insert(&mut conn, &copy)
        .await
        .expect_err("a row that does not extend the head");
    assert!(
        err.to_string().contains("does not extend the chain head"),
        "{err}"
    );
    assert!(verify(bus.pool()).await.intact());

    // A superuser switches the triggers off and tampers; the verifier finds it.
    exec(&mut conn, "SET session_replication_role = replica")
        .await
        .unwrap();

    // Modified.
    let original = row(&mut conn, 42).await;
    exec(
        &mut conn,
        "UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 42",
    )
    .await
    .unwrap();
    let broken = verify(bus.pool())
        .await
        .first_break
        .expect("modification detected");
    assert_eq!(broken.seq, 42);
    assert!(broken.problem.contains("modified"), "{}", broken.problem);
    assert_eq!(broken.event_id, Some(format!("evt_{}", original.event_id)));
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 42")
        .await
        .unwrap();
    put_back(&mut conn, &original).await;
    assert!(verify(bus.pool()).await.intact());

    // Modified, with its own hash recomputed: the next row's link breaks.
    let mut forged = original.clone();
    forged.actor = "user:mallory".into();
    forged.hash = forged.compute_hash().to_vec();
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 42")
        .await
        .unwrap();
    put_back(&mut conn, &forged).await;
    let broken = verify(bus.pool())
        .await
        .first_break
        .expect("re-hashed modification detected");
    assert_eq!(broken.seq, 43);
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 42")
        .await
        .unwrap();
    put_back(&mut conn, &original).await;
    assert!(verify(bus.pool()).await.intact());

    // Deleted.
    let deleted = row(&mut conn, 50).await;
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 50")
        .await
        .unwrap();
    let broken = verify(bus.pool())
        .await
        .first_break
        .expect("deletion detected");
    assert_eq!(broken.seq, 51);
    assert!(broken.problem.contains("missing"), "{}", broken.problem);
    put_back(&mut conn, &deleted).await;
    assert!(verify(bus.pool()).await.intact());

    // Reordered: rows 60 and 61 swap places.
    exec(
        &mut conn,
        "UPDATE audit_log SET seq = 1000000000 WHERE seq = 60; UPDATE audit_log SET seq = 60 WHERE seq = 61; \
         UPDATE audit_log SET seq = 61 WHERE seq = 1000000000;",
    )
    .await
    .unwrap();
    let broken = verify(bus.pool())
        .await
        .first_break
        .expect("reordering detected");
    assert_eq!(broken.seq, 60);
    exec(
        &mut conn,
        "UPDATE audit_log SET seq = 1000000000 WHERE seq = 60; UPDATE audit_log SET seq = 60 WHERE seq = 61; \
         UPDATE audit_log SET seq = 61 WHERE seq = 1000000000;",
    )
    .await
    .unwrap();
    assert!(verify(bus.pool()).await.intact());

    // The last row removed.
    let last = row(&mut conn, n).await;
    exec(&mut conn, &format!("DELETE FROM audit_log WHERE seq = {n}"))
        .await
        .unwrap();
    let broken = verify(bus.pool())
        .await
        .first_break
        .expect("truncation detected");
    assert_eq!(broken.seq, n, "the head names the missing last row");
    assert!(broken.problem.contains("chain head"), "{}", broken.problem);
    put_back(&mut conn, &last).await;
    assert!(verify(bus.pool()).await.intact());
}
