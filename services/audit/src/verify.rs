//! Verifying the audit log: recompute the chain from row 1 and name the first row where it breaks.
//!
//! Guarantees: [`verify`] reads every row in `seq` order (streaming, constant memory) and checks, for each, that
//! it is the next number, that its `prev_hash` is the previous row's `hash`, and that its `hash` is the hash of
//! its own contents; finally that the chain head names the last row. The first violation is reported with the
//! row's number and event id and what is wrong: a deleted row shows as a gap (and a broken link), a modified row
//! as a hash that does not match its contents, a moved row as both; rows removed from the end as a head that
//! points past the log. Verification never writes.
//!
//! **One snapshot.** The head and the rows are read inside one `REPEATABLE READ, READ ONLY` transaction that
//! [`verify`] begins on the caller's connection, so they are one consistent state of the log however many
//! appenders commit meanwhile: a row committed after the snapshot is neither in the rows nor in the head. (Read
//! in separate statements, a row committing between the head and the rows looked like "rows removed from the
//! end" — a false tamper alarm.) The audit triggers advance the head in the appending transaction, so a
//! committed state always has a head naming its last row; any break reported is in the data.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::chain::{AuditRow, GENESIS, hex};

/// The first row where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The row's number (for a broken head: the number the head claims).
    pub seq: i64,
    /// The row's event id, when the row exists.
    pub event_id: Option<String>,
    pub problem: String,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows read.
    pub rows: u64,
    /// The chain head: last row number and hash.
    pub head_seq: i64,
    pub head_hash: String,
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The statement that opens the verifier's snapshot.
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Why the log could not be verified (as opposed to a [`Break`], which is a verified finding).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The connection is already inside a transaction, whose snapshot the verifier cannot choose.
    #[error(
        "audit verification needs a connection outside any transaction: it reads the chain head and every row \
         in one REPEATABLE READ, READ ONLY snapshot of its own"
    )]
    InTransaction,
    /// PostgreSQL failed or is unreachable.
    #[error("reading the audit log failed")]
    Database(#[from] sqlx::Error),
}

/// Verifies the whole chain, in one snapshot (see the module documentation). `conn` must not be inside a
/// transaction; it is left outside one.
pub async fn verify(conn: &mut PgConnection) -> Result<Verification, VerifyError> {
    if conn.is_in_transaction() {
        return Err(VerifyError::InTransaction);
    }
    let mut tx = conn.begin_with(BEGIN_SNAPSHOT).await?;
    let verification = verify_in_snapshot(&mut tx).await?;
    // Read only: nothing to commit, but ending the transaction cleanly returns the connection as it came.
    tx.commit().await?;
    Ok(verification)
}

/// The check itself, on a connection whose transaction fixes the snapshot.
async fn verify_in_snapshot(conn: &mut PgConnection) -> Result<Verification, sqlx::Error> {
    let (head_seq, head_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_chain_head")
            .fetch_one(&mut *conn)
            .await?;
    let mut rows = 0u64;
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_vec();
    let mut first_break = None;
    {
        let mut stream =
            sqlx::query_as::<_, AuditRow>("SELECT * FROM audit_log ORDER BY seq").fetch(&mut *conn);
        while let Some(row) = stream.try_next().await? {
            rows += 1;
            let problem = if row.seq != expected_seq {
                Some(if row.seq > expected_seq {
                    format!(
                        "row(s) {expected_seq}..={} are missing before it (deleted)",
                        row.seq - 1
                    )
                } else {
                    format!("its number repeats or goes back (expected row {expected_seq})")
                })
            } else if row.prev_hash != prev {
                Some(format!(
                    "its prev_hash {} is not row {}'s hash {} (a row was removed, inserted or moved)",
                    hex(&row.prev_hash),
                    row.seq - 1,
                    hex(&prev)
                ))
            } else if row.compute_hash().as_slice() != row.hash.as_slice() {
                Some(format!(
                    "its contents do not match its hash {} (the row was modified)",
                    hex(&row.hash)
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                first_break = Some(Break {
                    seq: row.seq,
                    event_id: Some(format!("evt_{}", row.event_id)),
                    problem,
                });
                break;
            }
            expected_seq = row.seq + 1;
            prev = row.hash;
        }
    }
    if first_break.is_none() && (head_seq != expected_seq - 1 || head_hash != prev) {
        first_break = Some(Break {
            seq: head_seq,
            event_id: None,
            problem: format!(
                "the chain head names row {head_seq} ({}) but the log ends at row {} ({}): rows were removed \
                 from the end, or the head was changed",
                hex(&head_hash),
                expected_seq - 1,
                hex(&prev)
            ),
        });
    }
    Ok(Verification {
        rows,
        head_seq,
        head_hash: hex(&head_hash),
        first_break,
    })
}
