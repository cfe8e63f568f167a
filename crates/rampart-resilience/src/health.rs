//! Health state from active checks: a server turns unhealthy after `unhealthy_threshold`
//! failed checks in a row and healthy again after `healthy_threshold` passed ones.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;

/// Active HTTP check settings. Without a `path` a server is checked by opening a TCP
/// connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path to GET, e.g. `/health`; absent: a TCP connect check.
    pub path: Option<String>,
    /// Status a healthy server answers with.
    pub expected_status: u16,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: None,
            expected_status: 200,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthCheckConfig {
    pub fn problem(&self) -> Option<String> {
        if self.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Some("health check path must start with `/`".into());
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Some("health check interval and timeout must be above zero".into());
        }
        if self.healthy_threshold == 0 || self.unhealthy_threshold == 0 {
            return Some("health check thresholds must be at least 1".into());
        }
        if !(100..=599).contains(&self.expected_status) {
            return Some(format!("{} is not an HTTP status", self.expected_status));
        }
        None
    }
}

/// One server's health from checks. Starts healthy or not as told.
#[derive(Debug)]
pub struct HealthState {
    healthy: AtomicBool,
    streak: AtomicU32,
}

impl HealthState {
    pub fn new(healthy: bool) -> Self {
        HealthState {
            healthy: AtomicBool::new(healthy),
            streak: AtomicU32::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the state outright (a server's first check, when there is no history).
    pub fn set(&self, healthy: bool) {
        self.streak.store(0, Ordering::Relaxed);
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Records a check's result; returns the new state when it changed. Checks of one
    /// server run one at a time, so plain loads and stores suffice.
    pub fn record(&self, passed: bool, config: &HealthCheckConfig) -> Option<bool> {
        let healthy = self.is_healthy();
        if passed == healthy {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.load(Ordering::Relaxed) + 1;
        let needed = if passed {
            config.healthy_threshold
        } else {
            config.unhealthy_threshold
        };
        if streak >= needed {
            self.streak.store(0, Ordering::Relaxed);
            self.healthy.store(passed, Ordering::Relaxed);
            Some(passed)
        } else {
            self.streak.store(streak, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_turn_it_down_and_up() {
        let c = HealthCheckConfig::default();
        let h = HealthState::new(true);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(true, &c), None, "a pass breaks the failing streak");
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), None);
        assert_eq!(h.record(false, &c), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, &c), None);
        assert_eq!(h.record(true, &c), Some(true));
        assert!(h.is_healthy());
    }
}
