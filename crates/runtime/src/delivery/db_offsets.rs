//! Mode (b), exactly-once into PostgreSQL: the handler's writes, the outputs' acknowledgement and the lane's
//! position commit in one database transaction.
//!
//! Guarantees:
//! - A unit (a batch, or one record) runs in one transaction that also stores the lane's [`Position`] in
//!   `consumer_offsets` (`next_offset`, and `ahead`: offsets above it that are done too). Whatever the handler
//!   wrote through the transaction commits with that position or not at all; the runtime rolls it back on any
//!   failure, so a failed unit leaves no trace (handlers of this mode keep their effects in the transaction).
//! - The position is written with a compare-and-set on its `generation` (`UPDATE … WHERE generation =
//!   expected`, or an insert when there was no row): a consumer that lost the partition — a zombie — finds
//!   another generation, rolls back and stops ([`SinkError::Fenced`]). Exactly one transaction can move a
//!   position from a given generation, so each record's writes commit exactly once.
//! - On assignment the stored positions are read first; fetching starts at `next_offset`, the `ahead` offsets
//!   are skipped when they arrive, and a partition **with no stored row starts at the beginning of its topic**
//!   (or its end, when `auto_offset_reset = "latest"` says so) — never at Kafka's committed offset, which this
//!   mode writes for lag tools only.
//! - A lane keeps its connection from one unit to the next (`BEGIN`, the handler's statements, the
//!   compare-and-set, `COMMIT` — without the pool's test on every acquire and release), for at most [`HOLD`]
//!   before handing it back to the pool, at once when it has nothing to do or must wait (a retry, the breaker, a
//!   handler slot, a dead letter's acknowledgement), and never when the pool has no other connection to give. A
//!   kept connection that the server closed is replaced before the unit starts on it; one whose `BEGIN` did not
//!   complete is closed, never pooled. (A `COMMIT; BEGIN` that would save the next unit's round trip was
//!   measured and not taken: decision 0053.)
//! - The position is stored only when the unit's own transaction is the only one open: a handler's savepoint left
//!   open, or a nested `begin()` that rolled the unit back, fails the unit instead.
//! - Output and DLQ records are acknowledged by the broker before the database commit: at-least-once for them
//!   (use the outbox for exactly-once publishing); a crash between a DLQ ack and the commit can dead-letter a
//!   record twice (its provenance headers identify it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, PgPool, Postgres};
use sqlx_core::transaction::TransactionManager;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::{Assigned, Delivery, LaneSink, Position, Seek, SinkError, classify};
use crate::error::{ErrorClass, HandlerError, classify_sqlx};
use crate::produce;
use crate::record::OutputRecord;

pub(crate) struct DbOffsets {
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub group: String,
    pub runtime: Handle,
    pub db_timeout: Duration,
    pub produce_timeout: Duration,
    /// Where a partition with no stored position starts.
    pub without_row: Seek,
}

/// A stored position and its generation.
type Stored = HashMap<(String, i32), (Position, i64)>;

impl DbOffsets {
    async fn load(pool: PgPool, group: String, topics: Vec<String>) -> Result<Stored, sqlx::Error> {
        let rows: Vec<(String, i32, i64, Vec<i64>, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset, ahead, generation FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = ANY($2)",
        )
        .bind(&group)
        .bind(&topics)
        .fetch_all(&pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next, ahead, generation)| {
                ((topic, partition), (Position { next, ahead }, generation))
            })
            .collect())
    }
}

impl Delivery for DbOffsets {
    type Sink = Sink;

    fn commits_to_kafka(&self) -> bool {
        true
    }

