//! Message heads: parsing requests and responses within bounds, the framing of their
//! bodies (RFC 9112 §6), and writing heads.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use smallvec::SmallVec;

use crate::eq_lowercase;

/// Bounds on a message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes of the whole head: start line, header fields and the blank line.
    pub max_bytes: usize,
    /// Header fields.
    pub max_headers: usize,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes, more than zero.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("header fields too large")]
    TooLarge,
    #[error("{0}")]
    Malformed(&'static str),
    #[error("transfer coding not implemented")]
    UnsupportedCoding,
}

impl HeadError {
    /// The status a server answers a request head with this error.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client asks to keep the connection open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before the body.
    pub expect_continue: bool,
}

/// A parsed response head. Its fields stay as they arrived: a proxy mostly passes them on,
/// and building a header map would cost a hash and an insertion for each.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: RawFields,
    pub framing: Framing,
    /// The server will keep the connection open after this exchange.
    pub keep_alive: bool,
}

/// Header fields as they arrived: names in the sender's case, values as sent. The parser
/// has checked that names are tokens and values hold no control characters, so they can
/// be written out again as they are.
#[derive(Debug, Clone, Default)]
pub struct RawFields {
    head: Bytes,
    fields: Vec<FieldAt>,
}

impl Drop for RawFields {
    fn drop(&mut self) {
        let mut fields = std::mem::take(&mut self.fields);
        let capacity = fields.capacity();
        fields.clear();
        // `try_with`: a drop while the thread's storage is torn down just frees.
        let _ = FIELD_LISTS.try_with(|stock| stock.give(fields, capacity));
    }
}

impl RawFields {
    /// Name and value of each field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (range(&self.head, f.name), range(&self.head, f.value)))
    }

    /// The first value of the field `name` (compared without case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Writes the fields that `keep` chooses (by their index) as `name: value\r\n` lines.
    /// A line that arrived in exactly that form is copied as it came, and a run of such lines
    /// at once: a proxy passes most of a response's fields on unchanged, and one copy of a
    /// run costs less than four appends for each field.
    pub fn write_lines(&self, out: &mut Vec<u8>, mut keep: impl FnMut(usize) -> bool) {
        let head = &self.head[..];
        // The bytes of the lines waiting to be copied.
        let mut run = 0..0;
        for (i, field) in self.fields.iter().enumerate() {
            if !keep(i) {
                continue;
            }
            let (name_start, name_end) = (field.name.0 as usize, field.name.1 as usize);
            let (value_start, value_end) = (field.value.0 as usize, field.value.1 as usize);
            let as_written = value_start == name_end + 2
                && head.get(name_end..value_start) == Some(b": ")
                && head.get(value_end..value_end + 2) == Some(b"\r\n");
            if as_written && run.end == name_start && !run.is_empty() {
                run.end = value_end + 2;
                continue;
            }
            out.extend_from_slice(&head[run.clone()]);
            if as_written {
                run = name_start..value_end + 2;
            } else {
                run = 0..0;
                write_field_line(
                    out,
                    &head[name_start..name_end],
                    &head[value_start..value_end],
                );
            }
        }
        out.extend_from_slice(&head[run]);
    }

    /// The fields in a header map; values share the head's memory.
    pub fn to_header_map(&self) -> Result<HeaderMap, HeadError> {
        header_map(&self.head, &self.fields, &mut Semantics::default())
    }
}

/// Header fields parsed on the stack; more are parsed on the heap when the limit allows.
const STACK_HEADERS: usize = 64;

/// A request's fields listed without an allocation: browsers send 10 to 20.
const REQUEST_FIELDS_INLINE: usize = 24;

/// Where a header's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
}

fn offset(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// What the start line of a head is, as offsets into its bytes, and how long the head is.
struct Scanned {
    len: usize,
    /// Request: method, target. Response: status code.
    method: (u32, u32),
    target: (u32, u32),
    code: u16,
    minor_version: u8,
}

impl Scanned {
    fn version(&self) -> Version {
        if self.minor_version == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        }
    }
}

enum Kind {
    Request,
    Response,
}

