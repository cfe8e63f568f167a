//! One request/response exchange as the gateway records it: the access log line and the
//! route's metrics, written once when the response body ends.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rampart_h1::{eq_lowercase, write_field_line};
use rampart_limit::QuotaInfo;

use crate::access_log::{json_str, rfc3339, wall_time};
use crate::body::BodyStats;
use crate::headers::{RequestId, SecurityHeaders, X_REQUEST_ID, write_ip};
use crate::runtime::Runtime;
use crate::server::RequestGuard;

/// What the gateway did with a request, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Proxied,
    Preflight,
    Rejected(crate::metrics::Rejection),
    /// The route's fallback answer was served.
    Fallback,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Proxied => "proxied",
            Decision::Preflight => "cors_preflight",
            Decision::Rejected(r) => r.as_str(),
            Decision::Fallback => "fallback",
        }
    }
}

pub struct Exchange {
    pub start: Instant,
    pub request_id: RequestId,
    pub client_ip: IpAddr,
    /// `None` for a head refused before it could be read as a request.
    pub method: Option<Method>,
    pub uri: Option<Uri>,
    pub runtime: Arc<Runtime>,
    pub route: Option<usize>,
    pub status: u16,
    pub decision: Decision,
    pub body_stats: Option<Arc<BodyStats>>,
    pub bytes_out: u64,
    pub upstream: Option<usize>,
    pub upstream_duration: Option<Duration>,
    /// The client connection is TLS (for HSTS).
    pub tls: bool,
    /// The client's rate-limit quota, for the `RateLimit-*` headers.
    pub quota: Option<QuotaInfo>,
    /// For HTTP/2 connections, whose idle timeout watches requests in flight.
    pub _guard: Option<RequestGuard>,
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Whole seconds to the reset, rounded up.
fn reset_secs(info: &QuotaInfo) -> u64 {
    info.reset.as_secs() + u64::from(info.reset.subsec_nanos() > 0)
}

impl Exchange {
    /// An exchange that has just begun, nothing decided yet.
    pub fn new(
        start: Instant,
        request_id: RequestId,
        client_ip: IpAddr,
        runtime: Arc<Runtime>,
        tls: bool,
    ) -> Self {
        Exchange {
            start,
            request_id,
            client_ip,
            method: None,
            uri: None,
            runtime,
            route: None,
            status: 0,
            decision: Decision::Proxied,
            body_stats: None,
            bytes_out: 0,
            upstream: None,
            upstream_duration: None,
            tls,
            quota: None,
            _guard: None,
        }
    }
}

/// Every response carries the route's security headers (or the global ones when no route
/// matched), the request id and, when limits apply, the IETF draft's `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset`. HTTP/1.1 writes them as head lines in place
/// of the response's own; HTTP/2 sets them in the header map.
impl Exchange {
    fn security_headers(&self) -> &SecurityHeaders {
        match self.route {
            Some(i) => &self.runtime.route_at(i).security_headers,
            None => &self.runtime.default_headers,
        }
    }

    /// The response fields as head lines.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        self.security_headers().write_fields(out, self.tls);
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(info) = &self.quota {
            let mut number = itoa::Buffer::new();
            for (name, value) in [
                (RATELIMIT_LIMIT, u64::from(info.limit)),
                (RATELIMIT_REMAINING, u64::from(info.remaining)),
                (RATELIMIT_RESET, reset_secs(info)),
            ] {
                write_field_line(
                    out,
                    name.as_str().as_bytes(),
                    number.format(value).as_bytes(),
                );
            }
        }
    }

    /// Whether a response's own field gives way to [`write_fields`](Self::write_fields)
    /// (names in any case).
    pub fn replaces(&self, name: &[u8]) -> bool {
        if eq_lowercase(name, b"x-request-id") {
            return true;
        }
        let ratelimit = [
            &b"ratelimit-limit"[..],
            b"ratelimit-remaining",
            b"ratelimit-reset",
        ];
        if ratelimit.iter().any(|r| eq_lowercase(name, r)) {
            return self.quota.is_some();
        }
        self.security_headers().replaces(name, self.tls)
    }

