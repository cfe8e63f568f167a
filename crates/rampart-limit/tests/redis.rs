//! Shared limits and bans against a real `redis-server`, started by the tests on a free
//! port so that they can stop and restart it.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rampart_limit::{
    Ban, BanTable, KeyKind, LimitConfig, OnRedisError, RateLimitConfig, RateLimiter, Redis,
    RequestKeys, Verdict,
};
use redis_server::RedisServer;

fn limits(rate: u32, per: Duration, on_error: OnRedisError) -> RateLimitConfig {
    RateLimitConfig {
        limits: vec![LimitConfig {
            name: Some("test".into()),
            key: KeyKind::Ip,
            rate,
            per,
            burst: Some(rate),
            on_redis_error: on_error,
        }],
        ..RateLimitConfig::default()
    }
}

fn keys(ip: &str) -> RequestKeys<'static> {
    RequestKeys {
        ip: ip.parse().unwrap(),
        api_key: None,
        header: &|_| None,
        route: "r",
    }
}

#[tokio::test]
async fn gcra_in_redis_allows_the_burst_then_refuses_with_retry_after() {
    let server = RedisServer::start();
    let redis = Arc::new(Redis::new(server.config()).unwrap());
    let l = RateLimiter::new(
        &limits(10, Duration::from_secs(10), OnRedisError::Local),
        "t1",
        Some(redis.clone()),
        Default::default(),
    );
    let k = keys("198.51.100.1");
    for i in 0..10 {
        match l.check(&k).await {
            Verdict::Allowed(Some(info)) => {
                assert_eq!(info.remaining, 9 - i);
                assert_eq!(info.limit, 10);
            }
            other => panic!("request {i}: {other:?}"),
        }
    }
    let Verdict::Limited { retry_after, .. } = l.check(&k).await else {
        panic!("the 11th is refused")
    };
    assert!(
        retry_after > Duration::from_millis(900) && retry_after <= Duration::from_secs(1),
        "{retry_after:?}"
    );
    assert_eq!(
        l.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(l.keys_in_memory(), 0, "nothing decided locally");
}

#[tokio::test]
async fn two_replicas_enforce_one_global_limit() {
    let server = RedisServer::start();
    let rate = 2000;
    let config = limits(rate, Duration::from_secs(3600), OnRedisError::Local);
    // Two gateways, each with its own connection, one shared key space.
    let a = Arc::new(RateLimiter::new(
        &config,
        "global",
        Some(Arc::new(Redis::new(server.config()).unwrap())),
        Default::default(),
    ));
    let b = Arc::new(RateLimiter::new(
        &config,
        "global",
        Some(Arc::new(Redis::new(server.config()).unwrap())),
        Default::default(),
    ));
    let mut tasks = Vec::new();
    for t in 0..20 {
        let limiter = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..500 {
                if matches!(
                    limiter.check(&keys("198.51.100.2")).await,
                    Verdict::Allowed(_)
                ) {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    let fallbacks = a.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed)
        + b.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fallbacks, 0, "every decision was shared");
    // 10,000 requests against a burst of 2000 (plus what an hour's rate refills meanwhile).
    assert!(admitted >= rate, "{admitted}");
    assert!(
        f64::from(admitted) <= f64::from(rate) * 1.01,
        "over-admission: {admitted} for a limit of {rate}"
    );
}

#[tokio::test]
async fn redis_down_falls_back_to_local_limits_and_comes_back_with_its_script() {
    let mut server = RedisServer::start();
    let redis = Arc::new(Redis::new(server.config()).unwrap());
    let l = RateLimiter::new(
        &limits(100, Duration::from_secs(60), OnRedisError::Local),
        "t3",
        Some(redis.clone()),
        Default::default(),
    );
    let refusing = RateLimiter::new(
        &limits(100, Duration::from_secs(60), OnRedisError::Refuse),
        "t3r",
        Some(redis.clone()),
        Default::default(),
    );
    assert!(matches!(
        l.check(&keys("198.51.100.3")).await,
        Verdict::Allowed(_)
    ));

    server.stop();
    // Local fallback at rate / expected replicas (2): 50 at once.
    let mut allowed = 0;
    for _ in 0..80 {
        if matches!(l.check(&keys("198.51.100.4")).await, Verdict::Allowed(_)) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 50);
    assert!(l.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed) >= 80);
    assert!(redis.is_down());
    assert_eq!(
        refusing.check(&keys("198.51.100.4")).await,
        Verdict::Unavailable
    );

    // A new server knows no script: EVALSHA fails with NOSCRIPT and it is loaded again.
    server.restart();
    resumed(&l, &redis).await;
    let Verdict::Allowed(Some(info)) = l.check(&keys("198.51.100.6")).await else {
        panic!("allowed by the shared state")
    };
    assert!(
        info.remaining >= 90,
        "the full quota of 100, decided in Redis: {info:?}"
    );
}

/// Polls until a decision is taken in Redis again.
async fn resumed(l: &RateLimiter, redis: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = l.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
        l.check(&keys("198.51.100.6")).await;
        let after = l.stats.fallbacks.load(std::sync::atomic::Ordering::Relaxed);
        if after == before && !redis.is_down() {
            return;
        }
        assert!(Instant::now() < deadline, "shared limiting did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_ban_on_one_replica_reaches_the_other_within_100_ms() {
    let server = RedisServer::start();
    let a = Arc::new(Redis::new(server.config()).unwrap());
    let b = Arc::new(Redis::new(server.config()).unwrap());
    let table_b = Arc::new(BanTable::default());
    let follower = {
        let (b, table_b) = (b.clone(), table_b.clone());
        tokio::spawn(async move { b.follow_bans(&table_b).await })
    };
    // Let the follower subscribe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let ban = Ban {
        until: SystemTime::now() + Duration::from_secs(60),
        reason: "test".into(),
    };
    let sent = Instant::now();
    a.publish_ban(ip, &ban).await.unwrap();
    while table_b.get(ip).is_none() {
        assert!(
            sent.elapsed() < Duration::from_millis(100),
            "not seen within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A replica starting later loads the ban from Redis.
    let late = Arc::new(BanTable::default());
    let late_follower = {
        let (a, late) = (a.clone(), late.clone());
        tokio::spawn(async move { a.follow_bans(&late).await })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while late.get(ip).is_none() {
        assert!(Instant::now() < deadline, "stored ban not loaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.publish_unban(ip).await.unwrap();
    let lifted = Instant::now();
    while table_b.get(ip).is_some() {
        assert!(
            lifted.elapsed() < Duration::from_millis(100),
            "unban not seen within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    follower.abort();
    late_follower.abort();
}
