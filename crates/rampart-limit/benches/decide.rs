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
        store.decide(*k, &quota);
    }
    assert!(store.len() >= 999_900, "active keys {}", store.len());
    let mut i = 0u32;
    c.bench_function("memory decide, 1M active keys, random order", |b| {
        b.iter(|| {
            // A large odd step through the key space: consecutive keys are far apart.
            i = (i + 611_953) % 1_000_000;
            black_box(store.decide(Key::text(9, &i.to_le_bytes()), &quota))
        })
    });
    c.bench_function("key digest alone", |b| {
        b.iter(|| {
            i = (i + 611_953) % 1_000_000;
            black_box(Key::text(9, &i.to_le_bytes()))
        })
    });
    c.bench_function("memory decide, one hot key", |b| {
        b.iter(|| black_box(store.decide(keys[0], &quota)))
    });
}

criterion_group!(benches, memory);
criterion_main!(benches);
