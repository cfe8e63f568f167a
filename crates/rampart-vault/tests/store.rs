//! The encrypted file store.

use rampart_vault::{Algorithm, Keyring, RotationPolicy, Store, VaultError};

fn setup() -> (tempfile::TempDir, Keyring) {
    let keyring = Keyring::new(RotationPolicy::default());
    keyring.create_key("files", Algorithm::Aes256Gcm).unwrap();
    (tempfile::tempdir().unwrap(), keyring)
}

fn get(store: &Store, id: &str) -> Result<Vec<u8>, VaultError> {
    let mut out = Vec::new();
    store.get(id, &mut out).map(|_| out)
}

#[test]
fn objects_are_stored_listed_read_and_removed() {
    let (dir, keyring) = setup();
    let store = Store::open(&dir.path().join("store"), &keyring, "files").unwrap();
    let a = store
        .put("a.txt", "text/plain", &mut &b"alpha"[..])
        .unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| i as u8).collect();
    let b = store
        .put("b.bin", "application/octet-stream", &mut &big[..])
        .unwrap();
    assert_eq!((a.size, a.key_version, a.name.as_str()), (5, 1, "a.txt"));
    assert_eq!(get(&store, &a.id).unwrap(), b"alpha");
    assert_eq!(get(&store, &b.id).unwrap(), big);
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.id) && ids.contains(&b.id));
    // Names and sizes are not readable from the disk.
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(5).any(|w| w == b"a.txt" || w == b"alpha"));
    }
    store.remove(&a.id).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(get(&store, &a.id).is_err());
    assert!(store.remove("../../etc/passwd").is_err());
}

#[test]
fn swapped_or_edited_files_do_not_open() {
    let (dir, keyring) = setup();
    let root = dir.path().join("store");
    let store = Store::open(&root, &keyring, "files").unwrap();
    let a = store
        .put("a", "text/plain", &mut &b"first object"[..])
        .unwrap();
    let b = store
        .put("b", "text/plain", &mut &b"second object"[..])
        .unwrap();
    let data = |id: &str| root.join(format!("{id}.data"));
    let meta = |id: &str| root.join(format!("{id}.meta"));
    let a_data = std::fs::read(data(&a.id)).unwrap();
    std::fs::copy(data(&b.id), data(&a.id)).unwrap();
    assert!(get(&store, &a.id).is_err(), "another object's data");
    std::fs::write(data(&a.id), &a_data).unwrap();
    let a_meta = std::fs::read(meta(&a.id)).unwrap();
    std::fs::copy(meta(&b.id), meta(&a.id)).unwrap();
    assert!(store.meta(&a.id).is_err(), "another object's metadata");
    std::fs::write(meta(&a.id), &a_meta).unwrap();
    assert_eq!(get(&store, &a.id).unwrap(), b"first object");
}

#[test]
fn rewrap_moves_objects_to_the_primary_version_and_never_loses_one() {
    let (dir, keyring) = setup();
    let root = dir.path().join("store");
    let store = Store::open(&root, &keyring, "files").unwrap();
    let payload: Vec<u8> = (0..700_000u32).map(|i| (i % 199) as u8).collect();
    let a = store
        .put("a", "application/octet-stream", &mut &payload[..])
        .unwrap();
    assert!(!store.rewrap(&a.id).unwrap(), "already current");
    keyring.rotate("files").unwrap();
    assert!(store.rewrap(&a.id).unwrap());
    assert_eq!(store.meta(&a.id).unwrap().key_version, 2);
    assert_eq!(get(&store, &a.id).unwrap(), payload);
    keyring.set_min_decryption_version("files", 2).unwrap();
    assert_eq!(get(&store, &a.id).unwrap(), payload);

    // A damaged object fails to rewrap and stays as it was.
    keyring.rotate("files").unwrap();
    let path = root.join(format!("{}.data", a.id));
    let mut damaged = std::fs::read(&path).unwrap();
    let at = damaged.len() - 1000;
    damaged[at] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    assert!(store.rewrap(&a.id).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
    assert_eq!(store.meta(&a.id).unwrap().key_version, 2);
    let leftovers = std::fs::read_dir(&root).unwrap().count();
    assert_eq!(leftovers, 2, "no temporary file left");
}
