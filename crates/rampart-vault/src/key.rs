//! Key material and the AEAD algorithms it is used with.

use aws_lc_rs::aead::{self, LessSafeKey, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::VaultError;

/// Bytes in every key the vault makes.
pub const KEY_LEN: usize = 32;
/// Bytes in an AEAD nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes in an AEAD tag.
pub const TAG_LEN: usize = 16;

/// The AEADs a key can use; the number is what the ciphertext header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    Aes256Gcm = 1,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305 = 2,
}

impl Algorithm {
    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Algorithm::Aes256Gcm),
            2 => Some(Algorithm::ChaCha20Poly1305),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Algorithm::Aes256Gcm => &aead::AES_256_GCM,
            Algorithm::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, VaultError> {
        match s {
            "aes-256-gcm" => Ok(Algorithm::Aes256Gcm),
            "chacha20-poly1305" => Ok(Algorithm::ChaCha20Poly1305),
            other => Err(VaultError::Refused(format!(
                "unknown algorithm `{other}`: use aes-256-gcm or chacha20-poly1305"
            ))),
        }
    }
}

/// 32 secret bytes: zeroed when dropped, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn random() -> Result<Self, VaultError> {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes)?;
        Ok(SecretKey(bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), VaultError> {
    aws_lc_rs::rand::fill(out).map_err(|_| VaultError::Random)
}

/// A key ready to seal and open: the algorithm's expanded key schedule, built once.
pub(crate) struct Cipher {
    key: LessSafeKey,
}

impl Cipher {
    pub fn new(algorithm: Algorithm, secret: &SecretKey) -> Self {
        let unbound = UnboundKey::new(algorithm.aead(), secret.expose())
            .expect("a 32-byte key fits both algorithms");
        Cipher {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], VaultError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                in_out,
            )
            .map_err(|_| VaultError::Refused("the input is too long for one AEAD call".into()))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts in place with the tag held apart; nothing is released unless it verifies.
    pub fn open_separate<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        ciphertext: &'a mut [u8],
    ) -> Result<&'a mut [u8], VaultError> {
        let opened = self
            .key
            .open_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                tag,
                &mut *ciphertext,
            )
            .map(|plaintext| plaintext.len());
        match opened {
            Ok(len) => Ok(&mut ciphertext[..len]),
            Err(_) => {
                // A failed open may leave unverified bytes behind: none are released.
                ciphertext.fill(0);
                Err(VaultError::Tampered)
            }
        }
    }

    /// Decrypts ciphertext followed by its tag in place; returns the plaintext part. Nothing
    /// is released unless the tag verifies.
    pub fn open<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &'a mut [u8],
    ) -> Result<&'a mut [u8], VaultError> {
        let Some(split) = ciphertext_and_tag.len().checked_sub(TAG_LEN) else {
            ciphertext_and_tag.fill(0);
            return Err(VaultError::Tampered);
        };
        let (ciphertext, tag) = ciphertext_and_tag.split_at_mut(split);
        let mut held = [0u8; TAG_LEN];
        held.copy_from_slice(tag);
        let opened = self.open_separate(nonce, aad, &held, ciphertext);
        if opened.is_err() {
            tag.fill(0);
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| (b as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    fn check(
        algorithm: Algorithm,
        key: &str,
        nonce: &str,
        aad: &str,
        plain: &[u8],
        sealed: &str,
        tag: &str,
    ) {
        let key: [u8; KEY_LEN] = hex(key).try_into().unwrap();
        let nonce: [u8; NONCE_LEN] = hex(nonce).try_into().unwrap();
        let cipher = Cipher::new(algorithm, &SecretKey::from_bytes(key));
        let mut data = plain.to_vec();
        let got = cipher.seal(nonce, &hex(aad), &mut data).unwrap();
        assert_eq!(data, hex(sealed));
        assert_eq!(got.to_vec(), hex(tag));
        let mut both = data.clone();
        both.extend_from_slice(&got);
        assert_eq!(cipher.open(nonce, &hex(aad), &mut both).unwrap(), plain);
        both[0] ^= 1;
        assert!(cipher.open(nonce, &hex(aad), &mut both).is_err());
        assert!(
            both.iter().all(|b| *b == 0),
            "a failed open releases nothing"
        );
    }

    #[test]
    fn aes_256_gcm_known_answer() {
        // The GCM specification's test case 16 (McGrew and Viega).
        check(
            Algorithm::Aes256Gcm,
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            &hex(
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                  1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            ),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        );
    }

    #[test]
    fn chacha20_poly1305_known_answer() {
        // RFC 8439, section 2.8.2.
        check(
            Algorithm::ChaCha20Poly1305,
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
            "070000004041424344454647",
            "50515253c0c1c2c3c4c5c6c7",
            b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it.",
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
             3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
             92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
             3ff4def08e4b7a9de576d26586cec64b6116",
            "1ae10b594f09e26a7e902ecbd0600691",
        );
    }

    #[test]
    fn key_bytes_are_never_printed() {
        let key = SecretKey::from_bytes([0x41; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
