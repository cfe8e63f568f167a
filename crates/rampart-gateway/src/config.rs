//! The gateway's configuration: the `rampart.toml` structs, their defaults, loading with
//! `file:line:column` diagnostics, and the semantic checks that serde cannot express.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use rampart_limit::{AccessConfig, BanConfig, LimitConfig, RateLimitConfig, RedisConfig};
use rampart_resilience::{BreakerConfig, HealthCheckConfig, OutlierConfig, RetryConfig, Strategy};
use serde::Deserialize;

/// The commented default configuration. `rampart init` writes it, and with no config file
/// the gateway runs on exactly these values (a test keeps the two equal).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

/// The whole gateway configuration (`rampart.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub security_headers: SecurityHeadersConfig,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Rate limits applied to every route that has none of its own.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Allow and deny lists of client addresses.
    #[serde(default)]
    pub access: AccessConfig,
    /// Automatic bans.
    #[serde(default)]
    pub bans: BanConfig,
    /// Shared state for several replicas.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Request inspection for every route without its own `[routes.inspection]`.
    #[serde(default)]
    pub inspection: rampart_guard::GuardConfig,
    /// Upstream pools by name.
    #[serde(default = "default_upstreams")]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default = "default_routes")]
    pub routes: Vec<RouteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            security_headers: SecurityHeadersConfig::default(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            rate_limit: RateLimitConfig::default(),
            access: AccessConfig::default(),
            bans: BanConfig::default(),
            inspection: rampart_guard::GuardConfig::default(),
            redis: RedisConfig::default(),
            upstreams: default_upstreams(),
            routes: default_routes(),
        }
    }
}

/// The upstream used when neither a config file nor `--upstream` names one.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8000";

fn default_upstreams() -> BTreeMap<String, UpstreamConfig> {
    BTreeMap::from([(
        "default".to_owned(),
        UpstreamConfig::with_servers(vec![DEFAULT_UPSTREAM.to_owned()]),
    )])
}

fn default_routes() -> Vec<RouteConfig> {
    vec![RouteConfig {
        name: Some("default".to_owned()),
        prefix: "/".to_owned(),
        host: None,
        upstream: "default".to_owned(),
        strip_prefix: false,
        preserve_host: false,
        limits: RouteLimits::default(),
        security_headers: SecurityHeadersOverride::default(),
        cors: None,
        retry: RetryConfig::default(),
        fallback: None,
        rate_limits: None,
        inspection: None,
    }]
}

/// Listeners and connection-level limits (these cannot vary per route: the route is only
/// known once the request head has been read).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Proxy listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listener (health, metrics). Default `127.0.0.1:9901`.
    pub admin: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Most client connections open at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Time a client has to send a complete request head. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Time to open a connection to an upstream server (502 beyond). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub upstream_connect_timeout: Duration,
    /// TLS termination; absent means plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Bearer token of the admin API (`/admin/...`); `RAMPART_ADMIN_TOKEN` overrides it.
    /// Without one the admin API is off.
    pub admin_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            tls: None,
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Relative paths are relative to the config file.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Request limits; the global values are the defaults of every route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body. Default 10 MiB; larger gets 413.
    pub max_body_bytes: u64,
    /// Largest total size of the request's header fields (names + values). Default 32 KiB; 431.
    pub max_header_bytes: usize,
    /// Most header fields in one request. Default 100; 431.
    pub max_headers: usize,
    /// Time the upstream has to answer with a response head. Default 30 s; 504.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 10 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            upstream_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-route overrides of [`LimitsConfig`]; an absent field takes the global value.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimits {
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_timeout: Option<Duration>,
}

impl RouteLimits {
    pub fn resolve(&self, global: &LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: self.max_body_bytes.unwrap_or(global.max_body_bytes),
            max_header_bytes: self.max_header_bytes.unwrap_or(global.max_header_bytes),
            max_headers: self.max_headers.unwrap_or(global.max_headers),
            upstream_timeout: self.upstream_timeout.unwrap_or(global.upstream_timeout),
        }
    }
}

/// When `Strict-Transport-Security` is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HstsMode {
    /// Only on responses served over TLS (the default).
    Tls,
    /// On every response (for a gateway behind a TLS-terminating load balancer).
    Always,
    Off,
}

