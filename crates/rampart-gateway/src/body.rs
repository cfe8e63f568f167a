//! Body wrappers: the client's body (HTTP/1.1 or HTTP/2), the request body streamed
//! upstream under a size limit, and the response body streamed to the client, which
//! completes the exchange's log line and metrics when it ends (or when the client goes
//! away).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use rampart_h1::{RawFields, eq_lowercase};
use smallvec::SmallVec;

use crate::exchange::Exchange;
use crate::headers::connection_listed;
use crate::upstream::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's body as it arrives from the client.
pub enum ClientBody {
    H1(rampart_h1::RequestBody),
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// Request-body counters shared between the body (owned by the upstream client) and the
/// request handler.
#[derive(Debug, Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub over_limit: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client's body on its way upstream: streamed, failing as soon as it passes
/// `limit`; or buffered, so that it can be sent again on a retry.
pub enum RequestBody {
    Streaming {
        /// Bytes already read from `inner` (for inspection), sent first.
        prefix: Option<Bytes>,
        inner: ClientBody,
        limit: u64,
        seen: u64,
        stats: Arc<BodyStats>,
    },
    Buffered(Option<Bytes>),
}

impl RequestBody {
    pub fn streaming(inner: ClientBody, limit: u64, stats: Arc<BodyStats>) -> Self {
        RequestBody::Streaming {
            prefix: None,
            inner,
            limit,
            seen: 0,
            stats,
        }
    }

    /// A body whose first bytes were already read: `prefix`, then the rest of `inner`.
    pub fn prefixed(prefix: Bytes, inner: ClientBody, limit: u64, stats: Arc<BodyStats>) -> Self {
        let seen = prefix.len() as u64;
        stats.bytes.fetch_add(seen, Ordering::Relaxed);
        RequestBody::Streaming {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
            limit,
            seen,
            stats,
        }
    }

    pub fn buffered(bytes: Bytes) -> Self {
        RequestBody::Buffered((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Self {
        RequestBody::Buffered(None)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streaming {
                prefix,
                inner,
                limit,
                seen,
                stats,
            } => {
                if let Some(bytes) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                };
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    *seen += len;
                    stats.bytes.fetch_add(len, Ordering::Relaxed);
                    if *seen > *limit {
                        stats.over_limit.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming { prefix, inner, .. } => {
                prefix.is_none() && inner.is_end_stream()
            }
            RequestBody::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming { prefix, inner, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = inner.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + extra);
                }
                sum
            }
            RequestBody::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

enum Source {
    /// The upstream's body, which reads its connection and gives it back at the end, and
    /// the upstream's response fields, passed on as they came but for those the gateway
    /// removes or sets itself.
    Upstream(UpstreamBody, UpstreamFields),
    Full(Option<Bytes>),
}

/// An upstream response's fields, with the choice of those passed on made once: the head
/// writer asks for them, and for whether a date or length is among them, on every response.
struct UpstreamFields {
    raw: RawFields,
    /// Bit `i` set: field `i` is passed on.
    passed: SmallVec<[u64; 2]>,
    date: bool,
    length: bool,
}

impl UpstreamFields {
    fn new(raw: RawFields, exchange: &Exchange) -> Self {
        let listed = connection_listed(&raw);
        let mut passed = SmallVec::from_elem(0u64, raw.len().div_ceil(64));
        let (mut date, mut length) = (false, false);
        for (i, (name, _)) in raw.iter().enumerate() {
            if exchange.passes_upstream_field(name)
                && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
            {
                passed[i / 64] |= 1 << (i % 64);
                date |= eq_lowercase(name, b"date");
                length |= eq_lowercase(name, b"content-length");
            }
        }
        drop(listed);
        UpstreamFields {
            raw,
            passed,
            date,
            length,
        }
    }

    fn passes(&self, i: usize) -> bool {
        self.passed[i / 64] & (1 << (i % 64)) != 0
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.raw
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.passes(i))
            .map(|(_, field)| field)
    }
}

/// The body of every response the gateway sends.
pub struct ResponseBody {
    source: Source,
    exchange: Option<Box<Exchange>>,
}

impl ResponseBody {
    pub fn upstream(body: UpstreamBody, fields: RawFields, exchange: Box<Exchange>) -> Self {
        ResponseBody {
            source: Source::Upstream(body, UpstreamFields::new(fields, &exchange)),
            exchange: Some(exchange),
        }
    }

    pub fn full(bytes: Bytes, exchange: Option<Box<Exchange>>) -> Self {
        ResponseBody {
            source: Source::Full((!bytes.is_empty()).then_some(bytes)),
            exchange,
        }
    }

    fn finish(&mut self, completed: bool) {
        // A connection is reusable only after its response was read to the end.
        let conn = match &mut self.source {
            Source::Upstream(body, _) if completed => body.take_connection(),
            _ => None,
        };
        if let Some(exchange) = self.exchange.take() {
            // One clock reading: the connection's idle start and the request's end.
            let now = Instant::now();
            if let Some(conn) = conn {
                exchange.checkin(conn, now);
            }
            exchange.finish(completed, now);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = rampart_h1::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = match &mut self.source {
            Source::Upstream(body, _) => Pin::new(body).poll_frame(cx),
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(ex)) = (frame.data_ref(), self.exchange.as_mut()) {
                    ex.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(body, _) => body.is_end_stream(),
            Source::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(body, _) => body.size_hint(),
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl ResponseBody {
    /// The upstream's fields that are passed on, if the response is the upstream's.
    fn upstream_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        match &self.source {
            Source::Upstream(_, fields) => Some(fields.iter()),
            Source::Full(_) => None,
        }
        .into_iter()
        .flatten()
    }

    /// Sets the response's fields in a header map: the upstream's that are passed on and
    /// the exchange's own (HTTP/2, which has no head lines to write them as).
    pub fn decorate(&self, headers: &mut http::HeaderMap) {
        for (name, value) in self.upstream_fields() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        if let Some(exchange) = &self.exchange {
            exchange.decorate(headers);
        }
    }
}

impl rampart_h1::HeadFields for ResponseBody {
    fn write_fields(&self, out: &mut Vec<u8>) {
        if let Source::Upstream(_, fields) = &self.source {
            fields.raw.write_lines(out, |i| fields.passes(i));
        }
        if let Some(exchange) = &self.exchange {
            exchange.write_fields(out);
        }
    }

    fn replaces(&self, name: &http::HeaderName) -> bool {
        // The upstream's own date, and a HEAD or 304 answer's length, stand for the ones a
        // writer would add.
        if let Source::Upstream(_, fields) = &self.source {
            if name == http::header::DATE {
                return fields.date;
            }
            if name == http::header::CONTENT_LENGTH {
                return fields.length;
            }
        }
        self.exchange
            .as_ref()
            .is_some_and(|e| e.replaces(name.as_str().as_bytes()))
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body dropped before its end: the client went away, or the response had no body
        // to poll (HEAD, 204, 304).
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
