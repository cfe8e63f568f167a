//! Test support: a real upstream HTTP server on loopback, and a gateway started on
//! ephemeral ports.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rampart_gateway::{Config, Gateway, GatewayHandle};
use tokio::net::TcpListener;

/// An upstream that answers by path:
/// - `/slow?ms=N`: waits N ms, then answers like `/echo`
/// - `/big?bytes=N`: N bytes of a repeating pattern
/// - anything else: a JSON summary of what it received (method, path, headers, body
///   length and FNV-1a hash), plus headers a proxy must strip or replace.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

pub const FNV_OFFSET: u64 = 0xcbf29ce484222325;

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(query_number(&req, "ms"))).await;
    }
    if req.uri().path() == "/big" {
        let n = query_number(&req, "bytes") as usize;
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let mut body = req.into_body();
    let mut length = 0u64;
    let mut hash = FNV_OFFSET;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
            hash = fnv1a(hash, data);
        }
    }
    let summary = serde_json::json!({
        "method": method, "path": path, "headers": headers,
        "body_len": length, "body_hash": format!("{hash:016x}"),
    });
    let mut response = Response::new(Full::new(Bytes::from(summary.to_string())));
    let h = response.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("server", "upstream/1.0".parse().unwrap());
    h.insert("x-powered-by", "php/5".parse().unwrap());
    h.insert("access-control-allow-origin", "*".parse().unwrap());
    h.insert("x-frame-options", "ALLOWALL".parse().unwrap());
    h.insert("x-upstream", "yes".parse().unwrap());
    Ok(response)
}

/// Starts the upstream on an ephemeral loopback port.
pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    answer(req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, hits }
}

/// A loopback address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub handle: GatewayHandle,
    pub task: tokio::task::JoinHandle<()>,
    pub access_log: LogSink,
}