    /// Whether an upstream's response field is passed on: not hop-by-hop, not framing
    /// (the gateway frames the body itself, but for a HEAD or 304 answer, whose length
    /// field describes a body not sent), not a CORS field (the gateway owns those) and not
    /// one the gateway's own fields stand for.
    pub fn passes_upstream_field(&self, name: &[u8]) -> bool {
        if self.security_headers().blocks_upstream(name, self.tls) {
            return false;
        }
        match name.len() {
            14 if eq_lowercase(name, b"content-length") => {
                self.method == Some(Method::HEAD) || self.status == 304
            }
            15 | 19 if self.quota.is_some() => {
                !(eq_lowercase(name, b"ratelimit-limit")
                    || eq_lowercase(name, b"ratelimit-reset")
                    || eq_lowercase(name, b"ratelimit-remaining"))
            }
            _ => true,
        }
    }

    /// The response fields set in a header map.
    pub fn decorate(&self, headers: &mut HeaderMap) {
        self.security_headers().apply(headers, self.tls);
        headers.insert(X_REQUEST_ID, self.request_id.to_header_value());
        if let Some(info) = &self.quota {
            headers.insert(RATELIMIT_LIMIT, HeaderValue::from(info.limit));
            headers.insert(RATELIMIT_REMAINING, HeaderValue::from(info.remaining));
            headers.insert(RATELIMIT_RESET, HeaderValue::from(reset_secs(info)));
        }
    }

    /// Returns the upstream connection of a completed exchange to its server's pool, idle
    /// from `now`.
    pub fn checkin(&self, conn: Box<crate::upstream::UpstreamConn>, now: Instant) {
        if let (Some(route), Some(server)) = (self.route, self.upstream)
            && let Some(server) = self.runtime.route_at(route).pool.servers.get(server)
        {
            server.endpoint.checkin(conn, now);
        }
    }

    /// Records metrics and writes the access log line. `completed` is false when the
    /// response body did not reach its end (client gone, upstream reset); `now` is when it
    /// ended.
    pub fn finish(self: Box<Self>, completed: bool, now: Instant) {
        let duration = now.saturating_duration_since(self.start);
        let route = self.route.map(|i| self.runtime.route_at(i));
        if let Some(route) = route {
            route.metrics.count(self.status);
            route.metrics.request_duration.observe(duration);
            if let Some(d) = self.upstream_duration {
                route.metrics.upstream_duration.observe(d);
            }
        }
        let Some(log) = &self.runtime.access_log else {
            return;
        };
        let upstream = match (route, self.upstream) {
            (Some(r), Some(i)) => r.pool.servers.get(i).map(|s| &*s.log_url),
            _ => None,
        };
        log.line(|out| {
            self.write_json(
                out,
                now,
                duration,
                completed,
                route.map(|r| &*r.log_name),
                upstream,
            )
        });
    }

