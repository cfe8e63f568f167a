//! Streaming encryption: round trips at segment boundaries, and every way a stream can be
//! cut, extended, reordered or spliced fails.

use std::io::{Read, Write};

use rampart_vault::stream::{self, MIN_SEGMENT};
use rampart_vault::{Algorithm, Keyring, RotationPolicy, TAG_LEN, VaultError};

const SEGMENT: usize = MIN_SEGMENT;

fn keyring(algorithm: Algorithm) -> Keyring {
    let keyring = Keyring::new(RotationPolicy::default());
    keyring.create_key("files", algorithm).unwrap();
    keyring
}

fn seal(keyring: &Keyring, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    stream::encrypt(
        keyring,
        "files",
        SEGMENT,
        b"",
        &mut &plaintext[..],
        &mut out,
    )
    .unwrap();
    out
}

fn open(keyring: &Keyring, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::new();
    stream::decrypt(keyring, b"", &mut &sealed[..], &mut out).map(|_| out)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn header_len(sealed: &[u8]) -> usize {
    // magic, format, algorithm, name length, name, version, segment, salt, prefix
    6 + usize::from(sealed[5]) + 4 + 4 + 32 + 7
}

#[test]
fn sizes_around_segment_boundaries_round_trip() {
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        let keyring = keyring(algorithm);
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let plaintext = data(len);
            let sealed = seal(&keyring, &plaintext);
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(
                sealed.len(),
                header_len(&sealed) + len + segments * TAG_LEN,
                "{len}"
            );
            assert_eq!(open(&keyring, &sealed).unwrap(), plaintext, "{len}");
        }
    }
}

#[test]
fn truncation_at_every_kind_of_place_fails() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    for len in [0, 100, SEGMENT, 2 * SEGMENT + 5] {
        let sealed = seal(&keyring, &data(len));
        let header = header_len(&sealed);
        let full = SEGMENT + TAG_LEN;
        let mut cuts = vec![0, 3, header - 1, header, header + 1, sealed.len() - 1];
        if sealed.len() > header + full {
            // Exactly after a whole segment: what is left looks complete but is not last.
            cuts.push(header + full);
        }
        for cut in cuts {
            let result = open(&keyring, &sealed[..cut]);
            assert!(result.is_err(), "len {len} cut at {cut} opened");
        }
        if sealed.len() > header + full {
            assert!(matches!(
                open(&keyring, &sealed[..header + full]),
                Err(VaultError::Truncated)
            ));
        }
    }
}

#[test]
fn extension_reordering_and_splicing_fail() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    let sealed = seal(&keyring, &data(3 * SEGMENT + 9));
    let header = header_len(&sealed);
    let full = SEGMENT + TAG_LEN;

    let mut extended = sealed.clone();
    extended.extend_from_slice(&[0u8; 40]);
    assert!(open(&keyring, &extended).is_err());
    // After a full last segment the appended bytes are named as such.
    let exact = seal(&keyring, &data(2 * SEGMENT));
    let mut appended = exact.clone();
    appended.extend_from_slice(b"more");
    assert!(matches!(
        open(&keyring, &appended),
        Err(VaultError::Extended)
    ));
    let mut doubled_last = sealed.clone();
    doubled_last.extend_from_slice(&sealed[header + 3 * full..]);
    assert!(open(&keyring, &doubled_last).is_err());

    let mut swapped = sealed[..header].to_vec();
    swapped.extend_from_slice(&sealed[header + full..header + 2 * full]);
    swapped.extend_from_slice(&sealed[header..header + full]);
    swapped.extend_from_slice(&sealed[header + 2 * full..]);
    assert!(open(&keyring, &swapped).is_err());

    let mut dropped = sealed[..header + full].to_vec();
    dropped.extend_from_slice(&sealed[header + 2 * full..]);
    assert!(open(&keyring, &dropped).is_err());

    // A segment from another file under the same key does not open here.
    let other = seal(&keyring, &data(3 * SEGMENT + 9));
    let mut spliced = sealed.clone();
    spliced[header + full..header + 2 * full]
        .copy_from_slice(&other[header + full..header + 2 * full]);
    assert!(open(&keyring, &spliced).is_err());

    let mut flipped = sealed.clone();
    flipped[header + 5] ^= 1;
    assert!(matches!(
        open(&keyring, &flipped),
        Err(VaultError::Tampered)
    ));
    let mut header_changed = sealed.clone();
    header_changed[header - 1] ^= 1;
    assert!(open(&keyring, &header_changed).is_err());
}

