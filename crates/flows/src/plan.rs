//! The generator's intent: what happens to every merchant, invoice, payment and settlement, and when.
//!
//! Guarantees: [`plan`] is a pure function of the [`Scenario`] (same seed, same plan, ids included); every time
//! in a plan respects the platform's rules, so the events emitted from it are valid and, per partition key, in
//! the order they happened:
//! - an invoice is created before anything else happens to it; payments are detected before they confirm or
//!   fail; `InvoicePaid` follows the detection that covers what is due (the platform's rule, so a payment that
//!   fails is always one that did not cover the invoice); expiry happens at `expires_at`; a late payment
//!   follows the expiry;
//! - a suspended merchant gets no new invoices; a suspension may be lifted later ([`Suspension::reinstated_at`],
//!   `MerchantReinstated`);
//! - who settles depends on [`Scenario::settlements`]:
//!   - [`Settlements::Generated`] (the default): the generator plays the settlement service — a settlement is
//!     created a minute after the last counted payment of a paid invoice is confirmed, in the invoice's currency
//!     with [`platform_fee`] at the merchant's rate, completed, retried or failed at random
//!     ([`InvoicePlan::settlement`]); none is created while the merchant's suspension has begun, even after a
//!     reinstatement (this mode's draws are exactly what they were before reinstatements existed);
//!   - [`Settlements::ByService`]: the settlement service settles and the generator emits no settlement event;
//!     [`InvoicePlan::service_settlement`] is what the service must produce, by decision 0026's policy
//!     ([`service_settlement`]). The rest of the plan is the same as in `Generated` mode, plus suspensions
//!     aimed at settlement windows (see [`plan`]) so that held, released and still-held settlements occur;
//! - times after the scenario's horizon are part of the plan (flows still in flight) but nothing after the
//!   horizon is emitted: the system is observed at the horizon.
//!
//! The plan is what both the emitter ([`crate::emit`]) and the ground truth ([`crate::truth`]) read; they never
//! read each other.

use chrono::{DateTime, TimeDelta, Utc};
use events::money::{
    Amount, CryptoAsset, Currency, Decimal, FeeSplit, FiatCurrency, Percentage, platform_fee,
};
use events::payload::{
    Address, CancellationReason, MerchantContact, Network, PaymentFailureReason,
    SettlementFailureReason, SpeedPolicy, SuspensionReason, TransactionHash,
};
use events::{CorrelationId, InvoiceId, MerchantId, PaymentId, SettlementId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::RoundingStrategy;
use uuid::Uuid;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Everything random derives from it, ids included.
    pub seed: u64,
    pub merchants: usize,
    pub invoices: usize,
    /// First instant of the first UTC day.
    pub start: DateTime<Utc>,
    /// Invoices are created over this many days; the horizon is `start + days`.
    pub days: u32,
    /// Who produces the settlement events.
    pub settlements: Settlements,
}

/// Who produces a scenario's settlement events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Settlements {
    /// The generator plays the settlement service and emits settlement events from its plan (completed,
    /// retried, failed at random); a suspended merchant's settlements are never created.
    #[default]
    Generated,
    /// The real settlement service produces them: the generator emits none, and the plan and the truth say
    /// what the service must produce ([`ServiceSettlement`], decision 0026).
    ByService,
}

impl Scenario {
    /// `merchants` merchants and `invoices` invoices over three UTC days from 2025-01-15.
    pub fn new(seed: u64, merchants: usize, invoices: usize) -> Scenario {
        Scenario {
            seed,
            merchants,
            invoices,
            start: DateTime::parse_from_rfc3339("2025-01-15T00:00:00Z")
                .expect("fixed date")
                .with_timezone(&Utc),
            days: 3,
            settlements: Settlements::Generated,
        }
    }

    /// The same scenario with settlement events left to the settlement service ([`Settlements::ByService`]).
    pub fn settled_by_service(mut self) -> Scenario {
        self.settlements = Settlements::ByService;
        self
    }

    /// The scale: 200 merchants, 10 000 invoices.
    pub fn large(seed: u64) -> Scenario {
        Scenario::new(seed, 200, 10_000)
    }

    /// When the system is observed: nothing later is emitted.
    pub fn horizon(&self) -> DateTime<Utc> {
        self.start + TimeDelta::days(i64::from(self.days))
    }
}

/// Platform defaults that `MerchantCreated` does not carry.
pub const DEFAULT_EXPIRY_MINUTES: u32 = 15;

/// A merchant's settings at some point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantSettings {
    /// Invoices are priced in it and settled in it (default and settlement currency move together).
    pub currency: FiatCurrency,
    pub accepted: Vec<CryptoAsset>,
    pub speed: SpeedPolicy,
    pub expiry_minutes: u32,
    /// Under-payment accepted as full payment, in percent (0 = none; the generator never relies on it).
    pub tolerance: Percentage,
    /// Where its notifications go: derived from the merchant's index (no draw of the generator, so adding it
    /// changed no plan); every settings update moves the e-mail to a second address.
    pub contact: MerchantContact,
}

#[derive(Debug, Clone)]
pub struct SettingsUpdate {
    pub at: DateTime<Utc>,
    pub after: MerchantSettings,
}

#[derive(Debug, Clone)]
pub struct Suspension {
    pub at: DateTime<Utc>,
    pub reason: SuspensionReason,
    /// When the suspension is lifted (`MerchantReinstated`), always after `at`; possibly after the horizon.
    pub reinstated_at: Option<DateTime<Utc>>,
    /// Planned in [`Settlements::ByService`] mode only, aimed at a settlement window (see [`plan`]).
    pub by_service_only: bool,
}

/// Who acts for a merchant: its API key, its dashboard user, where they connect from.
#[derive(Debug, Clone)]
pub struct MerchantPlan {
    pub id: MerchantId,
    pub business_name: String,
    pub created_at: DateTime<Utc>,
    pub fee_percentage: Percentage,
    pub initial: MerchantSettings,
    pub update: Option<SettingsUpdate>,
    pub suspension: Option<Suspension>,
    pub api_key: String,
    pub user: String,
    pub ip: std::net::IpAddr,
}

impl MerchantPlan {
    /// The settings in force at `at`.
    pub fn settings_at(&self, at: DateTime<Utc>) -> &MerchantSettings {
        match &self.update {
            Some(update) if update.at <= at => &update.after,
            _ => &self.initial,
        }
    }