/// Security headers set on every response. A value sets (and overrides the upstream's)
/// header; an empty string removes the header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    pub content_type_options: String,
    pub frame_options: String,
    pub content_security_policy: String,
    pub referrer_policy: String,
    pub permissions_policy: String,
    pub cross_origin_opener_policy: String,
    /// `0`: the XSS auditor is gone from browsers and could be abused (OWASP advice).
    pub xss_protection: String,
    pub strict_transport_security: String,
    pub hsts: HstsMode,
    /// Further headers to set, by name.
    pub extra: BTreeMap<String, String>,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        SecurityHeadersConfig {
            content_type_options: "nosniff".into(),
            frame_options: "DENY".into(),
            content_security_policy: "default-src 'self'".into(),
            referrer_policy: "strict-origin-when-cross-origin".into(),
            permissions_policy: "geolocation=(), microphone=(), camera=()".into(),
            cross_origin_opener_policy: "same-origin".into(),
            xss_protection: "0".into(),
            strict_transport_security: "max-age=31536000; includeSubDomains".into(),
            hsts: HstsMode::Tls,
            extra: BTreeMap::new(),
        }
    }
}

/// Per-route overrides of [`SecurityHeadersConfig`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersOverride {
    pub content_type_options: Option<String>,
    pub frame_options: Option<String>,
    pub content_security_policy: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    pub xss_protection: Option<String>,
    pub strict_transport_security: Option<String>,
    pub hsts: Option<HstsMode>,
    /// Merged over the global `extra`; an empty value removes a global one.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl SecurityHeadersOverride {
    pub fn resolve(&self, global: &SecurityHeadersConfig) -> SecurityHeadersConfig {
        let pick = |o: &Option<String>, g: &String| o.clone().unwrap_or_else(|| g.clone());
        let mut extra = global.extra.clone();
        extra.extend(self.extra.clone());
        SecurityHeadersConfig {
            content_type_options: pick(&self.content_type_options, &global.content_type_options),
            frame_options: pick(&self.frame_options, &global.frame_options),
            content_security_policy: pick(
                &self.content_security_policy,
                &global.content_security_policy,
            ),
            referrer_policy: pick(&self.referrer_policy, &global.referrer_policy),
            permissions_policy: pick(&self.permissions_policy, &global.permissions_policy),
            cross_origin_opener_policy: pick(
                &self.cross_origin_opener_policy,
                &global.cross_origin_opener_policy,
            ),
            xss_protection: pick(&self.xss_protection, &global.xss_protection),
            strict_transport_security: pick(
                &self.strict_transport_security,
                &global.strict_transport_security,
            ),
            hsts: self.hsts.unwrap_or(global.hsts),
            extra,
        }
    }
}

/// Cross-origin resource sharing. With no allowed origin (the default) no cross-origin
/// request is allowed. The gateway owns the `Access-Control-*` response headers: the
/// upstream's are removed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins, e.g. `https://app.example.com`. `*` is allowed only without credentials.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    /// Request headers a cross-origin request may carry (case-insensitive).
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer. Default 600 s.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allow_headers: ["content-type", "authorization", "x-request-id"]
                .map(String::from)
                .to_vec(),
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One JSON line per request.
    pub access_log: bool,
    /// Replace query values with `REDACTED` in logged paths. Default true.
    pub redact_query: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access_log: true,
            redact_query: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Servers as `http://host:port` or `https://host:port`.
    pub servers: Vec<String>,
    /// `p2c` (power of two choices on outstanding requests, the default) or `round_robin`.
    #[serde(default)]
    pub balance: Strategy,
    /// Circuit breaker of each server.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Circuit breaker of the pool as a whole.
    #[serde(default)]
    pub pool_breaker: BreakerConfig,
    /// Active checks: HTTP with a `path`, else a TCP connect.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// Passive ejection of servers that fail in a row.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// What counts as a failed call, for breakers and ejection.
    #[serde(default)]
    pub failure: FailureConfig,
}

