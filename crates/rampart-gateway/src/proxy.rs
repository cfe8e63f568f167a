//! The request path: route, check limits, answer CORS preflights, forward upstream with a
//! timeout, harden the response.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;

use crate::access_log::rfc3339;
use crate::body::{BodyStats, ClientBody, RequestBody, ResponseBody};
use crate::exchange::{Decision, Exchange};
use crate::headers::{
    ForwardedFields, RequestId, X_API_KEY, X_REQUEST_ID, field, remove_hop_by_hop,
};
use crate::metrics::Rejection;
use crate::runtime::{Fallback, Pool, Route, Runtime, strip_prefix};
use crate::server::{ConnInfo, RequestGuard, Shared, UpstreamTimer};
use crate::upstream::{SendFailure, UpstreamError, UpstreamResponse, idempotent};
use http_body_util::BodyExt;
use rampart_limit::{Access, Ban, EventKind, RequestKeys, Verdict, aggregate};
use rampart_resilience::{InFlight, Outcome, RetryOn};
use smallvec::SmallVec;
use std::time::Duration;

/// The host a request is for, without port and in lower case (copied only when it is not
/// already): the URI authority (HTTP/2, absolute-form) or the `Host` header. With it, the
/// header value to pass on as `X-Forwarded-Host`.
fn request_host<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Option<(Cow<'a, str>, Option<HeaderValue>)> {
    let lower = |host: &'a str| {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        }
    };
    if let Some(authority) = uri.authority() {
        let value = HeaderValue::from_str(authority.as_str()).ok();
        return Some((lower(authority.host()), value));
    }
    let value = field(headers, &header::HOST)?;
    let text = value.to_str().ok()?;
    let host = if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        &text[..rest.find(']').map_or(text.len(), |i| i + 2)]
    } else {
        text.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(text, |(h, _)| h)
    };
    Some((lower(host), Some(value.clone())))
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum()
}

enum BodyLength {
    Unknown,
    Exact(u64),
    Invalid,
}

fn content_length(headers: &HeaderMap) -> BodyLength {
    match field(headers, &header::CONTENT_LENGTH) {
        None => BodyLength::Unknown,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(BodyLength::Invalid, BodyLength::Exact),
    }
}

/// A response produced by the gateway itself: `{"error", "request_id"}` with the status.
fn reject(
    exchange: Box<Exchange>,
    status: StatusCode,
    decision: Decision,
    message: &str,
    close: bool,
) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "error": message,
        "request_id": exchange.request_id.as_str(),
    });
    reject_with(exchange, status, decision, body, close)
}

/// Like [`reject`], with a body of more fields than the error and the request id.
fn reject_with(
    mut exchange: Box<Exchange>,
    status: StatusCode,
    decision: Decision,
    body: serde_json::Value,
    close: bool,
) -> Response<ResponseBody> {
    let body = Bytes::from(body.to_string());
    let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if close {
        // The unread body would otherwise have to be drained first.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    exchange.status = status.as_u16();
    exchange.decision = decision;
    *response.body_mut() = ResponseBody::full(body, Some(exchange));
    response
}

/// The answer to a head refused before it could be read as a request (malformed, too
/// large, a transfer coding not implemented): the status with the usual JSON body, logged
/// and counted like every refusal. The connection closes after it.
pub fn refused_head(
    shared: &Shared,
    conn: &ConnInfo,
    error: rampart_h1::HeadError,
) -> Response<ResponseBody> {
    use rampart_h1::HeadError;
    let (status, reason, message) = match error {
        HeadError::TooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::headers_too_large,
            "request header fields too large",
        ),
        HeadError::Malformed(why) => (StatusCode::BAD_REQUEST, Rejection::bad_request, why),
        HeadError::UnsupportedCoding => (
            StatusCode::NOT_IMPLEMENTED,
            Rejection::bad_request,
            "transfer coding not implemented",
        ),
    };
    shared.metrics.rejected(reason);
    let exchange = Box::new(Exchange::new(
        Instant::now(),
        RequestId::new(),
        conn.peer.ip(),
        shared.runtime.load_full(),
        conn.tls,
    ));
    reject(exchange, status, Decision::Rejected(reason), message, true)
}