    /// Whether the merchant is suspended at `at`: suspended at or before `at` and not reinstated at or before
    /// `at`.
    pub fn suspended_at(&self, at: DateTime<Utc>) -> bool {
        self.suspension
            .as_ref()
            .is_some_and(|s| s.at <= at && s.reinstated_at.is_none_or(|r| r > at))
    }

    /// Whether the merchant's suspension had begun by `at`, reinstated or not: what the generator's own draws
    /// (new invoices, `Generated` settlements) go by, so that they are what they were before reinstatements.
    pub fn suspension_begun_by(&self, at: DateTime<Utc>) -> bool {
        self.suspension.as_ref().is_some_and(|s| s.at <= at)
    }

    /// When the merchant is reinstated, if it ever is.
    pub fn reinstated_at(&self) -> Option<DateTime<Utc>> {
        self.suspension.as_ref().and_then(|s| s.reinstated_at)
    }
}

/// The shape of an invoice's life; used for weighting and for reporting coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One payment of exactly what is due.
    Paid,
    /// A partial payment, then the rest.
    PaidInTwo,
    /// One payment of more than is due.
    Overpaid,
    /// Expired (possibly after a partial payment), then paid after expiry.
    PaidLate,
    /// Nothing paid before expiry.
    Expired,
    /// Partly paid before expiry.
    ExpiredPartial,
    /// Cancelled with nothing paid.
    Cancelled,
    /// Cancelled after a partial payment (to be refunded).
    CancelledPartial,
    /// A partial payment fails (dropped, double spent), then a full payment.
    FailedThenPaid,
    /// A partial payment fails, then the invoice expires.
    FailedThenExpired,
}

impl Kind {
    const WEIGHTS: [(Kind, u32); 10] = [
        (Kind::Paid, 38),
        (Kind::PaidInTwo, 8),
        (Kind::Overpaid, 7),
        (Kind::PaidLate, 5),
        (Kind::Expired, 14),
        (Kind::ExpiredPartial, 6),
        (Kind::Cancelled, 6),
        (Kind::CancelledPartial, 2),
        (Kind::FailedThenPaid, 7),
        (Kind::FailedThenExpired, 7),
    ];
}

/// One on-chain payment towards an invoice.
#[derive(Debug, Clone)]
pub struct PaymentPlan {
    pub id: PaymentId,
    pub transaction_hash: TransactionHash,
    pub amount: Amount,
    /// What was still due on the invoice before this payment.
    pub due_before: Amount,
    /// Detected after the invoice expired.
    pub late: bool,
    pub detected_at: DateTime<Utc>,
    /// `(confirmations, at)` of each `PaymentConfirming`, increasing.
    pub confirming: Vec<(u32, DateTime<Utc>)>,
    /// When it reached its required confirmations; `None` for a payment that fails.
    pub confirmed_at: Option<DateTime<Utc>>,
    pub failed: Option<(DateTime<Utc>, PaymentFailureReason)>,
    /// Height of the including block (absent for a zero-confirmation payment).
    pub block_height: Option<u64>,
}

impl PaymentPlan {
    /// Whether it counts towards the invoice (it has not failed) at `at`.
    pub fn counts_at(&self, at: DateTime<Utc>) -> bool {
        self.detected_at <= at && self.failed.is_none_or(|(f, _)| f > at)
    }
}

/// The invoice was paid in full.
#[derive(Debug, Clone)]
pub struct PaidPlan {
    /// The `InvoicePaid` event's time (two seconds after the covering detection).
    pub at: DateTime<Utc>,
    /// When the covering payment was detected (`InvoicePaid.paid_at`).
    pub paid_at: DateTime<Utc>,
    pub late: bool,
}

#[derive(Debug, Clone)]
pub struct CancelPlan {
    pub at: DateTime<Utc>,
    pub reason: CancellationReason,
}

/// What the settlement service must produce for an invoice ([`Settlements::ByService`]; decision 0026's policy,
/// [`service_settlement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettlement {
    /// `SettlementId::for_invoice(invoice)`.
    pub id: SettlementId,
    /// T: when the invoice became settleable — the later of its `InvoicePaid` and the last `PaymentConfirmed`
    /// of the payments `InvoicePaid` counted (event timestamps; `InvoicePaid.paid_at` is the covering
    /// detection's time, two seconds earlier). `SettlementCreated` happens then.
    pub at: DateTime<Utc>,
    pub currency: Currency,
    /// The invoice's `total_amount` (an over-payment settles the invoice's amount).
    pub gross: Amount,
    pub split: FeeSplit,
    pub fee_percentage: Percentage,
    /// The merchant is suspended at `at`: `SettlementFailed { merchant_suspended, will_retry: true }` at `at`.
    pub held: bool,
    /// `SettlementCompleted` (and `settled_at`): `at` when not held, the merchant's reinstatement when held
    /// (`None`: never reinstated). May be after the horizon.
    pub completed_at: Option<DateTime<Utc>>,
}

/// How a settlement ends.
#[derive(Debug, Clone)]
pub struct SettlementPlan {
    pub id: SettlementId,
    pub created_at: DateTime<Utc>,
    pub currency: Currency,
    pub gross: Amount,
    pub split: FeeSplit,
    pub fee_percentage: Percentage,
    /// Failed payout attempts, in order: `(at, reason, will_retry)`.
    pub failures: Vec<(DateTime<Utc>, SettlementFailureReason, bool)>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// What the customer's request that created the invoice looked like.
#[derive(Debug, Clone)]
pub struct Request {
    pub ip: std::net::IpAddr,
    pub user_agent: String,
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct InvoicePlan {
    pub id: InvoiceId,
    /// Index into [`Plan::merchants`].
    pub merchant: usize,
    pub kind: Kind,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub currency: FiatCurrency,
    pub total: Amount,
    pub asset: CryptoAsset,
    pub network: Network,
    /// The invoice's deposit address on `network` (`InvoiceCreated` v2), derived from its id by
    /// [`deposit_address`] — no draw from the generator's randomness, so plans of a seed are unchanged.
    pub address: Address,
    pub due: Amount,
    pub required_confirmations: u32,
    pub fee_percentage: Percentage,
    pub correlation: CorrelationId,
    pub request: Request,
    pub payments: Vec<PaymentPlan>,
    pub paid: Option<PaidPlan>,
    /// `InvoiceExpired` time (also for a late-paid invoice, which expired first).
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelled: Option<CancelPlan>,
    /// The settlement the generator emits itself ([`Settlements::Generated`] only).
    pub settlement: Option<SettlementPlan>,
    /// The settlement the settlement service must produce ([`Settlements::ByService`] only).
    pub service_settlement: Option<ServiceSettlement>,
    /// When the customer opened the checkout page (`CheckoutViewed` on the analytics topic).
    pub views: Vec<DateTime<Utc>>,
}

/// What the customer did on an invoice's checkout page beyond opening it (`PaymentMethodChosen`,
/// `CheckoutAbandoned` on the analytics topic): decided by [`InvoicePlan::journey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Journey {
    /// When the customer chose the invoice's asset and network.
    pub method_chosen: Option<DateTime<Utc>>,
    /// When and how the checkout was abandoned: `(at, stage, reason)`.
    pub abandoned: Option<(
        DateTime<Utc>,
        events::analytics::AbandonStage,
        events::analytics::AbandonReason,
    )>,
}

impl InvoicePlan {
    /// The payments its `InvoicePaid` counts (detected and not failed when it is emitted); empty if never paid.
    pub fn counted_payments(&self) -> impl Iterator<Item = &PaymentPlan> {
        let paid_at = self.paid.as_ref().map(|p| p.at);
        self.payments
            .iter()
            .filter(move |p| paid_at.is_some_and(|at| p.counts_at(at)))
    }

