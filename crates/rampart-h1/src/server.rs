//! The server side of a connection: reads request heads within their bounds and deadlines,
//! hands each request to a [`Service`], writes the response, and keeps the connection for
//! the next request when both sides want that.
//!
//! One task does everything: the request body reads the socket itself (it borrows the
//! read side and gives it back when it ends), and while the service works on a request
//! without a body the loop watches the socket, so a client that goes away cancels its
//! request.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use crate::body::{BodyError, CHUNK_END, Decoded, Decoder, LAST_CHUNK, write_chunk_header};
use crate::deadline::Deadline;
use crate::head::{
    Framing, FramingField, HeadError, HeadFields, HeadLimits, RequestHead, outgoing_framing,
    parse_request, write_response_head,
};

/// Settings of the server side of connections.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub limits: HeadLimits,
    /// A request head must be complete this long after its first byte, and the first one
    /// this long after the connection opened.
    pub header_read_timeout: Duration,
    /// A connection waiting this long for its next request is closed.
    pub idle_timeout: Duration,
}

/// What the connection loop calls.
pub trait Service {
    /// The response body, which may also bring fields of its own for the head.
    type Body: Body<Data = Bytes> + HeadFields + Send + Unpin;

    /// Answers a request. The connection makes one call at a time, so a service may
    /// keep per-connection state (a cache, say) in itself.
    fn call(
        &mut self,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// Answers a head that was refused before any request could be made of it; the
    /// connection closes afterwards.
    fn refuse(&self, error: HeadError) -> Response<Self::Body>;
}

/// Room kept free in a connection's read buffer for the next read.
const HEAD_READ: usize = 4096;
const BODY_READ: usize = 32 * 1024;
/// Response bytes gathered into one write; larger pieces are written as they are.
const COALESCE: usize = 64 * 1024;
const LARGE_PIECE: usize = 16 * 1024;
/// Closing a connection whose client may still be sending: how long and how much to read
/// and discard first, so that the close does not reset the response away (RFC 9112 §9.6).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

type ReadIo = Box<dyn AsyncRead + Send + Unpin>;

/// The read side of a connection and what has been read of it.
pub(crate) struct ReadSide {
    io: ReadIo,
    buf: BytesMut,
}

impl ReadSide {
    fn make_room(&mut self, room: usize) {
        crate::make_room(&mut self.buf, room);
    }
}

/// The read side coming back from a request body.
struct Returned {
    reader: Box<ReadSide>,
    /// The body was read to its end: the connection can carry the next request.
    complete: bool,
}

type Home = Arc<Mutex<Option<Returned>>>;

/// A request's body as the server receives it. It reads the connection itself.
pub struct RequestBody {
    lent: Option<Lent>,
}

struct Lent {
    reader: Option<Box<ReadSide>>,
    decoder: Decoder,
    home: Home,
    /// Set for `Expect: 100-continue`: the first read asks the loop for the go-ahead.
    go_ahead: Option<oneshot::Sender<()>>,
}

impl Lent {
    fn give_back(&mut self, complete: bool) {
        if let Some(reader) = self.reader.take()
            && let Ok(mut slot) = self.home.lock()
        {
            *slot = Some(Returned { reader, complete });
        }
    }
}

enum Step {
    Frame(Result<Bytes, BodyError>, bool),
    End,
    Pending,
}

impl RequestBody {
    /// A body of no bytes.
    pub fn empty() -> Self {
        RequestBody { lent: None }
    }

