//! Upstream resilience end to end, against fault-injecting upstreams on real sockets:
//! circuit breakers, retries and their budget, ejection, active checks, fallbacks.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

const NO_RETRY: &str = "retry = { max_attempts = 1 }";
const NO_EJECTION: &str = "outlier = { enabled = false }";
const NO_POOL_BREAKER: &str = "pool_breaker = { enabled = false }";

async fn get(gw: &Running, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_then_recovers_through_half_open() {
    let up = Faulty::start(Fault::Status(500)).await;
    let pool = format!(
        "{NO_EJECTION}\n{NO_POOL_BREAKER}\nbreaker = {{ window_size = 4, minimum_calls = 4, failure_rate_threshold = 50.0, open_duration = \"1s\", half_open_calls = 2 }}"
    );
    let gw = start_pool(&[up.url()], &pool, NO_RETRY).await;
    for _ in 0..4 {
        assert_eq!(get(&gw, "/x").await.status(), 500, "failures pass through");
    }
    assert_eq!(up.hits(), 4);
    let server = format!("{{pool=\"default\",server=\"{}\"}}", up.url());
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, &format!("rampart_upstream_breaker_state{server}")),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, &format!("rampart_upstream_failures_total{server}")),
        Some(4.0)
    );

    // Open: refused at once, with Retry-After, without touching the upstream.
    let open = get(&gw, "/x").await;
    assert_eq!(open.status(), 503);
    assert_eq!(open.headers()["retry-after"], "1");
    let rid = open.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = open.json().await.unwrap();
    assert_eq!(body["error"], "no upstream server available");
    assert_eq!(up.hits(), 4);
    let entry = gw.access_log.entry(&rid).await;
    assert_eq!(entry["decision"], "circuit_open");
    // The gateway's own time for such answers (the fastest of five, so that a test
    // machine's scheduling hiccup does not count): under 1 ms.
    let mut fastest = entry["duration_ms"].as_f64().unwrap();
    for _ in 0..4 {
        let again = get(&gw, "/x").await;
        assert_eq!(again.status(), 503);
        let rid = again.headers()["x-request-id"].to_str().unwrap().to_owned();
        let spent = gw.access_log.entry(&rid).await["duration_ms"]
            .as_f64()
            .unwrap();
        fastest = fastest.min(spent);
    }
    assert!(fastest < 1.0, "the gateway decided in {fastest} ms at best");
    assert_eq!(up.hits(), 4, "still untouched");
    assert_eq!(
        gw.health().await["pools"]["default"]["servers"][0]["breaker"],
        "open"
    );

    // After the open duration, trial calls go through; two successes close it.
    up.set(Fault::Healthy);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(get(&gw, "/x").await.status(), 200);
    assert_eq!(
        gw.health().await["pools"]["default"]["servers"][0]["breaker"],
        "half_open"
    );
    assert_eq!(get(&gw, "/x").await.status(), 200);
    assert_eq!(
        gw.health().await["pools"]["default"]["servers"][0]["breaker"],
        "closed"
    );
    assert_eq!(up.hits(), 6);
}

