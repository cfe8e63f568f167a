//! A set of limits applied together: every limit must allow a request, and a request
//! refused by one is not counted by the others. Decided in memory, or in Redis when one
//! is configured, with local limits at rate / expected replicas while Redis is away.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use smallvec::SmallVec;

use crate::gcra::{Decision, KeyKind, LimitConfig, OnRedisError, Quota};
use crate::key::Key;
use crate::memory::MemoryStore;
use crate::redis::Redis;

/// `[rate_limit]`. Defaults: 60 requests per minute and 1000 per hour per client IP,
/// IPv6 clients aggregated to their /64, at most one million keys per limit in memory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Send `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on allowed
    /// responses too (refused ones always carry them).
    pub headers: bool,
    /// IPv6 clients are limited by this prefix.
    pub ipv6_prefix: u8,
    /// Keys kept in memory per limit (24 bytes each, allocated at start).
    pub max_keys: usize,
    pub limits: Vec<LimitConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let per_ip = |name: &str, rate, secs| LimitConfig {
            name: Some(name.into()),
            key: KeyKind::Ip,
            rate,
            per: Duration::from_secs(secs),
            burst: None,
            on_redis_error: OnRedisError::Local,
        };
        RateLimitConfig {
            enabled: true,
            headers: true,
            ipv6_prefix: 64,
            max_keys: 1_000_000,
            limits: vec![
                per_ip("ip-per-minute", 60, 60),
                per_ip("ip-per-hour", 1000, 3600),
            ],
        }
    }
}

impl RateLimitConfig {
    pub fn problem(&self) -> Option<String> {
        if self.ipv6_prefix == 0 || self.ipv6_prefix > 128 {
            return Some("ipv6_prefix must be between 1 and 128".into());
        }
        if self.max_keys < 1024 {
            return Some("max_keys must be at least 1024".into());
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.limits {
            if let Some(p) = l.problem() {
                return Some(p);
            }
            if !names.insert(l.display_name()) {
                return Some(format!("two limits are named `{}`", l.display_name()));
            }
        }
        None
    }
}

/// What a request is limited by.
pub struct RequestKeys<'a> {
    /// The client address, aggregated (see [`crate::key::aggregate`]).
    pub ip: IpAddr,
    pub api_key: Option<&'a [u8]>,
    /// Header values by lowercase name.
    pub header: &'a (dyn Fn(&str) -> Option<&'a [u8]> + Sync),
    pub route: &'a str,
}

/// Quota figures for the `RateLimit-*` headers: those of the tightest limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `None` when no limit applied.
    Allowed(Option<QuotaInfo>),
    /// Refused by `limit`; try again after `retry_after`.
    Limited {
        limit: String,
        info: QuotaInfo,
        retry_after: Duration,
    },
    /// Redis is unreachable and a limit says to refuse rather than guess.
    Unavailable,
}

struct Compiled {
    name: String,
    kind: KeyKind,
    quota: Quota,
    /// The quota enforced locally while Redis is away.
    fallback_quota: Quota,
    on_redis_error: OnRedisError,
    store: MemoryStore,
    redis_prefix: String,
}

/// Counters of a limiter's decisions.
#[derive(Debug, Default)]
pub struct LimiterStats {
    /// Counted on every request: in per-thread lanes, without an atomic read-modify-write.
    pub allowed: rampart_lanes::Counter,
    pub limited: rampart_lanes::Counter,
    /// Decisions taken locally because Redis was unreachable.
    pub fallbacks: AtomicU64,
}

pub struct RateLimiter {
    limits: Vec<Compiled>,
    redis: Option<Arc<Redis>>,
    pub stats: Arc<LimiterStats>,
}

const KIND_API_KEY: u8 = 1;
const KIND_HEADER: u8 = 2;
const KIND_ROUTE: u8 = 3;
const KIND_GLOBAL: u8 = 4;

