//! The compiled form of a [`Config`]: what the request path reads. A reload builds a new
//! `Runtime` and swaps it in; requests in flight keep the one they started with.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper::server::conn::http2;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use prometheus_client::metrics::gauge::Gauge;
use tokio_rustls::TlsAcceptor;

use crate::access_log::{AccessLog, json_string};
use crate::config::{
    Config, FailureConfig, FallbackConfig, LimitsConfig, LogConfig, parse_server_url,
};
use crate::cors::Cors;
use crate::headers::SecurityHeaders;
use crate::metrics::{Metrics, RouteMetrics, ServerMetrics};
use crate::upstream::{Endpoint, tls_client_config};
use rampart_limit::{AccessConfig, BanEngine, LimiterStats, RateLimitConfig, RateLimiter, Redis};
use rampart_resilience::{
    Balancer, BreakerConfig, CircuitBreaker, Ejection, HealthCheckConfig, HealthState,
    OutlierDetector, RetryBudget, RetryConfig, State,
};

pub struct Runtime {
    pub config: Config,
    /// Tells this runtime from every other one built in this process (reloads).
    pub generation: u64,
    routes: Vec<Route>,
    pub pools: BTreeMap<String, Arc<Pool>>,
    trusted_proxies: Vec<IpNet>,
    pub log: LogConfig,
    /// Headers for answers given before a route matched (404s).
    pub default_headers: SecurityHeaders,
    /// TLS termination, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Connection settings derived from the limits.
    pub h1: rampart_h1::ServerConfig,
    pub h2: http2::Builder<TokioExecutor>,
    /// Where access log lines go; `None` when `log.access_log` is off.
    pub access_log: Option<AccessLog>,
    pub access: AccessConfig,
    pub ban_engine: BanEngine,
    /// IPv6 clients are limited and banned by this prefix.
    pub ipv6_prefix: u8,
    /// Whether allowed responses carry the `RateLimit-*` headers.
    pub rate_limit_headers: bool,
}

/// What the limiters of a runtime share with the rest of the process.
pub struct LimitContext<'a> {
    pub redis: Option<&'a Arc<Redis>>,
    pub stats: &'a Arc<LimiterStats>,
}

pub struct Route {
    pub name: Arc<str>,
    /// The name as a JSON string, for the access log.
    pub log_name: Box<[u8]>,
    prefix: String,
    host: Option<String>,
    pub pool: Arc<Pool>,
    pub strip_prefix: bool,
    pub preserve_host: bool,
    pub limits: LimitsConfig,
    pub security_headers: SecurityHeaders,
    pub cors: Cors,
    pub metrics: RouteMetrics,
    pub retry: RetryConfig,
    pub budget: RetryBudget,
    pub fallback: Option<Fallback>,
    pub limiter: Arc<RateLimiter>,
    pub inspection: rampart_guard::Policy,
}

/// A route's static answer for when no upstream server can take a request.
pub struct Fallback {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Pool {
    pub name: String,
    pub servers: Vec<Server>,
    pub balancer: Balancer,
    pub breaker: CircuitBreaker,
    pub outliers: OutlierDetector,
    pub failure: FailureConfig,
    pub health_check: HealthCheckConfig,
}

pub struct Server {
    pub url: String,
    /// The URL as a JSON string, for the access log.
    pub log_url: Box<[u8]>,
    pub endpoint: Endpoint,
    pub host_header: HeaderValue,
    /// From active checks.
    pub health: HealthState,
    pub breaker: CircuitBreaker,
    /// Requests outstanding, for the balancer to compare servers by; counted only in
    /// pools of two or more ([`Pool::counts_in_flight`]).
    pub in_flight: AtomicUsize,
    pub metrics: ServerMetrics,
}

impl Server {
    pub fn healthy(&self) -> bool {
        self.health.is_healthy()
    }
}

impl Pool {
    /// Whether requests in flight are counted: a pool of one server has nothing to
    /// compare them with, and its requests skip the two atomic operations.
    pub fn counts_in_flight(&self) -> bool {
        self.servers.len() > 1
    }

    /// Whether server `i` can take a request now: healthy, not ejected, breaker not open.
    pub fn available(&self, i: usize) -> bool {
        self.servers[i].healthy()
            && !self.outliers.is_ejected(i)
            && self.servers[i].breaker.would_allow()
    }

    /// Whether server `i` could take a request if its health checks were ignored.
    pub fn reachable_ignoring_health(&self, i: usize) -> bool {
        !self.outliers.is_ejected(i) && self.servers[i].breaker.would_allow()
    }

    /// Whether any server can take a request now.
    pub fn is_up(&self) -> bool {
        (0..self.servers.len()).any(|i| self.available(i))
    }

