//! Streaming encryption of files of any size in constant memory.
//!
//! ```text
//! header: magic "RVS" | format 1 | algorithm | key name length | key name | key version (u32 BE)
//!         | segment size (u32 BE) | salt (32 bytes) | nonce prefix (7 bytes)
//! then segments: ciphertext of `segment size` bytes (the last may be shorter, even empty) | tag
//! ```
//!
//! Each file gets its own key, HKDF-SHA256 of the key version's bytes with the random salt
//! and the header as info. Segment `i` is sealed with the nonce `prefix ‖ i (u32 BE) ‖ last`,
//! where `last` is 1 for the final segment and 0 otherwise, and the header followed by the
//! caller's associated data (say, the file's identity) as associated data.
//! So a reordered, dropped, duplicated or spliced segment, a truncated stream and an extended
//! one all fail to open; no plaintext of a segment is written before its tag verifies.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use aws_lc_rs::hkdf;

use crate::envelope::{MAX_NAME_LEN, valid_key_name, write_identity};
use crate::file::{commit, write_temporary};
use crate::key::{Algorithm, Cipher, KEY_LEN, NONCE_LEN, SecretKey, TAG_LEN, fill_random};
use crate::{Keyring, VaultError};

pub const MAGIC: &[u8; 3] = b"RVS";
pub const FORMAT: u8 = 1;
/// Smallest and largest segment, and the default.
pub const MIN_SEGMENT: usize = 64 * 1024;
pub const MAX_SEGMENT: usize = 1024 * 1024;
pub const DEFAULT_SEGMENT: usize = 256 * 1024;
const SALT_LEN: usize = 32;
const PREFIX_LEN: usize = 7;

struct FileKey(SecretKey);

impl hkdf::KeyType for FileKeyLen {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

struct FileKeyLen;

fn derive(secret: &SecretKey, salt: &[u8], header: &[u8]) -> Result<FileKey, VaultError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret.expose());
    let info = [b"rampart-vault stream v1".as_slice(), header];
    let okm = prk
        .expand(&info, FileKeyLen)
        .map_err(|_| VaultError::Refused("key derivation failed".into()))?;
    let mut bytes = [0u8; KEY_LEN];
    okm.fill(&mut bytes)
        .map_err(|_| VaultError::Refused("key derivation failed".into()))?;
    Ok(FileKey(SecretKey::from_bytes(bytes)))
}

fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_LEN - 1] = u8::from(last);
    nonce
}

/// Reads until `buffer` is full or the input ends; returns how many bytes were read.
fn read_full(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize, VaultError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VaultError::io("reading the input", e)),
        }
    }
    Ok(filled)
}

/// Encrypts everything `input` yields into `output` with `key`'s primary version; returns the
/// number of plaintext bytes.
pub fn encrypt(
    keyring: &Keyring,
    key: &str,
    segment: usize,
    aad: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<u64, VaultError> {
    if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment) {
        return Err(VaultError::Refused(format!(
            "segment size must be between {MIN_SEGMENT} and {MAX_SEGMENT} bytes"
        )));
    }
    let mut salt = [0u8; SALT_LEN];
    let mut prefix = [0u8; PREFIX_LEN];
    fill_random(&mut salt)?;
    fill_random(&mut prefix)?;
    let (header, cipher) = keyring.with_version(key, None, |algorithm, version, secret| {
        let header = write_header(algorithm, key, version, segment as u32, &salt, &prefix);
        let file_key = derive(secret, &salt, &header)?;
        Ok((header, Cipher::new(algorithm, &file_key.0)))
    })?;
    output
        .write_all(&header)
        .map_err(|e| VaultError::io("writing the output", e))?;
    let associated = [header.as_slice(), aad].concat();
    // Two buffers: a segment is only sealed once the next read shows whether it is the last.
    let mut current = vec![0u8; segment + TAG_LEN];
    let mut next = vec![0u8; segment + TAG_LEN];
    let mut len = read_full(input, &mut current[..segment])?;
    let mut counter: u32 = 0;
    let mut total = len as u64;
    loop {
        let next_len = if len == segment {
            read_full(input, &mut next[..segment])?
        } else {
            0
        };
        let last = next_len == 0;
        let tag = cipher.seal(
            nonce(&prefix, counter, last),
            &associated,
            &mut current[..len],
        )?;
        current[len..len + TAG_LEN].copy_from_slice(&tag);
        output
            .write_all(&current[..len + TAG_LEN])
            .map_err(|e| VaultError::io("writing the output", e))?;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or_else(|| VaultError::Refused("the stream has too many segments".into()))?;
        std::mem::swap(&mut current, &mut next);
        len = next_len;
        total += len as u64;
    }
    output
        .flush()
        .map_err(|e| VaultError::io("writing the output", e))?;
    Ok(total)
}

