//! The generic cell rate algorithm: one timestamp per key (the theoretical arrival time,
//! TAT) gives an exact rate with a burst. A key whose TAT is in the past is in the same
//! state as a key never seen, so idle keys can be forgotten without changing a decision.

use std::time::Duration;

use serde::Deserialize;

/// A rate: `rate` requests per `per`, of which `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Nanoseconds between two requests at the steady rate (T).
    pub emission_ns: u64,
    /// How far the TAT may run ahead of now (τ = T × burst).
    pub tolerance_ns: u64,
    /// The quota as advertised in `RateLimit-Limit`.
    pub limit: u32,
}

impl Quota {
    pub fn new(rate: u32, per: Duration, burst: u32) -> Quota {
        let rate = rate.max(1);
        let emission_ns = (per.as_nanos() / u128::from(rate)).max(1) as u64;
        Quota {
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(burst.max(1))),
            limit: rate,
        }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// When refused: time until the request would be allowed.
    pub retry_after: Duration,
    /// Time until the quota is whole again.
    pub reset: Duration,
}

/// Decides a request at `now` (ns) for a key whose TAT is `tat` (None: never seen, or
/// forgotten); returns the decision and the TAT to store when allowed.
pub fn decide(tat: Option<u64>, now: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + quota.emission_ns;
    let allow_at = new_tat.saturating_sub(quota.tolerance_ns);
    if allow_at > now {
        let remaining_debt = tat - now;
        return (
            Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_nanos(allow_at - now),
                reset: Duration::from_nanos(remaining_debt),
            },
            None,
        );
    }
    let debt = new_tat - now;
    let remaining = ((quota.tolerance_ns - debt) / quota.emission_ns) as u32;
    (
        Decision {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset: Duration::from_nanos(debt),
        },
        Some(new_tat),
    )
}

/// How one limit is configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Name in logs, metrics and Redis keys; defaults to `rate/per key`.
    pub name: Option<String>,
    /// What the limit counts by.
    #[serde(default)]
    pub key: KeyKind,
    pub rate: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Requests that may come at once; defaults to `rate`.
    pub burst: Option<u32>,
    /// With Redis unreachable: `local` (limit here at rate / expected replicas) or
    /// `refuse` (for quotas that must never be exceeded).
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

impl LimitConfig {
    pub fn quota(&self) -> Quota {
        Quota::new(self.rate, self.per, self.burst.unwrap_or(self.rate))
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{}/{} by {}",
                self.rate,
                humantime_serde::re::humantime::format_duration(self.per),
                self.key
            )
        })
    }

    pub fn problem(&self) -> Option<String> {
        if self.rate == 0 {
            return Some("rate must be at least 1".into());
        }
        if self.per.is_zero() || self.per > Duration::from_secs(31 * 86_400) {
            return Some("per must be above zero and at most 31 days".into());
        }
        if self.burst == Some(0) {
            return Some("burst must be at least 1".into());
        }
        if let KeyKind::Header(h) = &self.key
            && (h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Some(format!("`{h}` is not a header name"));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    #[default]
    Local,
    Refuse,
}

/// What a limit counts by. Written `ip`, `api_key`, `route`, `global` or `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// The client IP (IPv6 aggregated to the configured prefix).
    #[default]
    Ip,
    /// The API key: `Authorization: Bearer …` or `X-API-Key`.
    ApiKey,
    /// The value of a request header.
    Header(String),
    /// The route: one bucket for all its clients.
    Route,
    /// One bucket for everything.
    Global,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Ip => f.write_str("ip"),
            KeyKind::ApiKey => f.write_str("api_key"),
            KeyKind::Header(h) => write!(f, "header:{h}"),
            KeyKind::Route => f.write_str("route"),
            KeyKind::Global => f.write_str("global"),
        }
    }
}

impl<'de> Deserialize<'de> for KeyKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "ip" => Ok(KeyKind::Ip),
            "api_key" => Ok(KeyKind::ApiKey),
            "route" => Ok(KeyKind::Route),
            "global" => Ok(KeyKind::Global),
            other => match other.strip_prefix("header:") {
                Some(name) => Ok(KeyKind::Header(name.to_ascii_lowercase())),
                None => Err(serde::de::Error::custom(format!(
                    "unknown key `{other}`: use ip, api_key, route, global or header:NAME"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 60 per minute, burst 10: ten at once, then one per second.
        let q = Quota::new(60, Duration::from_secs(60), 10);
        let mut tat = None;
        let now = 1_000 * SEC;
        for i in 0..10 {
            let (d, t) = decide(tat, now, &q);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 9 - i);
            tat = t;
        }
        let (d, t) = decide(tat, now, &q);
        assert!(!d.allowed);
        assert!(t.is_none());
        assert_eq!(d.retry_after, Duration::from_secs(1));
        assert_eq!(d.reset, Duration::from_secs(10));
        // One second later exactly one more.
        let (d, t) = decide(tat, now + SEC, &q);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        tat = t;
        let (d, _) = decide(tat, now + SEC, &q);
        assert!(!d.allowed);
        // Over a long run the rate is exact: 600 requests in 590 s after the burst.
        let mut allowed = 0;
        let mut tat = None;
        for ms in (0..600_000u64).step_by(100) {
            let (d, t) = decide(tat, now + ms * 1_000_000, &q);
            if d.allowed {
                allowed += 1;
                tat = t;
            }
        }
        assert_eq!(allowed, 10 + 599, "burst + one per second for 599 s");
    }

    #[test]
    fn a_past_tat_is_a_fresh_key() {
        let q = Quota::new(5, Duration::from_secs(1), 5);
        let (fresh, _) = decide(None, 100 * SEC, &q);
        let (old, _) = decide(Some(SEC), 100 * SEC, &q);
        assert_eq!(fresh, old);
    }

    #[test]
    fn keys_parse_with_a_clear_error() {
        use serde::de::value::{Error, StrDeserializer};
        let parse = |v: &str| KeyKind::deserialize(StrDeserializer::<Error>::new(v));
        assert_eq!(
            parse("header:X-Tenant").unwrap(),
            KeyKind::Header("x-tenant".into())
        );
        assert_eq!(parse("ip").unwrap(), KeyKind::Ip);
        assert!(
            parse("cookie")
                .unwrap_err()
                .to_string()
                .contains("header:NAME")
        );
    }
}
