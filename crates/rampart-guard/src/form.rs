//! `application/x-www-form-urlencoded` pairs decoded as `form_urlencoded` does (`+` is a space,
//! `%XX` a byte, a `%` that starts no escape stays, invalid UTF-8 is replaced), into two
//! buffers reused from pair to pair. The input is text already: a part with nothing to decode
//! is borrowed as it is, and only decoded parts are checked for UTF-8. Each part comes as a
//! [`Subject`] with its shape: the pass that reads it tells whether it has anything to decode.

use std::borrow::Cow;

use crate::decode::hex_at;
use crate::shape::Shape;
use crate::{Location, Subject};

/// The buffers decoded names and values are written into, kept by the caller from query to
/// query so that they grow once, not on every request.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    name: Vec<u8>,
    value: Vec<u8>,
}

/// Calls `each` with every pair's decoded name, then its value, as found at these locations.
pub(crate) fn for_each_pair(
    input: &str,
    [name_location, value_location]: [Location; 2],
    buffers: &mut Buffers,
    mut each: impl FnMut(Subject<'_>),
) {
    let Buffers {
        name: name_buffer,
        value: value_buffer,
    } = buffers;
    // `&` is searched with memchr over the rest of the input; `=` and escapes with plain
    // loops over one short part, which end sooner than a vectorized search is set up. `&`
    // and `=` are ASCII, so every cut is a character boundary.
    let bytes = input.as_bytes();
    let mut start = 0;
    while start <= bytes.len() {
        let end = memchr::memchr(b'&', &bytes[start..]).map_or(bytes.len(), |o| start + o);
        let pair = &input[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.bytes().position(|b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, ""),
        };
        let (name, name_shape) = decode(name, name_buffer);
        let (value, value_shape) = decode(value, value_buffer);
        each(Subject {
            location: name_location,
            name: &name,
            value: &name,
            raw: name_shape,
        });
        each(Subject {
            location: value_location,
            name: &name,
            value: &value,
            raw: value_shape,
        });
    }
}

/// A part as the application reads it, with its shape. Inlined into the pair loop, so a
/// part with nothing to decode (most names, many values) costs its byte classes and no
/// call: a query of 25 plain pairs took 627 ns with the call, about 400 ns without.
#[inline(always)]
fn decode<'a>(part: &'a str, buffer: &'a mut Vec<u8>) -> (Cow<'a, str>, Shape) {
    let shape = Shape::of(part);
    if !shape.any(const { Shape::bytes(b"+%") }) {
        return (Cow::Borrowed(part), shape);
    }
    decode_into(part, shape, buffer)
}

/// [`decode`] for a part with a `+` or a `%`.
fn decode_into<'a>(part: &str, shape: Shape, buffer: &'a mut Vec<u8>) -> (Cow<'a, str>, Shape) {
    // The decoded text is never longer than the part: decoded in place, then cut. `+` goes
    // first, in a pass the compiler vectorizes, so a `%2B` decoded after it stays a `+`.
    buffer.clear();
    buffer.extend_from_slice(part.as_bytes());
    if shape.has(b'+') {
        for b in buffer.iter_mut() {
            *b = if *b == b'+' { b' ' } else { *b };
        }
    }
    if shape.has(b'%') {
        decode_escapes(buffer);
    }
    let text = match std::str::from_utf8(buffer) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(buffer),
    };
    let shape = Shape::of(&text);
    (text, shape)
}

/// Decodes the `%XX` escapes of `buffer` in place, moving the text between them down as a
/// whole; a `%` that starts no escape stays.
fn decode_escapes(buffer: &mut Vec<u8>) {
    let next_percent = |buffer: &[u8], from: usize| {
        buffer[from..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(buffer.len(), |o| from + o)
    };
    let mut read = next_percent(buffer, 0);
    let mut written = read;
    while read < buffer.len() {
        buffer[written] = match (hex_at(buffer, read + 1), hex_at(buffer, read + 2)) {
            (Some(high), Some(low)) => {
                read += 3;
                high << 4 | low
            }
            _ => {
                read += 1;
                b'%'
            }
        };
        written += 1;
        let next = next_percent(buffer, read);
        buffer.copy_within(read..next, written);
        written += next - read;
        read = next;
    }
    buffer.truncate(written);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let locations = [Location::QueryName, Location::QueryValue];
        for_each_pair(input, locations, &mut Buffers::default(), |subject| {
            assert_eq!(subject.raw, Shape::of(subject.value), "{input}");
            match subject.location {
                Location::QueryName => {
                    assert_eq!(subject.name, subject.value, "{input}");
                    out.push((subject.name.to_owned(), String::new()));
                }
                _ => {
                    let (name, value) = out.last_mut().expect("the name comes first");
                    assert_eq!(name, subject.name, "{input}");
                    *value = subject.value.to_owned();
                }
            }
        });
        out
    }

    #[test]
    fn pairs_decode_as_form_urlencoded_does() {
        for input in [
            "a=1&b=x+y&&c=%41%2b%zz%4&d&=e&f==g",
            "q=caf%C3%A9+%E2%82%AC&bad=%FF%FE&plain=abc",
            "%3Cscript%3E=1&x=%25252e",
            "",
            "&&&",
        ] {
            let expected: Vec<(String, String)> = form_urlencoded::parse(input.as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(pairs(input), expected, "{input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_input_decodes_as_form_urlencoded_does(input in "[a-z%+=&0-9A-F\u{e9}]{0,40}") {
            let expected: Vec<(String, String)> = form_urlencoded::parse(input.as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            proptest::prop_assert_eq!(pairs(&input), expected);
        }
    }
}
