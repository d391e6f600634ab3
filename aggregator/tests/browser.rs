//! The dashboard in a real headless Chromium: serve a filled fleet on 127.0.0.1:0, open the
//! page, let its script take the live SSE stream, and assert on the DOM it rendered, before and
//! after the fleet changes.
//!
//! Each page's script and styles load from `/assets/` under its Content Security Policy; a test
//! fails if the page logged a violation or a failed asset load (`Log.entryAdded`).
//!
//! Chromium is driven over the DevTools protocol in real time rather than with
//! `--dump-dom --virtual-time-budget`: virtual time stands still while a fetch is pending, and
//! the event stream is a fetch that never ends, so a page with a live stream never finishes its
//! budget.
//!
//! Every page needs a signed-in user: one test signs in through the real sign-in page (its
//! session cookie and CSRF token then carry the page's writes); the others send an API token
//! with every request of the page (`Network.setExtraHTTPHeaders`). Two tests check what a
//! `unit` user and an `auditor` are offered.
//!
//! Needs `chromium` on PATH (Debian: `apt-get install chromium`). Without it the test prints a
//! SKIP line, or fails when `CI` is set.
//!
//! The README picture is made by an ignored test (install `fonts-noto-cjk` first, or the Chinese
//! shows as boxes):
//! `cargo test -p yunjian-aggregator --test browser -- --ignored readme_screenshot`
//! writes `docs/dashboard.png`.

use base64::Engine;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tungstenite::{Message, WebSocket};
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::service::identity::TEST_PASSWORD;
use yunjian_aggregator::web::session::Auth;
use yunjian_aggregator::web::{serve, AppState};
use yunjian_aggregator_core::fleet::{Fleet, SharedFleet};
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_protocol::{
    Body, DiskSample, Envelope, GuestView, Hello, Inventory, Memory, NetSample, Report, Role,
    Status,
};

const GIB: u64 = 1024 * 1024;

/// What one node reports.
struct Spec<'a> {
    id: &'a str,
    hostname: &'a str,
    role: Role,
    rack: Option<&'a str>,
    /// A VM's SMBIOS UUID.
    uuid: Option<&'a str>,
    cpu: f64,
    mem: f64,
    disk: f64,
    rx_bps: u64,
    tx_bps: u64,
    cores: u16,
    mem_gib: u64,
    /// Host's guest list (domain UUIDs).
    guests: Vec<String>,
    /// Last message this long before now.
    quiet_ms: u64,
    online: bool,
}

impl<'a> Spec<'a> {
    fn new(id: &'a str, role: Role, cpu: f64, mem: f64, disk: f64) -> Self {
        Spec {
            id,
            hostname: id,
            role,
            rack: None,
            uuid: None,
            cpu,
            mem,
            disk,
            rx_bps: 12_500_000,
            tx_bps: 3_200_000,
            cores: if role == Role::Host { 64 } else { 8 },
            mem_gib: if role == Role::Host { 512 } else { 16 },
            guests: vec![],
            quiet_ms: 2_000,
            online: true,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn add(fleet: &mut Fleet, s: Spec) {
    let at = now_ms() - s.quiet_ms;
    let mem_total = s.mem_gib * GIB;
    let disk_total = 500 * GIB;
    let bodies = [
        Body::Hello(Hello {
            agent_version: "0.1.0".into(),
            role: s.role,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        }),
        Body::Inventory(Inventory {
            hostname: s.hostname.into(),
            role: s.role,
            os: "openEuler 22.03 LTS".into(),
            kernel: "5.10.0".into(),
            cpu_model: "Kunpeng 920".into(),
            cpu_cores: s.cores,
            mem_total_kib: mem_total,
            disks: vec![],
            nics: vec!["eth0".into()],
            machine_id: format!("mid-{}", s.id),
            smbios_uuid: s.uuid.map(Into::into),
            rack: s.rack.map(Into::into),
        }),
        Body::Report(Report {
            cpu_busy: (s.cpu * 100.0) as u16,
            per_core: vec![],
            load: [0; 3],
            mem: Memory {
                total_kib: mem_total,
                used_kib: (mem_total as f64 * s.mem / 100.0) as u64,
                ..Memory::default()
            },
            disks: vec![DiskSample {
                mount: "/".into(),
                total_kib: disk_total,
                used_kib: (disk_total as f64 * s.disk / 100.0) as u64,
                read_bps: 0,
                write_bps: 0,
            }],
            nets: vec![NetSample {
                name: "eth0".into(),
                rx_bytes: 0,
                tx_bytes: 0,
                rx_bps: s.rx_bps,
                tx_bps: s.tx_bps,
            }],
            uptime_s: 86_400,
            failed: vec![],
        }),
        Body::Guests(
            s.guests
                .iter()
                .map(|uuid| GuestView {
                    uuid: uuid.clone(),
                    name: uuid.clone(),
                    vcpus: 8,
                    mem_kib: 16 * GIB,
                    disk_kib: 100 * GIB,
                    running: true,
                })
                .collect(),
        ),
    ];
    fleet.apply(Envelope::new(s.id, 0, at, Body::Status(Status::Online)), at);
    for (seq, body) in (1..).zip(bodies) {
        fleet.apply(Envelope::new(s.id, seq, at, body), at);
    }
    if !s.online {
        fleet.apply(
            Envelope::new(s.id, 0, at, Body::Status(Status::Offline)),
            at,
        );
    }
}

/// The `chromium` binary, or `None` after a loud SKIP line (a failure under `CI`).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not on PATH: the dashboard browser test needs it (apt-get install chromium)"
        );
        // straight to stderr: the test harness captures eprintln! of passing tests
        let _ = writeln!(
            std::io::stderr(),
            "\n==== SKIP: chromium not on PATH, the dashboard was NOT tested in a browser \
             (apt-get install chromium) ====\n"
        );
    }
    found
}

/// The web layer on 127.0.0.1:0 over `fleet`, on its own runtime (stopped when dropped).
struct Served {
    url: String,
    fleet: SharedFleet,
    changes: watch::Sender<u64>,
    /// The users: `auth.test_bearer(…)` adds one and gives their API token.
    auth: Auth,
    _rt: Runtime,
}

fn serve_fleet(fleet: Fleet) -> Served {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let fleet: SharedFleet = Arc::new(RwLock::new(fleet));
    let (changes, changes_rx) = watch::channel(0u64);
    let state = AppState::new(fleet.clone(), Arc::new(Metrics::default()), changes_rx);
    let auth = state.auth.clone();
    rt.spawn(serve(listener, state, std::future::pending()));
    Served {
        url,
        fleet,
        changes,
        auth,
        _rt: rt,
    }
}

