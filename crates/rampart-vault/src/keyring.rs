//! Named keys with numbered versions: one primary version encrypts, every version from the
//! minimum decryption version up decrypts.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::VaultError;
use crate::envelope::{self, valid_key_name};
use crate::key::{Algorithm, Cipher, NONCE_LEN, SecretKey, TAG_LEN, fill_random};

/// When a key gets a new primary version by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicy {
    /// Age of the primary version after which the next use rotates (default 24 hours).
    pub max_age_secs: u64,
    /// Encryptions after which a version is retired from encryption (default 2^31, far
    /// under the 2^32 limit for random 96-bit nonces).
    pub max_encryptions: u64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            max_age_secs: 24 * 60 * 60,
            max_encryptions: 1 << 31,
        }
    }
}

pub(crate) struct Version {
    pub secret: SecretKey,
    pub cipher: Cipher,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub encryptions: AtomicU64,
}

impl Version {
    pub fn new(algorithm: Algorithm, secret: SecretKey, created: u64, encryptions: u64) -> Self {
        Version {
            cipher: Cipher::new(algorithm, &secret),
            secret,
            created,
            encryptions: AtomicU64::new(encryptions),
        }
    }
}

pub(crate) struct Key {
    pub algorithm: Algorithm,
    pub primary: u32,
    pub min_decryption_version: u32,
    pub versions: BTreeMap<u32, Version>,
}

/// The header and tag of a ciphertext whose body was encrypted in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    pub header: Vec<u8>,
    pub tag: [u8; TAG_LEN],
}

/// What `status` shows of a key: never its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub name: String,
    pub algorithm: &'static str,
    pub primary: u32,
    pub min_decryption_version: u32,
    pub versions: Vec<VersionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: u32,
    pub created: u64,
    pub age_secs: u64,
    pub encryptions: u64,
}

/// The keys, shareable between threads: encryption and decryption take a read lock, rotation
/// a write lock.
pub struct Keyring {
    pub(crate) keys: RwLock<BTreeMap<String, Key>>,
    pub(crate) policy: RotationPolicy,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.read();
        f.debug_struct("Keyring")
            .field("keys", &keys.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Keyring {
    pub fn new(policy: RotationPolicy) -> Self {
        Keyring {
            keys: RwLock::new(BTreeMap::new()),
            policy,
        }
    }

    pub fn policy(&self) -> RotationPolicy {
        self.policy
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Key>> {
        // A panic while holding the lock cannot leave a key half-made: every change is built
        // first and inserted in one step, so the data behind a poisoned lock is whole.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Key>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a key with a first version.
    pub fn create_key(&self, name: &str, algorithm: Algorithm) -> Result<(), VaultError> {
        if !valid_key_name(name) {
            return Err(VaultError::BadKeyName(name.to_owned()));
        }
        let version = Version::new(algorithm, SecretKey::random()?, now_secs(), 0);
        let mut keys = self.write();
        if keys.contains_key(name) {
            return Err(VaultError::KeyExists(name.to_owned()));
        }
        keys.insert(
            name.to_owned(),
            Key {
                algorithm,
                primary: 1,
                min_decryption_version: 1,
                versions: BTreeMap::from([(1, version)]),
            },
        );
        Ok(())
    }

    /// A new primary version; returns its number.
    pub fn rotate(&self, name: &str) -> Result<u32, VaultError> {
        let secret = SecretKey::random()?;
        let mut keys = self.write();
        let key = keys
            .get_mut(name)
            .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
        Ok(add_version(key, secret))
    }

    /// Rotates every key whose primary version is older than the policy allows; returns the
    /// keys rotated and their new versions.
    pub fn rotate_due(&self, now: u64) -> Result<Vec<(String, u32)>, VaultError> {
        let due: Vec<String> = self
            .read()
            .iter()
            .filter(|(_, key)| self.due(key, now))
            .map(|(name, _)| name.clone())
            .collect();
        let mut rotated = Vec::new();
        for name in due {
            let secret = SecretKey::random()?;
            let mut keys = self.write();
            if let Some(key) = keys.get_mut(&name)
                && self.due(key, now)
            {
                rotated.push((name, add_version(key, secret)));
            }
        }
        Ok(rotated)
    }

    fn due(&self, key: &Key, now: u64) -> bool {
        key.versions.get(&key.primary).is_none_or(|v| {
            now.saturating_sub(v.created) >= self.policy.max_age_secs
                || v.encryptions.load(Ordering::Relaxed) >= self.policy.max_encryptions
        })
    }

    /// Encrypts with the key's primary version. A version that has reached the policy's
    /// encryption count or age is retired first: a new primary is made and used.
    pub fn encrypt(&self, name: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut out = Vec::with_capacity(plaintext.len() + 96);
        self.with_primary(name, |algorithm, number, version| {
            let mut nonce = [0u8; NONCE_LEN];
            fill_random(&mut nonce)?;
            envelope::write_header(&mut out, algorithm, name, number, &nonce);
            let header_len = out.len();
            out.extend_from_slice(plaintext);
            let (header, data) = out.split_at_mut(header_len);
            let tag = seal_with(version, nonce, header, aad, data)?;
            out.extend_from_slice(&tag);
            Ok(())
        })?;
        Ok(out)
    }

    /// Encrypts `data` in place with the key's primary version and returns the header and tag
    /// that go before and after it: `header ‖ data ‖ tag` is the same format as
    /// [`Keyring::encrypt`] makes, without copying large buffers.
    pub fn encrypt_in_place(
        &self,
        name: &str,
        data: &mut [u8],
        aad: &[u8],
    ) -> Result<Detached, VaultError> {
        self.with_primary(name, |algorithm, number, version| {
            let mut nonce = [0u8; NONCE_LEN];
            fill_random(&mut nonce)?;
            let mut header = Vec::with_capacity(32 + name.len());
            envelope::write_header(&mut header, algorithm, name, number, &nonce);
            let tag = seal_with(version, nonce, &header, aad, data)?;
            Ok(Detached { header, tag })
        })
    }

    /// Decrypts in place what [`Keyring::encrypt_in_place`] made.
    pub fn decrypt_in_place<'d>(
        &self,
        header: &[u8],
        tag: &[u8; TAG_LEN],
        data: &'d mut [u8],
        aad: &[u8],
    ) -> Result<&'d mut [u8], VaultError> {
        let mut whole = Vec::with_capacity(header.len() + TAG_LEN);
        whole.extend_from_slice(header);
        whole.extend_from_slice(tag);
        let (parsed, rest) = envelope::parse(&whole)?;
        if rest.len() != TAG_LEN {
            return Err(VaultError::Malformed("the header has trailing bytes"));
        }
        self.open_parsed(&parsed, aad, tag, data)
    }

    /// Opens a body under the version its parsed header names.
    fn open_parsed<'d>(
        &self,
        header: &envelope::Header<'_>,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        data: &'d mut [u8],
    ) -> Result<&'d mut [u8], VaultError> {
        let keys = self.read();
        let (key, version) = usable_version(&keys, header.key, header.version)?;
        if key.algorithm != header.algorithm {
            return Err(VaultError::Tampered);
        }
        let associated = associated_data(header.bytes, aad);
        version
            .cipher
            .open_separate(header.nonce, &associated, tag, data)
    }