/// Scans the head at the front of `buf` and appends where its fields lie to `fields`.
fn scan(
    buf: &[u8],
    limits: HeadLimits,
    kind: &Kind,
    fields: &mut impl Extend<FieldAt>,
) -> Result<Option<Scanned>, HeadError> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut heap: Vec<MaybeUninit<httparse::Header<'_>>> = Vec::new();
    let mut slots: &mut [MaybeUninit<httparse::Header<'_>>] =
        &mut stack[..limits.max_headers.min(STACK_HEADERS)];
    loop {
        let outcome = match kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(buf, slots) {
                    Ok(httparse::Status::Complete(len)) => {
                        let (Some(method), Some(path), Some(version)) =
                            (req.method, req.path, req.version)
                        else {
                            return Err(HeadError::Malformed("incomplete request line"));
                        };
                        fields.extend(fields_at(buf, req.headers));
                        Ok(Some(Scanned {
                            len,
                            method: offset(buf, method.as_bytes()),
                            target: offset(buf, path.as_bytes()),
                            code: 0,
                            minor_version: version,
                        }))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Kind::Response => {
                let mut resp = httparse::Response::new(&mut []);
                let mut config = httparse::ParserConfig::default();
                // Servers in the wild send `HTTP/1.1 200  OK`. Obsolete line folding is
                // refused: folded values would be passed on with their line breaks.
                config.allow_multiple_spaces_in_response_status_delimiters(true);
                match config.parse_response_with_uninit_headers(&mut resp, buf, slots) {
                    Ok(httparse::Status::Complete(len)) => {
                        let (Some(code), Some(version)) = (resp.code, resp.version) else {
                            return Err(HeadError::Malformed("incomplete status line"));
                        };
                        fields.extend(fields_at(buf, resp.headers));
                        Ok(Some(Scanned {
                            len,
                            method: (0, 0),
                            target: (0, 0),
                            code,
                            minor_version: version,
                        }))
                    }
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(Some(scanned)) if scanned.len > limits.max_bytes => return Err(HeadError::TooLarge),
            Ok(Some(scanned)) => return Ok(Some(scanned)),
            Ok(None) if buf.len() >= limits.max_bytes => return Err(HeadError::TooLarge),
            Ok(None) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) if slots.len() < limits.max_headers => {
                heap.resize_with(limits.max_headers, MaybeUninit::uninit);
                slots = &mut heap[..];
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(httparse::Error::Version) => {
                return Err(HeadError::Malformed("unsupported HTTP version"));
            }
            Err(_) => return Err(HeadError::Malformed("malformed message head")),
        }
    }
}

fn fields_at<'a>(
    base: &'a [u8],
    headers: &'a [httparse::Header<'_>],
) -> impl Iterator<Item = FieldAt> + 'a {
    headers.iter().map(|h| FieldAt {
        name: offset(base, h.name.as_bytes()),
        value: offset(base, h.value),
    })
}

fn range(bytes: &Bytes, (start, end): (u32, u32)) -> &[u8] {
    &bytes[start as usize..end as usize]
}

/// What the framing-relevant fields of a head said.
#[derive(Default)]
struct Semantics {
    content_length: Option<u64>,
    content_length_invalid: bool,
    transfer_encoding: bool,
    chunked_last: bool,
    chunked_twice: bool,
    other_coding: bool,
    hosts: usize,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

/// The fields whose values decide framing and persistence.
#[derive(Clone, Copy)]
enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    Expect,
}

impl Known {
    /// Which one `name` is, compared without case (names in a map are lower case already).
    fn of(name: &[u8]) -> Option<Known> {
        let (known, spelled): (Known, &[u8]) = match name.len() {
            14 => (Known::ContentLength, b"content-length"),
            17 => (Known::TransferEncoding, b"transfer-encoding"),
            10 => (Known::Connection, b"connection"),
            4 => (Known::Host, b"host"),
            6 => (Known::Expect, b"expect"),
            _ => return None,
        };
        eq_lowercase(name, spelled).then_some(known)
    }
}

impl Semantics {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        let Some(known) = Known::of(name) else {
            return;
        };
        match known {
            Known::ContentLength => match (parse_content_length(value), self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => self.content_length_invalid = true,
            },
            Known::TransferEncoding => {
                self.transfer_encoding = true;
                for coding in tokens(value) {
                    if self.chunked_last {
                        // Anything after `chunked`, even another `chunked`.
                        self.chunked_last = false;
                        self.chunked_twice |= eq_lowercase(coding, b"chunked");
                        self.other_coding = true;
                    } else if eq_lowercase(coding, b"chunked") {
                        self.chunked_last = true;
                    } else {
                        self.other_coding = true;
                    }
                }
            }
            Known::Connection => {
                for token in tokens(value) {
                    self.close |= eq_lowercase(token, b"close");
                    self.keep_alive |= eq_lowercase(token, b"keep-alive");
                }
            }
            Known::Host => self.hosts += 1,
            Known::Expect => {
                self.expect_continue |= eq_lowercase(value.trim_ascii(), b"100-continue");
            }
        }
    }
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `Content-Length`: digits, or a list of identical digits (RFC 9110 §8.6).
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        match found {
            None => found = Some(n),
            Some(seen) if seen == n => {}
            Some(_) => return None,
        }
    }
    found
}