    /// The checkout page's story beyond the views, decided from the plan alone — its views, payments, expiry and
    /// a hash of its id (no draw from the generator's randomness, so every plan of a seed is unchanged):
    /// - no view: nothing (the page was never opened);
    /// - a payment detected after the first view: the method (the invoice's asset on its network) chosen half-way
    ///   between that view and the first detection; never abandoned (a payment detected before any view: no
    ///   choice recorded — paid from a wallet without the page);
    /// - never paid: two invoices in three see the method chosen 5–44 s after the first view (before the expiry);
    ///   then abandoned: `expired` at the expiry when the page was still open (half of the expired ones whose
    ///   views all came before it), otherwise `left_page` 10–129 s after the last view or choice; the stage is
    ///   `awaiting_payment` once a method was chosen, `choosing_method` before.
    ///
    /// Times may lie after the horizon; emitters and the truth keep those up to it, like views.
    pub fn journey(&self) -> Journey {
        use events::analytics::{AbandonReason, AbandonStage};
        let none = Journey {
            method_chosen: None,
            abandoned: None,
        };
        let (Some(first_view), Some(last_view)) =
            (self.views.iter().min(), self.views.iter().max())
        else {
            return none;
        };
        let bits = splitmix(
            self.id.as_uuid().as_u128() as u64 ^ (self.id.as_uuid().as_u128() >> 64) as u64,
        );
        if let Some(detected) = self.payments.iter().map(|p| p.detected_at).min() {
            let method_chosen =
                (detected > *first_view).then(|| *first_view + (detected - *first_view) / 2);
            return Journey {
                method_chosen,
                abandoned: None,
            };
        }
        let method_chosen = (!bits.is_multiple_of(3))
            .then(|| *first_view + secs(5 + ((bits >> 8) % 40) as i64))
            .filter(|at| self.expired_at.is_none_or(|e| *at < e));
        let stage = if method_chosen.is_some() {
            AbandonStage::AwaitingPayment
        } else {
            AbandonStage::ChoosingMethod
        };
        let open_at_expiry = self.expired_at.filter(|e| {
            (bits >> 16).is_multiple_of(2)
                && *last_view < *e
                && method_chosen.is_none_or(|m| m < *e)
        });
        let abandoned = match open_at_expiry {
            Some(expired) => (expired, stage, AbandonReason::Expired),
            None => {
                let last = method_chosen.map_or(*last_view, |m| m.max(*last_view));
                (
                    last + secs(10 + ((bits >> 24) % 120) as i64),
                    stage,
                    AbandonReason::LeftPage,
                )
            }
        };
        Journey {
            method_chosen,
            abandoned: Some(abandoned),
        }
    }

    /// T: when the invoice becomes settleable — paid, and every payment its `InvoicePaid` counted confirmed —,
    /// the later of the `InvoicePaid` and the last counted `PaymentConfirmed`. `None`: never (not paid, or a
    /// counted payment never confirms). May be after the horizon.
    pub fn settleable_at(&self) -> Option<DateTime<Utc>> {
        let paid = self.paid.as_ref()?;
        let mut at = paid.at;
        for p in self.counted_payments() {
            if p.failed.is_some() {
                return None;
            }
            at = at.max(p.confirmed_at?);
        }
        Some(at)
    }

    /// The crypto received beyond what was due, as its `InvoicePaid` states it (zero if never paid).
    pub fn overpaid(&self) -> Amount {
        let counted = self.counted_payments().fold(Amount::ZERO, |sum, p| {
            sum.checked_add(p.amount).expect("amounts stay small")
        });
        counted.checked_sub(self.due).unwrap_or(Amount::ZERO)
    }

    /// What had been received (detected, not failed) at `at`.
    pub fn received_at(&self, at: DateTime<Utc>) -> Amount {
        self.payments
            .iter()
            .filter(|p| p.counts_at(at))
            .fold(Amount::ZERO, |sum, p| {
                sum.checked_add(p.amount).expect("amounts stay small")
            })
    }
}

/// Everything that happens in a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub horizon: DateTime<Utc>,
    pub merchants: Vec<MerchantPlan>,
    pub invoices: Vec<InvoicePlan>,
}

/// A deterministic UUID v7 at `at` (so ids sort by time like real ones) from the generator's randomness.
/// A 64-bit mix (SplitMix64's finaliser): spreads an id's bits for decisions that must not draw from the RNG.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn v7(rng: &mut StdRng, at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).expect("times after 1970");
    let random: [u8; 10] = rng.random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

