//! The keyring: round trips, tampering, rotation, rewrap, trim, policies, threads, the file.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rampart_vault::{
    Algorithm, Keyring, MasterKey, RotationPolicy, VaultError, envelope, load, save,
};

fn keyring(algorithm: Algorithm) -> Keyring {
    let keyring = Keyring::new(RotationPolicy::default());
    keyring.create_key("default", algorithm).unwrap();
    keyring
}

#[test]
fn every_algorithm_and_size_round_trips() {
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        let keyring = keyring(algorithm);
        for size in [0usize, 1, 15, 16, 17, 1000, 1 << 20] {
            let plaintext: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
            let sealed = keyring.encrypt("default", &plaintext, b"ctx").unwrap();
            assert_eq!(keyring.decrypt(&sealed, b"ctx").unwrap(), plaintext);
            let mut data = plaintext.clone();
            let detached = keyring
                .encrypt_in_place("default", &mut data, b"ctx")
                .unwrap();
            let opened = keyring
                .decrypt_in_place(&detached.header, &detached.tag, &mut data, b"ctx")
                .unwrap();
            assert_eq!(opened, &plaintext[..]);
        }
    }
}

#[test]
fn two_encryptions_differ_and_the_text_form_round_trips() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    let a = keyring.encrypt("default", b"same", b"").unwrap();
    let b = keyring.encrypt("default", b"same", b"").unwrap();
    assert_ne!(a, b, "random nonces");
    let text = envelope::to_text(&a).unwrap();
    assert!(text.starts_with("rampart:v1:"), "{text}");
    assert_eq!(envelope::from_text(&text).unwrap(), a);
    let wrong_version = text.replacen("rampart:v1:", "rampart:v2:", 1);
    assert!(matches!(
        envelope::from_text(&wrong_version),
        Err(VaultError::Malformed(_))
    ));
}

#[test]
fn flipping_any_byte_or_the_associated_data_fails() {
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        let keyring = keyring(algorithm);
        let sealed = keyring
            .encrypt("default", b"attack at dawn", b"aad")
            .unwrap();
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut changed = sealed.clone();
                changed[i] ^= bit;
                assert!(
                    keyring.decrypt(&changed, b"aad").is_err(),
                    "byte {i} bit {bit:#x} changed and still opened"
                );
            }
        }
        assert!(matches!(
            keyring.decrypt(&sealed, b"aae"),
            Err(VaultError::Tampered)
        ));
        assert!(
            keyring
                .decrypt(&sealed[..sealed.len() - 1], b"aad")
                .is_err()
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(keyring.decrypt(&longer, b"aad").is_err());
    }
}

#[test]
fn rotation_rewrap_minimum_version_and_trim() {
    let keyring = keyring(Algorithm::Aes256Gcm);
    let old = keyring.encrypt("default", b"v1 data", b"").unwrap();
    assert_eq!(keyring.rotate("default").unwrap(), 2);
    let new = keyring.encrypt("default", b"v2 data", b"").unwrap();
    assert_eq!(envelope::parse(&new).unwrap().0.version, 2);
    assert_eq!(keyring.decrypt(&old, b"").unwrap(), b"v1 data");

    let rewrapped = keyring.rewrap(&old, b"").unwrap();
    assert_eq!(envelope::parse(&rewrapped).unwrap().0.version, 2);
    assert_eq!(keyring.decrypt(&rewrapped, b"").unwrap(), b"v1 data");
    assert_eq!(keyring.rewrap(&new, b"").unwrap(), new, "already current");

    // Trimming versions that still decrypt is refused unless forced.
    assert!(matches!(
        keyring.trim("default", 2, false),
        Err(VaultError::Refused(_))
    ));
    keyring.set_min_decryption_version("default", 2).unwrap();
    assert!(matches!(
        keyring.decrypt(&old, b""),
        Err(VaultError::BelowMinimumVersion {
            version: 1,
            minimum: 2,
            ..
        })
    ));
    assert_eq!(keyring.trim("default", 2, false).unwrap(), 1);
    assert!(
        matches!(
            keyring.trim("default", 3, true),
            Err(VaultError::Refused(_))
        ),
        "primary"
    );
    assert!(keyring.set_min_decryption_version("default", 3).is_err());
    let status = keyring.status();
    assert_eq!(status[0].versions.len(), 1);
    assert_eq!(status[0].primary, 2);
    assert!(matches!(
        keyring.encrypt("missing", b"", b""),
        Err(VaultError::UnknownKey(_))
    ));
}

