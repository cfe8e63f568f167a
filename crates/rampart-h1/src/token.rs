//! Comparing field names and list tokens with the known lower-case spellings a proxy looks
//! for on every message (`content-length`, `connection`, `keep-alive`...), eight bytes at a
//! time.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = ONES * 0x80;

/// Bit 5 (the ASCII case bit) of each byte of `w` that is a lower-case ASCII letter.
#[inline]
fn letter_case_bits(w: u64) -> u64 {
    let low = w & !HIGH;
    // Bit 7 of a byte below 0x80 is set by the first sum when it is >= 'a' and by the
    // second when it is > 'z'; no sum carries into the next byte.
    let from_a = low + ONES * u64::from(0x80 - b'a');
    let past_z = low + ONES * u64::from(0x80 - b'z' - 1);
    (from_a & !past_z & !w & HIGH) >> 2
}

#[inline]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline]
fn word_matches(text: u64, lower: u64) -> bool {
    (text | letter_case_bits(lower)) == lower
}

/// Whether `text` equals `lower` with ASCII letters compared without case. `lower` is a
/// lower-case spelling: an upper-case letter in it matches only itself. Exact for any bytes
/// (a byte that is not a letter must be equal), like `eq_ignore_ascii_case`, and cheaper
/// for the names a proxy compares.
#[inline]
pub fn eq_lowercase(text: &[u8], lower: &[u8]) -> bool {
    let n = lower.len();
    if text.len() != n {
        return false;
    }
    if n < 8 {
        return text
            .iter()
            .zip(lower)
            .all(|(&t, &l)| t | (u8::from(l.is_ascii_lowercase()) << 5) == l);
    }
    let mut at = 0;
    while at + 8 < n {
        if !word_matches(word(text, at), word(lower, at)) {
            return false;
        }
        at += 8;
    }
    // The last word overlaps the one before it when the length is not a multiple of 8.
    word_matches(word(text, n - 8), word(lower, n - 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_match_in_any_case_and_nothing_else_does() {
        assert!(eq_lowercase(b"Content-Length", b"content-length"));
        assert!(eq_lowercase(b"CONNECTION", b"connection"));
        assert!(eq_lowercase(b"Keep-Alive", b"keep-alive"));
        assert!(eq_lowercase(b"HOST", b"host"));
        assert!(!eq_lowercase(b"content-lengtH ", b"content-length"));
        assert!(!eq_lowercase(b"content_length", b"content-length"));
        // Bytes one case bit away from '-' and from digits are not letters.
        assert!(!eq_lowercase(b"content\rlength", b"content-length"));
        assert!(!eq_lowercase(b"x-request\x10id1", b"x-request-id1"));
        assert!(!eq_lowercase(
            b"\xc3\xa9tag-something",
            b"\xe3\xa9tag-something"
        ));
        assert!(eq_lowercase(b"", b""));
    }

    proptest! {
        #[test]
        fn agrees_with_the_standard_comparison(
            text in proptest::collection::vec(any::<u8>(), 0..40),
            flips in proptest::collection::vec(any::<bool>(), 0..40),
        ) {
            // A lower-case spelling, and the text itself with some letters' case flipped,
            // so that equal lengths and near-misses are common.
            let lower = text.to_ascii_lowercase();
            let varied: Vec<u8> = text
                .iter()
                .zip(flips.iter().chain(std::iter::repeat(&false)))
                .map(|(&b, &f)| if f && b.is_ascii_alphabetic() { b ^ 0x20 } else { b })
                .collect();
            prop_assert_eq!(eq_lowercase(&varied, &lower), varied.eq_ignore_ascii_case(&lower));
            prop_assert_eq!(eq_lowercase(&text, &lower), text.eq_ignore_ascii_case(&lower));
            let mut other = varied.clone();
            if let Some(last) = other.last_mut() {
                *last ^= 0x20;
            }
            prop_assert_eq!(eq_lowercase(&other, &lower), other.eq_ignore_ascii_case(&lower));
        }
    }
}