    fn assign(&self, partitions: &[(Arc<str>, i32)]) -> Result<Vec<Assigned<Sink>>, String> {
        let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let load = Self::load(self.pool.clone(), self.group.clone(), topics);
        let mut stored = match super::block_on(&self.runtime, self.db_timeout, load) {
            Some(Ok(stored)) => stored,
            Some(Err(err)) => {
                return Err(format!(
                    "reading the stored positions failed: {}",
                    service_kit::telemetry::error_chain(&err)
                ));
            }
            None => {
                return Err(format!(
                    "reading the stored positions got no answer within {:?}",
                    self.db_timeout
                ));
            }
        };
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let found = stored.remove(&(topic.to_string(), *partition));
                let (seek, skip, generation) = match found {
                    Some((position, generation)) => (
                        Seek::Offset(position.next),
                        position.ahead,
                        Some(generation),
                    ),
                    None => (self.without_row, Vec::new(), None),
                };
                Assigned {
                    topic: topic.clone(),
                    partition: *partition,
                    seek,
                    skip,
                    sink: Sink {
                        pool: self.pool.clone(),
                        producer: self.producer.clone(),
                        group: self.group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        generation,
                        held: None,
                        db_timeout: self.db_timeout,
                        produce_timeout: self.produce_timeout,
                    },
                }
            })
            .collect())
    }
}

pub(crate) struct Sink {
    pool: PgPool,
    producer: FutureProducer,
    group: String,
    topic: Arc<str>,
    partition: i32,
    /// The generation of the stored position as this lane read or wrote it last (`None`: no row yet): the
    /// expected value of the compare-and-set.
    generation: Option<i64>,
    /// The connection of the last unit, kept for the next one (see [`HOLD`]).
    held: Option<Held>,
    db_timeout: Duration,
    produce_timeout: Duration,
}

/// How long a lane may keep a connection between units before handing it back to the pool, which tests it (a
/// round trip) and retires it at the end of its lifetime. 500 ms is HikariCP's `aliveBypassWindowMs`: a
/// connection that answered that recently is not tested again.
const HOLD: Duration = Duration::from_millis(500);

/// A connection a lane kept from its last unit, and since when it is out of the pool.
struct Held {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

/// An open unit: a pooled connection inside a transaction. Dropped while open (a failure, or its future
/// cancelled) it queues a `ROLLBACK` of every level, as sqlx's own `Transaction` does for its one; the connection
/// sends it before anything else, at the latest when it returns to the pool.
pub(crate) struct Unit(Option<Held>);

impl Unit {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self
            .0
            .as_mut()
            .expect("an open unit has its connection")
            .conn
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(held) = self.0.as_mut() {
            roll_back_all(&mut held.conn);
        }
    }
}

/// Queues the rollback of every open level (a handler's savepoint left open included): sqlx sends it before
/// anything else on the connection, at the latest when it returns to the pool.
fn roll_back_all(conn: &mut PgConnection) {
    while PgTransactionManager::get_transaction_depth(conn) > 0 {
        PgTransactionManager::start_rollback(conn);
    }
}

/// Begins a transaction on `conn`. If that does not complete — an error, or the future dropped by a timeout or
/// a cancelled lane after the `BEGIN` may have reached the server, when sqlx does not know the connection is in
/// a transaction — the connection is closed rather than returned to the pool.
async fn begin_on(conn: &mut PoolConnection<Postgres>) -> Result<(), sqlx::Error> {
    struct Closing<'c>(Option<&'c mut PoolConnection<Postgres>>);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            if let Some(conn) = self.0.take() {
                conn.close_on_drop();
            }
        }
    }
    let mut guard = Closing(Some(conn));
    let conn = guard.0.as_mut().expect("set above");
    PgTransactionManager::begin(conn, None).await?;
    guard.0 = None;
    Ok(())
}

/// A failure of the runtime's own statements: a lost connection or a timeout is infrastructure; anything else
/// the database refused is retried as transient (it is not the record's fault).
fn db_error(err: sqlx::Error) -> SinkError {
    SinkError::Unavailable(match classify_sqlx(&err) {
        ErrorClass::Infrastructure => HandlerError::infrastructure(err),
        _ => HandlerError::transient(err),
    })
}

