//! yunjian-broker: the aggregator's embedded MQTT 3.1.1 broker.
//!
//! Why our own and not rumqttd: measured here, rumqttd sets connections up one at a time in its
//! router (5,000 agents connecting at once took 19 s) and drops a slow subscriber's backlog with
//! only a warning. This broker is small because it serves one purpose:
//!
//! * every connection is its own tokio task: CONNECT, login check and session set-up run in
//!   parallel, so 10,000 agents connect within seconds (see `docs/PERFORMANCE.md`);
//! * the aggregator's ingest is an *internal* subscriber fed through a bounded channel: when
//!   ingest is busy, the publishing connection waits (TCP back-pressure), nothing is dropped;
//! * a QoS 1 report is acknowledged (PUBACK) only when ingest has finished with it, i.e. after
//!   the storage transaction that holds its effect has committed ([`AckToken`]): the aggregator
//!   persists what it acknowledged, and a crash before that makes the agent send it again;
//! * agents log in with their node id and a password derived from their enrolled key, and may
//!   only publish on their own topics and subscribe to their own command topic ([`acl`]);
//! * persistent sessions (clean session off) keep subscriptions and queue QoS 1 messages
//!   (commands) while the client is away, bounded; overflow drops the oldest and is counted in
//!   `yunjian_broker_dropped_total`;
//! * retained messages and last wills (the agents' online/offline status);
//! * what a client that has not logged in can hold is bounded (`limit.rs`): connections in
//!   total and per source address, a small CONNECT (`max_connect_bytes`) within
//!   `connect_timeout`; refusals are counted in `yunjian_broker_connections_refused_total`.
//!
//! * MQTT over TLS on a listener of its own (`[broker.tls]`), beside or instead of the plain
//!   one: the same connection handling runs on either stream.
//!
//! Not supported, by choice: MQTT 5, QoS 2 delivery (QoS 2 publishes are handled as QoS 1:
//! PUBREC/PUBCOMP are answered, delivery is at least once), client certificates (agents log in
//! with their key-derived password inside the TLS session).
//!
//! The packet codec is rumqttc's `mqttbytes::v4`, the same one the agents use.
//!
//! A crate of its own, below the aggregator: it knows the wire's topic scheme and the agents'
//! key-derived passwords (`yunjian-protocol`) and nothing of the domain. What it hands over is
//! its delivery interface, [`Inbound`] with its [`AckToken`], which the aggregator's client of
//! an external broker produces too; what it counts is [`BrokerMetrics`], which the aggregator
//! holds and exports in `/metrics`. Its rate-limited warnings use `yunjian-ratelimit`, a crate
//! depending on nothing that the aggregator uses as well, so neither a copy here nor a
//! dependency on the aggregator or its core is needed.

pub mod acl;
mod conn;
mod inbound;
mod limit;
mod metrics;
mod router;

use bytes::Bytes;
pub use inbound::{AckToken, Inbound};
pub use metrics::{BrokerMetrics, Refused};
use rumqttc::mqttbytes::QoS;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use yunjian_protocol::MasterKey;
use yunjian_tls::{TlsError, TlsFiles};

pub(crate) use router::Router;

/// `[broker]` section of the aggregator config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Address of the plain (unencrypted) MQTT listener.
    pub listen: SocketAddr,
    /// Serve plain MQTT on `listen`. The default keeps the demo's loopback listener; production
    /// sets `[broker.tls]` and `plain = false`, so that reports and logins travel encrypted.
    pub plain: bool,
    /// Largest MQTT packet accepted (bytes); a bigger one closes the connection.
    pub max_packet_bytes: usize,
    /// Largest packet accepted before login, i.e. the CONNECT (bytes). An agent's CONNECT,
    /// signed last will included, is under 500 bytes; a connection announcing more is closed
    /// before its packet is read, so that clients that never log in cannot make the broker
    /// hold `max_packet_bytes` each.
    pub max_connect_bytes: usize,
    /// Time a new connection has to send its whole CONNECT (after the TLS handshake, if any);
    /// then it is closed.
    #[serde(with = "yunjian_time::duration")]
    pub connect_timeout: Duration,
    /// Client connections open at once, logged in or not, on the plain and TLS listeners
    /// together. Beyond it a new connection is closed as soon as it is accepted. Keep it below
    /// the open-file limit, which the aggregator raises to the hard limit at start.
    pub max_connections: usize,
    /// Client connections open at once from one source address. 256 covers a NAT gateway in
    /// front of a rack or a small VPC; list the address of a gateway that a larger part of the
    /// fleet sits behind in `unlimited_addresses`.
    pub max_connections_per_address: usize,
    /// Source addresses that only `max_connections` applies to: the machine itself (the demo,
    /// the simulator, a TLS-terminating proxy on the same host) and NAT gateways in front of
    /// many agents.
    pub unlimited_addresses: Vec<IpAddr>,
    /// QoS 1 messages kept per subscriber while it is slow or away; the oldest is dropped
    /// (and counted) beyond this.
    pub session_queue: usize,
    /// Unacknowledged QoS 1 messages in flight per subscriber.
    pub max_inflight: usize,
    /// Require agents (`yj-{node}` client ids) to log in with their derived password.
    pub require_login: bool,
    /// Password for other clients (operators' tools such as `mosquitto_sub`), user name
    /// `operator`. `None` and `allow_anonymous = false`: other clients are refused.
    pub operator_password: Option<String>,
    /// Let clients that are not agents connect without a password (tests, lab set-ups only).
    pub allow_anonymous: bool,
    /// MQTT over TLS: `listen` (8883 by convention), `cert` and `key` (PEM files). Unset: no
    /// TLS listener.
    pub tls: Option<BrokerTls>,
}