pub(crate) fn hex(rng: &mut StdRng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn between(rng: &mut StdRng, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
    let span = (to - from).num_milliseconds().max(1);
    from + TimeDelta::milliseconds(rng.random_range(0..span))
}

/// Fiat units per one unit of the asset: the quotes the generator's platform converts at.
fn rate(asset: CryptoAsset, fiat: FiatCurrency) -> Decimal {
    let table: [(&str, [i64; 4]); 4] = [
        // BTC, ETH, USDT, USDC — in hundredths of the fiat unit.
        ("USD", [9_725_000, 332_000, 100, 100]),
        ("EUR", [9_350_000, 319_000, 96, 96]),
        ("GBP", [7_840_000, 267_500, 79, 79]),
        ("JPY", [1_520_000_000, 51_800_000, 15_620, 15_620]),
    ];
    let row = table
        .iter()
        .find(|(code, _)| *code == fiat.code())
        .expect("generator currencies only");
    let column = CryptoAsset::ALL
        .iter()
        .position(|a| *a == asset)
        .expect("known asset");
    Decimal::new(row.1[column], 2)
}

fn networks(asset: CryptoAsset) -> &'static [Network] {
    match asset {
        CryptoAsset::Btc => &[Network::Bitcoin],
        CryptoAsset::Eth => &[Network::Ethereum],
        CryptoAsset::Usdt => &[Network::Tron, Network::Ethereum, Network::Polygon],
        CryptoAsset::Usdc => &[Network::Ethereum, Network::Polygon],
    }
}

/// Seconds per block, and how the merchant's (Bitcoin) speed policy scales on the network.
pub(crate) fn chain(network: Network) -> (i64, u32, u64) {
    match network {
        Network::Bitcoin => (600, 1, 880_000),
        Network::Ethereum => (12, 3, 21_500_000),
        Network::Tron => (3, 5, 68_000_000),
        Network::Polygon => (2, 10, 66_000_000),
    }
}

/// A deposit address of `network` for `invoice`, derived from the invoice id alone (SHA-256 of it): `0x` and 40 hex
/// digits on EVM chains, `T` and 33 base58 characters on Tron, a `bc1q…` bech32 string of 42 characters on Bitcoin.
/// Deterministic and distinct per invoice; not a real key's address.
pub fn deposit_address(invoice: InvoiceId, network: Network) -> Address {
    use sha2::{Digest, Sha256};
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    const BECH32: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let mut hasher = Sha256::new();
    hasher.update(b"deposit:");
    hasher.update(invoice.as_uuid().as_bytes());
    let h = hasher.finalize();
    let pick = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|i| alphabet[(usize::from(h[i % 32]) + i / 32 * 7) % alphabet.len()] as char)
            .collect()
    };
    let text = match network {
        Network::Ethereum | Network::Polygon => {
            let hex: String = h[..20].iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
        Network::Tron => format!("T{}", pick(BASE58, 33)),
        Network::Bitcoin => format!("bc1q{}", pick(BECH32, 38)),
    };
    let address = Address(text);
    debug_assert!(address.check(network).is_none(), "{address}");
    address
}

/// Confirmations required on `network` under `speed`.
pub fn required_confirmations(speed: SpeedPolicy, network: Network) -> u32 {
    speed.bitcoin_confirmations() * chain(network).1
}

fn amount(value: Decimal) -> Amount {
    Amount::new(value).expect("generator amounts are positive")
}

/// `value` rounded down to `decimals`, at least one smallest unit.
fn floor_units(value: Decimal, decimals: u32) -> Decimal {
    let floored = value.round_dp_with_strategy(decimals, RoundingStrategy::ToZero);
    floored.max(Decimal::new(1, decimals))
}

const CURRENCIES: [(&str, u32); 4] = [("USD", 55), ("EUR", 25), ("GBP", 12), ("JPY", 8)];
const FEES: [&str; 6] = ["1", "1", "1", "0.5", "1.5", "2.25"];
const SPEEDS: [SpeedPolicy; 4] = [
    SpeedPolicy::HighSpeed,
    SpeedPolicy::MediumSpeed,
    SpeedPolicy::LowMediumSpeed,
    SpeedPolicy::LowSpeed,
];

fn weighted<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (item, weight) in table {
        if pick < *weight {
            return *item;
        }
        pick -= weight;
    }
    unreachable!("pick < total")
}

fn fiat(code: &str) -> FiatCurrency {
    FiatCurrency::from_code(code).expect("generator currencies exist")
}

fn ip(rng: &mut StdRng) -> std::net::IpAddr {
    match rng.random_range(0..4) {
        0 => format!("2001:db8::{:x}", rng.random_range(1..0xffff_u32)),
        1 => format!("198.51.100.{}", rng.random_range(1..255)),
        _ => format!("203.0.113.{}", rng.random_range(1..255)),
    }
    .parse()
    .expect("valid address")
}

/// Builds the plan of a scenario.
pub fn plan(scenario: &Scenario) -> Plan {
    plan_with(scenario, false)
}

/// Builds the plan of a scenario whose chain a scanner plays ([`crate::scanner`]): the same draws as [`plan`],
/// then each invoice's payments and `InvoicePaid` as the payments service realises them from the scanner's reports
/// ([`crate::scanner::ingest`], no draw), before the settlement policy is applied to them.
pub fn plan_scanned(scenario: &Scenario) -> Plan {
    plan_with(scenario, true)
}

fn plan_with(scenario: &Scenario, scanned: bool) -> Plan {
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    let horizon = scenario.horizon();
    let span_ms = (horizon - scenario.start).num_milliseconds();
    let merchants: Vec<MerchantPlan> = (0..scenario.merchants)
        .map(|i| merchant(&mut rng, scenario, i, span_ms))
        .collect();
    let mut invoices = Vec::with_capacity(scenario.invoices);
    for _ in 0..scenario.invoices {
        // A last-minute rush: a few percent of the invoices are created in the final twenty minutes, so the
        // horizon catches flows in every in-flight state (new, partially paid, paid but unconfirmed, …).
        let offset = if rng.random_bool(0.04) {
            span_ms - rng.random_range(1..20 * 60_000)
        } else {
            rng.random_range(0..span_ms)
        };
        let created_at = scenario.start + TimeDelta::milliseconds(offset);
        // Bigger and smaller merchants: a squared uniform favours the first ones. Suspended merchants take
        // no new invoices (nor, to keep the draws as they were, reinstated ones); merchant 0 is never suspended.
        let mut index = 0;
        for _ in 0..8 {
            let u: f64 = rng.random();
            let candidate = ((u * u) * merchants.len() as f64) as usize;
            if !merchants[candidate].suspension_begun_by(created_at) {
                index = candidate;
                break;
            }
        }
        invoices.push(invoice(&mut rng, &merchants, index, created_at));
    }
    invoices.sort_by_key(|i| i.created_at);
    let mut plan = Plan {
        scenario: scenario.clone(),
        horizon,
        merchants,
        invoices,
    };
    // Everything below draws from streams of its own, so the draws above (ids, times, amounts) are the same in
    // both modes and as before reinstatements existed.
    reinstate(&mut plan);
    if scanned {
        crate::scanner::ingest(&mut plan);
    }
    if scenario.settlements == Settlements::ByService {
        for invoice in &mut plan.invoices {
            invoice.settlement = None;
        }
        aim_suspensions(&mut plan);
        for i in 0..plan.invoices.len() {
            let s = service_settlement(
                &plan.invoices[i],
                &plan.merchants[plan.invoices[i].merchant],
            );
            plan.invoices[i].service_settlement = s;
        }
    }
    plan
}

