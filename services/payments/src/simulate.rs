//! A blockchain scanner simulator: plays a chain for given deposits and returns the reports a scanner would put
//! on `integration-events` — a mempool sighting, confirmations block after block, occasional reorganisations,
//! drops, duplicates and reordering — for tests, benchmarks and `make run`.
//!
//! Guarantees: [`play`] is deterministic in its seed; each [`SimPayment`] says its own fate, so a test computes what
//! must come out of the payments service from the scenario alone (never from the service). Reports are keyed by
//! [`SOURCE`]-style source names and ordered by observation time, except where [`Chaos`] reorders neighbours or
//! repeats a report. Every report is valid under the contract ([`IntegrationEvent::encode`]).

use chrono::{DateTime, TimeDelta, Utc};
use events::EventId;
use events::integration::{
    ChainOutput, ConfirmationsChanged, DropReason, IntegrationData, IntegrationEvent,
    TransactionDropped, TransactionObserved,
};
use events::money::{Amount, CryptoAsset};
use events::payload::{Address, Network, TransactionHash};
use uuid::Uuid;

/// The default source of simulated reports.
pub const SOURCE: &str = "scanner:sim";

/// What happens to a simulated payment on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Mined; confirmations climb to `required + 1`.
    Confirms,
    /// Seen in the mempool, then dropped without being mined.
    Dropped,
    /// Mined, reaches `after` confirmations (below the required count), then reorganised out for good.
    ReorganizedOut { after: u32 },
    /// Mined, reaches `peak` confirmations, a reorganisation takes it back by one block (3, 2, …), then it climbs
    /// to `required + 1` in the new chain.
    SurvivesReorg { peak: u32 },
}

/// One payment to play: an output of `amount` to `address`, first seen at `at`.
#[derive(Debug, Clone)]
pub struct SimPayment {
    pub network: Network,
    pub asset: CryptoAsset,
    pub address: Address,
    pub amount: Amount,
    pub required_confirmations: u32,
    pub at: DateTime<Utc>,
    pub fate: Fate,
}

/// Disorder a real scanner shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chaos {
    /// Every report is sent twice.
    pub duplicates: bool,
    /// Neighbouring reports of one payment swap places (every second pair).
    pub reorder: bool,
}

/// Seconds per block of `network`.
pub fn block_seconds(network: Network) -> i64 {
    match network {
        Network::Bitcoin => 600,
        Network::Ethereum => 12,
        Network::Tron => 3,
        Network::Polygon => 2,
    }
}

/// A transaction hash for payment `n` of `seed`, in `network`'s format.
pub fn transaction_hash(seed: u64, n: usize, network: Network) -> TransactionHash {
    let a = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("sim:{seed}:{n}:a").as_bytes());
    let b = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("sim:{seed}:{n}:b").as_bytes());
    let digits = format!("{}{}", a.simple(), b.simple());
    let text = match network {
        Network::Ethereum | Network::Polygon => format!("0x{digits}"),
        Network::Bitcoin | Network::Tron => digits,
    };
    TransactionHash::parse(&text).expect("64 hex digits")
}

/// The reports of one payment, in chain order: `(observed_at, data)`.
fn timeline(seed: u64, n: usize, p: &SimPayment) -> Vec<(DateTime<Utc>, IntegrationData)> {
    let output = ChainOutput {
        network: p.network,
        crypto_currency: p.asset,
        transaction_hash: transaction_hash(seed, n, p.network),
        output_index: (n % 3) as u32,
        address: p.address.clone(),
        amount: p.amount,
    };
    let block = TimeDelta::seconds(block_seconds(p.network));
    let height0 = 1_000_000 + n as u64 * 10;
    let mut out = vec![(
        p.at,
        IntegrationData::TransactionObserved(TransactionObserved {
            output: output.clone(),
            block_height: None,
            confirmations: 0,
        }),
    )];
    let confirmation = |k: u32, height: u64, at: DateTime<Utc>| {
        (
            at,
            IntegrationData::ConfirmationsChanged(ConfirmationsChanged {
                output: output.clone(),
                block_height: Some(height),
                confirmations: k,
            }),
        )
    };
    let dropped = |reason, at| {
        (
            at,
            IntegrationData::TransactionDropped(TransactionDropped {
                output: output.clone(),
                reason,
                details: None,
            }),
        )
    };
    let mined = p.at + block;
    match p.fate {
        Fate::Confirms => {
            for k in 1..=p.required_confirmations + 1 {
                out.push(confirmation(k, height0, mined + block * (k as i32 - 1)));
            }
        }
        Fate::Dropped => out.push(dropped(DropReason::Dropped, p.at + block * 20)),
        Fate::ReorganizedOut { after } => {
            for k in 1..=after {
                out.push(confirmation(k, height0, mined + block * (k as i32 - 1)));
            }
            out.push(dropped(
                DropReason::Reorganized,
                mined + block * after as i32,
            ));
        }
        Fate::SurvivesReorg { peak } => {
            let mut t = mined;
            for k in 1..=peak {
                out.push(confirmation(k, height0, t));
                t += block;
            }
            // The new chain re-includes it one block higher: one confirmation fewer, then it climbs again.
            let again = peak.saturating_sub(1).max(1);
            for k in again..=p.required_confirmations.max(peak) + 1 {
                out.push(confirmation(k, height0 + 1, t));
                t += block;
            }
        }
    }
    out
}

