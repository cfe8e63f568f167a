//! The keyring file: JSON, key material sealed under the master key, written atomically
//! (temporary file, fsync, rename, fsync of the directory) with mode 0600, and refused when
//! group or others can read it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::valid_key_name;
use crate::key::{Algorithm, Cipher, KEY_LEN, NONCE_LEN, SecretKey, TAG_LEN, fill_random};
use crate::keyring::{Key, Keyring, RotationPolicy, Version};
use crate::master::Kdf;
use crate::{MasterKey, VaultError};

const FORMAT: u32 = 1;
const CHECK_TEXT: &[u8] = b"rampart master key check";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    /// A known text sealed under the master key: a wrong master key is told apart from a
    /// damaged key.
    check: String,
    policy: RotationPolicy,
    /// Present when the master key comes from a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<Kdf>,
    keys: Vec<KeyFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    name: String,
    algorithm: Algorithm,
    primary: u32,
    min_decryption_version: u32,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    created: u64,
    encryptions: u64,
    /// Nonce, sealed key bytes and tag, in base64.
    material: String,
}

fn material_aad(name: &str, version: u32) -> Vec<u8> {
    let mut aad = b"rampart-keyring/1/".to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad.push(b'/');
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn seal(master: &Cipher, plaintext: &[u8], aad: &[u8]) -> Result<String, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut buffer = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN));
    buffer.extend_from_slice(&nonce);
    buffer.extend_from_slice(plaintext);
    let tag = master.seal(nonce, aad, &mut buffer[NONCE_LEN..])?;
    buffer.extend_from_slice(&tag);
    Ok(STANDARD.encode(&buffer[..]))
}