/// Handles one client request. Every error becomes a JSON response.
pub async fn handle(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    runtime: &Arc<Runtime>,
    timer: &mut UpstreamTimer,
    req: Request<ClientBody>,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let guard = conn.state.as_ref().map(RequestGuard::new);
    let (mut parts, body) = req.into_parts();
    let request_id = RequestId::from_request(field(&parts.headers, &X_REQUEST_ID));
    let peer_ip = conn.peer.ip();
    let client_ip = runtime.client_ip(peer_ip, &parts.headers);
    let (route_index, original_host) = {
        let host = request_host(&parts.uri, &parts.headers);
        let index = runtime.route_index(host.as_ref().map(|(h, _)| &**h), parts.uri.path());
        (index, host.and_then(|(_, value)| value))
    };
    let mut exchange = Box::new(Exchange {
        method: Some(parts.method.clone()),
        uri: Some(parts.uri.clone()),
        route: route_index,
        _guard: guard,
        ..Exchange::new(start, request_id, client_ip, runtime.clone(), conn.tls)
    });
    let tls = conn.tls;
    let rejected = |exchange: Box<Exchange>, status, reason: Rejection, message: &str, close| {
        shared.metrics.rejected(reason);
        reject(exchange, status, Decision::Rejected(reason), message, close)
    };

    let Some(route_index) = route_index else {
        return rejected(
            exchange,
            StatusCode::NOT_FOUND,
            Rejection::no_route,
            "no route for this request",
            false,
        );
    };
    let route = runtime.route_at(route_index);

    // Access lists, bans, rate limits.
    let client = aggregate(client_ip, runtime.ipv6_prefix);
    match runtime.access.check(client_ip) {
        Access::Denied => {
            return rejected(
                exchange,
                StatusCode::FORBIDDEN,
                Rejection::denied,
                "forbidden",
                false,
            );
        }
        Access::Trusted => {}
        Access::Normal => {
            if let Some(ban) = shared.bans.get(client) {
                shared.metrics.rejected(Rejection::banned);
                let mut until = Vec::new();
                rfc3339(&mut until, ban.until);
                let body = serde_json::json!({
                    "error": "banned",
                    "until": String::from_utf8_lossy(&until),
                    "request_id": exchange.request_id.as_str(),
                });
                return reject_with(
                    exchange,
                    StatusCode::FORBIDDEN,
                    Decision::Rejected(Rejection::banned),
                    body,
                    false,
                );
            }
            let headers = &parts.headers;
            let header = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
            let keys = RequestKeys {
                ip: client,
                api_key: route
                    .limiter
                    .keys_on_api_key()
                    .then(|| api_key(headers))
                    .flatten(),
                header: &header,
                route: &route.name,
            };
            match route
                .limiter
                .check_at(&keys, tokio::time::Instant::from_std(start))
                .await
            {
                Verdict::Allowed(info) => {
                    exchange.quota = info.filter(|_| runtime.rate_limit_headers);
                }
                Verdict::Limited {
                    info, retry_after, ..
                } => {
                    record_event(shared, runtime, client, EventKind::RateLimited, None);
                    exchange.quota = Some(info);
                    let mut response = rejected(
                        exchange,
                        StatusCode::TOO_MANY_REQUESTS,
                        Rejection::rate_limited,
                        "too many requests",
                        false,
                    );
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from(ceil_secs(retry_after)),
                    );
                    return response;
                }
                Verdict::Unavailable => {
                    let mut response = rejected(
                        exchange,
                        StatusCode::SERVICE_UNAVAILABLE,
                        Rejection::limit_unavailable,
                        "rate limit state unavailable",
                        false,
                    );
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return response;
                }
            }
        }
    }

    if parts.headers.len() > route.limits.max_headers
        || header_bytes(&parts.headers) > route.limits.max_header_bytes
    {
        return rejected(
            exchange,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::headers_too_large,
            "request header fields too large",
            true,
        );
    }

    match route.cors.preflight(&parts) {
        crate::cors::PreflightDecision::NotPreflight => {}
        crate::cors::PreflightDecision::Refused(why) => {
            return rejected(
                exchange,
                StatusCode::FORBIDDEN,
                Rejection::cors_refused,
                why,
                false,
            );
        }
        crate::cors::PreflightDecision::Allowed(cors_headers) => {
            exchange.status = StatusCode::NO_CONTENT.as_u16();
            exchange.decision = Decision::Preflight;
            let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = cors_headers;
            *response.body_mut() = ResponseBody::full(Bytes::new(), Some(exchange));
            return response;
        }
    }

    let limit = route.limits.max_body_bytes;
    match content_length(&parts.headers) {
        BodyLength::Exact(n) if n > limit => {
            return rejected(
                exchange,
                StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::body_too_large,
                "request body too large",
                true,
            );
        }
        BodyLength::Invalid => {
            return rejected(
                exchange,
                StatusCode::BAD_REQUEST,
                Rejection::bad_request,
                "invalid Content-Length",
                true,
            );
        }
        _ => {}
    }

    // Inspection: the path, query, chosen headers and, for text types, the body.
    let key = crate::inspect::PolicyKey {
        generation: runtime.generation,
        route: route_index,
    };
    let inspected = crate::inspect::inspect(
        &route.inspection,
        key,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
        limit,
        route.limits.upstream_timeout,
    )
    .await;
    let body = match inspected {
        Ok(outcome) => {
            if !outcome.report.is_empty() {
                let blocks = route.inspection.blocks(&outcome.report);
                let block = blocks && route.inspection.mode() == rampart_guard::Mode::Block;
                security_event(&exchange, &route.name, &outcome.report, blocks, block);
                if blocks {
                    shared.metrics.inspection(block);
                }
                if block {
                    record_event(shared, runtime, client, EventKind::InspectionBlock, None);
                    shared.metrics.rejected(Rejection::inspection_blocked);
                    let body = serde_json::json!({
                        "error": "request blocked by inspection",
                        "request_id": exchange.request_id.as_str(),
                        "rules": crate::inspect::rules_json(&outcome.report, false),
                    });
                    let unread = matches!(
                        outcome.body,
                        crate::inspect::InspectedBody::Untouched(_)
                            | crate::inspect::InspectedBody::Prefix(..)
                    );
                    return reject_with(
                        exchange,
                        StatusCode::FORBIDDEN,
                        Decision::Rejected(Rejection::inspection_blocked),
                        body,
                        unread,
                    );
                }
            }
            outcome.body
        }
        Err(crate::inspect::Refusal::TooLarge) => {
            return rejected(
                exchange,
                StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::body_too_large,
                "request body too large to inspect",
                true,
            );
        }
        Err(crate::inspect::Refusal::Unparsable(why)) => {
            return rejected(
                exchange,
                StatusCode::BAD_REQUEST,
                Rejection::body_unparsable,
                &why.to_string(),
                false,
            );
        }
        Err(crate::inspect::Refusal::Unreadable { timed_out }) => {
            let (status, message) = if timed_out {
                (
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body was not received in time",
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            };
            return rejected(exchange, status, Rejection::bad_request, message, true);
        }
    };

    // HTTP/1.1 to the upstream: the request target in origin form, rebuilt only when it
    // is not that already or loses the route's prefix.
    let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
    let uri = if origin_form && !route.strip_prefix {
        None
    } else {
        let path = parts.uri.path();
        let path = if route.strip_prefix {
            strip_prefix(route, path)
        } else {
            path
        };
        let path_and_query = match parts.uri.query() {
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path),
        };
        let Ok(path_and_query) = path_and_query else {
            return rejected(
                exchange,
                StatusCode::BAD_REQUEST,
                Rejection::bad_request,
                "invalid request target",
                false,
            );
        };
        Some(Uri::from(path_and_query))
    };
    let origin = field(&parts.headers, &header::ORIGIN).cloned();
    remove_hop_by_hop(&mut parts.headers);
    // The gateway answers `Expect: 100-continue` itself, when it first reads the body.
    if field(&parts.headers, &header::EXPECT).is_some() {
        parts.headers.remove(header::EXPECT);
    }
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_11;
    // A body inspection read is sent as read; small bodies are buffered so that a retry can
    // send them again. No body, no byte counts.
    let outgoing = match body {
        crate::inspect::InspectedBody::Untouched(body) if body.is_end_stream() => {
            Outgoing::Replayable(Bytes::new())
        }
        body => {
            let stats = Arc::new(BodyStats::default());
            exchange.body_stats = Some(stats.clone());
            match body {
                crate::inspect::InspectedBody::Complete(bytes) => {
                    if bytes.len() as u64 > limit {
                        return rejected(
                            exchange,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            Rejection::body_too_large,
                            "request body too large",
                            true,
                        );
                    }
                    stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
                    Outgoing::Replayable(bytes)
                }
                crate::inspect::InspectedBody::Prefix(prefix, rest) => Outgoing::Streaming(Some(
                    RequestBody::prefixed(prefix, rest, limit, stats.clone()),
                )),
                crate::inspect::InspectedBody::Untouched(body) => match body.size_hint().exact() {
                    Some(0) => Outgoing::Replayable(Bytes::new()),
                    Some(n)
                        if n <= route.retry.max_buffered_body && route.retry.max_attempts > 1 =>
                    {
                        let reading = Box::pin(body.collect());
                        match tokio::time::timeout(route.limits.upstream_timeout, reading).await {
                            Ok(Ok(collected)) => {
                                let bytes = collected.to_bytes();
                                stats.bytes.store(bytes.len() as u64, Ordering::Relaxed);
                                Outgoing::Replayable(bytes)
                            }
                            Ok(Err(_)) => {
                                return rejected(
                                    exchange,
                                    StatusCode::BAD_REQUEST,
                                    Rejection::bad_request,
                                    "the request body could not be read",
                                    true,
                                );
                            }
                            Err(_) => {
                                return rejected(
                                    exchange,
                                    StatusCode::REQUEST_TIMEOUT,
                                    Rejection::bad_request,
                                    "the request body was not received in time",
                                    true,
                                );
                            }
                        }
                    }
                    _ => Outgoing::Streaming(Some(RequestBody::streaming(
                        body,
                        limit,
                        stats.clone(),
                    ))),
                },
            }
        }
    };

    let exchange_fields = &mut *exchange;
    let mut fields = ForwardedFields::new(
        &parts.headers,
        peer_ip,
        runtime.is_trusted(peer_ip),
        tls,
        original_host.as_ref(),
        &exchange_fields.request_id,
    );
    let forwarded = forward(
        route,
        timer,
        &parts,
        outgoing,
        &mut fields,
        &mut exchange_fields.upstream,
        &mut exchange_fields.upstream_duration,
    )
    .await;
    drop(fields);
    rampart_h1::recycle_header_map(std::mem::take(&mut parts.headers));
    let response = match forwarded {
        Ok(exchanged) => exchanged,
        Err(failure) => {
            let over_limit = exchange.body_stats.as_ref();
            if over_limit.is_some_and(|s| s.over_limit.load(Ordering::Relaxed)) {
                return rejected(
                    exchange,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Rejection::body_too_large,
                    "request body too large",
                    true,
                );
            }
            let (status, reason, message) = match failure {
                Failure::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    Rejection::upstream_timeout,
                    "upstream timed out",
                ),
                Failure::Unavailable => (
                    StatusCode::BAD_GATEWAY,
                    Rejection::upstream_unavailable,
                    "upstream unavailable",
                ),
                Failure::CircuitOpen(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Rejection::circuit_open,
                    "no upstream server available",
                ),
            };
            shared.metrics.rejected(reason);
            if let Some(fallback) = &route.fallback {
                return fallback_response(exchange, fallback);
            }
            let mut response = reject(exchange, status, Decision::Rejected(reason), message, false);
            if let Failure::CircuitOpen(retry_after) = failure {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            return response;
        }
    };
    // The upstream's fields stay as they came, in the body, to be passed on by the writer;
    // the map holds only what the gateway adds here.
    let rampart_h1::ClientResponse { head, body } = response;
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    route.cors.apply(origin.as_ref(), response.headers_mut());
    exchange.status = head.status.as_u16();
    if exchange.status >= 400 {
        record_event(
            shared,
            runtime,
            client,
            EventKind::UpstreamStatus,
            Some(exchange.status),
        );
    }
    response.map(|()| ResponseBody::upstream(body, head.fields, exchange))
}