    fn step(reader: &mut ReadSide, decoder: &mut Decoder, cx: &mut Context<'_>) -> Step {
        loop {
            match decoder.decode(&mut reader.buf) {
                Ok(Decoded::Data(data)) => return Step::Frame(Ok(data), decoder.is_done()),
                Ok(Decoded::End) => return Step::End,
                Ok(Decoded::More) => {}
                Err(e) => return Step::Frame(Err(e), false),
            }
            reader.make_room(BODY_READ);
            match poll_read_buf(Pin::new(&mut reader.io), cx, &mut reader.buf) {
                Poll::Pending => return Step::Pending,
                Poll::Ready(Ok(0)) => {
                    if let Err(e) = decoder.end_of_input() {
                        return Step::Frame(Err(e), false);
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Step::Frame(Err(e.into()), false),
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(lent) = self.get_mut().lent.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(go_ahead) = lent.go_ahead.take() {
            let _ = go_ahead.send(());
        }
        let Some(reader) = lent.reader.as_mut() else {
            return Poll::Ready(None);
        };
        match RequestBody::step(reader, &mut lent.decoder, cx) {
            Step::Pending => Poll::Pending,
            Step::End => {
                lent.give_back(true);
                Poll::Ready(None)
            }
            Step::Frame(Ok(data), last) => {
                if last {
                    lent.give_back(true);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Step::Frame(Err(e), _) => {
                lent.give_back(false);
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lent.as_ref().is_none_or(|l| l.decoder.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.lent.as_ref() {
            None => SizeHint::with_exact(0),
            Some(lent) => match lent.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(lent) = self.lent.as_mut() {
            let complete = lent.decoder.is_done();
            lent.give_back(complete);
        }
    }
}

/// Why a connection stops reading requests.
enum Ended {
    /// Closed by the client, timed out, or shutting down: nothing to answer.
    Quietly,
    Refused(HeadError),
}

struct Connection<'a, W, F> {
    reader: Option<Box<ReadSide>>,
    write: W,
    out: Vec<u8>,
    config: &'a ServerConfig,
    shutdown: Pin<&'a mut F>,
    shutting_down: bool,
    /// The timer for `deadline`, reused from request to request.
    timer: Deadline,
    /// When the wait for a head ends; None until the wait begins, so that a head already
    /// readable (the common case under load) costs no clock reading.
    deadline: Option<Instant>,
}

/// Serves HTTP/1.1 on a connection until it closes, times out, fails, or `shutdown`
/// completes (then the request in progress is answered first, with `Connection: close`).
/// `read_ahead` holds bytes already read from `read` (to tell protocols apart, say).
pub async fn serve<W, S, F>(
    read: ReadIo,
    read_ahead: BytesMut,
    write: W,
    config: &ServerConfig,
    service: &mut S,
    shutdown: Pin<&mut F>,
) where
    W: AsyncWrite + Unpin,
    S: Service,
    F: Future<Output = ()>,
{
    let opened = Instant::now();
    let mut conn = Connection {
        reader: Some(Box::new(ReadSide {
            io: read,
            buf: read_ahead,
        })),
        write,
        out: Vec::with_capacity(1024),
        config,
        shutdown,
        shutting_down: false,
        timer: Deadline::new(opened + config.header_read_timeout),
        deadline: Some(opened + config.header_read_timeout),
    };
    let mut first = true;
    loop {
        let head = match conn.next_head(first).await {
            Ok(head) => head,
            Err(Ended::Quietly) => return,
            Err(Ended::Refused(error)) => {
                let response = service.refuse(error);
                if conn
                    .respond(response, &Method::GET, Version::HTTP_11, false)
                    .await
                    .is_ok()
                {
                    conn.linger().await;
                }
                return;
            }
        };
        first = false;
        let method = head.parts.method.clone();
        let version = head.parts.version;
        let client_keeps = head.keep_alive;
        let (request, home, go_ahead) = conn.request(head);
        // Pinned here, so that the call's future carries a pointer, not the request.
        let answering = pin!(service.call(request));
        let Some(response) = conn.call(answering, go_ahead).await else {
            return;
        };
        let keep_alive =
            client_keeps && !conn.shutting_down && !crate::asks_to_close(response.headers());
        let Ok(mut keep_alive) = conn.respond(response, &method, version, keep_alive).await else {
            return;
        };
        if let Some(home) = home {
            let returned = home.lock().ok().and_then(|mut slot| slot.take());
            match returned {
                Some(Returned { reader, complete }) => {
                    conn.reader = Some(reader);
                    keep_alive &= complete;
                }
                // The body lives on elsewhere, and the connection's read side with it.
                None => return,
            }
        }
        if !keep_alive {
            conn.linger().await;
            return;
        }
    }
}

enum HeadEvent {
    Read(std::io::Result<usize>),
    Shutdown,
    Timer,
}

enum CallEvent<R> {
    Response(R),
    GoAhead(bool),
    Shutdown,
    ClientGone,
}

impl<W, F> Connection<'_, W, F>
where
    W: AsyncWrite + Unpin,
    F: Future<Output = ()>,
{
    async fn next_head(&mut self, first: bool) -> Result<RequestHead, Ended> {
        let limits = self.config.limits;
        let Some(reader) = self.reader.as_mut() else {
            return Err(Ended::Quietly);
        };
        let mut started = !reader.buf.is_empty();
        if !first {
            self.deadline = None;
        }
        loop {
            if !reader.buf.is_empty()
                && let Some(head) =
                    parse_request(&mut reader.buf, limits).map_err(Ended::Refused)?
            {
                return Ok(head);
            }
            if self.shutting_down && reader.buf.is_empty() {
                return Err(Ended::Quietly);
            }
            reader.make_room(HEAD_READ);
            let wait = if started {
                self.config.header_read_timeout
            } else {
                self.config.idle_timeout
            };
            let event = poll_fn(|cx| {
                if let Poll::Ready(read) =
                    poll_read_buf(Pin::new(&mut reader.io), cx, &mut reader.buf)
                {
                    return Poll::Ready(HeadEvent::Read(read));
                }
                // Nothing to read: the wait begins, and with it the deadline.
                let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + wait);
                if !self.shutting_down && self.shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(HeadEvent::Shutdown);
                }
                if self.timer.poll_passed(cx, deadline).is_ready() {
                    return Poll::Ready(HeadEvent::Timer);
                }
                Poll::Pending
            })
            .await;
            match event {
                HeadEvent::Read(Ok(0) | Err(_)) => return Err(Ended::Quietly),
                HeadEvent::Read(Ok(_)) => {
                    if !started {
                        started = true;
                        // The head's own deadline starts with its first bytes.
                        if !first {
                            self.deadline = None;
                        }
                    }
                }
                HeadEvent::Shutdown => self.shutting_down = true,
                HeadEvent::Timer => return Err(Ended::Quietly),
            }
        }
    }

    /// The request for a head: its body borrows the read side unless there is none.
    fn request(
        &mut self,
        head: RequestHead,
    ) -> (
        Request<RequestBody>,
        Option<Home>,
        Option<oneshot::Receiver<()>>,
    ) {
        if head.framing == Framing::Empty {
            return (
                Request::from_parts(head.parts, RequestBody::empty()),
                None,
                None,
            );
        }
        let home: Home = Arc::new(Mutex::new(None));
        let (go_ahead, asked) = if head.expect_continue {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let body = RequestBody {
            lent: Some(Lent {
                reader: self.reader.take(),
                decoder: Decoder::new(head.framing),
                home: home.clone(),
                go_ahead,
            }),
        };
        (Request::from_parts(head.parts, body), Some(home), asked)
    }

    /// Runs the service's answer to a request. `None`: the client went away, and the
    /// request was cancelled.
    async fn call<B>(
        &mut self,
        mut future: Pin<&mut impl Future<Output = Response<B>>>,
        mut go_ahead: Option<oneshot::Receiver<()>>,
    ) -> Option<Response<B>> {
        let max_buffered = self.config.limits.max_bytes;
        loop {
            let event = poll_fn(|cx| {
                if let Poll::Ready(response) = future.as_mut().poll(cx) {
                    return Poll::Ready(CallEvent::Response(response));
                }
                if let Some(asked) = go_ahead.as_mut()
                    && let Poll::Ready(sent) = Pin::new(asked).poll(cx)
                {
                    return Poll::Ready(CallEvent::GoAhead(sent.is_ok()));
                }
                if !self.shutting_down && self.shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(CallEvent::Shutdown);
                }
                // With the read side at home, a close or the next pipelined request may come.
                if let Some(reader) = self.reader.as_mut() {
                    while reader.buf.len() < max_buffered {
                        reader.make_room(HEAD_READ);
                        match poll_read_buf(Pin::new(&mut reader.io), cx, &mut reader.buf) {
                            Poll::Ready(Ok(0) | Err(_)) => {
                                return Poll::Ready(CallEvent::ClientGone);
                            }
                            Poll::Ready(Ok(_)) => {}
                            Poll::Pending => break,
                        }
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                CallEvent::Response(response) => return Some(response),
                CallEvent::GoAhead(true) => {
                    go_ahead = None;
                    self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.flush().await.ok()?;
                }
                CallEvent::GoAhead(false) => go_ahead = None,
                CallEvent::Shutdown => self.shutting_down = true,
                CallEvent::ClientGone => return None,
            }
        }
    }

    /// Writes a response; `Ok(keep_alive)` when it was written whole.
    async fn respond<B>(
        &mut self,
        response: Response<B>,
        method: &Method,
        version: Version,
        mut keep_alive: bool,
    ) -> Result<bool, ()>
    where
        B: Body<Data = Bytes> + HeadFields + Unpin,
    {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let bodiless = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let (framing, field) = if bodiless {
            // A HEAD response says the length a GET would have had, when it is known and
            // no field already says it.
            let field = (method == Method::HEAD
                && !parts.headers.contains_key(header::CONTENT_LENGTH)
                && !body.replaces(&header::CONTENT_LENGTH))
            .then(|| body.size_hint().exact())
            .flatten()
            .map(FramingField::Length);
            (Framing::Empty, field)
        } else {
            outgoing_framing(
                &parts.headers,
                body.is_end_stream(),
                body.size_hint().exact(),
                version == Version::HTTP_11,
            )
        };
        if framing == Framing::UntilClose {
            keep_alive = false;
        }
        write_response_head(
            &mut self.out,
            status,
            &parts.headers,
            &body,
            field,
            keep_alive,
            version,
        );
        drop(parts);
        if bodiless || framing == Framing::Empty {
            drop(body);
            self.flush().await?;
            return Ok(keep_alive);
        }
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match polled {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Send what there is while the body makes progress.
                    self.flush().await?;
                    poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(_)) => {
                    let _ = self.flush().await;
                    return Err(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            match framing {
                Framing::Length(_) => {
                    // More than the head announced would corrupt the connection.
                    if data.len() as u64 > remaining {
                        let _ = self.flush().await;
                        return Err(());
                    }
                    remaining -= data.len() as u64;
                    self.push(data).await?;
                }
                Framing::Chunked => {
                    write_chunk_header(&mut self.out, data.len());
                    self.push(data).await?;
                    self.out.extend_from_slice(CHUNK_END);
                }
                _ => self.push(data).await?,
            }
        }
        match framing {
            Framing::Length(_) if remaining != 0 => {
                let _ = self.flush().await;
                return Err(());
            }
            Framing::Chunked => self.out.extend_from_slice(LAST_CHUNK),
            _ => {}
        }
        self.flush().await?;
        Ok(keep_alive)
    }

    /// Adds body bytes to the output: gathered while small, written as they are when large.
    async fn push(&mut self, data: Bytes) -> Result<(), ()> {
        if self.out.len() + data.len() <= COALESCE {
            self.out.extend_from_slice(&data);
            return Ok(());
        }
        self.flush().await?;
        if data.len() >= LARGE_PIECE {
            self.write.write_all(&data).await.map_err(|_| ())
        } else {
            self.out.extend_from_slice(&data);
            Ok(())
        }
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if !self.out.is_empty() {
            self.write.write_all(&self.out).await.map_err(|_| ())?;
            self.out.clear();
        }
        self.write.flush().await.map_err(|_| ())
    }

    /// Ends the connection after its last response: no more writes, and what the client
    /// still sends is read and dropped for a while.
    async fn linger(&mut self) {
        let _ = self.write.shutdown().await;
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        let draining = async {
            let mut discarded = 0;
            while discarded < LINGER_BYTES {
                reader.buf.clear();
                reader.make_room(HEAD_READ);
                match poll_fn(|cx| poll_read_buf(Pin::new(&mut reader.io), cx, &mut reader.buf))
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, draining).await;
    }
}
