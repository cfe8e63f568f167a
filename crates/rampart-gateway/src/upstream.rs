//! Connections to upstream servers: a keep-alive pool per server of HTTP/1.1 connections
//! ([`rampart_h1::ClientConn`]) that work inside the request's own task. The response body
//! reads its connection and gives it back to the pool when it ends. An idle connection the
//! server has closed is noticed when it is taken from the pool and discarded; a request
//! that a pooled connection could not carry is sent again, once, on a fresh connection
//! when nothing of it was written, or when it is idempotent and the reused connection
//! closed without a byte of answer (the server closing it as the request went out).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Method, Request};
use http_body_util::BodyExt;
use rampart_h1::{ClientConn, ClientError, HeadFields, HeadLimits, SendError};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::RequestBody;

/// Idle connections kept per server.
const MAX_IDLE: usize = 512;
/// An idle connection older than this is closed instead of reused.
const IDLE_EXPIRY: Duration = Duration::from_secs(90);
/// Bounds on upstream response heads.
const RESPONSE_HEAD_LIMITS: HeadLimits = HeadLimits {
    max_bytes: 64 * 1024,
    max_headers: 128,
};

pub type UpstreamConn = ClientConn<UpstreamStream>;
pub type UpstreamBody = rampart_h1::ResponseBody<UpstreamStream>;
pub type UpstreamResponse = rampart_h1::ClientResponse<UpstreamStream>;

/// A TCP or TLS stream to an upstream server.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out, TLS failed).
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed while sending the request or reading the response head.
    #[error("exchange: {0}")]
    Exchange(#[from] ClientError),
}

/// How to reach one upstream server, and its idle connections.
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Boxed: connections move between the pool and response bodies, and a box moves as
    /// one pointer instead of the whole connection state. Each with the time it went idle.
    idle: Mutex<Vec<(Instant, Box<UpstreamConn>)>>,
}

impl Endpoint {
    pub fn new(
        scheme: &Scheme,
        authority: &http::uri::Authority,
        tls: &Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Endpoint, String> {
        let https = scheme == &Scheme::HTTPS;
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(bare)
                .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))?;
            Some((TlsConnector::from(tls.clone()), name))
        } else {
            None
        };
        Ok(Endpoint {
            host,
            port,
            tls,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `host:port`, for connecting and probing.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new connection. Boxed: the connecting (address lookup, TCP, TLS) is rare next to
    /// the requests that reuse connections, whose futures should not carry its size.
    async fn connect(&self) -> Result<Box<UpstreamConn>, UpstreamError> {
        Box::pin(self.open()).await
    }

    async fn open(&self) -> Result<Box<UpstreamConn>, UpstreamError> {
        let connecting = async {
            let tcp = TcpStream::connect(self.address())
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => UpstreamStream::Plain(tcp),
                Some((connector, name)) => UpstreamStream::Tls(Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| UpstreamError::Connect(format!("TLS: {e}")))?,
                )),
            };
            Ok(ClientConn::new(stream, RESPONSE_HEAD_LIMITS))
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| UpstreamError::Connect("connect timed out".into()))?
    }

    /// An idle connection still open at `now`, or a new one.
    async fn checkout(&self, now: Instant) -> Result<Box<UpstreamConn>, UpstreamError> {
        loop {
            let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((since, mut conn)) = pooled else {
                return self.connect().await;
            };
            if now.saturating_duration_since(since) <= IDLE_EXPIRY && !conn.is_closed() {
                return Ok(conn);
            }
        }
    }

    /// Returns a connection whose exchange has completed, idle from `now`.
    pub fn checkin(&self, conn: Box<UpstreamConn>, now: Instant) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((now, conn));
        }
    }

    /// Closes idle connections that expired or that the server closed.
    pub fn sweep(&self) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain_mut(|(since, conn)| since.elapsed() <= IDLE_EXPIRY && !conn.is_closed());
    }

    /// Sends a request, with `extra` fields besides its head's, and returns the response,
    /// whose body reads the rest and gives the connection back
    /// ([`UpstreamBody::take_connection`]). On failure the body comes back when none of the
    /// request was sent, so that it can go elsewhere. `now` is when the attempt starts.
    pub async fn send(
        &self,
        head: &http::request::Parts,
        mut body: RequestBody,
        extra: &(dyn HeadFields + Sync),
        now: Instant,
    ) -> Result<UpstreamResponse, SendFailure> {
        let mut fresh = false;
        loop {
            let conn = if fresh {
                self.connect().await
            } else {
                self.checkout(now).await
            };
            let conn = match conn {
                Ok(conn) => conn,
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(body),
                    });
                }
            };
            match conn.send(head, body, extra).await {
                Ok(response) => return Ok(response),
                Err(SendError {
                    error,
                    body: back,
                    written,
                    silent_reuse,
                }) => match back {
                    Some(back)
                        if !fresh && (!written || (silent_reuse && idempotent(&head.method))) =>
                    {
                        body = back;
                        fresh = true;
                    }
                    back => {
                        return Err(SendFailure {
                            error: UpstreamError::Exchange(error),
                            unsent: back.filter(|_| !written),
                        });
                    }
                },
            }
        }
    }

    /// One active health check: GET `path` and compare the status, or, without a path,
    /// open a TCP connection.
    pub async fn check(
        &self,
        path: Option<&str>,
        host: &http::HeaderValue,
        expected_status: u16,
        timeout: Duration,
    ) -> bool {
        let Some(path) = path else {
            return matches!(
                tokio::time::timeout(timeout, TcpStream::connect(self.address())).await,
                Ok(Ok(_))
            );
        };
        let checking = async {
            let (head, ()) = Request::get(path)
                .header(http::header::HOST, host)
                .header(http::header::USER_AGENT, "rampart-health-check")
                .body(())
                .ok()?
                .into_parts();
            let response = self
                .send(&head, RequestBody::empty(), &(), Instant::now())
                .await
                .ok()?;
            let status = response.head.status.as_u16();
            let mut body = response.body;
            let drained = loop {
                match body.frame().await {
                    Some(Ok(_)) => {}
                    Some(Err(_)) => break false,
                    None => break true,
                }
            };
            if drained && let Some(conn) = body.take_connection() {
                self.checkin(conn, Instant::now());
            }
            Some(status == expected_status)
        };
        matches!(
            tokio::time::timeout(timeout, checking).await,
            Ok(Some(true))
        )
    }
}

/// Methods whose requests may be sent twice to the same effect (RFC 9110 §9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A failed [`Endpoint::send`], with the body when none of the request was sent.
pub struct SendFailure {
    pub error: UpstreamError,
    pub unsent: Option<RequestBody>,
}

/// The TLS client configuration for `https://` upstreams: aws-lc-rs, web PKI roots.
pub fn tls_client_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
