//! Mode (b), exactly-once into PostgreSQL: the handler's writes, the outputs' acknowledgement and the lane's
//! position commit in one database transaction.
//!
//! Guarantees:
//! - Units (a batch, or one record) run in a transaction that also stores the lane's [`Position`] in
//!   `consumer_offsets` (`next_offset`, and `ahead`: offsets above it that are done too). When the group's
//!   handler allows it (`shares_transactions`; a handler that appends to the outbox must not), back-to-back units
//!   of a lane share one transaction (decision 0056); otherwise each unit has its own. Shared: the first opens it, each later one runs behind a savepoint of
//!   its own, and the transaction stores the position after its last unit and commits when the lane is about to
//!   wait for anything (for records: after [`LINGER`], unless the pool has no other connection to give), when it
//!   holds [`GroupCommit::MAX_UNITS`] units, or once it is `transaction_commit_interval` old. Whatever the
//!   handlers wrote commits with that position or not at all; a unit that fails rolls back to its savepoint (or,
//!   alone in its transaction, all of it), so a failed unit leaves no trace and the units before it stay
//!   (handlers of this mode keep their effects in the transaction). `now()` in a handler dates from its
//!   transaction's start.
//! - When the lane goes idle, the open transaction commits on a task of its own; the next commit, flush or close
//!   takes its result first, so positions commit in order. A commit that fails after its units were done for
//!   the lane (handed off, or of several units) loses them: the sink asks for the pipeline to be re-created
//!   ([`SinkError::Restart`]), which resumes from the stored positions and redoes them — as mode (a) does with a
//!   failed transaction. Only a unit whose own commit fails, alone in its transaction, fails by itself: the lane
//!   retries it.
//! - The position is written with a compare-and-set on its `generation` (`UPDATE … WHERE generation =
//!   expected`, or an insert when there was no row): a consumer that lost the partition — a zombie — finds
//!   another generation, rolls back and stops ([`SinkError::Fenced`]). Exactly one transaction can move a
//!   position from a given generation, so each record's writes commit exactly once.
//! - On assignment the stored positions are read first; fetching starts at `next_offset`, the `ahead` offsets
//!   are skipped when they arrive, and a partition **with no stored row starts at the beginning of its topic**
//!   (or its end, when `auto_offset_reset = "latest"` says so) — never at Kafka's committed offset, which this
//!   mode writes for lag tools only.
//! - A lane keeps its connection from one transaction to the next (`BEGIN`, the handlers' statements, the
//!   compare-and-set, `COMMIT` — without the pool's test on every acquire and release), for at most [`HOLD`]
//!   before handing it back to the pool, at once when it has nothing to do or must wait (a retry, the breaker, a
//!   handler slot, a dead letter's acknowledgement), and never when the pool has no other connection to give. A
//!   kept connection that the server closed is replaced before the unit starts on it; one whose `BEGIN` did not
//!   complete is closed, never pooled. (A `COMMIT; BEGIN` that would save the next unit's round trip was
//!   measured and not taken: decision 0053.)
//! - A unit is kept only when its transaction is the only one open: a handler's savepoint left open fails the
//!   unit instead, and a nested `begin()` that rolled the whole transaction back fails it too — with the units
//!   before it, for which the sink asks for a restart.
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
use tokio::task::JoinHandle;
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
    /// How a lane groups its units into transactions.
    pub group_commit: GroupCommit,
}

/// How a lane groups back-to-back units into one transaction (decision 0056): the first unit opens it, each
/// later one runs behind a savepoint, and the transaction stores the position and commits when the lane is about
/// to wait, when it holds `max_units` units, or once it is `interval` old — whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupCommit {
    pub interval: Duration,
    pub max_units: u32,
}

impl GroupCommit {
    /// At most 16 units: each after the first is a subtransaction, and PostgreSQL keeps up to 64 of a
    /// transaction's subtransaction ids in shared memory before every snapshot must look them up on disk.
    pub const MAX_UNITS: u32 = 16;
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
                        group_commit: self.group_commit,
                        open: None,
                        committing: None,
                        broken: None,
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
    group_commit: GroupCommit,
    /// The transaction of units done but not committed yet.
    open: Option<Open>,
    /// The commit of a transaction handed off when the lane went idle; its result is the new generation.
    committing: Option<JoinHandle<Result<i64, SinkError>>>,
    /// Why the open transaction was lost (a unit's rollback to its savepoint failed, or a handed-off commit
    /// did): the units in it are not durable, so the lane must start over from the stored position.
    broken: Option<String>,
}

