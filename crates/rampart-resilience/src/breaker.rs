//! A circuit breaker with resilience4j's semantics: closed, open, half-open; trips on the
//! failure rate or the slow-call rate over a sliding window (count- or time-based) once a
//! minimum number of calls was seen; stays open for a duration that doubles (by default)
//! on each consecutive trip, up to a cap; lets a fixed number of trial calls through when
//! half-open and closes or re-opens on their outcome.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Which calls the window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_size` calls.
    Count,
    /// The calls of the last `window_size` seconds.
    Time,
}

/// Circuit breaker settings. Defaults: a count window of 20 calls, at least 10 calls
/// before judging, trip at 50% failures or 100% slow calls (slower than 5 s), open 5 s
/// doubling per consecutive trip up to 60 s, 3 trial calls when half-open.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub window: WindowKind,
    /// Calls (count window) or seconds (time window).
    pub window_size: u32,
    pub minimum_calls: u32,
    /// Percent of failed calls in the window that trips the breaker.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls in the window that trips the breaker.
    pub slow_call_rate_threshold: f64,
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Duration,
    /// How long the breaker stays open after its first trip.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Each consecutive trip multiplies the open duration by this.
    pub open_backoff_multiplier: f64,
    #[serde(with = "humantime_serde")]
    pub max_open_duration: Duration,
    /// Trial calls let through when half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window: WindowKind::Count,
            window_size: 20,
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(5),
            open_duration: Duration::from_secs(5),
            open_backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(60),
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        let pct = |v: f64| (0.0..=100.0).contains(&v) && v > 0.0;
        if self.window_size == 0 || self.window_size > 10_000 {
            return Some("window_size must be between 1 and 10000".into());
        }
        if self.minimum_calls == 0 {
            return Some("minimum_calls must be at least 1".into());
        }
        if !pct(self.failure_rate_threshold) || !pct(self.slow_call_rate_threshold) {
            return Some("rate thresholds are percentages above 0 and at most 100".into());
        }
        if self.half_open_calls == 0 {
            return Some("half_open_calls must be at least 1".into());
        }
        if self.open_duration.is_zero() || self.max_open_duration < self.open_duration {
            return Some("open_duration must be above zero and at most max_open_duration".into());
        }
        if !(self.open_backoff_multiplier >= 1.0 && self.open_backoff_multiplier.is_finite()) {
            return Some("open_backoff_multiplier must be at least 1".into());
        }
        None
    }
}

/// The breaker's state, as exported (gauge values 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// The breaker refused a call; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct Rejected {
    pub retry_after: Duration,
}

/// How a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub failure: bool,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failure);
        self.slow += u32::from(slow);
    }

    fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }
}

/// The sliding window of outcomes.
#[derive(Debug)]
enum Window {
    /// Ring of the last N outcomes (bit 0 failure, bit 1 slow) with running totals.
    Count {
        ring: Vec<u8>,
        next: usize,
        filled: usize,
        totals: Tally,
    },
    /// One bucket per second: (second, tally).
    Time { buckets: Vec<(u64, Tally)> },
}

impl Window {
    fn new(kind: WindowKind, size: u32) -> Window {
        match kind {
            WindowKind::Count => Window::Count {
                ring: vec![0; size as usize],
                next: 0,
                filled: 0,
                totals: Tally::default(),
            },
            WindowKind::Time => Window::Time {
                buckets: vec![(u64::MAX, Tally::default()); size as usize],
            },
        }
    }

    fn record(&mut self, failure: bool, slow: bool, second: u64) {
        match self {
            Window::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                if *filled == ring.len() {
                    let old = ring[*next];
                    totals.calls -= 1;
                    totals.failures -= u32::from(old & 1);
                    totals.slow -= u32::from(old >> 1);
                } else {
                    *filled += 1;
                }
                ring[*next] = u8::from(failure) | (u8::from(slow) << 1);
                totals.add(failure, slow);
                *next = (*next + 1) % ring.len();
            }
            Window::Time { buckets } => {
                let len = buckets.len() as u64;
                let bucket = &mut buckets[(second % len) as usize];
                if bucket.0 != second {
                    *bucket = (second, Tally::default());
                }
                bucket.1.add(failure, slow);
            }
        }
    }

    fn totals(&self, second: u64) -> Tally {
        match self {
            Window::Count { totals, .. } => *totals,
            Window::Time { buckets } => {
                let len = buckets.len() as u64;
                let mut t = Tally::default();
                for (s, b) in buckets {
                    if *s != u64::MAX && *s + len > second && *s <= second {
                        t.merge(b);
                    }
                }
                t
            }
        }
    }

    /// Whether the window is a count window full of successes that were not slow: then
    /// one more such success changes nothing in it.
    fn is_settled(&self) -> bool {
        match self {
            Window::Count {
                ring,
                filled,
                totals,
                ..
            } => *filled == ring.len() && totals.failures == 0 && totals.slow == 0,
            Window::Time { .. } => false,
        }
    }

    fn clear(&mut self) {
        match self {
            Window::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                ring.fill(0);
                *next = 0;
                *filled = 0;
                *totals = Tally::default();
            }
            Window::Time { buckets } => buckets.fill((u64::MAX, Tally::default())),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { permits_left: u32, results: Tally },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window: Window,
    /// Consecutive trips without a close in between, for the open-duration backoff.
    trips: u32,
}