fn open(master: &Cipher, sealed: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut bytes = Zeroizing::new(
        STANDARD
            .decode(sealed)
            .map_err(|_| VaultError::Malformed("sealed key material is not base64"))?,
    );
    if bytes.len() < NONCE_LEN + TAG_LEN {
        return Err(VaultError::Malformed("sealed key material is too short"));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    let len = master.open(nonce, aad, &mut bytes[NONCE_LEN..])?.len();
    Ok(Zeroizing::new(bytes[NONCE_LEN..NONCE_LEN + len].to_vec()))
}

/// Refuses a file that group or others may read.
pub(crate) fn check_private(path: &Path) -> Result<(), VaultError> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::LoosePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Writes the keyring to `path`: the old file stays whole until the new one is on disk.
pub fn save(keyring: &Keyring, path: &Path, master: &MasterKey) -> Result<(), VaultError> {
    let kdf = master.kdf.clone();
    let master = Cipher::new(Algorithm::Aes256Gcm, &master.secret);
    let keys = keyring.keys.read().unwrap_or_else(|e| e.into_inner());
    let mut files = Vec::with_capacity(keys.len());
    for (name, key) in keys.iter() {
        let mut versions = Vec::with_capacity(key.versions.len());
        for (number, version) in &key.versions {
            versions.push(VersionFile {
                version: *number,
                created: version.created,
                encryptions: version.encryptions.load(Ordering::Relaxed),
                material: seal(
                    &master,
                    version.secret.expose(),
                    &material_aad(name, *number),
                )?,
            });
        }
        files.push(KeyFile {
            name: name.clone(),
            algorithm: key.algorithm,
            primary: key.primary,
            min_decryption_version: key.min_decryption_version,
            versions,
        });
    }
    drop(keys);
    let file = KeyringFile {
        format: FORMAT,
        check: seal(&master, CHECK_TEXT, b"rampart-keyring/1/check")?,
        policy: keyring.policy(),
        kdf,
        keys: files,
    };
    let mut text = serde_json::to_vec_pretty(&file)
        .map_err(|e| VaultError::Refused(format!("serializing the keyring: {e}")))?;
    text.push(b'\n');
    write_atomically(path, &text)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, with mode 0600.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    write_file(path, |out| {
        out.write_all(bytes)
            .map_err(|e| VaultError::io(format!("writing {}", path.display()), e))
    })
}

/// A name beside `path` that no other writer uses.
pub(crate) fn temporary_path(path: &Path) -> Result<PathBuf, VaultError> {
    let mut random = [0u8; 8];
    fill_random(&mut random)?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vault".into());
    Ok(path.with_file_name(format!(".{name}.{suffix}.tmp")))
}

/// How the keyring at `path` derives its master key from a passphrase, if it does: read
/// before the passphrase can be turned into the key.
pub fn passphrase_kdf(path: &Path) -> Result<Option<Kdf>, VaultError> {
    check_private(path)?;
    let text = std::fs::read(path)
        .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
    let file: KeyringFile = serde_json::from_slice(&text).map_err(|e| VaultError::KeyringFile {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(file.kdf)
}

/// Reads the keyring at `path`, refusing it when group or others can read it.
pub fn load(path: &Path, master: &MasterKey) -> Result<Keyring, VaultError> {
    check_private(path)?;
    let text = std::fs::read(path)
        .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
    let bad = |message: String| VaultError::KeyringFile {
        path: path.to_owned(),
        message,
    };
    let file: KeyringFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if file.format != FORMAT {
        return Err(bad(format!("unknown keyring format {}", file.format)));
    }
    let master = Cipher::new(Algorithm::Aes256Gcm, &master.secret);
    match open(&master, &file.check, b"rampart-keyring/1/check") {
        Ok(text) if text.as_slice() == CHECK_TEXT => {}
        _ => return Err(VaultError::WrongMasterKey),
    }
    let mut keys = BTreeMap::new();
    for key in file.keys {
        if !valid_key_name(&key.name) {
            return Err(bad(format!("invalid key name `{}`", key.name)));
        }
        let mut versions = BTreeMap::new();
        for v in key.versions {
            let material = open(&master, &v.material, &material_aad(&key.name, v.version))
                .map_err(|_| {
                    bad(format!(
                        "the material of key `{}` version {} is damaged",
                        key.name, v.version
                    ))
                })?;
            let bytes: [u8; KEY_LEN] = material.as_slice().try_into().map_err(|_| {
                bad(format!(
                    "key `{}` version {} is not 32 bytes",
                    key.name, v.version
                ))
            })?;
            versions.insert(
                v.version,
                Version::new(
                    key.algorithm,
                    SecretKey::from_bytes(bytes),
                    v.created,
                    v.encryptions,
                ),
            );
        }
        if !versions.contains_key(&key.primary) {
            return Err(bad(format!(
                "key `{}` names primary version {} but does not hold it",
                key.name, key.primary
            )));
        }
        keys.insert(
            key.name,
            Key {
                algorithm: key.algorithm,
                primary: key.primary,
                min_decryption_version: key.min_decryption_version,
                versions,
            },
        );
    }
    Ok(Keyring {
        keys: RwLock::new(keys),
        policy: file.policy,
    })
}

/// Writes `path` through a temporary file beside it (mode 0600, synced), renamed into place
/// only when `write` succeeds: a failure, a full disk included, leaves the old file as it
/// was and no temporary file behind.
pub fn write_file<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, VaultError>,
) -> Result<T, VaultError> {
    let (temporary, value) = write_temporary(path, write)?;
    commit(&temporary, path)?;
    Ok(value)
}

/// Writes and syncs a temporary file beside `path`; removes it if `write` fails.
pub(crate) fn write_temporary<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, VaultError>,
) -> Result<(PathBuf, T), VaultError> {
    let temporary = temporary_path(path)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| VaultError::io(format!("creating {}", temporary.display()), e))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let result = write(&mut writer).and_then(|value| {
        let file = writer.into_inner().map_err(|e| {
            VaultError::io(format!("writing {}", temporary.display()), e.into_error())
        })?;
        file.sync_all()
            .map_err(|e| VaultError::io(format!("writing {}", temporary.display()), e))?;
        Ok(value)
    });
    match result {
        Ok(value) => Ok((temporary, value)),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
}

/// Renames a written temporary file over `path` and syncs the directory, so the rename
/// itself survives a crash; the temporary file is removed if that fails.
pub(crate) fn commit(temporary: &Path, path: &Path) -> Result<(), VaultError> {
    std::fs::rename(temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(temporary);
        VaultError::io(format!("replacing {}", path.display()), e)
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VaultError::io(format!("syncing {}", dir.display()), e))
}
