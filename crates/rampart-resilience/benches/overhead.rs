//! The happy-path cost per request of what the gateway consults for each upstream call:
//! retry budget deposit, balancer pick with in-flight counting, breaker permit and record
//! (server and pool), outlier record. Goal: ≤ 1 µs.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rampart_resilience::{
    Balancer, BreakerConfig, BudgetConfig, CircuitBreaker, InFlight, Outcome, OutlierConfig,
    OutlierDetector, RetryBudget, Strategy,
};

fn happy_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let servers = 3;
    let breakers: Vec<CircuitBreaker> = (0..servers)
        .map(|_| CircuitBreaker::new(BreakerConfig::default()))
        .collect();
    let pool_breaker = CircuitBreaker::new(BreakerConfig::default());
    let outliers = OutlierDetector::new(OutlierConfig::default(), servers);
    let budget = RetryBudget::new(BudgetConfig::default());
    let balancer = Balancer::new(Strategy::P2c);
    let in_flight: Vec<AtomicUsize> = (0..servers).map(|_| AtomicUsize::new(0)).collect();
    let candidates: Vec<usize> = (0..servers).collect();
    let ok = Outcome {
        failure: false,
        duration: Duration::from_millis(3),
    };

    c.bench_function("breaker+retry+balancer happy path", |b| {
        b.iter(|| {
            budget.deposit(tokio::time::Instant::now());
            let pool_permit = pool_breaker.try_acquire().expect("closed");
            let available: heapless_candidates::Candidates = candidates
                .iter()
                .copied()
                .filter(|&i| breakers[i].would_allow() && !outliers.is_ejected(i))
                .collect();
            let server = balancer
                .pick(available.as_slice(), |i| {
                    in_flight[i].load(Ordering::Relaxed)
                })
                .expect("a server");
            let _flight = InFlight::start(&in_flight[server]);
            let permit = breakers[server].try_acquire().expect("closed");
            black_box(server);
            permit.record(ok);
            pool_permit.record(ok);
            outliers.record(server, false);
        })
    });
}

/// A fixed-capacity candidate list, as the gateway keeps on the stack.
mod heapless_candidates {
    pub struct Candidates {
        items: [usize; 16],
        len: usize,
    }

    impl Candidates {
        pub fn as_slice(&self) -> &[usize] {
            &self.items[..self.len]
        }
    }

    impl FromIterator<usize> for Candidates {
        fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
            let mut c = Candidates {
                items: [0; 16],
                len: 0,
            };
            for i in iter.into_iter().take(16) {
                c.items[c.len] = i;
                c.len += 1;
            }
            c
        }
    }
}

criterion_group!(benches, happy_path);
criterion_main!(benches);