impl RateLimiter {
    /// `scope` names the limiter in Redis keys (the route, or `global`); `stats` may be
    /// shared by several limiters.
    pub fn new(
        config: &RateLimitConfig,
        scope: &str,
        redis: Option<Arc<Redis>>,
        stats: Arc<LimiterStats>,
    ) -> Self {
        let replicas = redis
            .as_ref()
            .map_or(1, |r| r.config().expected_replicas.max(1));
        let prefix = redis
            .as_ref()
            .map_or(String::new(), |r| r.config().key_prefix.clone());
        let limits = if config.enabled {
            &config.limits[..]
        } else {
            &[]
        };
        RateLimiter {
            limits: limits
                .iter()
                .map(|l| {
                    let name = l.display_name();
                    let burst = l.burst.unwrap_or(l.rate);
                    Compiled {
                        redis_prefix: format!("{prefix}rl:{scope}:{name}:"),
                        name,
                        kind: l.key.clone(),
                        quota: l.quota(),
                        fallback_quota: Quota::new(
                            (l.rate / replicas).max(1),
                            l.per,
                            (burst / replicas).max(1),
                        ),
                        on_redis_error: l.on_redis_error,
                        store: MemoryStore::new(config.max_keys),
                    }
                })
                .collect(),
            redis,
            stats,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Whether a limit is keyed by API key: a caller need not look for one otherwise.
    pub fn keys_on_api_key(&self) -> bool {
        self.limits
            .iter()
            .any(|l| matches!(l.kind, KeyKind::ApiKey))
    }

    fn key(limit: &Compiled, keys: &RequestKeys<'_>) -> Option<Key> {
        match &limit.kind {
            KeyKind::Ip => Some(Key::ip(keys.ip)),
            KeyKind::ApiKey => keys.api_key.map(|k| Key::text(KIND_API_KEY, k)),
            KeyKind::Header(name) => (keys.header)(name).map(|v| Key::text(KIND_HEADER, v)),
            KeyKind::Route => Some(Key::text(KIND_ROUTE, keys.route.as_bytes())),
            KeyKind::Global => Some(Key::text(KIND_GLOBAL, b"")),
        }
    }

    /// Decides a request against every limit that applies to it.
    pub async fn check(&self, keys: &RequestKeys<'_>) -> Verdict {
        self.check_at(keys, tokio::time::Instant::now()).await
    }

    /// [`RateLimiter::check`] at `now`, a clock reading the caller has already made (a
    /// reading costs about 20 ns on a VM, and a request needs several).
    pub async fn check_at(&self, keys: &RequestKeys<'_>, now: tokio::time::Instant) -> Verdict {
        if self.limits.is_empty() {
            return Verdict::Allowed(None);
        }
        // Routes have a few limits: the keys stay on the stack.
        let applicable: SmallVec<[(usize, Key); 4]> = self
            .limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Self::key(l, keys).map(|k| (i, k)))
            .collect();
        if applicable.is_empty() {
            return Verdict::Allowed(None);
        }
        let verdict = match &self.redis {
            // Boxed: the in-memory decision's future need not carry the Redis call's size.
            Some(redis) => match Box::pin(self.check_redis(redis, &applicable)).await {
                Some(v) => v,
                None => {
                    self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                    let refuse = applicable
                        .iter()
                        .any(|(i, _)| self.limits[*i].on_redis_error == OnRedisError::Refuse);
                    if refuse {
                        return Verdict::Unavailable;
                    }
                    // After a failed round trip: a reading of its own.
                    self.check_local(&applicable, true, tokio::time::Instant::now())
                }
            },
            None => self.check_local(&applicable, false, now),
        };
        let counter = match verdict {
            Verdict::Allowed(_) => &self.stats.allowed,
            _ => &self.stats.limited,
        };
        counter.inc();
        verdict
    }

    /// In memory: each limit in turn; on a refusal the requests already counted by the
    /// earlier limits are given back.
    fn check_local(
        &self,
        applicable: &[(usize, Key)],
        fallback: bool,
        now: tokio::time::Instant,
    ) -> Verdict {
        let quota = |l: &Compiled| if fallback { l.fallback_quota } else { l.quota };
        let mut decisions: SmallVec<[(usize, Decision); 4]> = SmallVec::new();
        // One clock reading decides the request against every limit.
        for (n, (i, key)) in applicable.iter().enumerate() {
            let limit = &self.limits[*i];
            let q = quota(limit);
            let d = limit.store.decide(*key, &q, now);
            if !d.allowed {
                for (j, k) in &applicable[..n] {
                    let earlier = &self.limits[*j];
                    earlier.store.undo(*k, &quota(earlier), now);
                }
                return Verdict::Limited {
                    limit: limit.name.clone(),
                    info: QuotaInfo {
                        limit: q.limit,
                        remaining: 0,
                        reset: d.reset,
                    },
                    retry_after: d.retry_after,
                };
            }
            decisions.push((*i, d));
        }
        Verdict::Allowed(tightest(&decisions, |i| quota(&self.limits[i]).limit))
    }

    /// In Redis, atomically over every key; None when Redis did not answer.
    async fn check_redis(&self, redis: &Redis, applicable: &[(usize, Key)]) -> Option<Verdict> {
        let keys: Vec<(String, u64, u64)> = applicable
            .iter()
            .map(|(i, key)| {
                let l = &self.limits[*i];
                (
                    format!("{}{}", l.redis_prefix, key.hex()),
                    (l.quota.emission_ns / 1_000).max(1),
                    l.quota.tolerance_ns / 1_000,
                )
            })
            .collect();
        let reply = redis.gcra(&keys).await.ok()?;
        if reply.len() != 1 + 3 * applicable.len() {
            return None;
        }
        let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
        let decisions: Vec<(usize, Decision)> = applicable
            .iter()
            .enumerate()
            .map(|(n, (i, _))| {
                let r = &reply[1 + 3 * n..4 + 3 * n];
                (
                    *i,
                    Decision {
                        allowed: r[1] == 0,
                        remaining: r[0].clamp(0, i64::from(u32::MAX)) as u32,
                        retry_after: micros(r[1]),
                        reset: micros(r[2]),
                    },
                )
            })
            .collect();
        if reply[0] == 1 {
            return Some(Verdict::Allowed(tightest(&decisions, |i| {
                self.limits[i].quota.limit
            })));
        }
        let (i, d) = decisions
            .iter()
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after)?;
        let limit = &self.limits[*i];
        Some(Verdict::Limited {
            limit: limit.name.clone(),
            info: QuotaInfo {
                limit: limit.quota.limit,
                remaining: 0,
                reset: d.reset,
            },
            retry_after: d.retry_after,
        })
    }

