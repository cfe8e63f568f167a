//! The in-memory store of TATs: a fixed-size open-addressing table per shard, slots of
//! (64-bit fingerprint, TAT) packed four to a 64-byte line, so that a decision usually
//! touches one or two cache lines. A key whose TAT has passed is in the same state as a key never seen,
//! so its slot is simply reused: the table never grows, needs no sweeping, and memory is
//! set by `max_keys` up front. Only when every slot a key may use holds an active key is
//! the one closest to whole overwritten, which can only let that client through a little
//! earlier; those evictions are counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::gcra::{Decision, Quota, decide};
use crate::key::Key;

const SHARDS: usize = 64;
const SLOTS_PER_LINE: usize = 4;
/// Lines a key may live in: its home line and the next ones.
const PROBE_LINES: usize = 4;
/// Bytes of memory per key of `max_keys`: 16-byte slots, half again as many as keys.
pub const BYTES_PER_KEY: usize = 24;

/// Four slots of (fingerprint, TAT); a fingerprint of 0 marks a slot never used. Plain
/// integer arrays, so that the table is allocated zeroed by the system (calloc): its pages
/// cost memory only once keys land in them.
type Line = [[u64; 2]; SLOTS_PER_LINE];

struct Table {
    lines: Box<[Line]>,
}

impl Table {
    fn new(lines: usize) -> Table {
        Table {
            lines: vec![[[0u64; 2]; SLOTS_PER_LINE]; lines.max(PROBE_LINES)].into_boxed_slice(),
        }
    }

    /// The slot of `fingerprint`, or where it should go, and whether an active key is
    /// displaced by it.
    fn slot(&mut self, fingerprint: u64, home: usize, now: u64) -> (&mut [u64; 2], bool) {
        let mut free: Option<(usize, usize)> = None;
        let count = self.lines.len();
        let home = home % count;
        let mut oldest: (usize, usize, u64) = (home, 0, u64::MAX);
        for step in 0..PROBE_LINES {
            let l = (home + step) % count;
            for (s, &[fp, tat]) in self.lines[l].iter().enumerate() {
                if fp == fingerprint {
                    return (&mut self.lines[l][s], false);
                }
                if free.is_none() && (fp == 0 || tat <= now) {
                    free = Some((l, s));
                }
                if tat < oldest.2 {
                    oldest = (l, s, tat);
                }
            }
        }
        match free {
            Some((l, s)) => (&mut self.lines[l][s], false),
            None => (&mut self.lines[oldest.0][oldest.1], true),
        }
    }
}

pub struct MemoryStore {
    shards: Box<[Mutex<Table>]>,
    epoch: Instant,
    evicted_active: AtomicU64,
}

impl MemoryStore {
    /// A store for `max_keys` active keys (about [`BYTES_PER_KEY`] each, allocated now).
    pub fn new(max_keys: usize) -> Self {
        // Half again as many slots as keys keeps probe windows from filling up.
        let lines = (max_keys + max_keys / 2).div_ceil(SLOTS_PER_LINE * SHARDS);
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Table::new(lines))).collect(),
            epoch: Instant::now(),
            evicted_active: AtomicU64::new(0),
        }
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        // Never 0, so that a never-used slot (TAT 0) always counts as past.
        now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1
    }

    fn locate(key: Key) -> (usize, u64, usize) {
        let shard = (key.0 >> 122) as usize % SHARDS;
        let fingerprint = (key.0 as u64) | 1;
        let home = (key.0 >> 64) as usize;
        (shard, fingerprint, home)
    }

    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Table> {
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides one request for `key`, arriving at `now`, and records it when allowed.
    pub fn decide(&self, key: Key, quota: &Quota, now: Instant) -> Decision {
        let now = self.since_epoch(now);
        let (shard, fingerprint, home) = Self::locate(key);
        let mut table = self.shard(shard);
        let (slot, displaces) = table.slot(fingerprint, home, now);
        let known = (slot[0] == fingerprint).then_some(slot[1]);
        let (decision, new_tat) = decide(known, now, quota);
        if let Some(tat) = new_tat {
            *slot = [fingerprint, tat];
            if displaces {
                self.evicted_active.fetch_add(1, Ordering::Relaxed);
            }
        }
        decision
    }

    /// Gives back a request that was allowed but then refused by another limit.
    pub fn undo(&self, key: Key, quota: &Quota, now: Instant) {
        let now = self.since_epoch(now);
        let (shard, fingerprint, home) = Self::locate(key);
        let mut table = self.shard(shard);
        let (slot, _) = table.slot(fingerprint, home, now);
        if slot[0] == fingerprint {
            slot[1] = slot[1].saturating_sub(quota.emission_ns);
        }
    }

    /// Active keys (those whose TAT has not passed).
    pub fn len(&self) -> usize {
        let now = self.since_epoch(Instant::now());
        self.shards
            .iter()
            .map(|s| {
                let table = s.lock().unwrap_or_else(|e| e.into_inner());
                table
                    .lines
                    .iter()
                    .flat_map(|l| l.iter())
                    .filter(|&&[fp, tat]| fp != 0 && tat > now)
                    .count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in all: the most keys the store can hold.
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).lines.len() * SLOTS_PER_LINE)
            .sum()
    }

    /// Active keys overwritten because every slot they could use was taken.
    pub fn evicted_active(&self) -> u64 {
        self.evicted_active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn idle_keys_free_their_slots_without_changing_active_ones() {
        // Room for about 2,000 keys.
        let store = MemoryStore::new(2_000);
        let q = Quota::new(2, Duration::from_secs(1), 2);
        let active = Key::text(1, b"active");
        for i in 0..1_000u32 {
            store.decide(Key::text(2, &i.to_le_bytes()), &q, Instant::now());
        }
        assert!(store.decide(active, &q, Instant::now()).allowed);
        assert!(store.decide(active, &q, Instant::now()).allowed);
        assert!(!store.decide(active, &q, Instant::now()).allowed);
        tokio::time::advance(Duration::from_millis(600)).await;
        // The 1,000 idle keys (TAT 0.5 s) are past; the active key (1 s) is not.
        assert_eq!(store.len(), 1);
        // 1,000 new keys reuse the idle ones' slots.
        for i in 1_000..2_000u32 {
            store.decide(Key::text(2, &i.to_le_bytes()), &q, Instant::now());
        }
        assert_eq!(store.evicted_active(), 0);
        assert!(
            store.decide(active, &q, Instant::now()).allowed,
            "refilled by one after 0.6 s"
        );
        assert!(
            !store.decide(active, &q, Instant::now()).allowed,
            "and only by one: its state was kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_fixed_whatever_the_flood() {
        let store = MemoryStore::new(64 * 100);
        let q = Quota::new(1, Duration::from_secs(3600), 1);
        for i in 0..100_000u32 {
            store.decide(Key::text(3, &i.to_le_bytes()), &q, Instant::now());
        }
        assert!(store.len() <= store.capacity(), "{}", store.len());
        assert!(
            store.len() >= 64 * 100,
            "the table is used: {}",
            store.len()
        );
        assert!(store.evicted_active() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn undo_gives_a_request_back() {
        let store = MemoryStore::new(100);
        let q = Quota::new(1, Duration::from_secs(60), 1);
        let k = Key::text(1, b"k");
        assert!(store.decide(k, &q, Instant::now()).allowed);
        store.undo(k, &q, Instant::now());
        assert!(store.decide(k, &q, Instant::now()).allowed);
        assert!(!store.decide(k, &q, Instant::now()).allowed);
    }
}