impl Sink {
    /// Opens a unit: on the connection the lane kept, or one from the pool.
    ///
    /// A kept connection that fails to begin (the server closed it since the last unit) is given back to the
    /// pool, which discards it, and the unit starts on another one: nothing had run on it yet.
    async fn open(&mut self) -> Result<Unit, SinkError> {
        if let Some(mut held) = self.held.take().filter(|h| h.since.elapsed() < HOLD) {
            match tokio::time::timeout(self.db_timeout, begin_on(&mut held.conn)).await {
                Ok(Ok(())) => return Ok(Unit(Some(held))),
                Ok(Err(err)) => tracing::debug!(
                    error = %service_kit::telemetry::error_chain(&err),
                    "the lane's connection failed to begin a transaction; taking another from the pool"
                ),
                Err(_) => return Err(self.timed_out()),
            }
        }
        let mut conn = self.bounded(self.pool.acquire()).await?;
        self.bounded(begin_on(&mut conn)).await?;
        Ok(Unit(Some(Held {
            conn,
            since: Instant::now(),
        })))
    }

    /// Keeps the connection of a unit that ended (committed or rolled back) for the next one — unless the pool
    /// has no connection left to give, when another task may be waiting for this one, or something is still
    /// open on it (a handler's savepoint after a rollback: dropping the unit rolls it back, and the connection
    /// goes back to the pool).
    fn keep(&mut self, mut unit: Unit) {
        let exhausted = self.pool.num_idle() == 0
            && self.pool.size() >= self.pool.options().get_max_connections();
        if exhausted || PgTransactionManager::get_transaction_depth(unit.conn()) != 0 {
            return;
        }
        self.held = unit.0.take();
    }

    /// Rolls `unit` back; its connection is kept if that worked.
    async fn rollback(&mut self, mut unit: Unit) {
        if let Ok(Ok(())) =
            tokio::time::timeout(self.db_timeout, PgTransactionManager::rollback(unit.conn())).await
        {
            self.keep(unit);
        }
    }

    /// Runs `op` with the configured statement deadline; a timeout is an infrastructure failure.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.db_timeout, op).await {
            Ok(result) => result.map_err(db_error),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> SinkError {
        SinkError::Unavailable(HandlerError::infrastructure(format!(
            "database statement timed out after {:?}",
            self.db_timeout
        )))
    }

    /// Stores `position` (compare-and-set on the generation) and commits `tx`.
    async fn store_and_commit(
        &mut self,
        mut tx: Unit,
        position: &Position,
    ) -> Result<(), SinkError> {
        // The unit's own transaction, and only it, must be open: a handler that left a savepoint open (depth 2)
        // would make the `COMMIT` below only release it, and one whose failed nested `begin()` rolled the whole
        // transaction back (depth 0) would store the position without the unit's writes.
        let depth = PgTransactionManager::get_transaction_depth(tx.conn());
        if depth != 1 {
            return Err(SinkError::Unavailable(HandlerError::transient(format!(
                "the unit's transaction is not the only one open (depth {depth}): a handler left a nested \
                 transaction open or rolled the unit back; the unit is rolled back and retried"
            ))));
        }
        let stored = match self.generation {
            Some(expected) => {
                let update = sqlx::query_scalar::<_, i64>(
                    "UPDATE consumer_offsets SET next_offset = $4, ahead = $5, generation = generation + 1, \
                            updated_at = now() \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND generation = $6 \
                     RETURNING generation",
                )
                .bind(&self.group)
                .bind(&*self.topic)
                .bind(self.partition)
                .bind(position.next)
                .bind(&position.ahead)
                .bind(expected)
                .fetch_optional(tx.conn());
                self.bounded(update).await?
            }
            None => {
                let insert = sqlx::query_scalar::<_, i64>(
                    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, ahead, generation) \
                     VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT DO NOTHING RETURNING generation",
                )
                .bind(&self.group)
                .bind(&*self.topic)
                .bind(self.partition)
                .bind(position.next)
                .bind(&position.ahead)
                .fetch_optional(tx.conn());
                self.bounded(insert).await?
            }
        };
        let Some(generation) = stored else {
            self.rollback(tx).await;
            tracing::warn!(
                expected = ?self.generation, next = position.next,
                "the stored position moved under us: another consumer owns this partition; stopping (fenced)"
            );
            return Err(SinkError::Fenced);
        };
        // Whether a failed commit happened is unknown; the next compare-and-set tells (and fences us if it did).
        self.bounded(PgTransactionManager::commit(tx.conn()))
            .await?;
        self.keep(tx);
        self.generation = Some(generation);
        Ok(())
    }
}

