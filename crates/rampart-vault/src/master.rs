//! The master key that seals the keyring's key material.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::VaultError;
use crate::key::{KEY_LEN, SecretKey};

/// 32 bytes that seal the keys in the keyring file; zeroed when dropped. Given as bytes, or
/// derived from a passphrase with Argon2id, whose salt and parameters the keyring file keeps.
#[derive(Debug)]
pub struct MasterKey {
    pub(crate) secret: SecretKey,
    pub(crate) kdf: Option<Kdf>,
}

/// How a passphrase became the master key: Argon2id with these parameters and salt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    /// Base64 of 16 random bytes.
    pub salt: String,
    pub memory_kib: u32,
    pub passes: u32,
    pub lanes: u32,
}

impl MasterKey {
    /// The environment variable the CLI reads it from.
    pub const ENV: &'static str = "RAMPART_MASTER_KEY";
    /// The environment variable for a passphrase instead.
    pub const PASSPHRASE_ENV: &'static str = "RAMPART_MASTER_PASSPHRASE";

    fn from_secret(secret: SecretKey) -> MasterKey {
        MasterKey { secret, kdf: None }
    }

    /// Derives the master key from a passphrase: with the keyring's recorded salt and
    /// parameters, or, for a new keyring, a new salt and OWASP's parameters.
    pub fn from_passphrase(passphrase: &str, kdf: Option<Kdf>) -> Result<MasterKey, VaultError> {
        if passphrase.chars().count() < 12 {
            return Err(VaultError::MasterKey(
                "the passphrase must be at least 12 characters".into(),
            ));
        }
        let kdf = match kdf {
            Some(kdf) => kdf,
            None => {
                let mut salt = [0u8; 16];
                crate::key::fill_random(&mut salt)?;
                Kdf {
                    salt: STANDARD.encode(salt),
                    memory_kib: crate::secrets::ARGON2_MEMORY_KIB,
                    passes: crate::secrets::ARGON2_PASSES,
                    lanes: crate::secrets::ARGON2_LANES,
                }
            }
        };
        let salt = STANDARD.decode(&kdf.salt).map_err(|_| {
            VaultError::MasterKey("the keyring's passphrase salt is not base64".into())
        })?;
        let bytes = crate::secrets::derive_key(passphrase.as_bytes(), &salt, &kdf)?;
        Ok(MasterKey {
            secret: SecretKey::from_bytes(*bytes),
            kdf: Some(kdf),
        })
    }

    /// A new random master key and its base64 text, to be kept by the operator.
    pub fn generate() -> Result<(MasterKey, Zeroizing<String>), VaultError> {
        let secret = SecretKey::random()?;
        let text = Zeroizing::new(STANDARD.encode(secret.expose()));
        Ok((MasterKey::from_secret(secret), text))
    }

    /// 32 bytes in standard base64.
    pub fn from_base64(text: &str) -> Result<MasterKey, VaultError> {
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| {
            VaultError::MasterKey(
                "it is not standard base64; make one with `head -c 32 /dev/urandom | base64`"
                    .into(),
            )
        })?);
        let array: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            VaultError::MasterKey(format!(
                "it decodes to {} bytes, not 32; make one with `head -c 32 /dev/urandom | base64`",
                bytes.len()
            ))
        })?;
        Ok(MasterKey::from_secret(SecretKey::from_bytes(array)))
    }

    /// From `RAMPART_MASTER_KEY`.
    pub fn from_env() -> Result<MasterKey, VaultError> {
        let text = Zeroizing::new(std::env::var(Self::ENV).map_err(|_| {
            VaultError::MasterKey(format!(
                "{} is not set: set it to the master key printed by `rampart vault init` \
                 (32 random bytes in base64), or pass --master-key-file",
                Self::ENV
            ))
        })?);
        Self::from_base64(&text)
    }

    /// From a file holding the base64 text; the file must not be readable by others.
    pub fn from_file(path: &Path) -> Result<MasterKey, VaultError> {
        crate::file::check_private(path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?,
        );
        Self::from_base64(&text).map_err(|e| match e {
            VaultError::MasterKey(message) => {
                VaultError::MasterKey(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }
}
