//! The client side of a connection to an upstream server: one exchange at a time, the
//! response body reading the connection itself and handing it back for reuse when it
//! ends cleanly.

use std::error::Error as StdError;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use crate::body::{BodyError, CHUNK_END, Decoded, Decoder, LAST_CHUNK, write_chunk_header};
use crate::head::{
    Framing, FramingField, HeadError, HeadFields, HeadLimits, ResponseHead, outgoing_framing,
    parse_response, write_request_head,
};
use crate::make_room;

const HEAD_READ: usize = 4096;
const BODY_READ: usize = 32 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("writing the request: {0}")]
    Write(std::io::Error),
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("the connection closed before a response arrived")]
    Closed,
    #[error("malformed response: {0}")]
    Head(HeadError),
    #[error("the request body failed: {0}")]
    Body(Box<dyn StdError + Send + Sync>),
    #[error("the request body did not match its Content-Length")]
    BodyLength,
    #[error("the server switched protocols unasked")]
    Upgrade,
}

/// A failed exchange.
pub struct SendError<B> {
    pub error: ClientError,
    /// The body, when it was never touched (always so for requests without one), even if
    /// the head was written: where that is safe, the request can be sent again as it is.
    pub body: Option<B>,
    /// Some of the request reached the connection.
    pub written: bool,
    /// The connection had carried an exchange before and this one got not a single byte
    /// back: most likely the server closed the idle connection as the request went out.
    pub silent_reuse: bool,
}

/// One HTTP/1.1 connection to a server.
pub struct ClientConn<IO> {
    io: IO,
    buf: BytesMut,
    out: Vec<u8>,
    limits: HeadLimits,
    exchanges: u64,
}

