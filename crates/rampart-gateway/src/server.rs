//! Listeners and connections: accept with a connection cap, optional TLS, HTTP/1.1 and
//! HTTP/2, header-read and idle timeouts, reload, and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessLog, AccessLogFlusher};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::runtime::{LimitContext, Runtime};
use crate::{admin, health, proxy};
use rampart_limit::{BanTable, LimiterStats, Redis};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {path}: {message}")]
    Tls { path: PathBuf, message: String },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// State shared by every connection and request.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    /// Shared state for several replicas, when `[redis]` has a URL.
    pub redis: Option<Arc<Redis>>,
    /// Bans in force (with Redis: every replica's).
    pub bans: Arc<BanTable>,
    pub limiter_stats: Arc<LimiterStats>,
    pub started: Instant,
    pub shutdown: CancellationToken,
    access_log: AccessLog,
    reload_lock: Mutex<()>,
}

/// A bound gateway, ready to [`run`](Gateway::run).
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin_listener: TcpListener,
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    access_log_flusher: AccessLogFlusher,
}

/// Controls a running gateway: reload its configuration, or shut it down.
#[derive(Clone)]
pub struct GatewayHandle {
    shared: Arc<Shared>,
}

fn load_tls(config: &Config) -> Result<Option<TlsAcceptor>, GatewayError> {
    let Some(tls) = &config.server.tls else {
        return Ok(None);
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |path: &Path, message: String| GatewayError::Tls {
        path: path.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| tls_err(&tls.cert, format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&tls.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(
            &tls.cert,
            "no CERTIFICATE block found; give the PEM chain, leaf first".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        tls_err(
            &tls.key,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&tls.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&tls.key, format!("certificate and key do not fit: {e}")))?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}

/// The compiled runtime plus what it needs from outside: TLS files and a first health
/// check of every upstream server.
/// What a runtime is prepared with besides its config.
struct Context<'a> {
    metrics: &'a Metrics,
    access_log: &'a AccessLog,
    redis: Option<&'a Arc<Redis>>,
    limiter_stats: &'a Arc<LimiterStats>,
}

async fn prepare(
    config: Config,
    context: Context<'_>,
    previous: Option<&Runtime>,
) -> Result<Runtime, GatewayError> {
    let tls = load_tls(&config)?;
    let access_log = context.access_log;
    let limits = LimitContext {
        redis: context.redis,
        stats: context.limiter_stats,
    };
    let mut runtime = Runtime::build(config, tls, context.metrics, previous, limits)
        .map_err(GatewayError::Invalid)?;
    if runtime.config.log.access_log {
        runtime.access_log = Some(access_log.clone());
    }
    health::check_all(&runtime).await;
    Ok(runtime)
}

impl Gateway {
    /// Validates the config, loads TLS material, binds both listeners and probes the
    /// upstreams once. Nothing is served until [`run`](Gateway::run). The access log goes
    /// to standard output.
    pub async fn bind(config: Config) -> Result<Gateway, GatewayError> {
        Self::bind_with_access_log(config, Box::new(std::io::stdout())).await
    }

    /// Like [`bind`](Self::bind), with the access log written to `access_log`.
    pub async fn bind_with_access_log(
        config: Config,
        access_log: Box<dyn std::io::Write + Send>,
    ) -> Result<Gateway, GatewayError> {
        let (access_log, access_log_flusher) = AccessLog::start(access_log);
        let mut metrics = Metrics::new();
        let redis = match &config.redis.url {
            Some(_) => Some(Arc::new(
                Redis::new(config.redis.clone()).map_err(GatewayError::Invalid)?,
            )),
            None => None,
        };
        if let Some(redis) = &redis {
            redis.connect().await;
        }
        let limiter_stats = Arc::new(LimiterStats::default());
        metrics.register_limits(limiter_stats.clone(), redis.clone());
        let listen = config.server.listen;
        let admin = config.server.admin;
        let context = Context {
            metrics: &metrics,
            access_log: &access_log,
            redis: redis.as_ref(),
            limiter_stats: &limiter_stats,
        };
        let runtime = prepare(config, context, None).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: listen,
                source,
            })?;
        let admin_listener =
            TcpListener::bind(admin)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: admin,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: listen,
            source,
        })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| GatewayError::Bind {
                addr: admin,
                source,
            })?;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            redis,
            bans: Arc::new(BanTable::default()),
            limiter_stats,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            access_log,
            reload_lock: Mutex::new(()),
        });
        Ok(Gateway {
            shared,
            listener,
            admin_listener,
            local_addr,
            admin_addr,
            access_log_flusher,
        })
    }

    /// The proxy listener's address (useful when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until [`GatewayHandle::shutdown`], then stops accepting and lets in-flight
    /// requests finish for up to `shutdown_timeout`.
    pub async fn run(self) {
        let shared = self.shared;
        let tls_on = shared.runtime.load().tls.is_some();
        tracing::info!(
            listen = %self.local_addr,
            admin = %self.admin_addr,
            tls = tls_on,
            "rampart gateway serving"
        );
        let checker = tokio::spawn(health::check_loop(shared.clone()));
        let ban_follower = shared.redis.clone().map(|redis| {
            let bans = shared.bans.clone();
            tokio::spawn(async move { redis.follow_bans(&bans).await })
        });
        let admin = tokio::spawn(admin::serve(shared.clone(), self.admin_listener));
        let max_connections = shared.runtime.load().config.server.max_connections;
        let slots = Arc::new(Semaphore::new(max_connections));
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shared.shutdown.cancelled() => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shared.shutdown.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        serve_tcp(shared, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        drop(self.listener);
        let grace = shared.runtime.load().config.server.shutdown_timeout;
        tracing::info!(
            connections = connections.len(),
            grace_ms = grace.as_millis() as u64,
            "shutting down: draining connections"
        );
        let drained = tokio::time::timeout(grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "shutdown deadline reached: closing the remaining connections"
            );
            connections.shutdown().await;
        }
        checker.abort();
        if let Some(follower) = ban_follower {
            follower.abort();
        }
        let _ = admin.await;
        let dropped = shared.access_log.dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "access log lines dropped because the output was too slow"
            );
        }
        // Writes out the last access log lines.
        drop(self.access_log_flusher);
        tracing::info!("rampart gateway stopped");
    }
}

