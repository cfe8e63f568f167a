//! Automatic bans, fail2ban-style: rules of the form "N events of kind K within W ban the
//! client for T", with repeat offenders banned for T × multiplier^(earlier bans), up to a
//! cap. The ban table is what the request path consults; with Redis it is shared (see
//! [`crate::redis::BanBus`]).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;

/// Events that rules count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A request refused by a rate limit.
    RateLimited,
    /// A request blocked by inspection.
    InspectionBlock,
    /// A failed authentication.
    AuthFailure,
    /// An upstream answer with one of the rule's `statuses`.
    UpstreamStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRule {
    pub event: EventKind,
    /// For `upstream_status`: the statuses that count (e.g. `[401, 403, 404]`).
    #[serde(default)]
    pub statuses: Vec<u16>,
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub ban: Duration,
}

/// Defaults: 20 rate-limit refusals within a minute ban for 10 minutes; 10 blocked attacks
/// within 5 minutes ban for an hour; 10 failed authentications within 5 minutes ban for
/// 15 minutes. Repeat bans double, up to a day.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    pub enabled: bool,
    pub rules: Vec<BanRule>,
    /// Each earlier ban of the same client multiplies the duration by this.
    pub repeat_multiplier: f64,
    #[serde(with = "humantime_serde")]
    pub max_ban: Duration,
    /// Clients whose events are tracked at once; the oldest are forgotten beyond it.
    pub max_tracked: usize,
}

impl Default for BanConfig {
    fn default() -> Self {
        let rule = |event, count, window, ban| BanRule {
            event,
            statuses: Vec::new(),
            count,
            window: Duration::from_secs(window),
            ban: Duration::from_secs(ban),
        };
        BanConfig {
            enabled: true,
            rules: vec![
                rule(EventKind::RateLimited, 20, 60, 600),
                rule(EventKind::InspectionBlock, 10, 300, 3600),
                rule(EventKind::AuthFailure, 10, 300, 900),
            ],
            repeat_multiplier: 2.0,
            max_ban: Duration::from_secs(86_400),
            max_tracked: 100_000,
        }
    }
}

impl BanConfig {
    pub fn problem(&self) -> Option<String> {
        for r in &self.rules {
            if r.count == 0 || r.window.is_zero() || r.ban.is_zero() {
                return Some("ban rules need count ≥ 1 and a window and ban above zero".into());
            }
            if r.event == EventKind::UpstreamStatus && r.statuses.is_empty() {
                return Some("an upstream_status ban rule needs `statuses`".into());
            }
        }
        if !(self.repeat_multiplier >= 1.0 && self.repeat_multiplier.is_finite()) {
            return Some("repeat_multiplier must be at least 1".into());
        }
        None
    }
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub until: SystemTime,
    pub reason: String,
}

/// The bans in force, by (aggregated) client address.
#[derive(Debug, Default)]
pub struct BanTable {
    bans: RwLock<HashMap<IpAddr, Ban>>,
    /// Entries in `bans`, written under its write lock: with none (the usual case) a
    /// lookup takes no lock, whose two atomic operations every request would pay.
    entries: AtomicUsize,
}

impl BanTable {
    /// The ban on `ip`, if one is in force.
    pub fn get(&self, ip: IpAddr) -> Option<Ban> {
        if self.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
        bans.get(&ip)
            .filter(|b| b.until > SystemTime::now())
            .cloned()
    }

    pub fn insert(&self, ip: IpAddr, ban: Ban) {
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        bans.retain(|_, b| b.until > now);
        bans.insert(ip, ban);
        self.entries.store(bans.len(), Ordering::Release);
    }

    /// Lifts a ban; true when there was one.
    pub fn remove(&self, ip: IpAddr) -> bool {
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        let removed = bans.remove(&ip);
        self.entries.store(bans.len(), Ordering::Release);
        removed.is_some_and(|b| b.until > SystemTime::now())
    }

    /// Every ban in force.
    pub fn list(&self) -> Vec<(IpAddr, Ban)> {
        let now = SystemTime::now();
        let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(IpAddr, Ban)> = bans
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(ip, b)| (*ip, b.clone()))
            .collect();
        list.sort_by_key(|(_, b)| b.until);
        list
    }
}

struct Tracked {
    /// Per rule: times of the last `count` events.
    events: Vec<VecDeque<Instant>>,
    last_seen: Instant,
}

