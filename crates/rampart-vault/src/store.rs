//! An encrypted file store under the data directory: each object is a stream-encrypted data
//! file and a sealed metadata record (name, size, content type, creation time, key version),
//! both bound to the object's id, so neither can be swapped with another object's or edited.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::file::temporary_path;
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
        let (size, key_version) = write_new(&data, |out| {
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
        .and_then(|size| Ok((size, stream_version(&data)?)))?;
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
        let primary = self
            .keyring
            .status()
            .into_iter()
            .find(|k| k.name == object.key)
            .map(|k| k.primary)
            .ok_or_else(|| VaultError::UnknownKey(object.key.clone()))?;
        if object.key_version == primary {
            return Ok(false);
        }
        let path = self.path(id, DATA)?;
        let aad = Self::aad(id, DATA);
        let (reader, mut writer) =
            std::io::pipe().map_err(|e| VaultError::io("making a pipe", e))?;
        let size = std::thread::scope(|scope| {
            let decrypting = scope.spawn(|| {
                let file = File::open(&path)
                    .map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
                let result = stream::decrypt(
                    self.keyring,
                    &aad,
                    &mut BufReader::with_capacity(1 << 20, file),
                    &mut writer,
                );
                drop(writer);
                result
            });
            let written = write_temporary(&path, |out| {
                stream::encrypt(
                    self.keyring,
                    &object.key,
                    stream::DEFAULT_SEGMENT,
                    &aad,
                    &mut BufReader::new(reader),
                    out,
                )
            });
            let read = decrypting
                .join()
                .map_err(|_| VaultError::Refused("the decrypting thread panicked".into()));
            // A failed read ends the new stream early: it must not replace the old one.
            match (read, written) {
                (Ok(Ok(_)), Ok((temporary, size))) => commit(&temporary, &path).map(|()| size),
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
        })?;
        let key_version = stream_version(&path)?;
        self.write_meta(&Object {
            size,
            key_version,
            ..object
        })?;
        Ok(true)
    }
}

/// The key version named in a stream file's header.
fn stream_version(path: &Path) -> Result<u32, VaultError> {
    let mut head = [0u8; 6 + crate::envelope::MAX_NAME_LEN + 4];
    let mut file =
        File::open(path).map_err(|e| VaultError::io(format!("opening {}", path.display()), e))?;
    let n = file
        .read(&mut head)
        .map_err(|e| VaultError::io(format!("reading {}", path.display()), e))?;
    let name_len = usize::from(*head.get(5).ok_or(VaultError::Truncated)?);
    let at = 6 + name_len;
    if n < at + 4 {
        return Err(VaultError::Truncated);
    }
    Ok(u32::from_be_bytes([
        head[at],
        head[at + 1],
        head[at + 2],
        head[at + 3],
    ]))
}

/// Writes `path` through a temporary file renamed into place only when `write` succeeds.
fn write_new<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, VaultError>,
) -> Result<T, VaultError> {
    let (temporary, value) = write_temporary(path, write)?;
    commit(&temporary, path)?;
    Ok(value)
}

/// Writes and syncs a temporary file beside `path`; removes it if `write` fails.
fn write_temporary<T>(
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

fn commit(temporary: &Path, path: &Path) -> Result<(), VaultError> {
    std::fs::rename(temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(temporary);
        VaultError::io(format!("replacing {}", path.display()), e)
    })
}
