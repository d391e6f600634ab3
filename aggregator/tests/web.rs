//! The web layer against a fleet filled through `Fleet::apply` with real protocol envelopes:
//! the JSON API and `/metrics` through `ServiceExt::oneshot`, the SSE stream over a real socket.

use axum::body::Body as HttpBody;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout, Instant};
use tower::ServiceExt;
use yunjian_aggregator::metrics::Metrics;
use yunjian_aggregator::web::{router, serve, AppState, MIN_GAP};
use yunjian_aggregator_core::fleet::{Fleet, SharedFleet};
use yunjian_aggregator_core::identity::Role as UserRole;
use yunjian_protocol::{
    Body, DiskSample, Envelope, GuestView, Hello, Inventory, Memory, NetSample, Report, Role,
    Status,
};

const GIB: u64 = 1024 * 1024;
/// Wall time of the fixture's last messages.
const NOW: u64 = 1_700_000_000_000;

fn inventory(hostname: &str, role: Role, rack: Option<&str>, uuid: Option<&str>) -> Body {
    Body::Inventory(Inventory {
        hostname: hostname.into(),
        role,
        os: "openEuler 22.03".into(),
        kernel: "5.10.0".into(),
        cpu_model: "Kunpeng 920".into(),
        cpu_cores: 8,
        mem_total_kib: 16 * GIB,
        disks: vec![],
        nics: vec!["eth0".into()],
        machine_id: format!("mid-{hostname}"),
        smbios_uuid: uuid.map(Into::into),
        rack: rack.map(Into::into),
    })
}

fn report(cpu_pct: u16, mem_pct: u64, disk_pcts: &[u64], rx_bps: u64) -> Body {
    let total = 16 * GIB;
    Body::Report(Report {
        cpu_busy: cpu_pct * 100,
        per_core: vec![cpu_pct * 100; 8],
        load: [100, 80, 60],
        mem: Memory {
            total_kib: total,
            used_kib: total * mem_pct / 100,
            available_kib: total - total * mem_pct / 100,
            swap_total_kib: 0,
            swap_used_kib: 0,
        },
        disks: disk_pcts
            .iter()
            .enumerate()
            .map(|(i, &p)| DiskSample {
                mount: format!("/data{i}"),
                total_kib: 100 * GIB,
                used_kib: p * GIB,
                read_bps: 0,
                write_bps: 0,
            })
            .collect(),
        nets: vec![
            NetSample {
                name: "eth0".into(),
                rx_bytes: 1,
                tx_bytes: 1,
                rx_bps,
                tx_bps: 1_000,
            },
            NetSample {
                name: "eth1".into(),
                rx_bytes: 1,
                tx_bytes: 1,
                rx_bps: 500,
                tx_bps: 2_000,
            },
        ],
        uptime_s: 3_600,
        failed: vec![],
    })
}

fn guest(uuid: &str) -> GuestView {
    GuestView {
        uuid: uuid.into(),
        name: format!("domain-{uuid}"),
        vcpus: 4,
        mem_kib: 8 * GIB,
        disk_kib: 100 * GIB,
        running: true,
    }
}

/// Status online, Hello, Inventory, then the given bodies, all at wall time `at`.
fn node(fleet: &mut Fleet, id: &str, role: Role, inv: Body, rest: Vec<Body>, at: u64) {
    fleet.apply(Envelope::new(id, 0, at, Body::Status(Status::Online)), at);
    let hello = Body::Hello(Hello {
        agent_version: "0.1.0".into(),
        role,
        interval_ms: 10_000,
        buffered: 0,
        epoch: 1,
    });
    for (i, body) in [hello, inv].into_iter().chain(rest).enumerate() {
        fleet.apply(Envelope::new(id, i as u64 + 1, at, body), at);
    }
}

