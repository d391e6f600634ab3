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
    let profile_dir = profile_dir();
    assert!(
        build_binary(&profile_dir, "yunjian-agent", features),
        "building yunjian-agent with features {features:?} failed (for `libvirt`: is libvirt-dev installed?)"
    );
    profile_dir.join("yunjian-agent")
}

/// The directory of this test build's profile: `target/<profile>` (the test binary runs from
/// `target/<profile>/deps/<test>-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(std::path::Path::parent)
        .expect("a test binary under target/<profile>/deps")
        .to_path_buf()
}

/// `cargo build` the binary `name` of the workspace package of the same name, with `features`,
/// into the target directory holding `profile_dir`; whether the build succeeded.
fn build_binary(profile_dir: &std::path::Path, name: &str, features: &[&str]) -> bool {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    // the manifest of the tree under test: cargo sets the variable for the running test; the
    // value baked in at compile time may be another checkout's when target directories are
    // shared
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let manifest = package.join("../Cargo.toml");
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-p", name, "--bin", name])
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
    build.status().expect("cargo runs").success()
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

/// The `yunjian-aggregator` binary of this test build's profile, built into the same target
/// directory (as [`agent_binary`]). Panics when the build fails.
pub fn aggregator_binary() -> PathBuf {
    let profile_dir = profile_dir();
    assert!(
        build_binary(&profile_dir, "yunjian-aggregator", &[]),
        "building yunjian-aggregator failed"
    );
    profile_dir.join("yunjian-aggregator")
}

/// The `yunjian-aggregator` binary running as a child process on a config the test wrote: a
/// process that can be killed with SIGKILL (no shutdown path runs) and started again on the
/// same data directory and ports. Killed when dropped; its log (every start, appended) is
/// printed when the test fails.
#[derive(Debug)]
pub struct AggregatorProcess {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The dashboard / API / `/metrics` address.
    pub http: SocketAddr,
    /// The embedded broker's plain MQTT port.
    pub mqtt_port: u16,
}

impl AggregatorProcess {
    /// Write `cfg` as `dir/aggregator.toml` and start the binary `bin` on it; returns once the
    /// HTTP and MQTT ports accept connections. `cfg` must name fixed ports (e.g. from
    /// [`free_port`]) for both, so that a restart comes back where the peers look for it.
    pub fn start(bin: &std::path::Path, cfg: &AggregatorConfigFile, dir: &std::path::Path) -> Self {
        let config = dir.join("aggregator.toml");
        std::fs::write(&config, &cfg.toml).expect("write the aggregator's config");
        let mut p = AggregatorProcess {
            bin: bin.to_path_buf(),
            config,
            log: dir.join("aggregator.log"),
            child: None,
            http: cfg.http,
            mqtt_port: cfg.mqtt_port,
        };
        p.restart();
        p
    }

    /// Start (again, after [`Self::kill`]) and wait until both ports accept connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the aggregator is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the aggregator's log");
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // its log goes to standard output, a panic's message to standard error
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("the aggregator starts");
        self.child = Some(child);
        let start = Instant::now();
        for port in [self.http.port(), self.mqtt_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "the aggregator exited ({status}) while starting:\n{}",
                        self.log()
                    );
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the aggregator did not listen on {port} within 60 s:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: the process ends at once, between any two instructions; nothing of its own
    /// shutdown runs. Waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running (it has not exited on its own).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the aggregator logged so far, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AggregatorProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- aggregator log -----\n{}\n--------------------------",
                self.log()
            );
        }
    }
}

/// An aggregator config as the binary reads it (TOML), with the ports it listens on.
#[derive(Debug, Clone)]
pub struct AggregatorConfigFile {
    pub toml: String,
    pub http: SocketAddr,
    pub mqtt_port: u16,
}

impl AggregatorConfigFile {
    /// `cfg` with its HTTP and embedded-broker addresses set to free loopback ports.
    pub fn on_free_ports(cfg: &mut yunjian_aggregator::config::AggregatorConfig) -> Self {
        cfg.http_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        cfg.broker.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        AggregatorConfigFile {
            toml: toml::to_string(cfg).expect("the config as TOML"),
            http: cfg.http_listen,
            mqtt_port: cfg.broker.listen.port(),
        }
    }
}

/// The value of the unlabelled sample `name` on `/metrics` (read as the holder of `token`);
/// `None` when the aggregator does not answer or has no such sample.
pub async fn metric(addr: SocketAddr, token: &str, name: &str) -> Option<f64> {
    // `http_get` panics on a refused connection; a killed aggregator is an answer here
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let (status, body) = http_get(addr, token, "/metrics").await;
    if status != 200 {
        return None;
    }
    body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A TCP proxy between MQTT clients and a broker that the test can partition: while
/// partitioned, open connections stop carrying bytes either way (frozen, not closed, as when
/// a network path goes away) and new connections are accepted and never answered; healing
/// drops the frozen and held connections and forwards new ones again.
#[derive(Debug)]
pub struct TcpProxy {
    /// The port clients connect to instead of the broker's.
    pub port: u16,
    partitioned: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listen on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (partitioned, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::carry(client, upstream, rx.clone()));
            }
        });
        TcpProxy {
            port,
            partitioned,
            task,
        }
    }

    async fn carry(
        mut client: tokio::net::TcpStream,
        upstream: SocketAddr,
        mut partitioned: tokio::sync::watch::Receiver<bool>,
    ) {
        let cut = |p: &bool| *p;
        let whole = |p: &bool| !*p;
        if *partitioned.borrow() {
            // held until the partition heals, then dropped: the client has given up by then
            let _ = partitioned.wait_for(whole).await;
            return;
        }
        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let frozen = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
            r = partitioned.wait_for(cut) => r.is_ok(),
        };
        if frozen {
            let _ = partitioned.wait_for(whole).await;
        }
    }

    /// Cut the path: nothing passes until [`Self::heal`].
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Restore the path (frozen connections are dropped; new ones are forwarded).
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
