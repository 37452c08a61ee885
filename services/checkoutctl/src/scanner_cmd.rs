//! `checkoutctl scanner simulate`: plays a chain for one deposit address with the scanner simulator
//! (`payments::simulate`, decision 0034) and prints the scanner's reports as NDJSON, or produces them to
//! `crypto-checkout.integration-events` (key = the source) with `--produce`.
//!
//! Guarantees: every printed or produced record passed `IntegrationEvent::encode` (the contract the payments
//! service decodes with); the same arguments and seed give the same records; with `--produce` the command returns
//! only after the broker acknowledged every record (exit 2 otherwise).

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use events::money::{Amount, CryptoAsset};
use events::payload::{Address, Network};
use payments::simulate::{Chaos, Fate, SimPayment, play};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{Io, Run, block_on, exit};

/// The blockchain scanner simulator (decision 0034).
#[derive(Debug, clap::Args)]
pub struct ScannerArgs {
    #[command(subcommand)]
    command: ScannerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ScannerCommand {
    /// Play payments to one deposit address: a mempool sighting, confirmations block after block, and the fate.
    ///
    /// Prints the reports as NDJSON (pipe them to `checkoutctl events validate`), or with --produce sends them to
    /// the integration topic keyed by --source (KAFKA_BOOTSTRAP_SERVERS).
    Simulate(SimulateArgs),
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The invoice's deposit address (InvoiceCreated v2 `deposit.address`).
    #[arg(long)]
    address: String,
    /// Network: bitcoin, ethereum, tron, polygon.
    #[arg(long, default_value = "tron")]
    network: String,
    /// Asset paid: BTC, ETH, USDT, USDC.
    #[arg(long, default_value = "USDT")]
    asset: String,
    /// Amount of each payment, exact (`16.49`); repeat for several payments.
    #[arg(long = "amount", required = true)]
    amounts: Vec<String>,
    /// Confirmations the invoice needs (its `deposit.required_confirmations`).
    #[arg(long, default_value_t = 1)]
    required: u32,
    /// What happens to the payments: confirms, dropped, reorged (out after 1 confirmation), survives (a reorg).
    #[arg(long, default_value = "confirms")]
    fate: String,
    /// Send every second report twice.
    #[arg(long)]
    duplicates: bool,
    /// Swap neighbouring reports of a payment.
    #[arg(long)]
    reorder: bool,
    /// First sighting (RFC 3339); now when absent.
    #[arg(long)]
    at: Option<DateTime<Utc>>,
    /// The source system, the records' key.
    #[arg(long, default_value = "scanner:sim")]
    source: String,
    /// Seed of the transaction hashes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Produce to this topic instead of printing (usually crypto-checkout.integration-events).
    #[arg(long, value_name = "TOPIC")]
    produce: Option<String>,
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
}

impl Run for ScannerArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        let ScannerCommand::Simulate(args) = self.command;
        let network: Network = serde_json::from_value(serde_json::json!(args.network))
            .with_context(|| format!("unknown network {}", args.network))?;
        let asset = CryptoAsset::from_code(&args.asset)
            .map_err(|e| anyhow::anyhow!("unknown asset {}: {e}", args.asset))?;
        let address = Address(args.address.clone());
        if let Some(why) = address.check(network) {
            bail!("{why}");
        }
        let fate = match args.fate.as_str() {
            "confirms" => Fate::Confirms,
            "dropped" => Fate::Dropped,
            "reorged" => Fate::ReorganizedOut { after: 1 },
            "survives" => Fate::SurvivesReorg { peak: 2 },
            other => bail!("unknown fate {other}: confirms, dropped, reorged or survives"),
        };
        let at = args.at.unwrap_or_else(Utc::now);
        let mut payments = Vec::new();
        for (n, amount) in args.amounts.iter().enumerate() {
            let amount: Amount = amount
                .parse()
                .map_err(|e| anyhow::anyhow!("amount {amount}: {e}"))?;
            payments.push(SimPayment {
                network,
                asset,
                address: address.clone(),
                amount,
                required_confirmations: args.required,
                at: at + chrono::TimeDelta::seconds(30 * n as i64),
                fate,
            });
        }
        let chaos = Chaos {
            duplicates: args.duplicates,
            reorder: args.reorder,
        };
        let reports = play(args.seed, &args.source, &payments, chaos);
        let mut records = Vec::with_capacity(reports.len());
        for r in &reports {
            records.push((r.partition_key(), r.encode()?));
        }
        let Some(topic) = args.produce else {
            for (_, bytes) in &records {
                io.stdout.write_all(bytes)?;
                io.stdout.write_all(b"\n")?;
            }
            return Ok(exit::OK);
        };
        let servers = args.bootstrap_servers.context(
            "KAFKA_BOOTSTRAP_SERVERS is not set (pass --bootstrap-servers or source .dev/env)",
        )?;
        let kafka = service_kit::KafkaSettings {
            bootstrap_servers: servers,
            client: Default::default(),
        };
        let n = records.len();
        block_on(async move {
            let producer: FutureProducer = service_kit::kafka::producer_config(&kafka).create()?;
            for (key, value) in &records {
                producer
                    .send(
                        FutureRecord::to(&topic).key(key).payload(value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .context("producing a report")?;
            }
            Ok(())
        })?;
        writeln!(io.stderr, "{n} reports produced")?;
        Ok(exit::OK)
    }
}