#[tokio::test]
async fn a_failed_trial_reopens_for_twice_as_long() {
    let up = Faulty::start(Fault::Status(500)).await;
    let pool = format!(
        "{NO_EJECTION}\n{NO_POOL_BREAKER}\nbreaker = {{ window_size = 2, minimum_calls = 2, open_duration = \"1s\", half_open_calls = 1 }}"
    );
    let gw = start_pool(&[up.url()], &pool, NO_RETRY).await;
    get(&gw, "/").await;
    get(&gw, "/").await;
    assert_eq!(get(&gw, "/").await.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(get(&gw, "/").await.status(), 500, "the trial call fails");
    let reopened = get(&gw, "/").await;
    assert_eq!(reopened.status(), 503);
    assert_eq!(reopened.headers()["retry-after"], "2");
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_server() {
    let failing = Faulty::start(Fault::Status(503)).await;
    let good = Faulty::start(Fault::Healthy).await;
    let pool = format!("balance = \"round_robin\"\n{NO_EJECTION}");
    let gw = start_pool(&[failing.url(), good.url()], &pool, "").await;
    let resp = get(&gw, "/items").await;
    assert_eq!(resp.status(), 200);
    assert_eq!((failing.hits(), good.hits()), (1, 1));
    let text = gw.metrics().await;
    assert_eq!(
        metric(&text, "rampart_retries_total{route=\"default\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_after_they_were_sent() {
    let up = Faulty::start(Fault::Status(503)).await;
    let gw = start_pool(&[up.url()], NO_EJECTION, "").await;
    let resp = client()
        .post(gw.url("/orders"))
        .body("one order")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "the upstream's answer");
    assert_eq!(up.hits(), 1, "a POST is not sent twice");

    up.set(Fault::Reset);
    let resp = client()
        .post(gw.url("/orders"))
        .body("one order")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(up.hits(), 2, "a reset POST is not sent again");

    // The same GET is retried (to the only server there is).
    let resp = get(&gw, "/orders").await;
    assert_eq!(resp.status(), 502);
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn a_refused_connection_is_retried_elsewhere_for_any_method_without_duplicates() {
    let a = Faulty::start(Fault::Healthy).await;
    let b = Faulty::start(Fault::Healthy).await;
    let pool = format!("balance = \"round_robin\"\n{NO_EJECTION}\nbreaker = {{ enabled = false }}");
    let gw = start_pool(&[a.url(), b.url()], &pool, "").await;
    a.refuse();
    let c = client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = c
            .post(gw.url("/orders"))
            .body(format!("order {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(a.hits(), 0);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in b.seen.lock().unwrap().iter() {
        *seen.entry(id.clone()).or_default() += 1;
    }
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "{id} delivered exactly once");
    }
}

#[tokio::test]
async fn a_large_streamed_post_is_not_retried_after_a_reset() {
    let up = Faulty::start(Fault::Reset).await;
    let gw = start_pool(&[up.url()], NO_EJECTION, "").await;
    // Above max_buffered_body (64 KiB): streamed, so it cannot be sent twice.
    let resp = client()
        .put(gw.url("/blob"))
        .body(vec![b'b'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn the_budget_holds_retries_to_its_percentage_under_total_failure() {
    let up = Faulty::start(Fault::Status(503)).await;
    let pool = format!("{NO_EJECTION}\n{NO_POOL_BREAKER}\nbreaker = {{ enabled = false }}");
    let route = "retry = { max_attempts = 3, backoff_base = \"1ms\", backoff_cap = \"1ms\", budget = { percent = 10.0, min_per_second = 0, window = \"60s\" } }";
    let gw = start_pool(&[up.url()], &pool, route).await;
    let requests = 200;
    for _ in 0..requests {
        assert_eq!(get(&gw, "/").await.status(), 503);
    }
    let amplification = up.hits() as f64 / requests as f64;
    assert!(amplification <= 1.10, "amplification {amplification}");
    assert!(amplification >= 1.09, "the budget is used: {amplification}");
    let text = gw.metrics().await;
    let exhausted = metric(
        &text,
        "rampart_retry_budget_exhausted_total{route=\"default\"}",
    )
    .unwrap();
    assert!(exhausted >= 170.0, "{exhausted}");
}

#[tokio::test]
async fn a_failing_server_is_ejected_and_comes_back() {
    let bad = Faulty::start(Fault::Status(500)).await;
    let good = Faulty::start(Fault::Healthy).await;
    let pool = format!(
        "balance = \"round_robin\"\n{NO_POOL_BREAKER}\nbreaker = {{ enabled = false }}\noutlier = {{ consecutive_failures = 3, base_ejection = \"700ms\", max_ejection_percent = 50 }}"
    );
    let gw = start_pool(&[bad.url(), good.url()], &pool, NO_RETRY).await;
    for _ in 0..6 {
        get(&gw, "/").await;
    }
    assert_eq!(bad.hits(), 3, "ejected after 3 consecutive failures");
    for _ in 0..6 {
        assert_eq!(get(&gw, "/").await.status(), 200);
    }
    assert_eq!(bad.hits(), 3, "no traffic while ejected");
    let h = gw.health().await;
    assert_eq!(h["pools"]["default"]["servers"][0]["ejected"], true);
    let text = gw.metrics().await;
    let server = format!("{{pool=\"default\",server=\"{}\"}}", bad.url());
    assert_eq!(
        metric(&text, &format!("rampart_upstream_ejections_total{server}")),
        Some(1.0)
    );

    bad.set(Fault::Healthy);
    tokio::time::sleep(Duration::from_millis(750)).await;
    for _ in 0..4 {
        assert_eq!(get(&gw, "/").await.status(), 200);
    }
    assert!(bad.hits() > 3, "re-admitted by itself");
}

#[tokio::test]
async fn active_checks_mark_a_server_down_and_up() {
    let a = Faulty::start(Fault::Healthy).await;
    let b = Faulty::start(Fault::Healthy).await;
    let pool = "balance = \"round_robin\"\nhealth_check = { path = \"/health\", interval = \"100ms\", timeout = \"500ms\", healthy_threshold = 2, unhealthy_threshold = 2 }";
    let gw = start_pool(&[a.url(), b.url()], pool, "").await;
    a.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let h = gw.health().await;
    assert_eq!(h["pools"]["default"]["servers"][0]["healthy"], false);
    assert_eq!(h["pools"]["default"]["state"], "up", "one server left");
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&gw, "/").await.status(), 200);
    }
    assert_eq!(a.hits(), before, "no traffic to an unhealthy server");
    let text = gw.metrics().await;
    let server = format!("{{pool=\"default\",server=\"{}\"}}", a.url());
    assert_eq!(
        metric(&text, &format!("rampart_upstream_server_up{server}")),
        Some(0.0)
    );

    a.set_healthy(true);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        gw.health().await["pools"]["default"]["servers"][0]["healthy"],
        true
    );
    for _ in 0..4 {
        get(&gw, "/").await;
    }
    assert!(a.hits() > before, "back in rotation");

    // Both down: not ready.
    a.set_healthy(false);
    b.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let ready = client()
        .get(gw.admin_url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn the_fallback_is_served_when_no_server_can_answer() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("busy.json");
    std::fs::write(&body, "{\"message\":\"the model is busy, try again soon\"}").unwrap();
    let port = closed_port().await;
    let route = format!(
        "fallback = {{ status = 503, headers = {{ \"Content-Type\" = \"application/json\", \"Retry-After\" = \"30\" }}, body_file = \"{}\" }}",
        body.display()
    );
    let gw = start_pool(&[format!("http://{port}")], "", &route).await;
    let resp = get(&gw, "/v1/chat").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        resp.text().await.unwrap(),
        "{\"message\":\"the model is busy, try again soon\"}"
    );
    assert_eq!(gw.access_log.entry(&rid).await["decision"], "fallback");
}

#[tokio::test]
async fn a_slow_try_is_cut_by_the_per_try_timeout_and_retried() {
    let slow = Faulty::start(Fault::DelayMs(2000)).await;
    let fast = Faulty::start(Fault::Healthy).await;
    let pool = format!("balance = \"round_robin\"\n{NO_EJECTION}");
    let route = "retry = { per_try_timeout = \"200ms\" }";
    let gw = start_pool(&[slow.url(), fast.url()], &pool, route).await;
    let started = std::time::Instant::now();
    let resp = get(&gw, "/").await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!((slow.hits(), fast.hits()), (1, 1));
}

#[tokio::test]
async fn a_reset_mid_body_ends_the_response_and_the_gateway_carries_on() {
    let up = Faulty::start(Fault::ResetMidBody).await;
    let gw = start_pool(&[up.url()], NO_EJECTION, "").await;
    let resp = get(&gw, "/stream").await;
    assert_eq!(resp.status(), 200, "the head had been sent");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        resp.bytes().await.is_err(),
        "the client sees the truncation"
    );
    assert_eq!(gw.access_log.entry(&rid).await["completed"], false);
    up.set(Fault::Healthy);
    assert_eq!(get(&gw, "/").await.status(), 200);
}

#[tokio::test]
async fn a_flapping_server_is_absorbed_by_retries_and_the_other_server() {
    let flapping = Faulty::start(Fault::FlapMs(150)).await;
    let steady = Faulty::start(Fault::Healthy).await;
    let pool = "balance = \"round_robin\"";
    let gw = start_pool(&[flapping.url(), steady.url()], pool, "").await;
    for _ in 0..60 {
        assert_eq!(get(&gw, "/").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(flapping.hits() > 0);
}
