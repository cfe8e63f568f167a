//! Which kinds of byte a value holds, read in one pass with one table lookup per byte. Every
//! detector needs some character to say anything (a tag needs `<`, a traversal `.`, a
//! substitution `` ` `` or `$`), so a value whose shape lacks them skips that detector without
//! searching it again. Most request values are plain words and never reach a detector.

/// A set of byte classes: one bit for each ASCII punctuation character, and one each for
/// lower-case letters, upper-case letters, digits, spaces, `\r`, `\n`, other control bytes
/// and non-ASCII bytes. The letter `x` in either case also has a bit of its own, beside its
/// case's: it starts a hex number (`0x2e`), which most values with digits lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape(u64);

const PUNCTUATION: &[u8; 32] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const LOWER: u64 = 1 << 32;
const UPPER: u64 = 1 << 33;
const DIGIT: u64 = 1 << 34;
const SPACE: u64 = 1 << 35;
const CR: u64 = 1 << 36;
const LF: u64 = 1 << 37;
const CONTROL: u64 = 1 << 38;
const NON_ASCII: u64 = 1 << 39;
const LETTER_X: u64 = 1 << 40;

const fn class(b: u8) -> u64 {
    match b {
        b'x' => LOWER | LETTER_X,
        b'X' => UPPER | LETTER_X,
        b'a'..=b'z' => LOWER,
        b'A'..=b'Z' => UPPER,
        b'0'..=b'9' => DIGIT,
        b' ' | b'\t' | 0x0b | 0x0c => SPACE,
        b'\r' => CR,
        b'\n' => LF,
        0x00..=0x1f | 0x7f => CONTROL,
        0x80..=0xff => NON_ASCII,
        _ => {
            let mut i = 0;
            while i < PUNCTUATION.len() {
                if PUNCTUATION[i] == b {
                    return 1 << i;
                }
                i += 1;
            }
            unreachable!()
        }
    }
}

static CLASS: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class(b as u8);
        b += 1;
    }
    table
};

impl Shape {
    /// Letters, digits and `_`: a value of these alone is one word.
    pub const WORD: Shape = Shape(LOWER | UPPER | LETTER_X | DIGIT | class(b'_'));
    pub const UPPER: Shape = Shape(UPPER);
    pub const DIGIT: Shape = Shape(DIGIT);
    pub const SPACE: Shape = Shape(SPACE);
    pub const LINE_BREAK: Shape = Shape(CR | LF);
    pub const CONTROL: Shape = Shape(CONTROL);
    pub const NON_ASCII: Shape = Shape(NON_ASCII);
    pub const LETTER_X: Shape = Shape(LETTER_X);
    /// The classes of every character `char::is_whitespace` accepts: a value of none of them
    /// has no whitespace to trim or remove.
    pub const MAY_BE_WHITESPACE: Shape = Shape(SPACE | CR | LF | NON_ASCII);

    pub fn of(text: &str) -> Shape {
        // Eight bytes a step into two masks: fewer loop tests, and lookups that do not wait
        // on each other.
        let class = |b: u8| CLASS[usize::from(b)];
        let mut chunks = text.as_bytes().chunks_exact(8);
        let (mut even, mut odd) = (0, 0);
        for c in &mut chunks {
            even |= class(c[0]) | class(c[2]) | class(c[4]) | class(c[6]);
            odd |= class(c[1]) | class(c[3]) | class(c[5]) | class(c[7]);
        }
        for &b in chunks.remainder() {
            even |= class(b);
        }
        Shape(even | odd)
    }

    /// The classes of these bytes.
    pub const fn bytes(bytes: &[u8]) -> Shape {
        let mut mask = 0;
        let mut i = 0;
        while i < bytes.len() {
            mask |= class(bytes[i]);
            i += 1;
        }
        Shape(mask)
    }

    pub const fn with(self, other: Shape) -> Shape {
        Shape(self.0 | other.0)
    }

    pub const fn without(self, other: Shape) -> Shape {
        Shape(self.0 & !other.0)
    }

    /// The shape of the same value in ASCII lower case.
    pub fn lowered(self) -> Shape {
        if self.0 & UPPER == 0 {
            self
        } else {
            Shape(self.0 & !UPPER | LOWER)
        }
    }

    /// Whether the value holds a byte of this one's class.
    pub fn has(self, b: u8) -> bool {
        self.0 & CLASS[usize::from(b)] != 0
    }

    /// Whether the value holds a byte of any of these classes.
    pub fn any(self, classes: Shape) -> bool {
        self.0 & classes.0 != 0
    }

    /// Whether the value holds no byte outside these classes.
    pub fn within(self, classes: Shape) -> bool {
        self.0 & !classes.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_told_apart() {
        let shape = Shape::of("ab'<");
        assert!(shape.has(b'\'') && shape.has(b'<') && shape.has(b'z'));
        assert!(!shape.has(b'"') && !shape.has(b'A') && !shape.has(b'>'));
        assert!(Shape::of("Hello_42").within(Shape::WORD));
        assert!(Shape::of("0x2E").within(Shape::WORD));
        assert!(Shape::of("0X").any(Shape::LETTER_X) && Shape::of("x").any(Shape::LETTER_X));
        assert!(!Shape::of("0a").any(Shape::LETTER_X));
        assert_eq!(Shape::of("X").lowered(), Shape::of("x"));
        assert!(!Shape::of("hello world").within(Shape::WORD));
        assert!(Shape::of("é").any(Shape::NON_ASCII));
        assert!(Shape::of("a\r\n").any(Shape::LINE_BREAK));
        assert!(Shape::of("\0").any(Shape::CONTROL));
        assert!(Shape::of("x y").any(Shape::bytes(b"; ")));
        assert!(!Shape::of("xy").any(Shape::bytes(b"; ")));
        assert_eq!(Shape::of("Ab-C").lowered(), Shape::of("ab-c"));
        assert_eq!(Shape::of("1-2").lowered(), Shape::of("1-2"));
    }

    #[test]
    fn every_byte_counts_at_any_place_in_the_eight_byte_steps() {
        let text = "ab!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ AZ09\r\n\u{1}é";
        for start in 0..text.len() {
            for end in start..=text.len() {
                if let Some(part) = text.get(start..end) {
                    assert_eq!(Shape::of(part), Shape::bytes(part.as_bytes()), "{part:?}");
                }
            }
        }
    }
}