/// Two hosts in two racks; host-a runs vm-1 (busy) and vm-2 (silent); host-b is offline;
/// vm-orphan's SMBIOS UUID is listed by no host.
fn fixture() -> Fleet {
    let mut f = Fleet::new();
    node(
        &mut f,
        "host-a",
        Role::Host,
        inventory("hz-zwy-a01", Role::Host, Some("R1"), None),
        vec![
            report(20, 75, &[40, 55], 1_000_000),
            Body::Guests(vec![guest("UUID-1"), guest("uuid-2")]),
        ],
        NOW,
    );
    node(
        &mut f,
        "host-b",
        Role::Host,
        inventory("hz-zwy-b01", Role::Host, Some("R2"), None),
        vec![report(5, 10, &[10], 0)],
        NOW,
    );
    f.apply(
        Envelope::new("host-b", 0, NOW, Body::Status(Status::Offline)),
        NOW,
    );
    node(
        &mut f,
        "vm-1",
        Role::Guest,
        inventory("zwfw-web-01", Role::Guest, None, Some("uuid-1")),
        vec![report(90, 50, &[30], 2_000)],
        NOW,
    );
    node(
        &mut f,
        "vm-2",
        Role::Guest,
        inventory("oa-db-01", Role::Guest, None, Some("UUID-2")),
        vec![report(10, 20, &[20], 0)],
        NOW - 60_000,
    );
    node(
        &mut f,
        "vm-orphan",
        Role::Guest,
        inventory("lonely", Role::Guest, Some("R9"), Some("uuid-none")),
        vec![report(1, 1, &[1], 0)],
        NOW,
    );
    assert_eq!(f.sweep_silence(NOW), 1, "only vm-2 has been quiet for 60 s");
    f
}

struct Harness {
    fleet: SharedFleet,
    changes: watch::Sender<u64>,
    state: AppState,
    /// An ops user's bearer token: every route but `/healthz` needs a signed-in user.
    token: String,
}

fn harness(fleet: Fleet) -> Harness {
    let fleet: SharedFleet = Arc::new(std::sync::RwLock::new(fleet));
    let (changes, changes_rx) = watch::channel(0u64);
    let state = AppState::new(fleet.clone(), Arc::new(Metrics::default()), changes_rx);
    let token = state.auth.test_bearer("ops-1", UserRole::Ops, None);
    Harness {
        fleet,
        changes,
        state,
        token,
    }
}