/// Collects what the gateway writes to its access log.
#[derive(Clone, Default)]
pub struct LogSink(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogSink {
    /// Waits (up to 5 s) for the access log line of `request_id` and parses it.
    pub async fn entry(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..250 {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            if let Some(line) = text.lines().find(|l| l.contains(request_id)) {
                return serde_json::from_str(line).expect("access log lines are JSON");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no access log line for {request_id}");
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The Prometheus text of the admin listener.
    pub async fn metrics(&self) -> String {
        let resp = client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        resp.text().await.unwrap()
    }

    /// The `/health` document.
    pub async fn health(&self) -> serde_json::Value {
        let resp = client()
            .get(self.admin_url("/health"))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    }
}

/// Config text with ephemeral listeners and the upstream as the default pool, followed by
/// `extra` TOML.
pub fn config_text(upstream: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}\n{}\n[upstreams.default]\nservers = [\"{upstream}\"]\n",
        no_rate_limit(extra)
    )
}

/// Tests of other features send more than the default 60 requests a minute: rate limits
/// are off unless a test configures them.
fn no_rate_limit(extra: &str) -> &'static str {
    if extra.contains("[rate_limit]") || extra.contains("rate_limit =") {
        ""
    } else {
        "\n[rate_limit]\nenabled = false\n"
    }
}

pub async fn start_gateway(config: Config) -> Running {
    let access_log = LogSink::default();
    let gateway = Gateway::bind_with_access_log(config, Box::new(access_log.clone()))
        .await
        .expect("gateway binds");
    let addr = gateway.local_addr();
    let admin = gateway.admin_addr();
    let handle = gateway.handle();
    let task = tokio::spawn(gateway.run());
    Running {
        addr,
        admin,
        handle,
        task,
        access_log,
    }
}

pub async fn start(upstream: &str, extra: &str) -> Running {
    let config = Config::parse(&config_text(upstream, extra), None).expect("test config parses");
    start_gateway(config).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// What a [`Faulty`] upstream does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 200 with a small JSON body.
    Healthy,
    /// This status.
    Status(u16),
    /// Wait this long, then 200.
    DelayMs(u64),
    /// Read the request and close the connection without an answer.
    Reset,
    /// Send the head and part of the body, then close the connection.
    ResetMidBody,
    /// Fail with 503 and succeed in turns of this many milliseconds.
    FlapMs(u64),
}

/// A fault-injecting upstream on a real socket. It closes every connection after one
/// response, so that refusing connections takes effect at once.
pub struct Faulty {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// `x-request-id` of every request received, in order.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    fault: Arc<std::sync::Mutex<Fault>>,
    /// What `/health` answers: 200 or 503.
    healthy: Arc<std::sync::atomic::AtomicBool>,
    acceptor: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    started: std::time::Instant,
}

impl Faulty {
    pub async fn start(fault: Fault) -> Arc<Faulty> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let faulty = Arc::new(Faulty {
            addr: listener.local_addr().unwrap(),
            hits: Arc::new(AtomicUsize::new(0)),
            seen: Arc::default(),
            fault: Arc::new(std::sync::Mutex::new(fault)),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            acceptor: std::sync::Mutex::new(None),
            started: std::time::Instant::now(),
        });
        faulty.accept_on(listener);
        faulty
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Stops listening: new connections are refused.
    pub fn refuse(&self) {
        if let Some(task) = self.acceptor.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn resume(self: &Arc<Self>) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept_on(listener);
    }

    fn accept_on(self: &Arc<Self>, listener: TcpListener) {
        let me = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let me = me.clone();
                        async move { me.answer(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        *self.acceptor.lock().unwrap() = Some(task);
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<http_body_util::StreamBody<FaultyStream>>, std::io::Error> {
        let stream = |chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>>| {
            let s: FaultyStream = Box::pin(futures_util::stream::iter(chunks));
            http_body_util::StreamBody::new(s)
        };
        if req.uri().path() == "/health" {
            let status = if self.healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            let mut r = Response::new(stream(vec![]));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            return Ok(r);
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.seen.lock().unwrap().push(id);
        // Read the whole request body first, as a real server would.
        let _ = req.into_body().collect().await;
        let fault = *self.fault.lock().unwrap();
        let fault = match fault {
            Fault::FlapMs(period) => {
                let turn = self.started.elapsed().as_millis() as u64 / period.max(1);
                if turn.is_multiple_of(2) {
                    Fault::Status(503)
                } else {
                    Fault::Healthy
                }
            }
            other => other,
        };
        let ok = || {
            let chunk: Result<_, std::io::Error> = Ok(hyper::body::Frame::data(
                Bytes::from_static(b"{\"ok\":true}"),
            ));
            Response::new(stream(vec![chunk]))
        };
        match fault {
            Fault::Healthy | Fault::FlapMs(_) => Ok(ok()),
            Fault::Status(code) => {
                let mut r = ok();
                *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                Ok(r)
            }
            Fault::DelayMs(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ok())
            }
            Fault::Reset => Err(std::io::Error::other("reset")),
            Fault::ResetMidBody => {
                use futures_util::StreamExt;
                // Part of the body, a pause so that it is surely on the wire, then the end.
                let first = futures_util::stream::iter([Ok(hyper::body::Frame::data(
                    Bytes::from(vec![b'x'; 1000]),
                ))]);
                let then_fail = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("reset mid-body"))
                });
                let s: FaultyStream = Box::pin(first.chain(then_fail));
                let mut r = Response::new(http_body_util::StreamBody::new(s));
                r.headers_mut()
                    .insert("content-length", "100000".parse().unwrap());
                Ok(r)
            }
        }
    }
}

pub type FaultyStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>> + Send>,
>;

/// A gateway in front of one pool, `default`, with `pool` TOML lines added to the pool's
/// table and `route` lines to the catch-all route's.
pub async fn start_pool(servers: &[String], pool: &str, route: &str) -> Running {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{}\n[upstreams.default]\nservers = [{}]\n{pool}\n\n[[routes]]\nname = \"default\"\nprefix = \"/\"\nupstream = \"default\"\n{route}\n",
        no_rate_limit(""),
        list.join(", ")
    );
    let config = Config::parse(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    start_gateway(config).await
}

/// The value of one sample (`name{labels}` exactly as exposed) in Prometheus text.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(n, _)| *n == sample))
        .and_then(|(_, v)| v.parse().ok())
}