/// `[broker.tls]`: the TLS listener of the embedded broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// Address of the MQTT-over-TLS listener.
    pub listen: SocketAddr,
    /// The broker's certificate chain, PEM (server certificate first). Agents check it against
    /// their `mqtt.tls_ca`, for the host name or address they connect to.
    pub cert: std::path::PathBuf,
    /// The certificate's private key, PEM (PKCS#8, RSA or EC).
    pub key: std::path::PathBuf,
}

impl BrokerTls {
    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            plain: true,
            max_packet_bytes: 256 * 1024,
            max_connect_bytes: 4096,
            connect_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_connections_per_address: 256,
            unlimited_addresses: vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
            session_queue: 1000,
            max_inflight: 64,
            require_login: true,
            operator_password: None,
            allow_anonymous: false,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot listen on {addr} for the embedded MQTT broker: {source}. \
         If another broker (e.g. Mosquitto) already runs there, use it instead with \
         `--broker mqtt://{addr}`, or pick another port with `--mqtt-listen 127.0.0.1:PORT`"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded MQTT broker: {0}")]
    Tls(#[from] TlsError),
    #[error("embedded MQTT broker: no listener: `plain = false` needs a `[broker.tls]` section")]
    NoListener,
}

/// A running embedded broker.
#[derive(Debug, Clone)]
pub struct Broker {
    router: Arc<Router>,
    local_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
}

impl Broker {
    /// Bind the listener and start accepting. `internal` subscribers (filter, channel) receive
    /// every matching publish; their channels apply back-pressure to publishers.
    pub async fn start(
        config: BrokerConfig,
        master: Option<MasterKey>,
        metrics: Arc<BrokerMetrics>,
        internal: Vec<(String, mpsc::Sender<Inbound>)>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Broker, BrokerError> {
        if !config.plain && config.tls.is_none() {
            return Err(BrokerError::NoListener);
        }
        // everything that can fail before any listener is spawned
        let tls = match &config.tls {
            Some(t) => Some((
                bind(t.listen).await?,
                yunjian_tls::acceptor(&t.files(), &[b"mqtt"])?,
            )),
            None => None,
        };
        let plain = if config.plain {
            Some(bind(config.listen).await?)
        } else {
            None
        };
        let router = Arc::new(Router::new(config, master, metrics, internal));
        let mut broker = Broker {
            router: router.clone(),
            local_addr: None,
            tls_addr: None,
        };
        if let Some((listener, addr)) = plain {
            tokio::spawn(conn::accept_loop(
                listener,
                None,
                router.clone(),
                shutdown.clone(),
            ));
            tracing::info!(local_addr = %addr, "embedded MQTT broker listening");
            broker.local_addr = Some(addr);
        }
        if let Some(((listener, addr), acceptor)) = tls {
            tokio::spawn(conn::accept_loop(
                listener,
                Some(acceptor),
                router,
                shutdown,
            ));
            tracing::info!(local_addr = %addr, "embedded MQTT broker listening with TLS");
            broker.tls_addr = Some(addr);
        }
        Ok(broker)
    }

    /// The plain listener's address (`None` with `plain = false`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The TLS listener's address (`None` without `[broker.tls]`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Publish from the aggregator itself (e.g. a command to an agent).
    pub async fn publish(&self, topic: &str, payload: Bytes, qos: QoS, retain: bool) {
        self.router
            .route(topic, payload, qos, retain, None, Instant::now())
            .await;
    }

    /// Number of open client connections.
    pub fn connections(&self) -> usize {
        self.router.connections()
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let bind_error = |source| BrokerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}
