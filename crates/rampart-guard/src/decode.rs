//! The decoding pipeline: turns what a client sent into the forms an application would see.
//!
//! Every step is a single linear pass and the repeated steps have fixed round limits, so the
//! whole pipeline costs O(input) with a small constant whatever the input is. Each view is
//! only built when the input holds a byte that the step would change; plain values are
//! borrowed, not copied.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization};

use crate::literals::{Found, List};
use crate::shape::Shape;

/// Rounds of URL decoding: enough for double and triple encoding (`%252e`), bounded against
/// inputs built to be decoded forever.
pub const URL_DECODE_ROUNDS: usize = 4;
/// Rounds of HTML entity decoding (`&amp;lt;`).
pub const ENTITY_ROUNDS: usize = 2;

/// The common view every detector starts from: URL decoding repeated (`%XX`, `%uXXXX`),
/// overlong and otherwise lenient UTF-8, NUL and invisible characters removed, Unicode NFKC
/// (full-width and compatibility forms folded to ASCII), ASCII lower case.
pub fn base(input: &str) -> Cow<'_, str> {
    let mut lowered = String::new();
    match base_shaped(input, Shape::of(input), &mut lowered).0 {
        Cow::Borrowed(view) if std::ptr::eq(view, input) => Cow::Borrowed(input),
        view => Cow::Owned(view.into_owned()),
    }
}

/// [`base`] for a caller that has the input's shape already, with the view's shape. A view
/// that is the input in lower case, the common case, is written into `lowered`, a buffer the
/// caller reuses from value to value.
pub(crate) fn base_shaped<'a>(
    input: &'a str,
    shape: Shape,
    lowered: &'a mut String,
) -> (Cow<'a, str>, Shape) {
    let bytes = input.as_bytes();
    let decodable = Shape::NON_ASCII
        .with(Shape::UPPER)
        .with(const { Shape::bytes(b"%") });
    let plain =
        !(shape.any(decodable) || shape.any(Shape::CONTROL) && memchr::memchr(0, bytes).is_some());
    if plain {
        return (Cow::Borrowed(input), shape);
    }
    // Capitals alone, or beside letters that NFKC leaves as they are (names and words of
    // most European languages): one pass, or none. Beside the few Latin-1 signs NFKC makes
    // one ASCII character of (`3º`, `1ª`, `m²`): one pass that folds them too.
    let latin = if only_lowered(shape) {
        Latin::Kept
    } else if only_lowered(shape.without(Shape::NON_ASCII)) {
        latin(input)
    } else {
        Latin::Other
    };
    match latin {
        Latin::Kept if !shape.any(Shape::UPPER) => return (Cow::Borrowed(input), shape),
        Latin::Kept => {
            lowered.clear();
            lowered.push_str(input);
            lowered.make_ascii_lowercase();
            return (Cow::Borrowed(lowered), shape.lowered());
        }
        Latin::Folded => {
            fold_latin_signs(input, lowered);
            let folded_shape = Shape::of(lowered);
            return (Cow::Borrowed(lowered), folded_shape);
        }
        Latin::Other => {}
    }
    let mut text = if shape.has(b'%') {
        url_decode_repeated(bytes)
    } else {
        input.to_owned()
    };
    if !text.is_ascii() {
        text = nfkc_visible(&text);
        if text.contains('%') {
            text = url_decode_repeated(text.as_bytes());
        }
    }
    if text.contains('\0') {
        text.retain(|c| c != '\0');
    }
    text.make_ascii_lowercase();
    let text_shape = Shape::of(&text);
    (Cow::Owned(text), text_shape)
}

/// Whether the base view of a value of this shape is the value in lower case, nothing else.
fn only_lowered(shape: Shape) -> bool {
    !shape.any(
        const {
            Shape::NON_ASCII
                .with(Shape::CONTROL)
                .with(Shape::bytes(b"%"))
        },
    )
}

/// What NFKC, invisible characters and best-fit folding do to a text, when that is simple.
#[derive(Debug, PartialEq, Eq)]
enum Latin {
    /// Every character stays as it is: ASCII and the precomposed Latin letters (U+00C0 to
    /// U+017F) but the ligatures and compatibility forms among them.
    Kept,
    /// As `Kept`, but for some [`latin_sign`]s, each of which becomes one ASCII character.
    Folded,
    /// Anything else, such as a combining mark, which could compose with a letter.
    Other,
}