    fn write_json(
        &self,
        out: &mut Vec<u8>,
        now: Instant,
        duration: Duration,
        completed: bool,
        route: Option<&[u8]>,
        upstream: Option<&[u8]>,
    ) {
        let path = match &self.uri {
            None => Cow::Borrowed("-"),
            Some(uri) if self.runtime.log.redact_query => redact_query(uri),
            Some(uri) => Cow::Borrowed(uri.path_and_query().map_or("/", |p| p.as_str())),
        };
        out.extend_from_slice(b"{\"timestamp\":\"");
        rfc3339(out, wall_time(now));
        // Request ids are made of characters that need no escaping (acceptable_request_id).
        out.extend_from_slice(b"\",\"log\":\"access\",\"request_id\":\"");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\"");
        out.extend_from_slice(b",\"client_ip\":\"");
        write_ip(out, self.client_ip);
        // A method is a token: nothing in it needs escaping.
        out.extend_from_slice(b"\",\"method\":\"");
        out.extend_from_slice(self.method.as_ref().map_or("-", Method::as_str).as_bytes());
        out.push(b'"');
        out.extend_from_slice(b",\"path\":");
        json_str(out, &path);
        out.extend_from_slice(b",\"route\":");
        match route {
            Some(r) => out.extend_from_slice(r),
            None => out.extend_from_slice(b"null"),
        }
        let bytes_in = self
            .body_stats
            .as_ref()
            .map_or(0, |s| s.bytes.load(Ordering::Relaxed));
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(number.format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes_in\":");
        out.extend_from_slice(number.format(bytes_in).as_bytes());
        out.extend_from_slice(b",\"bytes_out\":");
        out.extend_from_slice(number.format(self.bytes_out).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        write_millis(out, duration);
        out.extend_from_slice(b",\"upstream\":");
        match upstream {
            Some(u) => out.extend_from_slice(u),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_duration {
            Some(d) => write_millis(out, d),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(self.decision.as_str().as_bytes());
        out.extend_from_slice(b"\",\"completed\":");
        out.extend_from_slice(if completed { b"true}" } else { b"false}" });
    }
}

/// A duration in milliseconds with three decimals, formatted with integer arithmetic
/// (float formatting is a measurable part of a log line's cost).
fn write_millis(out: &mut Vec<u8>, duration: Duration) {
    let mut number = itoa::Buffer::new();
    let micros = number.format(duration.as_micros() as u64).as_bytes();
    if micros.len() > 3 {
        let (whole, decimals) = micros.split_at(micros.len() - 3);
        out.extend_from_slice(whole);
        out.push(b'.');
        out.extend_from_slice(decimals);
    } else {
        // "0.00" before one digit, "0.0" before two, "0." before three.
        out.extend_from_slice(&b"0.00"[..5 - micros.len()]);
        out.extend_from_slice(micros);
    }
}

/// A parameter name is logged only when it looks like one: a bare `?sk-live-...` could
/// well be a secret.
fn looks_like_a_name(name: &str) -> bool {
    let charset_ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'));
    let has_digits = name.bytes().any(|b| b.is_ascii_digit());
    charset_ok && name.len() <= 40 && (name.len() <= 16 || !has_digits)
}

/// The path with every query value replaced by `REDACTED` (names are kept: they say what
/// was asked without what was given).
pub fn redact_query(uri: &Uri) -> Cow<'_, str> {
    let Some(query) = uri.query() else {
        return Cow::Borrowed(uri.path());
    };
    let mut out = String::with_capacity(uri.path().len() + query.len() + 16);
    out.push_str(uri.path());
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, has_value) = match pair.split_once('=') {
            Some((name, _)) => (name, true),
            None => (pair, false),
        };
        out.push_str(if looks_like_a_name(name) {
            name
        } else {
            "REDACTED"
        });
        if has_value {
            out.push_str("=REDACTED");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_have_three_decimals() {
        let mut out = Vec::new();
        write_millis(&mut out, Duration::from_micros(1_051_548));
        out.push(b' ');
        write_millis(&mut out, Duration::from_nanos(7_900));
        out.push(b' ');
        write_millis(&mut out, Duration::ZERO);
        out.push(b' ');
        write_millis(&mut out, Duration::from_secs(86_400 * 365));
        for micros in [42, 420, 4_200] {
            out.push(b' ');
            write_millis(&mut out, Duration::from_micros(micros));
        }
        assert_eq!(
            out,
            b"1051.548 0.007 0.000 31536000000.000 0.042 0.420 4.200"
        );
    }

    #[test]
    fn query_values_are_redacted_names_kept() {
        let uri: Uri = "/v1/chat?api_key=sk-123&model=gpt&flag".parse().unwrap();
        assert_eq!(
            redact_query(&uri),
            "/v1/chat?api_key=REDACTED&model=REDACTED&flag"
        );
        let bare: Uri = "/x?sk-live-4f9a8b7c6d5e4f3a2b1c".parse().unwrap();
        assert_eq!(redact_query(&bare), "/x?REDACTED");
        let plain: Uri = "/v1/chat".parse().unwrap();
        assert_eq!(redact_query(&plain), "/v1/chat");
    }
}
