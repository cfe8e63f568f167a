//! Body coding: taking a body out of the bytes read (by length, in chunks, or until the
//! connection closes) and chunk framing for bodies sent without a known length.

use bytes::{Buf, Bytes, BytesMut};

use crate::head::Framing;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("the connection closed before the body ended")]
    Truncated,
    #[error("reading the body: {0}")]
    Io(#[from] std::io::Error),
}

/// Chunk-size lines (with their extensions) and trailer sections have bounds: past them the
/// body is refused rather than buffered.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    step: Step,
    /// The size being read, or the bytes left of the chunk being passed on.
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
}

/// Where a body stands.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(Box<Chunked>),
    UntilClose,
    Done,
}

/// One step of decoding.
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// More bytes must be read first.
    More,
    End,
}

impl Decoder {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Box::new(Chunked {
                step: Step::Size,
                size: 0,
                digits: 0,
                line: 0,
                trailers: 0,
            })),
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes left, when the framing says.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of the body from the front of `buf`. The data shares `buf`'s
    /// memory.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                let data = buf.split_to(n as usize).freeze();
                if *remaining == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            Decoder::UntilClose => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
            Decoder::Chunked(state) => {
                let decoded = state.decode(buf)?;
                if matches!(decoded, Decoded::End) {
                    *self = Decoder::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The input ended: the body is complete only if it runs until the close.
    pub(crate) fn end_of_input(&mut self) -> Result<(), BodyError> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, BodyError> {
        loop {
            if self.step == Step::Data {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = self.size.min(buf.len() as u64);
                self.size -= n;
                if self.size == 0 {
                    self.step = Step::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
            }
            // Control bytes, one at a time: a few per chunk.
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            if self.control(byte)? {
                return Ok(Decoded::End);
            }
        }
    }

    /// Advances over one byte outside chunk data; true at the end of the body.
    fn control(&mut self, byte: u8) -> Result<bool, BodyError> {
        let fail = |why| Err(BodyError::Chunked(why));
        match self.step {
            Step::Size => match byte {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if self.digits == 16 {
                        return fail("chunk size too large");
                    }
                    let digit = match byte {
                        b'0'..=b'9' => byte - b'0',
                        b'a'..=b'f' => byte - b'a' + 10,
                        _ => byte - b'A' + 10,
                    };
                    self.size = self.size << 4 | u64::from(digit);
                    self.digits += 1;
                }
                b';' | b' ' | b'\t' if self.digits > 0 => {
                    self.step = Step::Extension;
                    self.line = 0;
                }
                b'\r' if self.digits > 0 => self.step = Step::SizeLf,
                _ => return fail("invalid chunk size"),
            },
            Step::Extension => match byte {
                b'\r' => self.step = Step::SizeLf,
                b'\n' => return fail("bare LF in a chunk extension"),
                _ => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return fail("chunk extension too long");
                    }
                }
            },
            Step::SizeLf => {
                if byte != b'\n' {
                    return fail("chunk size line not ended by CRLF");
                }
                self.digits = 0;
                self.step = if self.size == 0 {
                    Step::TrailerStart
                } else {
                    Step::Data
                };
            }
            Step::DataCr => {
                if byte != b'\r' {
                    return fail("chunk data longer than its size");
                }
                self.step = Step::DataLf;
            }
            Step::DataLf => {
                if byte != b'\n' {
                    return fail("chunk data not ended by CRLF");
                }
                self.step = Step::Size;
            }
            Step::TrailerStart => {
                if byte == b'\r' {
                    self.step = Step::EndLf;
                } else {
                    self.step = Step::Trailer;
                    self.count_trailer()?;
                }
            }
            Step::Trailer => {
                if byte == b'\r' {
                    self.step = Step::TrailerLf;
                } else {
                    self.count_trailer()?;
                }
            }
            Step::TrailerLf => {
                if byte != b'\n' {
                    return fail("trailer field not ended by CRLF");
                }
                self.step = Step::TrailerStart;
            }
            Step::EndLf => {
                if byte != b'\n' {
                    return fail("chunked body not ended by CRLF");
                }
                return Ok(true);
            }
            Step::Data => unreachable!("data is taken whole, not byte by byte"),
        }
        Ok(false)
    }

    fn count_trailer(&mut self) -> Result<(), BodyError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(BodyError::Chunked("trailer section too large"));
        }
        Ok(())
    }
}

/// Starts a chunk of `len` bytes (more than zero); the data and then [`CHUNK_END`] follow.
pub(crate) fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Ends a chunk's data.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; the body and what is left after it.
    fn decode_in_steps(
        framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::More => {
                    if fed == input.len() {
                        decoder.end_of_input()?;
                        return Ok((body, buf.to_vec()));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let input = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, rest) = decode_in_steps(Framing::Chunked, input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            // Bytes after the body belong to the next message and stay where they are,
            // as far as they were read with it.
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
        let (_, rest) = decode_in_steps(Framing::Chunked, input, input.len()).unwrap();
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let cases: [&[u8]; 8] = [
            b"x\r\n",
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\r\r",
            b"3;ext\nabc",
        ];
        for case in cases {
            let result = decode_in_steps(Framing::Chunked, case, case.len());
            assert!(
                matches!(result, Err(BodyError::Chunked(_))),
                "{case:?}: {result:?}"
            );
        }
        let long_extension = [b"1;".as_slice(), &[b'x'; 5000], b"\r\na\r\n0\r\n\r\n"].concat();
        assert!(decode_in_steps(Framing::Chunked, &long_extension, 64).is_err());
        let long_trailer = [b"0\r\nX: ".as_slice(), &[b'x'; 20_000], b"\r\n\r\n"].concat();
        assert!(decode_in_steps(Framing::Chunked, &long_trailer, 64).is_err());
    }

    #[test]
    fn a_cut_body_is_truncated_but_a_close_delimited_one_ends() {
        assert!(matches!(
            decode_in_steps(Framing::Length(10), b"short", 2),
            Err(BodyError::Truncated)
        ));
        assert!(matches!(
            decode_in_steps(Framing::Chunked, b"5\r\nhel", 2),
            Err(BodyError::Truncated)
        ));
        let (body, _) = decode_in_steps(Framing::UntilClose, b"all of it", 3).unwrap();
        assert_eq!(body, b"all of it");
        let (body, rest) = decode_in_steps(Framing::Length(3), b"abcdef", 6).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (b"abc".as_slice(), b"def".as_slice())
        );
    }

    #[test]
    fn chunk_headers_are_lowercase_hex() {
        let mut out = Vec::new();
        write_chunk_header(&mut out, 0x1a2f);
        write_chunk_header(&mut out, 1);
        assert_eq!(out, b"1a2f\r\n1\r\n");
    }
}