impl LaneSink for Sink {
    type Unit = Unit;

    fn gaps(&self) -> bool {
        true
    }

    fn keeps_partial(&self) -> bool {
        false
    }

    async fn begin(&mut self) -> Result<Self::Unit, SinkError> {
        self.open().await
    }

    fn db(unit: &mut Self::Unit) -> Option<&mut PgConnection> {
        Some(unit.conn())
    }

    async fn commit(
        &mut self,
        unit: Self::Unit,
        outputs: Vec<OutputRecord>,
        position: &Position,
    ) -> Result<(), SinkError> {
        if let Err(error) = produce::send_all(&self.producer, &outputs, self.produce_timeout).await
        {
            self.rollback(unit).await;
            return Err(classify(error));
        }
        self.store_and_commit(unit, position).await
    }

    async fn abort(&mut self, unit: Self::Unit) {
        self.rollback(unit).await;
    }

    async fn dead_letter(
        &mut self,
        letter: OutputRecord,
        position: &Position,
    ) -> Result<(), SinkError> {
        // The acknowledgement can take up to the produce timeout: the kept connection goes back to the pool
        // rather than waiting with the lane.
        self.held = None;
        produce::send_all(&self.producer, &[letter], self.produce_timeout)
            .await
            .map_err(classify)?;
        let tx = self.open().await?;
        self.store_and_commit(tx, position).await
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        None
    }

    async fn flush(&mut self, _position: &Position) -> Result<(), SinkError> {
        Ok(())
    }

    fn idle(&mut self) {
        self.held = None;
    }

