//! Test scenarios: invoices with deposit addresses and what is paid to them on chain (the simulator's fates),
//! and what the payments service must emit for each — computed here from the scenario alone.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use events::integration::IntegrationEvent;
use events::money::{Amount, CryptoAsset, FiatCurrency};
use events::payload::{Address, Deposit, InvoiceCreated, Network};
use events::{Envelope, EnvelopeParts, EventId, InvoiceId, MerchantId, Metadata};
use payments::simulate::{Chaos, Fate, SimPayment, play};
use uuid::Uuid;

/// Confirmations every scenario invoice needs (Tron, medium speed would be 5; 3 keeps tests short).
pub const REQUIRED: u32 = 3;
/// A valid Tron address no invoice has.
pub const UNKNOWN_ADDRESS: &str = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf";

/// The shape of an invoice's payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Exact,
    Split,
    Partial,
    Over,
    Late,
    /// A payment dropped from the mempool, then an exact one.
    Failed,
    /// A payment reorganised out after one confirmation, then an exact one.
    Reorged,
    /// Confirmations go 1, 2, then 1, 2, 3, 4 after a reorganisation it survives.
    SurvivesReorg,
    /// An exact payment whose reports all arrive twice.
    Duplicated,
    /// An exact payment whose confirmations arrive 2 before 1.
    Reordered,
    /// A USDT invoice on Ethereum paid in USDC: detected and failed at once, never paid.
    WrongAsset,
    /// An exact payment confirmed (the invoice paid), then reorganised out one block later: the invoice is no
    /// longer covered, InvoicePaid stands.
    PaidThenReorged,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Exact,
        Kind::Split,
        Kind::Partial,
        Kind::Over,
        Kind::Late,
        Kind::Failed,
        Kind::Reorged,
        Kind::SurvivesReorg,
        Kind::Duplicated,
        Kind::Reordered,
        Kind::WrongAsset,
        Kind::PaidThenReorged,
    ];
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: InvoiceId,
    pub merchant: MerchantId,
    pub kind: Kind,
    pub due: Amount,
    pub network: Network,
    pub asset: CryptoAsset,
    pub address: Address,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub payments: Vec<SimPayment>,
}

/// What must come out for one invoice.
#[derive(Debug, Clone)]
pub struct Expected {
    pub kind: Kind,
    pub detected: usize,
    /// `None`: not asserted.
    pub confirming: Option<usize>,
    pub confirmed: usize,
    pub failed: usize,
    pub paid: bool,
    pub overpaid: String,
    pub late: bool,
}

pub struct Scenario {
    pub seed: u64,
    pub invoices: Vec<Invoice>,
    /// Payments to addresses no invoice has.
    pub strays: Vec<SimPayment>,
}

fn amount(s: &str) -> Amount {
    s.parse().unwrap()
}

fn t0() -> DateTime<Utc> {
    "2026-11-30T10:00:00Z".parse().unwrap()
}

