//! One task per client connection.

use crate::acl::{self, Principal};
use crate::router::Router;
use crate::router::{min_qos, SessionRef};
use crate::{AckToken, Refused};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    self, ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{valid_filter, valid_topic, Error as CodecError, QoS};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use yunjian_ratelimit::Backoff;
use yunjian_tls::TlsAcceptor;

/// Read buffer growth step for a connection.
const READ_CHUNK: usize = 32 * 1024;

/// Time a new connection on the TLS listener has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept on `listener`; with `tls`, each connection does its TLS handshake in its own task
/// before the same MQTT handling as plain connections. A connection beyond the caps
/// (`max_connections`, `max_connections_per_address`) is closed at once; failed accepts (out
/// of file descriptors) back off from 10 ms to 1 s.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    if let Err(why) = router.opened(peer.ip()) {
                        if let Some(n) = router.refuse_log.check() {
                            tracing::warn!(
                                %peer, reason = why.as_str(), suppressed = n,
                                max_connections = router.config.max_connections,
                                max_connections_per_address = router.config.max_connections_per_address,
                                "MQTT connection refused: too many open (see [broker] max_connections, \
                                 max_connections_per_address, unlimited_addresses)"
                            );
                        }
                        continue; // dropping `stream` closes it
                    }
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        // counted out when the task ends, whichever way it ends
                        let _open = Opened(&router, peer.ip());
                        let served = match tls {
                            None => serve(stream, &router, shutdown).await,
                            Some(tls) => match handshake(&tls, stream).await {
                                Ok(stream) => serve(stream, &router, shutdown).await,
                                Err(e) => Err(e),
                            },
                        };
                        if let Err(e) = served {
                            router.metrics.protocol_errors.fetch_add(1, Relaxed);
                            if let Some(why) = e.refused() {
                                router.metrics.refuse(why);
                            }
                            if let Some(n) = router.proto_log.check() {
                                tracing::warn!(%peer, suppressed = n, "MQTT connection closed: {e}");
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: every retry fails the same way
                    // until a connection closes, so pause, longer while it lasts.
                    router.metrics.accept_errors.fetch_add(1, Relaxed);
                    let pause = backoff.failed();
                    if let Some(n) = router.accept_log.check() {
                        tracing::warn!(suppressed = n, ?pause, "MQTT accept failed: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// A connection that [`Router::opened`] counted in; counted out on drop.
struct Opened<'a>(&'a Router, std::net::IpAddr);

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        self.0.closed(self.1);
    }
}

async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
) -> Result<yunjian_tls::server::TlsStream<TcpStream>, ConnError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
        .map_err(ConnError::Handshake)
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no TLS handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("MQTT codec: {0}")]
    Codec(CodecError),
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("CONNECT of {0} bytes announced, more than max_connect_bytes ({1})")]
    ConnectTooLarge(usize, usize),
    #[error("first packet was not CONNECT")]
    NotConnect,
    #[error("invalid topic {0:?} in PUBLISH")]
    BadTopic(String),
    #[error("keep-alive expired")]
    KeepAlive,
}

impl ConnError {
    /// The refusal it counts as, for a connection closed before login.
    fn refused(&self) -> Option<Refused> {
        match self {
            ConnError::ConnectTimeout(_) => Some(Refused::ConnectTimeout),
            ConnError::ConnectTooLarge(..) => Some(Refused::ConnectTooLarge),
            _ => None,
        }
    }
}