/// Plays `payments` on chain and returns the scanner's reports from `source`, ordered by observation time (stable
/// per payment), with `chaos` applied.
pub fn play(
    seed: u64,
    source: &str,
    payments: &[SimPayment],
    chaos: Chaos,
) -> Vec<IntegrationEvent> {
    let mut all: Vec<(DateTime<Utc>, usize, usize, IntegrationData)> = Vec::new();
    for (n, p) in payments.iter().enumerate() {
        let mut line = timeline(seed, n, p);
        if chaos.reorder {
            // Swap every second neighbouring pair after the first sighting (3 before 2, a drop before its last
            // confirmation), keeping each report's own time: the scanner sends them out of order.
            let mut i = 1;
            while i + 1 < line.len() {
                let (a, b) = (line[i].0, line[i + 1].0);
                line.swap(i, i + 1);
                line[i].0 = a;
                line[i + 1].0 = b;
                i += 3;
            }
        }
        for (step, (at, data)) in line.into_iter().enumerate() {
            all.push((at, n, step, data));
        }
    }
    all.sort_by_key(|(at, n, step, _)| (*at, *n, *step));
    let mut out = Vec::with_capacity(all.len() * 2);
    for (i, (at, n, step, data)) in all.into_iter().enumerate() {
        let record = IntegrationEvent {
            event_id: EventId::derived(
                Uuid::NAMESPACE_OID,
                format!("sim:{seed}:{n}:{step}").as_bytes(),
            ),
            source: source.to_string(),
            observed_at: at,
            data,
        };
        if chaos.duplicates && i % 2 == 0 {
            out.push(record.clone());
        }
        out.push(record);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(fate: Fate) -> SimPayment {
        SimPayment {
            network: Network::Tron,
            asset: CryptoAsset::Usdt,
            address: Address(events::examples::TRON_ADDRESS.into()),
            amount: "16.49".parse().unwrap(),
            required_confirmations: 5,
            at: "2026-11-30T10:00:00Z".parse().unwrap(),
            fate,
        }
    }

    #[test]
    fn every_report_is_valid_and_the_play_is_deterministic() {
        let payments = [
            payment(Fate::Confirms),
            payment(Fate::Dropped),
            payment(Fate::ReorganizedOut { after: 2 }),
            payment(Fate::SurvivesReorg { peak: 3 }),
        ];
        let chaos = Chaos {
            duplicates: true,
            reorder: true,
        };
        let a = play(7, SOURCE, &payments, chaos);
        assert_eq!(a, play(7, SOURCE, &payments, chaos));
        for r in &a {
            r.encode().unwrap();
        }
        let calm = play(7, SOURCE, &payments, Chaos::default());
        assert!(a.len() > calm.len());
        // The survivor's confirmations go 1, 2, 3, 2, 3, …, 6.
        let survivor: Vec<u32> = calm
            .iter()
            .filter(|r| r.data.output().transaction_hash == transaction_hash(7, 3, Network::Tron))
            .filter_map(|r| r.data.confirmations().map(|c| c.1))
            .collect();
        assert_eq!(survivor, [0, 1, 2, 3, 2, 3, 4, 5, 6]);
    }
}