impl GatewayHandle {
    /// Replaces the configuration. The new one is validated and prepared completely
    /// before it is swapped in; on any error the running one stays. Listener addresses
    /// and the connection cap change only on restart.
    pub async fn reload(&self, config: Config) -> Result<(), GatewayError> {
        self.reload_with(|| Ok(config)).await
    }

    /// Like [`reload`](Self::reload), with the config produced by `load` (typically
    /// [`Config::load`] of the file), so that a failed load is counted and logged too.
    pub async fn reload_with(
        &self,
        load: impl FnOnce() -> Result<Config, ConfigError>,
    ) -> Result<(), GatewayError> {
        let _one_at_a_time = self.shared.reload_lock.lock().await;
        let current = self.shared.runtime.load_full();
        let result = match load() {
            Ok(config) => {
                let old = &current.config.server;
                if config.server.listen != old.listen
                    || config.server.admin != old.admin
                    || config.server.max_connections != old.max_connections
                {
                    tracing::warn!(
                        "listen, admin and max_connections change only on restart; \
                         keeping the current ones"
                    );
                }
                if config.redis != current.config.redis {
                    tracing::warn!("[redis] changes only on restart; keeping the current one");
                }
                let shared = &self.shared;
                let context = Context {
                    metrics: &shared.metrics,
                    access_log: &shared.access_log,
                    redis: shared.redis.as_ref(),
                    limiter_stats: &shared.limiter_stats,
                };
                prepare(config, context, Some(&current)).await
            }
            Err(e) => Err(GatewayError::Config(e)),
        };
        match result {
            Ok(runtime) => {
                self.shared.runtime.store(Arc::new(runtime));
                self.shared.metrics.reload(true);
                tracing::info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                self.shared.metrics.reload(false);
                tracing::error!(error = %e, "configuration reload refused; keeping the running configuration");
                Err(e)
            }
        }
    }

