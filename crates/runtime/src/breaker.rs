//! The circuit breaker of one consumer instance (shared by all its partition lanes).
//!
//! Guarantees:
//! - **Closed**: lanes take records freely.
//! - An infrastructure failure **opens** it: no lane starts an attempt (so no offset advances and nothing is
//!   dead-lettered) until the probe interval has passed.
//! - Then it is **half-open**: exactly one lane gets a probe permit and retries one record. Success (any outcome
//!   that is not an infrastructure failure: the dependency answered) closes the breaker and resets the interval;
//!   an infrastructure failure re-opens it with the interval doubled, up to a cap. A probe abandoned without an
//!   outcome (its lane was stopped) lets another lane probe at once.
//!
//! [`Core`] is the pure state machine (time passed in, unit-tested); [`Breaker`] adds waiting and notification.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the outside world sees (metrics gauge value in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Records flow (0).
    Closed,
    /// One probe is in flight (1).
    HalfOpen,
    /// Waiting for the probe interval to pass (2).
    Open,
}

impl BreakerState {
    pub const fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Whether a permit is an ordinary one or the single half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitKind {
    Normal,
    Probe,
}

/// Why an acquire must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Open: the probe interval ends then.
    Until(Instant),
    /// Half-open: another lane is probing.
    ForProbe,
}

/// The pure state machine.
#[derive(Debug)]
pub struct Core {
    state: CoreState,
    interval: Duration,
    initial: Duration,
    max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CoreState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl Core {
    /// A closed breaker whose probe interval starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Core {
        Core {
            state: CoreState::Closed,
            interval: initial,
            initial,
            max: max.max(initial),
        }
    }

    pub fn state(&self) -> BreakerState {
        Core::visible(self.state)
    }

