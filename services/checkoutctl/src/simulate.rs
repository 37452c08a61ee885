//! The checkout simulator behind `checkoutctl simulate` (decision 0037): it plays the world around the bus, in
//! real time, and nothing else — merchants signing up (some registering a webhook endpoint on a receiver that
//! answers, fails or hangs), merchants suspended and reinstated, customers opening checkouts (`CheckoutViewed`),
//! invoices created through the outbox writer in a transaction as the invoice API would, payments played by the
//! scanner simulator (`payments::simulate`) onto `integration-events` (exact, in two parts, over-paid, late,
//! partial, reorganised out and paid again, surviving a reorganisation, duplicated and reordered reports), expiries
//! and cancellations. The real services do everything else: the payments service turns the reports into payment
//! events and `InvoicePaid`, settlement settles, projections, audit, analytics, webhooks and notifications react.
//!
//! Guarantees:
//! - **Its own truth.** Each invoice's fate is drawn when it is created ([`Fate`]), and what the read models must
//!   show once it has played out ([`InvoiceTruth`]: status, amount paid, over-payment, late flag, failed payments)
//!   is computed from that plan alone ([`expected`]), never from a service. Merchants' final status and the
//!   checkout page's records per merchant (views, methods chosen, abandonments) are kept the same way. The caller can compare (the integration test does).
//! - **Valid, ordered input.** Every record passed the contract before it left (outbox writer, `encode`); one
//!   key's records leave in the order they happened (a heap ordered by time, then by scheduling order); a
//!   payment's first sighting comes at least [`MIN_SIGHTING_DELAY`] after its invoice was committed, so the
//!   payments service normally knows the address (the race it retries otherwise).
//! - **Bounded.** Only invoices in flight are kept (about `rate × (window + confirmation time)`); finished ones are
//!   folded into counters, unless [`Options::keep_truth`] asks for them (tests). Merchants are capped at
//!   [`Options::max_merchants`].
//! - **Stopping.** When `stop` fires (or `duration` passes) no new merchant, invoice or suspension starts; what is
//!   in flight plays out (pending reports, expiries, reinstatements) unless `abort` fires too, so a finished run
//!   leaves a system that can be verified (`checkoutctl verify --grace 0` once the groups caught up).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use events::analytics::{
    AbandonReason, AbandonStage, AnalyticsEvent, CheckoutAbandoned, CheckoutViewed,
    PaymentMethodChosen,
};
use events::integration::IntegrationEvent;
use events::money::{Amount, CryptoAsset, Currency, Decimal, FiatCurrency, Percentage};
use events::payload::{
    CancellationReason, Deposit, InvoiceCancelled, InvoiceCreated, InvoiceExpired, MerchantContact,
    MerchantCreated, MerchantReinstated, MerchantSuspended, Network, SpeedPolicy, SuspensionReason,
};
use events::{Actor, ActorKind, Envelope, InvoiceId, MerchantId, Metadata};
use payments::simulate::{Chaos, Fate as ChainFate, SimPayment, block_seconds, play};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

/// A payment is first seen on chain at least this long after its invoice was committed.
pub const MIN_SIGHTING_DELAY: Duration = Duration::from_secs(3);
/// The shortest payment window the simulator accepts: an invoice's whole on-time story must fit in it.
pub const MIN_WINDOW: Duration = Duration::from_secs(30);
/// Reports handed to the producer and not acknowledged yet, at most (then the loop waits for the broker).
pub const MAX_UNACKNOWLEDGED: usize = 10_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// New invoices per second (checkouts; each brings 1–3 views, 0–2 payments of ~5–25 reports, and the events
    /// the services derive: see decision 0037 for the events per invoice).
    pub rate: f64,
    /// Stop starting new things after this long (what is in flight still plays out).
    pub duration: Option<Duration>,
    /// Seed of every draw (fates, amounts, merchants); invoice ids and transaction hashes are unique per run.
    pub seed: u64,
    /// Merchants signed up at the start.
    pub merchants: usize,
    /// At most this many merchants (sign-ups stop there).
    pub max_merchants: usize,
    /// Invoices' payment window (created → `expires_at`).
    pub window: Duration,
    /// Base URL of the webhook receiver (`http://127.0.0.1:2527`, dev-sandbox); merchants register endpoints
    /// under `/hooks/{ok,flaky,hang}/<merchant>` when set.
    pub webhook_receiver: Option<String>,
    /// The scanners' topic.
    pub integration_topic: String,
    /// Mean seconds between suspensions (0: none).
    pub suspend_every: Duration,
    /// Keep every finished invoice's truth in the report (tests; unbounded).
    pub keep_truth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rate: 4.0,
            duration: None,
            seed: 1,
            merchants: 8,
            max_merchants: 60,
            window: Duration::from_secs(60),
            webhook_receiver: None,
            integration_topic: events::topics::INTEGRATION_EVENTS.to_string(),
            suspend_every: Duration::from_secs(40),
            keep_truth: false,
        }
    }
}

/// What the simulator needs from the platform.
pub struct Deps {
    pub pool: PgPool,
    pub producer: FutureProducer,
    /// The webhooks service's SSRF guard and secret box, to register endpoints as `checkoutctl webhooks` does.
    pub webhooks: Option<(webhooks::ssrf::Guard, webhooks::signing::SecretBox)>,
}

