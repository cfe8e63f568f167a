use std::path::PathBuf;

/// Everything the vault refuses, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("no key named `{0}` in the keyring (`rampart vault status` lists the keys)")]
    UnknownKey(String),
    #[error("key `{name}` has no version {version} (it was never created or has been trimmed)")]
    UnknownVersion { name: String, version: u32 },
    #[error(
        "key `{name}` version {version} is below the minimum decryption version {minimum}; \
         lower the minimum if this data must still be read"
    )]
    BelowMinimumVersion {
        name: String,
        version: u32,
        minimum: u32,
    },
    #[error("the ciphertext or its associated data has been changed, or the wrong key was used")]
    Tampered,
    #[error("not a Rampart ciphertext: {0}")]
    Malformed(&'static str),
    #[error(
        "the master key does not open this keyring (is RAMPART_MASTER_KEY the one it was created with?)"
    )]
    WrongMasterKey,
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "{path}: readable by group or others (mode {mode:o}); run `chmod 600 {path}` and retry",
        path = path.display()
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: {message}", path = path.display())]
    KeyringFile { path: PathBuf, message: String },
    #[error("key `{0}` already exists")]
    KeyExists(String),
    #[error("key name `{0}` must be 1 to 64 characters of a-z, 0-9, `_` and `-`")]
    BadKeyName(String),
    #[error("{0}")]
    Refused(String),
    #[error("the stream is truncated: it ends before its last segment")]
    Truncated,
    #[error("the stream goes on after its last segment")]
    Extended,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random generator failed")]
    Random,
}

impl VaultError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VaultError::Io {
            context: context.into(),
            source,
        }
    }
}
