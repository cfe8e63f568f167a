//! The admin listener: `/health`, `/health/live`, `/health/ready` and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::server::Shared;

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn health(shared: &Shared) -> Response<Full<Bytes>> {
    let runtime = shared.runtime.load();
    let pools: serde_json::Map<String, serde_json::Value> = runtime
        .pools
        .values()
        .map(|pool| {
            let servers: Vec<serde_json::Value> = pool
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    json!({
                        "url": s.url,
                        "healthy": s.healthy(),
                        "breaker": s.breaker.state().as_str(),
                        "ejected": pool.outliers.is_ejected(i),
                        "available": pool.available(i),
                        "in_flight": s.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                    })
                })
                .collect();
            let state = if pool.is_up() { "up" } else { "down" };
            (
                pool.name.clone(),
                json!({
                    "state": state,
                    "breaker": pool.breaker.state().as_str(),
                    "servers": servers,
                }),
            )
        })
        .collect();
    let status = if runtime.all_pools_up() {
        "ok"
    } else {
        "degraded"
    };
    json_response(
        StatusCode::OK,
        json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": shared.started.elapsed().as_secs(),
            "pools": pools,
        }),
    )
}

fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    let runtime = shared.runtime.load();
    let down: Vec<&str> = runtime
        .pools
        .values()
        .filter(|p| !p.is_up())
        .map(|p| p.name.as_str())
        .collect();
    if down.is_empty() && !shared.shutdown.is_cancelled() {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "pools_down": down, "shutting_down": shared.shutdown.is_cancelled()}),
        )
    }
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "only GET and HEAD are served here"}),
        );
    }
    match req.uri().path() {
        "/health" => health(shared),
        "/health/live" => json_response(StatusCode::OK, json!({"status": "live"})),
        "/health/ready" => ready(shared),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not found; try /health, /health/live, /health/ready or /metrics"}),
        ),
    }
}

/// Serves the admin endpoints until shutdown (HTTP/1.1 only).
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let response = route(&shared, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}