fn write_header(
    algorithm: Algorithm,
    key: &str,
    version: u32,
    segment: u32,
    salt: &[u8; SALT_LEN],
    prefix: &[u8; PREFIX_LEN],
) -> Vec<u8> {
    let mut header = Vec::with_capacity(64 + key.len());
    write_identity(&mut header, MAGIC, FORMAT, algorithm, key, version);
    header.extend_from_slice(&segment.to_be_bytes());
    header.extend_from_slice(salt);
    header.extend_from_slice(prefix);
    header
}

/// A stream's header as read from its start.
struct StreamHeader {
    algorithm: Algorithm,
    key: String,
    version: u32,
    segment: usize,
    salt: [u8; SALT_LEN],
    prefix: [u8; PREFIX_LEN],
    /// The header's bytes, as authenticated.
    bytes: Vec<u8>,
}

fn read_header(input: &mut impl Read) -> Result<StreamHeader, VaultError> {
    let mut fixed = [0u8; 6];
    if read_full(input, &mut fixed)? < fixed.len() || &fixed[..3] != MAGIC {
        return Err(VaultError::Malformed("not a Rampart encrypted file"));
    }
    if fixed[3] != FORMAT {
        return Err(VaultError::Malformed("unknown stream format version"));
    }
    let algorithm =
        Algorithm::from_id(fixed[4]).ok_or(VaultError::Malformed("unknown algorithm"))?;
    let name_len = usize::from(fixed[5]);
    if name_len == 0 || name_len > MAX_NAME_LEN {
        return Err(VaultError::Malformed("the key name is not valid"));
    }
    let mut rest = vec![0u8; name_len + 4 + 4 + SALT_LEN + PREFIX_LEN];
    if read_full(input, &mut rest)? < rest.len() {
        return Err(VaultError::Truncated);
    }
    let key = std::str::from_utf8(&rest[..name_len])
        .ok()
        .filter(|k| valid_key_name(k))
        .ok_or(VaultError::Malformed("the key name is not valid"))?
        .to_owned();
    let field =
        |at: usize| u32::from_be_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    let version = field(name_len);
    let segment = field(name_len + 4) as usize;
    if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment) {
        return Err(VaultError::Malformed("the segment size is out of range"));
    }
    let salt_at = name_len + 8;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&rest[salt_at..salt_at + SALT_LEN]);
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&rest[salt_at + SALT_LEN..]);
    let mut bytes = fixed.to_vec();
    bytes.extend_from_slice(&rest);
    Ok(StreamHeader {
        algorithm,
        key,
        version,
        segment,
        salt,
        prefix,
        bytes,
    })
}