/// The shape of an invoice's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// One payment of exactly what is due (sometimes surviving a reorganisation).
    Paid,
    /// A partial payment, then the rest.
    PaidInTwo,
    /// One payment of more than is due.
    Overpaid,
    /// Nothing before expiry; expired; then paid in full.
    PaidLate,
    /// Nothing paid; expired.
    Expired,
    /// Partly paid; expired.
    ExpiredPartial,
    /// Cancelled by the merchant before any payment.
    Cancelled,
    /// A full payment reorganised out of the chain, then a full payment that confirms.
    ReorgedThenPaid,
}

const FATES: [(Fate, u32); 8] = [
    (Fate::Paid, 40),
    (Fate::PaidInTwo, 10),
    (Fate::Overpaid, 8),
    (Fate::PaidLate, 6),
    (Fate::Expired, 12),
    (Fate::ExpiredPartial, 6),
    (Fate::Cancelled, 6),
    (Fate::ReorgedThenPaid, 8),
];

/// What the read models must show for an invoice once it has played out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceTruth {
    pub invoice_id: InvoiceId,
    pub merchant_id: MerchantId,
    pub fate: Fate,
    /// `confirmed`, `expired` or `cancelled`.
    pub status: &'static str,
    pub crypto_currency: String,
    pub crypto_amount_due: Decimal,
    /// Detected, not failed.
    pub amount_paid: Decimal,
    pub overpaid_amount: Decimal,
    pub late_payment: bool,
    pub payments_detected: i32,
    pub payments_failed: i32,
    pub currency: String,
    pub total_amount: Decimal,
}

/// What the simulator did, so far or in all.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub seconds: f64,
    pub merchants: usize,
    pub merchants_suspended_now: usize,
    pub suspensions: u64,
    pub reinstatements: u64,
    /// Endpoints registered, by the receiver's behaviour (`ok`, `flaky`, `hang`).
    pub webhook_endpoints: BTreeMap<String, u64>,
    pub invoices: u64,
    pub invoices_by_fate: BTreeMap<Fate, u64>,
    pub checkout_views: u64,
    /// `PaymentMethodChosen` records (the checkout page).
    pub payment_methods_chosen: u64,
    /// `CheckoutAbandoned` records (the checkout page).
    pub checkouts_abandoned: u64,
    pub scanner_reports: u64,
    pub payments: u64,
    pub expiries: u64,
    pub cancellations: u64,
    pub in_flight: usize,
    /// Invoices played out whose truth is paid and confirmed: each must have one settlement.
    pub expected_confirmed: u64,
    pub expected_late: u64,
    pub expected_overpaid: u64,
    /// Outbox transactions committed (invoices, views, expiries, merchants).
    pub outbox_transactions: u64,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub rate: f64,
    pub counts: Counts,
    /// Every finished invoice's truth (only with [`Options::keep_truth`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invoices: Vec<InvoiceTruth>,
    /// Every merchant's status at the end (`active` or `suspended`).
    pub merchants: BTreeMap<MerchantId, &'static str>,
    /// Checkout views per merchant.
    #[serde(skip)]
    pub views: BTreeMap<MerchantId, u64>,
    /// Payment methods chosen per merchant.
    #[serde(skip)]
    pub methods_chosen: BTreeMap<MerchantId, u64>,
    /// Checkouts abandoned per merchant.
    #[serde(skip)]
    pub abandoned: BTreeMap<MerchantId, u64>,
    /// Whether the run was cut short (in-flight invoices abandoned).
    pub aborted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pay {
    amount: Decimal,
    /// Offset of the first sighting from the invoice's creation.
    at: Duration,
    fate: ChainFate,
}

struct Merchant {
    id: MerchantId,
    speed: SpeedPolicy,
    currency: FiatCurrency,
    created: Instant,
    suspended: bool,
}

struct Invoice {
    created: Envelope,
    merchant: usize,
    truth: InvoiceTruth,
    due: Decimal,
    asset: CryptoAsset,
    network: Network,
    expires_at: DateTime<Utc>,
    /// Crypto received (detected, not failed) at expiry, when the invoice expires.
    expire_with: Option<Decimal>,
    /// Outstanding scheduled actions; finished at zero.
    pending: usize,
}

enum Action {
    Report(Box<IntegrationEvent>, u64),
    View(u64),
    /// The customer chose the invoice's asset and network on the checkout page.
    Method(u64),
    /// The customer abandoned the checkout.
    Abandon(u64, AbandonStage, AbandonReason),
    Expire(u64),
    Cancel(u64),
    Reinstate(usize),
}

impl Action {
    fn invoice(&self) -> Option<u64> {
        match self {
            Action::Report(_, n)
            | Action::View(n)
            | Action::Method(n)
            | Action::Abandon(n, _, _)
            | Action::Expire(n)
            | Action::Cancel(n) => Some(*n),
            Action::Reinstate(_) => None,
        }
    }
}

/// The schedule: actions by due time, then by the order they were scheduled in.
struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    actions: std::collections::HashMap<u64, Action>,
    next: u64,
}

impl Schedule {
    fn push(&mut self, at: Instant, action: Action) {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.actions.insert(self.next, action);
    }