/// `GET uri` with `token` as the bearer (`""`: anonymous).
async fn get(app: Router, token: &str, uri: &str) -> (StatusCode, String, String) {
    let mut req = Request::get(uri);
    if !token.is_empty() {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = app
        .oneshot(req.body(HttpBody::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn get_json(app: Router, token: &str, uri: &str) -> (StatusCode, Value) {
    let (status, ctype, body) = get(app, token, uri).await;
    assert_eq!(ctype, "application/json", "{uri}");
    (status, serde_json::from_str(&body).unwrap())
}

fn ids(body: &Value) -> Vec<&str> {
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect()
}

fn find<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"))
}

#[tokio::test]
async fn nodes_lists_live_figures_and_joins_vms_to_their_host() {
    let h = harness(fixture());
    let (status, body) = get_json(router(h.state), &h.token, "/api/nodes").await;
    assert_eq!(status, StatusCode::OK);

    let t = &body["totals"];
    assert_eq!(
        (t["hosts"].as_u64(), t["guests"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        (
            t["online"].as_u64(),
            t["silent"].as_u64(),
            t["offline"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    // hosts first, then by rack and node id
    assert_eq!(
        ids(&body),
        ["host-a", "host-b", "vm-1", "vm-2", "vm-orphan"]
    );

    let a = find(&body, "host-a");
    assert_eq!(a["role"], "host");
    assert_eq!(a["rack"], "R1");
    assert_eq!(a["hostname"], "hz-zwy-a01");
    assert_eq!(a["liveness"], "online");
    assert_eq!(a["cpu_pct"], 20.0);
    assert_eq!(a["mem_pct"], 75.0);
    assert_eq!(a["disk_pct"], 55.0, "the fullest filesystem");
    assert_eq!(a["net_rx_bps"], 1_000_500, "summed over interfaces");
    assert_eq!(a["net_tx_bps"], 3_000);
    assert_eq!(a["vm_count"], 2);
    assert_eq!(a["last_seen_ms"], NOW);

    // the SMBIOS UUID join is case-insensitive in both directions
    assert_eq!(find(&body, "vm-1")["host"], "host-a");
    assert_eq!(find(&body, "vm-1")["cpu_pct"], 90.0);
    assert_eq!(find(&body, "vm-2")["host"], "host-a");
    assert_eq!(find(&body, "vm-2")["liveness"], "silent");
    assert_eq!(find(&body, "vm-orphan")["host"], Value::Null);
    assert_eq!(find(&body, "host-b")["liveness"], "offline");
    assert!(body["now_ms"].as_u64().unwrap() > NOW);
}

#[tokio::test]
async fn filters_select_by_role_liveness_and_rack() {
    let h = harness(fixture());
    let app = router(h.state);
    let cases: [(&str, &[&str]); 7] = [
        ("role=host", &["host-a", "host-b"]),
        ("role=guest", &["vm-1", "vm-2", "vm-orphan"]),
        ("liveness=offline", &["host-b"]),
        ("liveness=silent", &["vm-2"]),
        // VMs belong to the rack of the host that runs them
        ("rack=R1", &["host-a", "vm-1", "vm-2"]),
        ("rack=R9", &["vm-orphan"]),
        ("role=guest&liveness=online&rack=R1", &["vm-1"]),
    ];
    for (query, want) in cases {
        let (status, body) = get_json(app.clone(), &h.token, &format!("/api/nodes?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(ids(&body), want, "{query}");
        assert_eq!(body["totals"]["hosts"], 2, "totals stay fleet-wide");
    }
}

#[tokio::test]
async fn bad_filters_are_400_naming_the_parameter() {
    let h = harness(fixture());
    let app = router(h.state);
    let cases = [
        ("role=vm", "role", "host, guest"),
        ("liveness=dead", "liveness", "online, silent, offline"),
        ("rack=", "rack", "non-empty"),
        ("colour=red", "colour", "role, liveness, rack"),
    ];
    for (query, param, allowed) in cases {
        let (status, body) = get_json(app.clone(), &h.token, &format!("/api/nodes?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["parameter"], param, "{query}");
        assert!(
            ["bad_query_value", "unknown_query_parameter"]
                .contains(&body["code"].as_str().unwrap()),
            "{query}: {body}"
        );
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.contains(param) && msg.contains(allowed),
            "{query}: {msg}"
        );
    }
}

#[tokio::test]
async fn node_detail_has_full_state_and_unknown_node_is_404() {
    let h = harness(fixture());
    let app = router(h.state);

    let (status, body) = get_json(app.clone(), &h.token, "/api/nodes/host-a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["summary"]["vm_count"], 2);
    let state = &body["state"];
    assert_eq!(state["node"], "host-a");
    assert_eq!(state["guests"][0]["uuid"], "UUID-1");
    assert_eq!(state["inventory"]["cpu_model"], "Kunpeng 920");
    assert_eq!(state["report"]["load"][0], 100);
    assert_eq!(state["last_seq"], 4);

    let (status, body) = get_json(app, &h.token, "/api/nodes/no-such-node").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["node"], "no-such-node");
    assert_eq!(
        body["code"], "node_not_found",
        "a stable code beside the message"
    );
    assert_eq!(
        body["error"],
        "节点 \"no-such-node\" 不存在（本系统从未收到它的报告）"
    );
}

#[tokio::test]
async fn metrics_count_nodes_by_role_and_liveness() {
    let h = harness(fixture());
    h.state
        .metrics
        .applied
        .store(42, std::sync::atomic::Ordering::Relaxed);
    let (status, ctype, text) = get(router(h.state), &h.token, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "text/plain; version=0.0.4");
    for line in [
        "yunjian_nodes{role=\"host\",liveness=\"online\"} 1",
        "yunjian_nodes{role=\"host\",liveness=\"offline\"} 1",
        "yunjian_nodes{role=\"guest\",liveness=\"online\"} 2",
        "yunjian_nodes{role=\"guest\",liveness=\"silent\"} 1",
        "yunjian_applied_total 42",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn healthz_reports_node_counts() {
    // the liveness probe needs no sign-in
    let h = harness(fixture());
    let (status, body) = get_json(router(h.state), "", "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["nodes"], 5);
    assert_eq!(body["totals"]["guests"], 3);
}

#[tokio::test]
async fn a_poisoned_fleet_lock_still_serves() {
    let h = harness(fixture());
    let fleet = h.fleet.clone();
    let panicked = std::thread::spawn(move || {
        let _guard = fleet.write().unwrap();
        panic!("ingest died holding the lock");
    })
    .join();
    assert!(panicked.is_err() && h.fleet.is_poisoned());

    let app = router(h.state);
    for uri in ["/api/nodes", "/api/nodes/vm-1", "/healthz", "/metrics"] {
        let (status, _, body) = get(app.clone(), &h.token, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    let (_, body) = get_json(app, &h.token, "/api/nodes").await;
    assert_eq!(ids(&body).len(), 5);
}

#[tokio::test]
async fn dashboard_is_served_self_contained() {
    let h = harness(Fleet::new());
    let resp = router(h.state)
        .oneshot(
            Request::get("/")
                .header(header::AUTHORIZATION, format!("Bearer {}", h.token))
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    let html = std::str::from_utf8(&html).unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">"));
    assert!(html.contains("云鉴 · 政务云资源监管"));
    // closed network: nothing loaded from elsewhere
    assert!(!html.contains("http://") && !html.contains("https://"));
}

/// A minimal HTTP/1.1 client for one `text/event-stream` response (chunked encoding).
struct SseClient {
    stream: TcpStream,
    raw: Vec<u8>,
    headers_done: bool,
    text: String,
}

impl SseClient {
    async fn connect(addr: std::net::SocketAddr, token: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET /api/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        SseClient {
            stream,
            raw: Vec::new(),
            headers_done: false,
            text: String::new(),
        }
    }

    /// Move complete chunks from `raw` to `text`.
    fn decode(&mut self) {
        if !self.headers_done {
            let Some(end) = find_bytes(&self.raw, b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("content-type: text/event-stream"), "{head}");
            assert!(lower.contains("transfer-encoding: chunked"), "{head}");
            self.raw.drain(..end + 4);
            self.headers_done = true;
        }
        while let Some(eol) = find_bytes(&self.raw, b"\r\n") {
            let size_line = std::str::from_utf8(&self.raw[..eol]).unwrap();
            let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            let chunk = &self.raw[eol + 2..eol + 2 + size];
            self.text.push_str(std::str::from_utf8(chunk).unwrap());
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The data of the next `nodes` event, or `None` if none arrives within `wait`.
    async fn next_nodes(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                if frame.starts_with(':') {
                    continue; // keep-alive comment
                }
                let mut lines = frame.lines();
                assert_eq!(lines.next(), Some("event: nodes"), "{frame}");
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                return Some(serde_json::from_str(data).unwrap());
            }
            let mut buf = [0u8; 16 * 1024];
            let n = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.stream.read(&mut buf),
            )
            .await
            {
                Ok(read) => read.unwrap(),
                Err(_) => return None,
            };
            assert!(n > 0, "server closed the event stream");
            self.raw.extend_from_slice(&buf[..n]);
            self.decode();
        }
    }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn spawn_server(state: AppState) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn add_vm(fleet: &SharedFleet, id: &str) {
    let mut f = fleet.write().unwrap();
    node(
        &mut f,
        id,
        Role::Guest,
        inventory(id, Role::Guest, None, Some("uuid-2")),
        vec![report(50, 50, &[50], 0)],
        NOW,
    );
}

#[tokio::test]
async fn event_stream_sends_a_snapshot_then_coalesced_changes() {
    let h = harness(fixture());
    let (addr, _stop) = spawn_server(h.state).await;
    let mut client = SseClient::connect(addr, &h.token).await;

    let first = client
        .next_nodes(Duration::from_secs(5))
        .await
        .expect("first frame");
    assert_eq!(
        ids(&first),
        ["host-a", "host-b", "vm-1", "vm-2", "vm-orphan"]
    );
    assert_eq!(first["totals"]["hosts"], 2);
    assert_eq!(find(&first, "vm-1")["host"], "host-a");

    // nothing changed: no frame
    assert!(client
        .next_nodes(Duration::from_millis(1500))
        .await
        .is_none());

    add_vm(&h.fleet, "vm-new");
    h.changes.send_modify(|v| *v += 1);
    let second = client
        .next_nodes(Duration::from_secs(5))
        .await
        .expect("frame after a change");
    let second_at = Instant::now();
    assert_eq!(find(&second, "vm-new")["cpu_pct"], 50.0);

    // a burst of batches right after a frame: one frame, no sooner than MIN_GAP later
    for i in 0..10 {
        add_vm(&h.fleet, &format!("vm-burst-{i}"));
        h.changes.send_modify(|v| *v += 1);
    }
    let third = client
        .next_nodes(Duration::from_secs(5))
        .await
        .expect("coalesced frame");
    let gap = second_at.elapsed();
    assert!(
        gap >= MIN_GAP - Duration::from_millis(100),
        "frames {gap:?} apart"
    );
    assert_eq!(
        ids(&third).len(),
        6 + 10,
        "the frame carries the whole burst"
    );
    assert!(
        client
            .next_nodes(Duration::from_millis(1500))
            .await
            .is_none(),
        "burst sent twice"
    );
}

#[tokio::test]
async fn shutdown_ends_open_event_streams() {
    let h = harness(fixture());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, h.state, async {
        let _ = stopped.await;
    }));
    let mut client = SseClient::connect(addr, &h.token).await;
    client
        .next_nodes(Duration::from_secs(5))
        .await
        .expect("first frame");

    stop.send(()).unwrap();
    let done = timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(done, Ok(Ok(Ok(())))),
        "serve did not return with a stream open: {done:?}"
    );
    // and the client sees the end of the stream
    let mut rest = Vec::new();
    timeout(Duration::from_secs(5), client.stream.read_to_end(&mut rest))
        .await
        .expect("connection closed")
        .unwrap();
}