/// A transaction of done units that has not stored its position yet.
struct Open {
    /// Its connection between units; `None` while the next unit is out with the lane.
    unit: Option<Unit>,
    /// Done units in it (not one out with the lane, nor a failed one rolled back to its savepoint).
    units: u32,
    since: Instant,
    /// The position after its last done unit.
    position: Position,
    /// Whether a savepoint `unit` exists in it (from the second unit on).
    savepoint: bool,
    /// While the lane waits for records: until when the transaction waits for more units.
    linger: Option<Instant>,
}

/// How long an open transaction waits for the lane's next records before it commits: what a backlog arriving
/// in batches a few milliseconds apart needs to group them (the 10 ms the spec gives the producer's
/// `linger.ms`), and the most it adds to a record's commit when records are sparse.
const LINGER: Duration = Duration::from_millis(10);

/// [`Sink::broken`] after a handed-off commit found another consumer owning the partition.
const FENCED: &str = "fenced";

/// The row of a lane's position, and the statement deadline.
#[derive(Clone)]
struct Row {
    group: String,
    topic: Arc<str>,
    partition: i32,
    timeout: Duration,
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
                Err(_) => return Err(timed_out(self.db_timeout)),
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
        if self.pool_exhausted() || PgTransactionManager::get_transaction_depth(unit.conn()) != 0 {
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

    /// Runs `op` with the configured statement deadline ([`within`]).
    async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, SinkError> {
        within(self.db_timeout, op).await
    }

    /// Whether the pool has no connection left to give: another task may be waiting for the one this lane holds.
    fn pool_exhausted(&self) -> bool {
        self.pool.num_idle() == 0 && self.pool.size() >= self.pool.options().get_max_connections()
    }

    fn row(&self) -> Row {
        Row {
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            timeout: self.db_timeout,
        }
    }

    /// Fails when the open transaction was lost (its units are not durable) or a commit found the lane fenced.
    fn check(&self) -> Result<(), SinkError> {
        match self.broken.as_deref() {
            Some(FENCED) => Err(SinkError::Fenced),
            Some(why) => Err(SinkError::Restart(why.to_string())),
            None => Ok(()),
        }
    }

    /// Loses the open transaction (rolled back when its connection is dropped) and fails every later call.
    fn lose(&mut self, why: String) -> SinkError {
        tracing::warn!(reason = %why, "the lane's open transaction is lost; the lane starts over from the stored position");
        self.open = None;
        self.broken = Some(why.clone());
        SinkError::Restart(why)
    }

    /// A commit found another consumer owning the partition (and rolled back): whatever is open goes with it,
    /// and every later call says so.
    fn fenced(&mut self) -> SinkError {
        self.open = None;
        self.broken = Some(FENCED.into());
        SinkError::Fenced
    }

    /// A commit failed holding `done` units the lane already counts as done besides the one it still holds:
    /// none, and the failure is that unit's (the lane retries it); any, and they are lost with the transaction.
    fn commit_failed(&mut self, error: SinkError, done: u32) -> SinkError {
        match error {
            SinkError::Fenced | SinkError::Restart(_) => error,
            error if done == 0 => error,
            error => self.lose(format!(
                "committing {done} done units failed: {}",
                sink_error_text(&error)
            )),
        }
    }

    /// Waits for a handed-off commit and takes its generation; a commit that failed loses its units.
    async fn settle(&mut self) -> Result<(), SinkError> {
        self.check()?;
        let Some(task) = self.committing.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(generation)) => {
                self.generation = Some(generation);
                Ok(())
            }
            Ok(Err(SinkError::Fenced)) => Err(self.fenced()),
            Ok(Err(error)) => Err(self.lose(format!(
                "the commit of the lane's last units failed: {}",
                sink_error_text(&error)
            ))),
            Err(join) => Err(self.lose(format!(
                "the commit of the lane's last units did not finish: {join}"
            ))),
        }
    }

    /// Stores `position` and commits `unit` on this task; keeps the connection for the next unit.
    async fn commit_now(&mut self, mut unit: Unit, position: &Position) -> Result<(), SinkError> {
        self.settle().await?;
        match store_and_commit(&mut unit, &self.row(), self.generation, position).await {
            Ok(generation) => {
                self.generation = Some(generation);
                self.keep(unit);
                Ok(())
            }
            Err(SinkError::Fenced) => Err(self.fenced()),
            Err(error) => Err(error),
        }
    }

    /// Commits the open transaction, if any, with `position`. Its units are already done for the lane, so a
    /// failure loses them: the lane must start over from the stored position.
    async fn commit_open(&mut self, position: &Position) -> Result<(), SinkError> {
        let Some(mut open) = self.open.take() else {
            return self.settle().await;
        };
        let unit = open
            .unit
            .take()
            .expect("between units the open transaction's connection is parked");
        match self.commit_now(unit, position).await {
            Ok(()) => Ok(()),
            Err(error) => Err(self.commit_failed(error, open.units)),
        }
    }

    /// Undoes a unit that ran behind the savepoint `unit`: back to the savepoint, the units before it kept.
    async fn undo_to_savepoint(&mut self, unit: &mut Unit) -> Result<(), String> {
        while PgTransactionManager::get_transaction_depth(unit.conn()) > 1 {
            self.bounded(PgTransactionManager::rollback(unit.conn()))
                .await
                .map_err(|e| {
                    format!(
                        "rolling back a handler's savepoint failed: {}",
                        sink_error_text(&e)
                    )
                })?;
        }
        if PgTransactionManager::get_transaction_depth(unit.conn()) == 0 {
            return Err(
                "a handler rolled back the whole transaction, with the units before its own".into(),
            );
        }
        self.bounded(sqlx::raw_sql("ROLLBACK TO SAVEPOINT unit").execute(unit.conn()))
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "rolling back to the unit's savepoint failed: {}",
                    sink_error_text(&e)
                )
            })
    }
}