/// Whole seconds, rounded up, at least 1 (for `Retry-After`).
fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The API key a request carries: `Authorization: Bearer …` or `X-API-Key`.
fn api_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = field(headers, &header::AUTHORIZATION) {
        let b = v.as_bytes();
        if b.len() > 7 && rampart_h1::eq_lowercase(&b[..7], b"bearer ") {
            return Some(&b[7..]);
        }
    }
    field(headers, &X_API_KEY).map(HeaderValue::as_bytes)
}

/// Feeds the ban engine; a ban it earns is enforced here at once and, with Redis,
/// announced to every replica.
fn record_event(
    shared: &Arc<Shared>,
    runtime: &Runtime,
    client: std::net::IpAddr,
    kind: EventKind,
    status: Option<u16>,
) {
    if let Some(ban) = runtime.ban_engine.record(client, kind, status) {
        apply_ban(shared, client, ban);
    }
}

/// One security event per inspected request with findings: what matched, where, and what was
/// done. Excerpts are short and never whole values.
fn security_event(
    exchange: &Exchange,
    route: &str,
    report: &rampart_guard::Report,
    over_threshold: bool,
    blocked: bool,
) {
    let action = match (over_threshold, blocked) {
        (true, true) => "blocked",
        (true, false) => "detected",
        _ => "below_threshold",
    };
    tracing::warn!(
        target: "rampart::security",
        event = "inspection",
        action,
        request_id = exchange.request_id.as_str(),
        client = %exchange.client_ip,
        route,
        score = report.score(),
        rules = %crate::inspect::rules_json(report, true),
        "request inspection findings"
    );
}

