//! Decision cost in memory, single thread, with one million active keys; and Redis
//! decisions per second through the crate with concurrency (when REDIS_URL is set; see
//! bench/limit-redis.sh, which runs redis-benchmark on the same script beside it).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rampart_limit::{Key, MemoryStore, Quota};

fn memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let keys: Vec<Key> = (0..1_000_000u32)
        .map(|i| Key::text(9, &i.to_le_bytes()))
        .collect();
    // One request an hour with a huge burst: every decision is allowed and pushes the
    // key's TAT an hour ahead, so all one million keys stay active for the whole run.
    let quota = Quota::new(1, Duration::from_secs(3600), 1_000_000);
    let store = MemoryStore::new(2_000_000);
    for k in &keys {
        store.decide(*k, &quota, tokio::time::Instant::now());
    }
    assert!(store.len() >= 999_900, "active keys {}", store.len());
    let mut i = 0u32;
    c.bench_function("memory decide, 1M active keys, random order", |b| {
        b.iter(|| {
            // A large odd step through the key space: consecutive keys are far apart.
            i = (i + 611_953) % 1_000_000;
            black_box(store.decide(
                Key::text(9, &i.to_le_bytes()),
                &quota,
                tokio::time::Instant::now(),
            ))
        })
    });
    c.bench_function("key digest alone", |b| {
        b.iter(|| {
            i = (i + 611_953) % 1_000_000;
            black_box(Key::text(9, &i.to_le_bytes()))
        })
    });
    c.bench_function("memory decide, one hot key", |b| {
        b.iter(|| black_box(store.decide(keys[0], &quota, tokio::time::Instant::now())))
    });
    drop(store);

    // The floor under any decision on a random key: one load from a random cache line of a
    // table as large as the store's, each load depending on the previous (as decisions do,
    // through the shard lock), TLB misses included.
    let lines = MemoryStore::new(2_000_000).capacity() / 4;
    let mut next: Vec<usize> = (0..lines).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.swap(i, (x % (i as u64 + 1)) as usize);
    }
    // One u64 per 64-byte line, linked into one random cycle.
    let mut chain = vec![[0usize; 8]; lines];
    for w in 0..lines {
        chain[next[w]][0] = next[(w + 1) % lines];
    }
    let mut p = 0usize;
    c.bench_function("anchor: dependent random load over the same memory", |b| {
        b.iter(|| {
            p = chain[p][0];
            black_box(p)
        })
    });
}

criterion_group!(benches, memory);
criterion_main!(benches);