    /// Starts a graceful shutdown; [`Gateway::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// The configuration being served now.
    pub fn config(&self) -> Config {
        self.shared.runtime.load().config.clone()
    }
}

/// Per-connection request accounting, for the idle timeout.
pub struct ConnState {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` when the connection last became idle.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// When the connection should be closed for idleness, if nothing happens before;
    /// `None` while a request is in flight. Before its first request a connection gets
    /// the header-read timeout (slow or silent clients), afterwards the idle timeout.
    fn close_at(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some(self.start + header_timeout);
        }
        let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.start + idle_since + idle_timeout)
    }
}

/// Marks a request in flight on its connection until the response body is done.
pub struct RequestGuard {
    conn: Arc<ConnState>,
}

impl RequestGuard {
    pub fn new(conn: &Arc<ConnState>) -> Self {
        conn.requests.fetch_add(1, Ordering::AcqRel);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard { conn: conn.clone() }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ms = self.conn.start.elapsed().as_millis() as u64;
        self.conn.idle_since_ms.store(ms, Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the request handler knows of the connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub state: Arc<ConnState>,
}

struct ActiveConnection<'a>(&'a Metrics);

impl<'a> ActiveConnection<'a> {
    fn open(metrics: &'a Metrics) -> Self {
        metrics.connections.inc();
        metrics.active_connections.inc();
        ActiveConnection(metrics)
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.0.active_connections.dec();
    }
}

async fn serve_tcp(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _active = ActiveConnection::open(&shared.metrics);
    let _ = stream.set_nodelay(true);
    let runtime = shared.runtime.load_full();
    match &runtime.tls {
        None => serve_connection(&shared, &runtime, TokioIo::new(stream), peer, false).await,
        Some(acceptor) => {
            let timeout = runtime.config.server.header_read_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    serve_connection(&shared, &runtime, TokioIo::new(tls_stream), peer, true).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_connection<I>(
    shared: &Arc<Shared>,
    runtime: &Runtime,
    io: TokioIo<I>,
    peer: SocketAddr,
    tls: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let info = Arc::new(ConnInfo {
        peer,
        tls,
        state: state.clone(),
    });
    let service = {
        let shared = shared.clone();
        service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req))
    };
    let header_timeout = runtime.config.server.header_read_timeout;
    let idle_timeout = runtime.config.server.idle_timeout;
    let conn = runtime.http.serve_connection(io, service);
    tokio::pin!(conn);
    // The watchdog is not told when requests end (that would cost a wake-up per request):
    // it wakes at the earliest deadline it may have to enforce and then works out the
    // real one from the connection's state.
    let watchdog = tokio::time::sleep(header_timeout.min(idle_timeout));
    tokio::pin!(watchdog);
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = &mut cancelled, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut watchdog => {
                if closing {
                    // Asked to close and still open a grace period later, with nothing in
                    // flight: drop it.
                    if state.close_at(header_timeout, idle_timeout).is_some() {
                        break;
                    }
                    watchdog.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                    continue;
                }
                match state.close_at(header_timeout, idle_timeout) {
                    None => watchdog.as_mut().reset(tokio::time::Instant::now() + idle_timeout),
                    Some(at) if at <= Instant::now() => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        watchdog.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    Some(at) => watchdog.as_mut().reset(at.into()),
                }
            }
        }
    }
}

/// The hyper connection builder for the configured limits. Hyper's own header bounds are
/// set above the largest route limit so that the handler, which knows the route, answers
/// 431 with a proper body; hyper's bound only stops what no route would accept.
pub fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let max_header_bytes = config
        .routes
        .iter()
        .filter_map(|r| r.limits.max_header_bytes)
        .chain([config.limits.max_header_bytes])
        .max()
        .unwrap_or(config.limits.max_header_bytes);
    let max_headers = config
        .routes
        .iter()
        .filter_map(|r| r.limits.max_headers)
        .chain([config.limits.max_headers])
        .max()
        .unwrap_or(config.limits.max_headers);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .keep_alive(true)
        .max_buf_size((max_header_bytes * 2).max(16 * 1024))
        .max_headers(max_headers + 32);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(max_header_bytes * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
