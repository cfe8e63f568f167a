//! The gateway end to end: a real client, the gateway on loopback, a real upstream.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.expect("JSON body")
}

#[tokio::test]
async fn every_method_is_proxied_with_its_body() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let c = client();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = c
            .request(m, gw.url("/v1/items?x=1"))
            .body("hello body")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let v = json(resp).await;
        assert_eq!(v["method"], method);
        assert_eq!(v["path"], "/v1/items?x=1");
        assert_eq!(v["body_len"], 10, "{method}");
    }
    let head = c.head(gw.url("/x")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(up.hits(), 7);
}

fn pattern_chunk(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| ((i * len + j) % 253) as u8).collect()
}

#[tokio::test]
async fn fifty_mib_streams_through_with_and_without_length() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "[limits]\nmax_body_bytes = 67108864").await;
    let c = client();
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 800; // 50 MiB
    let mut expected = FNV_OFFSET;
    for i in 0..CHUNKS {
        expected = fnv1a(expected, &pattern_chunk(i, CHUNK));
    }
    let expected = format!("{expected:016x}");
    let total = (CHUNK * CHUNKS) as u64;

    // Chunked: a stream of unknown length.
    let stream = futures_util::stream::iter(0..CHUNKS)
        .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(pattern_chunk(i, CHUNK))));
    let resp = c
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    assert_eq!(v["body_len"], total);
    assert_eq!(v["body_hash"], expected);
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");

    // With Content-Length.
    let body: Vec<u8> = (0..CHUNKS).flat_map(|i| pattern_chunk(i, CHUNK)).collect();
    let resp = c.put(gw.url("/upload")).body(body).send().await.unwrap();
    let v = json(resp).await;
    assert_eq!(v["body_len"], total);
    assert_eq!(v["body_hash"], expected);
    assert_eq!(v["headers"]["content-length"], total.to_string());

    // And 50 MiB back down.
    let resp = c
        .get(gw.url(&format!("/big?bytes={total}")))
        .send()
        .await
        .unwrap();
    let mut got = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, total);
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_removed() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let resp = client()
        .get(gw.url("/h"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-private-hop")
        .header("x-private-hop", "secret")
        .header("proxy-authorization", "Basic abc")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let rid = h["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(rid.len(), 36, "a generated UUID: {rid}");
    // Response hardening.
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
    assert!(
        h.get("access-control-allow-origin").is_none(),
        "upstream wildcard CORS removed"
    );
    assert_eq!(
        h["x-frame-options"], "DENY",
        "gateway policy overrides the upstream's"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "default-src 'self'");
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(
        h["permissions-policy"],
        "geolocation=(), microphone=(), camera=()"
    );
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    assert_eq!(h["x-xss-protection"], "0");
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    assert_eq!(h["x-upstream"], "yes");

    let v = json(resp).await;
    let seen = &v["headers"];
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "an untrusted peer's XFF is replaced"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(seen["x-request-id"], rid.as_str());
    assert_eq!(seen["host"], up.addr.to_string());
    assert_eq!(seen["x-custom"], "kept");
    assert!(seen.get("x-private-hop").is_none());
    assert!(seen.get("proxy-authorization").is_none());
    assert!(seen.get("connection").is_none());
}

#[tokio::test]
async fn a_clean_request_id_is_kept_and_a_dirty_one_replaced() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let c = client();
    let resp = c
        .get(gw.url("/"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
    assert_eq!(json(resp).await["headers"]["x-request-id"], "trace-42");
    let resp = c
        .get(gw.url("/"))
        .header("x-request-id", "bad id\"with quotes")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id\"with quotes");
}

#[tokio::test]
async fn forwarded_for_chain_is_kept_only_from_trusted_proxies() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "trusted_proxies = [\"127.0.0.0/8\"]").await;
    let resp = client()
        .get(gw.url("/"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v = json(resp).await;
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    let entry = gw.access_log.entry(&rid).await;
    assert_eq!(entry["client_ip"], "203.0.113.7");
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_without_secrets() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let resp = client()
        .post(gw.url("/v1/chat?token=abc123secret&model=m"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("authorization", "Bearer sk-very-secret")
        .header("cookie", "sid=cookie-secret")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    let entry = gw.access_log.entry(&rid).await;
    assert_eq!(
        entry["client_ip"], "127.0.0.1",
        "XFF from an untrusted peer is ignored"
    );
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["path"], "/v1/chat?token=REDACTED&model=REDACTED");
    assert_eq!(entry["route"], "default");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_in"], 10);
    assert_eq!(entry["bytes_out"], body.len());
    assert_eq!(entry["upstream"], up.url());
    assert_eq!(entry["decision"], "proxied");
    assert_eq!(entry["completed"], true);
    assert!(entry["duration_ms"].as_f64().unwrap() >= entry["upstream_ms"].as_f64().unwrap());
    assert!(entry["timestamp"].as_str().unwrap().ends_with('Z'));
    let all = String::from_utf8(gw.access_log.0.lock().unwrap().clone()).unwrap();
    for secret in ["abc123secret", "sk-very-secret", "cookie-secret"] {
        assert!(!all.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn body_over_the_limit_gets_413_by_length_before_the_upstream_sees_it() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "[limits]\nmax_body_bytes = 1000").await;
    let resp = client()
        .post(gw.url("/upload"))
        .body(vec![b'a'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v = json(resp).await;
    assert_eq!(v["error"], "request body too large");
    assert_eq!(v["request_id"], rid.as_str());
    assert_eq!(up.hits(), 0);
    // At the limit exactly, it passes.
    let resp = client()
        .post(gw.url("/upload"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn chunked_body_over_the_limit_gets_413_while_streaming() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "[limits]\nmax_body_bytes = 100000").await;
    let stream = futures_util::stream::iter(0..20)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 10_000])));
    let resp = client()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(json(resp).await["error"], "request body too large");
}

#[tokio::test]
async fn route_limits_override_the_global_ones() {
    let up = start_upstream().await;
    let extra = "[limits]\nmax_body_bytes = 10\n\n[[routes]]\nprefix = \"/\"\nupstream = \"default\"\n\n[[routes]]\nprefix = \"/uploads\"\nupstream = \"default\"\nlimits = { max_body_bytes = 100 }\n";
    let gw = start(&up.url(), extra).await;
    let c = client();
    let small = c
        .post(gw.url("/chat"))
        .body(vec![0u8; 50])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 413);
    let big = c
        .post(gw.url("/uploads/a"))
        .body(vec![0u8; 50])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 200);
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let up = start_upstream().await;
    let gw = start(
        &up.url(),
        "[limits]\nmax_headers = 20\nmax_header_bytes = 2048",
    )
    .await;
    let c = client();
    let mut req = c.get(gw.url("/"));
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(json(resp).await["error"], "request header fields too large");
    let resp = c
        .get(gw.url("/"))
        .header("x-big", "v".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "[limits]\nupstream_timeout = \"200ms\"").await;
    let started = Instant::now();
    let resp = client().get(gw.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    let v = json(resp).await;
    assert_eq!(v["error"], "upstream timed out");
    assert!(v["request_id"].is_string());
}

#[tokio::test]
async fn closed_upstream_port_gets_502_without_internals() {
    let port = closed_port().await;
    let gw = start(&format!("http://{port}"), "").await;
    let resp = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], "upstream unavailable");
    assert!(
        !text.contains("127.0.0.1"),
        "no upstream address leaks: {text}"
    );
    assert!(
        !text.to_lowercase().contains("refused"),
        "no OS error leaks: {text}"
    );
}

