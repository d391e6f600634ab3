//! Helpers for the cross-crate scenarios in `tests/`: real peers as child processes and a
//! minimal HTTP client for the aggregator's JSON API.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod ipmi_sim;
pub mod postgres;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Find a tool the scenario needs. Missing: fail under CI (`CI` set), otherwise print a loud
/// SKIP notice and return `None` so the caller returns early.
pub fn require_tool(candidates: &[&str], package: &str) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| {
        p.is_absolute() && p.exists()
            || std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).any(|d| d.join(p).exists()))
                .unwrap_or(false)
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{candidates:?} not found and CI is set: `apt-get install {package}`"
        );
        eprintln!("\n***** SKIP: {candidates:?} not found; `apt-get install {package}` to run this scenario *****\n");
    }
    found
}

/// A Mosquitto broker on a loopback port, killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    bin: PathBuf,
    conf: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Start on a free port; `None` when mosquitto is missing outside CI.
    pub fn start() -> Option<Self> {
        let bin = require_tool(&["/usr/sbin/mosquitto", "mosquitto"], "mosquitto")?;
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
            ),
        )
        .expect("write mosquitto.conf");
        let mut m = Mosquitto {
            child: None,
            bin,
            conf,
            port,
            _dir: dir,
        };
        m.restart();
        Some(m)
    }

    /// Start (again) on the same port and wait until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until something accepts TCP connections on the loopback port.
pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Users for a scenario, written into the storage of `cfg` before the aggregator starts (as
/// `yunjian-aggregator user add` would): `(name, role, unit)` each; returns each one's API
/// token (`Authorization: Bearer …`), in order.
pub fn seed_users(
    cfg: &yunjian_aggregator::config::AggregatorConfig,
    people: &[(&str, yunjian_aggregator_core::identity::Role, Option<&str>)],
) -> Vec<String> {
    use yunjian_aggregator_core::store::WriteBatch;
    std::fs::create_dir_all(&cfg.data_dir).expect("data dir");
    let mut batch = WriteBatch::default();
    let mut bearers = Vec::new();
    for (name, role, unit) in people {
        let (user, bearer, token) =
            yunjian_aggregator::service::identity::test_user(name, *role, *unit);
        batch.users.push(user);
        batch.tokens.push(token);
        bearers.push(bearer);
    }
    // on a thread of its own: the PostgreSQL client is blocking and tests call this from
    // async code
    let url = cfg.storage_url();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut db = url.open().expect("open storage");
            db.migrate().expect("migrate storage");
            db.write(&batch).expect("write users");
        })
        .join()
        .expect("seeding users")
    });
    bearers
}

/// `GET path` over HTTP/1.1 as the holder of `token`; returns the status and the body.
pub async fn http_get(addr: SocketAddr, token: &str, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await
}

/// One request with an optional bearer token and any body; returns the status and the body
/// parsed as JSON (a JSON string holding the text when it is not JSON).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let (status, body) = exchange(addr, req).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Send one `Connection: close` request; return the status and the (de-chunked) body.
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&request).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `POST path` with a JSON body as the holder of `token`; returns the status and the parsed
/// JSON answer.
pub async fn post_json(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let payload = body.to_string();
    http_request(
        addr,
        "POST",
        path,
        Some(token),
        "application/json",
        payload.as_bytes(),
    )
    .await
}

/// A tiny HTTP server that records every POST body it receives (a webhook receiver).
#[derive(Debug)]
pub struct WebhookSink {
    pub addr: SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl WebhookSink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // read headers, then Content-Length bytes of body
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if body.len() >= len {
                                if let Ok(v) = serde_json::from_str(&body[..len]) {
                                    store.lock().unwrap().push(v);
                                }
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                                    .await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        WebhookSink { addr, received }
    }

    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

/// `GET path` parsed as JSON.
/// `GET path` as the holder of `token`, expecting 200 and JSON.
pub async fn get_json(addr: SocketAddr, token: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, token, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Poll `check` every 100 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `yunjian-agent` binary of this test build's profile, built with `features` into the
/// same target directory (a test crate cannot depend on another package's binary). Panics with
/// the cause when the build fails.
pub fn agent_binary(features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test binary under target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-p", "yunjian-agent", "--bin", "yunjian-agent"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(profile_dir.parent().expect("the target directory"));
    if !features.is_empty() {
        build.arg("--features").arg(features.join(","));
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(
        status.success(),
        "building yunjian-agent with features {features:?} failed (for `libvirt`: is libvirt-dev installed?)"
    );
    profile_dir.join("yunjian-agent")
}

/// Write `dir/agent.toml` for a host agent `node` on the broker at `127.0.0.1:broker_port` with
/// its libvirt connection to `uri` (key `dir/agent.key`, buffer `dir/buffer`, quick reconnects,
/// antivirus off, guest lists every second). Returns the file's path.
pub fn write_hypervisor_agent_config(
    dir: &std::path::Path,
    node: &str,
    broker_port: u16,
    uri: &str,
) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = \"{node}\"
role = \"host\"
interval = \"1s\"
key_file = \"{key}\"

[mqtt]
host = \"127.0.0.1\"
port = {broker_port}
backoff_min_ms = 50
backoff_max_ms = 500

[buffer]
dir = \"{buffer}\"

[antivirus]
enabled = false

[hypervisor]
enabled = true
uri = \"{uri}\"
shutdown_timeout = \"2s\"
guests_interval = \"1s\"
",
            key = dir.join("agent.key").display(),
            buffer = dir.join("buffer").display(),
        ),
    )
    .expect("write the agent config");
    config
}
