//! The ledger's last line of defence is the database: an unbalanced journal, a journal split over two
//! statements, a second posting of a journal and any change to a posted line are refused, whoever writes.

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn connect() -> (testkit::TestDb, PgConnection) {
    let db = testkit::fresh_database().await;
    let conn = PgConnection::connect(&db.url).await.expect("connect");
    (db, conn)
}

/// Posts `lines` (account, merchant, amount) of journal `journal` in one statement.
async fn post(
    conn: &mut PgConnection,
    journal: Uuid,
    first_line: i16,
    lines: &[(&str, Option<Uuid>, &str)],
) -> Result<(), sqlx::Error> {
    let n = lines.len();
    sqlx::query(
        "INSERT INTO ledger_entries (journal_id, line, kind, account, merchant_id, invoice_id, currency, amount, \
                                     posted_at) \
         SELECT $1, l, 'settlement', a, m, $2, 'USD', x::numeric, now() \
         FROM UNNEST($3::smallint[], $4::text[], $5::uuid[], $6::text[]) AS t(l, a, m, x)",
    )
    .bind(journal)
    .bind(Uuid::new_v4())
    .bind((0..n as i16).map(|i| first_line + i).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.0).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.1).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.2).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(|_| ())
}

fn refused(result: Result<(), sqlx::Error>, needle: &str) {
    let err = result.expect_err("the database must refuse it");
    assert!(err.to_string().contains(needle), "{err}");
}

#[tokio::test]
async fn the_database_refuses_unbalanced_split_duplicate_and_changed_journals() {
    let (_db, mut conn) = connect().await;
    let merchant = Some(Uuid::new_v4());
    let balanced = [
        ("customer_receipts", None, "-16.49"),
        ("merchant_payable", merchant, "16.33"),
        ("platform_fees", None, "0.16"),
    ];
    let journal = Uuid::new_v4();
    post(&mut conn, journal, 1, &balanced)
        .await
        .expect("a balanced journal is posted");

    refused(
        post(
            &mut conn,
            Uuid::new_v4(),
            1,
            &[
                ("customer_receipts", None, "-16.49"),
                ("merchant_payable", merchant, "16.33"),
            ],
        )
        .await,
        "unbalanced ledger journal",
    );
    // Balanced across two statements is still refused: a journal is posted whole or not at all.
    let split = Uuid::new_v4();
    post(
        &mut conn,
        split,
        1,
        &[
            ("customer_receipts", None, "-1"),
            ("platform_fees", None, "1"),
        ],
    )
    .await
    .unwrap();
    refused(
        post(
            &mut conn,
            split,
            3,
            &[
                ("customer_receipts", None, "-1"),
                ("platform_fees", None, "1"),
            ],
        )
        .await,
        "posted in one statement",
    );
    refused(
        post(&mut conn, journal, 1, &balanced).await,
        "duplicate key",
    );
    // Merchant accounts name their merchant; others do not.
    refused(
        post(
            &mut conn,
            Uuid::new_v4(),
            1,
            &[
                ("customer_receipts", None, "-1"),
                ("merchant_payable", None, "1"),
            ],
        )
        .await,
        "check constraint",
    );
    for change in [
        "UPDATE ledger_entries SET amount = amount * 2",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
    ] {
        let result = sqlx::raw_sql(change).execute(&mut conn).await.map(|_| ());
        refused(result, "append-only");
    }
    let total: sqlx::types::Decimal = sqlx::query_scalar("SELECT sum(amount) FROM ledger_entries")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(total.is_zero(), "the ledger balances: {total}");
}
