//! Passwords, tokens and comparisons: Argon2id password hashes in PHC strings, random
//! URL-safe tokens, constant-time equality.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::VaultError;
use crate::key::fill_random;

/// OWASP's Argon2id parameters: 19 MiB of memory, 2 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

pub(crate) fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .expect("OWASP parameters are valid");
    Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
pub fn hash_password(password: &str) -> Result<String, VaultError> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| VaultError::Refused(format!("password salt: {e}")))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| VaultError::Refused(format!("hashing the password: {e}")))?
        .to_string())
}

/// Whether `password` matches a PHC string made by [`hash_password`] (or by any Argon2
/// parameters: the string carries them). A malformed string is an error, not a mismatch.
pub fn verify_password(password: &str, phc: &str) -> Result<bool, VaultError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| VaultError::Refused(format!("not a PHC password hash: {e}")))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(VaultError::Refused(format!("checking the password: {e}"))),
    }
}

/// Whether a hash was made with other parameters than today's and should be replaced the
/// next time its password is verified.
pub fn needs_rehash(phc: &str) -> Result<bool, VaultError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| VaultError::Refused(format!("not a PHC password hash: {e}")))?;
    let params = Params::try_from(&parsed)
        .map_err(|e| VaultError::Refused(format!("not an Argon2 hash: {e}")))?;
    Ok(parsed.algorithm.as_str() != "argon2id"
        || parsed.version != Some(Version::V0x13 as u32)
        || params.m_cost() != ARGON2_MEMORY_KIB
        || params.t_cost() != ARGON2_PASSES
        || params.p_cost() != ARGON2_LANES)
}

/// 256 random bits as URL-safe base64 (43 characters): API keys, session and reset tokens.
pub fn token() -> Result<String, VaultError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill_random(&mut bytes[..])?;
    Ok(URL_SAFE_NO_PAD.encode(&bytes[..]))
}

/// Equality whose time does not depend on where the inputs differ (their lengths may show).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Derives 32 key bytes from a passphrase with Argon2id, the salt and parameters of `kdf`.
pub(crate) fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    kdf: &crate::master::Kdf,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let params = Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(32))
        .map_err(|e| VaultError::MasterKey(format!("the keyring's Argon2 parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| VaultError::MasterKey(format!("deriving the key from the passphrase: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_verify_and_report_old_parameters() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc).unwrap());
        assert!(!verify_password("correct horsf", &phc).unwrap());
        assert_ne!(phc, hash_password("correct horse").unwrap(), "salted");
        assert!(!needs_rehash(&phc).unwrap());
        let weaker = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(&[1u8; 16]).unwrap())
        .unwrap()
        .to_string();
        assert!(needs_rehash(&weaker).unwrap());
        assert!(verify_password("pw", &weaker).unwrap());
        assert!(verify_password("pw", "not a hash").is_err());
    }

    #[test]
    fn tokens_are_256_bits_url_safe_and_distinct() {
        let a = token().unwrap();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, token().unwrap());
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
