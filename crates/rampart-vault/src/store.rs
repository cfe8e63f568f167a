//! An encrypted file store under the data directory: each object is a stream-encrypted data
//! file and a sealed metadata record (name, size, content type, creation time, key version),
//! both bound to the object's id, so neither can be swapped with another object's or edited.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::fill_random;
use crate::keyring::now_secs;
use crate::{Keyring, VaultError, envelope, stream};

/// What the store knows of an object; kept sealed beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub key: String,
    pub key_version: u32,
}

pub struct Store<'k> {
    dir: PathBuf,
    keyring: &'k Keyring,
    key: String,
}

const DATA: &str = "data";
const META: &str = "meta";

fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl<'k> Store<'k> {
    /// The store in `dir` (made with mode 0700 if missing); new objects use `key`.
    pub fn open(dir: &Path, keyring: &'k Keyring, key: &str) -> Result<Self, VaultError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| VaultError::io(format!("creating {}", dir.display()), e))?;
        if !keyring.contains(key) {
            return Err(VaultError::UnknownKey(key.to_owned()));
        }
        Ok(Store {
            dir: dir.to_owned(),
            keyring,
            key: key.to_owned(),
        })
    }

    fn path(&self, id: &str, kind: &str) -> Result<PathBuf, VaultError> {
        if !valid_id(id) {
            return Err(VaultError::Refused(format!(
                "`{id}` is not an object id (32 lower-case hex digits; `store list` shows them)"
            )));
        }
        Ok(self.dir.join(format!("{id}.{kind}")))
    }

    fn aad(id: &str, kind: &str) -> Vec<u8> {
        format!("rampart-store/{id}/{kind}").into_bytes()
    }

    /// Encrypts what `input` yields as a new object.
    pub fn put(
        &self,
        name: &str,
        content_type: &str,
        input: &mut impl Read,
    ) -> Result<Object, VaultError> {
        let mut raw = [0u8; 16];
        fill_random(&mut raw)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let data = self.path(&id, DATA)?;
        let (size, key_version) = crate::file::write_file(&data, |out| {
            let size = stream::encrypt(
                self.keyring,
                &self.key,
                stream::DEFAULT_SEGMENT,
                &Self::aad(&id, DATA),
                input,
                out,
            )?;
            Ok(size)
        })
        .and_then(|size| Ok((size, stream::file_key(&data)?.1)))?;
        let object = Object {
            id: id.clone(),
            name: name.to_owned(),
            size,
            content_type: content_type.to_owned(),
            created: now_secs(),
            key: self.key.clone(),
            key_version,
        };
        if let Err(e) = self.write_meta(&object) {
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        Ok(object)
    }

    fn write_meta(&self, object: &Object) -> Result<(), VaultError> {
        let record = serde_json::to_vec(object)
            .map_err(|e| VaultError::Refused(format!("object metadata: {e}")))?;
        let sealed = self
            .keyring
            .encrypt(&self.key, &record, &Self::aad(&object.id, META))?;
        crate::file::write_atomically(
            &self.path(&object.id, META)?,
            envelope::to_text(&sealed)?.as_bytes(),
        )
    }

    /// The object's metadata, checked.
    pub fn meta(&self, id: &str) -> Result<Object, VaultError> {
        let path = self.path(id, META)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VaultError::Refused(format!("no object `{id}` in the store"))
            } else {
                VaultError::io(format!("reading {}", path.display()), e)
            }
        })?;
        let record = self
            .keyring
            .decrypt(&envelope::from_text(&text)?, &Self::aad(id, META))?;
        let object: Object = serde_json::from_slice(&record)
            .map_err(|e| VaultError::Refused(format!("object metadata: {e}")))?;
        if object.id != id {
            return Err(VaultError::Tampered);
        }
        Ok(object)
    }

    /// Decrypts an object into `output`; every byte written has been verified.
    pub fn get(&self, id: &str, output: &mut impl Write) -> Result<Object, VaultError> {
        let object = self.meta(id)?;
        let path = self.path(id, DATA)?;
        let file = File::open(&path)
            .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
        let size = stream::decrypt(
            self.keyring,
            &Self::aad(id, DATA),
            &mut BufReader::with_capacity(1 << 20, file),
            output,
        )?;
        if size != object.size {
            return Err(VaultError::Tampered);
        }
        Ok(object)
    }

    /// Every object, oldest first.
    pub fn list(&self) -> Result<Vec<Object>, VaultError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| VaultError::io(format!("reading {}", self.dir.display()), e))?;
        let mut objects = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VaultError::io("listing the store", e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".meta")) else {
                continue;
            };
            if valid_id(id) {
                objects.push(self.meta(id)?);
            }
        }
        objects.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(objects)
    }

    /// Deletes an object.
    pub fn remove(&self, id: &str) -> Result<(), VaultError> {
        self.meta(id)?;
        for kind in [META, DATA] {
            let path = self.path(id, kind)?;
            std::fs::remove_file(&path)
                .map_err(|e| VaultError::io(format!("removing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Re-encrypts an object under its key's primary version, data and metadata, without its
    /// plaintext touching the disk; returns whether anything changed.
    pub fn rewrap(&self, id: &str) -> Result<bool, VaultError> {
        let object = self.meta(id)?;
        let path = self.path(id, DATA)?;
        let Some(size) = stream::rewrap_file(self.keyring, &path, &Self::aad(id, DATA))? else {
            return Ok(false);
        };
        let key_version = stream::file_key(&path)?.1;
        self.write_meta(&Object {
            size,
            key_version,
            ..object
        })?;
        Ok(true)
    }
}