    fn pop_due(&mut self, now: Instant) -> Option<Action> {
        let Reverse((at, n)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.actions.remove(&n)
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The simulator's state.
struct Sim<'d> {
    options: Options,
    deps: &'d Deps,
    rng: StdRng,
    started: Instant,
    merchants: Vec<Merchant>,
    invoices: std::collections::HashMap<u64, Invoice>,
    next_invoice: u64,
    schedule: Schedule,
    counts: Counts,
    finished: Vec<InvoiceTruth>,
    views: BTreeMap<MerchantId, u64>,
    methods_chosen: BTreeMap<MerchantId, u64>,
    abandoned: BTreeMap<MerchantId, u64>,
    /// Reports handed to the producer, not acknowledged yet: the loop never waits for the broker's round trip
    /// (the producer keeps each key's order), only for a refusal or when too many are outstanding.
    deliveries: futures_util::stream::FuturesUnordered<rdkafka::producer::DeliveryFuture>,
}

/// Runs the simulator until `stop` (or the duration), then lets what is in flight play out unless `abort`;
/// `progress` is called about every `progress_every` with the counts so far.
pub async fn run(
    options: Options,
    deps: &Deps,
    mut stop: watch::Receiver<bool>,
    mut abort: watch::Receiver<bool>,
    progress_every: Duration,
    mut progress: impl FnMut(&Counts),
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.rate.is_finite() && options.rate > 0.0 && options.rate <= 1000.0,
        "the rate must be above 0 and at most 1000 invoices per second, not {}",
        options.rate
    );
    anyhow::ensure!(
        options.window >= MIN_WINDOW,
        "the payment window must be at least {MIN_WINDOW:?}, not {:?}",
        options.window
    );
    anyhow::ensure!(
        options.merchants >= 1 && options.merchants <= options.max_merchants,
        "between 1 and --max-merchants ({}) merchants to start with, not {}",
        options.max_merchants,
        options.merchants
    );
    let mut sim = Sim {
        rng: StdRng::seed_from_u64(options.seed),
        options,
        deps,
        started: Instant::now(),
        merchants: Vec::new(),
        invoices: Default::default(),
        next_invoice: 0,
        schedule: Schedule {
            heap: BinaryHeap::new(),
            actions: Default::default(),
            next: 0,
        },
        counts: Counts::default(),
        finished: Vec::new(),
        views: BTreeMap::new(),
        methods_chosen: BTreeMap::new(),
        abandoned: BTreeMap::new(),
        deliveries: Default::default(),
    };
    for _ in 0..sim.options.merchants {
        sim.sign_up().await?;
    }
    // Let the merchants' events reach the services before their first invoice.
    let opening = Instant::now() + Duration::from_secs(2);
    let tick = Duration::from_millis(50);
    let mut credit = 0.0_f64;
    let mut last = Instant::now();
    let mut last_progress = Instant::now();
    let mut next_suspension = sim.next_suspension_after();
    let mut stopping = false;
    loop {
        let now = Instant::now();
        if !stopping
            && (*stop.borrow()
                || sim
                    .options
                    .duration
                    .is_some_and(|d| now.duration_since(sim.started) >= d))
        {
            stopping = true;
        }
        if *abort.borrow() {
            break;
        }
        if !stopping && now >= opening {
            credit += sim.options.rate * now.duration_since(last).as_secs_f64();
            // Never a burst bigger than a second's worth after a stall.
            credit = credit.min(sim.options.rate.max(1.0));
            while credit >= 1.0 {
                credit -= 1.0;
                sim.open_invoice().await?;
            }
            if next_suspension.is_some_and(|at| now >= at) {
                sim.suspend_someone().await?;
                next_suspension = sim.next_suspension_after();
            }
        }
        last = now;
        sim.play_due(now).await?;
        if last_progress.elapsed() >= progress_every {
            last_progress = Instant::now();
            progress(&sim.counts_now());
        }
        if stopping && sim.schedule.is_empty() {
            break;
        }
        let sleep = tokio::time::sleep(tick);
        tokio::select! {
            _ = sleep => {}
            _ = stop.changed(), if !stopping => {}
            _ = abort.changed() => {}
        }
    }
    // Every report sent is acknowledged before the run counts as done.
    sim.settle_deliveries(usize::MAX).await?;
    let aborted = !sim.schedule.is_empty();
    let counts = sim.counts_now();
    progress(&counts);
    Ok(Report {
        seed: sim.options.seed,
        rate: sim.options.rate,
        counts,
        invoices: sim.finished,
        merchants: sim
            .merchants
            .iter()
            .map(|m| (m.id, if m.suspended { "suspended" } else { "active" }))
            .collect(),
        views: sim.views,
        methods_chosen: sim.methods_chosen,
        abandoned: sim.abandoned,
        aborted,
    })
}

/// The clock at the contract's precision (microseconds), as the events' own constructor reads it.
fn wall_now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

fn decimal(s: &str) -> Decimal {
    s.parse().expect("a decimal literal")
}

fn amount(d: Decimal) -> Amount {
    Amount::new(d).expect("the simulator's amounts are positive")
}

fn actor(kind: ActorKind, id: &str) -> Actor {
    Actor::new(kind, id).expect("a valid actor")
}

/// Crypto per unit of fiat: a fixed quote (the simulator prices, it does not trade).
fn quote(asset: CryptoAsset, fiat: FiatCurrency) -> Decimal {
    let usd = match fiat.code() {
        "EUR" => decimal("1.08"),
        "GBP" => decimal("1.27"),
        _ => Decimal::ONE,
    };
    match asset {
        CryptoAsset::Eth => usd / decimal("3000"),
        CryptoAsset::Btc => usd / decimal("90000"),
        CryptoAsset::Usdt | CryptoAsset::Usdc => usd,
    }
}

fn floor_to(value: Decimal, decimals: u32) -> Decimal {
    value
        .round_dp_with_strategy(decimals, rust_decimal::RoundingStrategy::ToZero)
        .max(Decimal::new(1, decimals))
}

/// A payment as planned: its amount, its first sighting, and when it fails on chain (if it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub amount: Decimal,
    pub seen: DateTime<Utc>,
    pub fails_at: Option<DateTime<Utc>>,
}