/// How long to wait for Chromium to start, and for the page to reach a state.
const WAIT: Duration = Duration::from_secs(30);

/// Headless Chromium on one page, driven over the DevTools protocol (a WebSocket).
struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// What the page logged (`Log.entryAdded`): CSP violations, failed loads.
    log: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(bin: &Path, url: &str, extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let stderr = profile.path().join("stderr.log");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        match devtools_page(&mut child, profile.path()) {
            Ok(ws) => {
                let mut browser = Browser {
                    child,
                    ws,
                    next_id: 0,
                    log: Vec::new(),
                    _profile: profile,
                };
                // replays what was logged so far, then reports each new entry
                browser.call("Log.enable", json!({}));
                browser
            }
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(3000)..];
                panic!("cannot drive chromium: {why}; its stderr ends with:\n{tail}");
            }
        }
    }

    /// Launch on a blank page, have the page send `Authorization: Bearer {token}` with every
    /// request (documents, assets, fetches, the event stream), then open `url` and wait until
    /// it has loaded.
    fn launch_with_token(bin: &Path, url: &str, token: &str, extra: &[&str]) -> Browser {
        let mut browser = Browser::launch(bin, "about:blank", extra);
        browser.call("Network.enable", json!({}));
        browser.call(
            "Network.setExtraHTTPHeaders",
            json!({ "headers": { "Authorization": format!("Bearer {token}") } }),
        );
        browser.call("Page.navigate", json!({ "url": url }));
        // loaded, its styles included (the tests read computed styles)
        browser.wait_for(
            "the page loaded",
            &format!(
                "location.href === {} && document.readyState === 'complete'",
                json!(url)
            ),
        );
        browser
    }

    /// Sign in on the sign-in page the browser was sent to, as a person would: fill in the
    /// form and submit it. The page then goes on to where it was asked for.
    fn sign_in(&mut self, name: &str, password: &str) {
        self.wait_for(
            "the sign-in page",
            // complete: its script is listening for the form's submission
            "location.pathname === '/login' && document.readyState === 'complete'",
        );
        self.eval(&format!(
            "document.getElementById('name').value = {name}; \
             document.getElementById('password').value = {password}; \
             document.getElementById('login').requestSubmit(); true",
            name = json!(name),
            password = json!(password),
        ));
    }

    /// Send one DevTools command and return its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params) {
            Ok(result) => result,
            Err(reply) => panic!("{method}: {reply}"),
        }
    }

    /// Send one DevTools command: its result, or the whole reply when it is an error.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(request.to_string())).unwrap();
        loop {
            let mut reply = match self.ws.read().unwrap() {
                Message::Text(text) => serde_json::from_str::<Value>(&text).unwrap(),
                Message::Close(frame) => panic!("DevTools closed the WebSocket: {frame:?}"),
                _ => continue,
            };
            if reply["method"] == "Log.entryAdded" {
                self.log.push(reply["params"]["entry"].take());
                continue;
            }
            // other events (every request, with `Network.enable`) are not waited for
            if reply["id"] == id {
                if reply.get("error").is_some() {
                    return Err(reply);
                }
                return Ok(reply["result"].take());
            }
        }
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    fn eval(&mut self, expression: &str) -> Value {
        let mut r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].take()
    }

    /// Poll until the expression is `true`; on timeout, fail with the page as it is.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let params = json!({ "expression": expression, "returnByValue": true });
            match self.try_call("Runtime.evaluate", params) {
                Ok(r) if r["result"]["value"] == Value::Bool(true) => break,
                Ok(_) => {}
                // the page is navigating (a click on a link): its next document answers
                Err(reply) if reply.to_string().contains("navigated or closed") => {}
                Err(reply) => panic!("Runtime.evaluate: {reply}"),
            }
            if Instant::now() > deadline {
                panic!(
                    "the page never showed {what} ({expression}):\n{}",
                    self.html()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn html(&mut self) -> String {
        let html = self.eval("document.documentElement.outerHTML");
        html.as_str().unwrap().to_string()
    }

    fn screenshot_png(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }

    /// Fail if the page broke its Content Security Policy (an inline script or style, a
    /// foreign source) or could not load one of its `/assets/`.
    fn assert_no_blocked_content(&mut self) {
        // a round trip, so entries logged until now have arrived
        self.eval("document.readyState");
        let blocked: Vec<&Value> = self
            .log
            .iter()
            .filter(|e| {
                let text = e["text"].as_str().unwrap_or_default();
                let url = e["url"].as_str().unwrap_or_default();
                text.contains("Content Security Policy") || url.contains("/assets/")
            })
            .collect();
        assert!(blocked.is_empty(), "the page logged {blocked:#?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connect to the page target of a Chromium started with `--remote-debugging-port=0`.
fn devtools_page(child: &mut Child, profile: &Path) -> Result<WebSocket<TcpStream>, String> {
    let deadline = Instant::now() + WAIT;
    let pause = || std::thread::sleep(Duration::from_millis(100));
    // Chromium writes the port it picked to the profile directory.
    let port = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("chromium exited early ({status})"));
        }
        let text = std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap_or_default();
        if let Some(port) = text.lines().next().and_then(|l| l.parse::<u16>().ok()) {
            break port;
        }
        if Instant::now() > deadline {
            return Err("no DevToolsActivePort file".into());
        }
        pause();
    };
    let ws_url = loop {
        let list = http_get(port, "/json/list")?;
        let targets: Value = serde_json::from_str(&list).map_err(|e| format!("{e}: {list}"))?;
        // ws://127.0.0.1:PORT/devtools/page/ID
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str());
        if let Some(url) = page {
            break url.to_string();
        }
        if Instant::now() > deadline {
            return Err(format!("no page target in {list}"));
        }
        pause();
    };
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let (ws, _) = tungstenite::client(ws_url.as_str(), stream)
        .map_err(|e| format!("WebSocket upgrade to {ws_url} failed: {e}"))?;
    Ok(ws)
}

/// GET with a `Content-Length` reply (Chromium keeps the connection open after it).
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .ok_or_else(|| format!("no Content-Length in {head}"))?
                .map_err(|e| e.to_string())?;
            if body.len() >= length {
                return Ok(body.to_string());
            }
        }
        let mut buf = [0u8; 16 * 1024];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed mid-reply: {text}"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The page's node rows, in order.
const ROWS: &str =
    "[...document.querySelectorAll('tr[data-node]')].map(r => r.dataset.node).join(',')";