/// Counts events per client and decides bans.
pub struct BanEngine {
    config: BanConfig,
    tracked: Mutex<HashMap<IpAddr, Tracked>>,
    /// Earlier bans per client, for the repeat multiplier.
    offenses: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl BanEngine {
    pub fn new(config: BanConfig) -> Self {
        BanEngine {
            config,
            tracked: Mutex::new(HashMap::new()),
            offenses: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event for `ip`; returns the ban it earns, if any.
    pub fn record(&self, ip: IpAddr, event: EventKind, status: Option<u16>) -> Option<Ban> {
        if !self.config.enabled {
            return None;
        }
        let now = Instant::now();
        let rules = &self.config.rules;
        let mut earned: Option<(usize, Duration)> = None;
        {
            let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            if tracked.len() >= self.config.max_tracked && !tracked.contains_key(&ip) {
                // Forget the clients quiet the longest.
                let horizon = rules.iter().map(|r| r.window).max().unwrap_or_default();
                tracked.retain(|_, t| now.saturating_duration_since(t.last_seen) < horizon);
                if tracked.len() >= self.config.max_tracked {
                    return None;
                }
            }
            let entry = tracked.entry(ip).or_insert_with(|| Tracked {
                events: vec![VecDeque::new(); rules.len()],
                last_seen: now,
            });
            entry.last_seen = now;
            for (i, rule) in rules.iter().enumerate() {
                let matches = rule.event == event
                    && (rule.event != EventKind::UpstreamStatus
                        || status.is_some_and(|s| rule.statuses.contains(&s)));
                if !matches {
                    continue;
                }
                let times = &mut entry.events[i];
                times.push_back(now);
                while times.len() > rule.count as usize {
                    times.pop_front();
                }
                let full = times.len() == rule.count as usize;
                if full && times.front().is_some_and(|t| now - *t <= rule.window) {
                    times.clear();
                    if earned.is_none_or(|(_, d)| rule.ban > d) {
                        earned = Some((i, rule.ban));
                    }
                }
            }
        }
        let (rule, base) = earned?;
        let mut offenses = self.offenses.lock().unwrap_or_else(|e| e.into_inner());
        let entry = offenses.entry(ip).or_insert((0, now));
        // A client that stayed out of trouble for the longest ban is a first offender again.
        if now.saturating_duration_since(entry.1) > self.config.max_ban {
            entry.0 = 0;
        }
        let factor = self.config.repeat_multiplier.powi(entry.0.min(32) as i32);
        let duration = Duration::from_secs_f64(
            (base.as_secs_f64() * factor).min(self.config.max_ban.as_secs_f64()),
        );
        entry.0 += 1;
        entry.1 = now;
        let r = &rules[rule];
        Some(Ban {
            until: SystemTime::now() + duration,
            reason: format!(
                "{} {:?} events within {}",
                r.count,
                r.event,
                humantime_serde::re::humantime::format_duration(r.window)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> BanEngine {
        BanEngine::new(BanConfig {
            rules: vec![BanRule {
                event: EventKind::RateLimited,
                statuses: vec![],
                count: 3,
                window: Duration::from_secs(10),
                ban: Duration::from_secs(60),
            }],
            repeat_multiplier: 2.0,
            max_ban: Duration::from_secs(150),
            ..BanConfig::default()
        })
    }

    fn secs_left(ban: &Ban) -> u64 {
        (ban.until
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs_f64())
        .round() as u64
    }

    #[tokio::test(start_paused = true)]
    async fn n_events_within_the_window_ban_and_repeats_ban_longer() {
        let e = engine();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(e.record(ip, EventKind::RateLimited, None).is_none());
        assert!(
            e.record(ip, EventKind::AuthFailure, None).is_none(),
            "other kinds do not count"
        );
        assert!(e.record(ip, EventKind::RateLimited, None).is_none());
        let ban = e
            .record(ip, EventKind::RateLimited, None)
            .expect("third event bans");
        assert_eq!(secs_left(&ban), 60);
        for _ in 0..2 {
            assert!(e.record(ip, EventKind::RateLimited, None).is_none());
        }
        assert_eq!(
            secs_left(&e.record(ip, EventKind::RateLimited, None).unwrap()),
            120
        );
        for _ in 0..2 {
            e.record(ip, EventKind::RateLimited, None);
        }
        assert_eq!(
            secs_left(&e.record(ip, EventKind::RateLimited, None).unwrap()),
            150,
            "capped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_spread_beyond_the_window_do_not_ban() {
        let e = engine();
        let ip: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..10 {
            assert!(e.record(ip, EventKind::RateLimited, None).is_none());
            tokio::time::advance(Duration::from_secs(6)).await;
        }
    }

    #[test]
    fn upstream_status_rules_count_only_their_statuses() {
        let e = BanEngine::new(BanConfig {
            rules: vec![BanRule {
                event: EventKind::UpstreamStatus,
                statuses: vec![401],
                count: 2,
                window: Duration::from_secs(10),
                ban: Duration::from_secs(5),
            }],
            ..BanConfig::default()
        });
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(e.record(ip, EventKind::UpstreamStatus, Some(404)).is_none());
        assert!(e.record(ip, EventKind::UpstreamStatus, Some(401)).is_none());
        assert!(e.record(ip, EventKind::UpstreamStatus, Some(500)).is_none());
        assert!(e.record(ip, EventKind::UpstreamStatus, Some(401)).is_some());
    }

    #[test]
    fn the_table_expires_and_lifts_bans() {
        let t = BanTable::default();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        t.insert(
            ip,
            Ban {
                until: SystemTime::now() + Duration::from_secs(60),
                reason: "test".into(),
            },
        );
        assert!(t.get(ip).is_some());
        assert_eq!(t.list().len(), 1);
        assert!(t.remove(ip));
        assert!(t.get(ip).is_none());
        t.insert(
            ip,
            Ban {
                until: SystemTime::now() - Duration::from_secs(1),
                reason: "old".into(),
            },
        );
        assert!(t.get(ip).is_none(), "an expired ban is no ban");
    }
}