/// Read by bytes: every character it accepts is ASCII or two bytes long (U+0080 to U+017F,
/// lead bytes 0xC2 to 0xC5).
fn latin(text: &str) -> Latin {
    let bytes = text.as_bytes();
    let mut folded = false;
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        if lead.is_ascii() {
            i += 1;
            continue;
        }
        let (0xc2..=0xc5, Some(&next)) = (lead, bytes.get(i + 1)) else {
            return Latin::Other;
        };
        i += 2;
        let c = u32::from(lead & 0x1f) << 6 | u32::from(next & 0x3f);
        let kept = matches!(c, 0xc0..=0x17f)
            && !matches!(c, 0x132 | 0x133 | 0x13f | 0x140 | 0x149 | 0x17f);
        if !kept {
            if char::from_u32(c).and_then(latin_sign).is_none() {
                return Latin::Other;
            }
            folded = true;
        }
    }
    if folded { Latin::Folded } else { Latin::Kept }
}

/// A text [`latin`] finds `Folded`, with its signs folded and in lower case, into `out`. The
/// signs' lead byte, 0xC2, is never inside another character.
fn fold_latin_signs(text: &str, out: &mut String) {
    out.clear();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(off) = memchr::memchr(0xc2, &bytes[from..]) {
        let at = from + off;
        let end = (at + 2).min(bytes.len());
        match text[at..].chars().next().and_then(latin_sign) {
            Some(sign) => {
                out.push_str(&text[from..at]);
                out.push(sign);
            }
            None => out.push_str(&text[from..end]),
        }
        from = end;
    }
    out.push_str(&text[from..]);
    out.make_ascii_lowercase();
}

/// The ASCII character NFKC makes of a Latin-1 sign that has one: the no-break space, the
/// ordinal indicators and the superscript digits.
fn latin_sign(c: char) -> Option<char> {
    match c {
        '\u{a0}' => Some(' '),
        '\u{aa}' => Some('a'),
        '\u{ba}' => Some('o'),
        '\u{b9}' => Some('1'),
        '\u{b2}' => Some('2'),
        '\u{b3}' => Some('3'),
        _ => None,
    }
}

/// NFKC without the invisible characters. Only the non-ASCII runs are normalized, each with
/// the ASCII character before it (a combining mark composes with it): ASCII decomposes to
/// itself and never composes with what precedes it, so the rest is copied as it is.
fn nfkc_visible(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|b| !b.is_ascii()) {
        let run = i + off;
        let segment = if off > 0 { run - 1 } else { run };
        let run_end = bytes[run..]
            .iter()
            .position(u8::is_ascii)
            .map_or(bytes.len(), |o| run + o);
        out.push_str(&text[i..segment]);
        let part = &text[segment..run_end];
        if unicode_normalization::is_nfkc_quick(part.chars()) == IsNormalized::Yes {
            out.extend(part.chars().filter(|c| !is_invisible(*c)).map(best_fit));
        } else {
            out.extend(part.nfkc().filter(|c| !is_invisible(*c)).map(best_fit));
        }
        i = run_end;
    }
    out.push_str(&text[i..]);
    out
}

/// Typographic quotes and dashes as the ASCII characters "best-fit" conversions (Windows
/// code pages, ODBC, some database collations) turn them into, so `’ or ‘1’=’1` reads as the
/// quotes a backend may see.
fn best_fit(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{2032}' | '\u{2035}' => '\'',
        '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{201f}' | '\u{2033}' | '\u{2036}' => '"',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        c => c,
    }
}

