//! Migrations apply to a fresh database, create the tables the runtime relies on, and are idempotent.

use testkit::fresh_database;

#[tokio::test]
async fn migrations_apply_to_a_fresh_database_and_reapply_as_a_no_op() {
    let db = fresh_database().await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, service_kit::db::MIGRATOR.iter().count());

    for table in ["processed_events", "consumer_offsets"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{table}"))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(exists, "table {table} missing after migrations");
    }

    service_kit::db::migrate(&db.pool)
        .await
        .expect("re-applying is a no-op");
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(again, applied);
}

#[tokio::test]
async fn processed_events_rejects_a_second_record_of_the_same_event() {
    let db = fresh_database().await;
    let event_id = uuid::Uuid::now_v7();
    let insert = "INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    let first = sqlx::query(insert)
        .bind("g")
        .bind(event_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let second = sqlx::query(insert)
        .bind("g")
        .bind(event_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let other_group = sqlx::query(insert)
        .bind("h")
        .bind(event_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (
            first.rows_affected(),
            second.rows_affected(),
            other_group.rows_affected()
        ),
        (1, 0, 1)
    );
}
