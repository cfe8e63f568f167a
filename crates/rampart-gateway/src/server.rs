//! Listeners and connections: accept with a connection cap, optional TLS, HTTP/1.1 and
//! HTTP/2, header-read and idle timeouts, reload, and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use crossbeam_utils::atomic::AtomicCell;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rampart_h1::Deadline;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::access_log::{AccessLog, AccessLogFlusher};
use crate::body::{ClientBody, ResponseBody};
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
    pub shutdown: Shutdown,
    access_log: AccessLog,
    reload_lock: Mutex<()>,
}

/// The gateway's shutdown: a token that long-lived tasks wait on, and a flag raised just
/// before the token is cancelled. A connection loop reads the flag instead of polling the
/// token's future every time it wakes, which takes the token's lock (four atomic operations
/// each time, eight a proxied request).
#[derive(Default)]
pub struct Shutdown {
    token: CancellationToken,
    begun: AtomicBool,
}

impl Shutdown {
    /// Starts the shutdown.
    pub fn cancel(&self) {
        self.begun.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the shutdown has started.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Like [`cancelled`](Self::cancelled), for a loop that polls it each time its task
    /// wakes.
    pub fn watch(&self) -> ShutdownWatch<'_> {
        ShutdownWatch {
            begun: &self.begun,
            cancelled: Box::pin(self.token.cancelled()),
            registered: None,
        }
    }
}

/// [`Shutdown::watch`]: the token's future is polled once for each waker it is polled
/// with (a task's stays the same), so that the task is woken when the token is cancelled,
/// and again once the flag is up.
pub struct ShutdownWatch<'a> {
    begun: &'a AtomicBool,
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
    registered: Option<Waker>,
}

impl Future for ShutdownWatch<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let registered = this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if registered && !this.begun.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !registered {
            this.registered = Some(cx.waker().clone());
        }
        this.cancelled.as_mut().poll(cx)
    }
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

/// What a runtime is prepared with besides its config.
struct PrepareContext<'a> {
    metrics: &'a Metrics,
    access_log: &'a AccessLog,
    redis: Option<&'a Arc<Redis>>,
    limiter_stats: &'a Arc<LimiterStats>,
}