/// Containers given back when their messages were done, kept per thread for the next
/// messages: a new header map costs two allocations and their frees, a response's field
/// list one. Bounded in number and in the size of each, so that a burst of large heads
/// does not stay in memory.
struct Stock<T> {
    spare: RefCell<Vec<T>>,
}

const STOCK_ITEMS: usize = 64;
/// Fields an item may have room for and still be kept.
const STOCK_ITEM_CAPACITY: usize = 32;

impl<T: Default> Stock<T> {
    const fn new() -> Self {
        Stock {
            spare: RefCell::new(Vec::new()),
        }
    }

    /// A spare item, or a new one.
    fn take(&self) -> T {
        self.spare.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps an emptied item of room for `capacity` fields, when it is worth keeping.
    fn give(&self, item: T, capacity: usize) {
        if capacity == 0 || capacity > STOCK_ITEM_CAPACITY {
            return;
        }
        let mut spare = self.spare.borrow_mut();
        if spare.len() < STOCK_ITEMS {
            spare.push(item);
        }
    }
}

thread_local! {
    static HEADER_MAPS: Stock<HeaderMap> = const { Stock::new() };
    static FIELD_LISTS: Stock<Vec<FieldAt>> = const { Stock::new() };
}

/// Gives a request's header map back for a later request to use (see
/// [`parse_request`]); what it holds is dropped.
pub fn recycle_header_map(mut headers: HeaderMap) {
    let capacity = headers.capacity();
    headers.clear();
    let _ = HEADER_MAPS.try_with(|stock| stock.give(headers, capacity));
}

/// An empty map with room for `fields` fields: a spare one when there is one.
fn empty_header_map(fields: usize) -> HeaderMap {
    let mut headers = HEADER_MAPS.try_with(Stock::take).unwrap_or_default();
    headers.reserve(fields);
    headers
}

/// Builds the header map from the frozen head; values share its memory.
fn header_map(
    head: &Bytes,
    fields: &[FieldAt],
    semantics: &mut Semantics,
) -> Result<HeaderMap, HeadError> {
    let mut headers = empty_header_map(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(range(head, field.name))
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let (start, end) = field.value;
        let value = HeaderValue::from_maybe_shared(head.slice(start as usize..end as usize))
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        semantics.note(name.as_str().as_bytes(), value.as_bytes());
        headers.append(name, value);
    }
    Ok(headers)
}

/// Parses a request head from the front of `buf`, which it removes. `Ok(None)`: more bytes
/// are needed.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    // A request's fields go into its header map: the list of where they lie is read once,
    // and kept on the stack it costs no allocation (a `Vec` here cost a `malloc` and a
    // `free`).
    let mut fields = SmallVec::<[FieldAt; REQUEST_FIELDS_INLINE]>::new();
    let Some(scanned) = scan(buf, limits, &Kind::Request, &mut fields)? else {
        return Ok(None);
    };
    let head = buf.split_to(scanned.len).freeze();
    let method = Method::from_bytes(range(&head, scanned.method))
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let (start, end) = scanned.target;
    let uri = Uri::from_maybe_shared(head.slice(start as usize..end as usize))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let version = scanned.version();
    let mut semantics = Semantics::default();
    let headers = header_map(&head, &fields, &mut semantics)?;
    let framing = request_framing(&semantics, version)?;
    if version == Version::HTTP_11 && semantics.hosts != 1 {
        return Err(HeadError::Malformed(if semantics.hosts == 0 {
            "missing Host header"
        } else {
            "more than one Host header"
        }));
    }
    let keep_alive = match version {
        Version::HTTP_11 => !semantics.close,
        _ => semantics.keep_alive && !semantics.close,
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue: semantics.expect_continue && version == Version::HTTP_11,
    }))
}

