//! Limit keys: 128-bit digests of what a limit counts by, so that every key costs the
//! same small fixed size in memory and in Redis whatever the client sent.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_128;

/// A limit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u128);

/// The client address as limits and bans see it: IPv4 as is, IPv6 cut to `v6_prefix`
/// bits (a /64 is what one customer usually gets, so per-address limits on IPv6 would be
/// trivially evaded).
pub fn aggregate(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6);
            let prefix = u32::from(v6_prefix.min(128));
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

impl Key {
    /// The key for a client address, already aggregated.
    pub fn ip(ip: IpAddr) -> Key {
        let mut buf = [0u8; 17];
        match ip {
            IpAddr::V4(v4) => {
                buf[0] = 4;
                buf[1..5].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                buf[0] = 6;
                buf[1..].copy_from_slice(&v6.octets());
            }
        }
        Key(xxh3_128(&buf))
    }

    /// The key for a value of some kind (API key, header value, route name).
    pub fn text(kind: u8, value: &[u8]) -> Key {
        // The kind goes first so that equal values of different kinds differ.
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[kind]);
        hasher.update(value);
        Key(hasher.digest128())
    }

    /// Hex form, for Redis keys.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_in_one_prefix_share_a_key() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(aggregate(a, 64), aggregate(b, 64));
        assert_ne!(aggregate(a, 64), aggregate(c, 64));
        assert_eq!(aggregate(a, 64).to_string(), "2001:db8:1:2::");
        assert_ne!(aggregate(a, 128), aggregate(b, 128));
        assert_eq!(Key::ip(aggregate(a, 64)), Key::ip(aggregate(b, 64)));
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            aggregate(mapped, 64),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn kinds_separate_equal_values() {
        assert_ne!(Key::text(1, b"abc"), Key::text(2, b"abc"));
        assert_eq!(Key::text(1, b"abc"), Key::text(1, b"abc"));
    }
}
