//! Redis decisions per second through the crate, with concurrency: `CONCURRENCY` tasks
//! (default 50) deciding for random client addresses against `REDIS_URL` for `SECONDS`
//! (default 5). bench/limit-redis.sh runs it beside redis-benchmark on the same script.
//! Without REDIS_URL it prints a note and does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rampart_limit::{
    KeyKind, LimitConfig, OnRedisError, RateLimitConfig, RateLimiter, Redis, RedisConfig,
    RequestKeys, Verdict,
};

fn main() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("redis_throughput: set REDIS_URL (bench/limit-redis.sh does) to run it");
        return;
    };
    let concurrency: usize = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let redis = Arc::new(
            Redis::new(RedisConfig {
                url: Some(url),
                timeout: Duration::from_secs(1),
                ..RedisConfig::default()
            })
            .expect("redis url"),
        );
        redis.connect().await;
        let config = RateLimitConfig {
            limits: vec![LimitConfig {
                name: Some("bench".into()),
                key: KeyKind::Ip,
                rate: 1_000_000,
                per: Duration::from_secs(60),
                burst: None,
                on_redis_error: OnRedisError::Local,
            }],
            ..RateLimitConfig::default()
        };
        let limiter = Arc::new(RateLimiter::new(&config, "bench", Some(redis), Arc::default()));
        let decisions = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let (limiter, decisions) = (limiter.clone(), decisions.clone());
                tokio::spawn(async move {
                    let mut n: u32 = t as u32;
                    while Instant::now() < deadline {
                        n = n.wrapping_mul(2_654_435_761).wrapping_add(1);
                        let ip = std::net::IpAddr::from((n % 100_000).to_be_bytes());
                        let keys = RequestKeys { ip, api_key: None, header: &|_| None, route: "bench" };
                        if !matches!(limiter.check(&keys).await, Verdict::Unavailable) {
                            decisions.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let total = decisions.load(Ordering::Relaxed);
        let fallbacks = limiter.stats.fallbacks.load(Ordering::Relaxed);
        println!(
            "rampart-limit via redis: {:.0} decisions/s ({total} in {elapsed:.1} s, concurrency {concurrency}, {fallbacks} local fallbacks)",
            total as f64 / elapsed
        );
    });
}
