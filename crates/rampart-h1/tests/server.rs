//! The server connection loop over real loopback sockets, driven by raw clients so that
//! every byte on the wire is the test's own.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use rampart_h1::{HeadError, HeadLimits, RequestBody, ServerConfig, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A response body with one field of its own for the head.
struct Body(UnsyncBoxBody<Bytes, Infallible>);

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

impl rampart_h1::HeadFields for Body {
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"x-served-by: test\r\n");
    }

    fn replaces(&self, name: &http::HeaderName) -> bool {
        name == "x-served-by"
    }
}

fn full(text: impl Into<Bytes>) -> Body {
    Body(Full::new(text.into()).boxed_unsync())
}

#[derive(Default)]
struct Probe {
    calls: AtomicUsize,
    cancelled: AtomicBool,
}

/// Sets `cancelled` when a request's future is dropped before it finished.
struct CancelGuard(Arc<Probe>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

struct TestService(Arc<Probe>);

impl Service for TestService {
    type Body = Body;

    fn call(
        &mut self,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Response<Body>> + Send {
        let probe = self.0.clone();
        async move {
            probe.calls.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            match path.as_str() {
                "/echo" => {
                    let method = request.method().to_string();
                    let body = request.into_body().collect().await.map(|b| b.to_bytes());
                    match body {
                        Ok(bytes) => Response::new(full(format!(
                            "{method} {} {}",
                            bytes.len(),
                            String::from_utf8_lossy(&bytes)
                        ))),
                        Err(e) => {
                            let mut r = Response::new(full(e.to_string()));
                            *r.status_mut() = StatusCode::BAD_REQUEST;
                            r
                        }
                    }
                }
                "/stream" => {
                    let pieces = ["one ", "two ", "three"].map(|p| {
                        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
                            p.as_bytes(),
                        )))
                    });
                    Response::new(Body(
                        StreamBody::new(futures_util::stream::iter(pieces)).boxed_unsync(),
                    ))
                }
                "/refuse" => {
                    let mut r = Response::new(full("too large"));
                    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                    r
                }
                "/slow" => {
                    let mut guard = CancelGuard(probe.clone(), false);
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    guard.1 = true;
                    Response::new(full("slow done"))
                }
                _ => {
                    let mut r = Response::new(full(format!("path {path}")));
                    // The body's own field stands for this one.
                    r.headers_mut()
                        .insert("x-served-by", "the map".parse().unwrap());
                    r
                }
            }
        }
    }

    fn refuse(&self, error: HeadError) -> Response<Body> {
        let mut r = Response::new(full(format!("refused: {error}")));
        *r.status_mut() = error.status();
        r
    }
}

struct Server {
    addr: std::net::SocketAddr,
    probe: Arc<Probe>,
    shutdown: CancellationToken,
}

async fn start(header_read_timeout: Duration, idle_timeout: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = Arc::new(Probe::default());
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        limits: HeadLimits {
            max_bytes: 4096,
            max_headers: 32,
        },
        header_read_timeout,
        idle_timeout,
    };
    let token = shutdown.clone();
    let calls = probe.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mut service = TestService(calls.clone());
            let token = token.clone();
            tokio::spawn(async move {
                let (read, write) = stream.into_split();
                let cancelled = token.cancelled();
                tokio::pin!(cancelled);
                rampart_h1::serve(
                    Box::new(read),
                    bytes::BytesMut::new(),
                    write,
                    &config,
                    &mut service,
                    cancelled.as_mut(),
                )
                .await;
            });
        }
    });
    Server {
        addr,
        probe,
        shutdown,
    }
}

async fn default_server() -> Server {
    start(Duration::from_secs(5), Duration::from_secs(5)).await
}

/// Reads one response: head, then a body by Content-Length or chunks (decoded).
async fn read_response(socket: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8(pending[..end + 4].to_vec()).unwrap();
            pending.drain(..end + 4);
            let lower = head.to_ascii_lowercase();
            if head.starts_with("HTTP/1.1 1") {
                return (head, String::new());
            }
            if let Some(len) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse::<usize>().unwrap())
            {
                while pending.len() < len {
                    fill(socket, pending).await;
                }
                let body = String::from_utf8(pending.drain(..len).collect()).unwrap();
                return (head, body);
            }
            if lower.contains("transfer-encoding: chunked") {
                let mut body = String::new();
                loop {
                    while find(pending, b"\r\n").is_none() {
                        fill(socket, pending).await;
                    }
                    let line_end = find(pending, b"\r\n").unwrap();
                    let size = usize::from_str_radix(
                        std::str::from_utf8(&pending[..line_end]).unwrap(),
                        16,
                    )
                    .unwrap();
                    while pending.len() < line_end + 2 + size + 2 {
                        fill(socket, pending).await;
                    }
                    let chunk: Vec<u8> = pending.drain(..line_end + 2 + size + 2).collect();
                    if size == 0 {
                        return (head, body);
                    }
                    body.push_str(
                        std::str::from_utf8(&chunk[line_end + 2..line_end + 2 + size]).unwrap(),
                    );
                }
            }
            // Until close.
            let mut rest = Vec::new();
            socket.read_to_end(&mut rest).await.unwrap();
            pending.extend_from_slice(&rest);
            let body = String::from_utf8(std::mem::take(pending)).unwrap();
            return (head, body);
        }
        fill(socket, pending).await;
    }
}