/// The serialized `<tr>` of a node and its position in the page.
fn row<'a>(dom: &'a str, node: &str) -> (usize, &'a str) {
    let at = dom
        .find(&format!("data-node=\"{node}\""))
        .unwrap_or_else(|| panic!("no row for {node} in the rendered page:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap();
    let end = start + dom[start..].find("</tr>").unwrap();
    (start, &dom[start..end])
}

fn test_fleet() -> Fleet {
    let mut fleet = Fleet::new();
    add(
        &mut fleet,
        Spec {
            rack: Some("R1"),
            hostname: "hz-zwy-a01",
            guests: vec!["uuid-a1".into(), "uuid-a2".into()],
            ..Spec::new("host-a", Role::Host, 35.0, 40.0, 20.0)
        },
    );
    add(
        &mut fleet,
        Spec {
            rack: Some("R2"),
            ..Spec::new("host-b", Role::Host, 50.0, 90.0, 30.0)
        },
    );
    add(
        &mut fleet,
        Spec {
            rack: Some("R2"),
            online: false,
            ..Spec::new("host-off", Role::Host, 0.0, 5.0, 5.0)
        },
    );
    add(
        &mut fleet,
        Spec {
            uuid: Some("UUID-A1"),
            hostname: "zwfw-web-01",
            ..Spec::new("vm-a1", Role::Guest, 10.0, 75.0, 40.0)
        },
    );
    add(
        &mut fleet,
        Spec {
            uuid: Some("uuid-a2"),
            // agent-supplied text must come out as text, never as markup
            hostname: "<img src=x onerror=alert(1)>",
            ..Spec::new("vm-a2", Role::Guest, 10.0, 20.0, 20.0)
        },
    );
    add(
        &mut fleet,
        Spec {
            uuid: Some("uuid-nobody"),
            ..Spec::new("vm-orphan", Role::Guest, 10.0, 20.0, 20.0)
        },
    );
    fleet
}

#[test]
fn dashboard_renders_the_fleet_live_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_fleet(test_fleet());
    let ops = served.auth.test_bearer("ops-1", UserRole::Ops, None);
    let mut page = Browser::launch_with_token(&bin, &served.url, &ops, &[]);
    page.wait_for(
        "the first frame of the live stream",
        "document.querySelector('#conn.live') !== null && \
         document.querySelector('tr[data-node=\"host-a\"]') !== null",
    );
    let dom = page.html();

    assert!(dom.starts_with("<html lang=\"zh-CN\">"), "{dom}");
    for total in [
        "id=\"t-hosts\">3<",
        "id=\"t-guests\">3<",
        "id=\"t-online\">5<",
        "id=\"t-silent\">0<",
        "id=\"t-offline\">1<",
    ] {
        assert!(dom.contains(total), "missing {total} in\n{dom}");
    }
    for label in [
        "云鉴 · 政务云资源监管",
        "物理服务器",
        "虚拟机",
        "在线",
        "静默",
        "离线",
        "机柜 R1",
        "机柜 R2",
        "未关联宿主机",
        "CPU",
        "内存",
        "磁盘",
        "网络",
        "第十九条",
    ] {
        assert!(dom.contains(label), "missing label {label} in\n{dom}");
    }

    // racks in order, each host followed by its VMs, unattached VMs last
    assert_eq!(
        page.eval(ROWS),
        "host-a,vm-a1,vm-a2,host-b,host-off,vm-orphan"
    );
    let (_, a_row) = row(&dom, "host-a");
    let (_, a1_row) = row(&dom, "vm-a1");
    let (_, b_row) = row(&dom, "host-b");
    let (_, off_row) = row(&dom, "host-off");
    let (_, orphan_row) = row(&dom, "vm-orphan");
    assert!(
        a_row.contains("hz-zwy-a01") && a_row.contains("2 台虚拟机"),
        "{a_row}"
    );
    assert!(a1_row.contains("data-host=\"host-a\"") && a1_row.contains("zwfw-web-01"));
    assert!(!orphan_row.contains("data-host"), "{orphan_row}");

    // gauges: amber over the 70% line, red over 85%, plain below; the line itself drawn
    assert!(
        a1_row.contains("class=\"gauge warn\" data-metric=\"mem\""),
        "{a1_row}"
    );
    assert!(a1_row.contains("75.0%"), "{a1_row}");
    assert!(
        b_row.contains("class=\"gauge crit\" data-metric=\"mem\""),
        "{b_row}"
    );
    assert!(
        a_row.contains("class=\"gauge\" data-metric=\"mem\""),
        "{a_row}"
    );
    let mark_left = page.eval(
        "getComputedStyle(document.querySelector('tr[data-node=\"vm-a1\"] .gauge .mark')).left",
    );
    let gauge_width = page
        .eval("getComputedStyle(document.querySelector('tr[data-node=\"vm-a1\"] .gauge')).width");
    let px = |v: &Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches("px")
            .parse::<f64>()
            .unwrap()
    };
    assert!(
        (px(&mark_left) / px(&gauge_width) - 0.70).abs() < 0.02,
        "marker at {mark_left} of {gauge_width}"
    );
    assert!(off_row.contains("离线") && off_row.contains("class=\"host offline\""));
    assert!(a_row.contains("12.5 MB/s / 3.20 MB/s"), "{a_row}");
    assert!(a_row.contains("秒前"), "last-seen age: {a_row}");

    // agent text stays text
    let (_, a2_row) = row(&dom, "vm-a2");
    assert!(
        a2_row.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{a2_row}"
    );
    assert_eq!(page.eval("document.querySelectorAll('img').length"), 0);

    // the fleet changes: the page follows without a reload
    add(
        &mut served.fleet.write().unwrap(),
        Spec {
            rack: Some("R3"),
            ..Spec::new("host-late", Role::Host, 20.0, 88.0, 10.0)
        },
    );
    served.changes.send_modify(|v| *v += 1);
    page.wait_for(
        "a host added after load",
        "document.getElementById('t-hosts').textContent === '4' && document.querySelector(\
         'tr[data-node=\"host-late\"] .gauge.crit[data-metric=\"mem\"]') !== null",
    );
    assert!(page.html().contains("机柜 R3"));

    // the operator's filters
    let filter = |q: &str| {
        format!(
            "(() => {{ const f = document.getElementById('filter'); f.value = '{q}'; \
             f.dispatchEvent(new Event('input')); return {ROWS}; }})()"
        )
    };
    assert_eq!(page.eval(&filter("zwfw")), "host-a,vm-a1");
    assert_eq!(page.eval(&filter("R2")), "host-b,host-off");
    assert_eq!(
        page.eval(&filter("")).as_str().unwrap().split(',').count(),
        7
    );
    let only_alerts = format!(
        "(() => {{ const c = document.getElementById('only-alert'); c.checked = true; \
         c.dispatchEvent(new Event('change')); return {ROWS}; }})()"
    );
    assert_eq!(
        page.eval(&only_alerts),
        "host-a,vm-a1,host-b,host-off,host-late"
    );
    // the script and styles came from /assets/ under the page's policy, nothing was refused
    page.assert_no_blocked_content();
}