/// Enforces a ban here and announces it to the other replicas.
pub fn apply_ban(shared: &Arc<Shared>, client: std::net::IpAddr, ban: Ban) {
    shared.metrics.bans.inc();
    let mut until = Vec::new();
    rfc3339(&mut until, ban.until);
    tracing::warn!(
        client_ip = %client,
        until = %String::from_utf8_lossy(&until),
        reason = %ban.reason,
        "client banned"
    );
    shared.bans.insert(client, ban.clone());
    if let Some(redis) = shared.redis.clone() {
        tokio::spawn(async move {
            if let Err(e) = redis.publish_ban(client, &ban).await {
                tracing::warn!(client_ip = %client, error = %e, "ban not shared through redis");
            }
        });
    }
}

/// The request body as the attempts see it.
enum Outgoing {
    /// Buffered (or empty): every attempt gets a copy.
    Replayable(Bytes),
    /// Streamed: only the first attempt can have it.
    Streaming(Option<RequestBody>),
}

impl Outgoing {
    fn take(&mut self) -> Option<RequestBody> {
        match self {
            Outgoing::Replayable(bytes) => Some(RequestBody::buffered(bytes.clone())),
            Outgoing::Streaming(body) => body.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Outgoing::Replayable(_))
    }
}

/// Why no upstream response could be had.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout,
    Unavailable,
    /// No server could take the request; the earliest a breaker lets calls through again.
    CircuitOpen(Duration),
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptError {
    Connect,
    Reset,
    Timeout,
    Status,
}