    async fn close(&mut self, _position: &Position, _graceful: bool) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    //! The sink's connection handling against the real PostgreSQL (`make up`); no broker (nothing is produced).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    async fn sink(pool: &PgPool) -> Sink {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let delivery = DbOffsets {
            pool: pool.clone(),
            producer,
            group: "g".into(),
            runtime: Handle::current(),
            db_timeout: Duration::from_secs(10),
            produce_timeout: Duration::from_secs(1),
            without_row: Seek::Beginning,
        };
        let partitions = [(Arc::<str>::from("t"), 0)];
        let assign = tokio::task::spawn_blocking(move || delivery.assign(&partitions));
        let mut assigned = assign.await.unwrap().unwrap();
        assigned.pop().unwrap().sink
    }

    async fn backend_pid(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    fn position(next: i64) -> Position {
        Position {
            next,
            ahead: Vec::new(),
        }
    }

    async fn pool(url: &str, max: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .unwrap()
    }

    /// Waits until every connection of `pool` is back in it (returning one is asynchronous).
    async fn all_idle(pool: &PgPool) {
        for _ in 0..500 {
            if pool.num_idle() == pool.size() as usize {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} of {} connections idle", pool.num_idle(), pool.size());
    }

    async fn database_with_a_sink_table() -> testkit::TestDb {
        let db = testkit::fresh_database().await;
        sqlx::query("CREATE TABLE sink (v int)")
            .execute(&db.pool)
            .await
            .unwrap();
        db
    }

    /// Once every connection of `pool` is back, the one it hands out is in no transaction.
    async fn assert_back_outside_any_transaction(pool: &PgPool) {
        all_idle(pool).await;
        let mut conn = pool.acquire().await.unwrap();
        let savepoint = sqlx::raw_sql("SAVEPOINT probe").execute(&mut *conn).await;
        assert!(
            savepoint.is_err_and(|e| e.to_string().contains("transaction block")),
            "the connection came back outside any transaction"
        );
    }

    #[tokio::test]
    async fn back_to_back_units_share_a_connection_that_goes_back_to_the_pool_when_the_lane_idles()
    {
        let db = testkit::fresh_database().await;
        let pool = pool(&db.url, 4).await;
        let mut sink = sink(&pool).await;
        let mut first = sink.begin().await.unwrap();
        let pid = backend_pid(first.conn()).await;
        sink.commit(first, Vec::new(), &position(1)).await.unwrap();
        let mut second = sink.begin().await.unwrap();
        assert_eq!(
            backend_pid(second.conn()).await,
            pid,
            "the lane kept its connection"
        );
        sink.abort(second).await;
        let mut third = sink.begin().await.unwrap();
        assert_eq!(
            backend_pid(third.conn()).await,
            pid,
            "kept after a rollback too"
        );
        sink.commit(third, Vec::new(), &position(2)).await.unwrap();
        sink.idle();
        all_idle(&pool).await;
        let stored: (i64, i64) = sqlx::query_as(
            "SELECT next_offset, generation FROM consumer_offsets WHERE consumer_group = 'g'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            stored,
            (2, 2),
            "two commits, the rolled back unit left nothing"
        );
    }

    #[tokio::test]
    async fn the_last_connection_of_a_pool_is_never_kept_from_others() {
        let db = testkit::fresh_database().await;
        let pool = pool(&db.url, 1).await;
        let mut sink = sink(&pool).await;
        let unit = sink.begin().await.unwrap();
        sink.commit(unit, Vec::new(), &position(1)).await.unwrap();
        // The lane is busy (not idle), but the pool has nothing else to give: another task gets the connection.
        let other = tokio::time::timeout(Duration::from_secs(1), pool.acquire()).await;
        assert!(
            matches!(other, Ok(Ok(_))),
            "the pool's only connection was kept by the lane"
        );
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_replaced_without_failing_the_unit() {
        let db = testkit::fresh_database().await;
        let pool = pool(&db.url, 4).await;
        let mut sink = sink(&pool).await;
        let mut unit = sink.begin().await.unwrap();
        let pid = backend_pid(unit.conn()).await;
        sink.commit(unit, Vec::new(), &position(1)).await.unwrap();
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(killed);
        for _ in 0..500 {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut unit = sink.begin().await.expect("a unit on another connection");
        assert_ne!(backend_pid(unit.conn()).await, pid);
        sink.commit(unit, Vec::new(), &position(2)).await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_a_deferred_constraint_refuses_stores_neither_the_write_nor_the_position() {
        let db = testkit::fresh_database().await;
        sqlx::query("CREATE TABLE d (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            .execute(&db.pool)
            .await
            .unwrap();
        let pool = pool(&db.url, 4).await;
        let mut sink = sink(&pool).await;
        let mut unit = sink.begin().await.unwrap();
        // Refused only at COMMIT, after the compare-and-set.
        sqlx::query("INSERT INTO d VALUES (1), (1)")
            .execute(unit.conn())
            .await
            .unwrap();
        let failed = sink.commit(unit, Vec::new(), &position(1)).await;
        assert!(
            matches!(failed, Err(SinkError::Unavailable(_))),
            "{failed:?}"
        );
        let next = sink.begin().await.unwrap();
        sink.commit(next, Vec::new(), &position(1)).await.unwrap();
        let stored: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM d), next_offset, generation FROM consumer_offsets \
             WHERE consumer_group = 'g'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(stored, (0, 1, 1), "only the second unit's position");
    }

    #[tokio::test]
    async fn a_commit_whose_answer_comes_after_the_deadline_counts_once_and_the_next_compare_and_set_fences_the_lane()
     {
        let db = testkit::fresh_database().await;
        // A COMMIT that takes 300 ms on the server: a deferred constraint trigger sleeps before the commit.
        sqlx::raw_sql(
            "CREATE TABLE slow (v int);
             CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let pool = pool(&db.url, 4).await;
        let mut sink = sink(&pool).await;
        let unit = sink.begin().await.unwrap();
        sink.commit(unit, Vec::new(), &position(1)).await.unwrap();
        let mut unit = sink.begin().await.unwrap();
        sqlx::query("INSERT INTO slow VALUES (2)")
            .execute(unit.conn())
            .await
            .unwrap();
        // The deadline passes while the server commits.
        let deadline = std::mem::replace(&mut sink.db_timeout, Duration::from_millis(100));
        let lost = sink.commit(unit, Vec::new(), &position(2)).await;
        assert!(matches!(lost, Err(SinkError::Unavailable(_))), "{lost:?}");
        sink.db_timeout = deadline;
        // The server did commit; the lane cannot know, and must not store again from the generation it had.
        let mut committed = false;
        for _ in 0..500 {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM slow")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            if rows == 1 {
                committed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(committed, "the server finished the commit");
        let mut unit = sink.begin().await.unwrap();
        sqlx::query("INSERT INTO slow VALUES (2)")
            .execute(unit.conn())
            .await
            .unwrap();
        let redone = sink.commit(unit, Vec::new(), &position(2)).await;
        assert!(matches!(redone, Err(SinkError::Fenced)), "{redone:?}");
        let stored: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM slow), next_offset, generation FROM consumer_offsets \
             WHERE consumer_group = 'g'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            stored,
            (1, 2, 2),
            "the commit whose answer was lost counted once"
        );
    }

    #[tokio::test]
    async fn a_dead_letter_gives_the_kept_connection_back_before_its_acknowledgement_wait() {
        let db = testkit::fresh_database().await;
        let pool = pool(&db.url, 4).await;
        let mut sink = sink(&pool).await;
        let unit = sink.begin().await.unwrap();
        sink.commit(unit, Vec::new(), &position(1)).await.unwrap();
        assert!(
            pool.num_idle() < pool.size() as usize,
            "the lane kept its connection"
        );
        // The test's producer has no broker: the dead letter waits the whole produce timeout (1 s), then fails.
        let letter = OutputRecord::new("t.dlq", "k", "v");
        let at = position(2);
        let (sent, during) = tokio::join!(sink.dead_letter(letter, &at), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            (pool.num_idle(), pool.size() as usize)
        });
        assert!(sent.is_err(), "no broker acknowledged it");
        assert_eq!(
            during.0, during.1,
            "every connection back in the pool during the wait"
        );
    }

    #[tokio::test]
    async fn a_session_the_server_ended_for_idling_in_a_transaction_is_an_infrastructure_failure() {
        let db = testkit::fresh_database().await;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET idle_in_transaction_session_timeout = '100ms'")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect(&db.url)
            .await
            .unwrap();
        let mut sink = sink(&pool).await;
        let mut unit = sink.begin().await.unwrap();
        // A handler that idles in the unit's transaction longer than the server allows.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = sqlx::query("SELECT 1")
            .execute(unit.conn())
            .await
            .expect_err("the server ended the session");
        assert_eq!(
            classify_sqlx(&err),
            ErrorClass::Infrastructure,
            "{}",
            service_kit::telemetry::error_chain(&err)
        );
    }

    #[tokio::test]
    async fn a_unit_whose_handler_left_a_nested_transaction_open_is_not_committed() {
        let db = database_with_a_sink_table().await;
        let pool = pool(&db.url, 1).await;
        let mut sink = sink(&pool).await;
        let mut unit = sink.begin().await.unwrap();
        let conn = Sink::db(&mut unit).unwrap();
        sqlx::query("INSERT INTO sink VALUES (1)")
            .execute(&mut *conn)
            .await
            .unwrap();
        // A savepoint the handler never releases (its `Transaction` leaked): `COMMIT` would only release it.
        std::mem::forget(sqlx::Connection::begin(&mut *conn).await.unwrap());
        let refused = sink.commit(unit, Vec::new(), &position(1)).await;
        assert!(
            matches!(refused, Err(SinkError::Unavailable(_))),
            "{refused:?}"
        );
        drop(sink);
        let (rows, positions): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sink), (SELECT count(*) FROM consumer_offsets)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            (rows, positions),
            (0, 0),
            "neither the write nor the position"
        );
        assert_back_outside_any_transaction(&pool).await;
    }

    #[tokio::test]
    async fn a_unit_dropped_open_leaves_nothing_and_its_connection_stays_usable() {
        let db = database_with_a_sink_table().await;
        let pool = pool(&db.url, 1).await;
        let mut sink = sink(&pool).await;
        let mut unit = sink.begin().await.unwrap();
        sqlx::query("INSERT INTO sink VALUES (1)")
            .execute(Sink::db(&mut unit).unwrap())
            .await
            .unwrap();
        // As when the lane's future is cancelled mid-unit.
        drop(unit);
        drop(sink);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sink")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 0, "the dropped unit's insert was rolled back");
        assert_back_outside_any_transaction(&pool).await;
    }

    #[tokio::test]
    async fn a_kept_connection_goes_back_through_the_pool_at_the_latest_after_the_hold() {
        let db = testkit::fresh_database().await;
        let acquired = Arc::new(AtomicUsize::new(0));
        let (on_acquire, on_connect) = (acquired.clone(), acquired.clone());
        // Counts the connections the pool hands out, idle ones (after its test) and new ones: one per trip
        // through the pool.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .before_acquire(move |_, _| {
                let counter = on_acquire.clone();
                Box::pin(async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(true)
                })
            })
            .after_connect(move |_, _| {
                let counter = on_connect.clone();
                Box::pin(async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
            .connect(&db.url)
            .await
            .unwrap();
        let mut sink = sink(&pool).await;
        let taken = acquired.load(Ordering::SeqCst);
        let started = Instant::now();
        for next in 1..=5 {
            let unit = sink.begin().await.unwrap();
            sink.commit(unit, Vec::new(), &position(next))
                .await
                .unwrap();
        }
        // One trip through the pool, and at most one more per HOLD the five units took (a loaded machine).
        let trips = acquired.load(Ordering::SeqCst) - taken;
        let holds = (started.elapsed().as_millis() / HOLD.as_millis()) as usize;
        assert!(
            (1..=1 + holds).contains(&trips),
            "back-to-back units within the hold take one connection from the pool: {trips} trips in {holds} holds"
        );
        // Still busy (never idle), but the connection has been out of the pool longer than HOLD.
        tokio::time::sleep(HOLD + Duration::from_millis(100)).await;
        let before = acquired.load(Ordering::SeqCst);
        let unit = sink.begin().await.unwrap();
        sink.commit(unit, Vec::new(), &position(6)).await.unwrap();
        assert_eq!(
            acquired.load(Ordering::SeqCst),
            before + 1,
            "after the hold the unit went through the pool (and its test) again"
        );
    }

    #[tokio::test]
    async fn a_begin_cut_off_after_it_reached_the_server_closes_its_connection() {
        use futures_util::FutureExt;
        let db = testkit::fresh_database().await;
        let proxy = testkit::pg_proxy::PgProxy::start(&db.url).await;
        let pool = pool(&proxy.url(&db.url), 1).await;
        let mut conn = pool.acquire().await.unwrap();
        let pid = backend_pid(&mut conn).await;
        // Polled once: the `BEGIN` is written, and the future dropped before its answer (held back by the proxy)
        // — as a lane's timeout or cancellation would.
        proxy.slow_answers(true);
        assert!(
            begin_on(&mut conn).now_or_never().is_none(),
            "the BEGIN was still waiting for its answer"
        );
        drop(conn);
        proxy.slow_answers(false);
        let mut next = pool.acquire().await.unwrap();
        let next_pid = backend_pid(&mut next).await;
        assert_ne!(
            next_pid, pid,
            "the connection of the cut-off BEGIN was closed, not pooled"
        );
        drop(next);
        assert_back_outside_any_transaction(&pool).await;
    }
}
