//! Request inspection end to end: what is blocked, what passes, bodies of every type, the
//! oversize and unparsable cases, detect mode, exclusions, and the events it leaves.

mod support;

use support::*;

async fn get(gw: &Running, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

async fn post(
    gw: &Running,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn attacks_in_the_query_are_blocked_with_the_rules_and_never_reach_the_upstream() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let blocked = get(
        &gw,
        "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
    )
    .await;
    assert_eq!(blocked.status(), 403);
    let request_id = blocked.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = blocked.json().await.unwrap();
    assert_eq!(body["error"], "request blocked by inspection");
    assert_eq!(body["request_id"], request_id.as_str());
    let rules = body["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["name"] == "sqli-union-select" && r["id"] == 2101),
        "{body}"
    );
    // The attack itself is not echoed back.
    assert!(!body.to_string().contains("password"));
    assert_eq!(up.hits(), 0);
    let entry = gw.access_log.entry(&request_id).await;
    assert_eq!(entry["decision"], "inspection_blocked");
    assert_eq!(entry["status"], 403);

    for attack in [
        "/?name=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/?file=..%2F..%2F..%2Fetc%2Fpasswd",
        "/?host=127.0.0.1%3Bcat%20%2Fetc%2Fshadow",
        "/?t=%7B%7B7*7%7D%7D",
        "/files/..%252f..%252fetc%252fpasswd",
    ] {
        assert_eq!(get(&gw, attack).await.status(), 403, "{attack}");
    }
    assert_eq!(up.hits(), 0);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "rampart_inspection_findings_total{result=\"blocked\"}"
        ),
        Some(6.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "rampart_rejections_total{reason=\"inspection_blocked\"}"
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn ordinary_requests_pass_untouched() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    for path in [
        "/?name=O%27Brien&city=St.%20John%27s",
        "/search?q=select%20the%20best%20union%20members&page=2",
        "/?url=https%3A%2F%2Fexample.com%2Fa%3Fb%3Dc",
        "/?note=Tom%20%26%20Jerry%3B%20cats%20and%20dogs",
        "/api/v1/users/42",
    ] {
        let resp = get(&gw, path).await;
        assert_eq!(resp.status(), 200, "{path}");
        let echoed: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echoed["path"], path);
    }
    let json = r#"{"title": "Rock 'n' roll", "tags": ["music", "1950s"], "n": 3}"#;
    let resp = post(&gw, "/posts", "application/json", json).await;
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echoed["body_len"], json.len());
    assert_eq!(up.hits(), 6);
}

