//! Per-thread lanes for counters written on every request.
//!
//! An atomic read-modify-write (`fetch_add`) costs several nanoseconds even uncontended,
//! because it drains the store buffer; a request that bumps a dozen counters pays for
//! it on every request. Here each of the first threads that count claims a lane of its
//! own, written by no other thread, and adds to it with a relaxed load and store, which
//! cost what plain memory accesses do. Threads beyond the lanes share one lane and add
//! with `fetch_add`. Readers sum the lanes, each a relaxed atomic load, so a reading is
//! never torn, and a count written before the read began is in it.
//!
//! A thread's lane goes back to a free list when the thread exits; the next thread to
//! claim it takes it through the list's lock, so it sees every value the previous owner
//! stored and stays the lane's only writer.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use crossbeam_utils::CachePadded;

/// Lanes per set: the shared one, and two per core for the runtime's workers, the main
/// thread and short-lived helpers, up to 128.
static LANE_COUNT: LazyLock<usize> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    1 + (2 * cores).min(127)
});

/// Owned lanes that nobody holds; lane 0 is the shared one and never listed.
static FREE_LANES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The next lane never claimed yet.
static NEXT_LANE: AtomicUsize = AtomicUsize::new(1);

/// This thread's lane, claimed on first use and freed at thread exit.
struct Claim(Cell<Option<usize>>);

impl Claim {
    fn take() -> Claim {
        let free = FREE_LANES.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let lane = free.or_else(|| {
            NEXT_LANE
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                    (next < *LANE_COUNT).then_some(next + 1)
                })
                .ok()
        });
        Claim(Cell::new(lane))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(lane) = self.0.take() {
            FREE_LANES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lane);
        }
    }
}

thread_local! {
    static CLAIM: Claim = Claim::take();
}

/// The index of the calling thread's own lane, or None when it shares lane 0 (all lanes
/// are taken, or the thread is being torn down).
#[inline]
fn own_lane() -> Option<usize> {
    CLAIM.try_with(|claim| claim.0.get()).ok().flatten()
}

/// One `T` per lane. `T` holds the [`AtomicU64`]s that are counted into.
pub struct Lanes<T> {
    lanes: Box<[CachePadded<T>]>,
}

impl<T> Lanes<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Lanes {
            lanes: (0..*LANE_COUNT).map(|_| CachePadded::new(make())).collect(),
        }
    }

    /// The calling thread's lane.
    #[inline]
    pub fn local(&self) -> Lane<'_, T> {
        match own_lane().and_then(|i| self.lanes.get(i)) {
            Some(slot) => Lane { slot, owned: true },
            None => Lane {
                slot: &self.lanes[0],
                owned: false,
            },
        }
    }

    /// Every lane, for a reader to sum.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.lanes.iter().map(|slot| &**slot)
    }
}

impl<T: Default> Default for Lanes<T> {
    fn default() -> Self {
        Lanes::new(T::default)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Lanes<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A thread's view of its lane.
pub struct Lane<'a, T> {
    slot: &'a T,
    owned: bool,
}

impl<T> Lane<'_, T> {
    /// Adds `n` to the counter `pick` chooses in this lane.
    #[inline]
    pub fn add(&self, pick: impl FnOnce(&T) -> &AtomicU64, n: u64) {
        let counter = pick(self.slot);
        if self.owned {
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A monotonic counter in lanes.
#[derive(Debug, Default)]
pub struct Counter {
    lanes: Lanes<AtomicU64>,
}

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.lanes.local().add(|c| c, n);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The sum of every lane.
    pub fn get(&self) -> u64 {
        self.lanes
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        // More threads than lanes, so that some share lane 0 while others own theirs.
        let threads = *LANE_COUNT + 3;
        let counter = Arc::new(Counter::default());
        let start = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (counter, start) = (counter.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..10_000 {
                        counter.inc();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.get(), threads as u64 * 10_000);
    }

    #[test]
    fn counts_of_exited_threads_stay_in_the_sum() {
        let counter = Arc::new(Counter::default());
        for n in [5, 7] {
            let counter = counter.clone();
            std::thread::spawn(move || counter.add(n)).join().unwrap();
        }
        assert_eq!(counter.get(), 12);
    }

    #[test]
    fn owned_lanes_are_written_by_one_thread_only() {
        // Another test runs more threads than there are lanes, so this thread may have
        // found none free.
        let index = own_lane();
        let lanes: Lanes<AtomicU64> = Lanes::default();
        assert_eq!(lanes.local().owned, index.is_some());
        let other = std::thread::spawn(own_lane).join().unwrap();
        if index.is_some() {
            assert_ne!(other, index, "no two live threads share an owned lane");
        }
    }
}
