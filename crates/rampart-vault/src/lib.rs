//! Rampart's vault: encryption at rest with named, versioned keys.
//!
//! - A [`Keyring`] holds named keys; each has numbered versions, one primary version that
//!   encrypts, and a minimum version that may still decrypt. Rotation adds a version, by hand
//!   or by policy (age, or number of encryptions); rewrap moves a ciphertext to the primary
//!   version without returning its plaintext; trim deletes old versions.
//! - AES-256-GCM (default) or ChaCha20-Poly1305 from aws-lc-rs. Every ciphertext carries an
//!   authenticated header naming its algorithm, key and version (see [`envelope`]).
//! - The keyring file is written atomically with mode 0600, its key material sealed under a
//!   master key ([`MasterKey`]); key bytes are zeroed when dropped and never printed.
//! - Files of any size stream through [`stream`] in constant memory.
//!
//! ```
//! use rampart_vault::{Algorithm, Keyring, RotationPolicy};
//!
//! let keyring = Keyring::new(RotationPolicy::default());
//! keyring.create_key("default", Algorithm::Aes256Gcm).unwrap();
//! let sealed = keyring.encrypt("default", b"api key", b"tenant-7").unwrap();
//! assert_eq!(keyring.decrypt(&sealed, b"tenant-7").unwrap(), b"api key");
//! assert!(keyring.decrypt(&sealed, b"tenant-8").is_err());
//! ```

pub mod envelope;
mod error;
mod file;
mod key;
mod keyring;
mod master;
mod secrets;
mod store;
pub mod stream;

pub use error::VaultError;
pub use file::{load, passphrase_kdf, save, write_file};
pub use key::{Algorithm, KEY_LEN, NONCE_LEN, SecretKey, TAG_LEN};
pub use keyring::{Detached, KeyStatus, Keyring, RotationPolicy, VersionStatus};
pub use master::{Kdf, MasterKey};
pub use secrets::{constant_time_eq, hash_password, needs_rehash, token, verify_password};
pub use store::{Object, Store};