    fn visible(state: CoreState) -> BreakerState {
        match state {
            CoreState::Closed => BreakerState::Closed,
            CoreState::Open { .. } => BreakerState::Open,
            CoreState::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// A permit, or how to wait for one.
    pub fn try_acquire(&mut self, now: Instant) -> Result<PermitKind, Wait> {
        match self.state {
            CoreState::Closed => Ok(PermitKind::Normal),
            CoreState::Open { until } if now >= until => {
                self.state = CoreState::HalfOpen;
                Ok(PermitKind::Probe)
            }
            CoreState::Open { until } => Err(Wait::Until(until)),
            CoreState::HalfOpen => Err(Wait::ForProbe),
        }
    }

    /// An attempt under a permit of `kind` failed because a dependency is down.
    pub fn infra_failure(&mut self, kind: PermitKind, now: Instant) {
        match (self.state, kind) {
            (CoreState::Closed, _) => {
                self.interval = self.initial;
                self.state = CoreState::Open {
                    until: now + self.interval,
                };
            }
            (CoreState::HalfOpen, PermitKind::Probe) => {
                self.interval = (self.interval * 2).min(self.max);
                self.state = CoreState::Open {
                    until: now + self.interval,
                };
            }
            // Already open, or a normal permit taken before the breaker opened: the probe decides.
            _ => {}
        }
    }

    /// An attempt under a permit of `kind` reached its dependencies (whatever the handler's verdict).
    pub fn success(&mut self, kind: PermitKind) {
        if let (CoreState::HalfOpen, PermitKind::Probe) = (self.state, kind) {
            self.state = CoreState::Closed;
            self.interval = self.initial;
        }
    }

    /// A permit was dropped without an outcome: a probe is handed to the next lane immediately.
    pub fn abandon(&mut self, kind: PermitKind, now: Instant) {
        if let (CoreState::HalfOpen, PermitKind::Probe) = (self.state, kind) {
            self.state = CoreState::Open { until: now };
        }
    }
}

type Observer = Box<dyn Fn(BreakerState) + Send + Sync>;

/// The shared breaker: [`Core`] behind a lock, with waiting and a state observer (metrics, readiness).
pub struct Breaker {
    core: Mutex<Core>,
    changed: watch::Sender<BreakerState>,
    observer: Observer,
}

impl Breaker {
    pub fn new(
        initial: Duration,
        max: Duration,
        observer: impl Fn(BreakerState) + Send + Sync + 'static,
    ) -> Breaker {
        let breaker = Breaker {
            core: Mutex::new(Core::new(initial, max)),
            changed: watch::channel(BreakerState::Closed).0,
            observer: Box::new(observer),
        };
        (breaker.observer)(BreakerState::Closed);
        breaker
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// A permit if one is available now, without waiting.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.permit_now().ok()
    }

    /// Waits for a permit; `None` when `stop` is cancelled first.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Permit<'_>> {
        loop {
            let mut changed = self.changed.subscribe();
            let wait = match self.permit_now() {
                Ok(permit) => return Some(permit),
                Err(wait) => wait,
            };
            let until = match wait {
                Wait::Until(until) => until,
                Wait::ForProbe => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    fn settle(&self, kind: PermitKind, f: impl FnOnce(&mut Core, PermitKind, Instant)) {
        let mut core = self.lock();
        let before = core.state;
        f(&mut core, kind, Instant::now());
        self.publish(before, &core);
    }

    /// Tells the observer of a visible change and wakes the waiters on any change — an abandoned probe changes
    /// nothing visible but lets a waiter probe. Nothing changes on the common path (a permit taken and
    /// settled while closed): no one is woken, since no one waits.
    fn publish(&self, before: CoreState, core: &Core) {
        if before == core.state {
            return;
        }
        let after = core.state();
        if Core::visible(before) != after {
            (self.observer)(after);
        }
        self.changed.send_replace(after);
    }

    /// A permit now, or how long to wait for one.
    fn permit_now(&self) -> Result<Permit<'_>, Wait> {
        let mut core = self.lock();
        let before = core.state;
        let kind = core.try_acquire(Instant::now())?;
        self.publish(before, &core);
        Ok(Permit {
            breaker: self,
            kind,
            settled: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Permission to make one attempt. Report its outcome; dropping it unreported abandons it.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    kind: PermitKind,
    settled: bool,
}

impl Permit<'_> {
    pub fn kind(&self) -> PermitKind {
        self.kind
    }

    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }

    /// The attempt reached its dependencies.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker
            .settle(self.kind, |core, kind, _| core.success(kind));
    }

    /// The attempt failed because a dependency is down: open (or keep open) the breaker.
    pub fn infra_failure(mut self) {
        self.settled = true;
        self.breaker.settle(self.kind, Core::infra_failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.kind, Core::abandon);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_on_infrastructure_failure_and_waits_for_the_probe_interval() {
        let t0 = Instant::now();
        let mut core = Core::new(100 * MS, 400 * MS);
        assert_eq!(core.try_acquire(t0), Ok(PermitKind::Normal));
        core.infra_failure(PermitKind::Normal, t0);
        assert_eq!(core.state(), BreakerState::Open);
        assert_eq!(
            core.try_acquire(t0 + 50 * MS),
            Err(Wait::Until(t0 + 100 * MS))
        );
        // A second lane failing while open does not push the probe further away.
        core.infra_failure(PermitKind::Normal, t0 + 60 * MS);
        assert_eq!(core.try_acquire(t0 + 100 * MS), Ok(PermitKind::Probe));
        assert_eq!(core.state(), BreakerState::HalfOpen);
        // Only one probe at a time.
        assert_eq!(core.try_acquire(t0 + 100 * MS), Err(Wait::ForProbe));
    }

    #[test]
    fn failed_probes_double_the_interval_up_to_the_cap_and_success_closes() {
        let t0 = Instant::now();
        let mut core = Core::new(100 * MS, 300 * MS);
        core.infra_failure(PermitKind::Normal, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let Err(Wait::Until(until)) = core.try_acquire(now) else {
                panic!("must be open")
            };
            waits.push(until - now);
            now = until;
            assert_eq!(core.try_acquire(now), Ok(PermitKind::Probe));
            core.infra_failure(PermitKind::Probe, now);
        }
        assert_eq!(waits, [100 * MS, 200 * MS, 300 * MS, 300 * MS]);
        let Err(Wait::Until(until)) = core.try_acquire(now) else {
            panic!()
        };
        assert_eq!(core.try_acquire(until), Ok(PermitKind::Probe));
        // A normal permit's success (taken before the breaker opened) does not close it; the probe's does.
        core.success(PermitKind::Normal);
        assert_eq!(core.state(), BreakerState::HalfOpen);
        core.success(PermitKind::Probe);
        assert_eq!(core.state(), BreakerState::Closed);
        // The interval starts over.
        core.infra_failure(PermitKind::Normal, until);
        assert_eq!(core.try_acquire(until), Err(Wait::Until(until + 100 * MS)));
    }

    #[test]
    fn an_abandoned_probe_hands_over_at_once() {
        let t0 = Instant::now();
        let mut core = Core::new(100 * MS, 100 * MS);
        core.infra_failure(PermitKind::Normal, t0);
        assert_eq!(core.try_acquire(t0 + 100 * MS), Ok(PermitKind::Probe));
        core.abandon(PermitKind::Probe, t0 + 150 * MS);
        assert_eq!(core.try_acquire(t0 + 150 * MS), Ok(PermitKind::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_lanes_resume_when_the_probe_succeeds() {
        let gauge = Arc::new(AtomicI64::new(-1));
        let g = gauge.clone();
        let breaker = Arc::new(Breaker::new(
            Duration::from_secs(1),
            Duration::from_secs(8),
            move |s| g.store(s.gauge(), Ordering::SeqCst),
        ));
        let stop = CancellationToken::new();
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
        breaker.acquire(&stop).await.unwrap().infra_failure();
        assert_eq!(gauge.load(Ordering::SeqCst), 2);

        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = breaker.acquire(&stop).await.unwrap();
        assert!(probe.is_probe());
        assert_eq!(gauge.load(Ordering::SeqCst), 1);
        let waiter = {
            let (breaker, stop) = (breaker.clone(), stop.clone());
            tokio::spawn(async move { breaker.acquire(&stop).await.map(|p| p.kind()) })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a second lane waits while the probe runs"
        );
        probe.success();
        assert_eq!(waiter.await.unwrap(), Some(PermitKind::Normal));
        assert_eq!(gauge.load(Ordering::SeqCst), 0);

        // A stopped lane stops waiting.
        breaker.acquire(&stop).await.unwrap().infra_failure();
        stop.cancel();
        assert!(breaker.acquire(&stop).await.is_none());
    }
}