/// A realistic fleet for the README picture: 3 racks × 6 hosts × 4 VMs; in the first rack
/// (what the picture shows) a busy host, a few VMs over the 70% line, a silent VM and an
/// offline host with its VMs.
fn demo_fleet() -> Fleet {
    const APPS: [&str; 8] = [
        "zwfw-portal",
        "oa-app",
        "gjj-db",
        "ybj-api",
        "bdc-gis",
        "sjzx-etl",
        "12345-hotline",
        "dzzz-sign",
    ];
    // small deterministic generator: the picture is the same on every run
    let mut seed = 0x2024_u64;
    let mut next = move |lo: f64, hi: f64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((seed >> 33) as f64 / (1u64 << 31) as f64)
    };
    // (cpu, mem, disk): calm, or over the line
    let mut figures = |busy: bool| match busy {
        false => (next(3.0, 60.0), next(25.0, 66.0), next(15.0, 65.0)),
        true => (next(72.0, 95.0), next(70.0, 91.0), next(40.0, 80.0)),
    };
    let mut fleet = Fleet::new();
    for (r, rack) in ["A01", "A02", "B01"].iter().enumerate() {
        for h in 1..=6 {
            let host = format!("hz-{}-{h:02}", rack.to_lowercase());
            let hostname = format!("zwy-{}-{h:02}.hz.gov", rack.to_lowercase());
            let uuids: Vec<String> = (1..=4).map(|v| format!("{host}-uuid-{v}")).collect();
            let online = (r, h) != (0, 3);
            let (cpu, mem, disk) = figures((r + h) % 4 == 2);
            add(
                &mut fleet,
                Spec {
                    hostname: &hostname,
                    rack: Some(rack),
                    guests: uuids.clone(),
                    online,
                    rx_bps: (cpu * 4e6) as u64,
                    tx_bps: (mem * 1e6) as u64,
                    ..Spec::new(&host, Role::Host, cpu, mem, disk)
                },
            );
            for (v, uuid) in uuids.iter().enumerate() {
                let vm = format!("{host}-vm{}", v + 1);
                let app = APPS[(r * 6 + h + v) % APPS.len()];
                let vm_name = format!("{app}-{:02}", h * 4 + v);
                let (cpu, mem, disk) = figures((r * 24 + h * 4 + v) % 7 == 3);
                add(
                    &mut fleet,
                    Spec {
                        hostname: &vm_name,
                        uuid: Some(uuid),
                        online,
                        quiet_ms: if (r, h, v) == (0, 1, 2) {
                            95_000
                        } else {
                            3_000
                        },
                        rx_bps: (cpu * 3e5) as u64,
                        tx_bps: (disk * 1e5) as u64,
                        ..Spec::new(&vm, Role::Guest, cpu, mem, disk)
                    },
                );
            }
        }
    }
    fleet.sweep_silence(now_ms());
    fleet
}

#[test]
#[ignore = "writes docs/dashboard.png for the README; run with --ignored"]
fn readme_screenshot() {
    let Some(bin) = chromium() else { return };
    let served = serve_fleet(demo_fleet());
    let ops = served.auth.test_bearer("ops-1", UserRole::Ops, None);
    let mut page = Browser::launch_with_token(
        &bin,
        &served.url,
        &ops,
        &[
            "--window-size=1400,900",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ],
    );
    // the picture is exactly the window size, whatever space headless keeps for browser UI
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
    );
    page.wait_for(
        "the first frame of the live stream",
        "document.querySelector('#conn.live') !== null",
    );
    let png = page.screenshot_png();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("wrote {}", path.display());
}

const CAP_VM: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// The capacity and alarm pages over a pool at 72% memory whose alarm has been raised, and a
/// unit system at its CPU peak; writes (acknowledgements) are collected.
struct CapacityServed {
    url: String,
    /// The users: `auth.test_bearer(…)` adds one (password [`TEST_PASSWORD`]).
    auth: Auth,
    policy: yunjian_aggregator_core::policy::SharedPolicy,
    stored: Arc<std::sync::Mutex<Vec<yunjian_aggregator_core::store::WriteBatch>>>,
    fleet: yunjian_aggregator_core::fleet::SharedFleet,
    register: yunjian_aggregator_core::register::SharedRegister,
    _rt: Runtime,
}

