//! HTTP/1.1 on the wire, for a proxy that must be fast and strict: bounded head parsing
//! with framing decided per RFC 9112 (and every ambiguous framing refused), body decoding
//! by length, chunks or close, a server connection loop, and a client connection for
//! upstreams. Message types are the `http` crate's; bodies are `http_body::Body`.
//!
//! Each side runs in one task: bodies read their connection themselves instead of being
//! fed through channels, and heads are parsed in place, their values sharing the bytes
//! read.

mod body;
pub mod client;
mod deadline;
pub mod head;
pub mod server;
mod token;

pub use body::BodyError;
pub use client::{ClientConn, ClientError, ClientResponse, ResponseBody, SendError};
pub use deadline::Deadline;
pub use head::{
    Framing, HeadError, HeadFields, HeadLimits, RawFields, ResponseHead, recycle_header_map,
    write_field_line,
};
pub use server::{RequestBody, ServerConfig, Service, serve};
pub use token::eq_lowercase;

use bytes::BytesMut;
use http::HeaderMap;

/// Keeps at least a quarter of `room` free for the next read.
pub(crate) fn make_room(buf: &mut BytesMut, room: usize) {
    if buf.capacity() - buf.len() < room / 4 {
        buf.reserve(room);
    }
}

/// Whether a message's `Connection` field says `close`.
pub(crate) fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| eq_lowercase(t.trim_ascii(), b"close"))
    })
}