impl UpstreamConfig {
    pub fn with_servers(servers: Vec<String>) -> Self {
        UpstreamConfig {
            servers,
            balance: Strategy::default(),
            breaker: BreakerConfig::default(),
            pool_breaker: BreakerConfig::default(),
            health_check: HealthCheckConfig::default(),
            outlier: OutlierConfig::default(),
            failure: FailureConfig::default(),
        }
    }
}

/// What counts as a failed upstream call. Default: connect errors, resets, timeouts and
/// 5xx statuses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureConfig {
    pub connect: bool,
    pub reset: bool,
    pub timeout: bool,
    /// Every 5xx status.
    pub server_errors: bool,
    /// Further statuses, e.g. `[429]`.
    pub statuses: Vec<u16>,
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            connect: true,
            reset: true,
            timeout: true,
            server_errors: true,
            statuses: Vec::new(),
        }
    }
}

impl FailureConfig {
    pub fn status_fails(&self, status: u16) -> bool {
        (self.server_errors && status >= 500) || self.statuses.contains(&status)
    }
}

/// A static answer for when no upstream server can take a request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    #[serde(default = "fallback_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File whose content is the body; relative to the config file.
    pub body_file: Option<PathBuf>,
}

fn fallback_status() -> u16 {
    503
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics; defaults to the prefix.
    pub name: Option<String>,
    /// Path prefix, matched on segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: String,
    /// Only requests for this host (port ignored, case-insensitive).
    pub host: Option<String>,
    /// Name of a pool in `[upstreams]`.
    pub upstream: String,
    /// Remove the prefix from the path sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Send the client's `Host` upstream instead of the upstream server's authority.
    #[serde(default)]
    pub preserve_host: bool,
    #[serde(default)]
    pub limits: RouteLimits,
    #[serde(default)]
    pub security_headers: SecurityHeadersOverride,
    /// Replaces the global `[cors]` for this route.
    pub cors: Option<CorsConfig>,
    /// Retries of failed upstream calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Static answer when no upstream server can take the request.
    pub fallback: Option<FallbackConfig>,
    /// This route's own rate limits instead of the global ones (`[]`: none).
    pub rate_limits: Option<Vec<LimitConfig>>,
    /// This route's inspection settings instead of the global `[inspection]`.
    pub inspection: Option<rampart_guard::GuardConfig>,
}

impl RouteConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.prefix)
    }
}

/// A configuration error with the place it points at, printed as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".to_owned());
        match self.position {
            Some((line, col)) => write!(f, "{file}:{line}:{col}: {}", self.message),
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

/// One step of a path to a value in the TOML document, for locating semantic errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPath {
    Key(&'static str),
    Name(String),
    Index(usize),
}

/// A semantic error found after parsing, pointing at a value by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: Vec<KeyPath>,
    pub message: String,
}

impl Invalid {
    fn new(path: Vec<KeyPath>, message: impl Into<String>) -> Self {
        Invalid {
            path,
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_owned()),
            position: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        let mut config = Config::parse(&text, Some(path))?;
        if let Some(dir) = path.parent() {
            config.resolve_relative_paths(dir);
        }
        Ok(config)
    }

