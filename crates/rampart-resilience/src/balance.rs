//! Load balancing among the servers that can take a request: round robin, or power of
//! two choices on outstanding requests (the default): pick two at random, take the one
//! with fewer requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    #[default]
    P2c,
}

/// Chooses among candidates; `load(i)` is server `i`'s outstanding requests.
#[derive(Debug, Default)]
pub struct Balancer {
    strategy: Strategy,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(strategy: Strategy) -> Self {
        Balancer {
            strategy,
            next: AtomicUsize::new(0),
        }
    }

    /// One of `candidates` (server indexes), or None when there is none.
    pub fn pick(&self, candidates: &[usize], load: impl Fn(usize) -> usize) -> Option<usize> {
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => match self.strategy {
                Strategy::RoundRobin => {
                    Some(candidates[self.next.fetch_add(1, Ordering::Relaxed) % n])
                }
                Strategy::P2c => {
                    let a = fastrand::usize(0..n);
                    let mut b = fastrand::usize(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (a, b) = (candidates[a], candidates[b]);
                    Some(if load(b) < load(a) { b } else { a })
                }
            },
        }
    }
}

/// Counts a request as outstanding on a server while it lives.
pub struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    pub fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_through_candidates() {
        let b = Balancer::new(Strategy::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&[3, 5, 7], |_| 0).unwrap()).collect();
        assert_eq!(picks, [3, 5, 7, 3, 5, 7]);
        assert_eq!(b.pick(&[], |_| 0), None);
    }

    #[test]
    fn p2c_avoids_the_loaded_server() {
        let b = Balancer::new(Strategy::P2c);
        let loads = [100, 0, 0];
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[b.pick(&[0, 1, 2], |i| loads[i]).unwrap()] += 1;
        }
        // Server 0 wins only when drawn twice, which p2c never does: it draws two distinct.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
    }

    #[test]
    fn in_flight_counts_while_alive() {
        let c = AtomicUsize::new(0);
        {
            let _a = InFlight::start(&c);
            let _b = InFlight::start(&c);
            assert_eq!(c.load(Ordering::Relaxed), 2);
        }
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }
}
