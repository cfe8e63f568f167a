//! Passive outlier ejection: a server that fails `consecutive_failures` times in a row is
//! taken out of its pool for `base_ejection` × the number of times it was ejected (up to
//! `max_ejection`), as long as no more than `max_ejection_percent` of the pool is out.
//! It comes back by itself when the time is up; each `base_ejection` it then stays
//! healthy takes one off its ejection count.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Defaults: eject after 5 consecutive failures, for 30 s × ejections, at most 5 min,
/// never more than half of a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    pub enabled: bool,
    pub consecutive_failures: u32,
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierConfig {
    pub fn problem(&self) -> Option<String> {
        if self.consecutive_failures == 0 {
            return Some("consecutive_failures must be at least 1".into());
        }
        if self.base_ejection.is_zero() || self.max_ejection < self.base_ejection {
            return Some("base_ejection must be above zero and at most max_ejection".into());
        }
        if self.max_ejection_percent > 100 {
            return Some("max_ejection_percent must be at most 100".into());
        }
        None
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ServerState {
    consecutive_failures: u32,
    ejections: u32,
    /// Ejected until then; also the start of the healthy time that decays `ejections`.
    until: Option<Instant>,
}

/// What a recorded outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    None,
    /// The server was ejected for this long.
    Ejected(Duration),
    /// It should have been, but the pool's ejection cap was reached.
    CapReached,
}

/// Outlier state for the servers of one pool.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    servers: Mutex<Vec<ServerState>>,
    /// Set, under the lock, at the pool's first ejection: until then no server is ejected
    /// and the check every request makes takes no lock.
    ever_ejected: AtomicBool,
    /// Per server, written under the lock: whether it has no failure counted and was
    /// never ejected. A success then changes nothing, and is recorded without the lock
    /// (whose two atomic operations every proxied request would pay).
    quiet: Box<[AtomicBool]>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig, servers: usize) -> Self {
        OutlierDetector {
            config,
            servers: Mutex::new(vec![ServerState::default(); servers]),
            ever_ejected: AtomicBool::new(false),
            quiet: (0..servers).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ServerState>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the server is ejected now.
    pub fn is_ejected(&self, server: usize) -> bool {
        if !self.ever_ejected.load(Ordering::Acquire) {
            return false;
        }
        self.lock()
            .get(server)
            .and_then(|s| s.until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Records the outcome of a call to `server`.
    pub fn record(&self, server: usize, failure: bool) -> Ejection {
        if !self.config.enabled {
            return Ejection::None;
        }
        let Some(quiet) = self.quiet.get(server) else {
            return Ejection::None;
        };
        if !failure && quiet.load(Ordering::Acquire) {
            return Ejection::None;
        }
        let mut all = self.lock();
        let ejection = self.record_locked(&mut all, server, failure);
        if let Some(state) = all.get(server) {
            quiet.store(
                state.consecutive_failures == 0 && state.until.is_none(),
                Ordering::Release,
            );
        }
        ejection
    }

    fn record_locked(&self, all: &mut [ServerState], server: usize, failure: bool) -> Ejection {
        // The clock is read only when an ejection is or was in force: a healthy pool's
        // calls need no time.
        let now = all.iter().any(|s| s.until.is_some()).then(Instant::now);
        let total = all.len();
        let ejected_now = now.map_or(0, |now| {
            all.iter()
                .filter(|s| s.until.is_some_and(|u| now < u))
                .count()
        });
        let Some(state) = all.get_mut(server) else {
            return Ejection::None;
        };
        if let (Some(until), Some(now)) = (state.until, now) {
            if now < until {
                // Late results of calls made before the ejection.
                return Ejection::None;
            }
            let healthy_for = now - until;
            let decay =
                (healthy_for.as_secs_f64() / self.config.base_ejection.as_secs_f64()) as u32;
            if decay > 0 {
                state.ejections = state.ejections.saturating_sub(decay);
                state.until = Some(until + self.config.base_ejection * decay);
            }
        }
        if !failure {
            state.consecutive_failures = 0;
            return Ejection::None;
        }
        state.consecutive_failures += 1;
        if state.consecutive_failures < self.config.consecutive_failures {
            return Ejection::None;
        }
        let allowed = (ejected_now + 1) * 100 <= total * self.config.max_ejection_percent as usize;
        if !allowed {
            return Ejection::CapReached;
        }
        state.consecutive_failures = 0;
        state.ejections += 1;
        let duration = (self.config.base_ejection * state.ejections).min(self.config.max_ejection);
        state.until = Some(now.unwrap_or_else(Instant::now) + duration);
        self.ever_ejected.store(true, Ordering::Release);
        Ejection::Ejected(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector(n: usize) -> OutlierDetector {
        OutlierDetector::new(
            OutlierConfig {
                consecutive_failures: 3,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(25),
                max_ejection_percent: 50,
                enabled: true,
            },
            n,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_growing_times_and_servers_come_back() {
        let d = detector(2);
        assert_eq!(d.record(0, true), Ejection::None);
        assert_eq!(
            d.record(0, false),
            Ejection::None,
            "a success resets the count"
        );
        d.record(0, true);
        d.record(0, true);
        assert_eq!(
            d.record(0, true),
            Ejection::Ejected(Duration::from_secs(10))
        );
        assert!(d.is_ejected(0));
        assert!(!d.is_ejected(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!d.is_ejected(0), "re-admitted when the time is up");
        for _ in 0..2 {
            d.record(0, true);
        }
        assert_eq!(
            d.record(0, true),
            Ejection::Ejected(Duration::from_secs(20))
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        for _ in 0..2 {
            d.record(0, true);
        }
        assert_eq!(
            d.record(0, true),
            Ejection::Ejected(Duration::from_secs(25)),
            "capped at max_ejection"
        );
    }

    #[test]
    fn a_success_on_a_server_without_failures_takes_no_lock() {
        let d = std::sync::Arc::new(detector(2));
        let held = d.lock();
        let (done, finished) = std::sync::mpsc::channel();
        let recorder = d.clone();
        std::thread::spawn(move || {
            let _ = done.send(recorder.record(0, false));
        });
        let recorded = finished.recv_timeout(Duration::from_secs(5));
        drop(held);
        assert_eq!(
            recorded,
            Ok(Ejection::None),
            "the success waited for the lock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_max_percent_of_a_pool() {
        let d = detector(2);
        for _ in 0..3 {
            d.record(0, true);
        }
        assert!(d.is_ejected(0));
        for _ in 0..2 {
            d.record(1, true);
        }
        assert_eq!(d.record(1, true), Ejection::CapReached);
        assert!(!d.is_ejected(1));
        let lone = detector(1);
        for _ in 0..2 {
            lone.record(0, true);
        }
        assert_eq!(
            lone.record(0, true),
            Ejection::CapReached,
            "a pool of one is never emptied"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_time_decays_the_ejection_count() {
        let d = detector(2);
        for _ in 0..3 {
            d.record(0, true);
        }
        tokio::time::advance(Duration::from_secs(10 + 10)).await;
        d.record(0, false);
        for _ in 0..3 {
            d.record(0, true);
        }
        assert!(d.is_ejected(0));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(
            d.is_ejected(0),
            "back to the base time: the count had decayed to 0"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!d.is_ejected(0));
    }
}