/// Characters that render as nothing and are used to split keywords (`sel\u{200b}ect`).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// URL-decodes until nothing changes or the round limit is reached, then reads the bytes as
/// lenient UTF-8 (see [`lenient_utf8`]).
fn url_decode_repeated(input: &[u8]) -> String {
    let mut current: Vec<u8> = input.to_vec();
    let mut next = Vec::with_capacity(input.len());
    for _ in 0..URL_DECODE_ROUNDS {
        next.clear();
        if !url_decode_once(&current, &mut next) {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        if memchr::memchr(b'%', &current).is_none() {
            break;
        }
    }
    let text = lenient_utf8(&current);
    // An overlong sequence can itself spell `%` (`%c0%a5`): give it one more round.
    if text.contains('%') && text.len() < current.len() {
        next.clear();
        if url_decode_once(text.as_bytes(), &mut next) {
            return lenient_utf8(&next);
        }
    }
    text
}

/// One round of `%XX` and `%uXXXX` decoding; a `%` that starts no valid escape stays.
/// Returns whether anything was decoded.
fn url_decode_once(input: &[u8], out: &mut Vec<u8>) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (hex_at(input, i + 1), hex_at(input, i + 2)) {
                out.push(h << 4 | l);
                i += 3;
                changed = true;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                let digits = (2..6)
                    .map(|k| hex_at(input, i + k))
                    .collect::<Option<Vec<u8>>>();
                if let Some(d) = digits {
                    let unit = d.iter().fold(0u32, |acc, &x| acc << 4 | u32::from(x));
                    let c = char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 6;
                    changed = true;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    changed
}

pub(crate) fn hex_at(input: &[u8], i: usize) -> Option<u8> {
    let digit = HEX_DIGIT[usize::from(*input.get(i)?)];
    (digit != NOT_HEX).then_some(digit)
}

const NOT_HEX: u8 = 0xff;

/// The value of each hexadecimal digit, by byte: escapes are decoded in hot loops.
static HEX_DIGIT: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => NOT_HEX,
        };
        b += 1;
    }
    table
};

/// Reads bytes as UTF-8 the way lenient servers do: overlong forms (`C0 AE` for `.`, the IIS
/// and Tomcat traversal classics) decode to the character they spell, other invalid bytes
/// become U+FFFD.
pub fn lenient_utf8(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            out.push(b as char);
            i += 1;
            continue;
        }
        let (len, initial) = match b {
            0xC0..=0xDF => (2, u32::from(b & 0x1F)),
            0xE0..=0xEF => (3, u32::from(b & 0x0F)),
            0xF0..=0xF7 => (4, u32::from(b & 0x07)),
            0xF8..=0xFB => (5, u32::from(b & 0x03)),
            0xFC..=0xFD => (6, u32::from(b & 0x01)),
            _ => (0, 0),
        };
        let tail = bytes.get(i + 1..i + len.max(1));
        match tail {
            Some(tail) if len > 0 && tail.iter().all(|&c| c & 0xC0 == 0x80) => {
                let cp = tail
                    .iter()
                    .fold(initial, |acc, &c| acc << 6 | u32::from(c & 0x3F));
                out.push(char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER));
                i += len;
            }
            // An overlong lead byte before a plain ASCII byte (`%c0%2e`): lenient decoders
            // drop the lead and keep the character.
            _ if matches!(b, 0xC0 | 0xC1)
                && bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii() && !c.is_ascii_alphanumeric()) =>
            {
                out.push(char::from(bytes[i + 1]));
                i += 2;
            }
            _ => {
                out.push(char::REPLACEMENT_CHARACTER);
                i += 1;
            }
        }
    }
    out
}

/// The view for markup: HTML character references (named, decimal, hex, with or without the
/// `;`), then JavaScript (`\xHH`, `\uHHHH`, `\u{H..}`) and CSS (`\H..`) escapes; a backslash
/// before any other character is dropped, as JavaScript does.
pub fn markup(base: &str) -> Cow<'_, str> {
    markup_shaped(base, Shape::of(base), Found::UNKNOWN)
}

/// [`markup`] for a caller that has the input's shape and its literal lists already.
pub(crate) fn markup_shaped(base: &str, shape: Shape, found: Found) -> Cow<'_, str> {
    // Most `&` in values separate query parameters: a reference needs a `&#` or a `&` before
    // an entity's name.
    let has_amp = shape.has(b'&') && found.has(List::Entity);
    let has_backslash = shape.has(b'\\');
    if !has_amp && !has_backslash {
        return Cow::Borrowed(base);
    }
    // A `&` that starts no reference changes nothing, and then the view is the base itself.
    let mut decoded: Option<String> = None;
    if has_amp {
        for _ in 0..ENTITY_ROUNDS {
            match decode_entities(decoded.as_deref().unwrap_or(base)) {
                Some(text) => decoded = Some(text),
                None => break,
            }
        }
    }
    let current = decoded.as_deref().unwrap_or(base);
    if current.contains('\\') {
        decoded = Some(decode_script_escapes(current));
    }
    match decoded {
        Some(mut text) => {
            text.make_ascii_lowercase();
            Cow::Owned(text)
        }
        None => Cow::Borrowed(base),
    }
}

