//! The client connection against raw loopback servers that answer with exactly the bytes
//! each test gives.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use rampart_h1::{ClientConn, ClientError, HeadLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: 16 * 1024,
    max_headers: 64,
};

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn empty() -> Body {
    Empty::new().boxed_unsync()
}

fn request(method: Method, path: &str, body: Body) -> Request<Body> {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = path.parse().unwrap();
    r.headers_mut()
        .insert(http::header::HOST, "upstream".parse().unwrap());
    r
}

/// A server that, for each request head it reads, answers with the next of `answers`, and
/// reports what it read on `seen`.
async fn scripted(
    answers: Vec<&'static [u8]>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut pending = Vec::new();
        for answer in answers {
            let mut buf = [0u8; 65536];
            loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = pending.drain(..end + 4).collect();
                    let _ = tx.send(head);
                    break;
                }
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            if answer.is_empty() {
                // Close without answering.
                return;
            }
            socket.write_all(answer).await.unwrap();
        }
        // Then close the sending side and report what else arrives until the client closes.
        let _ = socket.shutdown().await;
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        pending.extend_from_slice(&rest);
        let _ = tx.send(pending);
    });
    (addr, rx)
}

/// A server that answers the first read of its one connection with `answer`, then keeps
/// the connection open for `hold` and closes it.
async fn answer_once(answer: &'static [u8], hold: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        socket.write_all(answer).await.unwrap();
        tokio::time::sleep(hold).await;
    });
    addr
}

/// Sends a request through a connection: the head borrowed, the body given.
async fn send(
    conn: Box<ClientConn<TcpStream>>,
    request: Request<Body>,
) -> Result<rampart_h1::ClientResponse<TcpStream>, rampart_h1::SendError<Body>> {
    let (head, body) = request.into_parts();
    conn.send(&head, body, &()).await
}

async fn connect(addr: std::net::SocketAddr) -> Box<ClientConn<TcpStream>> {
    ClientConn::new(TcpStream::connect(addr).await.unwrap(), LIMITS)
}

async fn text(body: &mut rampart_h1::ResponseBody<TcpStream>) -> String {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        out.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn a_connection_carries_exchanges_of_every_framing_and_comes_back_for_reuse() {
    let (addr, mut seen) = scripted(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
    ])
    .await;
    let conn = connect(addr).await;
    let response = send(conn, request(Method::GET, "/a?b=1", empty()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.head.status, StatusCode::OK);
    assert_eq!(response.head.fields.get("x-a"), Some(b"1".as_slice()));
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "hello");
    let conn = body
        .take_connection()
        .expect("reusable after a complete body");
    assert_eq!(conn.exchanges(), 1);
    let head = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert_eq!(head, "GET /a?b=1 HTTP/1.1\r\nhost: upstream\r\n\r\n");

    let post = request(
        Method::POST,
        "/p",
        Full::new(Bytes::from_static(b"payload")).boxed_unsync(),
    );
    let response = send(conn, post).await.ok().unwrap();
    assert_eq!(
        response.head.status,
        StatusCode::CREATED,
        "the interim 100 is skipped"
    );
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "abcde");
    let conn = body.take_connection().unwrap();
    let head = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(head.contains("content-length: 7\r\n"), "{head}");

    let response = send(conn, request(Method::HEAD, "/h", empty()))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "", "a HEAD answer has no body");
    let conn = body.take_connection().unwrap();

    let response = send(conn, request(Method::GET, "/c", empty()))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "until the close");
    assert!(
        body.take_connection().is_none(),
        "a close-delimited body ends the connection"
    );
    // The POST body came after its head.
    let _ = seen.recv().await;
    let _ = seen.recv().await;
}

#[tokio::test]
async fn bodies_of_unknown_length_go_out_in_chunks() {
    let (addr, mut seen) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await;
    let pieces = ["ab", "cde"]
        .map(|p| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(p.as_bytes()))));
    let body = StreamBody::new(futures_util::stream::iter(pieces)).boxed_unsync();
    let conn = connect(addr).await;
    let response = send(conn, request(Method::PUT, "/u", body))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "");
    let head = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    drop(body);
    let rest = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert_eq!(rest, "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");
}