/// Half the merchants suspended by the main draws are reinstated, between an hour and two days later (maybe
/// after the horizon).
fn reinstate(plan: &mut Plan) {
    let mut rng = StdRng::seed_from_u64(plan.scenario.seed ^ 0x4e14_57a7_e000_0001);
    for m in &mut plan.merchants {
        if let Some(suspension) = &mut m.suspension
            && rng.random_bool(0.5)
        {
            let at = suspension.at;
            suspension.reinstated_at =
                Some(between(&mut rng, at + secs(3600), at + secs(48 * 3600)));
        }
    }
}

/// [`Settlements::ByService`] only: suspensions aimed at settlement windows. A settlement is held only when its
/// merchant's suspension begins between the invoice's creation and its T, which random suspensions rarely do; so
/// some merchants that the main draws did not suspend are suspended shortly (up to two hours) before one of
/// their invoices' T:
/// - *released*: reinstated after T, before the horizon and before the merchant's next invoice is created;
/// - *held*: after the merchant's last invoice was created, never reinstated or only after the horizon.
///
/// A suspended merchant still takes no new invoices: no invoice of the merchant is created while suspended.
fn aim_suspensions(plan: &mut Plan) {
    let mut rng = StdRng::seed_from_u64(plan.scenario.seed ^ 0x5e77_1e5e_b75e_0002);
    let h = plan.horizon;
    let mut eligible: Vec<usize> = (1..plan.merchants.len())
        .filter(|m| plan.merchants[*m].suspension.is_none())
        .collect();
    eligible.shuffle(&mut rng);
    let released_quota = (eligible.len() * 15 / 100).max(3);
    let held_quota = (eligible.len() * 10 / 100).max(3);
    let (mut released, mut held) = (0, 0);
    for m in eligible {
        let release = if released < released_quota {
            true
        } else if held < held_quota {
            false
        } else {
            break;
        };
        let invoices: Vec<&InvoicePlan> =
            plan.invoices.iter().filter(|i| i.merchant == m).collect();
        let creations: Vec<DateTime<Utc>> = invoices.iter().map(|i| i.created_at).collect();
        let Some(&last_created) = creations.iter().max() else {
            continue;
        };
        let settleable: Vec<DateTime<Utc>> = invoices
            .iter()
            .filter_map(|i| i.settleable_at())
            .filter(|t| *t < h)
            .collect();
        let ms = TimeDelta::milliseconds(1);
        let suspension = if release {
            // T with room before the next creation (or the horizon) for the reinstatement.
            let windows: Vec<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> = settleable
                .iter()
                .filter_map(|t| {
                    let before = creations.iter().filter(|c| *c <= t).max().copied()?;
                    let after = creations
                        .iter()
                        .filter(|c| *c > t)
                        .min()
                        .copied()
                        .unwrap_or(h)
                        .min(h);
                    (after - *t > secs(2)).then_some((before, *t, after))
                })
                .collect();
            if windows.is_empty() {
                continue;
            }
            let (before, t, after) = windows[rng.random_range(0..windows.len())];
            let at = between(&mut rng, (before + ms).max(t - secs(2 * 3600)), t);
            let back = between(&mut rng, t + ms, after.min(t + secs(6 * 3600)));
            (at, Some(back))
        } else {
            let targets: Vec<DateTime<Utc>> = settleable
                .into_iter()
                .filter(|t| *t > last_created)
                .collect();
            if targets.is_empty() {
                continue;
            }
            let t = targets[rng.random_range(0..targets.len())];
            let at = between(&mut rng, (last_created + ms).max(t - secs(2 * 3600)), t);
            let back = rng
                .random_bool(0.5)
                .then(|| between(&mut rng, h + secs(3600), h + secs(24 * 3600)));
            (at, back)
        };
        let (at, reinstated_at) = suspension;
        plan.merchants[m].suspension = Some(Suspension {
            at,
            reason: [
                SuspensionReason::SuspectedFraud,
                SuspensionReason::ComplianceReview,
                SuspensionReason::MerchantRequest,
            ][rng.random_range(0..3)],
            reinstated_at,
            by_service_only: true,
        });
        if release {
            released += 1;
        } else {
            held += 1;
        }
    }
}

/// What the settlement service must produce for `invoice` of `merchant` (decision 0026), from the plan's intent:
/// an invoice settles iff it is paid and every payment its `InvoicePaid` counted is confirmed, at T
/// ([`InvoicePlan::settleable_at`]); partially paid, expired-unpaid and cancelled invoices never settle. Gross is
/// the invoice's `total_amount` in its currency (late and over-payments alike), fee and net by [`platform_fee`]
/// at the merchant's rate. If the merchant is suspended at T (suspended at or before T and not reinstated at or
/// before T), the settlement is held — created and failed (`merchant_suspended`, will retry) at T — and
/// completed at the reinstatement; otherwise created and completed at T.
pub fn service_settlement(
    invoice: &InvoicePlan,
    merchant: &MerchantPlan,
) -> Option<ServiceSettlement> {
    let at = invoice.settleable_at()?;
    let currency: Currency = invoice.currency.into();
    let held = merchant.suspended_at(at);
    Some(ServiceSettlement {
        id: SettlementId::for_invoice(invoice.id),
        at,
        currency,
        gross: invoice.total,
        split: platform_fee(invoice.total, merchant.fee_percentage, currency)
            .expect("generator amounts fit their currency"),
        fee_percentage: merchant.fee_percentage,
        held,
        completed_at: if held {
            merchant.reinstated_at()
        } else {
            Some(at)
        },
    })
}