#[tokio::test]
async fn every_body_type_is_parsed_and_inspected() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    let cases: [(&str, &str, &str); 6] = [
        (
            "application/x-www-form-urlencoded",
            "a=1&comment=%27%20or%201%3D1--",
            "form value",
        ),
        (
            "application/json",
            r#"{"user": {"bio": ["ok", "<img src=x onerror=alert(1)>"]}}"#,
            "nested JSON string",
        ),
        (
            "application/json",
            r#"{"$where": "sleep(5000)"}"#,
            "JSON key",
        ),
        (
            "text/xml",
            "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>",
            "XML entity",
        ),
        ("text/plain", "hello\n; cat /etc/passwd", "plain text"),
        (
            "multipart/form-data; boundary=XyZ",
            "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../../etc/passwd\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n",
            "multipart file name",
        ),
    ];
    for (content_type, body, what) in cases {
        let resp = post(&gw, "/upload", content_type, body).await;
        assert_eq!(resp.status(), 403, "{what} should be blocked");
    }
    // The same types, harmless, pass and arrive whole.
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nsee you at 5\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"photo.jpg\"\r\n\r\n\x01\x02binary' or 1=1--\r\n--XyZ--\r\n";
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "a=1&comment=nice+post"),
        (
            "application/json",
            r#"{"user": {"bio": ["ok", "I like <3 cats"]}}"#,
        ),
        ("text/xml", "<r><name>O'Brien</name></r>"),
        ("multipart/form-data; boundary=XyZ", multipart),
    ] {
        let resp = post(&gw, "/upload", content_type, body).await;
        assert_eq!(resp.status(), 200, "{content_type}");
        let echoed: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echoed["body_len"], body.len(), "{content_type}");
    }
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn bodies_that_do_not_parse_as_their_type_get_400() {
    let up = start_upstream().await;
    let gw = start(&up.url(), "").await;
    for (content_type, body) in [
        ("application/json", "{\"a\": "),
        ("application/json", "[1, 2] trailing"),
        ("text/xml", "<a><b></a>"),
        ("multipart/form-data; boundary=XyZ", "no boundary here"),
        ("multipart/form-data", "--x\r\n"),
    ] {
        let resp = post(&gw, "/", content_type, body).await;
        assert_eq!(resp.status(), 400, "{content_type}: {body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("body"), "{err}");
    }
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let resp = post(&gw, "/", "application/json", deep).await;
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "JSON body nests deeper than 64 levels");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_body_past_the_inspection_buffer_is_inspected_by_prefix_or_refused() {
    let up = start_upstream().await;
    // Default: the first max_body_bytes are inspected, the whole body is delivered.
    let gw = start(&up.url(), "[inspection]\nmax_body_bytes = 1024").await;
    let mut long = "word ".repeat(1000);
    let resp = post(&gw, "/", "text/plain", long.clone()).await;
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echoed["body_len"], long.len());
    assert_eq!(
        echoed["body_hash"],
        format!("{:016x}", fnv1a(FNV_OFFSET, long.as_bytes()))
    );
    // An attack inside the prefix is found; one after it is not (that is the trade-off).
    let early = format!("<script>alert(1)</script>{long}");
    assert_eq!(post(&gw, "/", "text/plain", early).await.status(), 403);
    long.push_str("<script>alert(1)</script>");
    assert_eq!(
        post(&gw, "/", "text/plain", long.clone()).await.status(),
        200
    );

    let strict = start(
        &up.url(),
        "[inspection]\nmax_body_bytes = 1024\noversize = \"refuse\"",
    )
    .await;
    assert_eq!(post(&strict, "/", "text/plain", long).await.status(), 413);
    // A chunked body (no length) past the buffer is refused too.
    let stream = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a'; 512]))),
    );
    let resp = post(
        &strict,
        "/",
        "text/plain",
        reqwest::Body::wrap_stream(stream),
    )
    .await;
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn detect_mode_passes_and_reports_and_off_does_not_look() {
    let up = start_upstream().await;
    let extra = "[[routes]]\nprefix = \"/watch\"\nupstream = \"default\"\n[routes.inspection]\nmode = \"detect\"\n\n[[routes]]\nprefix = \"/raw\"\nupstream = \"default\"\n[routes.inspection]\nmode = \"off\"\n\n[[routes]]\nprefix = \"/\"\nupstream = \"default\"\n";
    let gw = start(&up.url(), extra).await;
    let attack = "?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    assert_eq!(get(&gw, &format!("/watch{attack}")).await.status(), 200);
    assert_eq!(get(&gw, &format!("/raw{attack}")).await.status(), 200);
    assert_eq!(get(&gw, &format!("/other{attack}")).await.status(), 403);
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "rampart_inspection_findings_total{result=\"detected\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "rampart_inspection_findings_total{result=\"blocked\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn exclusions_skip_a_parameter_or_a_family_for_it() {
    let up = start_upstream().await;
    let extra = "[inspection]\nexclusions = [{ parameter = \"password\" }, { parameter = \"content\", families = [\"xss\"] }]";
    let gw = start(&up.url(), extra).await;
    assert_eq!(
        get(&gw, "/?password=%27%20or%201%3D1--").await.status(),
        200
    );
    assert_eq!(
        get(&gw, "/?content=%3Cscript%3Ex()%3C%2Fscript%3E")
            .await
            .status(),
        200
    );
    // Other families still apply to `content`, and other parameters are still inspected.
    assert_eq!(
        get(&gw, "/?content=..%2F..%2Fetc%2Fpasswd").await.status(),
        403
    );
    assert_eq!(
        get(&gw, "/?other=%3Cscript%3Ex()%3C%2Fscript%3E")
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn paranoia_and_threshold_are_per_route_settings() {
    let up = start_upstream().await;
    // `1 and 1` is a level-2 signal worth 3: level 1 passes it, level 2 at threshold 3 does not.
    let gw = start(&up.url(), "").await;
    assert_eq!(get(&gw, "/?q=1%20and%201").await.status(), 200);
    let strict = start(&up.url(), "[inspection]\nparanoia = 2\nthreshold = 3").await;
    assert_eq!(get(&strict, "/?q=1%20and%201").await.status(), 403);
}

#[tokio::test]
async fn inspection_blocks_feed_the_ban_rules() {
    let up = start_upstream().await;
    let extra = "trusted_proxies = [\"127.0.0.1/32\"]\n[bans]\nrules = [{ event = \"inspection_block\", count = 3, window = \"60s\", ban = \"60s\" }]";
    let gw = start(&up.url(), extra).await;
    let send = |path: &'static str| {
        client()
            .get(gw.url(path))
            .header("x-forwarded-for", "203.0.113.7")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(send("/?q=%3Cscript%3E").await.unwrap().status(), 403);
    }
    let banned = send("/?q=hello").await.unwrap();
    assert_eq!(banned.status(), 403);
    let body: serde_json::Value = banned.json().await.unwrap();
    assert_eq!(body["error"], "banned");
}

#[test]
fn invalid_inspection_settings_are_refused_with_their_place() {
    let err = rampart_gateway::Config::parse(
        "[inspection]\nparanoia = 7\n",
        Some(std::path::Path::new("rampart.toml")),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("rampart.toml:1:"), "{err}");
    assert!(err.ends_with("paranoia must be 1 to 4, not 7"), "{err}");
    let err = rampart_gateway::Config::parse(
        "[inspection]\nexclusions = [{ parameter = \"x\", rules = [99] }]\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("names rule 99, which does not exist"), "{err}");
    let err = rampart_gateway::Config::parse("[inspection]\nmode = \"loud\"\n", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("loud"), "{err}");
}