    /// Records the outcome of a call to server `i` for its breaker's sibling signals:
    /// outlier ejection and the server metrics.
    pub fn record(&self, i: usize, failure: bool) {
        let server = &self.servers[i];
        server.metrics.requests.inc();
        if failure {
            server.metrics.failures.inc();
        }
        if let Ejection::Ejected(duration) = self.outliers.record(i, failure) {
            server.metrics.ejections.inc();
            tracing::warn!(
                pool = %self.name,
                upstream = %server.url,
                ejected_for_ms = duration.as_millis() as u64,
                "upstream server ejected after consecutive failures"
            );
        }
    }
}

/// A breaker whose state changes are logged and exported as a gauge.
fn observed_breaker(config: &BreakerConfig, gauge: Gauge, what: String) -> CircuitBreaker {
    gauge.set(State::Closed as i64);
    CircuitBreaker::with_listener(
        config.clone(),
        Some(Box::new(move |from: State, to: State| {
            gauge.set(to as i64);
            tracing::warn!(
                breaker = %what,
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker state changed"
            );
        })),
    )
}

impl Runtime {
    /// Compiles a validated config. Server health starts as unknown (unhealthy) until the
    /// first check; `previous` carries it over for servers that stay.
    pub fn build(
        config: Config,
        tls: Option<TlsAcceptor>,
        metrics: &Metrics,
        previous: Option<&Runtime>,
        limits: LimitContext<'_>,
    ) -> Result<Runtime, String> {
        config.validate().map_err(|e| e.message)?;
        let global_limiter = Arc::new(RateLimiter::new(
            &config.rate_limit,
            "global",
            limits.redis.cloned(),
            limits.stats.clone(),
        ));
        let upstream_tls = tls_client_config().map_err(|e| format!("upstream TLS: {e}"))?;
        let connect_timeout = config.server.upstream_connect_timeout;
        let mut pools = BTreeMap::new();
        for (name, pool_config) in &config.upstreams {
            let mut servers = Vec::with_capacity(pool_config.servers.len());
            for url in &pool_config.servers {
                let uri = parse_server_url(url)?;
                let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                    return Err(format!("`{url}` needs a scheme and a host"));
                };
                let was_healthy = previous
                    .and_then(|p| p.pools.get(name))
                    .and_then(|p| p.servers.iter().find(|s| &s.url == url))
                    .is_some_and(Server::healthy);
                let server_metrics = metrics.server(name, url);
                server_metrics.up.set(i64::from(was_healthy));
                servers.push(Server {
                    url: url.clone(),
                    log_url: json_string(url),
                    endpoint: Endpoint::new(scheme, authority, &upstream_tls, connect_timeout)?,
                    host_header: HeaderValue::from_str(authority.as_str())
                        .map_err(|e| format!("`{url}`: {e}"))?,
                    health: HealthState::new(was_healthy),
                    breaker: observed_breaker(
                        &pool_config.breaker,
                        server_metrics.breaker_state.clone(),
                        url.clone(),
                    ),
                    in_flight: AtomicUsize::new(0),
                    metrics: server_metrics,
                });
            }
            let outliers = OutlierDetector::new(pool_config.outlier.clone(), servers.len());
            pools.insert(
                name.clone(),
                Arc::new(Pool {
                    name: name.clone(),
                    servers,
                    balancer: Balancer::new(pool_config.balance),
                    breaker: observed_breaker(
                        &pool_config.pool_breaker,
                        metrics.pool_breaker_gauge(name),
                        format!("pool {name}"),
                    ),
                    outliers,
                    failure: pool_config.failure.clone(),
                    health_check: pool_config.health_check.clone(),
                }),
            );
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let pool = pools
                .get(&r.upstream)
                .cloned()
                .ok_or_else(|| format!("route names unknown upstream `{}`", r.upstream))?;
            routes.push(Route {
                name: Arc::from(r.display_name()),
                log_name: json_string(r.display_name()),
                prefix: r.prefix.clone(),
                host: r.host.as_deref().map(str::to_ascii_lowercase),
                pool,
                strip_prefix: r.strip_prefix,
                preserve_host: r.preserve_host,
                limits: r.limits.resolve(&config.limits),
                security_headers: SecurityHeaders::compile(
                    &r.security_headers.resolve(&config.security_headers),
                ),
                cors: Cors::compile(r.cors.as_ref().unwrap_or(&config.cors)),
                metrics: metrics.route(r.display_name()),
                retry: r.retry.clone(),
                budget: RetryBudget::new(r.retry.budget.clone()),
                fallback: r.fallback.as_ref().map(load_fallback).transpose()?,
                limiter: match &r.rate_limits {
                    None => global_limiter.clone(),
                    Some(own) => Arc::new(RateLimiter::new(
                        &RateLimitConfig {
                            limits: own.clone(),
                            ..config.rate_limit.clone()
                        },
                        &format!("route:{}", r.display_name()),
                        limits.redis.cloned(),
                        limits.stats.clone(),
                    )),
                },
                inspection: rampart_guard::Policy::new(
                    r.inspection.as_ref().unwrap_or(&config.inspection),
                )
                .map_err(|e| format!("route {}: inspection: {e}", r.display_name()))?,
            });
        }
        // Host-specific routes first, then longer prefixes first: the first match wins.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        let (h1, h2) = crate::server::connection_settings(&config);
        static GENERATIONS: AtomicU64 = AtomicU64::new(0);
        Ok(Runtime {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            routes,
            pools,
            trusted_proxies: config.server.trusted_proxies.clone(),
            log: config.log.clone(),
            default_headers: SecurityHeaders::compile(&config.security_headers),
            tls,
            h1,
            h2,
            access_log: None,
            access: config.access.clone(),
            ban_engine: BanEngine::new(config.bans.clone()),
            ipv6_prefix: config.rate_limit.ipv6_prefix,
            rate_limit_headers: config.rate_limit.enabled && config.rate_limit.headers,
            config,
        })
    }