fn merchant(rng: &mut StdRng, scenario: &Scenario, index: usize, span_ms: i64) -> MerchantPlan {
    let created_at = scenario.start - TimeDelta::days(30) + secs(index as i64 * 97);
    let mut accepted: Vec<CryptoAsset> = CryptoAsset::ALL
        .into_iter()
        .filter(|_| rng.random_bool(0.6))
        .collect();
    if accepted.is_empty() {
        accepted.push(CryptoAsset::Usdt);
    }
    let initial = MerchantSettings {
        currency: fiat(weighted(rng, &CURRENCIES)),
        accepted,
        speed: SPEEDS[rng.random_range(0..SPEEDS.len())],
        expiry_minutes: DEFAULT_EXPIRY_MINUTES,
        tolerance: Percentage::default(),
        contact: MerchantContact {
            email: Some(format!("billing@merchant-{index}.example")),
            phone: index
                .is_multiple_of(2)
                .then(|| format!("+1555{:07}", index % 10_000_000)),
            locale: Some(if index.is_multiple_of(3) { "de" } else { "en" }.into()),
        },
    };
    let at_fraction = |rng: &mut StdRng, from: f64, to: f64| {
        let f: f64 = rng.random_range(from..to);
        scenario.start + TimeDelta::milliseconds((span_ms as f64 * f) as i64)
    };
    let update = rng.random_bool(0.35).then(|| {
        let mut after = initial.clone();
        match rng.random_range(0..4) {
            0 => {
                after.speed = SPEEDS[(SPEEDS.iter().position(|s| *s == after.speed).unwrap()
                    + 1
                    + rng.random_range(0..3))
                    % SPEEDS.len()];
                after.expiry_minutes = [30, 60][rng.random_range(0..2)];
            }
            1 => {
                let others: Vec<&str> = CURRENCIES
                    .iter()
                    .map(|(c, _)| *c)
                    .filter(|c| *c != after.currency.code())
                    .collect();
                after.currency = fiat(others[rng.random_range(0..others.len())]);
            }
            2 => {
                let missing: Vec<CryptoAsset> = CryptoAsset::ALL
                    .into_iter()
                    .filter(|a| !after.accepted.contains(a))
                    .collect();
                if missing.is_empty() {
                    after.accepted.retain(|a| *a != CryptoAsset::Eth);
                } else {
                    after
                        .accepted
                        .push(missing[rng.random_range(0..missing.len())]);
                }
            }
            _ => {
                after.tolerance = "1.5".parse().expect("valid");
                after.expiry_minutes = 30;
            }
        }
        after.contact.email = Some(format!("finance@merchant-{index}.example"));
        SettingsUpdate {
            at: at_fraction(rng, 0.2, 0.8),
            after,
        }
    });
    let suspension = (index > 0 && rng.random_bool(0.04)).then(|| Suspension {
        at: at_fraction(rng, 0.5, 0.95),
        reason: [
            SuspensionReason::SuspectedFraud,
            SuspensionReason::ComplianceReview,
            SuspensionReason::MerchantRequest,
        ][rng.random_range(0..3)],
        reinstated_at: None, // drawn once the plan is complete (`reinstate`)
        by_service_only: false,
    });
    MerchantPlan {
        id: MerchantId::from_uuid(v7(rng, created_at)).expect("non-nil"),
        business_name: format!(
            "{} {:03}",
            [
                "Coffee Corner",
                "Pixel Forge",
                "Nordic Knits",
                "Atlas Books",
                "Blue Fin Sushi"
            ][index % 5],
            index
        ),
        created_at,
        fee_percentage: FEES[rng.random_range(0..FEES.len())]
            .parse()
            .expect("valid fee"),
        initial,
        update,
        suspension,
        api_key: format!("key_{}", hex(rng, 8)),
        user: format!("usr_{}", hex(rng, 6)),
        ip: ip(rng),
    }
}

fn transaction_hash(rng: &mut StdRng, network: Network) -> TransactionHash {
    let digits = hex(rng, 32);
    let text = match network {
        Network::Ethereum | Network::Polygon => format!("0x{digits}"),
        Network::Bitcoin | Network::Tron => digits,
    };
    TransactionHash::parse(&text).expect("valid hash")
}

struct InvoiceBuilder<'a> {
    rng: &'a mut StdRng,
    network: Network,
    required: u32,
    payments: Vec<PaymentPlan>,
}

impl InvoiceBuilder<'_> {
    /// A payment detected at `at`; it fails `fails_after` later when given, otherwise it confirms.
    fn pay(
        &mut self,
        at: DateTime<Utc>,
        amount: Amount,
        due_before: Amount,
        late: bool,
        fails_after: Option<TimeDelta>,
    ) -> DateTime<Utc> {
        let (block_seconds, _, base_height) = chain(self.network);
        let id = PaymentId::from_uuid(v7(self.rng, at)).expect("non-nil");
        let transaction_hash = transaction_hash(self.rng, self.network);
        let r = self.required;
        let mut payment = PaymentPlan {
            id,
            transaction_hash,
            amount,
            due_before,
            late,
            detected_at: at,
            confirming: Vec::new(),
            confirmed_at: None,
            failed: None,
            block_height: None,
        };
        match fails_after {
            Some(delay) => {
                let reason = [
                    PaymentFailureReason::Dropped,
                    PaymentFailureReason::DoubleSpent,
                ][self.rng.random_range(0..2)];
                payment.failed = Some((at + delay, reason));
            }
            None if r == 0 => payment.confirmed_at = Some(at + secs(1)),
            None => {
                let height = base_height + (at.timestamp() / block_seconds) as u64 % 1_000_000;
                payment.block_height = Some(height);
                let mut steps = vec![1, r / 2];
                steps.dedup();
                payment.confirming = steps
                    .into_iter()
                    .filter(|k| *k >= 1 && *k < r)
                    .map(|k| (k, at + secs(block_seconds * i64::from(k))))
                    .collect();
                payment.confirmed_at = Some(at + secs(block_seconds * i64::from(r)));
            }
        }
        self.payments.push(payment);
        at
    }
}

