//! The admin listener: `/health`, `/health/live`, `/health/ready`, `/metrics`, and the
//! token-protected admin API (`/admin/bans`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use rampart_limit::{Ban, aggregate};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

use crate::access_log::rfc3339;
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
                        "in_flight": pool.counts_in_flight().then(|| {
                            s.in_flight.load(std::sync::atomic::Ordering::Relaxed)
                        }),
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
/// The admin API token: `RAMPART_ADMIN_TOKEN`, else `server.admin_token`.
fn admin_token(shared: &Shared) -> Option<String> {
    std::env::var("RAMPART_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| shared.runtime.load().config.server.admin_token.clone())
}

/// Checks `Authorization: Bearer <token>` in constant time; the refusal, if any.
fn refusal(shared: &Shared, req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let Some(token) = admin_token(shared) else {
        return Some(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "the admin API is off: set RAMPART_ADMIN_TOKEN or server.admin_token"}),
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if bool::from(given.ct_eq(token.as_bytes())) {
        None
    } else {
        Some(json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "a valid admin token is required (Authorization: Bearer ...)"}),
        ))
    }
}

fn timestamp(t: SystemTime) -> String {
    let mut out = Vec::new();
    rfc3339(&mut out, t);
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    ip: IpAddr,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(default)]
    reason: Option<String>,
}

/// `GET /admin/bans`, `POST /admin/bans`, `DELETE /admin/bans/<ip>`.
async fn bans(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(refused) = refusal(shared, &req) {
        return refused;
    }
    let prefix = shared.runtime.load().ipv6_prefix;
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.strip_prefix("/admin/bans")) {
        (Method::GET, Some("" | "/")) => {
            let list: Vec<serde_json::Value> = shared
                .bans
                .list()
                .into_iter()
                .map(|(ip, ban)| json!({"ip": ip.to_string(), "until": timestamp(ban.until), "reason": ban.reason}))
                .collect();
            json_response(StatusCode::OK, json!({"bans": list}))
        }
        (Method::POST, Some("" | "/")) => {
            let body = match Limited::new(req.into_body(), 16 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "the body could not be read (at most 16 KiB)"}),
                    );
                }
            };
            let new: NewBan = match serde_json::from_slice(&body) {
                Ok(n) => n,
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("expected {{\"ip\", \"duration\" (e.g. \"10m\"), \"reason\"}}: {e}")}),
                    );
                }
            };
            if new.duration.is_zero() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "duration must be above zero"}),
                );
            }
            let ip = aggregate(new.ip, prefix);
            let ban = Ban {
                until: SystemTime::now() + new.duration,
                reason: new
                    .reason
                    .unwrap_or_else(|| "banned by an administrator".into()),
            };
            let until = timestamp(ban.until);
            let reason = ban.reason.clone();
            crate::proxy::apply_ban(shared, ip, ban);
            json_response(
                StatusCode::CREATED,
                json!({"ip": ip.to_string(), "until": until, "reason": reason}),
            )
        }
        (Method::DELETE, Some(rest)) => {
            let Some(ip) = rest
                .strip_prefix('/')
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "DELETE /admin/bans/<ip>"}),
                );
            };
            let ip = aggregate(ip, prefix);
            let lifted = shared.bans.remove(ip);
            if let Some(redis) = shared.redis.clone()
                && let Err(e) = redis.publish_unban(ip).await
            {
                tracing::warn!(client_ip = %ip, error = %e, "unban not shared through redis");
            }
            if lifted {
                tracing::info!(client_ip = %ip, "ban lifted by an administrator");
                json_response(
                    StatusCode::OK,
                    json!({"ip": ip.to_string(), "lifted": true}),
                )
            } else {
                json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no ban in force for this address"}),
                )
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "GET or POST /admin/bans, DELETE /admin/bans/<ip>"}),
        ),
    }
}

async fn dispatch(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/admin/") {
        bans(&shared, req).await
    } else {
        route(&shared, &req)
    }
}

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
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(dispatch(shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}