/// Called on every state change with the old and new state.
pub type Listener = Box<dyn Fn(State, State) + Send + Sync>;

/// A circuit breaker. Cheap to consult: one uncontended lock per call.
pub struct CircuitBreaker {
    config: BreakerConfig,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Whether the phase is closed, written with it under the lock: a closed breaker lets
    /// calls through without taking the lock, whose two atomic operations each check
    /// would cost (three checks a proxied request).
    closed: AtomicBool,
    /// Whether the breaker is closed on a settled window ([`Window::is_settled`]), written
    /// under the lock: a fast success is then recorded without it.
    settled: AtomicBool,
    listener: Option<Listener>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .finish()
    }
}

/// Leave to make one call; report how it went with [`Permit::record`]. A permit dropped
/// without a record (the call was abandoned) counts for nothing and frees its trial slot.
#[must_use = "record the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    recorded: bool,
}

impl Permit<'_> {
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.record(self.trial, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.trial {
            self.breaker.release_trial();
        }
    }
}

/// A [`Permit`] that holds the breaker by `Arc`.
#[must_use = "record the call's outcome"]
pub struct OwnedPermit {
    breaker: std::sync::Arc<CircuitBreaker>,
    trial: bool,
    recorded: bool,
}

impl OwnedPermit {
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.record(self.trial, outcome);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.recorded && self.trial {
            self.breaker.release_trial();
        }
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_listener(config, None)
    }

    pub fn with_listener(config: BreakerConfig, listener: Option<Listener>) -> Self {
        let window = Window::new(config.window, config.window_size.max(1));
        CircuitBreaker {
            config,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window,
                trips: 0,
            }),
            closed: AtomicBool::new(true),
            settled: AtomicBool::new(false),
            listener,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: every update is complete
        // before anything that could panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state; an open breaker whose time is up reads as half-open.
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed => State::Closed,
            Phase::Open { until } if Instant::now() >= until => State::HalfOpen,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// How long until an open breaker lets calls through again; None when it does now.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.lock().phase {
            Phase::Open { until } => until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero()),
            _ => None,
        }
    }

    /// Whether a call would be let through now, without taking a permit.
    pub fn would_allow(&self) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return true;
        }
        let inner = self.lock();
        match &inner.phase {
            Phase::Closed => true,
            Phase::Open { until } => Instant::now() >= *until,
            Phase::HalfOpen { permits_left, .. } => *permits_left > 0,
        }
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let trial = self.acquire()?;
        Ok(Permit {
            breaker: self,
            trial,
            recorded: false,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a reference to the
    /// breaker (for futures that outlive a borrow).
    pub fn try_acquire_owned(self: &std::sync::Arc<Self>) -> Result<OwnedPermit, Rejected> {
        let trial = self.acquire()?;
        Ok(OwnedPermit {
            breaker: self.clone(),
            trial,
            recorded: false,
        })
    }

    /// Takes a slot; true when it is a half-open trial.
    fn acquire(&self) -> Result<bool, Rejected> {
        if !self.config.enabled || self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut inner = self.lock();
        let mut change = None;
        let trial = match &mut inner.phase {
            Phase::Closed => false,
            Phase::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    return Err(Rejected {
                        retry_after: *until - now,
                    });
                }
                self.set_phase(
                    &mut inner,
                    Phase::HalfOpen {
                        permits_left: self.config.half_open_calls - 1,
                        results: Tally::default(),
                    },
                );
                change = Some((State::Open, State::HalfOpen));
                true
            }
            Phase::HalfOpen { permits_left, .. } => {
                if *permits_left == 0 {
                    // Trials are under way; a second or so is a fair guess for the client.
                    return Err(Rejected {
                        retry_after: Duration::from_secs(1),
                    });
                }
                *permits_left -= 1;
                true
            }
        };
        drop(inner);
        if let Some((from, to)) = change {
            self.changed(from, to);
        }
        Ok(trial)
    }

    /// Changes the phase, and the lock-free view of whether it is closed.
    fn set_phase(&self, inner: &mut Inner, phase: Phase) {
        self.closed
            .store(matches!(phase, Phase::Closed), Ordering::Release);
        self.settled.store(false, Ordering::Release);
        inner.phase = phase;
    }

    fn release_trial(&self) {
        let mut inner = self.lock();
        if let Phase::HalfOpen { permits_left, .. } = &mut inner.phase {
            *permits_left += 1;
        }
    }

    fn open_duration(&self, trips: u32) -> Duration {
        let factor = self
            .config
            .open_backoff_multiplier
            .powi(trips.saturating_sub(1).min(64) as i32);
        let secs = self.config.open_duration.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.config.max_open_duration.as_secs_f64()))
    }

    fn tripped(&self, t: &Tally) -> bool {
        let calls = f64::from(t.calls.max(1));
        f64::from(t.failures) * 100.0 / calls >= self.config.failure_rate_threshold
            || f64::from(t.slow) * 100.0 / calls >= self.config.slow_call_rate_threshold
    }

    fn record(&self, trial: bool, outcome: Outcome) {
        if !self.config.enabled {
            return;
        }
        // A count window needs no time; the clock is read for a time window's bucket and
        // when the breaker opens.
        let now = (self.config.window == WindowKind::Time).then(Instant::now);
        let slow = outcome.duration >= self.config.slow_call_duration;
        if !trial && !outcome.failure && !slow && self.settled.load(Ordering::Acquire) {
            return;
        }
        let second = now.map_or(0, |now| self.second(now));
        let mut inner = self.lock();
        let change = match &mut inner.phase {
            Phase::Closed => {
                inner.window.record(outcome.failure, slow, second);
                self.settled
                    .store(inner.window.is_settled(), Ordering::Release);
                let totals = inner.window.totals(second);
                if totals.calls >= self.config.minimum_calls && self.tripped(&totals) {
                    inner.trips += 1;
                    let until = now.unwrap_or_else(Instant::now) + self.open_duration(inner.trips);
                    self.set_phase(&mut inner, Phase::Open { until });
                    Some((State::Closed, State::Open))
                } else {
                    None
                }
            }
            Phase::HalfOpen { results, .. } if trial => {
                results.add(outcome.failure, slow);
                if results.calls < self.config.half_open_calls {
                    None
                } else if self.tripped(results) {
                    inner.trips += 1;
                    let until = now.unwrap_or_else(Instant::now) + self.open_duration(inner.trips);
                    self.set_phase(&mut inner, Phase::Open { until });
                    Some((State::HalfOpen, State::Open))
                } else {
                    inner.trips = 0;
                    inner.window.clear();
                    self.set_phase(&mut inner, Phase::Closed);
                    Some((State::HalfOpen, State::Closed))
                }
            }
            // Late results of calls let through before the breaker opened: ignored.
            _ => None,
        };
        drop(inner);
        if let Some((from, to)) = change {
            self.changed(from, to);
        }
    }

    fn changed(&self, from: State, to: State) {
        if let Some(listener) = &self.listener {
            listener(from, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config() -> BreakerConfig {
        BreakerConfig {
            window_size: 10,
            minimum_calls: 5,
            failure_rate_threshold: 50.0,
            open_duration: Duration::from_secs(10),
            max_open_duration: Duration::from_secs(35),
            half_open_calls: 2,
            ..BreakerConfig::default()
        }
    }

    const FAIL: Outcome = Outcome {
        failure: true,
        duration: Duration::from_millis(1),
    };
    const OK: Outcome = Outcome {
        failure: false,
        duration: Duration::from_millis(1),
    };

    fn call(b: &CircuitBreaker, o: Outcome) -> Result<(), Rejected> {
        b.try_acquire().map(|p| p.record(o))
    }

    #[tokio::test(start_paused = true)]
    async fn trips_at_the_threshold_after_the_minimum_calls() {
        let b = CircuitBreaker::new(config());
        // 4 failures: below the minimum of 5 calls, still closed.
        for _ in 0..4 {
            call(&b, FAIL).unwrap();
        }
        assert_eq!(b.state(), State::Closed);
        // The 5th call makes 5 of 5 failed: open.
        call(&b, FAIL).unwrap();
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.retry_after(), Some(Duration::from_secs(10)));
        let rejected = b.try_acquire().err().unwrap();
        assert_eq!(rejected.retry_after, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.retry_after(), None, "time is up: calls may go through");
    }

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_failure_rate() {
        let b = CircuitBreaker::new(config());
        for i in 0..10 {
            // OK OK OK F F, twice: 4 failures in 10 calls, 40% < 50%, and never 50%
            // along the way.
            call(&b, if i % 5 >= 3 { FAIL } else { OK }).unwrap();
        }
        assert_eq!(b.state(), State::Closed);
        // The window slides: the next failure evicts the oldest success, 5/10 = 50%.
        call(&b, FAIL).unwrap();
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_trials_close_it_and_reset_the_backoff() {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let b = CircuitBreaker::with_listener(
            config(),
            Some(Box::new(move |from, to| {
                seen.lock().unwrap().push((from, to))
            })),
        );
        for _ in 0..5 {
            call(&b, FAIL).unwrap();
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(b.try_acquire().is_err(), "still open 1 ms before the end");
        tokio::time::advance(Duration::from_millis(1)).await;
        let first = b.try_acquire().expect("first trial");
        let second = b.try_acquire().expect("second trial");
        assert!(b.try_acquire().is_err(), "only 2 trials when half-open");
        first.record(OK);
        assert_eq!(b.state(), State::HalfOpen);
        second.record(OK);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            *changes.lock().unwrap(),
            vec![
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
        // The window was cleared: it takes the minimum number of calls to trip again,
        // and the open duration starts over at 10 s.
        for _ in 0..4 {
            call(&b, FAIL).unwrap();
        }
        assert_eq!(b.state(), State::Closed);
        call(&b, FAIL).unwrap();
        assert_eq!(
            b.try_acquire().err().unwrap().retry_after,
            Duration::from_secs(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trials_reopen_for_longer_up_to_the_cap() {
        let b = CircuitBreaker::new(config());
        for _ in 0..5 {
            call(&b, FAIL).unwrap();
        }
        let mut expected = [20, 35, 35].into_iter();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(40)).await;
            b.try_acquire().unwrap().record(FAIL);
            b.try_acquire().unwrap().record(FAIL);
            let next = expected.next().unwrap();
            assert_eq!(
                b.try_acquire().err().unwrap().retry_after,
                Duration::from_secs(next)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_frees_its_slot() {
        let b = CircuitBreaker::new(config());
        for _ in 0..5 {
            call(&b, FAIL).unwrap();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let a = b.try_acquire().unwrap();
        let c = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        drop(a);
        let d = b.try_acquire().expect("slot freed");
        c.record(OK);
        d.record(OK);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_full_of_successes_records_the_next_without_the_lock_and_still_slides() {
        let b = Arc::new(CircuitBreaker::new(config()));
        for _ in 0..10 {
            call(&b, OK).unwrap();
        }
        let held = b.lock();
        let (done, finished) = std::sync::mpsc::channel();
        let recorder = b.clone();
        std::thread::spawn(move || {
            let _ = done.send(call(&recorder, OK).is_ok());
        });
        let recorded = finished.recv_timeout(Duration::from_secs(5));
        drop(held);
        assert_eq!(recorded, Ok(true), "the success waited for the lock");
        // Failures still evict the oldest successes of the full window: 5 of 10 failed.
        for _ in 0..4 {
            call(&b, FAIL).unwrap();
        }
        assert_eq!(b.state(), State::Closed, "4 of 10 failed");
        call(&b, FAIL).unwrap();
        assert_eq!(b.state(), State::Open, "5 of 10 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_trip_it_too() {
        let b = CircuitBreaker::new(BreakerConfig {
            slow_call_rate_threshold: 60.0,
            slow_call_duration: Duration::from_millis(500),
            ..config()
        });
        let slow = Outcome {
            failure: false,
            duration: Duration::from_millis(500),
        };
        for _ in 0..2 {
            call(&b, OK).unwrap();
        }
        for _ in 0..2 {
            call(&b, slow).unwrap();
        }
        call(&b, OK).unwrap();
        assert_eq!(b.state(), State::Closed, "2 of 5 slow = 40%");
        call(&b, slow).unwrap();
        call(&b, slow).unwrap();
        assert_eq!(b.state(), State::Closed, "4 of 7 slow = 57%");
        call(&b, slow).unwrap();
        assert_eq!(b.state(), State::Open, "5 of 8 slow = 62.5%");
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_window_forgets_old_calls() {
        let b = CircuitBreaker::new(BreakerConfig {
            window: WindowKind::Time,
            window_size: 10,
            ..config()
        });
        for _ in 0..4 {
            call(&b, FAIL).unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        // The 4 old failures left the window: one more is 1 call, under the minimum.
        call(&b, FAIL).unwrap();
        assert_eq!(b.state(), State::Closed);
        for _ in 0..4 {
            call(&b, FAIL).unwrap();
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_breaker_never_opens() {
        let calls = AtomicUsize::new(0);
        let b = CircuitBreaker::new(BreakerConfig {
            enabled: false,
            ..config()
        });
        for _ in 0..100 {
            call(&b, FAIL).unwrap();
            calls.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 100);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn bad_settings_are_explained() {
        assert!(BreakerConfig::default().problem().is_none());
        let bad = BreakerConfig {
            failure_rate_threshold: 150.0,
            ..BreakerConfig::default()
        };
        assert!(bad.problem().unwrap().contains("percent"));
    }
}