fn serve_capacity() -> CapacityServed {
    use yunjian_aggregator_core::register::{Pool, Register, Resources, ServerType, VmAllocation};
    let mut fleet = Fleet::new();
    for id in ["cap-h1", "cap-h2"] {
        let guests = if id == "cap-h1" {
            vec![CAP_VM.to_string()]
        } else {
            vec![]
        };
        add(
            &mut fleet,
            Spec {
                rack: Some("R1"),
                guests,
                ..Spec::new(id, Role::Host, 30.0, 72.0, 40.0)
            },
        );
    }
    add(
        &mut fleet,
        Spec::new("cap-h3", Role::Host, 10.0, 10.0, 10.0),
    );
    add(
        &mut fleet,
        Spec {
            uuid: Some(CAP_VM),
            ..Spec::new("cap-vm", Role::Guest, 92.0, 40.0, 20.0)
        },
    );
    let register = Register {
        vms: vec![VmAllocation {
            zone: "政务外网".into(),
            developer: "某开发商".into(),
            unit: "市数据局".into(),
            // text from the register stays text on the page
            system: "一网通办<img src=x>".into(),
            subsystem: String::new(),
            server_type: ServerType::Web,
            owner: String::new(),
            email: String::new(),
            phone: String::new(),
            vcpus: 8,
            mem_gb: 16,
            sys_disk_gb: 50,
            data_disk_gb: 100,
            os: String::new(),
            clustered: false,
            cluster_group: String::new(),
            note: String::new(),
            uuid: Some(CAP_VM.into()),
            term: Default::default(),
        }],
        pools: vec![Pool {
            name: "甲".into(),
            hosts: vec!["cap-h1".into(), "cap-h2".into()],
            reserved: Resources::default(),
            overcommit: Resources {
                vcpus: 1.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 10_000.0,
        }],
        ..Register::default()
    };
    // no hold time: the alarms are raised on the first evaluation
    let mut profile = yunjian_aggregator_core::policy::Profile::default();
    profile.capacity.thresholds.hold = Duration::ZERO;
    profile.peak.thresholds.hold = Duration::ZERO;
    let mut engine = yunjian_aggregator_core::policy::Engine::new(
        yunjian_aggregator_core::policy::rules::build(&profile, &[]),
        yunjian_aggregator_core::alarms::AlarmBook::new(),
    );
    engine.evaluate(&yunjian_aggregator_core::policy::Context {
        fleet: &fleet,
        register: &register,
        profile: &profile,
        now_ms: now_ms(),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (_, changes_rx) = watch::channel(0u64);
    let mut state = AppState::new(
        Arc::new(RwLock::new(fleet)),
        Arc::new(Metrics::default()),
        changes_rx,
    );
    state.register = Arc::new(RwLock::new(register));
    state.policy = Arc::new(std::sync::Mutex::new(engine));
    state.profile = Arc::new(profile);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<yunjian_aggregator::ingest::Pending>(16);
    state.store = yunjian_aggregator::ingest::StoreHandle::new(tx);
    let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = stored.clone();
    rt.spawn(async move {
        while let Some(p) = rx.recv().await {
            sink.lock().unwrap().push(p.batch);
            if let Some(committed) = p.committed {
                let _ = committed.send(());
            }
        }
    });
    let policy = state.policy.clone();
    let auth = state.auth.clone();
    let (fleet, register) = (state.fleet.clone(), state.register.clone());
    rt.spawn(serve(listener, state, std::future::pending()));
    CapacityServed {
        url,
        auth,
        policy,
        stored,
        fleet,
        register,
        _rt: rt,
    }
}

#[test]
fn capacity_and_alarm_pages_work_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_capacity();
    let id = {
        let engine = served.policy.lock().unwrap();
        let key = yunjian_aggregator_core::alarms::AlarmKey {
            rule: "capacity".into(),
            subject: "pool:甲/memory/used".into(),
        };
        engine.book().get_open(&key).expect("the pool's alarm").id
    };

    // not signed in, the capacity page sends the browser to sign in; then it comes back
    served.auth.test_bearer("ops-1", UserRole::Ops, None);
    let mut page = Browser::launch(&bin, &format!("{}capacity", served.url), &[]);
    page.sign_in("ops-1", TEST_PASSWORD);
    page.wait_for(
        "the capacity page after signing in",
        "location.pathname === '/capacity' && document.getElementById('who') !== null",
    );
    assert_eq!(
        page.eval("document.getElementById('who').dataset.name"),
        "ops-1"
    );

    // the capacity page: bars against the 70% line, the alarm's state
    let pool = "section[data-scope=\\\"pool:甲\\\"]";
    page.wait_for(
        "the pool's figures",
        &format!("document.querySelector(\"{pool} tr[data-resource=memory]\") !== null"),
    );
    let text = |page: &mut Browser, selector: &str| {
        page.eval(&format!(
            "document.querySelector(\"{selector}\").textContent"
        ))
    };
    let mem = format!("{pool} tr[data-resource=memory]");
    assert_eq!(
        text(&mut page, &format!("{mem} .gauge[data-kind=used] + .pct")),
        "72.0%"
    );
    assert_eq!(
        page.eval(&format!(
            "document.querySelector(\"{mem} .gauge[data-kind=used]\").className"
        )),
        "gauge warn"
    );
    assert_eq!(
        text(
            &mut page,
            &format!("{mem} td[data-kind=used] .state.firing")
        ),
        format!("预警告警 #{id}")
    );
    assert_eq!(
        text(&mut page, &format!("{mem} td[data-kind=allocated] .state")),
        "正常"
    );
    let px = |v: Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches("px")
            .parse::<f64>()
            .unwrap()
    };
    let mark = px(page.eval(&format!(
        "getComputedStyle(document.querySelector(\"{mem} .gauge[data-kind=used] .mark\")).left"
    )));
    let width = px(page.eval(&format!(
        "getComputedStyle(document.querySelector(\"{mem} .gauge[data-kind=used]\")).width"
    )));
    assert!(
        (mark / width - 0.70).abs() < 0.02,
        "the line at {mark} of {width}"
    );
    // the platform with the third host under the line; storage without figures says so
    assert_eq!(
        text(
            &mut page,
            "section[data-scope=platform] tr[data-resource=memory] .gauge[data-kind=used] + .pct"
        ),
        "51.3%"
    );
    assert_eq!(
        text(
            &mut page,
            &format!("{pool} tr[data-resource=storage] td[data-kind=used] .state")
        ),
        "无数据"
    );
    assert_eq!(
        text(&mut page, "#line-text"),
        "65% 提前预警（提示），70% 预警线，低于 65% 解除 · 依据 003 第十九条（资源接近系统容量 70% 时及时预警，报请扩容）"
    );
    assert_eq!(text(&mut page, "header nav a[aria-current=page]"), "容量");

    // the alarm page: list, refuse a write without the session's CSRF token, then acknowledge
    // as the signed-in user
    page.call(
        "Page.navigate",
        json!({ "url": format!("{}alarms", served.url) }),
    );
    page.wait_for(
        "the open alarms",
        &format!("document.querySelector('#open tr[data-id=\"{id}\"]') !== null"),
    );
    let row = |page: &mut Browser, id: u64| {
        page.eval(&format!(
            "document.querySelector('#open tr[data-id=\"{id}\"]').innerText"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let cap_row = row(&mut page, id);
    for part in [
        "预警",
        "003 第十九条",
        "资源池 甲 内存使用率 72.0%",
        "未确认",
    ] {
        assert!(cap_row.contains(part), "{part} not in {cap_row}");
    }
    let peak_row = page
        .eval(
            "[...document.querySelectorAll('#open tr')].map(r => r.innerText)\
             .find(t => t.includes('003 第二十一条'))",
        )
        .as_str()
        .unwrap()
        .to_string();
    for part in ["市数据局", "一网通办<img src=x>", "建议扩容至"] {
        assert!(peak_row.contains(part), "{part} not in {peak_row}");
    }
    assert_eq!(page.eval("document.querySelectorAll('img').length"), 0);

    // the session cookie alone does not make a write: without the CSRF token it is refused
    let forged = page.eval(&format!(
        "(() => {{ const x = new XMLHttpRequest(); \
         x.open('POST', '/api/alarms/{id}/ack', false); \
         x.setRequestHeader('Content-Type', 'application/json'); x.send('{{}}'); \
         return x.status + ' ' + JSON.parse(x.responseText).code; }})()"
    ));
    assert_eq!(forged, "403 csrf");
    let click = format!("document.querySelector('#open tr[data-id=\"{id}\"] button.ack').click()");
    page.eval(&click);
    page.wait_for(
        "the acknowledgement",
        &format!(
            "document.getElementById('ack-result').textContent\
             .startsWith('已确认告警 #{id}（确认人：ops-1')"
        ),
    );
    page.wait_for(
        "the row marked acknowledged",
        &format!(
            "document.querySelector('#open tr[data-id=\"{id}\"] td.state').textContent === '已确认'"
        ),
    );
    assert!(row(&mut page, id).contains("ops-1"));
    let acked: Vec<String> = served
        .stored
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| &b.alarms)
        .filter_map(|e| match e {
            yunjian_aggregator_core::alarms::AlarmEvent::Acknowledged(a) if a.id == id => {
                a.acked_by.clone()
            }
            _ => None,
        })
        .collect();
    assert_eq!(acked, ["ops-1"], "stored once, with who (the login name)");
    page.assert_no_blocked_content();
    let engine = served.policy.lock().unwrap();
    assert_eq!(
        engine
            .book()
            .open()
            .iter()
            .find(|a| a.id == id)
            .unwrap()
            .state,
        yunjian_aggregator_core::alarms::AlarmState::Acknowledged
    );
}

/// Two servers of rack 机柜-07: rack-h1 at 95 °C (critical, with its SEL entry) after two
/// cooler sweeps, rack-h2 fine. The policy engine has evaluated once.
/// Returns the URL, an ops user's API token and the runtime serving it.
fn serve_racks() -> (String, String, Runtime) {
    use yunjian_protocol::hardware::{
        BmcState, ChassisState, HardwareReport, SelEntry, SensorReading, SensorStatus, Thresholds,
    };
    let sweep = |cpu_c: i64, sel: Vec<SelEntry>| {
        Body::Hardware(HardwareReport {
            bmc: BmcState::Ok("lanplus 10.0.0.7:623".into()),
            chassis: Some(ChassisState {
                power_on: true,
                power_fault: false,
                intrusion: false,
                drive_fault: false,
                cooling_fault: false,
            }),
            sensors: vec![SensorReading {
                name: "CPU1 Temp".into(),
                number: 2,
                sensor_type: 0x01,
                value: Some(cpu_c * 1000),
                unit: "degrees C".into(),
                status: if cpu_c >= 90 {
                    SensorStatus::Critical
                } else {
                    SensorStatus::Ok
                },
                thresholds: Thresholds {
                    upper_non_critical: Some(85_000),
                    upper_critical: Some(90_000),
                    upper_non_recoverable: Some(100_000),
                    ..Thresholds::default()
                },
                states: 0,
            }],
            sel,
        })
    };
    let mut fleet = Fleet::new();
    let now = now_ms();
    for (id, temps) in [("rack-h1", [60, 80, 95]), ("rack-h2", [50, 52, 51])] {
        add(
            &mut fleet,
            Spec {
                rack: Some("机柜-07"),
                ..Spec::new(id, Role::Host, 30.0, 40.0, 20.0)
            },
        );
        for (i, t) in temps.into_iter().enumerate() {
            let sel = if t >= 90 {
                vec![SelEntry {
                    record_id: 12,
                    ts_s: (now / 1000) as u32,
                    sensor_type: 0x01,
                    sensor_number: 2,
                    sensor: Some("CPU1 Temp".into()),
                    event_type: 0x01,
                    asserted: true,
                    offset: 9,
                    description: "Upper Critical going high".into(),
                }]
            } else {
                vec![]
            };
            let ts = now - 1_200_000 + i as u64 * 600_000;
            fleet.apply(Envelope::new(id, 100 + i as u64, ts, sweep(t, sel)), now);
        }
    }
    let profile = yunjian_aggregator_core::policy::Profile::default();
    let mut engine = yunjian_aggregator_core::policy::Engine::new(
        yunjian_aggregator_core::policy::rules::build(&profile, &[]),
        yunjian_aggregator_core::alarms::AlarmBook::new(),
    );
    engine.evaluate(&yunjian_aggregator_core::policy::Context {
        fleet: &fleet,
        register: &yunjian_aggregator_core::register::Register::default(),
        profile: &profile,
        now_ms: now,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (_, changes_rx) = watch::channel(0u64);
    let mut state = AppState::new(
        Arc::new(RwLock::new(fleet)),
        Arc::new(Metrics::default()),
        changes_rx,
    );
    state.policy = Arc::new(std::sync::Mutex::new(engine));
    let ops = state.auth.test_bearer("ops-1", UserRole::Ops, None);
    rt.spawn(serve(listener, state, std::future::pending()));
    (url, ops, rt)
}

#[test]
fn rack_and_server_pages_work_in_chromium() {
    let Some(bin) = chromium() else { return };
    let (url, ops, _rt) = serve_racks();
    let mut page = Browser::launch_with_token(&bin, &format!("{url}racks"), &ops, &[]);
    page.wait_for(
        "the rack",
        "document.querySelector('.rack li[data-node=\"rack-h2\"]') !== null",
    );
    assert_eq!(
        page.eval("document.querySelector('header nav a[aria-current=page]').textContent"),
        "机柜"
    );
    assert_eq!(
        page.eval("document.querySelector('.rack h2').firstChild.textContent"),
        "机柜-07"
    );
    // coloured by the worst alarm: the hot server's stripe is the critical red
    let stripe = |page: &mut Browser, node: &str| {
        page.eval(&format!(
            "getComputedStyle(document.querySelector('li[data-node=\"{node}\"] a')).borderLeftColor"
        ))
    };
    assert_eq!(stripe(&mut page, "rack-h1"), "rgb(197, 48, 48)");
    assert_eq!(stripe(&mut page, "rack-h2"), "rgb(47, 133, 90)");
    let facts = page.eval("document.querySelector('li[data-node=\"rack-h1\"] .facts').textContent");
    assert_eq!(facts, "在线 · 95°C · 1 条告警（紧急）");

    // a click opens the server: its sensor with thresholds, status, chart and the SEL
    page.eval("document.querySelector('li[data-node=\"rack-h1\"] a').click()");
    page.wait_for(
        "the server page",
        "document.querySelector('tr[data-sensor=\"CPU1 Temp\"]') !== null",
    );
    let row = page
        .eval("document.querySelector('tr[data-sensor=\"CPU1 Temp\"]').innerText")
        .as_str()
        .unwrap()
        .to_string();
    for part in ["95.0", "°C", "85.0 / 90.0 / 100.0", "超出严重阈值"] {
        assert!(row.contains(part), "{part} not in {row}");
    }
    let points = page.eval(
        "document.querySelector('tr[data-sensor=\"CPU1 Temp\"] svg polyline')\
         .getAttribute('points').split(' ').length",
    );
    assert_eq!(points, 3);
    let svg_width = page.eval(
        "document.querySelector('tr[data-sensor=\"CPU1 Temp\"] svg').getBoundingClientRect().width",
    );
    assert_eq!(svg_width, 240);
    let body = page.eval("document.body.innerText");
    let body = body.as_str().unwrap();
    assert!(body.contains("Upper Critical going high"), "{body}");
    assert!(body.contains("003 第十九条"), "{body}");
    page.assert_no_blocked_content();
}

/// The links of the page's navigation bar, in order.
const NAV: &str =
    "[...document.querySelectorAll('header nav a')].map(a => a.textContent).join(',')";

#[test]
fn a_unit_user_is_offered_only_their_pages_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_capacity();
    let unit = served
        .auth
        .test_bearer("sjj-li", UserRole::Unit, Some("市数据局"));
    // another unit's VM, registered to it
    const OTHER_VM: &str = "4c4c4544-0000-0000-0000-0000000000b2";
    add(
        &mut served.fleet.write().unwrap(),
        Spec {
            uuid: Some(OTHER_VM),
            ..Spec::new("jyj-vm", Role::Guest, 20.0, 20.0, 20.0)
        },
    );
    {
        let mut register = served.register.write().unwrap();
        let mut other = register.vms[0].clone();
        other.unit = "市教育局".into();
        other.uuid = Some(OTHER_VM.into());
        register.vms.push(other);
    }
    // the overview shows the unit's own VM only: no host, no other unit's VM, counts of its own
    let mut page = Browser::launch_with_token(&bin, &served.url, &unit, &[]);
    page.wait_for(
        "the unit's VM",
        "document.querySelector('tr[data-node=\"cap-vm\"]') !== null",
    );
    assert_eq!(page.eval("document.title"), "云鉴 · 政务云资源监管");
    assert_eq!(page.eval("document.documentElement.lang"), "zh-CN");
    assert_eq!(page.eval(NAV), "总览,告警,登记,杀毒软件,资源申请,降配回收");
    assert_eq!(
        page.eval("document.getElementById('who').dataset.unit"),
        "市数据局"
    );
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('tr[data-node]')].map(r => r.dataset.node).join(',')"
        ),
        "cap-vm"
    );
    let html = page.eval("document.documentElement.outerHTML");
    let html = html.as_str().unwrap();
    for absent in ["jyj-vm", OTHER_VM, "市教育局", "cap-h1", "cap-h2", "cap-h3"] {
        assert!(!html.contains(absent), "{absent} shown to another unit");
    }
    assert_eq!(
        page.eval("[document.getElementById('t-hosts').textContent, document.getElementById('t-guests').textContent].join(',')"),
        "0,1"
    );

    // the alarms page: the unit's own alarm only (not the pool's), nothing to acknowledge
    page.call(
        "Page.navigate",
        json!({ "url": format!("{}alarms", served.url) }),
    );
    page.wait_for(
        "the unit's alarm",
        "[...document.querySelectorAll('#open tr')].some(r => r.innerText.includes('003 第二十一条'))",
    );
    assert_eq!(page.eval(NAV), "总览,告警,登记,杀毒软件,资源申请,降配回收");
    let open = page.eval("document.querySelector('#open').innerText");
    let open = open.as_str().unwrap();
    assert!(open.contains("市数据局"), "{open}");
    assert!(!open.contains("资源池 甲"), "another's alarm shown: {open}");
    assert_eq!(
        page.eval("document.querySelectorAll('button.ack').length"),
        0
    );
    page.assert_no_blocked_content();
}

#[test]
fn an_auditor_reads_the_alarms_but_is_offered_no_acknowledgement_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_capacity();
    let auditor = served
        .auth
        .test_bearer("audit-sun", UserRole::Auditor, None);
    let mut page =
        Browser::launch_with_token(&bin, &format!("{}alarms", served.url), &auditor, &[]);
    page.wait_for(
        "the open alarms",
        "document.querySelectorAll('#open tr[data-id]').length === 2",
    );
    let open = page.eval("document.querySelector('#open').innerText");
    let open = open.as_str().unwrap();
    assert!(
        open.contains("资源池 甲 内存使用率 72.0%") && open.contains("未确认"),
        "{open}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('button.ack').length"),
        0
    );
    assert_eq!(
        page.eval("[...document.querySelectorAll('button')].some(b => b.textContent === '确认')"),
        false
    );
    // the auditor reads every page (the audit log is theirs), the reclaim cases included
    assert_eq!(
        page.eval(NAV),
        "总览,机柜,容量,告警,登记,杀毒软件,资源申请,降配回收,审计,用户"
    );
    page.assert_no_blocked_content();
}