    /// Runs `seal` with the primary version, retiring it first when the policy says so.
    fn with_primary<T>(
        &self,
        name: &str,
        mut seal: impl FnMut(Algorithm, u32, &Version) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        loop {
            {
                let keys = self.read();
                let key = keys
                    .get(name)
                    .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
                let version =
                    key.versions
                        .get(&key.primary)
                        .ok_or_else(|| VaultError::UnknownVersion {
                            name: name.to_owned(),
                            version: key.primary,
                        })?;
                let used = version.encryptions.fetch_add(1, Ordering::Relaxed);
                if used < self.policy.max_encryptions
                    && now_secs().saturating_sub(version.created) < self.policy.max_age_secs
                {
                    return seal(key.algorithm, key.primary, version);
                }
                version.encryptions.fetch_sub(1, Ordering::Relaxed);
            }
            let secret = SecretKey::random()?;
            let mut keys = self.write();
            if let Some(key) = keys.get_mut(name)
                && self.due(key, now_secs())
            {
                add_version(key, secret);
            }
        }
    }

    /// Decrypts a ciphertext made by [`Keyring::encrypt`] with the same associated data.
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (header, body) = envelope::parse(ciphertext)?;
        // `parse` guarantees room for the tag.
        let (sealed, tag) = body.split_at(body.len() - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut buffer = sealed.to_vec();
        self.open_parsed(&header, aad, &tag_bytes, &mut buffer)?;
        Ok(buffer)
    }

    /// Re-encrypts a ciphertext under its key's primary version without returning the
    /// plaintext; a ciphertext already under the primary comes back unchanged.
    pub fn rewrap(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (header, _) = envelope::parse(ciphertext)?;
        let name = header.key.to_owned();
        let primary = {
            let keys = self.read();
            keys.get(&name)
                .ok_or_else(|| VaultError::UnknownKey(name.clone()))?
                .primary
        };
        let plaintext = zeroize::Zeroizing::new(self.decrypt(ciphertext, aad)?);
        if header.version == primary {
            return Ok(ciphertext.to_vec());
        }
        self.encrypt(&name, &plaintext, aad)
    }