/// A sink error's text with its cause chain.
fn sink_error_text(error: &SinkError) -> String {
    match error {
        SinkError::Unavailable(e) | SinkError::Permanent(e) => e.chain(),
        SinkError::Fenced => "fenced".into(),
        SinkError::Restart(why) => why.clone(),
    }
}

/// Runs `op` within `timeout`; a timeout is an infrastructure failure.
async fn within<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result.map_err(db_error),
        Err(_) => Err(timed_out(timeout)),
    }
}

fn timed_out(timeout: Duration) -> SinkError {
    SinkError::Unavailable(HandlerError::infrastructure(format!(
        "database statement timed out after {timeout:?}"
    )))
}

/// The unit's own transaction, and only it, must be open: a handler that left a savepoint open (depth 2) would
/// make the `COMMIT` only release it, and one whose failed nested `begin()` rolled the whole transaction back
/// (depth 0) would store the position without the unit's writes.
fn only_its_transaction_open(unit: &mut Unit) -> Result<(), SinkError> {
    match PgTransactionManager::get_transaction_depth(unit.conn()) {
        1 => Ok(()),
        depth => Err(SinkError::Unavailable(HandlerError::transient(format!(
            "the unit's transaction is not the only one open (depth {depth}): a handler left a nested \
             transaction open or rolled the unit back; the unit is rolled back and retried"
        )))),
    }
}