pub(crate) const NAMED_ENTITIES: &[(&str, char)] = &[
    ("lt", '<'),
    ("gt", '>'),
    ("amp", '&'),
    ("quot", '"'),
    ("apos", '\''),
    ("sol", '/'),
    ("bsol", '\\'),
    ("colon", ':'),
    ("semi", ';'),
    ("lpar", '('),
    ("rpar", ')'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lbrace", '{'),
    ("rbrace", '}'),
    ("equals", '='),
    ("period", '.'),
    ("comma", ','),
    ("excl", '!'),
    ("grave", '`'),
    ("tab", '\t'),
    ("newline", '\n'),
    ("nbsp", ' '),
    ("num", '#'),
    ("percnt", '%'),
    ("plus", '+'),
    ("quest", '?'),
];

fn decode_entities(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Most `&` in values separate query parameters: nothing is allocated until one starts a
    // reference.
    let mut out = String::new();
    let mut last = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'&', &bytes[i..]) {
        let at = i + off;
        i = at + 1;
        let Some((c, consumed)) = entity_at(&bytes[at + 1..]) else {
            continue;
        };
        if out.capacity() == 0 {
            out.reserve(text.len());
        }
        out.push_str(&text[last..at]);
        out.push(c);
        last = at + 1 + consumed;
        i = last;
    }
    if last == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// The character a reference after `&` spells and how many bytes it takes (with its `;`).
fn entity_at(rest: &[u8]) -> Option<(char, usize)> {
    if rest.first() == Some(&b'#') {
        let (radix, start) = match rest.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = rest[start..]
            .iter()
            .take(8)
            .take_while(|b| (**b as char).is_digit(radix))
            .count();
        if digits == 0 {
            return None;
        }
        // Leading zeros are legal and used to pad past naive filters (`&#0000060`).
        let literal = std::str::from_utf8(&rest[start..start + digits]).ok()?;
        let value = u32::from_str_radix(literal, radix).ok()?;
        let c = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut used = start + digits;
        if rest.get(used) == Some(&b';') {
            used += 1;
        }
        return Some((c, used));
    }
    let name_len = rest
        .iter()
        .take(10)
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    let name = &rest[..name_len];
    let (_, c) = NAMED_ENTITIES
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))?;
    let used = if rest.get(name_len) == Some(&b';') {
        name_len + 1
    } else {
        name_len
    };
    Some((*c, used))
}

fn decode_script_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let bytes = text.as_bytes();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let rest = &bytes[at + 1..];
        let (decoded, skip) = match rest.first() {
            Some(b'x') => match (hex_at(rest, 1), hex_at(rest, 2)) {
                (Some(h), Some(l)) => (Some(char::from(h << 4 | l)), 3),
                _ => (None, 0),
            },
            Some(b'u') if rest.get(1) == Some(&b'{') => {
                let digits = rest[2..]
                    .iter()
                    .take(6)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if digits > 0 && rest.get(2 + digits) == Some(&b'}') {
                    let v =
                        u32::from_str_radix(&text[at + 3..at + 3 + digits], 16).unwrap_or(0xFFFD);
                    (char::from_u32(v), 3 + digits)
                } else {
                    (None, 0)
                }
            }
            Some(b'u') => match (1..5).map(|k| hex_at(rest, k)).collect::<Option<Vec<u8>>>() {
                Some(d) => {
                    let v = d.iter().fold(0u32, |acc, &x| acc << 4 | u32::from(x));
                    (char::from_u32(v), 5)
                }
                None => (None, 0),
            },
            Some(b) if b.is_ascii_hexdigit() => {
                // CSS escape: one to six hex digits and an optional space.
                let digits = rest
                    .iter()
                    .take(6)
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                let v = u32::from_str_radix(&text[at + 1..at + 1 + digits], 16).unwrap_or(0xFFFD);
                let space = usize::from(rest.get(digits) == Some(&b' '));
                (char::from_u32(v), digits + space)
            }
            _ => (None, 0),
        };
        // Without a decoded character the escape was unnecessary: JavaScript and CSS read
        // `\a` as `a`, so only the backslash goes.
        if let Some(d) = decoded {
            // `\0` inside a word is used to split it (`scr\0ipt`); browsers drop it.
            if d != '\0' {
                out.push(d);
            }
            for _ in 0..skip {
                chars.next();
            }
        }
    }
    out
}