    /// The index of the route for a host (without port, any case) and path, for
    /// [`route_at`](Self::route_at).
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|given| given.eq_ignore_ascii_case(h)))
                && prefix_matches(&r.prefix, path)
        })
    }

    pub fn route_at(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` entry not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &http::HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let entries = forwarded_for
            .get_all(crate::headers::X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
        for entry in entries {
            if !self.is_trusted(client) {
                break;
            }
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip,
                Err(_) => break,
            }
        }
        client
    }

    pub fn all_pools_up(&self) -> bool {
        self.pools.values().all(|p| p.is_up())
    }
}

fn load_fallback(config: &FallbackConfig) -> Result<Fallback, String> {
    let status = StatusCode::from_u16(config.status)
        .map_err(|_| format!("fallback status {} is not a status", config.status))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("fallback header `{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("fallback header `{name}` has an invalid value"))?;
        headers.insert(name, value);
    }
    let body =
        match &config.body_file {
            Some(path) => Bytes::from(std::fs::read(path).map_err(|e| {
                format!("cannot read the fallback body file {}: {e}", path.display())
            })?),
            None => Bytes::new(),
        };
    Ok(Fallback {
        status,
        headers,
        body,
    })
}

/// Prefix match on path-segment boundaries.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path sent upstream when the route strips its prefix.
pub fn strip_prefix<'a>(prefix_route: &Route, path: &'a str) -> &'a str {
    let prefix = prefix_route.prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(text: &str) -> Runtime {
        let config = Config::parse(text, None).unwrap();
        Runtime::build(
            config,
            None,
            &Metrics::new(),
            None,
            LimitContext {
                redis: None,
                stats: &Arc::default(),
            },
        )
        .unwrap()
    }

    const ROUTES: &str = r#"
[server]
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[upstreams.a]
servers = ["http://127.0.0.1:1"]
[[routes]]
name = "root"
prefix = "/"
upstream = "a"
[[routes]]
name = "api"
prefix = "/api"
upstream = "a"
strip_prefix = true
[[routes]]
name = "api-host"
prefix = "/api"
host = "Internal.Example"
upstream = "a"
"#;

    #[test]
    fn longest_prefix_on_segment_boundaries_and_host_first() {
        let rt = runtime(ROUTES);
        let name = |host, path| rt.route_index(host, path).map(|i| &*rt.route_at(i).name);
        assert_eq!(name(None, "/api/chat"), Some("api"));
        assert_eq!(name(None, "/api"), Some("api"));
        assert_eq!(name(None, "/apix"), Some("root"));
        assert_eq!(name(Some("internal.example"), "/api/x"), Some("api-host"));
        assert_eq!(name(Some("other.example"), "/api/x"), Some("api"));
    }

    #[test]
    fn prefix_stripping_keeps_a_leading_slash() {
        let rt = runtime(ROUTES);
        let api = rt.route_at(rt.route_index(None, "/api").unwrap());
        assert_eq!(strip_prefix(api, "/api/v1/chat"), "/v1/chat");
        assert_eq!(strip_prefix(api, "/api"), "/");
    }

    #[test]
    fn forwarded_for_is_believed_only_through_trusted_proxies() {
        let rt = runtime(ROUTES);
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.1.1.1".parse().unwrap(),
        );
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(rt.client_ip(untrusted, &h), untrusted);
        let trusted: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            rt.client_ip(trusted, &h),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(rt.client_ip(trusted, &h), trusted);
    }
}