async fn prepare(
    config: Config,
    context: PrepareContext<'_>,
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
        let context = PrepareContext {
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
            shutdown: Shutdown::default(),
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
                let context = PrepareContext {
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
    /// The [`UpstreamTimer`] between the connection's streams (one that finds it taken
    /// by another makes its own). A pointer-sized atomic cell: taking and returning it is
    /// one atomic swap each, where a mutex cost two.
    spare_timer: AtomicCell<Option<Deadline>>,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            spare_timer: AtomicCell::new(None),
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
    /// Requests in flight, for the idle timeout of HTTP/2 connections (HTTP/1.1 ones keep
    /// their own time).
    pub state: Option<Arc<ConnState>>,
}

/// The timer of upstream deadlines, kept from one request of a connection to the next,
/// so that a request arms an existing timer instead of registering a new one.
#[derive(Default)]
pub struct UpstreamTimer(Option<Deadline>);

impl UpstreamTimer {
    /// The output of `future`, or `None` when `deadline` passes first.
    pub async fn within<F: Future>(
        &mut self,
        deadline: tokio::time::Instant,
        future: F,
    ) -> Option<F::Output> {
        self.0
            .get_or_insert_with(|| Deadline::new(deadline))
            .until(deadline, future)
            .await
    }
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
    let timeout = runtime.config.server.header_read_timeout;
    match &runtime.tls {
        None => {
            let mut stream = stream;
            let Some((first_bytes, h2)) = read_preface(&mut stream, timeout).await else {
                return;
            };
            if h2 {
                let io = TokioIo::new(Rewind::new(first_bytes, stream));
                serve_h2(&shared, &runtime, io, peer, false).await;
            } else {
                let (read, write) = stream.into_split();
                serve_h1(
                    &shared,
                    &runtime,
                    Box::new(read),
                    first_bytes,
                    write,
                    peer,
                    false,
                )
                .await;
            }
        }
        Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => {
                if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_h2(&shared, &runtime, TokioIo::new(tls_stream), peer, true).await;
                } else {
                    let (read, write) = tokio::io::split(tls_stream);
                    let first_bytes = BytesMut::new();
                    serve_h1(
                        &shared,
                        &runtime,
                        Box::new(read),
                        first_bytes,
                        write,
                        peer,
                        true,
                    )
                    .await;
                }
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4), which cleartext clients with prior
/// knowledge send first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes tell HTTP/2 from HTTP/1.1: the bytes read and whether it is
/// HTTP/2. `None` when the client closes or stays silent past the header-read timeout.
async fn read_preface(stream: &mut TcpStream, timeout: Duration) -> Option<(BytesMut, bool)> {
    let mut buf = BytesMut::with_capacity(4096);
    let reading = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    let h2 = tokio::time::timeout(timeout, reading).await.ok()??;
    Some((buf, h2))
}

/// Serves the proxy over one HTTP/1.1 connection.
struct ProxyService<'a> {
    shared: &'a Arc<Shared>,
    /// The config the connection's last request ran on, checked against the current one
    /// with a plain load: taking it from the `ArcSwap` anew would cost three atomic
    /// read-modify-writes a request.
    runtime: arc_swap::Cache<&'a ArcSwap<Runtime>, Arc<Runtime>>,
    conn: ConnInfo,
    timer: UpstreamTimer,
}

impl rampart_h1::Service for ProxyService<'_> {
    type Body = ResponseBody;

    fn call(
        &mut self,
        request: Request<rampart_h1::RequestBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send {
        let runtime = self.runtime.load();
        proxy::handle(
            self.shared,
            &self.conn,
            runtime,
            &mut self.timer,
            request.map(ClientBody::H1),
        )
    }

    fn refuse(&self, error: rampart_h1::HeadError) -> Response<ResponseBody> {
        proxy::refused_head(self.shared, &self.conn, error)
    }
}

async fn serve_h1<W: AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    runtime: &Runtime,
    read: Box<dyn AsyncRead + Send + Unpin>,
    first_bytes: BytesMut,
    write: W,
    peer: SocketAddr,
    tls: bool,
) {
    let mut service = ProxyService {
        shared,
        runtime: arc_swap::Cache::new(&shared.runtime),
        conn: ConnInfo {
            peer,
            tls,
            state: None,
        },
        timer: UpstreamTimer::default(),
    };
    let config = runtime.h1;
    let mut shutdown = shared.shutdown.watch();
    rampart_h1::serve(
        read,
        first_bytes,
        write,
        &config,
        &mut service,
        Pin::new(&mut shutdown),
    )
    .await;
}

async fn serve_h2<I>(
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
        state: Some(state.clone()),
    });
    let service = {
        let shared = shared.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let info = info.clone();
            async move {
                let runtime = shared.runtime.load_full();
                let spare = info.state.as_ref().and_then(|s| s.spare_timer.take());
                let mut timer = UpstreamTimer(spare);
                let request = req.map(ClientBody::H2);
                let response = proxy::handle(&shared, &info, &runtime, &mut timer, request).await;
                if let Some(state) = &info.state {
                    state.spare_timer.store(timer.0);
                }
                // HTTP/2 has no head lines: the response's own fields go into its map.
                let (mut parts, body) = response.into_parts();
                body.decorate(&mut parts.headers);
                Ok::<_, std::convert::Infallible>(Response::from_parts(parts, body))
            }
        })
    };
    let header_timeout = runtime.config.server.header_read_timeout;
    let idle_timeout = runtime.config.server.idle_timeout;
    let conn = runtime.h2.serve_connection(io, service);
    tokio::pin!(conn);
    // The watchdog is not told when requests end (that would cost a wake-up per request):
    // it wakes at the earliest deadline it may have to enforce and then works out the
    // real one from the connection's state.
    let watchdog = tokio::time::sleep(header_timeout.min(idle_timeout));
    tokio::pin!(watchdog);
    let mut cancelled = shared.shutdown.watch();
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

/// A stream whose first bytes were already read: they are read again first.
struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(prefix: BytesMut, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connection settings for the configured limits: HTTP/1.1 and HTTP/2. The bounds on
/// heads are set above the largest route limit so that the handler, which knows the route,
/// answers 431 with a proper body; these bounds only stop what no route would accept.
pub fn connection_settings(
    config: &Config,
) -> (rampart_h1::ServerConfig, http2::Builder<TokioExecutor>) {
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
    let h1 = rampart_h1::ServerConfig {
        limits: rampart_h1::HeadLimits {
            max_bytes: (max_header_bytes * 2).max(16 * 1024),
            max_headers: max_headers + 32,
        },
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
    };
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(max_header_bytes * 2).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_timer_cell_is_lock_free() {
        // Otherwise crossbeam would guard it with a global lock shared by every connection.
        assert!(AtomicCell::<Option<Deadline>>::is_lock_free());
    }
}