impl Scenario {
    fn invoice(seed: u64, n: usize, kind: Kind) -> Invoice {
        let id = InvoiceId::from_uuid(Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("invoice:{seed}:{n}").as_bytes(),
        ))
        .unwrap();
        let merchant = MerchantId::from_uuid(Uuid::from_u128(0x1000 + n as u128 % 3)).unwrap();
        let due = amount(&format!("{}.49", 10 + n));
        let created_at = t0() + TimeDelta::seconds(n as i64);
        let expires_at = created_at + TimeDelta::minutes(30);
        let network = if kind == Kind::WrongAsset {
            Network::Ethereum
        } else {
            Network::Tron
        };
        let address = flows::plan::deposit_address(id, network);
        let pay = |amount: Amount, minutes: i64, fate: Fate| SimPayment {
            network,
            asset: CryptoAsset::Usdt,
            address: address.clone(),
            amount,
            required_confirmations: REQUIRED,
            at: created_at + TimeDelta::minutes(minutes),
            fate,
        };
        let part = amount("5");
        let rest = due.checked_sub(part).unwrap();
        let payments = match kind {
            Kind::Exact | Kind::Duplicated | Kind::Reordered => vec![pay(due, 5, Fate::Confirms)],
            Kind::Split => vec![pay(part, 5, Fate::Confirms), pay(rest, 8, Fate::Confirms)],
            Kind::Partial => vec![pay(part, 5, Fate::Confirms)],
            Kind::Over => vec![pay(
                due.checked_add(amount("1.25")).unwrap(),
                5,
                Fate::Confirms,
            )],
            Kind::Late => vec![pay(due, 40, Fate::Confirms)],
            Kind::Failed => vec![pay(due, 5, Fate::Dropped), pay(due, 10, Fate::Confirms)],
            Kind::Reorged => vec![
                pay(due, 5, Fate::ReorganizedOut { after: 1 }),
                pay(due, 10, Fate::Confirms),
            ],
            Kind::SurvivesReorg => vec![pay(due, 5, Fate::SurvivesReorg { peak: 2 })],
            Kind::WrongAsset => {
                let mut p = pay(due, 5, Fate::Confirms);
                p.asset = CryptoAsset::Usdc;
                vec![p]
            }
            Kind::PaidThenReorged => vec![pay(
                due,
                5,
                Fate::ReorganizedOut {
                    after: REQUIRED + 1,
                },
            )],
        };
        Invoice {
            id,
            merchant,
            kind,
            due,
            network,
            asset: CryptoAsset::Usdt,
            address,
            created_at,
            expires_at,
            payments,
        }
    }

    /// One invoice of every kind.
    pub fn every_path(seed: u64) -> Scenario {
        Scenario {
            seed,
            invoices: Kind::ALL
                .iter()
                .enumerate()
                .map(|(n, k)| Self::invoice(seed, n, *k))
                .collect(),
            strays: Vec::new(),
        }
    }

    /// `n` invoices cycling through every kind.
    pub fn many(seed: u64, n: usize) -> Scenario {
        Scenario {
            seed,
            invoices: (0..n)
                .map(|i| Self::invoice(seed, i, Kind::ALL[i % Kind::ALL.len()]))
                .collect(),
            strays: Vec::new(),
        }
    }

    /// One exact invoice and one payment to an address no invoice has, from the same scanner.
    pub fn unknown_address(seed: u64) -> Scenario {
        let invoice = Self::invoice(seed, 0, Kind::Exact);
        let mut stray = invoice.payments[0].clone();
        stray.address = Address(UNKNOWN_ADDRESS.into());
        stray.at -= TimeDelta::minutes(1);
        stray.fate = Fate::Dropped;
        Scenario {
            seed,
            invoices: vec![invoice],
            strays: vec![stray],
        }
    }

    /// The invoices' `InvoiceCreated` (v2) events.
    pub fn invoice_events(&self) -> Vec<Envelope> {
        self.invoices
            .iter()
            .map(|i| {
                Envelope::from_parts(EnvelopeParts {
                    event_id: EventId::new(),
                    aggregate_id: i.id.into(),
                    event_data: InvoiceCreated {
                        merchant_id: i.merchant,
                        total_amount: i.due,
                        currency: FiatCurrency::USD,
                        crypto_amount: i.due,
                        crypto_currency: i.asset,
                        expires_at: i.expires_at,
                        deposit: Some(Deposit {
                            network: i.network,
                            address: i.address.clone(),
                            required_confirmations: REQUIRED,
                        }),
                    }
                    .into(),
                    metadata: Metadata::system("checkout-api").unwrap(),
                    timestamp: i.created_at,
                    correlation_id: None,
                    causation_id: None,
                })
                .unwrap()
            })
            .collect()
    }

    /// The scanners' reports: calm invoices from `scanner:tron-1`, duplicated ones from `scanner:tron-2`,
    /// reordered ones from `scanner:tron-3`; strays first from `scanner:tron-1`.
    pub fn reports(&self) -> Vec<IntegrationEvent> {
        let of = |kinds: &[Kind]| -> Vec<SimPayment> {
            self.invoices
                .iter()
                .filter(|i| kinds.contains(&i.kind))
                .flat_map(|i| i.payments.clone())
                .collect()
        };
        let calm: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| !matches!(k, Kind::Duplicated | Kind::Reordered))
            .collect();
        let mut first = self.strays.clone();
        first.extend(of(&calm));
        let mut out = play(self.seed, "scanner:tron-1", &first, Chaos::default());
        out.extend(play(
            self.seed + 1,
            "scanner:tron-2",
            &of(&[Kind::Duplicated]),
            Chaos {
                duplicates: true,
                reorder: false,
            },
        ));
        out.extend(play(
            self.seed + 2,
            "scanner:tron-3",
            &of(&[Kind::Reordered]),
            Chaos {
                duplicates: false,
                reorder: true,
            },
        ));
        out
    }

    /// What must come out, per invoice (uuid).
    pub fn expected(&self) -> BTreeMap<Uuid, Expected> {
        self.invoices
            .iter()
            .map(|i| {
                let confirms = |f: &Fate| matches!(f, Fate::Confirms | Fate::SurvivesReorg { .. });
                // What InvoicePaid counts: confirmed payments in the invoice's asset (a later failure does not
                // take back an InvoicePaid).
                let counted: Vec<&SimPayment> = i
                    .payments
                    .iter()
                    .filter(|p| p.asset == i.asset)
                    .filter(|p| {
                        confirms(&p.fate)
                            || matches!(p.fate, Fate::ReorganizedOut { after } if after >= REQUIRED)
                    })
                    .collect();
                let failed = i
                    .payments
                    .iter()
                    .filter(|p| p.asset != i.asset || !confirms(&p.fate))
                    .count();
                let sum = counted
                    .iter()
                    .fold(Amount::ZERO, |s, p| s.checked_add(p.amount).unwrap());
                let paid = sum >= i.due;
                // Confirmations announced below the required count, one event per new height reached.
                let confirming = match i.kind {
                    Kind::Reordered => 1,  // 2 arrives before 1: only 2 is announced
                    Kind::WrongAsset => 0, // detected and failed at once
                    _ => i
                        .payments
                        .iter()
                        .map(|p| match p.fate {
                            Fate::Confirms | Fate::SurvivesReorg { .. } => REQUIRED - 1,
                            Fate::Dropped => 0,
                            Fate::ReorganizedOut { after } => after.min(REQUIRED - 1),
                        } as usize)
                        .sum(),
                };
                let expected = Expected {
                    kind: i.kind,
                    detected: i.payments.len(),
                    confirming: Some(confirming),
                    confirmed: counted.len(),
                    failed,
                    paid,
                    overpaid: if paid {
                        sum.checked_sub(i.due).unwrap().to_string()
                    } else {
                        String::new()
                    },
                    late: counted
                        .iter()
                        .map(|p| p.at)
                        .max()
                        .is_some_and(|at| at > i.expires_at),
                };
                (i.id.as_uuid(), expected)
            })
            .collect()
    }

    /// Outbox rows the service must write: every payment event, every InvoicePaid and its e-mail.
    pub fn expected_rows(&self) -> usize {
        self.expected()
            .values()
            .map(|e| {
                e.detected
                    + e.confirming.unwrap_or(0)
                    + e.confirmed
                    + e.failed
                    + 2 * usize::from(e.paid)
            })
            .sum()
    }
}