    /// Active keys held in memory, over all limits.
    pub fn keys_in_memory(&self) -> usize {
        self.limits.iter().map(|l| l.store.len()).sum()
    }

    /// Active keys overwritten because a limit's table was full, over all limits.
    pub fn evicted_active(&self) -> u64 {
        self.limits.iter().map(|l| l.store.evicted_active()).sum()
    }
}

fn tightest(decisions: &[(usize, Decision)], limit_of: impl Fn(usize) -> u32) -> Option<QuotaInfo> {
    decisions
        .iter()
        .min_by_key(|(_, d)| d.remaining)
        .map(|(i, d)| QuotaInfo {
            limit: limit_of(*i),
            remaining: d.remaining,
            reset: d.reset,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ip: &str) -> RequestKeys<'static> {
        RequestKeys {
            ip: ip.parse().unwrap(),
            api_key: None,
            header: &|_| None,
            route: "r",
        }
    }

    fn limiter(limits: Vec<LimitConfig>) -> RateLimiter {
        RateLimiter::new(
            &RateLimitConfig {
                limits,
                ..RateLimitConfig::default()
            },
            "test",
            None,
            Arc::default(),
        )
    }

    fn limit(rate: u32, secs: u64) -> LimitConfig {
        LimitConfig {
            name: Some(format!("{rate}/{secs}s")),
            key: KeyKind::Ip,
            rate,
            per: Duration::from_secs(secs),
            burst: None,
            on_redis_error: OnRedisError::Local,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn both_default_windows_apply() {
        let l = RateLimiter::new(&RateLimitConfig::default(), "test", None, Arc::default());
        let k = keys("192.0.2.1");
        for i in 0..60 {
            match l.check(&k).await {
                Verdict::Allowed(Some(info)) => assert_eq!(info.remaining, 59 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        let Verdict::Limited {
            limit,
            retry_after,
            info,
        } = l.check(&k).await
        else {
            panic!("the 61st in a minute is refused")
        };
        assert_eq!(limit, "ip-per-minute");
        assert_eq!(retry_after, Duration::from_secs(1));
        assert_eq!(info.limit, 60);
        // One a second for an hour: the per-minute limit allows them all, the hourly one
        // its burst of 1000 and then one per 3.6 s: about 2000 in all, and it binds.
        let mut allowed = 60;
        for _ in 0..3600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if matches!(l.check(&k).await, Verdict::Allowed(_)) {
                allowed += 1;
            }
        }
        assert!((1990..=2010).contains(&allowed), "{allowed}");
        let Verdict::Limited { limit, .. } = l.check(&k).await else {
            panic!()
        };
        assert_eq!(limit, "ip-per-hour");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_by_one_limit_is_not_counted_by_the_others() {
        let l = limiter(vec![limit(100, 60), limit(2, 60)]);
        let k = keys("192.0.2.2");
        assert!(matches!(l.check(&k).await, Verdict::Allowed(_)));
        assert!(matches!(l.check(&k).await, Verdict::Allowed(_)));
        for _ in 0..10 {
            assert!(matches!(l.check(&k).await, Verdict::Limited { .. }));
        }
        // The tight limit refills in 30 s; the wide one must not have counted the 10
        // refusals: 98 remain after the next request.
        tokio::time::advance(Duration::from_secs(30)).await;
        let Verdict::Allowed(Some(info)) = l.check(&k).await else {
            panic!()
        };
        assert_eq!(info.remaining, 0, "the tightest limit is reported");
    }

    #[tokio::test(start_paused = true)]
    async fn limits_by_header_skip_requests_without_it() {
        let mut by_tenant = limit(1, 60);
        by_tenant.key = KeyKind::Header("x-tenant".into());
        let l = limiter(vec![by_tenant]);
        let with = RequestKeys {
            ip: "192.0.2.3".parse().unwrap(),
            api_key: None,
            header: &|name| (name == "x-tenant").then_some(b"acme".as_slice()),
            route: "r",
        };
        assert!(matches!(l.check(&with).await, Verdict::Allowed(Some(_))));
        assert!(matches!(l.check(&with).await, Verdict::Limited { .. }));
        assert_eq!(l.check(&keys("192.0.2.3")).await, Verdict::Allowed(None));
    }
}
