//! Allow and deny lists of CIDRs. `allow` wins over `deny` (so a deny of a range can have
//! holes), and allowed clients are exempt from bans and rate limits; with
//! `default = "deny"` only allowed clients get in.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// For clients in neither list.
    pub default: Policy,
}

/// What the lists say of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// In `allow`: exempt from bans and limits.
    Trusted,
    /// Neither listed nor refused: bans and limits apply.
    Normal,
    Denied,
}

impl AccessConfig {
    pub fn check(&self, ip: IpAddr) -> Access {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&ip)) {
            Access::Trusted
        } else if self.deny.iter().any(|n| n.contains(&ip)) || self.default == Policy::Deny {
            Access::Denied
        } else {
            Access::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_wins_over_deny_and_default_applies_to_the_rest() {
        let a = AccessConfig {
            allow: vec![
                "10.1.2.3/32".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            deny: vec!["10.0.0.0/8".parse().unwrap(), "2001::/16".parse().unwrap()],
            default: Policy::Allow,
        };
        assert_eq!(a.check(ip("10.1.2.3")), Access::Trusted);
        assert_eq!(a.check(ip("10.9.9.9")), Access::Denied);
        assert_eq!(a.check(ip("192.0.2.1")), Access::Normal);
        assert_eq!(a.check(ip("2001:db8::1")), Access::Trusted);
        assert_eq!(a.check(ip("2001:1::1")), Access::Denied);
        assert_eq!(
            a.check(ip("::ffff:10.9.9.9")),
            Access::Denied,
            "mapped IPv4 is IPv4"
        );
        let strict = AccessConfig {
            default: Policy::Deny,
            ..a
        };
        assert_eq!(strict.check(ip("192.0.2.1")), Access::Denied);
        assert_eq!(strict.check(ip("10.1.2.3")), Access::Trusted);
    }
}