/// Characters Windows' best-fit mapping and some frameworks turn into path separators.
fn is_separator_lookalike(c: char) -> bool {
    matches!(
        c,
        '\\' | '\u{2215}'
            | '\u{2216}'
            | '\u{2044}'
            | '\u{29f5}'
            | '\u{29f8}'
            | '\u{29f9}'
            | '\u{fe68}'
            | '\u{ff3c}'
    )
}

/// The view for file paths: backslashes and their look-alikes read as separators, as Windows
/// and many frameworks do.
pub fn path(base: &str) -> Cow<'_, str> {
    path_shaped(base, Shape::of(base))
}

/// [`path`] for a caller that has the input's shape already.
pub(crate) fn path_shaped(base: &str, shape: Shape) -> Cow<'_, str> {
    // The non-ASCII look-alikes are all three bytes long and start with 0xe2 or 0xef: text
    // in other scripts is passed over by a byte search, without decoding its characters.
    let needs = shape.has(b'\\')
        || shape.any(Shape::NON_ASCII)
            && memchr::memchr2(0xe2, 0xef, base.as_bytes()).is_some()
            && base.contains(is_separator_lookalike);
    if !needs {
        return Cow::Borrowed(base);
    }
    Cow::Owned(
        base.chars()
            .map(|c| if is_separator_lookalike(c) { '/' } else { c })
            .collect(),
    )
}

/// A looser path view for input that still carries encoding debris after decoding (invalid
/// `%` escapes, `0x2f`-style hex, replacement characters): the debris reads as a separator,
/// so `etc%c0%9vpasswd` shows its `etc/passwd`. `None` when there is no debris.
pub fn loose_path(path: &str) -> Option<String> {
    let debris = path.contains(['%', '\u{fffd}', '?']) || path.contains("0x");
    if !debris {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    let separator = |out: &mut String| {
        if !out.ends_with('/') {
            out.push('/');
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            // An escape that did not decode: `%` and up to two following characters, or the
            // `%2%f` that half-decoded `%%32%%66` leaves.
            let alnum = |k: usize| bytes.get(k).is_some_and(u8::is_ascii_alphanumeric);
            let skip = if matches!(bytes.get(i + 1), Some(b'u'))
                && (2..6).all(|k| hex_at(bytes, i + k).is_some())
            {
                5
            } else if alnum(i + 1) && bytes.get(i + 2) == Some(&b'%') && alnum(i + 3) {
                3
            } else {
                bytes[i + 1..]
                    .iter()
                    .take(2)
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count()
            };
            separator(&mut out);
            i += 1 + skip;
        } else if b == b'0'
            && bytes.get(i + 1) == Some(&b'x')
            && hex_at(bytes, i + 2).is_some()
            && hex_at(bytes, i + 3).is_some()
        {
            let value = hex_at(bytes, i + 2).unwrap_or(0) << 4 | hex_at(bytes, i + 3).unwrap_or(0);
            match value {
                b'/' | b'\\' => separator(&mut out),
                b'.' => out.push('.'),
                _ => out.push_str(&path[i..i + 4]),
            }
            i += 4;
        } else if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
            i += 1;
        } else {
            separator(&mut out);
            i += crate::decode_utf8_len(b);
        }
    }
    Some(out)
}

/// The view for command lines: what a shell makes of quoting and escaping tricks. Quotes and
/// carets vanish (`w'h'o"am"i`, `who^ami`), a backslash before a word character vanishes
/// (`w\hoami`), and `$IFS`, `${IFS}` and empty expansions (`$@`, `$*`, `$9`) read as the
/// separator or nothing they expand to.
pub fn shell(base: &str) -> Cow<'_, str> {
    shell_shaped(base, Shape::of(base))
}