/// Stores `position` in `row` with a compare-and-set from `expected` (`None`: no row yet) and commits `unit`;
/// the new generation. Fenced (and rolled back) when the stored generation is another.
async fn store_and_commit(
    unit: &mut Unit,
    row: &Row,
    expected: Option<i64>,
    position: &Position,
) -> Result<i64, SinkError> {
    only_its_transaction_open(unit)?;
    let stored = match expected {
        Some(expected) => {
            let update = sqlx::query_scalar::<_, i64>(
                "UPDATE consumer_offsets SET next_offset = $4, ahead = $5, generation = generation + 1, \
                        updated_at = now() \
                 WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND generation = $6 \
                 RETURNING generation",
            )
            .bind(&row.group)
            .bind(&*row.topic)
            .bind(row.partition)
            .bind(position.next)
            .bind(&position.ahead)
            .bind(expected)
            .fetch_optional(unit.conn());
            within(row.timeout, update).await?
        }
        None => {
            let insert = sqlx::query_scalar::<_, i64>(
                "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, ahead, generation) \
                 VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT DO NOTHING RETURNING generation",
            )
            .bind(&row.group)
            .bind(&*row.topic)
            .bind(row.partition)
            .bind(position.next)
            .bind(&position.ahead)
            .fetch_optional(unit.conn());
            within(row.timeout, insert).await?
        }
    };
    let Some(generation) = stored else {
        let _ = within(row.timeout, PgTransactionManager::rollback(unit.conn())).await;
        tracing::warn!(
            ?expected,
            next = position.next,
            "the stored position moved under us: another consumer owns this partition; stopping (fenced)"
        );
        return Err(SinkError::Fenced);
    };
    // Whether a failed commit happened is unknown; the next compare-and-set tells (and fences us if it did).
    within(row.timeout, PgTransactionManager::commit(unit.conn())).await?;
    Ok(generation)
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
        // A commit handed off at the last wait finishes first: the next unit's statements, on another
        // connection, must see what the units before it wrote.
        self.settle().await?;
        let Some(open) = self.open.as_mut() else {
            return self.open().await;
        };
        open.linger = None;
        // A later unit of the open transaction: behind a savepoint of its own (the previous one released, so
        // that savepoints do not nest), which its failure rolls back to.
        let mut unit = open
            .unit
            .take()
            .expect("between units the open transaction's connection is parked");
        let sql = if open.savepoint {
            "RELEASE SAVEPOINT unit; SAVEPOINT unit"
        } else {
            "SAVEPOINT unit"
        };
        match self.bounded(sqlx::raw_sql(sql).execute(unit.conn())).await {
            Ok(_) => {
                if let Some(open) = self.open.as_mut() {
                    open.savepoint = true;
                }
                Ok(unit)
            }
            Err(error) => Err(self.lose(format!(
                "a savepoint for the next unit failed: {}",
                sink_error_text(&error)
            ))),
        }
    }

    fn db(unit: &mut Self::Unit) -> Option<&mut PgConnection> {
        Some(unit.conn())
    }

    async fn commit(
        &mut self,
        mut unit: Self::Unit,
        outputs: Vec<OutputRecord>,
        position: &Position,
    ) -> Result<(), SinkError> {
        if let Err(error) = produce::send_all(&self.producer, &outputs, self.produce_timeout).await
        {
            self.abort(unit).await;
            return Err(classify(error));
        }
        if let Err(error) = only_its_transaction_open(&mut unit) {
            self.abort(unit).await;
            self.check()?;
            return Err(error);
        }
        let (units, since) = match &self.open {
            Some(open) => (open.units + 1, open.since),
            None => (1, Instant::now()),
        };
        if units < self.group_commit.max_units
            && since.elapsed() < self.group_commit.interval
            && !self.pool_exhausted()
        {
            self.open = Some(Open {
                unit: Some(unit),
                units,
                since,
                position: position.clone(),
                savepoint: self.open.as_ref().is_some_and(|o| o.savepoint),
                linger: None,
            });
            return Ok(());
        }
        self.open = None;
        match self.commit_now(unit, position).await {
            Ok(()) => Ok(()),
            // The units before this one were done for the lane: they are lost with the transaction.
            Err(error) => Err(self.commit_failed(error, units - 1)),
        }
    }

    async fn abort(&mut self, mut unit: Self::Unit) {
        if self.open.is_none() {
            // The unit's own transaction.
            self.rollback(unit).await;
            return;
        }
        match self.undo_to_savepoint(&mut unit).await {
            Ok(()) => {
                if let Some(open) = self.open.as_mut() {
                    open.unit = Some(unit);
                }
            }
            Err(why) => {
                let _ = self.lose(why);
            }
        }
    }

    async fn dead_letter(
        &mut self,
        letter: OutputRecord,
        position: &Position,
    ) -> Result<(), SinkError> {
        // Not when the units before it were lost: the lane starts over, and would dead-letter the record again.
        self.check()?;
        // The units before it commit first, and the kept connection goes back to the pool rather than waiting
        // with the lane: the acknowledgement can take up to the produce timeout.
        if let Some(before) = self.open.as_ref().map(|o| o.position.clone()) {
            self.commit_open(&before).await?;
        }
        self.held = None;
        produce::send_all(&self.producer, &[letter], self.produce_timeout)
            .await
            .map_err(classify)?;
        self.settle().await?;
        let tx = self.open().await?;
        self.commit_now(tx, position).await
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        self.open.as_ref().map(|open| {
            let end = open.since + self.group_commit.interval;
            open.linger.map_or(end, |linger| linger.min(end))
        })
    }

    async fn flush(&mut self, position: &Position) -> Result<(), SinkError> {
        self.check()?;
        self.commit_open(position).await
    }

    /// The lane is about to wait: the open transaction commits on a task of its own (the lane need not wait
    /// for it; the next unit's commit, or a later flush, takes its result), and the kept connection goes back.
    fn idle(&mut self) {
        self.held = None;
        let Some(mut open) = self.open.take() else {
            return;
        };
        let Some(mut unit) = open.unit.take() else {
            return;
        };
        let row = self.row();
        let previous = self.committing.take();
        let expected = self.generation;
        let position = open.position;
        self.committing = Some(tokio::spawn(async move {
            // Positions commit in order: this one's compare-and-set expects the generation the one before wrote.
            let expected = match previous {
                None => expected,
                Some(previous) => match previous.await {
                    Ok(Ok(generation)) => Some(generation),
                    Ok(Err(error)) => return Err(error),
                    Err(join) => {
                        return Err(SinkError::Restart(format!(
                            "the commit before did not finish: {join}"
                        )));
                    }
                },
            };
            store_and_commit(&mut unit, &row, expected, &position).await
        }));
    }

    /// The open transaction waits [`LINGER`] for the next records — unless the pool has no other connection to
    /// give, when it commits now as at any other wait.
    fn awaiting_records(&mut self) {
        let exhausted = self.pool_exhausted();
        match self.open.as_mut() {
            Some(open) if !exhausted && open.unit.is_some() => {
                open.linger = Some(Instant::now() + LINGER);
            }
            _ => self.idle(),
        }
    }

    async fn close(&mut self, position: &Position, graceful: bool) {
        if graceful && self.broken.is_none() {
            if let Err(error) = self.commit_open(position).await {
                tracing::warn!(
                    error = %sink_error_text(&error),
                    "the lane's last units did not commit; the next owner redoes them"
                );
            }
        } else {
            // Rolled back here: the next owner redoes these units. A commit already handed off is waited for,
            // not cut off (a cancelled statement leaves its connection in an unknown state): whether it lands
            // before the next owner reads the position or after (and fences it), nothing is applied twice.
            self.open = None;
            if let Some(task) = self.committing.take() {
                let _ = task.await;
            }
        }
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    //! The sink's connection handling against the real PostgreSQL (`make up`); no broker (nothing is produced).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// A sink committing every unit on its own, as before units were grouped (the connection tests below).
    async fn sink(pool: &PgPool) -> Sink {
        grouped_sink(pool, 1).await
    }

    /// A sink grouping up to `max_units` units per transaction, with an interval the tests never reach.
    async fn grouped_sink(pool: &PgPool, max_units: u32) -> Sink {
        sink_with(
            pool,
            GroupCommit {
                interval: Duration::from_secs(60),
                max_units,
            },
        )
        .await
    }

    async fn sink_with(pool: &PgPool, group_commit: GroupCommit) -> Sink {
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
            group_commit,
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

    // Grouped units (decision 0056).

    async fn write(unit: &mut Unit, value: i32) {
        sqlx::query("INSERT INTO sink VALUES ($1)")
            .bind(value)
            .execute(unit.conn())
            .await
            .unwrap();
    }

    /// A database with the sink table, a pool of 4 and a sink grouping up to `max_units` units.
    async fn grouped(max_units: u32) -> (testkit::TestDb, PgPool, Sink) {
        let db = database_with_a_sink_table().await;
        let pool = pool(&db.url, 4).await;
        let sink = grouped_sink(&pool, max_units).await;
        (db, pool, sink)
    }

    /// One unit that writes `value` and is done at `next`.
    async fn done_unit(sink: &mut Sink, value: i32, next: i64) {
        let mut unit = sink.begin().await.unwrap();
        write(&mut unit, value).await;
        sink.commit(unit, Vec::new(), &position(next))
            .await
            .unwrap();
    }

    /// The sink table's values, and the stored position and generation (`None`: no row).
    async fn stored(pool: &PgPool) -> (Vec<i32>, Option<(i64, i64)>) {
        let values: Vec<i32> = sqlx::query_scalar("SELECT v FROM sink ORDER BY v")
            .fetch_all(pool)
            .await
            .unwrap();
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT next_offset, generation FROM consumer_offsets WHERE consumer_group = 'g'",
        )
        .fetch_optional(pool)
        .await
        .unwrap();
        (values, row)
    }

    #[tokio::test]
    async fn back_to_back_units_commit_together_with_the_last_position_and_nothing_shows_before() {
        let (db, _pool, mut sink) = grouped(16).await;
        for (value, next) in [(1, 10), (2, 20)] {
            let mut unit = sink.begin().await.unwrap();
            write(&mut unit, value).await;
            sink.commit(unit, Vec::new(), &position(next))
                .await
                .unwrap();
            assert_eq!(
                stored(&db.pool).await,
                (vec![], None),
                "nothing committed yet"
            );
        }
        assert!(
            sink.due().is_some(),
            "the open transaction is due some time"
        );
        sink.flush(&position(20)).await.unwrap();
        assert_eq!(sink.due(), None);
        assert_eq!(
            stored(&db.pool).await,
            (vec![1, 2], Some((20, 1))),
            "one commit, both units"
        );
    }

    #[tokio::test]
    async fn a_failed_unit_behind_a_savepoint_rolls_back_alone_and_the_units_around_it_commit() {
        let (db, _pool, mut sink) = grouped(16).await;
        done_unit(&mut sink, 1, 1).await;
        let mut failed = sink.begin().await.unwrap();
        write(&mut failed, 2).await;
        // A statement error leaves the transaction aborted until the rollback to the unit's savepoint.
        sqlx::query("SELECT 1/0")
            .execute(failed.conn())
            .await
            .unwrap_err();
        sink.abort(failed).await;
        done_unit(&mut sink, 3, 3).await;
        sink.flush(&position(3)).await.unwrap();
        assert_eq!(stored(&db.pool).await, (vec![1, 3], Some((3, 1))));
    }

    #[tokio::test]
    async fn a_transaction_handed_off_at_idle_commits_on_its_own_and_the_next_one_follows_its_generation()
     {
        let (db, _pool, mut sink) = grouped(16).await;
        done_unit(&mut sink, 1, 1).await;
        sink.idle();
        assert_eq!(
            sink.due(),
            None,
            "handed off: nothing left for the lane to flush"
        );
        done_unit(&mut sink, 2, 2).await;
        sink.flush(&position(2)).await.unwrap();
        assert_eq!(
            stored(&db.pool).await,
            (vec![1, 2], Some((2, 2))),
            "two commits in order: the second's compare-and-set expected the first's generation"
        );
    }

    #[tokio::test]
    async fn the_unit_that_fills_a_transaction_commits_it() {
        let (db, _pool, mut sink) = grouped(2).await;
        done_unit(&mut sink, 1, 1).await;
        assert_eq!(stored(&db.pool).await, (vec![], None));
        done_unit(&mut sink, 2, 2).await;
        assert_eq!(
            stored(&db.pool).await,
            (vec![1, 2], Some((2, 1))),
            "committed by the second unit"
        );
        assert_eq!(sink.due(), None);
    }

    #[tokio::test]
    async fn a_handed_off_commit_that_fails_loses_its_units_and_every_later_call_asks_for_a_restart()
     {
        let db = testkit::fresh_database().await;
        sqlx::query("CREATE TABLE d (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            .execute(&db.pool)
            .await
            .unwrap();
        let pool = pool(&db.url, 4).await;
        let mut sink = grouped_sink(&pool, 16).await;
        for next in [1, 2] {
            let mut unit = sink.begin().await.unwrap();
            // The second unit's duplicate is refused only at COMMIT, on the handed-off task.
            sqlx::query("INSERT INTO d VALUES (1)")
                .execute(unit.conn())
                .await
                .unwrap();
            sink.commit(unit, Vec::new(), &position(next))
                .await
                .unwrap();
        }
        sink.idle();
        // The next unit begins only once the handed-off commit is done: here, failed.
        let failed = sink.begin().await.err();
        assert!(matches!(failed, Some(SinkError::Restart(_))), "{failed:?}");
        assert!(matches!(sink.begin().await, Err(SinkError::Restart(_))));
        assert!(matches!(
            sink.flush(&position(3)).await,
            Err(SinkError::Restart(_))
        ));
        // Refused before anything is produced (the producer here reaches no broker).
        let letter = OutputRecord::new("t.dlq", "k", "v");
        assert!(matches!(
            sink.dead_letter(letter, &position(3)).await,
            Err(SinkError::Restart(_))
        ));
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM consumer_offsets)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(rows, (0, 0), "neither transaction stored anything");
        drop(sink);
        assert_back_outside_any_transaction(&pool).await;
    }

    #[tokio::test]
    async fn a_lane_that_lost_its_partition_finds_out_at_the_commit_of_its_grouped_units() {
        let (db, _pool, mut sink) = grouped(16).await;
        done_unit(&mut sink, 1, 1).await;
        sink.flush(&position(1)).await.unwrap();
        // The next owner stores its own position.
        sqlx::query("UPDATE consumer_offsets SET next_offset = 5, generation = 7")
            .execute(&db.pool)
            .await
            .unwrap();
        for (value, next) in [(2, 2), (3, 3)] {
            let mut unit = sink.begin().await.unwrap();
            write(&mut unit, value).await;
            sink.commit(unit, Vec::new(), &position(next))
                .await
                .unwrap();
        }
        assert!(matches!(
            sink.flush(&position(3)).await,
            Err(SinkError::Fenced)
        ));
        assert!(
            matches!(sink.begin().await, Err(SinkError::Fenced)),
            "and stays fenced"
        );
        assert_eq!(
            stored(&db.pool).await,
            (vec![1], Some((5, 7))),
            "the zombie's units left nothing"
        );
    }

    #[tokio::test]
    async fn a_handler_that_rolled_back_the_whole_transaction_loses_the_units_before_it() {
        let (db, pool, mut sink) = grouped(16).await;
        done_unit(&mut sink, 1, 1).await;
        let mut second = sink.begin().await.unwrap();
        write(&mut second, 2).await;
        // What a nested `begin()` whose failure rolled back every level does.
        PgTransactionManager::rollback(second.conn()).await.unwrap();
        let failed = sink.commit(second, Vec::new(), &position(2)).await;
        assert!(matches!(failed, Err(SinkError::Restart(_))), "{failed:?}");
        assert_eq!(stored(&db.pool).await, (vec![], None));
        drop(sink);
        assert_back_outside_any_transaction(&pool).await;
    }

    #[tokio::test]
    async fn a_lane_waiting_for_records_lingers_unless_the_pool_has_nothing_left_to_give() {
        let db = database_with_a_sink_table().await;
        let four = pool(&db.url, 4).await;
        let mut sink = grouped_sink(&four, 16).await;
        done_unit(&mut sink, 1, 1).await;
        let before = Instant::now();
        sink.awaiting_records();
        let due = sink.due().expect("still open, lingering");
        assert!(
            due <= before + LINGER + Duration::from_millis(5),
            "due within the linger"
        );
        // More records come: the next unit joins the transaction and the linger ends.
        done_unit(&mut sink, 2, 2).await;
        assert!(
            sink.due().unwrap() > before + LINGER,
            "joined: back to the interval"
        );
        sink.flush(&position(2)).await.unwrap();
        assert_eq!(stored(&db.pool).await, (vec![1, 2], Some((2, 1))));

        // With the pool's only connection in the transaction, it does not linger: it commits at once.
        let single = pool(&db.url, 1).await;
        let mut sink = grouped_sink(&single, 16).await;
        done_unit(&mut sink, 3, 3).await;
        sink.awaiting_records();
        assert_eq!(sink.due(), None, "handed off");
        all_idle(&single).await;
        assert_eq!(stored(&db.pool).await, (vec![1, 2, 3], Some((3, 2))));
    }

    #[tokio::test]
    async fn a_graceful_close_commits_the_open_transaction_and_any_other_drops_it() {
        let db = database_with_a_sink_table().await;
        let pool = pool(&db.url, 4).await;
        for graceful in [false, true] {
            let mut sink = grouped_sink(&pool, 16).await;
            done_unit(&mut sink, 1, 1).await;
            sink.close(&position(1), graceful).await;
            // Either way the transaction ended at the close, with the sink still alive.
            assert_back_outside_any_transaction(&pool).await;
            let expected = if graceful {
                (vec![1], Some((1, 1)))
            } else {
                (vec![], None)
            };
            assert_eq!(stored(&db.pool).await, expected, "graceful: {graceful}");
            drop(sink);
        }
    }

    #[tokio::test]
    async fn a_failed_commit_after_a_rolled_back_unit_still_loses_the_units_before_it() {
        let db = testkit::fresh_database().await;
        sqlx::query("CREATE TABLE d (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
            .execute(&db.pool)
            .await
            .unwrap();
        let pool = pool(&db.url, 4).await;
        let mut sink = grouped_sink(&pool, 2).await;
        let insert = |v: i32| sqlx::query("INSERT INTO d VALUES ($1)").bind(v);
        let mut done = sink.begin().await.unwrap();
        insert(1).execute(done.conn()).await.unwrap();
        sink.commit(done, Vec::new(), &position(1)).await.unwrap();
        let mut failed = sink.begin().await.unwrap();
        insert(2).execute(failed.conn()).await.unwrap();
        sink.abort(failed).await;
        // Fills the transaction (the done unit and this one): its COMMIT is refused.
        let mut last = sink.begin().await.unwrap();
        insert(1).execute(last.conn()).await.unwrap();
        let result = sink.commit(last, Vec::new(), &position(3)).await;
        assert!(
            matches!(result, Err(SinkError::Restart(_))),
            "the first unit was done for the lane and is lost with the transaction: {result:?}"
        );
        let rows: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM consumer_offsets)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(rows, (0, 0));
    }

    #[tokio::test]
    async fn a_transaction_commits_with_the_unit_that_finds_it_older_than_the_interval() {
        let db = database_with_a_sink_table().await;
        let pool = pool(&db.url, 4).await;
        let interval = Duration::from_millis(200);
        let mut sink = sink_with(
            &pool,
            GroupCommit {
                interval,
                max_units: 16,
            },
        )
        .await;
        done_unit(&mut sink, 1, 1).await;
        assert_eq!(stored(&db.pool).await, (vec![], None));
        tokio::time::sleep(interval).await;
        done_unit(&mut sink, 2, 2).await;
        assert_eq!(stored(&db.pool).await, (vec![1, 2], Some((2, 1))));
    }

    #[tokio::test]
    async fn the_unit_after_a_handed_off_commit_sees_what_it_committed() {
        let db = database_with_a_sink_table().await;
        // Its commit takes 300 ms, so it is still running when the next unit begins.
        sqlx::query(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON sink DEFERRABLE INITIALLY DEFERRED \
             FOR EACH ROW EXECUTE FUNCTION slow()",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let pool = pool(&db.url, 4).await;
        let mut sink = grouped_sink(&pool, 16).await;
        done_unit(&mut sink, 1, 1).await;
        sink.idle();
        let mut next = sink.begin().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM sink")
            .fetch_one(next.conn())
            .await
            .unwrap();
        assert_eq!(seen, 1, "the next unit reads what the unit before it wrote");
        sink.abort(next).await;
    }
}
