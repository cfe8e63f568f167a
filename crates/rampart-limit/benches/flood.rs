//! Memory under a flood of one million distinct client addresses through the default
//! limits (60/min and 1000/h per IP), with `max_keys` set to a quarter of the flood:
//! prints the resident memory before and after, the keys kept and the cap.

use std::sync::Arc;
use std::time::Instant;

use rampart_limit::{RateLimitConfig, RateLimiter, RequestKeys};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let max_keys = 250_000;
        let config = RateLimitConfig {
            max_keys,
            ..RateLimitConfig::default()
        };
        let before = rss_mib();
        let limiter = RateLimiter::new(&config, "flood", None, Arc::default());
        let started = Instant::now();
        for i in 0..1_000_000u32 {
            let ip = std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            let keys = RequestKeys { ip, api_key: None, header: &|_| None, route: "flood" };
            limiter.check(&keys).await;
        }
        let elapsed = started.elapsed();
        let after = rss_mib();
        let limits = config.limits.len();
        println!(
            "flood of 1,000,000 addresses through {limits} limits in {:.2} s: RSS {before:.1} MiB -> {after:.1} MiB; {} keys kept (cap {} per limit, {} in all)",
            elapsed.as_secs_f64(),
            limiter.keys_in_memory(),
            max_keys,
            max_keys * limits,
        );
        let table = max_keys as f64 * limits as f64 * 24.0 / (1024.0 * 1024.0);
        println!(
            "the tables are fixed at creation: about {table:.1} MiB for {limits} limits of {max_keys} keys; {} active keys overwritten",
            limiter.evicted_active()
        );
    });
}