#[test]
fn the_authority_reads_but_is_not_offered_what_ops_does_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_capacity();
    let chief = served
        .auth
        .test_bearer("chief-wang", UserRole::Authority, None);
    let mut page = Browser::launch_with_token(&bin, &format!("{}alarms", served.url), &chief, &[]);
    page.wait_for(
        "the open alarms",
        "document.querySelectorAll('#open tr[data-id]').length === 2",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('button.ack').length"),
        0,
        "acknowledging is for ops"
    );
    assert_eq!(
        page.eval(NAV),
        "总览,机柜,容量,告警,登记,杀毒软件,资源申请,降配回收"
    );
    page.assert_no_blocked_content();

    // the users page is the administrator's (and the auditor's to read): refused, in zh-CN
    let mut page = Browser::launch_with_token(&bin, &format!("{}users", served.url), &chief, &[]);
    page.wait_for("the refusal", "document.title === '云鉴 · 无权访问'");
    let text = page.eval("document.querySelector('main').innerText");
    assert!(
        text.as_str()
            .unwrap()
            .contains("此页面需要审计人员或系统管理员角色"),
        "{text}"
    );
}

#[test]
fn the_administrator_is_offered_user_management_in_chromium() {
    let Some(bin) = chromium() else { return };
    let served = serve_capacity();
    let admin = served.auth.test_bearer("admin-1", UserRole::Admin, None);
    served
        .auth
        .test_bearer("czj-li", UserRole::Unit, Some("市财政局"));
    let mut page = Browser::launch_with_token(&bin, &format!("{}users", served.url), &admin, &[]);
    page.wait_for(
        "the user list",
        "document.querySelectorAll('#users tbody tr').length === 2",
    );
    let rows = page.eval("document.querySelector('#users tbody').innerText");
    let rows = rows.as_str().unwrap();
    assert!(
        rows.contains("czj-li") && rows.contains("使用单位") && rows.contains("市财政局"),
        "{rows}"
    );
    assert_eq!(
        page.eval("!!document.getElementById('new-user')"),
        true,
        "the form to create users"
    );
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('#users button')].map(b => b.textContent).join(',')"
        ),
        "重置密码,停用",
        "actions on the other user, none on oneself"
    );
    assert_eq!(
        page.eval(NAV),
        "总览,机柜,容量,告警,登记,杀毒软件,资源申请,降配回收,审计,用户"
    );
    page.assert_no_blocked_content();
}