/// What the read models must show for an invoice with these payments, computed from the plan alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// `confirmed`, `expired` or `cancelled`.
    pub status: &'static str,
    /// Detected and never failed.
    pub paid: Decimal,
    pub overpaid: Decimal,
    pub late: bool,
    /// When the invoice must be expired (not cancelled, not covered by its window's end): what had been received
    /// then — detected by `expires_at` and not failed by then (`InvoiceExpired.crypto_amount_paid`). Never when
    /// that covers what is due (a full payment still confirming, which fails later): the invoice API keeps such an
    /// invoice open, and the contract refuses an expired invoice paid in full.
    pub expire_with: Option<Decimal>,
}

/// The payments service's rules applied to the plan: payments that never fail count; the invoice is paid when
/// the counted payments cover what is due, late when the payment that covered it was first seen after expiry.
pub fn expected(
    due: Decimal,
    pays: &[Planned],
    expires_at: DateTime<Utc>,
    cancelled: bool,
) -> Expected {
    let mut counted: Vec<&Planned> = pays.iter().filter(|p| p.fails_at.is_none()).collect();
    counted.sort_by_key(|p| p.seen);
    let mut sum = Decimal::ZERO;
    let mut covered_at = None;
    for p in &counted {
        sum += p.amount;
        if sum >= due && covered_at.is_none() {
            covered_at = Some(p.seen);
        }
    }
    let paid = !cancelled && covered_at.is_some();
    let on_time = covered_at.is_some_and(|at| at <= expires_at);
    let expire_with = (!cancelled && !on_time)
        .then(|| {
            pays.iter()
                .filter(|p| p.seen <= expires_at && p.fails_at.is_none_or(|f| f > expires_at))
                .map(|p| p.amount)
                .sum::<Decimal>()
        })
        .filter(|received| *received < due);
    Expected {
        status: if cancelled {
            "cancelled"
        } else if paid {
            "confirmed"
        } else {
            "expired"
        },
        paid: sum,
        overpaid: if paid { sum - due } else { Decimal::ZERO },
        late: paid && !on_time,
        expire_with,
    }
}

