//! Header handling: hop-by-hop removal, forwarding headers, response hardening.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rampart_h1::{eq_lowercase, write_field_line};
use smallvec::SmallVec;

use crate::config::{HstsMode, SecurityHeadersConfig};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies traditionally treat the same way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Names are compared as text: a comparison with a `const HeaderName` of a non-standard
/// name builds and drops a temporary each time.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The same for a name as sent, in any case.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| eq_lowercase(name, h.as_bytes()))
}

/// The names an upstream's `Connection` fields list as hop-by-hop (besides `close` and the
/// names that are always hop-by-hop), in any case.
pub fn connection_listed(fields: &rampart_h1::RawFields) -> SmallVec<[&[u8]; 2]> {
    let mut listed = SmallVec::new();
    for (name, value) in fields.iter() {
        if !eq_lowercase(name, b"connection") {
            continue;
        }
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let known = eq_lowercase(token, b"close")
                || eq_lowercase(token, b"keep-alive")
                || is_hop_by_hop_name(token);
            if !token.is_empty() && !known {
                listed.push(token);
            }
        }
    }
    listed
}

/// Header names looked up without case; a name is compared only with those of its length.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    by_length: Vec<Vec<Box<[u8]>>>,
}

impl NameSet {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut set = NameSet::default();
        for name in names {
            if set.by_length.len() <= name.len() {
                set.by_length.resize_with(name.len() + 1, Vec::new);
            }
            set.by_length[name.len()].push(name.to_ascii_lowercase().into());
        }
        set
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.by_length
            .get(name.len())
            .is_some_and(|names| names.iter().any(|n| eq_lowercase(name, n)))
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. Only the
/// names present are removed: a removal hashes the name even when it is absent, and most
/// messages carry one such header at most (`Connection: keep-alive`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present: SmallVec<[HeaderName; 4]> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    for value in headers.get_all(header::CONNECTION) {
        let tokens = value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii);
        for token in tokens {
            // `close` is no header; hop-by-hop names are in `present` if they are here.
            if token.is_empty() || eq_lowercase(token, b"close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token)
                && !is_hop_by_hop(&name)
            {
                present.push(name);
            }
        }
    }
    for name in &present {
        headers.remove(name);
    }
}

/// Fields a map holds at most to be searched in order rather than by hash: a request
/// carries a handful, and comparing that many names costs less than hashing one.
const SCANNED_FIELDS: usize = 12;

/// The first value of the field `name`, as [`HeaderMap::get`] gives it.
pub fn field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() <= SCANNED_FIELDS {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    } else {
        headers.get(name)
    }
}

pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// The fields the gateway sets on a request it forwards, written by the upstream
/// connection's head writer in place of the client's: `Host`, `X-Forwarded-*` and
/// `X-Request-Id`. From a trusted proxy the forwarding chain is kept and extended (and its
/// `X-Forwarded-Proto` and `X-Forwarded-Host` kept); from anyone else it is replaced, so a
/// client cannot forge the addresses the upstream sees.
pub struct ForwardedFields<'a> {
    /// The upstream server's, or the client's where the route preserves it; set for each
    /// attempt.
    pub host: Option<&'a HeaderValue>,
    /// The chain before the peer, from a trusted peer: its `X-Forwarded-For` values.
    pub chain: Option<String>,
    pub peer: IpAddr,
    pub tls: bool,
    /// `X-Forwarded-Host`: the host the client asked for, if it said.
    pub original_host: Option<&'a HeaderValue>,
    /// A trusted peer's own `X-Forwarded-Proto` and `X-Forwarded-Host` are kept.
    pub keep_proto: bool,
    pub keep_host: bool,
    pub request_id: &'a RequestId,
}

impl<'a> ForwardedFields<'a> {
    /// The fields for a request whose headers are `headers` (the client's, hop-by-hop ones
    /// removed).
    pub fn new(
        headers: &HeaderMap,
        peer: IpAddr,
        peer_trusted: bool,
        tls: bool,
        original_host: Option<&'a HeaderValue>,
        request_id: &'a RequestId,
    ) -> Self {
        let chain = peer_trusted
            .then(|| {
                let previous: Vec<&str> = headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!previous.is_empty()).then(|| previous.join(", "))
            })
            .flatten();
        ForwardedFields {
            host: None,
            chain,
            peer,
            tls,
            original_host,
            keep_proto: peer_trusted && headers.contains_key(&X_FORWARDED_PROTO),
            keep_host: peer_trusted && headers.contains_key(&X_FORWARDED_HOST),
            request_id,
        }
    }
}

