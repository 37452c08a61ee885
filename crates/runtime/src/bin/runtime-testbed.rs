//! Test support, not a service: a consumer process the runtime's integration tests start, SIGKILL at random
//! points and start again. Configured by arguments; prints `READY` on stdout once it has partitions, logs to
//! stderr.
//!
//! Handlers:
//! - `transform`: copies each input record (key, value) to `--output` via `ctx.produce` (consume-transform-produce);
//! - `db-sink`: inserts (value, partition, offset) into table `testbed_sink` through the consumer's own database
//!   transaction (mode (b));
//! - `idempotent`: at-least-once with its own transaction: logs every call in `testbed_calls`, and applies the
//!   effect (a row in `testbed_effects`) only the first time, via `runtime::idempotency::first_time` with the
//!   record key as event id.

use std::io::Write;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use runtime::policy::PolicyOverrides;
use runtime::{
    Consumer, ConsumerOptions, GroupPolicy, Guarantee, Handler, HandlerCtx, HandlerError,
    OutputRecord, Record,
};
use service_kit::KafkaSettings;
use service_kit::ops::Readiness;
use sqlx::PgPool;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    bootstrap_servers: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: Option<String>,
    #[arg(long, value_enum)]
    guarantee: GuaranteeArg,
    #[arg(long, value_enum)]
    handler: HandlerKind,
    /// The consumer's database (its bookkeeping, and the sinks of `db-sink` and `idempotent`).
    #[arg(long)]
    database_url: String,
    #[arg(long)]
    instance_id: Option<String>,
    #[arg(long)]
    static_membership: bool,
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration, default_value = "1s")]
    commit_interval: Duration,
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    session_timeout: Option<Duration>,
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    heartbeat_interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GuaranteeArg {
    AtLeastOnce,
    ExactlyOnceKafka,
    ExactlyOnceDb,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum HandlerKind {
    Transform,
    DbSink,
    Idempotent,
}

struct Testbed {
    kind: HandlerKind,
    output: Option<String>,
    pool: PgPool,
}

impl Handler for Testbed {
    /// Its rows are the partition's own and it appends nothing to the outbox: mode (b) runs its units in shared
    /// transactions, which the SIGKILL and rebalance tests then cover (decision 0056).
    fn shares_transactions(&self) -> bool {
        true
    }

    async fn handle(&self, record: &Record, ctx: &mut HandlerCtx<'_>) -> Result<(), HandlerError> {
        let value = String::from_utf8_lossy(record.value_bytes()?).into_owned();
        match self.kind {
            HandlerKind::Transform => {
                let output = self
                    .output
                    .as_ref()
                    .ok_or_else(|| HandlerError::schema("no --output"))?;
                ctx.produce(OutputRecord::new(
                    output,
                    record.key.clone().unwrap_or_default(),
                    value.into_bytes(),
                ));
            }
            HandlerKind::DbSink => {
                let db = ctx.db().ok_or_else(|| {
                    HandlerError::schema("db-sink needs --guarantee exactly-once-db")
                })?;
                sqlx::query(
                    "INSERT INTO testbed_sink (value, partition, \"offset\") VALUES ($1, $2, $3)",
                )
                .bind(&value)
                .bind(record.partition)
                .bind(record.offset)
                .execute(db)
                .await?;
            }
            HandlerKind::Idempotent => {
                let pool = &self.pool;
                let key = record
                    .key
                    .as_deref()
                    .ok_or_else(|| HandlerError::schema("no key"))?;
                let event_id = uuid::Uuid::try_parse_ascii(key).map_err(HandlerError::schema)?;
                sqlx::query("INSERT INTO testbed_calls (event_id) VALUES ($1)")
                    .bind(event_id)
                    .execute(pool)
                    .await?;
                let mut tx = pool.begin().await?;
                if runtime::idempotency::first_time(&mut tx, ctx.group(), event_id).await? {
                    sqlx::query("INSERT INTO testbed_effects (event_id) VALUES ($1)")
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// On the async runtime the consumer services run on (`service_kit::threads`, decision 0054).
fn main() -> anyhow_like::Result {
    service_kit::threads::runtime()?.block_on(testbed())
}

async fn testbed() -> anyhow_like::Result {
    let args = Args::parse();
    service_kit::telemetry::init(&service_kit::LogSettings {
        filter: "warn,runtime=info".into(),
        ..Default::default()
    });
    let guarantee = match args.guarantee {
        GuaranteeArg::AtLeastOnce => Guarantee::AtLeastOnce,
        GuaranteeArg::ExactlyOnceKafka => Guarantee::ExactlyOnceKafka,
        GuaranteeArg::ExactlyOnceDb => Guarantee::ExactlyOnceDb,
    };
    let policy = GroupPolicy::resolve(
        runtime::policy::SETTLEMENT_PROCESSING,
        &PolicyOverrides {
            group: Some(args.group.clone()),
            topics: Some(vec![args.input.clone()]),
            guarantee: Some(guarantee),
            session_timeout: args.session_timeout,
            heartbeat_interval: args.heartbeat_interval,
            ..Default::default()
        },
    )?;
    let pool = PgPool::connect(&args.database_url).await?;
    let options = ConsumerOptions {
        instance_id: args.instance_id.clone(),
        static_membership: args.static_membership,
        commit_interval: args.commit_interval,
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let readiness = Readiness::default();
    let mut builder = Consumer::builder(
        policy,
        KafkaSettings {
            bootstrap_servers: args.bootstrap_servers.clone(),
            client: Default::default(),
        },
    )
    .handler(Testbed {
        kind: args.handler,
        output: args.output.clone(),
        pool: pool.clone(),
    })
    .readiness(readiness.clone())
    .options(options);
    builder = builder.database(pool);
    let consumer = builder.build()?;
    tokio::spawn(async move {
        while readiness.check().is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("READY");
        let _ = std::io::stdout().flush();
    });
    consumer.run(service_kit::shutdown::on_signal()).await?;
    Ok(())
}

/// `main`'s error type: anything, printed with its cause chain.
mod anyhow_like {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}
