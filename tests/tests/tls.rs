//! TLS end to end, with a throwaway CA made here: the real agent binary reports over MQTT over
//! TLS to the embedded broker (and an agent that trusts another CA is refused and says why), and
//! the dashboard answers over HTTPS with a `Secure` session cookie, the sign-in audited with the
//! client's address, and shuts down with an event stream open.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yunjian_aggregator::app::Aggregator;
use yunjian_aggregator::config::AggregatorConfig;
use yunjian_aggregator::service::identity::TEST_PASSWORD;
use yunjian_aggregator_core::identity::Role;
use yunjian_broker::BrokerTls;
use yunjian_tests::{eventually, free_port, http_get, seed_users};
use yunjian_tls::rustls::pki_types::ServerName;
use yunjian_tls::{TlsConnector, TlsFiles};

/// A CA and a server certificate it issued for `localhost` and `127.0.0.1`, as PEM files in
/// `dir`; plus a second CA that issued nothing here.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server: TlsFiles,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().expect("CA key");
    rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate")
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_cert = ca("云鉴 测试 CA");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "yunjian-aggregator");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &ca_cert)
            .expect("server certificate");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server: TlsFiles {
                cert: dir.join("server.pem"),
                key: dir.join("server.key"),
            },
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.other_ca, ca("另一个 CA").pem()).unwrap();
        std::fs::write(&pki.server.cert, cert.pem()).unwrap();
        std::fs::write(&pki.server.key, key.serialize_pem()).unwrap();
        pki
    }
}