    /// Versions below `minimum` no longer decrypt.
    pub fn set_min_decryption_version(&self, name: &str, minimum: u32) -> Result<(), VaultError> {
        let mut keys = self.write();
        let key = keys
            .get_mut(name)
            .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
        if minimum == 0 || minimum > key.primary {
            return Err(VaultError::Refused(format!(
                "the minimum decryption version of `{name}` must be between 1 and the primary \
                 version {}",
                key.primary
            )));
        }
        key.min_decryption_version = minimum;
        Ok(())
    }

    /// Deletes the versions below `below`. Versions at or above the minimum decryption
    /// version may still be needed by stored data: deleting one is refused unless `force`.
    /// Returns how many versions were deleted.
    pub fn trim(&self, name: &str, below: u32, force: bool) -> Result<usize, VaultError> {
        let mut keys = self.write();
        let key = keys
            .get_mut(name)
            .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
        if below > key.primary {
            return Err(VaultError::Refused(format!(
                "the primary version {} of `{name}` cannot be trimmed",
                key.primary
            )));
        }
        if below > key.min_decryption_version && !force {
            return Err(VaultError::Refused(format!(
                "versions {}..{below} of `{name}` still decrypt (the minimum decryption version \
                 is {}): rewrap the data, raise the minimum, or trim with --force",
                key.min_decryption_version, key.min_decryption_version
            )));
        }
        let before = key.versions.len();
        key.versions.retain(|v, _| *v >= below);
        key.min_decryption_version = key.min_decryption_version.max(below);
        Ok(before - key.versions.len())
    }

    /// Every key's versions, ages and use counts; never key bytes.
    pub fn status(&self) -> Vec<KeyStatus> {
        let now = now_secs();
        self.read()
            .iter()
            .map(|(name, key)| KeyStatus {
                name: name.clone(),
                algorithm: key.algorithm.name(),
                primary: key.primary,
                min_decryption_version: key.min_decryption_version,
                versions: key
                    .versions
                    .iter()
                    .map(|(number, v)| VersionStatus {
                        version: *number,
                        created: v.created,
                        age_secs: now.saturating_sub(v.created),
                        encryptions: v.encryptions.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The key's primary version.
    pub fn primary(&self, name: &str) -> Result<u32, VaultError> {
        self.read()
            .get(name)
            .map(|key| key.primary)
            .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Runs `f` with the cipher and secret of a version that may decrypt, and the key's
    /// algorithm: for the streaming format, which derives a key per file.
    pub(crate) fn with_version<T>(
        &self,
        name: &str,
        version: Option<u32>,
        f: impl FnOnce(Algorithm, u32, &SecretKey) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let keys = self.read();
        let number = match version {
            Some(v) => v,
            None => {
                keys.get(name)
                    .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?
                    .primary
            }
        };
        let (key, v) = usable_version(&keys, name, number)?;
        if version.is_none() {
            v.encryptions.fetch_add(1, Ordering::Relaxed);
        }
        f(key.algorithm, number, &v.secret)
    }
}

fn add_version(key: &mut Key, secret: SecretKey) -> u32 {
    let number = key.versions.keys().next_back().copied().unwrap_or(0) + 1;
    key.versions
        .insert(number, Version::new(key.algorithm, secret, now_secs(), 0));
    key.primary = number;
    number
}

fn usable_version<'k>(
    keys: &'k BTreeMap<String, Key>,
    name: &str,
    number: u32,
) -> Result<(&'k Key, &'k Version), VaultError> {
    let key = keys
        .get(name)
        .ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
    if number < key.min_decryption_version {
        return Err(VaultError::BelowMinimumVersion {
            name: name.to_owned(),
            version: number,
            minimum: key.min_decryption_version,
        });
    }
    let version = key
        .versions
        .get(&number)
        .ok_or_else(|| VaultError::UnknownVersion {
            name: name.to_owned(),
            version: number,
        })?;
    Ok((key, version))
}

/// The AEAD's associated data: the header, then the caller's.
fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut associated = Vec::with_capacity(header.len() + aad.len());
    associated.extend_from_slice(header);
    associated.extend_from_slice(aad);
    associated
}

fn seal_with(
    version: &Version,
    nonce: [u8; NONCE_LEN],
    header: &[u8],
    aad: &[u8],
    data: &mut [u8],
) -> Result<[u8; TAG_LEN], VaultError> {
    version
        .cipher
        .seal(nonce, &associated_data(header, aad), data)
}
