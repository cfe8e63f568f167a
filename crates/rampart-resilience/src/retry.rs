//! Retries: exponential backoff with full jitter, and a retry budget (as in Finagle and
//! Envoy) that caps retries to a share of recent requests so a failing upstream does not
//! see its load multiplied.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Retry settings. Defaults: 2 attempts in all, backoff from 25 ms doubling up to 250 ms
/// with full jitter; retried on connect errors, resets, timeouts and 502/503/504; bodies up
/// to 64 KiB are buffered so they can be sent again; a budget of 20% of recent requests
/// plus 3 per second.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first one included; 1 disables retries.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Time for one attempt, within the route's overall `upstream_timeout`; absent means
    /// the whole remaining time.
    #[serde(default, with = "humantime_serde")]
    pub per_try_timeout: Option<Duration>,
    /// Failures that are retried.
    pub on: Vec<RetryOn>,
    /// Response statuses that are retried (idempotent requests only).
    pub statuses: Vec<u16>,
    /// Request bodies up to this size are buffered so that they can be sent again.
    pub max_buffered_body: u64,
    pub budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            backoff_base: Duration::from_millis(25),
            backoff_cap: Duration::from_millis(250),
            per_try_timeout: None,
            on: vec![RetryOn::Connect, RetryOn::Reset, RetryOn::Timeout],
            statuses: vec![502, 503, 504],
            max_buffered_body: 64 * 1024,
            budget: BudgetConfig::default(),
        }
    }
}

/// A failure that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// No connection could be made: nothing was sent, so any method may be retried.
    Connect,
    /// The connection failed after the request was (maybe) sent: idempotent methods only.
    Reset,
    /// The attempt timed out: idempotent methods only.
    Timeout,
}

impl RetryConfig {
    pub fn problem(&self) -> Option<String> {
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Some("max_attempts must be between 1 and 10".into());
        }
        if self.backoff_base.is_zero() || self.backoff_cap < self.backoff_base {
            return Some("backoff_base must be above zero and at most backoff_cap".into());
        }
        if self.per_try_timeout.is_some_and(|t| t.is_zero()) {
            return Some("per_try_timeout must be above zero".into());
        }
        if let Some(s) = self.statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Some(format!("{s} is not an HTTP status"));
        }
        self.budget.problem()
    }

    /// The pause before retry number `retry` (1 for the first retry): uniformly random in
    /// `[0, min(cap, base × 2^(retry-1))]` ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let ceiling = exp.min(self.backoff_cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// Retry budget settings: within the last `window`, retries may be at most `percent` of
/// the requests plus `min_per_second` × the window's seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub percent: f64,
    pub min_per_second: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            percent: 20.0,
            min_per_second: 3,
            window: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    fn problem(&self) -> Option<String> {
        if !(0.0..=100.0).contains(&self.percent) {
            return Some("budget percent must be between 0 and 100".into());
        }
        let secs = self.window.as_secs();
        if !(1..=600).contains(&secs) {
            return Some("budget window must be between 1 s and 10 min".into());
        }
        None
    }
}

/// The budget's seconds, a ring of `window` slots.
#[derive(Debug)]
struct Seconds {
    /// (second, requests counted before it began, retries made in it); `u64::MAX` marks
    /// a slot never used.
    slots: Vec<(u64, u64, u64)>,
}

/// A retry budget shared by the requests of a route.
///
/// Every request deposits, so deposits take no lock: they add to a running total in
/// per-thread lanes, and the first deposit of each second notes the total reached so
/// far under the lock. A withdrawal (a retry, which is rare) takes the lock and counts
/// the requests of the window as the total minus the note of its first second.
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    epoch: Instant,
    requests: rampart_lanes::Counter,
    /// The second of the latest note, read without the lock.
    noted: AtomicU64,
    seconds: Mutex<Seconds>,
    exhausted: AtomicU64,
}