/// The servers that can take a request now, preferring those not tried yet. When no
/// server passes its health checks, the checks may be what is wrong (as Envoy's panic
/// mode assumes): servers not ejected and not cut off by their breaker are tried anyway.
fn candidates(pool: &Pool, tried: &[usize]) -> SmallVec<[usize; 8]> {
    let mut available: SmallVec<[usize; 8]> = (0..pool.servers.len())
        .filter(|&i| pool.available(i))
        .collect();
    if available.is_empty() {
        available = (0..pool.servers.len())
            .filter(|&i| pool.reachable_ignoring_health(i))
            .collect();
    }
    if !tried.is_empty() && available.iter().any(|i| !tried.contains(i)) {
        available.retain(|i| !tried.contains(i));
    }
    available
}

/// The earliest time a server of the pool may take calls again.
fn retry_after(pool: &Pool) -> Duration {
    pool.servers
        .iter()
        .filter_map(|s| s.breaker.retry_after())
        .min()
        .unwrap_or(Duration::from_secs(1))
}

/// Sends the request upstream: picks a server (balancer, breakers, health, ejection),
/// retries what the route allows within its budget and the overall deadline, each retry
/// to another server when there is one, and records every outcome.
async fn forward<'a>(
    route: &'a Route,
    timer: &mut UpstreamTimer,
    parts: &http::request::Parts,
    mut outgoing: Outgoing,
    fields: &mut ForwardedFields<'a>,
    upstream: &mut Option<usize>,
    upstream_duration: &mut Option<Duration>,
) -> Result<UpstreamResponse, Failure> {
    let pool = &*route.pool;
    let retry = &route.retry;
    let preserved_host = fields.original_host.filter(|_| route.preserve_host);
    // One clock reading per attempt start and end: they give the deadlines, durations and
    // the retry budget's second.
    let started = tokio::time::Instant::now();
    route.budget.deposit(started);
    let deadline = started + route.limits.upstream_timeout;
    let pool_permit = pool
        .breaker
        .try_acquire()
        .map_err(|open| Failure::CircuitOpen(open.retry_after))?;
    let idempotent = idempotent(&parts.method);
    let mut tried: Vec<usize> = Vec::new();
    let mut unsent: Option<RequestBody> = None;
    let mut attempt = 0;
    let mut failure = Failure::Unavailable;
    let mut spent = Duration::ZERO;
    // Bounded: each pass either makes an attempt or marks a server tried.
    for _ in 0..(retry.max_attempts as usize + pool.servers.len()) {
        let picked = pool.balancer.pick(&candidates(pool, &tried), |i| {
            pool.servers[i].in_flight.load(Ordering::Relaxed)
        });
        let Some(index) = picked else {
            if attempt == 0 {
                drop(pool_permit);
                return Err(Failure::CircuitOpen(retry_after(pool)));
            }
            break;
        };
        let server = &pool.servers[index];
        let Ok(permit) = server.breaker.try_acquire() else {
            tried.push(index);
            continue;
        };
        attempt += 1;
        *upstream = Some(index);
        let _in_flight = pool
            .counts_in_flight()
            .then(|| InFlight::start(&server.in_flight));
        let Some(body) = unsent.take().or_else(|| outgoing.take()) else {
            break;
        };
        fields.host = Some(preserved_host.unwrap_or(&server.host_header));

        let now = if attempt == 1 {
            started
        } else {
            tokio::time::Instant::now()
        };
        let try_deadline = retry
            .per_try_timeout
            .map_or(deadline, |t| (now + t).min(deadline));
        // Pinned here, so that the timer's futures carry a pointer, not the whole send.
        let sending = std::pin::pin!(server.endpoint.send(parts, body, &*fields, now.into_std()));
        let result = timer.within(try_deadline, sending).await;
        let finished = tokio::time::Instant::now();
        let took = finished - now;
        *upstream_duration = Some(took);
        spent = if attempt == 1 {
            took
        } else {
            finished - started
        };
        let outcome = |failed: bool| Outcome {
            failure: failed,
            duration: spent,
        };
        let error = match result {
            Some(Ok(response)) => {
                let status = response.head.status.as_u16();
                let failed = pool.failure.status_fails(status);
                permit.record(outcome(failed));
                pool.record(index, failed);
                let retry_it = retry.retries_status(status) && idempotent && outgoing.replayable();
                if !retry_it || !may_retry(route, attempt, deadline) {
                    pool_permit.record(outcome(failed));
                    return Ok(response);
                }
                AttemptError::Status
            }
            Some(Err(SendFailure {
                error,
                unsent: back,
            })) => {
                let kind = match error {
                    UpstreamError::Connect(_) => AttemptError::Connect,
                    UpstreamError::Exchange(_) => AttemptError::Reset,
                };
                tracing::debug!(upstream = %server.url, error = %error, "upstream attempt failed");
                let counts = match kind {
                    AttemptError::Connect => pool.failure.connect,
                    _ => pool.failure.reset,
                };
                permit.record(outcome(counts));
                pool.record(index, counts);
                unsent = back;
                failure = Failure::Unavailable;
                kind
            }
            None => {
                permit.record(outcome(pool.failure.timeout));
                pool.record(index, pool.failure.timeout);
                failure = Failure::Timeout;
                AttemptError::Timeout
            }
        };
        tried.push(index);
        let allowed = match error {
            // Nothing was sent: safe for any method, as long as the request came back.
            AttemptError::Connect => retry.on.contains(&RetryOn::Connect) && unsent.is_some(),
            AttemptError::Reset => {
                retry.on.contains(&RetryOn::Reset) && idempotent && outgoing.replayable()
            }
            AttemptError::Timeout => {
                retry.on.contains(&RetryOn::Timeout) && idempotent && outgoing.replayable()
            }
            // Checked above, together with the budget.
            AttemptError::Status => true,
        };
        if error != AttemptError::Status && (!allowed || !may_retry(route, attempt, deadline)) {
            break;
        }
        route.metrics.retries.inc();
        let pause = retry.backoff(attempt);
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if pause >= remaining {
            failure = Failure::Timeout;
            break;
        }
        tokio::time::sleep(pause).await;
    }
    pool_permit.record(Outcome {
        failure: true,
        duration: spent,
    });
    Err(failure)
}