#[tokio::test]
async fn unmatched_host_gets_a_json_404() {
    let up = start_upstream().await;
    let extra =
        "\n[[routes]]\nprefix = \"/\"\nhost = \"api.example.com\"\nupstream = \"default\"\n";
    let gw = start(&up.url(), extra).await;
    let resp = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(json(resp).await["error"], "no route for this request");
    let resp = client()
        .get(gw.url("/"))
        .header("host", "API.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn prefix_is_stripped_and_pools_round_robin() {
    let a = start_upstream().await;
    let b = start_upstream().await;
    let extra = format!(
        "\n[upstreams.models]\nservers = [\"{}\", \"{}\"]\nbalance = \"round_robin\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"default\"\n\n[[routes]]\nprefix = \"/models/\"\nupstream = \"models\"\nstrip_prefix = true\n",
        a.url(),
        b.url()
    );
    let gw = start(&a.url(), &extra).await;
    let c = client();
    for _ in 0..4 {
        let v = json(c.get(gw.url("/models/v1/chat?q=1")).send().await.unwrap()).await;
        assert_eq!(v["path"], "/v1/chat?q=1");
    }
    assert_eq!((a.hits(), b.hits()), (2, 2));
}

#[tokio::test]
async fn cors_preflight_is_answered_by_the_gateway() {
    let up = start_upstream().await;
    let extra = "[cors]\nallow_origins = [\"https://app.example.com\"]\nallow_credentials = true\nmax_age = \"10m\"\n";
    let gw = start(&up.url(), extra).await;
    let c = client();
    let ok = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let refused = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/chat"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(
        json(refused).await["error"],
        "CORS preflight refused: origin not allowed"
    );
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");

    let actual = c
        .post(gw.url("/v1/chat"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        actual.headers()["access-control-expose-headers"],
        "x-request-id"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let c = client();
    for _ in 0..3 {
        c.get(gw.url("/m")).send().await.unwrap();
    }

    let health = c.get(gw.admin_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let v = json(health).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_seconds"].is_u64());
    assert_eq!(v["pools"]["default"]["state"], "up");
    assert_eq!(v["pools"]["default"]["servers"][0]["healthy"], true);
    assert_eq!(v["pools"]["default"]["servers"][0]["breaker"], "closed");
    assert_eq!(v["pools"]["default"]["breaker"], "closed");

    assert_eq!(
        c.get(gw.admin_url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let text = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    let get = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(
        get("rampart_requests_total{route=\"default\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        get("rampart_request_duration_seconds_count{route=\"default\"}"),
        3.0
    );
    assert_eq!(
        get("rampart_upstream_duration_seconds_count{route=\"default\"}"),
        3.0
    );
    assert_eq!(
        get("rampart_request_duration_seconds_bucket{le=\"30.0\",route=\"default\"}"),
        3.0
    );
    let buckets = samples
        .iter()
        .filter(|(n, _)| n.starts_with("rampart_request_duration_seconds_bucket{"))
        .count();
    assert!(buckets >= 30, "fine buckets from 100µs to 30s: {buckets}");
    assert!(get("rampart_request_duration_seconds_bucket{le=\"0.0001\",route=\"default\"}") <= 3.0);
    assert!(get("rampart_active_connections") >= 0.0);
    assert!(get("rampart_connections_total") >= 1.0);
    assert!(text.contains("rampart_rejections_total{reason=\"body_too_large\"}"));
}

/// `name{labels} value` pairs of a Prometheus text exposition.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("numeric sample"))
        })
        .collect()
}

#[tokio::test]
async fn readiness_fails_while_a_pool_has_no_reachable_server() {
    let port = closed_port().await;
    let gw = start(&format!("http://{port}"), "").await;
    let c = client();
    let ready = c.get(gw.admin_url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(json(ready).await["pools_down"][0], "default");
    let health = json(c.get(gw.admin_url("/health")).send().await.unwrap()).await;
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["pools"]["default"]["state"], "down");
    // Live stays live: the process is fine, its upstream is not.
    assert_eq!(
        c.get(gw.admin_url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_client_slow_to_send_headers_is_dropped() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "header_read_timeout = \"300ms\"").await;
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert_eq!(up.hits(), 0);

    // A silent client, too.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "silent connection still open after 5 s");
}

/// Sends `GET /` on a raw connection and reads a 200 answer (small enough for one read).
async fn get_ok_on(socket: &mut tokio::net::TcpStream) {
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "idle_timeout = \"300ms\"").await;
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    get_ok_on(&mut socket).await;
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "idle connection still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn reload_swaps_config_and_a_bad_file_keeps_the_old_one() {
    let a = start_upstream().await;
    let b = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, config_text(&a.url(), "")).unwrap();
    let gw = start_gateway(rampart_gateway::Config::load(&path).unwrap()).await;
    let c = client();
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!((a.hits(), b.hits()), (1, 0));

    std::fs::write(&path, config_text(&b.url(), "")).unwrap();
    let p = path.clone();
    gw.handle
        .reload_with(|| rampart_gateway::Config::load(&p))
        .await
        .unwrap();
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!((a.hits(), b.hits()), (1, 1));

    std::fs::write(&path, config_text(&a.url(), "bogus_key = 1")).unwrap();
    let err = gw
        .handle
        .reload_with(|| rampart_gateway::Config::load(&p))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("rampart.toml:4:1"), "{err}");
    c.get(gw.url("/")).send().await.unwrap();
    assert_eq!((a.hits(), b.hits()), (1, 2), "the old config still serves");
    let metrics = c
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rampart_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let url = gw.url("/slow?ms=600");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.handle.shutdown();
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["path"], "/slow?ms=600");
    tokio::time::timeout(Duration::from_secs(5), gw.task)
        .await
        .expect("run() returns after draining")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    // Each connection has served requests, so its loop has polled the shutdown watch
    // before, while waiting for a head and while the request was upstream.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        for _ in 0..2 {
            get_ok_on(&mut socket).await;
        }
        idle.push(socket);
    }
    let started = Instant::now();
    gw.handle.shutdown();
    for mut socket in idle {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "idle connection still open 2 s after shutdown"
        );
    }
    // Well before the idle timeout (60 s) and the drain deadline (30 s).
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::timeout(Duration::from_secs(5), gw.task)
        .await
        .expect("run() returns once the idle connections are closed")
        .unwrap();
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c.post(gw.url("/h2")).body("over h2").send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // The fields HTTP/1.1 writes as head lines are in HTTP/2's header map.
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("server"));
    let v = json(resp).await;
    assert_eq!(v["body_len"], 7);
    assert_eq!(v["headers"]["host"], up.addr.to_string());
    assert_eq!(v["headers"]["x-forwarded-host"], gw.addr.to_string());
}

