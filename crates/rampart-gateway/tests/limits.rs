//! Rate limits, allow/deny lists and bans end to end; shared by two gateways through a
//! real Redis.

#[path = "../../rampart-limit/tests/support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use redis_server::RedisServer;
use support::*;

/// Requests come through a trusted proxy (the test client on loopback) so that each test
/// can speak for any client address with `X-Forwarded-For`.
const TRUSTING_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.1/32\"]";

async fn from(gw: &Running, ip: &str, path: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn refused_requests_get_429_with_retry_after_and_quota_headers() {
    let up = start_upstream().await;
    let extra = format!(
        "{TRUSTING_LOOPBACK}\n[rate_limit]\nlimits = [{{ name = \"burst\", rate = 10, per = \"10s\", burst = 3 }}]\n[bans]\nenabled = false"
    );
    let gw = start(&up.url(), &extra).await;
    for remaining in [2, 1, 0] {
        let ok = from(&gw, "198.51.100.10", "/").await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["ratelimit-limit"], "10");
        assert_eq!(ok.headers()["ratelimit-remaining"], remaining.to_string());
    }
    let refused = from(&gw, "198.51.100.10", "/").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["retry-after"],
        "1",
        "one request per second refills"
    );
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    assert_eq!(refused.headers()["ratelimit-reset"], "3");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too many requests");
    assert_eq!(up.hits(), 3);
    // Another client has its own quota.
    assert_eq!(from(&gw, "198.51.100.11", "/").await.status(), 200);
    // The admin listener is never limited.
    for _ in 0..10 {
        assert_eq!(
            client()
                .get(gw.admin_url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "rampart_rate_limit_limited_total"), Some(1.0));
    assert_eq!(
        metric(&text, "rampart_rejections_total{reason=\"rate_limited\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_limit_keyed_by_api_key_counts_each_key_whichever_field_carries_it() {
    let up = start_upstream().await;
    let extra = "[rate_limit]\nlimits = [{ key = \"api_key\", rate = 1, per = \"1m\" }]\n[bans]\nenabled = false";
    let gw = start(&up.url(), extra).await;
    let with = |name: &'static str, value: &'static str| {
        let gw = &gw;
        async move {
            client()
                .get(gw.url("/"))
                .header(name, value)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(with("authorization", "Bearer key-one").await, 200);
    assert_eq!(
        with("x-api-key", "key-one").await,
        429,
        "the same key in the other field"
    );
    assert_eq!(with("authorization", "bearer key-two").await, 200);
    assert_eq!(with("authorization", "Bearer key-two").await, 429);
    // Requests without a key are not limited by it.
    for _ in 0..3 {
        assert_eq!(
            client().get(gw.url("/")).send().await.unwrap().status(),
            200
        );
    }
}

#[tokio::test]
async fn ipv6_clients_share_a_limit_per_prefix() {
    let up = start_upstream().await;
    let extra = format!(
        "{TRUSTING_LOOPBACK}\n[rate_limit]\nlimits = [{{ rate = 2, per = \"1m\" }}]\n[bans]\nenabled = false"
    );
    let gw = start(&up.url(), &extra).await;
    assert_eq!(from(&gw, "2001:db8:7:1::1", "/").await.status(), 200);
    assert_eq!(from(&gw, "2001:db8:7:1:ffff::2", "/").await.status(), 200);
    assert_eq!(
        from(&gw, "2001:db8:7:1::99", "/").await.status(),
        429,
        "same /64"
    );
    assert_eq!(
        from(&gw, "2001:db8:7:2::1", "/").await.status(),
        200,
        "another /64"
    );
}

#[tokio::test]
async fn allow_wins_over_deny_and_is_exempt_from_limits() {
    let up = start_upstream().await;
    let extra = format!(
        "{TRUSTING_LOOPBACK}\n[access]\ndeny = [\"203.0.113.0/24\"]\nallow = [\"203.0.113.5/32\"]\n[rate_limit]\nlimits = [{{ rate = 1, per = \"1m\" }}]"
    );
    let gw = start(&up.url(), &extra).await;
    let denied = from(&gw, "203.0.113.9", "/").await;
    assert_eq!(denied.status(), 403);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    for _ in 0..5 {
        assert_eq!(
            from(&gw, "203.0.113.5", "/").await.status(),
            200,
            "allowed: no limit"
        );
    }
    assert_eq!(from(&gw, "192.0.2.50", "/").await.status(), 200);
    assert_eq!(from(&gw, "192.0.2.50", "/").await.status(), 429);
}

#[tokio::test]
async fn repeated_refusals_ban_the_client_until_the_ban_expires() {
    let up = start_upstream().await;
    let extra = format!(
        "{TRUSTING_LOOPBACK}\n[rate_limit]\nlimits = [{{ rate = 1, per = \"1m\" }}]\n[bans]\nrules = [{{ event = \"rate_limited\", count = 3, window = \"10s\", ban = \"1s\" }}]"
    );
    let gw = start(&up.url(), &extra).await;
    let ip = "192.0.2.60";
    assert_eq!(from(&gw, ip, "/").await.status(), 200);
    for _ in 0..3 {
        assert_eq!(from(&gw, ip, "/").await.status(), 429);
    }
    let banned = from(&gw, ip, "/").await;
    assert_eq!(banned.status(), 403);
    let body: serde_json::Value = banned.json().await.unwrap();
    assert_eq!(body["error"], "banned");
    assert!(body["until"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(
        from(&gw, "192.0.2.61", "/").await.status(),
        200,
        "others are not banned"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        from(&gw, ip, "/").await.status(),
        429,
        "ban over; the limit still applies"
    );
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "rampart_bans_total"), Some(1.0));
}

#[tokio::test]
async fn upstream_statuses_can_earn_a_ban() {
    let up = Faulty::start(Fault::Status(401)).await;
    let extra = format!(
        "{TRUSTING_LOOPBACK}\n[bans]\nrules = [{{ event = \"upstream_status\", statuses = [401], count = 2, window = \"10s\", ban = \"1m\" }}]"
    );
    let gw = start(&up.url(), &extra).await;
    assert_eq!(from(&gw, "192.0.2.70", "/login").await.status(), 401);
    assert_eq!(from(&gw, "192.0.2.70", "/login").await.status(), 401);
    assert_eq!(from(&gw, "192.0.2.70", "/login").await.status(), 403);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_manages_bans() {
    let up = start_upstream().await;
    let token = "test-admin-token-0123456789";
    let extra = format!("{TRUSTING_LOOPBACK}\nadmin_token = \"{token}\"");
    let gw = start(&up.url(), &extra).await;
    let c = client();
    let url = gw.admin_url("/admin/bans");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&url)
            .bearer_auth("wrong-token-0123456789")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let created = c
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"ip": "192.0.2.80", "duration": "10m", "reason": "abuse report"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(from(&gw, "192.0.2.80", "/").await.status(), 403);
    let list: serde_json::Value = c
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["bans"][0]["ip"], "192.0.2.80");
    assert_eq!(list["bans"][0]["reason"], "abuse report");
    let bad = c
        .post(&url)
        .bearer_auth(token)
        .body("{\"ip\": \"nope\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let lifted = c
        .delete(format!("{url}/192.0.2.80"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    assert_eq!(from(&gw, "192.0.2.80", "/").await.status(), 200);
    let again = c
        .delete(format!("{url}/192.0.2.80"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let resp = client()
        .get(gw.admin_url("/admin/bans"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

fn shared_config(upstream: &str, redis: &str, limits: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{TRUSTING_LOOPBACK}\nadmin_token = \"test-admin-token-0123456789\"\n\n[redis]\nurl = \"{redis}\"\ntimeout = \"250ms\"\n\n[rate_limit]\nlimits = [{limits}]\n\n[bans]\nenabled = false\n\n[upstreams.default]\nservers = [\"{upstream}\"]\n"
    )
}

async fn start_text(text: &str) -> Running {
    start_gateway(rampart_gateway::Config::parse(text, None).unwrap()).await
}

#[tokio::test]
async fn two_gateways_enforce_one_global_limit_through_redis() {
    let redis = RedisServer::start();
    let up = start_upstream().await;
    let limit = 2000;
    let text = shared_config(
        &up.url(),
        &redis.url(),
        &format!("{{ name = \"global\", key = \"global\", rate = {limit}, per = \"1h\" }}"),
    );
    let a = start_text(&text).await;
    let b = start_text(&text).await;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let url = if t % 2 == 0 { a.url("/") } else { b.url("/") };
        tasks.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut limited) = (0u32, 0u32);
            for _ in 0..500 {
                match c.get(&url).send().await.unwrap().status().as_u16() {
                    200 => ok += 1,
                    429 => limited += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap().0;
    }
    assert!(admitted >= limit, "{admitted}");
    assert!(
        f64::from(admitted) <= f64::from(limit) * 1.01,
        "over-admission: {admitted} for a shared limit of {limit}"
    );
    for gw in [&a, &b] {
        assert_eq!(
            metric(&gw.metrics().await, "rampart_rate_limit_fallbacks_total"),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn a_ban_on_one_gateway_is_enforced_by_the_other_within_100_ms() {
    let redis = RedisServer::start();
    let up = start_upstream().await;
    let text = shared_config(&up.url(), &redis.url(), "");
    let a = start_text(&text).await;
    let b = start_text(&text).await;
    // Let both subscribe to the ban channel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ip = "192.0.2.90";
    assert_eq!(from(&b, ip, "/").await.status(), 200);
    let banned_at = Instant::now();
    let created = client()
        .post(a.admin_url("/admin/bans"))
        .bearer_auth("test-admin-token-0123456789")
        .json(&serde_json::json!({"ip": ip, "duration": "1m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    loop {
        if from(&b, ip, "/").await.status() == 403 {
            break;
        }
        assert!(
            banned_at.elapsed() < Duration::from_millis(100),
            "not enforced by b within 100 ms"
        );
    }
}

#[tokio::test]
async fn redis_lost_mid_load_fails_no_request_and_shared_limiting_resumes() {
    let mut redis = RedisServer::start();
    let up = start_upstream().await;
    let text = shared_config(
        &up.url(),
        &redis.url(),
        "{ name = \"per-ip\", rate = 100000, per = \"1m\" }",
    );
    let gw = start_text(&text).await;
    let url = gw.url("/");
    let load = tokio::spawn(async move {
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..1500 {
            statuses.push(c.get(&url).send().await.unwrap().status().as_u16());
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.restart();
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed while redis was away"
    );
    let fallbacks = metric(&gw.metrics().await, "rampart_rate_limit_fallbacks_total").unwrap();
    assert!(fallbacks > 0.0, "the fallback is reported");
    // Shared limiting resumes: decisions stop falling back.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = metric(&gw.metrics().await, "rampart_rate_limit_fallbacks_total").unwrap();
        assert_eq!(
            client().get(gw.url("/")).send().await.unwrap().status(),
            200
        );
        let after = metric(&gw.metrics().await, "rampart_rate_limit_fallbacks_total").unwrap();
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still falling back 5 s after redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = gw.metrics().await;
    assert!(metric(&text, "rampart_redis_failures_total").unwrap() > 0.0);
}
