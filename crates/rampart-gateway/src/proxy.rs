//! The request path: route, check limits, answer CORS preflights, forward upstream with a
//! timeout, harden the response.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::body::{BodyStats, RequestBody, ResponseBody};
use crate::exchange::{Decision, Exchange};
use crate::headers::{
    X_REQUEST_ID, acceptable_request_id, new_request_id, remove_hop_by_hop, set_forwarded,
};
use crate::metrics::Rejection;
use crate::runtime::{Runtime, strip_prefix};
use crate::server::{ConnInfo, RequestGuard, Shared};
use crate::upstream::UpstreamError;

/// The host a request is for, without port: the URI authority (HTTP/2, absolute-form) or
/// the `Host` header.
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<(String, Option<HeaderValue>)> {
    if let Some(authority) = uri.authority() {
        let value = HeaderValue::from_str(authority.as_str()).ok();
        return Some((authority.host().to_ascii_lowercase(), value));
    }
    let value = headers.get(header::HOST)?;
    let text = value.to_str().ok()?;
    let host = if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        &text[..rest.find(']').map_or(text.len(), |i| i + 2)]
    } else {
        text.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(text, |(h, _)| h)
    };
    Some((host.to_ascii_lowercase(), Some(value.clone())))
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
    match headers.get(header::CONTENT_LENGTH) {
        None => BodyLength::Unknown,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(BodyLength::Invalid, BodyLength::Exact),
    }
}

/// Adds the headers every response carries: the request id, the route's security headers
/// (or the global ones when no route matched).
fn finish_headers(
    headers: &mut HeaderMap,
    runtime: &Runtime,
    route: Option<usize>,
    request_id: &HeaderValue,
    tls: bool,
) {
    match route {
        Some(i) => runtime.route_at(i).security_headers.apply(headers, tls),
        None => runtime.default_headers.apply(headers, tls),
    }
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// A response produced by the gateway itself: `{"error", "request_id"}` with the status.
fn reject(
    mut exchange: Box<Exchange>,
    tls: bool,
    status: StatusCode,
    decision: Decision,
    message: &str,
    close: bool,
) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "error": message,
        "request_id": exchange.request_id.to_str().unwrap_or("-"),
    });
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
    finish_headers(
        headers,
        &exchange.runtime,
        exchange.route,
        &exchange.request_id,
        tls,
    );
    exchange.status = status.as_u16();
    exchange.decision = decision;
    *response.body_mut() = ResponseBody::full(body, Some(exchange));
    response
}