impl Sim<'_> {
    fn counts_now(&self) -> Counts {
        let mut c = self.counts.clone();
        c.seconds = self.started.elapsed().as_secs_f64();
        c.merchants = self.merchants.len();
        c.merchants_suspended_now = self.merchants.iter().filter(|m| m.suspended).count();
        c.in_flight = self.invoices.len();
        c
    }

    fn next_suspension_after(&mut self) -> Option<Instant> {
        let mean = self.options.suspend_every.as_secs_f64();
        if mean <= 0.0 {
            return None;
        }
        let wait = mean * self.rng.random_range(0.5..1.5);
        Some(Instant::now() + Duration::from_secs_f64(wait))
    }

    async fn commit(&mut self, records: &[Envelope]) -> anyhow::Result<()> {
        let mut tx = self.deps.pool.begin().await.context("begin")?;
        outbox::append_batch(&mut tx, records)
            .await
            .context("appending to the outbox")?;
        tx.commit().await.context("commit")?;
        self.counts.outbox_transactions += 1;
        Ok(())
    }

    /// A merchant signs up: `MerchantCreated` (back office), and maybe a webhook endpoint on the receiver.
    async fn sign_up(&mut self) -> anyhow::Result<()> {
        let index = self.merchants.len();
        let id = MerchantId::new();
        let currency = FiatCurrency::from_code(["USD", "USD", "EUR", "GBP"][index % 4])
            .expect("known currencies");
        let speed = if self.rng.random_bool(0.7) {
            SpeedPolicy::MediumSpeed
        } else {
            SpeedPolicy::LowMediumSpeed
        };
        let fee: Percentage = ["1", "1", "1", "0.5", "1.5", "2.25"][self.rng.random_range(0..6)]
            .parse()
            .expect("a percentage");
        let created = MerchantCreated {
            business_name: format!("Simulated Shop {}", index + 1),
            default_currency: currency,
            settlement_currency: Currency::Fiat(currency),
            fee_percentage: fee,
            accepted_crypto_currencies: vec![
                CryptoAsset::Usdt,
                CryptoAsset::Usdc,
                CryptoAsset::Eth,
            ],
            speed_policy: speed,
            contact: MerchantContact {
                email: Some(format!("billing@sim-shop-{}.example", index + 1)),
                phone: None,
                locale: Some(if index.is_multiple_of(3) { "de" } else { "en" }.into()),
            },
        };
        let meta = Metadata {
            user_agent: Some("checkoutctl-simulate".into()),
            ..Metadata::new(actor(ActorKind::Admin, "adm_onboarding"))
        };
        let event = Envelope::new(id, created, meta)?;
        self.commit(&[event]).await?;
        if let (Some(base), Some((guard, key))) =
            (&self.options.webhook_receiver, &self.deps.webhooks)
            && self.rng.random_bool(0.5)
        {
            let behaviour = match self.rng.random_range(0..100) {
                0..65 => "ok",
                65..88 => "flaky",
                _ => "hang",
            };
            let url = format!("{}/hooks/{behaviour}/{id}", base.trim_end_matches('/'));
            let new = webhooks::endpoints::NewEndpoint {
                merchant_id: id,
                url: &url,
                event_types: &[],
                description: "checkoutctl simulate",
            };
            webhooks::endpoints::add(&self.deps.pool, guard, key, new)
                .await
                .with_context(|| format!("registering the webhook endpoint {url}"))?;
            *self
                .counts
                .webhook_endpoints
                .entry(behaviour.to_string())
                .or_default() += 1;
        }
        self.merchants.push(Merchant {
            id,
            speed,
            currency,
            created: Instant::now(),
            suspended: false,
        });
        Ok(())
    }

    /// Suspends an active merchant (never the last active one) and schedules its reinstatement.
    async fn suspend_someone(&mut self) -> anyhow::Result<()> {
        let active: Vec<usize> = (0..self.merchants.len())
            .filter(|&m| !self.merchants[m].suspended)
            .collect();
        if active.len() < 2 {
            return Ok(());
        }
        let m = active[self.rng.random_range(0..active.len())];
        let reason = [
            SuspensionReason::ComplianceReview,
            SuspensionReason::SuspectedFraud,
            SuspensionReason::TermsViolation,
            SuspensionReason::MerchantRequest,
        ][self.rng.random_range(0..4)];
        let meta = Metadata::new(actor(ActorKind::Admin, "adm_risk"));
        let event = Envelope::new(
            self.merchants[m].id,
            MerchantSuspended {
                reason,
                details: None,
                suspended_at: wall_now(),
            },
            meta,
        )?;
        self.commit(&[event]).await?;
        self.merchants[m].suspended = true;
        self.counts.suspensions += 1;
        let back = self.options.window.as_secs_f64() * self.rng.random_range(0.3..0.8);
        self.schedule.push(
            Instant::now() + Duration::from_secs_f64(back),
            Action::Reinstate(m),
        );
        Ok(())
    }

    async fn reinstate(&mut self, m: usize) -> anyhow::Result<()> {
        let meta = Metadata::new(actor(ActorKind::Admin, "adm_risk"));
        let event = Envelope::new(
            self.merchants[m].id,
            MerchantReinstated {
                reinstated_at: wall_now(),
                details: Some("review closed".into()),
            },
            meta,
        )?;
        self.commit(&[event]).await?;
        self.merchants[m].suspended = false;
        self.counts.reinstatements += 1;
        Ok(())
    }

    /// A customer checks out: the invoice API commits `InvoiceCreated` (v2, with its deposit) in a transaction;
    /// the invoice's fate, payments, views and expiry are scheduled.
    async fn open_invoice(&mut self) -> anyhow::Result<()> {
        if self.merchants.len() < self.options.max_merchants && self.rng.random_bool(0.02) {
            self.sign_up().await?;
        }
        let ready: Vec<usize> = (0..self.merchants.len())
            .filter(|&m| {
                !self.merchants[m].suspended
                    && self.merchants[m].created.elapsed() >= Duration::from_secs(1)
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let m = ready[self.rng.random_range(0..ready.len())];
        let merchant = &self.merchants[m];
        let (merchant_id, fiat, speed) = (merchant.id, merchant.currency, merchant.speed);
        let (network, asset) = match self.rng.random_range(0..10) {
            0..5 => (Network::Tron, CryptoAsset::Usdt),
            5..8 => (Network::Polygon, CryptoAsset::Usdc),
            _ => (Network::Ethereum, CryptoAsset::Eth),
        };
        let cents: i64 = self.rng.random_range(500..50_000);
        let total = Decimal::new(cents, 2);
        let due = floor_to(total * quote(asset, fiat), asset.decimals().min(8));
        let id = InvoiceId::new();
        let required = flows::plan::required_confirmations(speed, network);
        let fate = weighted(&mut self.rng, &FATES);
        let window = self.options.window;
        let now = wall_now();
        let expires_at = now + TimeDelta::from_std(window).expect("a short window");
        let created = InvoiceCreated {
            merchant_id,
            total_amount: amount(total),
            currency: fiat,
            crypto_amount: amount(due),
            crypto_currency: asset,
            expires_at,
            deposit: Some(Deposit {
                network,
                address: flows::plan::deposit_address(id, network),
                required_confirmations: required,
            }),
        };
        let meta = Metadata {
            ip_address: Some(
                format!("203.0.113.{}", self.rng.random_range(1..255))
                    .parse()
                    .expect("an address"),
            ),
            user_agent: Some("checkoutctl-simulate".into()),
            request_id: Some(format!("req_{}", uuid::Uuid::new_v4().simple())),
            ..Metadata::new(actor(
                ActorKind::ApiKey,
                &format!("key_{}", merchant_id.as_uuid().simple()),
            ))
        };
        let event = Envelope::new(id, created, meta)?;
        self.commit(std::slice::from_ref(&event)).await?;
        let committed = Instant::now();

        // The payments of its fate, as offsets from the commit.
        let block = Duration::from_secs(block_seconds(network) as u64);
        let secs = |rng: &mut StdRng, from: f64, to: f64| {
            Duration::from_secs_f64(rng.random_range(from..to))
        };
        let first = MIN_SIGHTING_DELAY + secs(&mut self.rng, 0.0, 5.0);
        let part = floor_to(due * decimal("0.4"), asset.decimals().min(8)).min(due);
        let confirms = |rng: &mut StdRng| {
            if required >= 3 && rng.random_bool(0.2) {
                ChainFate::SurvivesReorg { peak: 2 }
            } else {
                ChainFate::Confirms
            }
        };
        let pays: Vec<Pay> = match fate {
            Fate::Paid => vec![Pay {
                amount: due,
                at: first,
                fate: confirms(&mut self.rng),
            }],
            Fate::PaidInTwo => vec![
                Pay {
                    amount: part,
                    at: first,
                    fate: ChainFate::Confirms,
                },
                Pay {
                    amount: due - part,
                    at: first + secs(&mut self.rng, 3.0, 8.0),
                    fate: ChainFate::Confirms,
                },
            ],
            Fate::Overpaid => vec![Pay {
                amount: due + floor_to(due * decimal("0.05"), asset.decimals().min(8)),
                at: first,
                fate: ChainFate::Confirms,
            }],
            Fate::PaidLate => vec![Pay {
                amount: due,
                at: window + secs(&mut self.rng, 2.0, 6.0),
                fate: ChainFate::Confirms,
            }],
            Fate::Expired | Fate::Cancelled => vec![],
            Fate::ExpiredPartial => vec![Pay {
                amount: part,
                at: first,
                fate: ChainFate::Confirms,
            }],
            Fate::ReorgedThenPaid => vec![
                Pay {
                    amount: due,
                    at: first,
                    fate: ChainFate::ReorganizedOut { after: 1 },
                },
                // After the reorganisation (mined one block after the sighting, out one block later).
                Pay {
                    amount: due,
                    at: first + block * 2 + secs(&mut self.rng, 2.0, 4.0),
                    fate: ChainFate::Confirms,
                },
            ],
        };
        let to_wall = |d: Duration| now + TimeDelta::from_std(d).expect("short");
        // When the scanner simulator's fates fail (`payments::simulate`'s timeline: mined a block after the
        // sighting, dropped from the mempool after 20 blocks, reorganised out `after` blocks after mining).
        let plan: Vec<Planned> = pays
            .iter()
            .map(|p| Planned {
                amount: p.amount,
                seen: to_wall(p.at),
                fails_at: match p.fate {
                    ChainFate::ReorganizedOut { after } => {
                        Some(to_wall(p.at + block * (1 + after)))
                    }
                    ChainFate::Dropped => Some(to_wall(p.at + block * 20)),
                    ChainFate::Confirms | ChainFate::SurvivesReorg { .. } => None,
                },
            })
            .collect();
        let cancelled = fate == Fate::Cancelled;
        let Expected {
            status,
            paid,
            overpaid,
            late,
            expire_with,
        } = expected(due, &plan, expires_at, cancelled);
        let n = self.next_invoice;
        self.next_invoice += 1;
        let truth = InvoiceTruth {
            invoice_id: id,
            merchant_id,
            fate,
            status,
            crypto_currency: asset.code().to_string(),
            crypto_amount_due: due,
            amount_paid: paid,
            overpaid_amount: overpaid,
            late_payment: late,
            payments_detected: pays.len() as i32,
            payments_failed: plan.iter().filter(|p| p.fails_at.is_some()).count() as i32,
            currency: fiat.code().to_string(),
            total_amount: total,
        };
        let mut invoice = Invoice {
            created: event,
            merchant: m,
            truth,
            due,
            asset,
            network,
            expires_at,
            expire_with,
            pending: 0,
        };

        // The scanner's reports, each when it is observed.
        if !pays.is_empty() {
            let sim_payments: Vec<SimPayment> = pays
                .iter()
                .map(|p| SimPayment {
                    network,
                    asset,
                    address: flows::plan::deposit_address(id, network),
                    amount: amount(p.amount),
                    required_confirmations: required,
                    at: to_wall(p.at),
                    fate: p.fate,
                })
                .collect();
            let chaos = if self.rng.random_bool(0.2) {
                Chaos {
                    duplicates: true,
                    reorder: true,
                }
            } else {
                Chaos::default()
            };
            let source = format!("scanner:{}", network_name(network));
            // Transaction hashes and report ids derive from the seed: the invoice's id makes them unique.
            let seed =
                u64::from_le_bytes(id.as_uuid().as_bytes()[8..16].try_into().expect("8 bytes"));
            for report in play(seed, &source, &sim_payments, chaos) {
                let offset = (report.observed_at - now).to_std().unwrap_or_default();
                invoice.pending += 1;
                self.schedule
                    .push(committed + offset, Action::Report(Box::new(report), n));
            }
            self.counts.payments += pays.len() as u64;
        }
        // The checkout page: opened once, sometimes reloaded.
        let views = match fate {
            Fate::Expired => 1,
            _ => self.rng.random_range(1..=3),
        };
        for _ in 0..views {
            invoice.pending += 1;
            let at = secs(&mut self.rng, 1.0, 3.0 + window.as_secs_f64() / 4.0);
            self.schedule.push(committed + at, Action::View(n));
        }
        // The rest of the page's story, decided from the invoice's number (no draw, so the run's randomness is
        // unchanged): a paying customer chooses the method before the first sighting; of the others, two in three
        // choose one, and every one abandons — an expiring invoice's page is open at the expiry for every second
        // one, otherwise the customer leaves half-way through the window.
        let method = if pays.is_empty() {
            (!n.is_multiple_of(3)).then(|| window / 8)
        } else {
            Some(first / 2)
        };
        if let Some(at) = method {
            invoice.pending += 1;
            self.schedule.push(committed + at, Action::Method(n));
        }
        if pays.is_empty() {
            let stage = if method.is_some() {
                AbandonStage::AwaitingPayment
            } else {
                AbandonStage::ChoosingMethod
            };
            let (at, reason) = if !cancelled && n.is_multiple_of(2) {
                (window, AbandonReason::Expired)
            } else {
                (window / 2, AbandonReason::LeftPage)
            };
            invoice.pending += 1;
            self.schedule
                .push(committed + at, Action::Abandon(n, stage, reason));
        }
        if cancelled {
            invoice.pending += 1;
            let at = secs(&mut self.rng, 5.0, window.as_secs_f64() / 2.0);
            self.schedule.push(committed + at, Action::Cancel(n));
        } else if invoice.expire_with.is_some() {
            invoice.pending += 1;
            self.schedule.push(committed + window, Action::Expire(n));
        }
        self.counts.invoices += 1;
        *self.counts.invoices_by_fate.entry(fate).or_default() += 1;
        self.invoices.insert(n, invoice);
        Ok(())
    }

    /// Plays every action due by `now`: the reports in one round of sends, views and expiries in one outbox
    /// transaction each (a checkout page's and an expiry sweeper's batch), reinstatements one by one.
    async fn play_due(&mut self, now: Instant) -> anyhow::Result<()> {
        let mut reports = Vec::new();
        let mut records = Vec::new();
        let mut views = Vec::new();
        let mut reinstate = Vec::new();
        let mut done = Vec::new();
        while let Some(action) = self.schedule.pop_due(now) {
            if let Some(n) = action.invoice() {
                done.push(n);
            }
            match action {
                Action::Report(report, _) => reports.push(*report),
                Action::View(n) => {
                    let i = &self.invoices[&n];
                    let merchant = self.merchants[i.merchant].id;
                    let occurred_at = wall_now();
                    views.push(AnalyticsEvent::Viewed(CheckoutViewed {
                        // Derived, as a front end retrying would (outbox::checkout).
                        event_id: outbox::checkout::view_id(i.truth.invoice_id, occurred_at),
                        merchant_id: merchant,
                        invoice_id: i.truth.invoice_id,
                        occurred_at,
                    }));
                    *self.views.entry(merchant).or_default() += 1;
                    self.counts.checkout_views += 1;
                }
                Action::Method(n) => {
                    let i = &self.invoices[&n];
                    let merchant = self.merchants[i.merchant].id;
                    let occurred_at = wall_now();
                    views.push(AnalyticsEvent::MethodChosen(PaymentMethodChosen {
                        event_id: outbox::checkout::method_id(i.truth.invoice_id, occurred_at),
                        merchant_id: merchant,
                        invoice_id: i.truth.invoice_id,
                        crypto_currency: i.asset,
                        network: i.network,
                        occurred_at,
                    }));
                    *self.methods_chosen.entry(merchant).or_default() += 1;
                    self.counts.payment_methods_chosen += 1;
                }
                Action::Abandon(n, stage, reason) => {
                    let i = &self.invoices[&n];
                    let merchant = self.merchants[i.merchant].id;
                    let occurred_at = wall_now();
                    views.push(AnalyticsEvent::Abandoned(CheckoutAbandoned {
                        event_id: outbox::checkout::abandon_id(i.truth.invoice_id, occurred_at),
                        merchant_id: merchant,
                        invoice_id: i.truth.invoice_id,
                        stage,
                        reason,
                        occurred_at,
                    }));
                    *self.abandoned.entry(merchant).or_default() += 1;
                    self.counts.checkouts_abandoned += 1;
                }
                Action::Expire(n) => {
                    let i = &self.invoices[&n];
                    let paid = i.expire_with.unwrap_or_default();
                    let expired = InvoiceExpired {
                        merchant_id: i.truth.merchant_id,
                        crypto_currency: i.asset,
                        crypto_amount_due: amount(i.due),
                        crypto_amount_paid: Amount::new(paid).unwrap_or(Amount::ZERO),
                        expired_at: i.expires_at,
                    };
                    let meta = Metadata {
                        source: Some("expiry-sweeper".into()),
                        ..Metadata::new(actor(ActorKind::System, "invoice-expiry"))
                    };
                    let event =
                        Envelope::new(i.truth.invoice_id, expired, meta)?.caused_by(&i.created);
                    records.push(event);
                    self.counts.expiries += 1;
                }
                Action::Cancel(n) => {
                    let i = &self.invoices[&n];
                    let cancelled = InvoiceCancelled {
                        merchant_id: i.truth.merchant_id,
                        reason: CancellationReason::MerchantRequest,
                        details: None,
                        crypto_currency: i.asset,
                        crypto_amount_paid: Amount::ZERO,
                        cancelled_at: wall_now(),
                    };
                    let meta = Metadata {
                        user_agent: Some("checkoutctl-simulate".into()),
                        ..Metadata::new(actor(ActorKind::User, "usr_merchant_dashboard"))
                    };
                    let event =
                        Envelope::new(i.truth.invoice_id, cancelled, meta)?.caused_by(&i.created);
                    records.push(event);
                    self.counts.cancellations += 1;
                }
                Action::Reinstate(m) => reinstate.push(m),
            }
        }
        if !reports.is_empty() {
            self.send_reports(&reports).await?;
        }
        if !records.is_empty() {
            self.commit(&records).await?;
        }
        if !views.is_empty() {
            record_checkout_events(&self.deps.pool, &views).await?;
            self.counts.outbox_transactions += 1;
        }
        for m in reinstate {
            self.reinstate(m).await?;
        }
        for n in done {
            let finished = match self.invoices.get_mut(&n) {
                Some(i) => {
                    i.pending -= 1;
                    i.pending == 0
                }
                None => false,
            };
            if finished {
                let i = self.invoices.remove(&n).expect("present");
                if i.truth.status == "confirmed" {
                    self.counts.expected_confirmed += 1;
                }
                self.counts.expected_late += u64::from(i.truth.late_payment);
                self.counts.expected_overpaid += u64::from(!i.truth.overpaid_amount.is_zero());
                if self.options.keep_truth {
                    self.finished.push(i.truth);
                }
            }
        }
        Ok(())
    }

    /// Produces reports to the scanners' topic keyed by their source, in order, and waits for every
    /// acknowledgement.
    async fn send_reports(&mut self, reports: &[IntegrationEvent]) -> anyhow::Result<()> {
        let topic = self.options.integration_topic.clone();
        for r in reports {
            let (key, value) = (r.partition_key(), r.encode()?);
            loop {
                let record = FutureRecord::to(&topic).key(&key).payload(&value);
                match self.deps.producer.send_result(record) {
                    Ok(delivery) => {
                        self.deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The producer's queue is full: wait for one acknowledgement, then try again.
                        self.settle_deliveries(1).await?;
                    }
                    Err((e, _)) => return Err(e).context("producing a scanner report"),
                }
            }
        }
        self.counts.scanner_reports += reports.len() as u64;
        self.settle_deliveries(0).await
    }

    /// Checks the acknowledgements that have come (failing on a refused report), waiting for at least `wait` of
    /// them — or for all when more than [`MAX_UNACKNOWLEDGED`] are outstanding.
    async fn settle_deliveries(&mut self, wait: usize) -> anyhow::Result<()> {
        use futures_util::{FutureExt as _, StreamExt as _};
        let mut waited = 0;
        loop {
            let must_wait = waited < wait || self.deliveries.len() > MAX_UNACKNOWLEDGED;
            let next = if must_wait {
                self.deliveries.next().await
            } else {
                match self.deliveries.next().now_or_never() {
                    Some(next) => next,
                    None => return Ok(()),
                }
            };
            let Some(result) = next else {
                return Ok(());
            };
            waited += 1;
            result
                .context("the producer went away")?
                .map_err(|(e, _)| e)
                .context("producing a scanner report")?;
        }
    }
}

/// Records the checkout page's records — `CheckoutViewed`, `PaymentMethodChosen`, `CheckoutAbandoned` on
/// `crypto-checkout.analytics-events` — through the checkout page's producer API (`outbox::checkout`: the outbox,
/// decision 0021; ids derived, so a retry adds nothing).
pub async fn record_checkout_events(
    pool: &PgPool,
    records: &[AnalyticsEvent],
) -> anyhow::Result<()> {
    outbox::checkout::record_events(pool, records)
        .await
        .context("appending checkout page records to the outbox")?;
    Ok(())
}

fn network_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bitcoin",
        Network::Ethereum => "ethereum",
        Network::Tron => "tron",
        Network::Polygon => "polygon",
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn pay(amount: &str, seen: i64, fails_at: Option<i64>) -> Planned {
        Planned {
            amount: decimal(amount),
            seen: t(seen),
            fails_at: fails_at.map(t),
        }
    }

    fn summary(e: Expected) -> (&'static str, String, String, bool, Option<String>) {
        (
            e.status,
            e.paid.normalize().to_string(),
            e.overpaid.normalize().to_string(),
            e.late,
            e.expire_with.map(|d| d.normalize().to_string()),
        )
    }

    #[test]
    fn the_truth_follows_the_plan() {
        let due = decimal("10");
        let exp = t(60);
        let s = |pays: &[Planned], cancelled| summary(expected(due, pays, exp, cancelled));
        let some = |s: &str| Some(s.to_string());
        // Paid on time, exactly; in two parts; over-paid.
        assert_eq!(
            s(&[pay("10", 5, None)], false),
            ("confirmed", "10".into(), "0".into(), false, None)
        );
        assert_eq!(
            s(&[pay("4", 5, None), pay("6", 9, None)], false),
            ("confirmed", "10".into(), "0".into(), false, None)
        );
        assert_eq!(s(&[pay("10.5", 5, None)], false).2, "0.5");
        // Late: expired with nothing, then paid.
        assert_eq!(
            s(&[pay("10", 64, None)], false),
            ("confirmed", "10".into(), "0".into(), true, some("0"))
        );
        // Partial: expired with what was received.
        assert_eq!(
            s(&[pay("4", 5, None)], false),
            ("expired", "4".into(), "0".into(), false, some("4"))
        );
        // Reorganised out, then paid on time: the failed one never counts.
        assert_eq!(
            s(&[pay("10", 5, Some(20)), pay("10", 25, None)], false),
            ("confirmed", "10".into(), "0".into(), false, None)
        );
        // Reorganised out after expiry, paid again late: at expiry the first covered the invoice and had not failed
        // yet, so it is not expired.
        assert_eq!(
            s(&[pay("10", 50, Some(70)), pay("10", 75, None)], false),
            ("confirmed", "10".into(), "0".into(), true, None)
        );
        assert_eq!(s(&[], true).0, "cancelled");
        assert_eq!(
            s(&[], false),
            ("expired", "0".into(), "0".into(), false, some("0"))
        );
    }

    #[test]
    fn amounts_respect_the_assets_decimals() {
        for asset in [CryptoAsset::Usdt, CryptoAsset::Eth] {
            for fiat in ["USD", "EUR", "GBP"] {
                let fiat = FiatCurrency::from_code(fiat).unwrap();
                let due = floor_to(
                    decimal("123.45") * quote(asset, fiat),
                    asset.decimals().min(8),
                );
                amount(due).check_decimals(Currency::Crypto(asset)).unwrap();
            }
        }
    }
}