/// Whether one more attempt is allowed: attempts left, time left, and the budget.
fn may_retry(route: &Route, attempt: u32, deadline: tokio::time::Instant) -> bool {
    let now = tokio::time::Instant::now();
    if attempt >= route.retry.max_attempts || now >= deadline {
        return false;
    }
    if route.budget.try_withdraw(now) {
        true
    } else {
        route.metrics.budget_exhausted.inc();
        false
    }
}

/// The route's static answer, when no upstream server could take the request.
fn fallback_response(mut exchange: Box<Exchange>, fallback: &Fallback) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
    *response.status_mut() = fallback.status;
    *response.headers_mut() = fallback.headers.clone();
    exchange.status = fallback.status.as_u16();
    exchange.decision = Decision::Fallback;
    *response.body_mut() = ResponseBody::full(fallback.body.clone(), Some(exchange));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_without_port() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/x".parse().unwrap();
        h.insert(
            header::HOST,
            HeaderValue::from_static("API.example.com:8080"),
        );
        assert_eq!(request_host(&uri, &h).unwrap().0, "api.example.com");
        h.insert(header::HOST, HeaderValue::from_static("[::1]:8080"));
        assert_eq!(request_host(&uri, &h).unwrap().0, "[::1]");
        let abs: Uri = "https://h2.example/x".parse().unwrap();
        assert_eq!(request_host(&abs, &h).unwrap().0, "h2.example");
    }
}