/// Handles one client request. Never fails: every error becomes a JSON response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let guard = RequestGuard::new(&conn.state);
    let runtime = shared.runtime.load_full();
    let (mut parts, body) = req.into_parts();
    let request_id = parts
        .headers
        .get(X_REQUEST_ID)
        .filter(|v| acceptable_request_id(v))
        .cloned()
        .unwrap_or_else(new_request_id);
    let peer_ip = conn.peer.ip();
    let client_ip = runtime.client_ip(peer_ip, &parts.headers);
    let host = request_host(&parts.uri, &parts.headers);
    let route_index = runtime.route_index(host.as_ref().map(|(h, _)| h.as_str()), parts.uri.path());
    let mut exchange = Box::new(Exchange {
        start,
        request_id,
        client_ip,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        runtime: runtime.clone(),
        route: route_index,
        status: 0,
        decision: Decision::Proxied,
        body_stats: None,
        bytes_out: 0,
        upstream: None,
        upstream_duration: None,
        _guard: guard,
    });
    let tls = conn.tls;
    let rejected = |exchange: Box<Exchange>, status, reason: Rejection, message: &str, close| {
        shared.metrics.rejected(reason);
        reject(
            exchange,
            tls,
            status,
            Decision::Rejected(reason),
            message,
            close,
        )
    };

    let Some(route_index) = route_index else {
        return Ok(rejected(
            exchange,
            StatusCode::NOT_FOUND,
            Rejection::no_route,
            "no route for this request",
            false,
        ));
    };
    let route = runtime.route_at(route_index);

    if parts.headers.len() > route.limits.max_headers
        || header_bytes(&parts.headers) > route.limits.max_header_bytes
    {
        return Ok(rejected(
            exchange,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Rejection::headers_too_large,
            "request header fields too large",
            true,
        ));
    }

    match route.cors.preflight(&parts) {
        crate::cors::PreflightDecision::NotPreflight => {}
        crate::cors::PreflightDecision::Refused(why) => {
            return Ok(rejected(
                exchange,
                StatusCode::FORBIDDEN,
                Rejection::cors_refused,
                why,
                false,
            ));
        }
        crate::cors::PreflightDecision::Allowed(cors_headers) => {
            exchange.status = StatusCode::NO_CONTENT.as_u16();
            exchange.decision = Decision::Preflight;
            let mut response = Response::new(ResponseBody::full(Bytes::new(), None));
            *response.status_mut() = StatusCode::NO_CONTENT;
            *response.headers_mut() = cors_headers;
            finish_headers(
                response.headers_mut(),
                &runtime,
                Some(route_index),
                &exchange.request_id,
                tls,
            );
            *response.body_mut() = ResponseBody::full(Bytes::new(), Some(exchange));
            return Ok(response);
        }
    }

    let limit = route.limits.max_body_bytes;
    match content_length(&parts.headers) {
        BodyLength::Exact(n) if n > limit => {
            return Ok(rejected(
                exchange,
                StatusCode::PAYLOAD_TOO_LARGE,
                Rejection::body_too_large,
                "request body too large",
                true,
            ));
        }
        BodyLength::Invalid => {
            return Ok(rejected(
                exchange,
                StatusCode::BAD_REQUEST,
                Rejection::bad_request,
                "invalid Content-Length",
                true,
            ));
        }
        _ => {}
    }

    // The upstream request.
    let server_index = route.pool.pick();
    let server = &route.pool.servers[server_index];
    exchange.upstream = Some(server_index);
    let path_and_query = {
        let path = parts.uri.path();
        let path = if route.strip_prefix {
            strip_prefix(route, path)
        } else {
            path
        };
        match parts.uri.query() {
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
            None => PathAndQuery::try_from(path),
        }
    };
    // HTTP/1.1 to the upstream: the request target in origin form.
    let uri = path_and_query.ok().map(Uri::from);
    let Some(uri) = uri else {
        return Ok(rejected(
            exchange,
            StatusCode::BAD_REQUEST,
            Rejection::bad_request,
            "invalid request target",
            false,
        ));
    };
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let original_host = host.and_then(|(_, value)| value);
    remove_hop_by_hop(&mut parts.headers);
    set_forwarded(
        &mut parts.headers,
        peer_ip,
        runtime.is_trusted(peer_ip),
        tls,
        original_host.as_ref(),
    );
    parts
        .headers
        .insert(X_REQUEST_ID, exchange.request_id.clone());
    match (route.preserve_host, original_host) {
        (true, Some(h)) => {
            parts.headers.insert(header::HOST, h);
        }
        _ => {
            parts
                .headers
                .insert(header::HOST, server.host_header.clone());
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let stats = Arc::new(BodyStats::default());
    exchange.body_stats = Some(stats.clone());
    let upstream_request = Request::from_parts(parts, RequestBody::new(body, limit, stats.clone()));

    let sent = Instant::now();
    let result = tokio::time::timeout(
        route.limits.upstream_timeout,
        server.endpoint.send(upstream_request),
    )
    .await;
    exchange.upstream_duration = Some(sent.elapsed());
    let (response, conn) = match result {
        Err(_elapsed) => {
            return Ok(rejected(
                exchange,
                StatusCode::GATEWAY_TIMEOUT,
                Rejection::upstream_timeout,
                "upstream timed out",
                false,
            ));
        }
        Ok(Err(e)) => {
            if stats.over_limit.load(Ordering::Relaxed) {
                return Ok(rejected(
                    exchange,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Rejection::body_too_large,
                    "request body too large",
                    true,
                ));
            }
            if matches!(e, UpstreamError::Connect(_)) {
                server.set_reachable(false);
            }
            tracing::debug!(request_id = ?exchange.request_id, upstream = %server.url, error = %e, "upstream request failed");
            return Ok(rejected(
                exchange,
                StatusCode::BAD_GATEWAY,
                Rejection::upstream_unavailable,
                "upstream unavailable",
                false,
            ));
        }
        Ok(Ok(exchanged)) => exchanged,
    };
    server.set_reachable(true);
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    route.cors.apply(origin.as_ref(), &mut parts.headers);
    finish_headers(
        &mut parts.headers,
        &runtime,
        Some(route_index),
        &exchange.request_id,
        tls,
    );
    exchange.status = parts.status.as_u16();
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, conn, exchange),
    ))
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