#[test]
fn nothing_of_a_bad_segment_is_written() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    let sealed = seal(&keyring, &data(2 * SEGMENT + 1));
    let header = header_len(&sealed);
    let mut changed = sealed.clone();
    changed[header + SEGMENT + TAG_LEN + 10] ^= 1;
    let mut out = Vec::new();
    assert!(stream::decrypt(&keyring, b"", &mut &changed[..], &mut out).is_err());
    assert_eq!(out.len(), SEGMENT, "only the first, verified segment");
}

#[test]
fn rotation_keeps_old_files_readable() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    let sealed = seal(&keyring, b"old file");
    keyring.rotate("files").unwrap();
    assert_eq!(open(&keyring, &sealed).unwrap(), b"old file");
    keyring.set_min_decryption_version("files", 2).unwrap();
    assert!(matches!(
        open(&keyring, &sealed),
        Err(VaultError::BelowMinimumVersion { .. })
    ));
}

/// A 253-byte period: not a divisor of any segment size, so segments differ.
const PERIOD: usize = 253;

fn pattern() -> Vec<u8> {
    (0..PERIOD * 4096).map(|i| (i % PERIOD) as u8).collect()
}

/// Yields `remaining` bytes of the pattern without storing them.
struct Generator {
    remaining: u64,
    position: usize,
    pattern: Vec<u8>,
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(self.remaining as usize)
            .min(self.pattern.len() - PERIOD);
        let at = self.position % PERIOD;
        buf[..n].copy_from_slice(&self.pattern[at..at + n]);
        self.position += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Checks the bytes against the pattern as they arrive.
struct Checker {
    position: usize,
    pattern: Vec<u8>,
}

impl Write for Checker {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for chunk in buf.chunks(self.pattern.len() - PERIOD) {
            let at = self.position % PERIOD;
            assert!(
                chunk == &self.pattern[at..at + chunk.len()],
                "at {}",
                self.position
            );
            self.position += chunk.len();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stream_of_several_gib_passes_in_constant_memory() {
    const LEN: u64 = (2 << 30) + 12_345;
    let keyring = std::sync::Arc::new(keyring(Algorithm::Aes256Gcm));
    let (reader, mut writer) = std::io::pipe().unwrap();
    let sealer = {
        let keyring = std::sync::Arc::clone(&keyring);
        std::thread::spawn(move || {
            let mut input = Generator {
                remaining: LEN,
                position: 0,
                pattern: pattern(),
            };
            stream::encrypt(
                &keyring,
                "files",
                stream::MAX_SEGMENT,
                b"",
                &mut input,
                &mut writer,
            )
        })
    };
    let mut checker = Checker {
        position: 0,
        pattern: pattern(),
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
    let opened = stream::decrypt(&keyring, b"", &mut reader, &mut checker).unwrap();
    assert_eq!(sealer.join().unwrap().unwrap(), LEN);
    assert_eq!(opened, LEN);
    assert_eq!(checker.position as u64, LEN);
}

#[test]
fn the_callers_associated_data_binds_the_stream() {
    let keyring = keyring(Algorithm::ChaCha20Poly1305);
    let mut sealed = Vec::new();
    stream::encrypt(
        &keyring,
        "files",
        SEGMENT,
        b"object-1",
        &mut &b"bound"[..],
        &mut sealed,
    )
    .unwrap();
    let mut out = Vec::new();
    assert!(stream::decrypt(&keyring, b"object-2", &mut &sealed[..], &mut out).is_err());
    assert!(out.is_empty());
    stream::decrypt(&keyring, b"object-1", &mut &sealed[..], &mut out).unwrap();
    assert_eq!(out, b"bound");
}
