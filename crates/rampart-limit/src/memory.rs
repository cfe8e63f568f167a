//! The in-memory store of TATs: sharded maps of 128-bit keys to one timestamp each, with
//! a cap on keys. Keys whose TAT has passed are forgotten first (that changes nothing);
//! only when the cap is reached with every key active are the keys closest to whole
//! forgotten, which can only let those clients through a little earlier.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use tokio::time::Instant;

use crate::gcra::{Decision, Quota, decide};
use crate::key::Key;

/// Keys are digests already: their low bits are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Map = HashMap<u128, u64, BuildHasherDefault<KeyHasher>>;

const SHARDS: usize = 64;

pub struct MemoryStore {
    shards: Box<[Mutex<Map>]>,
    per_shard: usize,
    epoch: Instant,
    evicted_active: AtomicU64,
}

impl MemoryStore {
    /// A store of at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            epoch: Instant::now(),
            evicted_active: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Map> {
        let index = (key.0 >> 122) as usize % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides one request for `key` and records it when allowed.
    pub fn decide(&self, key: Key, quota: &Quota) -> Decision {
        let now = self.now();
        let mut shard = self.shard(key);
        let (decision, new_tat) = decide(shard.get(&key.0).copied(), now, quota);
        if let Some(tat) = new_tat {
            shard.insert(key.0, tat);
            if shard.len() > self.per_shard {
                self.evict(&mut shard, now);
            }
        }
        decision
    }

    /// Gives back a request that was allowed but then refused by another limit.
    pub fn undo(&self, key: Key, quota: &Quota) {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.get_mut(&key.0) {
            *tat = tat.saturating_sub(quota.emission_ns);
        }
    }

    fn evict(&self, shard: &mut Map, now: u64) {
        shard.retain(|_, tat| *tat > now);
        let target = self.per_shard * 9 / 10;
        if shard.len() <= target {
            return;
        }
        // Every key is active: forget those closest to whole.
        let mut tats: Vec<u64> = shard.values().copied().collect();
        let cut = shard.len() - target;
        let (_, threshold, _) = tats.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let before = shard.len();
        shard.retain(|_, tat| *tat > threshold);
        self.evicted_active
            .fetch_add((before - shard.len()) as u64, Ordering::Relaxed);
    }

    /// Forgets every key whose TAT has passed.
    pub fn sweep(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, tat| *tat > now);
            if shard.capacity() > 4 * shard.len().max(64) {
                shard.shrink_to_fit();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active keys forgotten because the cap was reached.
    pub fn evicted_active(&self) -> u64 {
        self.evicted_active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_without_changing_active_ones() {
        let store = MemoryStore::new(1_000_000);
        let q = Quota::new(2, Duration::from_secs(1), 2);
        let active = Key::text(1, b"active");
        for i in 0..100u32 {
            store.decide(Key::text(2, &i.to_le_bytes()), &q);
        }
        assert!(store.decide(active, &q).allowed);
        assert!(store.decide(active, &q).allowed);
        assert!(!store.decide(active, &q).allowed);
        tokio::time::advance(Duration::from_millis(600)).await;
        // The 100 idle keys' TATs (0.5 s) have passed; the active key's (1 s) has not.
        store.sweep();
        assert_eq!(store.len(), 1);
        assert!(
            store.decide(active, &q).allowed,
            "refilled by one after 0.6 s"
        );
        assert!(
            !store.decide(active, &q).allowed,
            "and only by one: its state was kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_the_keys() {
        let store = MemoryStore::new(64 * 100);
        let q = Quota::new(1, Duration::from_secs(3600), 1);
        for i in 0..100_000u32 {
            store.decide(Key::text(3, &i.to_le_bytes()), &q);
        }
        assert!(store.len() <= 64 * 100, "{}", store.len());
        assert!(store.evicted_active() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn undo_gives_a_request_back() {
        let store = MemoryStore::new(100);
        let q = Quota::new(1, Duration::from_secs(60), 1);
        let k = Key::text(1, b"k");
        assert!(store.decide(k, &q).allowed);
        store.undo(k, &q);
        assert!(store.decide(k, &q).allowed);
        assert!(!store.decide(k, &q).allowed);
    }
}