fn invoice(
    rng: &mut StdRng,
    merchants: &[MerchantPlan],
    merchant_index: usize,
    created_at: DateTime<Utc>,
) -> InvoicePlan {
    let merchant = &merchants[merchant_index];
    let settings = merchant.settings_at(created_at).clone();
    let asset = settings.accepted[rng.random_range(0..settings.accepted.len())];
    let nets = networks(asset);
    let network = nets[rng.random_range(0..nets.len())];
    let required = required_confirmations(settings.speed, network);
    let currency = settings.currency;
    let total = match currency.decimals() {
        0 => Decimal::new(rng.random_range(100..300_000), 0),
        d => Decimal::new(rng.random_range(100..200_000), 2).round_dp(d),
    };
    let due = floor_units(total / rate(asset, currency), asset.decimals());
    let (total, due) = (amount(total), amount(due));
    let expires_at = created_at + TimeDelta::minutes(i64::from(settings.expiry_minutes));
    let kind = weighted(rng, &Kind::WEIGHTS);
    let window = expires_at - created_at;
    let first_detection =
        created_at + secs(20) + (window - secs(60)) * rng.random_range(0..60) / 100;
    let partial = |rng: &mut StdRng| {
        let tenths = rng.random_range(2..8);
        let value = floor_units(due.as_decimal() * Decimal::new(tenths, 1), asset.decimals());
        amount(value.min(due.as_decimal() - Decimal::new(1, asset.decimals())))
    };
    let mut b = InvoiceBuilder {
        rng,
        network,
        required,
        payments: Vec::new(),
    };
    let remaining = |paid: Amount| due.checked_sub(paid).expect("partial below due");
    let mut paid = None;
    let mut expired_at = None;
    let mut cancelled = None;
    let paid_now = |at: DateTime<Utc>, late: bool| {
        Some(PaidPlan {
            at: at + secs(2),
            paid_at: at,
            late,
        })
    };
    match kind {
        Kind::Paid => {
            let at = b.pay(first_detection, due, due, false, None);
            paid = paid_now(at, false);
        }
        Kind::Overpaid => {
            let extra = floor_units(
                due.as_decimal() * Decimal::new(b.rng.random_range(3..11), 2),
                asset.decimals(),
            );
            let over = amount(due.as_decimal() + extra);
            let at = b.pay(first_detection, over, due, false, None);
            paid = paid_now(at, false);
        }
        Kind::PaidInTwo => {
            let first = partial(b.rng);
            b.pay(first_detection, first, due, false, None);
            let second_at = between(b.rng, first_detection + secs(10), expires_at - secs(5));
            let at = b.pay(second_at, remaining(first), remaining(first), false, None);
            paid = paid_now(at, false);
        }
        Kind::PaidLate => {
            let mut received = Amount::ZERO;
            if b.rng.random_bool(0.5) {
                received = partial(b.rng);
                b.pay(first_detection, received, due, false, None);
            }
            expired_at = Some(expires_at);
            let late_at = expires_at + secs(b.rng.random_range(60..1800));
            let at = b.pay(
                late_at,
                remaining(received),
                remaining(received),
                true,
                None,
            );
            paid = paid_now(at, true);
        }
        Kind::Expired => expired_at = Some(expires_at),
        Kind::ExpiredPartial => {
            let first = partial(b.rng);
            b.pay(first_detection, first, due, false, None);
            expired_at = Some(expires_at);
        }
        Kind::Cancelled | Kind::CancelledPartial => {
            let at = between(b.rng, first_detection + secs(5), expires_at - secs(5));
            if kind == Kind::CancelledPartial {
                let first = partial(b.rng);
                b.pay(first_detection, first, due, false, None);
            }
            let reason = [
                CancellationReason::MerchantRequest,
                CancellationReason::CustomerRequest,
                CancellationReason::Duplicate,
            ][b.rng.random_range(0..3)];
            cancelled = Some(CancelPlan { at, reason });
        }
        Kind::FailedThenPaid | Kind::FailedThenExpired => {
            let first = partial(b.rng);
            let fails_after = secs(b.rng.random_range(30..240));
            b.pay(first_detection, first, due, false, Some(fails_after));
            if kind == Kind::FailedThenPaid {
                let retry_at = between(
                    b.rng,
                    first_detection + fails_after + secs(10),
                    expires_at - secs(5),
                );
                let at = b.pay(retry_at, due, due, false, None);
                paid = paid_now(at, false);
            } else {
                expired_at = Some(expires_at);
            }
        }
    }
    let payments = b.payments;
    let rng = b.rng;
    let settlement = paid.as_ref().and_then(|_| {
        let last_confirmation = payments
            .iter()
            .filter(|p| p.failed.is_none())
            .filter_map(|p| p.confirmed_at)
            .max()?;
        let created = last_confirmation + secs(60);
        if merchant.suspension_begun_by(created) {
            return None; // settlements of a suspended merchant are held
        }
        let split = platform_fee(total, merchant.fee_percentage, currency.into())
            .expect("generator amounts fit their currency");
        let mut failures = Vec::new();
        let completed_at = match rng.random_range(0..100) {
            0..85 => Some(created + secs(rng.random_range(120..900))),
            85..95 => {
                let failed = created + secs(300);
                failures.push((failed, SettlementFailureReason::PayoutRejected, true));
                Some(failed + secs(rng.random_range(300..1200)))
            }
            _ => {
                let reason = [
                    SettlementFailureReason::ComplianceHold,
                    SettlementFailureReason::InvalidPayoutDestination,
                ][rng.random_range(0..2)];
                failures.push((created + secs(300), reason, false));
                None
            }
        };
        Some(SettlementPlan {
            id: SettlementId::from_uuid(v7(rng, created)).expect("non-nil"),
            created_at: created,
            currency: currency.into(),
            gross: total,
            split,
            fee_percentage: merchant.fee_percentage,
            failures,
            completed_at,
        })
    });
    let mut views = Vec::new();
    let mut at = created_at;
    for _ in 0..weighted(rng, &[(0, 20), (1, 50), (2, 20), (3, 10)]) {
        at += secs(rng.random_range(5..60));
        views.push(at);
    }
    let id = InvoiceId::from_uuid(v7(rng, created_at)).expect("non-nil");
    InvoicePlan {
        id,
        address: deposit_address(id, network),
        merchant: merchant_index,
        kind,
        created_at,
        expires_at,
        currency,
        total,
        asset,
        network,
        due,
        required_confirmations: required,
        fee_percentage: merchant.fee_percentage,
        correlation: CorrelationId::from_uuid(v7(rng, created_at)).expect("non-nil"),
        request: Request {
            ip: ip(rng),
            user_agent: format!(
                "ShopBackend/2.{} (+{})",
                rng.random_range(0..9),
                merchant.api_key
            ),
            request_id: format!("req_{}", hex(rng, 12)),
        },
        payments,
        paid,
        expired_at,
        cancelled,
        settlement,
        service_settlement: None, // by the policy once the plan is complete (ByService mode)
        views,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invoice_has_its_own_valid_deposit_address() {
        let p = plan(&Scenario::new(11, 5, 400));
        let mut seen = std::collections::HashSet::new();
        for i in &p.invoices {
            assert_eq!(i.address.check(i.network), None, "{}", i.address);
            assert!(i.network.carries(i.asset));
            assert!(seen.insert(i.address.canonical(i.network)), "{}", i.address);
            assert_eq!(i.address, deposit_address(i.id, i.network));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a = plan(&Scenario::new(7, 5, 50));
        let b = plan(&Scenario::new(7, 5, 50));
        let ids = |p: &Plan| p.invoices.iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&plan(&Scenario::new(8, 5, 50))));
    }

    #[test]
    fn every_kind_of_flow_occurs_and_timelines_are_consistent() {
        let p = plan(&Scenario::new(1, 20, 2000));
        for (kind, _) in Kind::WEIGHTS {
            assert!(p.invoices.iter().any(|i| i.kind == kind), "{kind:?}");
        }
        for i in &p.invoices {
            for pay in &i.payments {
                assert!(pay.detected_at > i.created_at);
                assert!(pay.amount.as_decimal() > Decimal::ZERO);
                if let Some(paid) = &i.paid {
                    assert!(pay.detected_at <= paid.paid_at);
                }
                assert!(pay.confirmed_at.is_some() != pay.failed.is_some());
            }
            if let Some(paid) = &i.paid {
                assert!(i.cancelled.is_none());
                let received = i.received_at(paid.at);
                assert!(received >= i.due, "{:?}", i.kind);
                assert_eq!(paid.late, i.expired_at.is_some());
            }
            if let Some(s) = &i.settlement {
                assert_eq!(s.split.fee.checked_add(s.split.net), Some(s.gross));
            }
            assert!(i.service_settlement.is_none(), "Generated mode");
        }
        for m in &p.merchants {
            if let Some(s) = &m.suspension {
                assert!(s.reinstated_at.is_none_or(|r| r > s.at));
                assert!(!s.by_service_only);
            }
        }
    }

    /// What a ByService plan's settlements look like at the horizon.
    #[derive(Debug, Default)]
    struct Mix {
        settled_at_once: usize,
        held_and_released: usize,
        still_held: usize,
        overpaid: usize,
        late: usize,
        confirmed_after_paid: usize,
        confirmed_before_paid: usize,
        due_after_horizon: usize,
    }

    fn mix(p: &Plan) -> Mix {
        let h = p.horizon;
        let mut mix = Mix::default();
        for i in &p.invoices {
            let Some(s) = i.service_settlement.as_ref() else {
                continue;
            };
            if s.at > h {
                mix.due_after_horizon += 1;
                continue;
            }
            match (s.held, s.completed_at.filter(|at| *at <= h)) {
                (false, _) => mix.settled_at_once += 1,
                (true, Some(_)) => mix.held_and_released += 1,
                (true, None) => mix.still_held += 1,
            }
            mix.overpaid += usize::from(!i.overpaid().is_zero());
            mix.late += usize::from(i.paid.as_ref().is_some_and(|p| p.late));
            if s.at > i.paid.as_ref().unwrap().at {
                mix.confirmed_after_paid += 1;
            } else {
                mix.confirmed_before_paid += 1;
            }
        }
        mix
    }

    #[test]
    fn by_service_plans_hold_the_policys_settlements_in_a_healthy_mix() {
        for seed in 1..=6 {
            let scenario = Scenario::new(seed, 25, 400).settled_by_service();
            let p = plan(&scenario);
            let m = mix(&p);
            assert!(m.held_and_released >= 3, "seed {seed}: {m:?}");
            assert!(m.still_held >= 3, "seed {seed}: {m:?}");
            assert!(m.settled_at_once >= 150, "seed {seed}: {m:?}");
            assert!(m.overpaid >= 5 && m.late >= 5, "seed {seed}: {m:?}");
            assert!(
                m.confirmed_after_paid >= 50 && m.confirmed_before_paid >= 20,
                "seed {seed}: {m:?}"
            );

            // The same plan as Generated mode but for settlements and the aimed suspensions.
            let generated = plan(&Scenario::new(seed, 25, 400));
            for (a, b) in generated.invoices.iter().zip(&p.invoices) {
                assert_eq!((a.id, a.merchant, a.total), (b.id, b.merchant, b.total));
                assert_eq!(a.payments.len(), b.payments.len());
                assert!(b.settlement.is_none());
            }
            for (a, b) in generated.merchants.iter().zip(&p.merchants) {
                match (&a.suspension, &b.suspension) {
                    (None, Some(s)) => assert!(s.by_service_only),
                    (Some(x), Some(y)) => assert_eq!(
                        (x.at, x.reinstated_at, y.by_service_only),
                        (y.at, y.reinstated_at, false)
                    ),
                    (x, y) => assert_eq!(x.is_none(), y.is_none()),
                }
            }

            for i in &p.invoices {
                let m = &p.merchants[i.merchant];
                // A suspended merchant takes no new invoices.
                assert!(!m.suspended_at(i.created_at), "seed {seed}");
                let expected = match i.settleable_at() {
                    Some(at) => {
                        assert!(i.paid.is_some() && i.cancelled.is_none());
                        assert!(at >= i.paid.as_ref().unwrap().at);
                        Some(at)
                    }
                    None => None,
                };
                let s = i.service_settlement.as_ref();
                assert_eq!(s.map(|s| s.at), expected);
                if matches!(
                    i.kind,
                    Kind::Expired
                        | Kind::ExpiredPartial
                        | Kind::Cancelled
                        | Kind::CancelledPartial
                        | Kind::FailedThenExpired
                ) {
                    assert!(s.is_none(), "{:?} never settles", i.kind);
                }
                let Some(s) = s else { continue };
                assert_eq!(s.id, SettlementId::for_invoice(i.id));
                assert_eq!((s.gross, s.currency), (i.total, i.currency.into()));
                assert_eq!(s.split.fee.checked_add(s.split.net), Some(s.gross));
                assert_eq!(s.held, m.suspended_at(s.at));
                if s.held {
                    let r = s.completed_at;
                    assert_eq!(r, m.reinstated_at());
                    assert!(r.is_none_or(|r| r > s.at));
                } else {
                    assert_eq!(s.completed_at, Some(s.at));
                }
            }
        }
    }
}