/// The web layer with applications on a SQLite file, one VM of 市教育局 registered.
fn serve_applications() -> (String, Auth, Runtime, tempfile::TempDir) {
    use yunjian_aggregator_core::store::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("yunjian.db");
    let mut s = yunjian_store_sqlite::SqliteStorage::open(&db).unwrap();
    s.migrate().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (_changes, changes_rx) = watch::channel(0u64);
    let mut state = AppState::new(Fleet::shared(), Arc::new(Metrics::default()), changes_rx);
    {
        let mut reg = state.register.write().unwrap();
        reg.vms
            .push(yunjian_aggregator_core::register::test_support::vm(
                "市教育局",
                "4c4c4544-0000-0000-0000-0000000000e1",
                4,
            ));
    }
    // a termination goes on through the reclaim's stop path: its cases are stored here
    let reclaim = yunjian_aggregator::reclaim::Reclaim::start(
        Box::new(yunjian_store_sqlite::SqliteStorage::open(&db).unwrap()),
        yunjian_aggregator::reclaim::ReclaimConfig::default(),
        state.profile.reclaim.clone(),
        yunjian_aggregator::reclaim::calendar::Calendar::builtin(),
        yunjian_protocol::MasterKey::from_bytes([7; 32]),
        yunjian_aggregator::reclaim::Outlet::Detached,
        state.fleet.clone(),
        state.register.clone(),
    )
    .unwrap();
    state.register_turn = reclaim.register_turn.clone();
    let apps = yunjian_aggregator::service::applications::Applications::start(
        Box::new(s),
        state.profile.clone(),
        Arc::new(yunjian_aggregator::reclaim::calendar::Calendar::builtin()),
        state.register.clone(),
        state.register_turn.clone(),
        Some(reclaim.clone()),
    )
    .unwrap();
    state.applications = Some(apps);
    state.reclaim = Some(reclaim);
    let auth = state.auth.clone();
    rt.spawn(serve(listener, state, std::future::pending()));
    (url, auth, rt, dir)
}