/// Writes an IP address without the formatting machinery.
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    use std::io::Write;
    match ip {
        IpAddr::V4(v4) => {
            // Built on the stack and copied once: every request writes one or two.
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            out.extend_from_slice(&text[..len]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

impl rampart_h1::HeadFields for ForwardedFields<'_> {
    fn write_fields(&self, out: &mut Vec<u8>) {
        if let Some(host) = self.host {
            write_field_line(out, b"host", host.as_bytes());
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(chain) = &self.chain {
            out.extend_from_slice(chain.as_bytes());
            out.extend_from_slice(b", ");
        }
        write_ip(out, self.peer);
        out.extend_from_slice(b"\r\n");
        if !self.keep_proto {
            let proto: &[u8] = if self.tls { b"https" } else { b"http" };
            write_field_line(out, b"x-forwarded-proto", proto);
        }
        if !self.keep_host
            && let Some(host) = self.original_host
        {
            write_field_line(out, b"x-forwarded-host", host.as_bytes());
        }
        write_field_line(out, b"x-request-id", self.request_id.as_bytes());
    }

    fn replaces(&self, name: &HeaderName) -> bool {
        match name.as_str() {
            "host" => self.host.is_some(),
            "x-forwarded-for" | "x-request-id" => true,
            "x-forwarded-proto" => !self.keep_proto,
            "x-forwarded-host" => !self.keep_host,
            _ => false,
        }
    }
}

/// A route's security headers, compiled to header names and values, and to head lines
/// for HTTP/1.1 writers.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    always: Vec<(HeaderName, HeaderValue)>,
    always_lines: Vec<u8>,
    /// Upstream response fields never passed on: hop-by-hop ones, the CORS fields the
    /// gateway owns, what reveals the upstream's software, and the fields set here or by
    /// the exchange (request id).
    upstream_blocked: NameSet,
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
        let mut always_lines = Vec::new();
        for (name, value) in &always {
            write_field_line(
                &mut always_lines,
                name.as_str().as_bytes(),
                value.as_bytes(),
            );
        }
        let upstream_blocked = NameSet::new(
            HOP_BY_HOP
                .iter()
                .copied()
                .chain(
                    crate::cors::CORS_RESPONSE_HEADERS
                        .iter()
                        .map(HeaderName::as_str),
                )
                .chain(["server", "x-powered-by", "x-request-id"])
                .chain(always.iter().map(|(n, _)| n.as_str()))
                .map(str::as_bytes),
        );
        SecurityHeaders {
            always,
            always_lines,
            upstream_blocked,
            hsts,
            hsts_mode: config.hsts,
        }
    }

    fn hsts(&self, tls: bool) -> Option<&HeaderValue> {
        let send = match self.hsts_mode {
            HstsMode::Always => true,
            HstsMode::Tls => tls,
            HstsMode::Off => false,
        };
        self.hsts.as_ref().filter(|_| send)
    }

    /// Hardens a response's header map: strips what reveals the upstream's software, sets
    /// the configured headers over the upstream's.
    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        headers.remove(header::SERVER);
        headers.remove(X_POWERED_BY);
        for (name, value) in &self.always {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(v) = self.hsts(tls) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }

    /// The same as [`apply`](Self::apply), as head lines: the configured headers...
    pub fn write_fields(&self, out: &mut Vec<u8>, tls: bool) {
        out.extend_from_slice(&self.always_lines);
        if let Some(v) = self.hsts(tls) {
            write_field_line(out, b"strict-transport-security", v.as_bytes());
        }
    }

    /// Whether an upstream's response field is left out (names in any case).
    pub fn blocks_upstream(&self, name: &[u8], tls: bool) -> bool {
        self.upstream_blocked.contains(name)
            || (eq_lowercase(name, b"strict-transport-security") && self.hsts(tls).is_some())
    }

    /// ...and the fields of a response's map they stand for, or that are stripped (names in
    /// any case).
    pub fn replaces(&self, name: &[u8], tls: bool) -> bool {
        eq_lowercase(name, b"server")
            || eq_lowercase(name, b"x-powered-by")
            || self
                .always
                .iter()
                .any(|(n, _)| eq_lowercase(name, n.as_str().as_bytes()))
            || (eq_lowercase(name, b"strict-transport-security") && self.hsts(tls).is_some())
    }
}

/// A request's id: the client's `X-Request-Id` when it is acceptable, or a new random UUID
/// kept inline (a header value would be an allocation on every request).
#[derive(Debug, Clone)]
pub enum RequestId {
    Kept(HeaderValue),
    New([u8; uuid::fmt::Hyphenated::LENGTH]),
}

impl RequestId {
    /// The client's id when [`acceptable_request_id`], else a new one.
    pub fn from_request(given: Option<&HeaderValue>) -> Self {
        match given.filter(|v| acceptable_request_id(v)) {
            Some(v) => RequestId::Kept(v.clone()),
            None => RequestId::new(),
        }
    }

    /// A new random UUID.
    pub fn new() -> Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        RequestId::New(text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Kept(v) => v.as_bytes(),
            RequestId::New(text) => text,
        }
    }

    /// Both kinds are ASCII (letters, digits and `-_.:`).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }

    pub fn to_header_value(&self) -> HeaderValue {
        match self {
            RequestId::Kept(v) => v.clone(),
            RequestId::New(text) => {
                HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
        }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.100",
            "192.168.10.1",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = b"x".to_vec();
            write_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes());
        }
    }

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

    fn fields(f: &ForwardedFields<'_>) -> String {
        let mut out = Vec::new();
        rampart_h1::HeadFields::write_fields(f, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forwarded_chain_is_replaced_from_untrusted_and_extended_from_trusted() {
        use rampart_h1::HeadFields;
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let host = HeaderValue::from_static("up:80");
        let id = RequestId::Kept(HeaderValue::from_static("id-1"));
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let mut untrusted = ForwardedFields::new(&h, peer, false, false, None, &id);
        untrusted.host = Some(&host);
        assert_eq!(
            fields(&untrusted),
            "host: up:80\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-request-id: id-1\r\n"
        );
        assert!(untrusted.replaces(&X_FORWARDED_FOR) && untrusted.replaces(&X_FORWARDED_PROTO));
        assert!(
            untrusted.replaces(&X_FORWARDED_HOST),
            "a client's own is dropped"
        );

        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let asked = HeaderValue::from_static("a.example");
        let mut trusted = ForwardedFields::new(&h, peer, true, false, Some(&asked), &id);
        trusted.host = Some(&host);
        assert_eq!(
            fields(&trusted),
            "host: up:80\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\nx-forwarded-host: a.example\r\nx-request-id: id-1\r\n"
        );
        assert!(
            !trusted.replaces(&X_FORWARDED_PROTO),
            "the trusted proxy's proto is kept"
        );

        let v6 = ForwardedFields::new(
            &HeaderMap::new(),
            "2001:db8::1".parse().unwrap(),
            false,
            true,
            None,
            &id,
        );
        assert!(
            fields(&v6).contains("x-forwarded-for: 2001:db8::1\r\nx-forwarded-proto: https\r\n")
        );
    }

    #[test]
    fn security_headers_as_lines_match_the_map_form() {
        let compiled = SecurityHeaders::compile(&SecurityHeadersConfig::default());
        let mut map = HeaderMap::new();
        map.insert(header::SERVER, HeaderValue::from_static("nginx"));
        map.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("ALLOW"));
        compiled.apply(&mut map, true);
        let mut lines = Vec::new();
        compiled.write_fields(&mut lines, true);
        let text = String::from_utf8(lines).unwrap();
        for (name, value) in &map {
            assert!(
                text.contains(&format!("{name}: {}\r\n", value.to_str().unwrap())),
                "{name} missing: {text}"
            );
        }
        assert_eq!(text.lines().count(), map.len());
        assert!(compiled.replaces(b"Server", true) && compiled.replaces(b"X-Frame-Options", true));
        assert!(!compiled.replaces(b"content-type", true));
        assert!(
            !compiled.replaces(b"strict-transport-security", false),
            "no HSTS without TLS by default"
        );
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
        assert!(acceptable_request_id(&RequestId::new().to_header_value()));
    }
}