enum Upload {
    Frame(Option<Result<Frame<Bytes>, Box<dyn StdError + Send + Sync>>>),
    Answered,
    Closed,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ClientConn<IO> {
    /// `limits` bound the response heads read on this connection.
    pub fn new(io: IO, limits: HeadLimits) -> Box<Self> {
        Box::new(ClientConn {
            io,
            buf: BytesMut::with_capacity(HEAD_READ),
            out: Vec::with_capacity(512),
            limits,
            exchanges: 0,
        })
    }

    /// Exchanges completed on this connection.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// Whether an idle connection can no longer be used: the server closed it, or sent
    /// bytes nobody asked for. Does not wait.
    pub fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        make_room(&mut self.buf, HEAD_READ);
        !matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf),
            Poll::Pending
        )
    }

    /// Writes `out`; `Err((error, wrote_any))`.
    async fn write_out(&mut self) -> Result<(), (std::io::Error, bool)> {
        let mut written = 0;
        while written < self.out.len() {
            match self.io.write(&self.out[written..]).await {
                Ok(0) => return Err((std::io::ErrorKind::WriteZero.into(), written > 0)),
                Ok(n) => written += n,
                Err(e) => return Err((e, written > 0)),
            }
        }
        self.out.clear();
        self.io.flush().await.map_err(|e| (e, true))
    }

    /// Sends a request, with `extra` fields besides those of the head's map, and reads
    /// the response head. The head is only borrowed, so that the caller can send it again.
    /// The response body reads the rest and gives the connection back through
    /// [`ResponseBody::take_connection`].
    pub async fn send<B>(
        mut self: Box<Self>,
        head: &http::request::Parts,
        mut body: B,
        extra: &(dyn HeadFields + Sync),
    ) -> Result<ClientResponse<IO>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let reused = self.exchanges > 0;
        let method = &head.method;
        let close = crate::asks_to_close(&head.headers);
        let (framing, field) = outgoing_framing(
            &head.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
            true,
        );
        let field = match field {
            Some(FramingField::Length(0))
                if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) =>
            {
                None
            }
            field => field,
        };
        self.out.clear();
        write_request_head(
            &mut self.out,
            method,
            &head.uri,
            &head.headers,
            extra,
            field,
            close,
        );
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut body_sent = framing == Framing::Empty;
        let mut touched = false;
        if !body_sent {
            // The first piece rides with the head when it is already here.
            let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            if let Poll::Ready(polled) = first {
                touched = true;
                let encoded = match polled {
                    None => self
                        .finish_body(framing, remaining)
                        .map(|()| body_sent = true),
                    Some(Err(e)) => Err(ClientError::Body(e.into())),
                    Some(Ok(frame)) => match frame.data_ref() {
                        Some(data) => self.encode(framing, data, &mut remaining),
                        None => Ok(()),
                    },
                };
                if let Err(error) = encoded {
                    return Err(fail(error, None, false, false));
                }
            }
        }
        if let Err((e, wrote_any)) = self.write_out().await {
            let body = (!touched).then_some(body);
            return Err(fail(
                ClientError::Write(e),
                body,
                wrote_any,
                reused && !wrote_any,
            ));
        }
        // An untouched body (one that was empty) is kept, to be given back if the exchange
        // fails.
        let mut kept = None;
        let mut answered = false;
        if body_sent {
            kept = (!touched).then_some(body);
        } else {
            while !body_sent && !answered {
                let event = poll_fn(|cx| {
                    if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                        return Poll::Ready(Upload::Frame(frame.map(|r| r.map_err(Into::into))));
                    }
                    // The server may answer (or give up) before the body is all sent.
                    make_room(&mut self.buf, HEAD_READ);
                    match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf) {
                        Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(Upload::Closed),
                        Poll::Ready(Ok(_)) => Poll::Ready(Upload::Answered),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await;
                let data = match event {
                    Upload::Frame(None) => {
                        self.finish_body(framing, remaining)
                            .map_err(|e| fail(e, None, true, false))?;
                        body_sent = true;
                        None
                    }
                    Upload::Frame(Some(Err(e))) => {
                        return Err(fail(ClientError::Body(e), None, true, false));
                    }
                    Upload::Frame(Some(Ok(frame))) => frame.into_data().ok(),
                    Upload::Answered => {
                        answered = true;
                        continue;
                    }
                    Upload::Closed if self.buf.is_empty() => {
                        return Err(fail(ClientError::Closed, None, true, false));
                    }
                    Upload::Closed => {
                        answered = true;
                        continue;
                    }
                };
                if let Some(data) = data {
                    self.encode(framing, &data, &mut remaining)
                        .map_err(|e| fail(e, None, true, false))?;
                }
                if let Err((e, _)) = self.write_out().await {
                    // Refused mid-upload: the server may have said why first.
                    if self.buf.is_empty() {
                        return Err(fail(ClientError::Write(e), None, true, false));
                    }
                    answered = true;
                }
            }
        }
        let response = match self.read_head(method).await {
            Ok(response) => response,
            Err((error, received)) => return Err(fail(error, kept, true, reused && !received)),
        };
        let keep_alive = response.keep_alive && !close && body_sent;
        let body = ResponseBody {
            decoder: Decoder::new(response.framing),
            conn: Some(self),
            keep_alive,
        };
        Ok(ClientResponse {
            head: response,
            body,
        })
    }

    /// Frames a piece of the request body into `out`.
    fn encode(
        &mut self,
        framing: Framing,
        data: &Bytes,
        remaining: &mut u64,
    ) -> Result<(), ClientError> {
        if data.is_empty() {
            return Ok(());
        }
        match framing {
            Framing::Chunked => {
                write_chunk_header(&mut self.out, data.len());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(CHUNK_END);
            }
            _ => {
                if data.len() as u64 > *remaining {
                    return Err(ClientError::BodyLength);
                }
                *remaining -= data.len() as u64;
                self.out.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// The body ended: the last chunk, or a check that the length was met.
    fn finish_body(&mut self, framing: Framing, remaining: u64) -> Result<(), ClientError> {
        match framing {
            Framing::Chunked => self.out.extend_from_slice(LAST_CHUNK),
            Framing::Length(_) if remaining != 0 => return Err(ClientError::BodyLength),
            _ => {}
        }
        Ok(())
    }

    /// Reads the final response head, skipping interim ones. `Err((error, received_any))`.
    async fn read_head(&mut self, method: &Method) -> Result<ResponseHead, (ClientError, bool)> {
        let mut received = !self.buf.is_empty();
        loop {
            // Nothing is parsed before the first bytes: the buffer is empty on every
            // exchange of a reused connection.
            if !self.buf.is_empty() {
                match parse_response(&mut self.buf, self.limits, method) {
                    Ok(Some(head)) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                        return Err((ClientError::Upgrade, true));
                    }
                    // 100 Continue, 103 Early Hints: the final answer follows.
                    Ok(Some(head)) if head.status.is_informational() => continue,
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => return Err((ClientError::Head(e), true)),
                }
            }
            make_room(&mut self.buf, HEAD_READ);
            match poll_fn(|cx| poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)).await {
                Ok(0) => return Err((ClientError::Closed, received)),
                Ok(_) => received = true,
                Err(e) => return Err((ClientError::Read(e), received)),
            }
        }
    }
}

fn fail<B>(error: ClientError, body: Option<B>, written: bool, silent_reuse: bool) -> SendError<B> {
    SendError {
        error,
        body,
        written,
        silent_reuse,
    }
}

/// A response as the client receives it: the head with its fields as sent, and the body.
pub struct ClientResponse<IO> {
    pub head: ResponseHead,
    pub body: ResponseBody<IO>,
}

/// A response's body as the client receives it. It reads the connection itself.
pub struct ResponseBody<IO> {
    conn: Option<Box<ClientConn<IO>>>,
    decoder: Decoder,
    keep_alive: bool,
}

impl<IO> ResponseBody<IO> {
    /// The connection, once the body was read to its end and the connection can carry
    /// another exchange.
    pub fn take_connection(&mut self) -> Option<Box<ClientConn<IO>>> {
        if !(self.decoder.is_done() && self.keep_alive) {
            return None;
        }
        let mut conn = self.conn.take()?;
        // Bytes past the response are no answer to anything: the connection is spoiled.
        if !conn.buf.is_empty() {
            return None;
        }
        conn.exchanges += 1;
        Some(conn)
    }
}

impl<IO: AsyncRead + Unpin> Body for ResponseBody<IO> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            make_room(&mut conn.buf, BODY_READ);
            match poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if let Err(e) = this.decoder.end_of_input() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.keep_alive = false;
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