/// Decrypts a stream made by [`encrypt`] into `output`; returns the plaintext length. Each
/// segment is written only after its tag verifies; a stream that ends early or goes on after
/// its last segment is an error.
pub fn decrypt(
    keyring: &Keyring,
    aad: &[u8],
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<u64, VaultError> {
    let StreamHeader {
        algorithm,
        key,
        version,
        segment,
        salt,
        prefix,
        bytes: header,
    } = read_header(input)?;
    let cipher = keyring.with_version(&key, Some(version), |key_algorithm, _, secret| {
        if key_algorithm != algorithm {
            return Err(VaultError::Tampered);
        }
        let file_key = derive(secret, &salt, &header)?;
        Ok(Cipher::new(algorithm, &file_key.0))
    })?;
    let associated = [header.as_slice(), aad].concat();
    let sealed = segment + TAG_LEN;
    let mut current = vec![0u8; sealed];
    let mut next = vec![0u8; sealed];
    let mut len = read_full(input, &mut current)?;
    let mut counter: u32 = 0;
    let mut total = 0u64;
    loop {
        if len < TAG_LEN {
            return Err(VaultError::Truncated);
        }
        // A full segment may be followed by more; anything shorter must be the last.
        let next_len = if len == sealed {
            read_full(input, &mut next)?
        } else {
            0
        };
        let last = next_len == 0;
        // A full segment that ends the input is either the last one or the sign of a cut;
        // a full segment followed only by a short remainder may be the real last segment
        // with bytes appended. Keep its bytes to tell which if it does not open.
        let kept = (len == sealed && next_len < sealed).then(|| current[..len].to_vec());
        let plaintext = match cipher.open(
            nonce(&prefix, counter, last),
            &associated,
            &mut current[..len],
        ) {
            Ok(plaintext) => plaintext,
            Err(VaultError::Tampered)
                if kept.is_some_and(|mut bytes| {
                    cipher
                        .open(nonce(&prefix, counter, !last), &associated, &mut bytes)
                        .is_ok()
                }) =>
            {
                return Err(if last {
                    VaultError::Truncated
                } else {
                    VaultError::Extended
                });
            }
            Err(e) => return Err(e),
        };
        output
            .write_all(plaintext)
            .map_err(|e| VaultError::io("writing the output", e))?;
        total += plaintext.len() as u64;
        if last {
            break;
        }
        counter = counter
            .checked_add(1)
            .ok_or(VaultError::Malformed("the stream has too many segments"))?;
        std::mem::swap(&mut current, &mut next);
        len = next_len;
    }
    output
        .flush()
        .map_err(|e| VaultError::io("writing the output", e))?;
    Ok(total)
}

/// The key and key version a stream file is encrypted under, from its header.
pub fn file_key(path: &Path) -> Result<(String, u32), VaultError> {
    let mut file =
        File::open(path).map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
    let header = read_header(&mut file)?;
    Ok((header.key, header.version))
}

/// Re-encrypts the stream file at `path` under its key's primary version, in place and
/// without its plaintext touching the disk: the old stream is decrypted through a pipe into
/// the new one, which replaces the file only when the old one opened to its end. Returns the
/// plaintext length, or `None` when the file is already under the primary version.
pub fn rewrap_file(keyring: &Keyring, path: &Path, aad: &[u8]) -> Result<Option<u64>, VaultError> {
    let (key, version) = file_key(path)?;
    let primary = keyring.primary(&key)?;
    if version == primary {
        return Ok(None);
    }
    let (reader, mut writer) = std::io::pipe().map_err(|e| VaultError::io("making a pipe", e))?;
    std::thread::scope(|scope| {
        let decrypting = scope.spawn(|| {
            let file = File::open(path)
                .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
            let result = decrypt(
                keyring,
                aad,
                &mut BufReader::with_capacity(1 << 20, file),
                &mut writer,
            );
            drop(writer);
            result
        });
        let written = write_temporary(path, |out| {
            encrypt(
                keyring,
                &key,
                DEFAULT_SEGMENT,
                aad,
                &mut BufReader::new(reader),
                out,
            )
        });
        let read = decrypting
            .join()
            .map_err(|_| VaultError::Refused("the decrypting thread panicked".into()));
        // A failed read ends the new stream early: it must not replace the old one.
        match (read, written) {
            (Ok(Ok(_)), Ok((temporary, size))) => commit(&temporary, path).map(|()| Some(size)),
            (read, written) => {
                if let Ok((temporary, _)) = &written {
                    let _ = std::fs::remove_file(temporary);
                }
                Err(read
                    .and_then(|r| r)
                    .err()
                    .or(written.err())
                    .unwrap_or(VaultError::Truncated))
            }
        }
    })
}