#[tokio::test]
async fn security_headers_are_configurable_and_removable_per_route() {
    let up = start_upstream().await;
    let extra = "[security_headers]\nhsts = \"always\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"default\"\n\n[[routes]]\nprefix = \"/embed\"\nupstream = \"default\"\nsecurity_headers = { frame_options = \"\", content_security_policy = \"default-src 'none'\", extra = { \"X-Robots-Tag\" = \"noindex\" } }\n";
    let gw = start(&up.url(), extra).await;
    let c = client();
    let root = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(root.headers()["x-frame-options"], "DENY");
    assert_eq!(
        root.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains",
        "hsts = always sends it over plain HTTP too"
    );
    let embed = c.get(gw.url("/embed/x")).send().await.unwrap();
    let h = embed.headers();
    assert_eq!(
        h["x-frame-options"], "ALLOWALL",
        "removed from the policy: the upstream's stands"
    );
    assert_eq!(h["content-security-policy"], "default-src 'none'");
    assert_eq!(h["x-robots-tag"], "noindex");
    assert_eq!(
        h["x-content-type-options"], "nosniff",
        "the rest is inherited"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "max_connections = 1").await;
    let mut first = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let url = gw.url("/second");
    let second = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "served while the only slot was taken"
    );
    assert_eq!(up.hits(), 1);
    drop(first);
    let resp = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("served once the slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// An upstream that answers every request head on every connection with `answer`.
async fn raw_upstream(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Sends one request head on a fresh connection and reads the response head (and, with a
/// length, the body).
async fn exchange_raw(addr: std::net::SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(got[..head_end].to_vec()).unwrap();
    (head, got[head_end..].to_vec())
}

#[tokio::test]
async fn upstream_response_fields_pass_on_as_sent_but_for_those_the_gateway_owns() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nServer: upstream/1.0\r\nX-Powered-By: php\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: secret\r\nX-Upstream-Case: Kept\r\n\
Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nAccess-Control-Allow-Origin: *\r\nX-Frame-Options: ALLOWALL\r\n\
X-Request-Id: forged\r\nContent-Length: 4\r\n\r\nbody",
    )
    .await;
    let gw = start(&format!("http://{up}"), "").await;
    let (head, body) = exchange_raw(gw.addr, "GET /x HTTP/1.1\r\nHost: gw\r\n\r\n").await;
    let lines: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
    let count = |name: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{name}:")))
            .count()
    };
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Upstream-Case: Kept\r\n"),
        "the sender's case is kept: {head}"
    );
    assert!(
        head.contains("\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"),
        "{head}"
    );
    assert_eq!(count("date"), 1, "{head}");
    assert_eq!(count("set-cookie"), 2, "{head}");
    assert_eq!(count("x-frame-options"), 1, "{head}");
    assert!(
        lines.contains(&"x-frame-options: deny".to_string()),
        "{head}"
    );
    assert_eq!(count("x-request-id"), 1, "{head}");
    assert!(!head.contains("forged"), "{head}");
    assert_eq!(count("content-length"), 1, "{head}");
    for gone in [
        "server",
        "x-powered-by",
        "x-hop",
        "keep-alive",
        "access-control-allow-origin",
    ] {
        assert_eq!(count(gone), 0, "{gone} passed on: {head}");
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("connection:") && l.contains("x-hop")),
        "{head}"
    );
    assert_eq!(body, b"body");
}

#[tokio::test]
async fn a_head_answer_keeps_the_upstream_length_and_sends_no_body() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/plain\r\n\r\nbody",
    )
    .await;
    let gw = start(&format!("http://{up}"), "").await;
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    socket
        .write_all(b"HEAD /x HTTP/1.1\r\nHost: gw\r\n\r\nGET /y HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut all))
        .await
        .expect("the second answer closes the connection")
        .unwrap();
    let text = String::from_utf8(all).unwrap();
    let (first, rest) = text.split_once("\r\n\r\n").unwrap();
    let lengths = first
        .to_ascii_lowercase()
        .lines()
        .filter(|l| l.starts_with("content-length:"))
        .count();
    assert_eq!(lengths, 1, "one length, the upstream's: {first}");
    assert!(
        first.to_ascii_lowercase().contains("\r\ncontent-length: 4"),
        "{first}"
    );
    // What follows the HEAD answer's head is the next answer, not a body.
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest:?}");
    assert!(rest.ends_with("\r\n\r\nbody"), "{rest:?}");
}