/// Read the next complete packet, reading more from the socket as needed.
async fn read_packet<S: AsyncRead>(
    rd: &mut ReadHalf<S>,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Packet>, ConnError> {
    loop {
        match v4::read(buf, max) {
            Ok(p) => return Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => return Err(ConnError::Codec(e)),
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn write(packet: Result<usize, CodecError>) -> Result<(), ConnError> {
    packet.map(|_| ()).map_err(ConnError::Codec)
}

/// Write out `wbuf` and flush: a TLS stream may hold back the last record until flushed.
async fn send<S: AsyncWrite>(wr: &mut WriteHalf<S>, wbuf: &[u8]) -> std::io::Result<()> {
    wr.write_all(wbuf).await?;
    wr.flush().await
}

/// One client connection, plain TCP or TLS.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    router: &Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let max = router.config.max_packet_bytes;
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut wbuf = BytesMut::with_capacity(1024);

    // Before login the client is nobody: a small CONNECT, soon, or the connection goes.
    let (connect_max, connect_timeout) = (
        router.config.max_connect_bytes,
        router.config.connect_timeout,
    );
    let first = tokio::time::timeout(
        connect_timeout,
        read_packet(&mut rd, &mut rbuf, connect_max),
    )
    .await
    .map_err(|_| ConnError::ConnectTimeout(connect_timeout))?
    .map_err(|e| match e {
        ConnError::Codec(CodecError::PayloadSizeLimitExceeded(n)) => {
            ConnError::ConnectTooLarge(n, connect_max)
        }
        e => e,
    })?;
    let connect = match first {
        Some(Packet::Connect(c)) => c,
        Some(_) => return Err(ConnError::NotConnect),
        None => return Ok(()),
    };

    let refuse = |wbuf: &mut BytesMut, code| write(ConnAck::new(code, false).write(wbuf));
    let mut client_id = connect.client_id.clone();
    if client_id.is_empty() {
        if !connect.clean_session {
            refuse(&mut wbuf, ConnectReturnCode::BadClientId)?;
            send(&mut wr, &wbuf).await?;
            return Ok(());
        }
        client_id = format!("anon-{}", router.metrics.connects_total.load(Relaxed));
    }
    let cfg = &router.config;
    let principal = match acl::login(
        &client_id,
        connect
            .login
            .as_ref()
            .map(|l| (l.username.as_str(), l.password.as_str())),
        router.master.as_ref(),
        cfg.require_login,
        cfg.operator_password.as_deref(),
        cfg.allow_anonymous,
    ) {
        Ok(p) => p,
        Err(e) => {
            router.metrics.auth_failures.fetch_add(1, Relaxed);
            if let Some(n) = router.auth_log.check() {
                tracing::warn!(suppressed = n, "MQTT login refused: {e}");
            }
            let code = match e {
                acl::LoginError::BadClientId(_) => ConnectReturnCode::BadClientId,
                acl::LoginError::NotAllowed(_) => ConnectReturnCode::NotAuthorized,
                _ => ConnectReturnCode::BadUserNamePassword,
            };
            refuse(&mut wbuf, code)?;
            send(&mut wr, &wbuf).await?;
            return Ok(());
        }
    };
    if let Some(w) = &connect.last_will {
        if !acl::may_publish(&principal, &w.topic) || !valid_topic(&w.topic) {
            router.metrics.acl_denied.fetch_add(1, Relaxed);
            refuse(&mut wbuf, ConnectReturnCode::NotAuthorized)?;
            send(&mut wr, &wbuf).await?;
            return Ok(());
        }
    }

    let notify = Arc::new(Notify::new());
    let (kick_tx, mut kick_rx) = oneshot::channel();
    let (session, conn_id, present) =
        router.attach(&client_id, connect.clean_session, notify.clone(), kick_tx);
    write(ConnAck::new(ConnectReturnCode::Success, present).write(&mut wbuf))?;
    send(&mut wr, &wbuf).await?;
    wbuf.clear();
    notify.notify_one(); // flush anything queued while the client was away

    let mut conn = Conn {
        router,
        client_id: &client_id,
        principal,
        session: &session,
        ack_tx: None,
    };
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u16>();
    conn.ack_tx = Some(ack_tx);

    let keep_alive = match connect.keep_alive {
        0 => None,
        k => Some(Duration::from_millis(k as u64 * 1500)),
    };
    let mut last_rx = Instant::now();
    // a packet larger than READ_CHUNK was read since the buffer was last let go
    let mut grown = false;
    let result: Result<bool, ConnError> = async {
        loop {
            let deadline = keep_alive.map(|k| last_rx + k);
            // Payloads are handed on as zero-copy slices of this buffer, which pins its
            // allocation until ingest drops them: reserve in large steps so a busy connection
            // allocates once per READ_CHUNK instead of copying its tail on every small read.
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            // Every complete packet already buffered first: a client may pipeline packets
            // behind its CONNECT in the same segment.
            loop {
                let buffered = rbuf.len();
                match v4::read(&mut rbuf, max) {
                    Ok(Packet::Disconnect) => return Ok(true),
                    Ok(p) => {
                        grown |= buffered - rbuf.len() > READ_CHUNK;
                        conn.handle(p, &mut wbuf, last_rx).await?
                    }
                    Err(CodecError::InsufficientBytes(_)) => break,
                    Err(e) => return Err(ConnError::Codec(e)),
                }
            }
            // A large packet grew the buffer to its size, and `reserve` would keep reusing that
            // allocation once its payload is dropped: let it go with the payload instead, so
            // that a connection holds READ_CHUNK between large packets, not the largest seen.
            if grown && rbuf.is_empty() {
                rbuf = BytesMut::new();
                grown = false;
            }
            if !wbuf.is_empty() {
                send(&mut wr, &wbuf).await?;
                wbuf.clear();
            }
            tokio::select! {
                r = rd.read_buf(&mut rbuf) => {
                    if r? == 0 {
                        return Ok(false); // socket closed without DISCONNECT: abnormal
                    }
                    last_rx = Instant::now();
                }
                Some(pkid) = ack_rx.recv() => {
                    write(PubAck::new(pkid).write(&mut wbuf))?;
                    while let Ok(pkid) = ack_rx.try_recv() {
                        write(PubAck::new(pkid).write(&mut wbuf))?;
                    }
                }
                _ = notify.notified() => conn.drain(&mut wbuf)?,
                _ = &mut kick_rx => return Ok(true), // taken over by a newer connection
                _ = shutdown.changed() => return Ok(true),
                _ = sleep_until(deadline) => return Err(ConnError::KeepAlive),
            }
            if !wbuf.is_empty() {
                send(&mut wr, &wbuf).await?;
                wbuf.clear();
            }
        }
    }
    .await;

    router.detach(&client_id, conn_id);
    let clean_exit = matches!(result, Ok(true));
    if !clean_exit {
        if let Some(w) = connect.last_will {
            router
                .route(
                    &w.topic,
                    w.message,
                    min_qos(w.qos, QoS::AtLeastOnce),
                    w.retain,
                    None,
                    Instant::now(),
                )
                .await;
        }
    }
    result.map(|_| ())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

struct Conn<'a> {
    router: &'a Arc<Router>,
    client_id: &'a str,
    principal: Principal,
    session: &'a SessionRef,
    ack_tx: Option<mpsc::UnboundedSender<u16>>,
}

impl Conn<'_> {
    async fn handle(
        &mut self,
        p: Packet,
        wbuf: &mut BytesMut,
        received: Instant,
    ) -> Result<(), ConnError> {
        match p {
            Packet::Publish(p) => self.publish(p, wbuf, received).await?,
            Packet::PubAck(a) => {
                let notify = {
                    let mut g = self.session.lock().unwrap_or_else(|e| e.into_inner());
                    g.inflight.remove(&a.pkid);
                    g.conn.as_ref().map(|c| c.notify.clone())
                };
                if let Some(n) = notify {
                    n.notify_one();
                }
            }
            Packet::PubRel(r) => write(PubComp::new(r.pkid).write(wbuf))?,
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for f in s.filters {
                    if !valid_filter(&f.path) || !acl::may_subscribe(&self.principal, &f.path) {
                        self.router.metrics.acl_denied.fetch_add(1, Relaxed);
                        if let Some(n) = self.router.acl_log.check() {
                            tracing::warn!(client = self.client_id, filter = %f.path, suppressed = n, "subscription refused");
                        }
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    let qos = min_qos(f.qos, QoS::AtLeastOnce);
                    self.router
                        .subscribe(self.client_id, self.session, &f.path, qos);
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                write(SubAck::new(s.pkid, codes).write(wbuf))?;
            }
            Packet::Unsubscribe(u) => {
                for t in &u.topics {
                    self.router.unsubscribe(self.client_id, self.session, t);
                }
                write(UnsubAck::new(u.pkid).write(wbuf))?;
            }
            Packet::PingReq => write(v4::PingResp.write(wbuf))?,
            // Client-only packets or a second CONNECT: ignore the former, the codec rejects
            // the latter's content as we never expect it; both are harmless here.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Disconnect => {}
        }
        Ok(())
    }

    async fn publish(
        &mut self,
        p: Publish,
        wbuf: &mut BytesMut,
        received: Instant,
    ) -> Result<(), ConnError> {
        let m = &self.router.metrics;
        m.publishes_in.fetch_add(1, Relaxed);
        if !valid_topic(&p.topic) {
            return Err(ConnError::BadTopic(p.topic));
        }
        let ack = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => self
                .ack_tx
                .as_ref()
                .map(|tx| AckToken::broker(tx.clone(), p.pkid)),
            QoS::ExactlyOnce => {
                // handled as QoS 1 delivery; the QoS 2 handshake is answered
                write(PubRec::new(p.pkid).write(wbuf))?;
                None
            }
        };
        if !acl::may_publish(&self.principal, &p.topic) {
            m.acl_denied.fetch_add(1, Relaxed);
            if let Some(n) = self.router.acl_log.check() {
                tracing::warn!(client = self.client_id, topic = %p.topic, suppressed = n, "publish refused by ACL (acknowledged and dropped)");
            }
            return Ok(()); // `ack` drops here: MQTT 3.1.1 has no negative PUBACK
        }
        self.router
            .route(&p.topic, p.payload, p.qos, p.retain, ack, received)
            .await;
        Ok(())
    }

    fn drain(&mut self, wbuf: &mut BytesMut) -> Result<(), ConnError> {
        let max_inflight = self.router.config.max_inflight;
        let mut g = self.session.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((pkid, out)) = g.next_out(max_inflight) {
            let mut p = Publish::new(out.topic.as_ref(), out.qos, out.payload.clone());
            p.pkid = pkid;
            p.retain = out.retain;
            write(p.write(wbuf))?;
            self.router.metrics.deliveries_out.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}
