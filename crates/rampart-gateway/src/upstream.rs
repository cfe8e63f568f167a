//! Connections to upstream servers: a keep-alive pool per server of HTTP/1.1 connections
//! that are driven inside the request's own task rather than in a task of their own.
//!
//! Hyper's pooled client spawns a task per connection, so every request hops between
//! tasks several times (request out, response head back, each body chunk back) and, for
//! HTTP/1.1, spawns one more task per request to return the connection to the pool.
//! Here the request future and then the response body poll the connection themselves:
//! one task does all the work, and the connection goes back to the pool when the body
//! ends. A connection found closed when taken from the pool is discarded; a request that
//! a stale connection could not send is sent again, once, on a fresh connection.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
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

/// One HTTP/1.1 connection to an upstream server.
pub struct UpstreamConn {
    sender: http1::SendRequest<RequestBody>,
    conn: http1::Connection<TokioIo<UpstreamStream>, RequestBody>,
    /// The connection future has completed: the connection is gone.
    done: bool,
    idle_since: Instant,
}

impl UpstreamConn {
    /// Makes progress on the connection's I/O. Returns false once it has ended.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.done = true;
        }
        !self.done
    }

    /// Ready for a new request, driving the connection meanwhile; Err when it is closed.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if !self.drive(cx) {
            return Poll::Ready(Err(()));
        }
        self.sender.poll_ready(cx).map_err(|_| ())
    }

    fn reusable(&self) -> bool {
        !self.done && !self.sender.is_closed()
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
    Exchange(#[from] hyper::Error),
}

/// How to reach one upstream server, and its idle connections.
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Boxed: connections move between the pool and response bodies, and a box moves as
    /// one pointer instead of the whole connection state.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<UpstreamConn>>>,
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

    async fn connect(&self) -> Result<Box<UpstreamConn>, UpstreamError> {
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
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| UpstreamError::Connect(e.to_string()))?;
            Ok(Box::new(UpstreamConn {
                sender,
                conn,
                done: false,
                idle_since: Instant::now(),
            }))
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| UpstreamError::Connect("connect timed out".into()))?
    }

    /// An idle connection ready for a request, or a new one.
    async fn checkout(&self) -> Result<Box<UpstreamConn>, UpstreamError> {
        loop {
            let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut conn) = pooled else {
                return self.connect().await;
            };
            if conn.idle_since.elapsed() > IDLE_EXPIRY {
                continue;
            }
            if poll_fn(|cx| conn.poll_ready(cx)).await.is_ok() {
                return Ok(conn);
            }
        }
    }

    /// Returns a connection whose exchange has completed.
    pub fn checkin(&self, mut conn: Box<UpstreamConn>) {
        if !conn.reusable() {
            return;
        }
        conn.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }

    /// Closes idle connections that expired or that the server closed.
    pub fn sweep(&self) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        idle.retain_mut(|c| c.idle_since.elapsed() <= IDLE_EXPIRY && c.drive(&mut cx));
    }

    /// Sends a request and returns the response head with the connection, which the
    /// response body must keep driving and then [`checkin`](Self::checkin). On failure
    /// the request comes back when it was never sent, so it can go elsewhere.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Box<UpstreamConn>), SendFailure> {
        let mut fresh = false;
        loop {
            let conn = if fresh {
                self.connect().await
            } else {
                self.checkout().await
            };
            let mut conn = match conn {
                Ok(conn) => conn,
                Err(error) => {
                    return Err(SendFailure {
                        error,
                        unsent: Some(request),
                    });
                }
            };
            let sending = conn.sender.try_send_request(request);
            tokio::pin!(sending);
            let result = poll_fn(|cx| {
                conn.drive(cx);
                sending.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(response) => return Ok((response, conn)),
                Err(mut e) => match e.take_message() {
                    // Never written: a stale pooled connection. Once more, on a new one.
                    Some(unsent) if !fresh => {
                        request = unsent;
                        fresh = true;
                    }
                    unsent => {
                        return Err(SendFailure {
                            error: UpstreamError::Exchange(e.into_error()),
                            unsent,
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
            let request = Request::get(path)
                .header(http::header::HOST, host)
                .header(http::header::USER_AGENT, "rampart-health-check")
                .body(RequestBody::empty())
                .ok()?;
            let (response, mut conn) = self.send(request).await.ok()?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let drained = poll_fn(|cx| {
                loop {
                    conn.drive(cx);
                    match Pin::new(&mut body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(_))) => continue,
                        Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                        Poll::Ready(None) => return Poll::Ready(true),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            if drained {
                self.checkin(conn);
            }
            Some(status == expected_status)
        };
        matches!(
            tokio::time::timeout(timeout, checking).await,
            Ok(Some(true))
        )
    }
}

/// A failed [`Endpoint::send`], with the request when it was never sent.
pub struct SendFailure {
    pub error: UpstreamError,
    pub unsent: Option<Request<RequestBody>>,
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