/// RFC 9112 §6.3 for requests, refusing everything that two parsers could read two ways.
fn request_framing(s: &Semantics, version: Version) -> Result<Framing, HeadError> {
    if s.transfer_encoding {
        if version != Version::HTTP_11 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if s.content_length.is_some() || s.content_length_invalid {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if s.chunked_twice {
            return Err(HeadError::Malformed("chunked applied twice"));
        }
        if !s.chunked_last && !s.other_coding {
            return Err(HeadError::Malformed("empty Transfer-Encoding"));
        }
        if s.other_coding {
            // A final coding other than chunked leaves the length unknowable (400); other
            // codings before chunked would need decoding this proxy does not do (501).
            return Err(if s.chunked_last {
                HeadError::UnsupportedCoding
            } else {
                HeadError::Malformed("chunked is not the final transfer coding")
            });
        }
        return Ok(Framing::Chunked);
    }
    if s.content_length_invalid {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    Ok(match s.content_length {
        Some(0) | None => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// Parses a response head from the front of `buf`, which it removes. `method` is the
/// request's: a response to HEAD has no body whatever its fields say.
pub fn parse_response(
    buf: &mut BytesMut,
    limits: HeadLimits,
    method: &Method,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut raw = RawFields {
        head: Bytes::new(),
        fields: FIELD_LISTS.try_with(Stock::take).unwrap_or_default(),
    };
    let Some(scanned) = scan(buf, limits, &Kind::Response, &mut raw.fields)? else {
        return Ok(None);
    };
    raw.head = buf.split_to(scanned.len).freeze();
    let RawFields { head, fields } = &mut raw;
    let status = StatusCode::from_u16(scanned.code)
        .map_err(|_| HeadError::Malformed("invalid status code"))?;
    let version = scanned.version();
    let mut semantics = Semantics::default();
    for field in fields.iter() {
        semantics.note(range(head, field.name), range(head, field.value));
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || method == Method::HEAD;
    let mut keep_alive = match version {
        Version::HTTP_11 => !semantics.close,
        _ => semantics.keep_alive && !semantics.close,
    };
    let framing = if bodiless {
        Framing::Empty
    } else if semantics.transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), and such a message
        // ends the connection: the two fields disagreeing is a smuggling signature.
        if semantics.content_length.is_some() || semantics.content_length_invalid {
            fields
                .retain(|f| !matches!(Known::of(range(head, f.name)), Some(Known::ContentLength)));
            keep_alive = false;
        }
        if semantics.chunked_last && !semantics.other_coding && version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if semantics.content_length_invalid {
        return Err(HeadError::Malformed("invalid Content-Length"));
    } else {
        match semantics.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        fields: raw,
        framing,
        keep_alive,
    }))
}

/// The framing of an outgoing message, and whether a framing field must be added: a valid
/// `Content-Length` in `headers` is kept; otherwise the body's own length decides, and a
/// body of unknown length is chunked when the peer understands chunks.
pub fn outgoing_framing(
    headers: &HeaderMap,
    body_is_empty: bool,
    exact_length: Option<u64>,
    chunked_allowed: bool,
) -> (Framing, Option<FramingField>) {
    if let Some(value) = headers.get(header::CONTENT_LENGTH)
        && let Some(n) = parse_content_length(value.as_bytes())
    {
        let framing = if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        };
        return (framing, None);
    }
    if body_is_empty {
        return (Framing::Empty, Some(FramingField::Length(0)));
    }
    match exact_length {
        Some(0) => (Framing::Empty, Some(FramingField::Length(0))),
        Some(n) => (Framing::Length(n), Some(FramingField::Length(n))),
        None if chunked_allowed => (Framing::Chunked, Some(FramingField::Chunked)),
        None => (Framing::UntilClose, None),
    }
}

/// A framing field the writer adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingField {
    Length(u64),
    Chunked,
}

/// Fields a head writer adds besides those of the message's header map, so that a proxy
/// can set its own without editing the map (each insertion into a map hashes, and may
/// grow it).
pub trait HeadFields {
    /// Writes the fields as complete `name: value\r\n` lines, names in lower case.
    fn write_fields(&self, out: &mut Vec<u8>);

    /// Whether the header map's field `name` is left out: these fields stand for it.
    fn replaces(&self, name: &HeaderName) -> bool;
}

/// No fields of its own.
impl HeadFields for () {
    fn write_fields(&self, _: &mut Vec<u8>) {}

    fn replaces(&self, _: &HeaderName) -> bool {
        false
    }
}

/// Fields the head writers never copy from a header map: they describe the connection or
/// the framing, which the writer decides.
fn written_by_writer(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::TRANSFER_ENCODING || name.as_str() == "keep-alive"
}

fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap, skip_length: bool, extra: &dyn HeadFields) {
    for (name, value) in headers {
        if written_by_writer(name)
            || (skip_length && name == header::CONTENT_LENGTH)
            || extra.replaces(name)
        {
            continue;
        }
        write_field_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    extra.write_fields(out);
}

/// Appends one header field as a `name: value\r\n` line.
#[inline]
pub fn write_field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_framing_field(out: &mut Vec<u8>, field: Option<FramingField>) {
    match field {
        Some(FramingField::Length(n)) => {
            out.extend_from_slice(b"content-length: ");
            write_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Some(FramingField::Chunked) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
}

pub(crate) fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a request head in origin form. `field` is the framing field to add, if any;
/// `close` asks the server to close the connection after the exchange.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extra: &dyn HeadFields,
    field: Option<FramingField>,
    close: bool,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // A field from the map wins over a computed one only when it is a valid length.
    write_fields(out, headers, field.is_some(), extra);
    write_framing_field(out, field);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a response head. `keep_alive` says what the connection does after the exchange;
/// `peer_version` decides whether that needs saying.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    extra: &dyn HeadFields,
    field: Option<FramingField>,
    keep_alive: bool,
    peer_version: Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(out, headers, field.is_some(), extra);
    write_framing_field(out, field);
    if !headers.contains_key(header::DATE) && !extra.replaces(&header::DATE) {
        out.extend_from_slice(b"date: ");
        write_date(out);
        out.extend_from_slice(b"\r\n");
    }
    match (keep_alive, peer_version) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, _) => {}
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The IMF-fixdate of the current second, formatted once a second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 8192,
        max_headers: 100,
    };

    fn request(text: &str) -> Result<Option<RequestHead>, HeadError> {
        let mut buf = BytesMut::from(text);
        parse_request(&mut buf, LIMITS)
    }

    fn response(text: &str, method: &Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(text);
        parse_response(&mut buf, LIMITS, method)
    }

    #[test]
    fn a_recycled_header_map_comes_back_empty() {
        let first = request("GET / HTTP/1.1\r\nHost: a\r\nCookie: secret=1\r\nX-A: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        let kept = first.parts.headers.capacity();
        recycle_header_map(first.parts.headers);
        let second = request("GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap()
            .unwrap();
        let headers = &second.parts.headers;
        assert_eq!(headers.capacity(), kept, "the spare map is taken");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[header::HOST], "b");
        assert!(!headers.contains_key(header::COOKIE));
        // Maps too large to keep are dropped instead.
        let mut large = HeaderMap::with_capacity(4 * STOCK_ITEM_CAPACITY);
        large.insert(header::HOST, HeaderValue::from_static("c"));
        recycle_header_map(large);
        let third = request("GET / HTTP/1.1\r\nHost: d\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(third.parts.headers.capacity() <= STOCK_ITEM_CAPACITY);
    }

    #[test]
    fn a_recycled_field_list_comes_back_empty() {
        let first = response(
            "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        let kept = first.fields.fields.capacity();
        drop(first);
        let second = response("HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(
            second.fields.fields.capacity(),
            kept,
            "the spare list is taken"
        );
        let fields: Vec<_> = second.fields.iter().collect();
        assert_eq!(fields, [(&b"X-B"[..], &b"2"[..])]);
    }

    #[test]
    fn chosen_fields_are_written_as_lines_whatever_their_spacing() {
        let head = response(
            "HTTP/1.1 200 OK\r\nDate: x\r\nServer: s\r\nA: 1\r\nB:2\r\nC: 3\r\nD: 4 \r\nE: 5\nF: \r\nG: 7\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        let names: Vec<&[u8]> = head.fields.iter().map(|(n, _)| n).collect();
        for (skip, expected) in [
            (
                &[][..],
                "Date: x\r\nServer: s\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: \r\nG: 7\r\n",
            ),
            (
                &[b"Server" as &[u8], b"C"][..],
                "Date: x\r\nA: 1\r\nB: 2\r\nD: 4\r\nE: 5\r\nF: \r\nG: 7\r\n",
            ),
            (
                &[b"Date" as &[u8], b"G"][..],
                "Server: s\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: \r\n",
            ),
        ] {
            let mut out = Vec::new();
            head.fields
                .write_lines(&mut out, |i| !skip.contains(&names[i]));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "skipping {skip:?}"
            );
        }
    }

    #[test]
    fn a_request_head_is_parsed_and_removed_from_the_buffer() {
        let mut buf = BytesMut::from(
            "POST /v1/chat?x=1 HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
        );
        let head = parse_request(&mut buf, LIMITS).unwrap().unwrap();
        assert_eq!(&buf[..], b"hello");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/v1/chat");
        assert_eq!(head.parts.uri.query(), Some("x=1"));
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn a_partial_head_asks_for_more_and_an_oversized_one_is_refused() {
        assert!(request("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "v".repeat(9000));
        assert_eq!(request(&long).unwrap_err(), HeadError::TooLarge);
        let complete_but_long = format!("{long}\r\n");
        assert_eq!(
            request(&complete_but_long).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn header_counts_past_the_stack_array_parse_up_to_the_limit() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..90 {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(request(&text).unwrap().unwrap().parts.headers.len(), 91);
        let mut more = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            more.push_str(&format!("X-{i}: v\r\n"));
        }
        more.push_str("\r\n");
        assert_eq!(request(&more).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n Folded: v\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        ];
        for case in cases {
            let err = request(case).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{case:?}: {err}");
        }
        let gzip = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(request(gzip).unwrap_err(), HeadError::UnsupportedCoding);
    }

    #[test]
    fn framing_and_persistence_follow_the_version_and_fields() {
        let chunked = request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(chunked.unwrap().unwrap().framing, Framing::Chunked);
        let same_twice = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(same_twice.unwrap().unwrap().framing, Framing::Length(7));
        let zero = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(zero.unwrap().unwrap().framing, Framing::Empty);
        assert!(
            !request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            !request("GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        assert!(
            request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .unwrap()
                .keep_alive
        );
        let expect = request(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(expect.unwrap().unwrap().expect_continue);
        // Leading blank lines before the request line are ignored (RFC 9112 §2.2).
        assert!(
            request("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = Method::GET;
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::Length(3), true));
        let r = response("HTTP/1.1 200 OK\r\n\r\n", &get).unwrap().unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            &get,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::Chunked, false));
        assert!(
            r.fields.get("content-length").is_none(),
            "the overridden length is dropped"
        );
        let r = response("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        let r = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::Empty, true));
        let r = response("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        let r = response("HTTP/1.1 200  OK\r\nContent-Length: 1\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(response("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &get).is_err());
        assert!(response("HTTP/1.1 2000 OK\r\n\r\n", &get).is_err());
    }

    #[test]
    fn outgoing_framing_prefers_a_valid_length_field() {
        let mut h = HeaderMap::new();
        assert_eq!(
            outgoing_framing(&h, true, Some(0), true),
            (Framing::Empty, Some(FramingField::Length(0)))
        );
        assert_eq!(
            outgoing_framing(&h, false, Some(9), true),
            (Framing::Length(9), Some(FramingField::Length(9)))
        );
        assert_eq!(
            outgoing_framing(&h, false, None, true),
            (Framing::Chunked, Some(FramingField::Chunked))
        );
        assert_eq!(
            outgoing_framing(&h, false, None, false),
            (Framing::UntilClose, None)
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(
            outgoing_framing(&h, false, None, true),
            (Framing::Length(12), None)
        );
    }

    #[test]
    fn heads_are_written_with_their_framing_and_without_connection_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut out = Vec::new();
        let uri: Uri = "/a?b=c".parse().unwrap();
        write_request_head(
            &mut out,
            &Method::POST,
            &uri,
            &h,
            &(),
            Some(FramingField::Length(4)),
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=c HTTP/1.1\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\n"
        );
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &h,
            &(),
            Some(FramingField::Chunked),
            false,
            Version::HTTP_11,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\ndate: "), "{text}");
        assert!(
            text.ends_with(" GMT\r\nconnection: close\r\n\r\n"),
            "{text}"
        );
        // Fields of the writer's own replace the map's of the same name.
        struct Own;
        impl HeadFields for Own {
            fn write_fields(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(b"content-type: application/json\r\nx-own: 1\r\n");
            }
            fn replaces(&self, name: &HeaderName) -> bool {
                name == header::CONTENT_TYPE
            }
        }
        let mut out = Vec::new();
        write_request_head(&mut out, &Method::GET, &uri, &h, &Own, None, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a?b=c HTTP/1.1\r\ncontent-type: application/json\r\nx-own: 1\r\nconnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        write_decimal(&mut out, 0);
        write_decimal(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(out, b"018446744073709551615");
    }
}