async fn fill(socket: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    assert!(
        n > 0,
        "connection closed; had {:?}",
        String::from_utf8_lossy(pending)
    );
    pending.extend_from_slice(&buf[..n]);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether the server closed the connection within 5 s.
async fn closed(socket: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn requests_follow_each_other_on_one_connection_even_pipelined() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    socket
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut socket, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
    assert!(
        head.contains("\r\nx-served-by: test\r\n") && !head.contains("the map"),
        "{head}"
    );
    assert_eq!(body, "path /a");
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut socket, &mut pending).await.1,
        "POST 5 hello"
    );
    assert_eq!(read_response(&mut socket, &mut pending).await.1, "path /b");
    assert_eq!(server.probe.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn chunked_requests_are_decoded_and_unknown_lengths_sent_in_chunks() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    socket
        .write_all(
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    socket
        .write_all(b"4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut socket, &mut pending).await.1,
        "PUT 7 abcdefg"
    );
    socket
        .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut socket, &mut pending).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, "one two three");
    // An HTTP/1.0 client cannot read chunks: the body runs until the close.
    socket
        .write_all(b"GET /stream HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut socket, &mut pending).await;
    assert!(
        head.contains("connection: close") && !head.contains("chunked"),
        "{head}"
    );
    assert_eq!(body, "one two three");
}

#[tokio::test]
async fn heads_that_could_be_read_two_ways_are_refused_and_the_connection_closed() {
    let server = default_server().await;
    let cases: [(&[u8], &str); 5] = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\n\r\n", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(request).await.unwrap();
        let mut pending = Vec::new();
        let (head, body) = read_response(&mut socket, &mut pending).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(body.starts_with("refused: "), "{body}");
        assert!(closed(&mut socket).await);
    }
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "v".repeat(5000)
    );
    socket.write_all(huge.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut socket, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert_eq!(server.probe.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_malformed_chunk_fails_the_body_and_ends_the_connection() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut socket, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("chunk"), "{body}");
    assert!(closed(&mut socket).await);
}

#[tokio::test]
async fn continue_is_sent_only_when_the_body_is_wanted() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    socket
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let (interim, _) = read_response(&mut socket, &mut pending).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    socket.write_all(b"data").await.unwrap();
    assert_eq!(
        read_response(&mut socket, &mut pending).await.1,
        "POST 4 data"
    );

    // Refused before reading: no go-ahead, and the unread body ends the connection.
    socket
        .write_all(b"POST /refuse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut socket, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(closed(&mut socket).await);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.probe.cancelled.load(Ordering::SeqCst),
        "the service future was not dropped"
    );
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed_on_time() {
    let server = start(Duration::from_millis(300), Duration::from_millis(600)).await;
    // Half a head, then nothing: closed at the header-read deadline.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed(&mut slow).await);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(1500)).contains(&waited),
        "{waited:?}"
    );

    // After a response, the idle timeout applies; a request's first byte starts the
    // header deadline.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle, &mut Vec::new()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    idle.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    assert!(closed(&mut idle).await);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(1500)).contains(&waited),
        "{waited:?}"
    );

    let mut quiet = TcpStream::connect(server.addr).await.unwrap();
    quiet
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut quiet, &mut Vec::new()).await;
    let started = Instant::now();
    assert!(closed(&mut quiet).await);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_answers_the_request_in_flight_with_close_and_drops_idle_ones() {
    let server = default_server().await;
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle, &mut Vec::new()).await;
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    assert!(closed(&mut idle).await);
    let (head, body) = read_response(&mut busy, &mut Vec::new()).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "slow done");
    assert!(closed(&mut busy).await);
}

#[tokio::test]
async fn head_and_bodiless_statuses_send_no_body() {
    let server = default_server().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    // The HEAD answer has the GET's length and no body: the next bytes are the next
    // response's.
    loop {
        if find(&pending, b"path /y").is_some() {
            break;
        }
        fill(&mut socket, &mut pending).await;
    }
    let text = String::from_utf8(pending).unwrap();
    let first = text.split("\r\n\r\n").next().unwrap();
    assert!(first.contains("content-length: 7"), "{text}");
    assert!(
        text[first.len() + 4..].starts_with("HTTP/1.1 200 OK"),
        "{text}"
    );
}

#[tokio::test]
async fn the_client_decides_whether_the_connection_stays_open() {
    let server = default_server().await;
    // HTTP/1.1 asking to close: answered with `connection: close`, then closed.
    let mut closing = TcpStream::connect(server.addr).await.unwrap();
    closing
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut closing, &mut Vec::new()).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "path /a");
    assert!(closed(&mut closing).await);

    // HTTP/1.0 asking to keep it: told so, and a second request is served.
    let mut keeping = TcpStream::connect(server.addr).await.unwrap();
    let mut pending = Vec::new();
    keeping
        .write_all(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut keeping, &mut pending).await;
    assert!(head.contains("connection: keep-alive"), "{head}");
    keeping.write_all(b"GET /c HTTP/1.0\r\n\r\n").await.unwrap();
    let (head, body) = read_response(&mut keeping, &mut pending).await;
    assert!(
        head.contains("connection: close"),
        "HTTP/1.0 closes by default: {head}"
    );
    assert_eq!(body, "path /c");
    assert!(closed(&mut keeping).await);
}
