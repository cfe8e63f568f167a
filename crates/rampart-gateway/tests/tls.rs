//! TLS termination with rustls: HTTP/1.1 and HTTP/2 by ALPN, HSTS on TLS responses.

mod support;

use support::*;

#[tokio::test]
async fn tls_is_terminated_with_alpn_and_hsts() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let config_path = dir.path().join("rampart.toml");
    std::fs::write(
        &config_path,
        config_text(
            &up.url(),
            "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"",
        ),
    )
    .unwrap();
    let config = rampart_gateway::Config::load(&config_path).unwrap();
    let gw = start_gateway(config).await;
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{}/secure", gw.addr.port());

    for http2 in [false, true] {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([root.clone()])
            .resolve("localhost", gw.addr);
        if !http2 {
            builder = builder.http1_only();
        }
        let resp = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn a_missing_key_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    let config_path = dir.path().join("rampart.toml");
    std::fs::write(
        &config_path,
        config_text(
            "http://127.0.0.1:1",
            "[server.tls]\ncert = \"cert.pem\"\nkey = \"nokey.pem\"",
        ),
    )
    .unwrap();
    let config = rampart_gateway::Config::load(&config_path).unwrap();
    let err = rampart_gateway::Gateway::bind(config)
        .await
        .err()
        .expect("bind fails");
    let text = err.to_string();
    assert!(text.contains("nokey.pem"), "{text}");
    assert!(text.contains("private key"), "{text}");
}