impl RetryBudget {
    pub fn new(config: BudgetConfig) -> Self {
        let slots = config.window.as_secs().clamp(1, 600) as usize;
        RetryBudget {
            config,
            epoch: Instant::now(),
            requests: rampart_lanes::Counter::default(),
            noted: AtomicU64::new(u64::MAX),
            seconds: Mutex::new(Seconds {
                slots: vec![(u64::MAX, 0, 0); slots],
            }),
            exhausted: AtomicU64::new(0),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// The slot of `second`, started (with the requests counted so far) if it was not.
    fn slot(&self, seconds: &mut Seconds, second: u64) -> usize {
        let index = (second % seconds.slots.len() as u64) as usize;
        if seconds.slots[index].0 != second {
            seconds.slots[index] = (second, self.requests.get(), 0);
        }
        index
    }

    /// Counts a request (each client request once, not each attempt) made at `now`.
    pub fn deposit(&self, now: Instant) {
        let second = self.second(now);
        if self.noted.load(Ordering::Acquire) != second {
            let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
            self.slot(&mut seconds, second);
            self.noted.store(second, Ordering::Release);
        }
        self.requests.inc();
    }

    /// Takes one retry from the budget at `now`; false (and counted) when it is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let second = self.second(now);
        let allowed = {
            let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.slot(&mut seconds, second);
            let len = seconds.slots.len() as u64;
            let in_window = |s: u64| s != u64::MAX && s + len > second && s <= second;
            let (mut first_noted, mut retries) = (u64::MAX, 0u64);
            for &(s, before, made) in &seconds.slots {
                if in_window(s) {
                    first_noted = first_noted.min(before);
                    retries += made;
                }
            }
            let requests = self.requests.get().saturating_sub(first_noted);
            let budget = (requests as f64 * self.config.percent / 100.0)
                + f64::from(self.config.min_per_second) * len as f64;
            let allowed = (retries as f64) < budget;
            if allowed {
                seconds.slots[current].2 += 1;
            }
            allowed
        };
        if !allowed {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Retries refused because the budget was spent.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_the_exponential_ceiling() {
        let c = RetryConfig {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(100),
            ..RetryConfig::default()
        };
        for (retry, ceiling) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (30, 100)] {
            let samples: Vec<Duration> = (0..2000).map(|_| c.backoff(retry)).collect();
            let max = *samples.iter().max().unwrap();
            assert!(
                max <= Duration::from_millis(ceiling),
                "retry {retry}: {max:?}"
            );
            assert!(
                max >= Duration::from_millis(ceiling) * 9 / 10,
                "retry {retry}: the range is used up to its ceiling ({max:?})"
            );
            let min = *samples.iter().min().unwrap();
            assert!(
                min <= Duration::from_millis(ceiling) / 10,
                "jitter reaches down: {min:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_retries_to_its_percentage() {
        let budget = RetryBudget::new(BudgetConfig {
            percent: 20.0,
            min_per_second: 0,
            window: Duration::from_secs(10),
        });
        let mut granted = 0;
        for _ in 0..1000 {
            budget.deposit(Instant::now());
            if budget.try_withdraw(Instant::now()) {
                granted += 1;
            }
        }
        assert_eq!(granted, 200);
        assert_eq!(budget.exhausted(), 800);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_count_across_the_seconds_of_the_window_and_then_leave_it() {
        let budget = RetryBudget::new(BudgetConfig {
            percent: 10.0,
            min_per_second: 0,
            window: Duration::from_secs(10),
        });
        for _ in 0..3 {
            for _ in 0..50 {
                budget.deposit(Instant::now());
            }
            tokio::time::advance(Duration::from_secs(4)).await;
        }
        // 150 requests over 12 s; the window (the last 10 s) holds the last 100.
        let granted = (0..100)
            .filter(|_| budget.try_withdraw(Instant::now()))
            .count();
        assert_eq!(granted, 10);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            !budget.try_withdraw(Instant::now()),
            "no request left in the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_a_few_retries_per_second_at_low_traffic() {
        let budget = RetryBudget::new(BudgetConfig {
            percent: 0.0,
            min_per_second: 2,
            window: Duration::from_secs(5),
        });
        let granted = (0..100)
            .filter(|_| budget.try_withdraw(Instant::now()))
            .count();
        assert_eq!(granted, 10, "2 per second over a 5 s window");
        // Six seconds on, the old retries have left the window.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(budget.try_withdraw(Instant::now()));
    }

    #[test]
    fn bad_settings_are_explained() {
        assert!(RetryConfig::default().problem().is_none());
        let bad = RetryConfig {
            statuses: vec![700],
            ..RetryConfig::default()
        };
        assert!(bad.problem().unwrap().contains("700"));
    }
}
