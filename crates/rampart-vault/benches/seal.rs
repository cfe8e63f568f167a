//! Seal and open throughput through the keyring, side by side with raw aws-lc-rs
//! AES-256-GCM on the same buffers; streaming a file through tmpfs against raw sealing of
//! the same segments; rewrap of small records.

use std::hint::black_box;
use std::io::{BufReader, BufWriter};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rampart_vault::{Algorithm, Keyring, RotationPolicy, stream};

/// Raw sealing with a counter nonce, as a caller of aws-lc-rs would do it.
fn raw_seal(raw: &LessSafeKey, counter: u64, data: &mut [u8]) -> aws_lc_rs::aead::Tag {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    raw.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(b"aad"), data)
        .unwrap()
}

/// A keyring whose policy never rotates during a measurement.
fn keyring(name: &str) -> Keyring {
    let keyring = Keyring::new(RotationPolicy {
        max_age_secs: u64::MAX,
        max_encryptions: u64::MAX,
    });
    keyring.create_key(name, Algorithm::Aes256Gcm).unwrap();
    keyring
}

fn raw_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap())
}

fn bench_seal(c: &mut Criterion) {
    let keyring = keyring("default");
    let raw = raw_key();
    let mut group = c.benchmark_group("seal");
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        let mut buffer = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw_aws_lc_rs", size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let tag = raw_seal(&raw, counter, black_box(&mut buffer[..]));
                black_box(&tag);
            })
        });
        group.bench_with_input(BenchmarkId::new("vault_in_place", size), &size, |b, _| {
            b.iter(|| {
                let detached = keyring
                    .encrypt_in_place("default", black_box(&mut buffer[..]), b"aad")
                    .unwrap();
                black_box(detached);
            })
        });
        let plaintext = vec![0x5au8; size];
        group.bench_with_input(BenchmarkId::new("vault_encrypt", size), &size, |b, _| {
            b.iter(|| {
                black_box(
                    keyring
                        .encrypt("default", black_box(&plaintext), b"aad")
                        .unwrap(),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("open");
    for size in [1024usize, 64 * 1024, 1024 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let nonce = [1u8; 12];
        let mut sealed_raw = vec![0x5au8; size];
        let tag = raw
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"aad"),
                &mut sealed_raw,
            )
            .unwrap();
        sealed_raw.extend_from_slice(tag.as_ref());
        let mut work = sealed_raw.clone();
        group.bench_with_input(BenchmarkId::new("raw_aws_lc_rs", size), &size, |b, _| {
            b.iter(|| {
                work.copy_from_slice(&sealed_raw);
                black_box(
                    raw.open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(b"aad"),
                        &mut work,
                    )
                    .unwrap()
                    .len(),
                );
            })
        });
        let mut data = vec![0x5au8; size];
        let detached = keyring
            .encrypt_in_place("default", &mut data, b"aad")
            .unwrap();
        let mut work = data.clone();
        group.bench_with_input(BenchmarkId::new("vault_in_place", size), &size, |b, _| {
            b.iter(|| {
                work.copy_from_slice(&data);
                black_box(
                    keyring
                        .decrypt_in_place(&detached.header, &detached.tag, &mut work, b"aad")
                        .unwrap()
                        .len(),
                );
            })
        });
    }
    group.finish();
}

type Files = (BufReader<std::fs::File>, BufWriter<std::fs::File>);

fn files(input: &std::path::Path, output: &std::path::Path) -> Files {
    (
        BufReader::with_capacity(1 << 20, std::fs::File::open(input).unwrap()),
        BufWriter::with_capacity(1 << 20, std::fs::File::create(output).unwrap()),
    )
}

fn bench_stream(c: &mut Criterion) {
    let keyring = keyring("files");
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let size = 64 * 1024 * 1024;
    let input = dir.path().join("plain");
    std::fs::write(&input, vec![0x33u8; size]).unwrap();
    let output = dir.path().join("sealed");
    let raw = raw_key();
    let mut group = c.benchmark_group("stream_64mib_tmpfs");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(10);
    group.bench_function("raw_aws_lc_rs_segments", |b| {
        b.iter(|| {
            // The same file work with raw sealing: read, seal each 1 MiB segment, write.
            use std::io::{Read, Write};
            let (mut reader, mut writer) = files(&input, &output);
            let mut segment = vec![0u8; stream::MAX_SEGMENT];
            let mut counter = 0u64;
            loop {
                let n = reader.read(&mut segment).unwrap();
                if n == 0 {
                    break;
                }
                counter += 1;
                let tag = raw_seal(&raw, counter, &mut segment[..n]);
                writer.write_all(&segment[..n]).unwrap();
                writer.write_all(tag.as_ref()).unwrap();
            }
            writer.flush().unwrap();
        })
    });
    group.bench_function("vault_encrypt_file", |b| {
        b.iter(|| {
            let (mut reader, mut writer) = files(&input, &output);
            stream::encrypt(
                &keyring,
                "files",
                stream::MAX_SEGMENT,
                b"",
                &mut reader,
                &mut writer,
            )
            .unwrap();
        })
    });
    group.finish();
}

fn bench_rewrap(c: &mut Criterion) {
    let keyring = keyring("default");
    let records: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            keyring
                .encrypt("default", format!("api-key-{i:08}").as_bytes(), b"")
                .unwrap()
        })
        .collect();
    keyring.rotate("default").unwrap();
    let mut group = c.benchmark_group("rewrap");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("1000_records_of_16_bytes", |b| {
        b.iter(|| {
            for record in &records {
                black_box(keyring.rewrap(record, b"").unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_seal, bench_stream, bench_rewrap);
criterion_main!(benches);