#[test]
fn a_version_is_retired_after_its_encryption_budget_and_by_age() {
    let keyring = Keyring::new(RotationPolicy {
        max_age_secs: 3600,
        max_encryptions: 3,
    });
    keyring.create_key("k", Algorithm::Aes256Gcm).unwrap();
    let versions: Vec<u32> = (0..7)
        .map(|_| {
            let sealed = keyring.encrypt("k", b"x", b"").unwrap();
            envelope::parse(&sealed).unwrap().0.version
        })
        .collect();
    assert_eq!(versions, [1, 1, 1, 2, 2, 2, 3]);
    let later = rampart_vault_now() + 7200;
    assert_eq!(keyring.rotate_due(later).unwrap(), [("k".to_owned(), 4)]);
    assert!(keyring.rotate_due(rampart_vault_now()).unwrap().is_empty());
}

fn rampart_vault_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn rotation_while_eight_threads_encrypt_and_decrypt_loses_nothing() {
    let keyring = Arc::new(keyring(Algorithm::Aes256Gcm));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let keyring = Arc::clone(&keyring);
            std::thread::spawn(move || {
                let mut sealed = Vec::new();
                for i in 0..500 {
                    let text = format!("thread {t} item {i}");
                    let c = keyring.encrypt("default", text.as_bytes(), b"").unwrap();
                    assert_eq!(keyring.decrypt(&c, b"").unwrap(), text.as_bytes());
                    sealed.push((text, c));
                }
                sealed
            })
        })
        .collect();
    for _ in 0..50 {
        keyring.rotate("default").unwrap();
    }
    let mut versions = std::collections::BTreeSet::new();
    for worker in workers {
        for (text, c) in worker.join().unwrap() {
            assert_eq!(keyring.decrypt(&c, b"").unwrap(), text.as_bytes());
            versions.insert(envelope::parse(&c).unwrap().0.version);
        }
    }
    assert_eq!(keyring.status()[0].primary, 51);
    let counted: u64 = keyring.status()[0]
        .versions
        .iter()
        .map(|v| v.encryptions)
        .sum();
    assert_eq!(counted, 8 * 500, "every encryption is counted once");
}

#[test]
fn the_keyring_file_round_trips_and_refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let (master, text) = MasterKey::generate().unwrap();
    let keyring = keyring(Algorithm::ChaCha20Poly1305);
    keyring.rotate("default").unwrap();
    let sealed = keyring.encrypt("default", b"persisted", b"").unwrap();
    save(&keyring, &path, &master).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(
        !file.contains(text.as_str()),
        "the master key is not in the file"
    );

    let reloaded = load(&path, &MasterKey::from_base64(&text).unwrap()).unwrap();
    assert_eq!(reloaded.decrypt(&sealed, b"").unwrap(), b"persisted");
    assert_eq!(reloaded.status()[0].versions[1].encryptions, 1);

    let (other, _) = MasterKey::generate().unwrap();
    assert!(matches!(
        load(&path, &other),
        Err(VaultError::WrongMasterKey)
    ));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&path, &master).unwrap_err();
    assert!(matches!(err, VaultError::LoosePermissions { .. }));
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A changed byte of key material is named, not read as a wrong master key.
    let damaged = file.replacen("\"material\": \"", "\"material\": \"AAAA", 1);
    std::fs::write(&path, damaged).unwrap();
    let err = load(&path, &master).unwrap_err();
    assert!(matches!(err, VaultError::KeyringFile { .. }), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");

    // Saving over it again leaves no temporary file behind.
    save(&keyring, &path, &master).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn master_keys_that_are_not_32_bytes_of_base64_are_refused() {
    assert!(MasterKey::from_base64("not base64!").is_err());
    let short = MasterKey::from_base64("AAAA").unwrap_err().to_string();
    assert!(short.contains("3 bytes, not 32"), "{short}");
}