#[tokio::test]
async fn a_server_that_closes_an_idle_connection_is_noticed_before_reuse() {
    let addr = answer_once(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(150),
    )
    .await;
    let conn = connect(addr).await;
    let response = send(conn, request(Method::GET, "/", empty()))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    text(&mut body).await;
    let mut conn = body.take_connection().unwrap();
    assert!(!conn.is_closed(), "open while the server keeps it");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        conn.is_closed(),
        "the server's close is seen without sending anything"
    );
}

#[tokio::test]
async fn a_reused_connection_closed_without_an_answer_is_reported_as_silent() {
    let (addr, _seen) =
        scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b""]).await;
    let conn = connect(addr).await;
    let response = send(conn, request(Method::GET, "/", empty()))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    text(&mut body).await;
    let conn = body.take_connection().unwrap();
    let Err(failure) = send(conn, request(Method::GET, "/again", empty())).await else {
        panic!("no answer was given");
    };
    assert!(
        matches!(failure.error, ClientError::Closed),
        "{}",
        failure.error
    );
    assert!(failure.silent_reuse);
    assert!(failure.written, "the request was written");
    assert!(failure.body.is_some(), "the untouched body comes back");

    // The same on a fresh connection is not a reuse race.
    let (addr, _seen) = scripted(vec![b""]).await;
    let Err(failure) = send(connect(addr).await, request(Method::GET, "/", empty())).await else {
        panic!("no answer was given");
    };
    assert!(!failure.silent_reuse);
}

#[tokio::test]
async fn malformed_or_truncated_answers_fail_and_spoil_the_connection() {
    let (addr, _seen) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"]).await;
    let Err(failure) = send(connect(addr).await, request(Method::GET, "/", empty())).await else {
        panic!("malformed head accepted");
    };
    assert!(
        matches!(failure.error, ClientError::Head(_)),
        "{}",
        failure.error
    );

    let (addr, _seen) = scripted(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"",
    ])
    .await;
    let response = send(connect(addr).await, request(Method::GET, "/", empty()))
        .await
        .ok()
        .unwrap();
    let mut body = response.body;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"short");
    // The server stops answering; the script ends by closing once the client closes, so
    // wait on the body with a deadline.
    let next = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
    assert!(
        next.is_err() || matches!(next, Ok(Some(Err(_)))),
        "{next:?}"
    );
    assert!(body.take_connection().is_none());

    let (addr, _seen) = scripted(vec![
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    ])
    .await;
    let Err(failure) = send(connect(addr).await, request(Method::GET, "/", empty())).await else {
        panic!("101 accepted");
    };
    assert!(matches!(failure.error, ClientError::Upgrade));
}

#[tokio::test]
async fn a_request_that_could_not_be_written_comes_back_unsent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // Reset at once.
        #[allow(deprecated)] // A zero linger resets at once: nothing blocks.
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket);
    });
    let mut conn = connect(addr).await;
    accepting.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(conn.is_closed(), "the reset is seen before any request");
    let Err(failure) = send(conn, request(Method::DELETE, "/d", empty())).await else {
        panic!("sent on a reset connection");
    };
    assert!(
        matches!(failure.error, ClientError::Write(_)),
        "{}",
        failure.error
    );
    assert!(!failure.written);
    assert!(failure.body.is_some(), "the body comes back");
}

#[tokio::test]
async fn an_early_answer_during_an_upload_is_taken_and_the_upload_stopped() {
    let answer =
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig";
    let addr = answer_once(answer, Duration::from_secs(2)).await;
    // A body that never ends on its own.
    let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let body = StreamBody::new(stream).boxed_unsync();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first"))))
        .await
        .unwrap();
    let conn = connect(addr).await;
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        send(conn, request(Method::POST, "/up", body)),
    )
    .await
    .expect("the answer is taken while the body is still open")
    .ok()
    .unwrap();
    assert_eq!(response.head.status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut body = response.body;
    assert_eq!(text(&mut body).await, "big");
    assert!(body.take_connection().is_none());
    drop(tx);
}