    /// Parses and validates config text; `file` only names it in errors.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: file.map(Path::to_owned),
            position: e.span().map(|s| line_col(text, s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        if let Err(invalid) = config.validate() {
            return Err(ConfigError {
                file: file.map(Path::to_owned),
                position: locate(text, &invalid.path),
                message: invalid.message,
            });
        }
        Ok(config)
    }

    fn resolve_relative_paths(&mut self, dir: &Path) {
        let paths = self
            .server
            .tls
            .iter_mut()
            .flat_map(|tls| [&mut tls.cert, &mut tls.key])
            .chain(
                self.routes
                    .iter_mut()
                    .filter_map(|r| r.fallback.as_mut()?.body_file.as_mut()),
            );
        for p in paths {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// Checks what the types cannot: references between sections, values that parse but
    /// make no sense, and combinations that are unsafe.
    pub fn validate(&self) -> Result<(), Invalid> {
        use KeyPath::{Index, Key, Name};
        validate_limits(&self.limits, vec![Key("limits")])?;
        validate_cors(&self.cors, vec![Key("cors")])?;
        validate_headers(&self.security_headers, vec![Key("security_headers")])?;
        for (key, problem) in [
            ("rate_limit", self.rate_limit.problem()),
            ("bans", self.bans.problem()),
            ("redis", self.redis.problem()),
        ] {
            if let Some(problem) = problem {
                return Err(Invalid::new(vec![Key(key)], problem));
            }
        }
        if let Err(problem) = self.inspection.validate() {
            return Err(Invalid::new(vec![Key("inspection")], problem.to_string()));
        }
        if self
            .server
            .admin_token
            .as_deref()
            .is_some_and(|t| t.len() < 16)
        {
            return Err(Invalid::new(
                vec![Key("server"), Key("admin_token")],
                "admin_token must be at least 16 characters; generate one with `openssl rand -hex 32`",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(Invalid::new(
                vec![Key("server"), Key("max_connections")],
                "max_connections must be at least 1",
            ));
        }
        for (name, d) in [
            ("header_read_timeout", self.server.header_read_timeout),
            ("idle_timeout", self.server.idle_timeout),
            (
                "upstream_connect_timeout",
                self.server.upstream_connect_timeout,
            ),
        ] {
            if d.is_zero() {
                return Err(Invalid::new(
                    vec![Key("server"), Key(name)],
                    format!("{name} must be greater than zero"),
                ));
            }
        }
        for (name, pool) in &self.upstreams {
            let at = vec![Key("upstreams"), Name(name.clone()), Key("servers")];
            if pool.servers.is_empty() {
                return Err(Invalid::new(
                    at,
                    format!("upstream pool `{name}` has no servers; give at least one"),
                ));
            }
            for (i, server) in pool.servers.iter().enumerate() {
                let mut at = at.clone();
                at.push(Index(i));
                parse_server_url(server).map_err(|m| Invalid::new(at, m))?;
            }
            let section = |k: &'static str| vec![Key("upstreams"), Name(name.clone()), Key(k)];
            for (key, problem) in [
                ("breaker", pool.breaker.problem()),
                ("pool_breaker", pool.pool_breaker.problem()),
                ("health_check", pool.health_check.problem()),
                ("outlier", pool.outlier.problem()),
            ] {
                if let Some(problem) = problem {
                    return Err(Invalid::new(section(key), problem));
                }
            }
        }
        if self.routes.is_empty() {
            return Err(Invalid::new(
                vec![Key("routes")],
                "no routes: add at least one [[routes]] entry",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = |k: &'static str| vec![Key("routes"), Index(i), Key(k)];
            if let Some(Err(problem)) = route.inspection.as_ref().map(|c| c.validate()) {
                return Err(Invalid::new(at("inspection"), problem.to_string()));
            }
            if !route.prefix.starts_with('/') {
                return Err(Invalid::new(
                    at("prefix"),
                    format!("route prefix `{}` must start with `/`", route.prefix),
                ));
            }
            if !self.upstreams.contains_key(&route.upstream) {
                let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
                return Err(Invalid::new(
                    at("upstream"),
                    format!(
                        "route `{}` names upstream `{}`, which is not defined; defined: {}",
                        route.display_name(),
                        route.upstream,
                        known.join(", ")
                    ),
                ));
            }
            let host = route.host.as_deref().map(str::to_ascii_lowercase);
            if !seen.insert((host, route.prefix.clone())) {
                return Err(Invalid::new(
                    at("prefix"),
                    format!(
                        "route prefix `{}` is defined twice for the same host",
                        route.prefix
                    ),
                ));
            }
            validate_limits(
                &route.limits.resolve(&self.limits),
                vec![Key("routes"), Index(i), Key("limits")],
            )?;
            validate_headers(
                &route.security_headers.resolve(&self.security_headers),
                vec![Key("routes"), Index(i), Key("security_headers")],
            )?;
            if let Some(cors) = &route.cors {
                validate_cors(cors, vec![Key("routes"), Index(i), Key("cors")])?;
            }
            if let Some(limits) = &route.rate_limits {
                let own = RateLimitConfig {
                    limits: limits.clone(),
                    ..self.rate_limit.clone()
                };
                if let Some(problem) = own.problem() {
                    return Err(Invalid::new(at("rate_limits"), problem));
                }
            }
            if let Some(problem) = route.retry.problem() {
                return Err(Invalid::new(at("retry"), problem));
            }
            if let Some(fallback) = &route.fallback {
                let ok_status = (200..=599).contains(&fallback.status);
                if !ok_status {
                    return Err(Invalid::new(
                        at("fallback"),
                        format!(
                            "fallback status {} is not a response status",
                            fallback.status
                        ),
                    ));
                }
                validate_header_map(&fallback.headers, at("fallback"))?;
            }
        }
        Ok(())
    }
}

fn validate_limits(limits: &LimitsConfig, at: Vec<KeyPath>) -> Result<(), Invalid> {
    if limits.max_headers == 0 || limits.max_header_bytes < 256 {
        return Err(Invalid::new(
            at,
            "max_headers must be at least 1 and max_header_bytes at least 256",
        ));
    }
    if limits.upstream_timeout.is_zero() {
        return Err(Invalid::new(
            at,
            "upstream_timeout must be greater than zero",
        ));
    }
    Ok(())
}

fn validate_header_map(map: &BTreeMap<String, String>, at: Vec<KeyPath>) -> Result<(), Invalid> {
    for (name, value) in map {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Invalid::new(
                at,
                format!("`{name}` is not a valid header name"),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(Invalid::new(
                at,
                format!("the value of `{name}` is not a valid header value"),
            ));
        }
    }
    Ok(())
}

fn validate_headers(headers: &SecurityHeadersConfig, at: Vec<KeyPath>) -> Result<(), Invalid> {
    let mut extra_at = at.clone();
    extra_at.push(KeyPath::Key("extra"));
    validate_header_map(&headers.extra, extra_at)?;
    for value in [
        &headers.content_type_options,
        &headers.frame_options,
        &headers.content_security_policy,
        &headers.referrer_policy,
        &headers.permissions_policy,
        &headers.cross_origin_opener_policy,
        &headers.xss_protection,
        &headers.strict_transport_security,
    ] {
        if http::HeaderValue::from_str(value).is_err() {
            return Err(Invalid::new(
                at,
                format!("`{value}` is not a valid header value (control characters or non-ASCII)"),
            ));
        }
    }
    Ok(())
}

fn validate_cors(cors: &CorsConfig, at: Vec<KeyPath>) -> Result<(), Invalid> {
    let field = |k: &'static str| {
        let mut p = at.clone();
        p.push(KeyPath::Key(k));
        p
    };
    let wildcard = cors.allow_origins.iter().any(|o| o == "*");
    if wildcard && cors.allow_credentials {
        return Err(Invalid::new(
            field("allow_origins"),
            "`*` in allow_origins together with allow_credentials = true would let any web \
             site make authenticated requests with your users' cookies; list the exact \
             origins instead (e.g. \"https://app.example.com\")",
        ));
    }
    for origin in &cors.allow_origins {
        if origin == "*" {
            continue;
        }
        let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
            && !origin.ends_with('/')
            && !origin.contains('*')
            && origin.parse::<http::Uri>().is_ok_and(|u| u.path() == "/");
        if !ok {
            return Err(Invalid::new(
                field("allow_origins"),
                format!(
                    "`{origin}` is not an origin: write scheme://host[:port] without a path, \
                     e.g. \"https://app.example.com\""
                ),
            ));
        }
    }
    for m in &cors.allow_methods {
        if http::Method::from_bytes(m.as_bytes()).is_err() || m == "*" {
            return Err(Invalid::new(
                field("allow_methods"),
                format!("`{m}` is not an HTTP method"),
            ));
        }
    }
    for (k, list) in [
        ("allow_headers", &cors.allow_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        for h in list {
            if h == "*" || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(Invalid::new(
                    field(k),
                    format!("`{h}` is not a header name (wildcards are not accepted)"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses an upstream server address: `http(s)://host:port` with no path, query or userinfo.
pub fn parse_server_url(server: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| format!("`{server}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "`{server}`: an upstream server must start with http:// or https://"
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{server}` has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{server}`: credentials in upstream URLs are not supported"
        ));
    }
    if uri.path() != "/" || uri.query().is_some() {
        return Err(format!(
            "`{server}`: an upstream server is scheme://host:port without a path; \
             use a route's strip_prefix to rewrite paths"
        ));
    }
    Ok(uri)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds where the value at `path` is written, walking the parsed document with spans.
/// Falls back to the nearest ancestor that is written in the file.
fn locate(text: &str, path: &[KeyPath]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut current: Option<&toml::Spanned<DeValue>> = None;
    for step in path {
        let next = match (step, current.map(|v| v.get_ref())) {
            (KeyPath::Key(k), None) => table.get(*k),
            (KeyPath::Name(k), None) => table.get(k.as_str()),
            (KeyPath::Key(k), Some(DeValue::Table(t))) => t.get(*k),
            (KeyPath::Name(k), Some(DeValue::Table(t))) => t.get(k.as_str()),
            (KeyPath::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        if let DeValue::Table(t) = next.get_ref() {
            table = t;
        }
        best = Some(next.span());
        current = Some(next);
    }
    best.map(|span| line_col(text, span.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_file_is_the_default_config() {
        let parsed = Config::parse(DEFAULT_CONFIG_TOML, None).expect("default file parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_column() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n";
        let err = Config::parse(text, Some(Path::new("r.toml"))).unwrap_err();
        assert_eq!(err.position, Some((3, 1)), "{err}");
        assert!(err.to_string().starts_with("r.toml:3:1: "), "{err}");
        assert!(err.message.contains("listen_addr"), "{err}");
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let text = "[limits]\nmax_body_bytes = \"big\"\n";
        let err = Config::parse(text, None).unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
    }

    #[test]
    fn wildcard_origin_with_credentials_is_refused_and_says_why() {
        let text = "[cors]\nallow_credentials = true\nallow_origins = [\"*\"]\n";
        let err = Config::parse(text, Some(Path::new("c.toml"))).unwrap_err();
        assert_eq!(err.position, Some((3, 17)), "{err}");
        assert!(err.message.contains("credentials"), "{err}");
        assert!(err.message.contains("exact"), "{err}");
    }

    #[test]
    fn wildcard_origin_without_credentials_is_accepted() {
        let text = "[cors]\nallow_origins = [\"*\"]\n";
        assert!(Config::parse(text, None).is_ok());
    }

    #[test]
    fn route_to_undefined_upstream_points_at_the_route() {
        let text = "[upstreams.api]\nservers = [\"http://127.0.0.1:1\"]\n\n[[routes]]\nprefix = \"/\"\nupstream = \"apii\"\n";
        let err = Config::parse(text, None).unwrap_err();
        assert_eq!(err.position, Some((6, 12)), "{err}");
        assert!(err.message.contains("`apii`"), "{err}");
        assert!(err.message.contains("api"), "{err}");
    }

    #[test]
    fn bad_upstream_url_is_refused() {
        for bad in ["127.0.0.1:80", "ftp://x", "http://x/path", "http://u:p@x"] {
            let text = format!("[upstreams.default]\nservers = [\"{bad}\"]\n");
            let err = Config::parse(&text, None).unwrap_err();
            assert_eq!(err.position, Some((2, 12)), "{bad}: {err}");
        }
    }

    #[test]
    fn route_overrides_merge_over_globals() {
        let text = r#"
[limits]
max_body_bytes = 100
[upstreams.default]
servers = ["http://127.0.0.1:1"]
[[routes]]
prefix = "/"
upstream = "default"
limits = { upstream_timeout = "2s" }
security_headers = { frame_options = "", extra = { "X-A" = "1" } }
"#;
        let c = Config::parse(text, None).unwrap();
        let l = c.routes[0].limits.resolve(&c.limits);
        assert_eq!(l.max_body_bytes, 100);
        assert_eq!(l.upstream_timeout, Duration::from_secs(2));
        let h = c.routes[0].security_headers.resolve(&c.security_headers);
        assert_eq!(h.frame_options, "");
        assert_eq!(h.content_type_options, "nosniff");
        assert_eq!(h.extra.get("X-A").map(String::as_str), Some("1"));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\nbé c", 5), (2, 3));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