/// A child process killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the agent binary as `node`, trusting `ca`, connecting to `host:port` (expecting a
/// certificate for `server_name` if given); its log goes to `dir/{node}.log`.
fn start_agent(
    bin: &Path,
    dir: &Path,
    agg: &Aggregator,
    node: &str,
    (host, port): (&str, u16),
    (ca, server_name): (&Path, Option<&str>),
) -> (Agent, PathBuf) {
    let key = dir.join(format!("{node}.key"));
    agg.master
        .node_key(node, yunjian_protocol::Role::Host)
        .write_file(&key)
        .unwrap();
    let conf = dir.join(format!("{node}.toml"));
    std::fs::write(
        &conf,
        format!(
            "node_id = \"{node}\"\nrole = \"host\"\ninterval = \"500ms\"\nkey_file = {key:?}\n\
             [mqtt]\nhost = \"{host}\"\nport = {port}\nbackoff_min_ms = 50\n\
             backoff_max_ms = 500\ntls_ca = {ca:?}\n{name}[buffer]\ndir = {state:?}\n\
             [antivirus]\nenabled = false\n[ipmi]\ntransport = \"off\"\n",
            key = key.display().to_string(),
            ca = ca.display().to_string(),
            name = server_name.map_or(String::new(), |n| format!("tls_server_name = {n:?}\n")),
            state = dir.join(format!("{node}-state")).display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.join(format!("{node}.log"));
    let child = Command::new(bin)
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the agent starts");
    (Agent(child), log)
}

/// The agent's log line on its refused connection, once it is there.
async fn refusal(log: &Path) -> String {
    eventually(
        "the refused agent's log line",
        Duration::from_secs(20),
        || async {
            let log = std::fs::read_to_string(log).ok()?;
            log.lines()
                .find(|l| l.contains("cannot connect to the MQTT broker"))
                .map(str::to_string)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_over_mqtt_tls_and_a_wrong_ca_or_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("agg"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    // TLS only: no plain listener
    cfg.broker.plain = false;
    cfg.broker.tls = Some(BrokerTls {
        listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
        cert: pki.server.cert.clone(),
        key: pki.server.key.clone(),
    });
    let ops = seed_users(&cfg, &[("ops-zhang", Role::Ops, None)]).remove(0);
    let agg = Aggregator::start(&cfg).await.unwrap();
    assert_eq!(agg.mqtt_addr, None, "no plain MQTT listener");
    let port = agg.mqtts_addr.expect("the TLS listener").port();
    let http = agg.http_addr;

    let bin = tokio::task::spawn_blocking(|| yunjian_tests::agent_binary(&[]))
        .await
        .unwrap();
    // by name (the certificate's DNS name) and by address (its IP address)
    let (_good, _) = start_agent(
        &bin,
        dir.path(),
        &agg,
        "rack1-h01",
        ("localhost", port),
        (&pki.ca, None),
    );
    let (_by_ip, _) = start_agent(
        &bin,
        dir.path(),
        &agg,
        "rack1-h02",
        ("127.0.0.1", port),
        (&pki.ca, None),
    );
    let (_foreign, foreign_log) = start_agent(
        &bin,
        dir.path(),
        &agg,
        "rack1-h03",
        ("localhost", port),
        (&pki.other_ca, None),
    );
    // the address is in the certificate, the name it is told to expect is not
    let (_misnamed, misnamed_log) = start_agent(
        &bin,
        dir.path(),
        &agg,
        "rack1-h04",
        ("127.0.0.1", port),
        (&pki.ca, Some("aggregator.yunjian.test")),
    );

    for node in ["rack1-h01", "rack1-h02"] {
        let path = format!("/api/nodes/{node}");
        eventually(
            &format!("{node}'s reports over TLS"),
            Duration::from_secs(30),
            || async {
                let (status, body) = http_get(http, &ops, &path).await;
                let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
                v["state"]["last_report_ts_ms"].as_u64()
            },
        )
        .await;
    }

    // the agents trusting another CA or expecting another name say why they cannot connect,
    // and never get in
    let said = refusal(&foreign_log).await;
    assert!(
        said.contains("invalid peer certificate") && said.contains("UnknownIssuer"),
        "{said}"
    );
    let said = refusal(&misnamed_log).await;
    assert!(
        said.contains("invalid peer certificate") && said.contains("NotValidForName"),
        "{said}"
    );
    for node in ["rack1-h03", "rack1-h04"] {
        let (status, body) = http_get(http, &ops, &format!("/api/nodes/{node}")).await;
        assert_eq!(status, 404, "{body}");
    }
    agg.shutdown().await;
}

/// Read until the peer closes; a peer that closes without TLS close_notify ends the read too.
async fn read_all(mut s: impl AsyncRead + Unpin) -> String {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// One HTTPS request to `localhost` at `addr`; returns the whole response, head and body.
async fn https(addr: SocketAddr, tls: &TlsConnector, request: &str) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut s = tls.connect(name, tcp).await?;
    s.write_all(request.as_bytes()).await?;
    s.flush().await?;
    Ok(read_all(s).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_answers_over_https_with_a_secure_session_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = AggregatorConfig {
        data_dir: dir.path().join("agg"),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        ..AggregatorConfig::default()
    };
    cfg.broker.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));

    // a bad certificate file stops the start, naming the file and the problem
    cfg.http.tls = Some(TlsFiles {
        cert: pki.server.key.clone(),
        key: pki.server.key.clone(),
    });
    let refused = Aggregator::start(&cfg)
        .await
        .expect_err("a key is no certificate");
    let message = refused.to_string();
    assert!(
        message.contains("server.key") && message.contains("BEGIN CERTIFICATE"),
        "{message}"
    );

    cfg.http.tls = Some(pki.server.clone());
    let tokens = seed_users(
        &cfg,
        &[
            ("ops-zhang", Role::Ops, None),
            ("sj-wang", Role::Auditor, None),
        ],
    );
    let auditor = &tokens[1];
    let agg = Aggregator::start(&cfg).await.unwrap();
    let addr = agg.http_addr;
    let trusting = TlsConnector::from(yunjian_tls::client_config(&pki.ca, None).unwrap());
    let get = |path: &str, auth: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
    };

    let health = https(addr, &trusting, &get("/healthz", "")).await.unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let login = https(addr, &trusting, &get("/login", "")).await.unwrap();
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    assert!(login.contains("登录"), "{login}");

    let body = serde_json::json!({"name": "ops-zhang", "password": TEST_PASSWORD}).to_string();
    let sign_in = https(
        addr,
        &trusting,
        &format!(
            "POST /api/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
    .unwrap();
    assert!(sign_in.starts_with("HTTP/1.1 200"), "{sign_in}");
    let cookie = sign_in
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no Set-Cookie: {sign_in}"));
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");

    // the sign-in audit has the client's address through TLS too
    let audit = https(
        addr,
        &trusting,
        &get(
            "/api/audit?subject=user:ops-zhang",
            &format!("Authorization: Bearer {auditor}\r\n"),
        ),
    )
    .await
    .unwrap();
    assert!(audit.starts_with("HTTP/1.1 200"), "{audit}");
    assert!(
        audit.contains("session.sign_in") && audit.contains("\"source\":\"127.0.0.1\""),
        "{audit}"
    );

    // a client trusting another CA does not get through the handshake, and plain HTTP on the
    // HTTPS port gets no HTTP answer
    let other = TlsConnector::from(yunjian_tls::client_config(&pki.other_ca, None).unwrap());
    let e = https(addr, &other, &get("/healthz", ""))
        .await
        .expect_err("a certificate from an unknown issuer");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(get("/healthz", "").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    // the server drops the connection, with a TLS alert or a reset
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // shutdown ends an open event stream and the server with it
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut events = trusting.connect(name, tcp).await.unwrap();
    events
        .write_all(
            get(
                "/api/events",
                &format!("Authorization: Bearer {}\r\n", tokens[0]),
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    events.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = Instant::now();
    agg.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited {:?} on the open stream",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(2), read_all(events))
        .await
        .expect("the event stream ends at shutdown");
    assert!(rest.contains("text/event-stream"), "{rest}");
}
