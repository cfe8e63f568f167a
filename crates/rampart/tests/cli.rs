//! The `rampart` binary end to end: init, check, serve with signals.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

/// `rampart check --config PATH`.
fn check(path: &Path) -> std::process::Output {
    rampart()
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_file_that_check_accepts_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    let out = rampart().arg("init").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# rampart.toml"));
    let out = check(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    std::fs::write(&path, "changed").unwrap();
    let again = rampart().arg("init").arg(&path).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "changed",
        "nothing lost"
    );
}

#[test]
fn check_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:8080\"\n\n[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n").unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5:17: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("credentials"), "{stderr}");

    std::fs::write(&path, "[server]\nlisten = 8080\n").unwrap();
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:2:10: "), "{stderr}");

    let out = rampart()
        .args(["check", "--config", "/nonexistent/r.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/r.toml: cannot read"));
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A minimal keep-alive HTTP/1.1 upstream that answers `200 ok` to every request head.
async fn tiny_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Served {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = rampart()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Served { child, lines }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn write_config(
    path: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    extra: &str,
) {
    std::fs::write(
        path,
        format!("[server]\nlisten = \"{listen}\"\nadmin = \"{admin}\"\n{extra}\n[upstreams.default]\nservers = [\"http://{upstream}\"]\n"),
    )
    .unwrap();
}

#[tokio::test]
async fn serve_logs_json_reloads_on_sighup_and_drains_on_sigterm() {
    let upstream = tiny_upstream().await;
    let (listen, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rampart.toml");
    write_config(&config, listen, admin, upstream, "");
    let served = Served::start(&["--config", config.to_str().unwrap()]);
    served.wait_for_line("rampart gateway serving").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let resp = client
        .get(format!("http://{listen}/v1/chat?api_key=sk-secret-value"))
        .header("authorization", "Bearer top-secret-token")
        .header("cookie", "session=cookie-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let line = served.wait_for_line(&rid).await;
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["path"], "/v1/chat?api_key=REDACTED");
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["decision"], "proxied");
    assert_eq!(entry["upstream"], format!("http://{upstream}"));
    for key in [
        "timestamp",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "route",
    ] {
        assert!(entry.get(key).is_some(), "{key} missing in {line}");
    }
    let all = served.lines.lock().unwrap().join("\n");
    for secret in ["top-secret-token", "cookie-secret", "sk-secret-value"] {
        assert!(!all.contains(secret), "{secret} was logged");
    }

    // A bad file on SIGHUP: refused, logged, the old config keeps serving.
    std::fs::write(&config, "[server\n").unwrap();
    served.signal("HUP");
    let refused = served.wait_for_line("reload refused").await;
    assert!(refused.contains("rampart.toml:1:"), "{refused}");
    let resp = client
        .get(format!("http://{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A good file: applied (here, a new security header).
    write_config(
        &config,
        listen,
        admin,
        upstream,
        "[security_headers]\nextra = { \"X-Reloaded\" = \"yes\" }",
    );
    served.signal("HUP");
    served.wait_for_line("configuration reloaded").await;
    let resp = client
        .get(format!("http://{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-reloaded"], "yes");

    served.signal("TERM");
    let mut served = served;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_runs_on_embedded_defaults_with_flags() {
    let upstream = tiny_upstream().await;
    let (listen, admin) = (free_port(), free_port());
    let served = Served::start(&[
        "--upstream",
        &format!("http://{upstream}"),
        "--listen",
        &listen.to_string(),
        "--admin",
        &admin.to_string(),
    ]);
    served.wait_for_line("rampart gateway serving").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .get(format!("http://{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let ready = client
        .get(format!("http://{admin}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[test]
fn serve_with_a_bad_upstream_flag_exits_with_a_clear_error() {
    let out = rampart()
        .args([
            "serve",
            "--upstream",
            "localhost:8000",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http://"), "{stderr}");
}