#[test]
fn an_application_is_submitted_approved_and_carried_out_in_chromium() {
    let Some(bin) = chromium() else { return };
    let (url, auth, _rt, _dir) = serve_applications();
    let unit = auth.test_bearer("jyj-wang", UserRole::Unit, Some("市教育局"));
    let other = auth.test_bearer("wjw-li", UserRole::Unit, Some("市卫健委"));
    let chief = auth.test_bearer("dsj-liu", UserRole::Authority, None);
    let ops = auth.test_bearer("ops-zhao", UserRole::Ops, None);

    // the unit files a termination from the form on the queue page
    let mut page = Browser::launch_with_token(&bin, &format!("{url}applications"), &unit, &[]);
    page.wait_for("the form", "!document.getElementById('new').hidden");
    assert_eq!(
        page.eval("document.querySelector('header nav a[aria-current=page]').textContent"),
        "资源申请"
    );
    page.eval(
        "document.getElementById('n-kind').value = 'termination'; \
         document.getElementById('n-kind').dispatchEvent(new Event('change')); \
         document.getElementById('n-system').value = '预算一体化'; \
         document.getElementById('n-uuids').value = '4c4c4544-0000-0000-0000-0000000000e1'; \
         document.getElementById('n-decl').value = ''; \
         document.getElementById('new-form').requestSubmit(); true",
    );
    // without the declaration: refused, the clause of the active profile (003) named
    page.wait_for(
        "the refusal",
        "document.getElementById('n-result').textContent.includes('第十六条')",
    );
    page.eval(
        "document.getElementById('n-kind').value = 'termination'; \
         document.getElementById('n-kind').dispatchEvent(new Event('change')); \
         document.getElementById('n-system').value = '预算一体化'; \
         document.getElementById('n-uuids').value = '4c4c4544-0000-0000-0000-0000000000e1'; \
         document.getElementById('n-decl').value = '系统已下线，数据已迁移备份'; \
         document.getElementById('new-form').requestSubmit(); true",
    );
    page.wait_for(
        "the submission",
        "document.getElementById('n-result').textContent.includes('已提交：申请 #1')",
    );
    page.wait_for(
        "the queue row",
        "document.getElementById('queues').innerText.includes('待主管部门办理')",
    );
    let queues = page.eval("document.getElementById('queues').innerText");
    assert!(
        queues.as_str().unwrap().contains("第十六条（终止审核）"),
        "{queues}"
    );
    page.assert_no_blocked_content();
    drop(page);

    // another unit sees nothing of it
    let mut page = Browser::launch_with_token(&bin, &format!("{url}applications"), &other, &[]);
    page.wait_for(
        "the empty queue",
        "document.getElementById('t-open').textContent === '0'",
    );
    let html = page.html();
    assert!(!html.contains("市教育局") && !html.contains("预算一体化"));
    drop(page);

    // ops is not offered the authority's step; the authority approves on the page
    let mut page = Browser::launch_with_token(&bin, &format!("{url}applications/1"), &ops, &[]);
    page.wait_for(
        "the application",
        "document.getElementById('facts').innerText.includes('市教育局')",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#steps button').length"),
        0
    );
    drop(page);
    let mut page = Browser::launch_with_token(&bin, &format!("{url}applications/1"), &chief, &[]);
    page.wait_for(
        "the approve button",
        "[...document.querySelectorAll('#steps button')].some(b => b.textContent === '审批通过')",
    );
    page.eval(
        "[...document.querySelectorAll('#steps button')].find(b => b.textContent === '审批通过').click(); true",
    );
    page.wait_for(
        "approved",
        "document.getElementById('meta').textContent === '待办理'",
    );
    drop(page);

    // ops carries it out: done, the timeline complete
    let mut page = Browser::launch_with_token(&bin, &format!("{url}applications/1"), &ops, &[]);
    page.wait_for(
        "the carry-out button",
        "[...document.querySelectorAll('#steps button')].some(b => b.textContent === '办理完成')",
    );
    page.eval(
        "[...document.querySelectorAll('#steps button')].find(b => b.textContent === '办理完成').click(); true",
    );
    page.wait_for(
        "done",
        "document.getElementById('meta').textContent === '已办结'",
    );
    page.wait_for(
        "the timeline",
        "document.querySelectorAll('#timeline tbody tr').length === 3",
    );
    let timeline = page.eval("document.getElementById('timeline').innerText");
    let timeline = timeline.as_str().unwrap();
    for part in [
        "提交申请",
        "审批通过",
        "办理完成",
        "dsj-liu",
        "ops-zhao",
        "主管部门",
    ] {
        assert!(timeline.contains(part), "{part} not in {timeline}");
    }
    page.assert_no_blocked_content();
}
