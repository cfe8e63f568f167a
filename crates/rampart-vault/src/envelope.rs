//! The ciphertext format.
//!
//! ```text
//! magic "RV" | format 1 | algorithm (1 byte) | key name length (1 byte) | key name |
//! key version (u32, big-endian) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! Everything before the ciphertext is the header, and the header is authenticated as the
//! start of the AEAD's associated data, followed by the caller's: changing the algorithm,
//! the key or its version makes opening fail. The header fixes its own length, so no two
//! (header, associated data) pairs read as the same bytes. The text form for APIs and config
//! files is `rampart:v<version>:<base64url of the binary form>`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::VaultError;
use crate::key::{Algorithm, NONCE_LEN, TAG_LEN};

pub const MAGIC: &[u8; 2] = b"RV";
pub const FORMAT: u8 = 1;
/// Longest key name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
const TEXT_PREFIX: &str = "rampart:v";

/// The parsed header of a ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub algorithm: Algorithm,
    pub key: &'a str,
    pub version: u32,
    pub nonce: [u8; NONCE_LEN],
    /// The header's bytes, as authenticated.
    pub bytes: &'a [u8],
}

/// Whether a key name is one the vault accepts: 1 to 64 of `a-z`, `0-9`, `_`, `-`.
pub fn valid_key_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Writes a header into `out` (cleared first).
pub fn write_header(
    out: &mut Vec<u8>,
    algorithm: Algorithm,
    key: &str,
    version: u32,
    nonce: &[u8; NONCE_LEN],
) {
    out.clear();
    write_identity(out, MAGIC, FORMAT, algorithm, key, version);
    out.extend_from_slice(nonce);
}

/// The start every vault header shares: magic, format, algorithm, key name length, key name
/// and key version.
pub(crate) fn write_identity(
    out: &mut Vec<u8>,
    magic: &[u8],
    format: u8,
    algorithm: Algorithm,
    key: &str,
    version: u32,
) {
    out.extend_from_slice(magic);
    out.push(format);
    out.push(algorithm.id());
    // Key names are checked when keys are made, so the length fits a byte.
    out.push(key.len() as u8);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
}

/// Splits a ciphertext into its header and the ciphertext with its tag.
pub fn parse(bytes: &[u8]) -> Result<(Header<'_>, &[u8]), VaultError> {
    if bytes.len() < 2 || &bytes[..2] != MAGIC {
        return Err(VaultError::Malformed(
            "it does not start with the vault's magic bytes",
        ));
    }
    let format = *bytes
        .get(2)
        .ok_or(VaultError::Malformed("the header is cut short"))?;
    if format != FORMAT {
        return Err(VaultError::Malformed("unknown format version"));
    }
    let algorithm = bytes
        .get(3)
        .copied()
        .and_then(Algorithm::from_id)
        .ok_or(VaultError::Malformed("unknown algorithm"))?;
    let name_len = usize::from(
        *bytes
            .get(4)
            .ok_or(VaultError::Malformed("the header is cut short"))?,
    );
    let name_end = 5 + name_len;
    let header_len = name_end + 4 + NONCE_LEN;
    if bytes.len() < header_len + TAG_LEN {
        return Err(VaultError::Malformed(
            "it is shorter than a header and a tag",
        ));
    }
    let key = std::str::from_utf8(&bytes[5..name_end])
        .ok()
        .filter(|k| valid_key_name(k))
        .ok_or(VaultError::Malformed("the key name is not valid"))?;
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[name_end..name_end + 4]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[name_end + 4..header_len]);
    Ok((
        Header {
            algorithm,
            key,
            version: u32::from_be_bytes(version),
            nonce,
            bytes: &bytes[..header_len],
        },
        &bytes[header_len..],
    ))
}

/// The text form of a ciphertext.
pub fn to_text(ciphertext: &[u8]) -> Result<String, VaultError> {
    let (header, _) = parse(ciphertext)?;
    Ok(format!(
        "{TEXT_PREFIX}{}:{}",
        header.version,
        URL_SAFE_NO_PAD.encode(ciphertext)
    ))
}

/// The binary form of a text ciphertext; the version in the text must be the one inside.
pub fn from_text(text: &str) -> Result<Vec<u8>, VaultError> {
    let rest = text
        .trim()
        .strip_prefix(TEXT_PREFIX)
        .ok_or(VaultError::Malformed(
            "a text ciphertext starts with `rampart:v`",
        ))?;
    let (version, encoded) = rest.split_once(':').ok_or(VaultError::Malformed(
        "a text ciphertext is `rampart:v<N>:<base64>`",
    ))?;
    let version: u32 = version
        .parse()
        .map_err(|_| VaultError::Malformed("the version in the text form is not a number"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| VaultError::Malformed("the text form is not base64url"))?;
    let (header, _) = parse(&bytes)?;
    if header.version != version {
        return Err(VaultError::Malformed(
            "the version in the text form differs from the one in the ciphertext",
        ));
    }
    Ok(bytes)
}