/// [`shell`] for a caller that has the input's shape already.
pub(crate) fn shell_shaped(base: &str, shape: Shape) -> Cow<'_, str> {
    let bytes = base.as_bytes();
    let tricky = shape.any(const { Shape::bytes(b"'\"^\\$") });
    if !tricky {
        return Cow::Borrowed(base);
    }
    let mut out = String::with_capacity(base.len());
    let mut i = 0;
    while i < bytes.len() {
        // The text up to the next byte that may be read otherwise is kept as it is, in one
        // copy; those bytes are ASCII, so the cut is a character boundary.
        let plain = bytes[i..]
            .iter()
            .position(|b| matches!(b, b'\'' | b'"' | b'^' | b'\\' | b'$'))
            .unwrap_or(bytes.len() - i);
        out.push_str(&base[i..i + plain]);
        i += plain;
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let rest = &base[i..];
        match b {
            b'\'' | b'"' | b'^' => i += 1,
            // Escape sequences written out in payloads (`;id\n`) mean the control character.
            b'\\'
                if matches!(bytes.get(i + 1), Some(b'n' | b'r'))
                    && !bytes.get(i + 2).is_some_and(u8::is_ascii_alphabetic) =>
            {
                out.push('\n');
                i += 2;
            }
            // Inside a word a backslash escapes nothing and vanishes (`w\hoami`); before a path
            // component (`c:\users`) it is a separator and stays.
            b'\\'
                if i > 0
                    && bytes[i - 1].is_ascii_alphanumeric()
                    && bytes.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric()) =>
            {
                i += 1
            }
            b'$' if rest.starts_with("${ifs}") => {
                out.push(' ');
                i += 6;
            }
            b'$' if rest.starts_with("$ifs") => {
                out.push(' ');
                i += 4;
            }
            b'$' if bytes
                .get(i + 1)
                .is_some_and(|c| matches!(c, b'@' | b'*') || c.is_ascii_digit()) =>
            {
                i += 2
            }
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_non_ascii_separator_look_alike_starts_with_the_bytes_the_path_view_searches() {
        let mut utf8 = [0u8; 4];
        let lookalikes: Vec<char> = (0x80..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_separator_lookalike(c))
            .collect();
        assert_eq!(lookalikes.len(), 8);
        for c in lookalikes {
            let first = c.encode_utf8(&mut utf8).as_bytes()[0];
            assert!(matches!(first, 0xe2 | 0xef), "{c:?}");
            assert_eq!(path(&format!("a{c}b")), "a/b");
        }
        assert!(matches!(path("maría/josé"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_shell_view_keeps_the_text_between_the_bytes_it_reads() {
        assert_eq!(shell("maría o'brien-smith"), "maría obrien-smith");
        assert_eq!(shell("a\\nb ${ifs}c$1d$ e\\"), "anb  cd$ e\\");
        assert_eq!(shell("w\\hoami;\\n^id"), "whoami;\nid");
    }

    #[test]
    fn plain_input_is_borrowed() {
        assert!(matches!(base("hello world 42"), Cow::Borrowed(_)));
        assert!(matches!(markup("hello"), Cow::Borrowed(_)));
        assert!(matches!(shell("ls -la"), Cow::Borrowed(_)));
    }

    #[test]
    fn url_decoding_repeats_within_its_bound() {
        assert_eq!(base("%2e%2e%2f"), "../");
        assert_eq!(base("%252e%252e%252f"), "../");
        assert_eq!(base("%25252e"), ".");
        // Five levels of encoding stop after the round limit, still partly encoded.
        assert_eq!(base("%2525252525"), "%25");
        assert_eq!(base("%u002e%u002E/"), "../");
        assert_eq!(base("100%"), "100%");
        assert_eq!(base("%zz%4"), "%zz%4");
    }

    #[test]
    fn overlong_utf8_and_fullwidth_fold_to_ascii() {
        assert_eq!(base("%c0%ae%c0%ae%c0%af"), "../");
        assert_eq!(base("%e0%80%ae"), ".");
        assert_eq!(base("%f0%80%80%ae"), ".");
        assert_eq!(base("\u{ff1c}ＳＣＲＩＰＴ\u{ff1e}"), "<script>");
        assert_eq!(base("%uff0e%uff0e/"), "../");
        assert_eq!(base("a%ffb"), "a\u{fffd}b");
    }

    #[test]
    fn the_letters_normalization_keeps_are_kept_by_it() {
        let mut letters = 0;
        for c in (0x80..0x250).filter_map(char::from_u32) {
            for text in [format!("{c}"), format!("A{c}b"), format!("{c}{c} x")] {
                if latin(&text) != Latin::Kept {
                    continue;
                }
                letters += 1;
                assert_eq!(nfkc_visible(&text), text, "{text:?}");
                let mut lowered = String::new();
                let (fast, _) = base_shaped(&text, Shape::of(&text), &mut lowered);
                assert_eq!(fast, text.to_ascii_lowercase(), "{text:?}");
            }
        }
        // Latin-1's 64 letters and Latin Extended-A's 128 but six, three texts each.
        assert_eq!(letters, 3 * (64 + 128 - 6));
        for mixed in ["Mari\u{301}a", "e\u{301}", "\u{c9}\u{327}"] {
            assert_eq!(latin(mixed), Latin::Other, "{mixed:?}");
        }
    }

    #[test]
    fn latin_signs_fold_as_normalization_folds_them() {
        assert_eq!(
            base("Calle 3º Izquierda, 1ª planta, 20\u{a0}m²"),
            "calle 3o izquierda, 1a planta, 20 m2"
        );
        assert_eq!(latin("3º"), Latin::Folded);
        assert_eq!(latin("3º\u{301}"), Latin::Other);
    }

    proptest::proptest! {
        #[test]
        fn the_latin_fast_paths_equal_normalization(
            text in "[a-zA-Z0-9 .'\u{c0}-\u{17f}\u{a0}-\u{bf}\u{300}]{0,24}"
        ) {
            let mut lowered = String::new();
            let (fast, shape) = base_shaped(&text, Shape::of(&text), &mut lowered);
            let mut whole = nfkc_visible(&text);
            whole.make_ascii_lowercase();
            proptest::prop_assert_eq!(&*fast, &*whole);
            proptest::prop_assert_eq!(shape, Shape::of(&whole));
        }
    }

    #[test]
    fn normalizing_runs_equals_normalizing_the_whole() {
        for text in [
            "Calle de Alcalá 42, 3º izquierda",
            "cafe\u{301} and e\u{301}\u{327}t\u{e9}",
            "\u{ff1c}script\u{ff1e} x\u{fb00}y",
            "\u{1100}\u{1161}\u{11a8} a\u{300}\u{300}b",
            "\u{e9}",
            "a\u{200b}b\u{300}",
            "\u{2126}\u{212b}A\u{30a}",
        ] {
            let whole: String = text
                .nfkc()
                .filter(|c| !is_invisible(*c))
                .map(best_fit)
                .collect();
            assert_eq!(nfkc_visible(text), whole, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalizing_runs_equals_normalizing_the_whole_for_any_text(
            text in "[a-zA-Z .\u{300}-\u{36f}\u{ff01}-\u{ff5e}\u{1100}-\u{11ff}\u{ac00}-\u{ac10}\u{e0}-\u{ff}\u{200b}\u{fb00}-\u{fb06}]{0,24}|\\PC{0,24}"
        ) {
            let whole: String = text
                .nfkc()
                .filter(|c| !is_invisible(*c))
                .map(best_fit)
                .collect();
            proptest::prop_assert_eq!(nfkc_visible(&text), whole);
        }
    }

    #[test]
    fn typographic_quotes_read_as_ascii() {
        assert_eq!(
            base("\u{2019} or \u{2018}1\u{2019}=\u{2019}1"),
            "' or '1'='1"
        );
        assert_eq!(base("\u{201c}x\u{201d} \u{2212}1"), "\"x\" -1");
    }

    #[test]
    fn nul_and_invisible_characters_are_removed_and_case_folded() {
        assert_eq!(base("SEL%00ECT"), "select");
        assert_eq!(base("un\u{200b}ion"), "union");
    }

    #[test]
    fn markup_decodes_entities_and_script_escapes() {
        assert_eq!(markup("&lt;script&gt;"), "<script>");
        assert_eq!(markup("&#60;&#x3C;&#0000060"), "<<<");
        assert_eq!(markup("&amp;lt;"), "<");
        assert_eq!(markup("java&Tab;script&colon;"), "java\tscript:");
        assert_eq!(markup("\\x3cimg\\u003e\\u{3c}"), "<img><");
        assert_eq!(markup("\\3c svg"), "<svg");
        assert_eq!(markup("a\\lert"), "alert");
        // The base view is already lower case; a `&` that starts no reference changes nothing.
        assert!(matches!(markup("at&t"), Cow::Borrowed("at&t")));
    }

    #[test]
    fn shell_view_undoes_quoting_tricks() {
        assert_eq!(shell("w'h'o\"am\"i"), "whoami");
        assert_eq!(shell("who^ami"), "whoami");
        assert_eq!(shell("w\\hoami"), "whoami");
        assert_eq!(shell("cat${ifs}/etc/passwd"), "cat /etc/passwd");
        assert_eq!(shell("cat$ifs$9/etc/passwd"), "cat /etc/passwd");
        assert_eq!(shell("l$@s"), "ls");
    }

    #[test]
    fn path_view_reads_backslashes_as_separators() {
        assert_eq!(path("..\\..\\boot.ini"), "../../boot.ini");
    }
}
