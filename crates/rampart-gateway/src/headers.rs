//! Header handling: hop-by-hop removal, forwarding headers, response hardening.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{HstsMode, SecurityHeadersConfig};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies traditionally treat the same way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass to find out, since most messages carry none: a removal hashes the name
    // even when it is absent.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
}

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Sets the `X-Forwarded-*` headers on a request going upstream. From a trusted proxy the
/// existing chain is kept and extended; from anyone else it is replaced, so a client
/// cannot forge the addresses the upstream sees.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let peer_text = peer.to_string();
    let chain = if peer_trusted {
        let previous: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if previous.is_empty() {
            peer_text
        } else {
            format!("{}, {peer_text}", previous.join(", "))
        }
    } else {
        peer_text
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

/// A route's security headers, compiled to header names and values.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    always: Vec<(HeaderName, HeaderValue)>,
    hsts: Option<HeaderValue>,
    hsts_mode: HstsMode,
}

impl SecurityHeaders {
    /// Compiles validated config; invalid names or values were refused by validation and
    /// are skipped here.
    pub fn compile(config: &SecurityHeadersConfig) -> Self {
        let named = [
            (header::X_CONTENT_TYPE_OPTIONS, &config.content_type_options),
            (header::X_FRAME_OPTIONS, &config.frame_options),
            (
                header::CONTENT_SECURITY_POLICY,
                &config.content_security_policy,
            ),
            (header::REFERRER_POLICY, &config.referrer_policy),
            (
                HeaderName::from_static("permissions-policy"),
                &config.permissions_policy,
            ),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                &config.cross_origin_opener_policy,
            ),
            (header::X_XSS_PROTECTION, &config.xss_protection),
        ];
        let mut always: Vec<(HeaderName, HeaderValue)> = named
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(n, v)| HeaderValue::from_str(v).ok().map(|v| (n, v)))
            .collect();
        always.extend(
            config
                .extra
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                }),
        );
        let hsts = (!config.strict_transport_security.is_empty())
            .then(|| HeaderValue::from_str(&config.strict_transport_security).ok())
            .flatten();
        SecurityHeaders {
            always,
            hsts,
            hsts_mode: config.hsts,
        }
    }

    /// Hardens a response: strips what reveals the upstream's software, sets the
    /// configured headers over the upstream's.
    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        headers.remove(header::SERVER);
        headers.remove(X_POWERED_BY);
        for (name, value) in &self.always {
            headers.insert(name.clone(), value.clone());
        }
        let send_hsts = match self.hsts_mode {
            HstsMode::Always => true,
            HstsMode::Tls => tls,
            HstsMode::Off => false,
        };
        if let (true, Some(v)) = (send_hsts, &self.hsts) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }
}

/// A client's `X-Request-Id` is kept when it is short and made of safe characters (it ends
/// up in logs); otherwise a new one is generated.
pub fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: a random UUID.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_chain_is_replaced_from_untrusted_and_extended_from_trusted() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(&mut h, peer, false, false, None);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "http");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            peer,
            true,
            false,
            Some(&HeaderValue::from_static("a.example")),
        );
        assert_eq!(h[X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "a.example");
    }

    #[test]
    fn request_ids_with_odd_characters_are_not_kept() {
        assert!(acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a\"b")));
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
        assert!(acceptable_request_id(&new_request_id()));
    }
}
