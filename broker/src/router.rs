//! Sessions, the subscription index, retained messages and routing.

use crate::limit::Limits;
use crate::{AckToken, BrokerConfig, BrokerMetrics, Inbound, Refused};
use bytes::Bytes;
use rumqttc::mqttbytes::{matches, QoS};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Notify};
use yunjian_protocol::MasterKey;
use yunjian_ratelimit::LogLimiter;

/// A message waiting for, or in flight to, a subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// The live connection currently attached to a session.
#[derive(Debug)]
pub(crate) struct ConnLink {
    pub id: u64,
    pub notify: Arc<Notify>,
    pub kick: Option<oneshot::Sender<()>>,
}

/// Per client id; survives reconnects when clean session is off.
#[derive(Debug)]
pub(crate) struct Session {
    pub clean: bool,
    pub filters: HashMap<String, QoS>,
    pub queue: VecDeque<Out>,
    pub inflight: BTreeMap<u16, Out>,
    next_pkid: u16,
    pub conn: Option<ConnLink>,
}

impl Session {
    fn new(clean: bool) -> Self {
        Session {
            clean,
            filters: HashMap::new(),
            queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_pkid: 0,
            conn: None,
        }
    }

    /// Next message to write, with its packet id for QoS 1 (moved to in-flight).
    pub fn next_out(&mut self, max_inflight: usize) -> Option<(u16, Out)> {
        let front = self.queue.front()?;
        if front.qos == QoS::AtMostOnce {
            return self.queue.pop_front().map(|o| (0, o));
        }
        if self.inflight.len() >= max_inflight {
            return None;
        }
        let pkid = loop {
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                break self.next_pkid;
            }
        };
        let out = self.queue.pop_front()?;
        self.inflight.insert(pkid, out.clone());
        Some((pkid, out))
    }
}

pub(crate) type SessionRef = Arc<Mutex<Session>>;

#[derive(Debug, Default)]
struct SubIndex {
    /// Filters without wildcards, by topic → client → QoS.
    exact: HashMap<String, HashMap<String, QoS>>,
    /// Wildcard filters → client → QoS (few: operators' tools).
    wild: HashMap<String, HashMap<String, QoS>>,
}

impl SubIndex {
    fn bucket(&mut self, filter: &str) -> &mut HashMap<String, HashMap<String, QoS>> {
        if filter.contains(['+', '#']) {
            &mut self.wild
        } else {
            &mut self.exact
        }
    }

    fn add(&mut self, filter: &str, client: &str, qos: QoS) {
        self.bucket(filter)
            .entry(filter.to_string())
            .or_default()
            .insert(client.to_string(), qos);
    }

    fn remove(&mut self, filter: &str, client: &str) {
        let b = self.bucket(filter);
        if let Some(m) = b.get_mut(filter) {
            m.remove(client);
            if m.is_empty() {
                b.remove(filter);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
pub(crate) struct Router {
    pub config: BrokerConfig,
    pub master: Option<MasterKey>,
    pub metrics: Arc<BrokerMetrics>,
    internal: Vec<(String, mpsc::Sender<Inbound>)>,
    sessions: Mutex<HashMap<String, SessionRef>>,
    subs: RwLock<SubIndex>,
    retained: RwLock<HashMap<String, (Bytes, QoS)>>,
    conn_ids: AtomicU64,
    open: AtomicUsize,
    limits: Limits,
    /// Rate-limited warnings: refused logins, connections closed on errors, ACL refusals,
    /// full subscriber queues, connections refused at accept, failed accepts.
    pub auth_log: LogLimiter,
    pub proto_log: LogLimiter,
    pub acl_log: LogLimiter,
    drop_log: LogLimiter,
    pub refuse_log: LogLimiter,
    pub accept_log: LogLimiter,
}

impl Router {
    pub fn new(
        config: BrokerConfig,
        master: Option<MasterKey>,
        metrics: Arc<BrokerMetrics>,
        internal: Vec<(String, mpsc::Sender<Inbound>)>,
    ) -> Self {
        let limits = Limits::new(&config);
        Router {
            config,
            master,
            metrics,
            internal,
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubIndex::default()),
            retained: RwLock::new(HashMap::new()),
            conn_ids: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            limits,
            auth_log: LogLimiter::new(10_000),
            proto_log: LogLimiter::new(10_000),
            acl_log: LogLimiter::new(10_000),
            drop_log: LogLimiter::new(10_000),
            refuse_log: LogLimiter::new(10_000),
            accept_log: LogLimiter::new(10_000),
        }
    }

    pub fn connections(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// A connection from `peer` was accepted: count it in, unless a connection cap refuses it
    /// (counted in the refusals; the caller closes it).
    pub fn opened(&self, peer: IpAddr) -> Result<(), Refused> {
        if let Err(why) = self.limits.admit(peer) {
            self.metrics.refuse(why);
            return Err(why);
        }
        self.open.fetch_add(1, Relaxed);
        self.metrics.connections.fetch_add(1, Relaxed);
        self.metrics.connects_total.fetch_add(1, Relaxed);
        Ok(())
    }

    /// A connection that [`Router::opened`] counted in has closed.
    pub fn closed(&self, peer: IpAddr) {
        self.limits.release(peer);
        self.open.fetch_sub(1, Relaxed);
        self.metrics.connections.fetch_sub(1, Relaxed);
    }

    /// Attach a new connection to the client's session, kicking any previous connection.
    /// Returns the session, the connection id and whether a previous session was resumed.
    pub fn attach(
        &self,
        client_id: &str,
        clean: bool,
        notify: Arc<Notify>,
        kick: oneshot::Sender<()>,
    ) -> (SessionRef, u64, bool) {
        let id = self.conn_ids.fetch_add(1, Relaxed);
        let mut sessions = lock(&self.sessions);
        let existing = sessions.get(client_id).cloned();
        let (session, present) = match existing {
            Some(s) => {
                let mut g = lock(&s);
                if let Some(old) = g.conn.take() {
                    if let Some(k) = old.kick {
                        let _ = k.send(());
                    }
                }
                if clean || g.clean {
                    let filters: Vec<String> = g.filters.keys().cloned().collect();
                    drop(g);
                    let mut idx = self.subs.write().unwrap_or_else(|p| p.into_inner());
                    for f in filters {
                        idx.remove(&f, client_id);
                    }
                    drop(idx);
                    let fresh = Arc::new(Mutex::new(Session::new(clean)));
                    sessions.insert(client_id.to_string(), fresh.clone());
                    (fresh, false)
                } else {
                    // resend what was in flight, then the queue
                    let inflight = std::mem::take(&mut g.inflight);
                    for (_, o) in inflight.into_iter().rev() {
                        g.queue.push_front(o);
                    }
                    drop(g);
                    (s, true)
                }
            }
            None => {
                let fresh = Arc::new(Mutex::new(Session::new(clean)));
                sessions.insert(client_id.to_string(), fresh.clone());
                (fresh, false)
            }
        };
        lock(&session).conn = Some(ConnLink {
            id,
            notify,
            kick: Some(kick),
        });
        (session, id, present)
    }

    /// The connection `conn_id` ended. A clean session is removed with its subscriptions; a
    /// persistent one keeps them and queues for the client's return.
    pub fn detach(&self, client_id: &str, conn_id: u64) {
        let mut sessions = lock(&self.sessions);
        let Some(s) = sessions.get(client_id).cloned() else {
            return;
        };
        let mut g = lock(&s);
        if g.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return; // a newer connection took the session over
        }
        g.conn = None;
        if g.clean {
            let filters: Vec<String> = g.filters.keys().cloned().collect();
            drop(g);
            sessions.remove(client_id);
            let mut idx = self.subs.write().unwrap_or_else(|p| p.into_inner());
            for f in filters {
                idx.remove(&f, client_id);
            }
        }
    }

    /// Add subscriptions and return the retained messages that match them.
    pub fn subscribe(&self, client_id: &str, session: &SessionRef, filter: &str, qos: QoS) {
        lock(session).filters.insert(filter.to_string(), qos);
        self.subs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(filter, client_id, qos);
        let retained = self.retained.read().unwrap_or_else(|p| p.into_inner());
        let mut g = lock(session);
        let mut push = |topic: &str, payload: &Bytes, rq: QoS| {
            g.queue.push_back(Out {
                topic: Arc::from(topic),
                payload: payload.clone(),
                qos: min_qos(rq, qos),
                retain: true,
            });
        };
        if filter.contains(['+', '#']) {
            for (t, (p, q)) in retained.iter().filter(|(t, _)| matches(t, filter)) {
                push(t, p, *q);
            }
        } else if let Some((p, q)) = retained.get(filter) {
            push(filter, p, *q);
        }
        if let Some(c) = &g.conn {
            c.notify.notify_one();
        }
    }

    pub fn unsubscribe(&self, client_id: &str, session: &SessionRef, filter: &str) {
        lock(session).filters.remove(filter);
        self.subs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(filter, client_id);
    }

    /// Route one publish to the internal subscribers (awaiting their back-pressure) and to the
    /// client subscribers' queues. `ack` is the PUBACK token of a QoS 1 publish: it goes with
    /// the message to the first internal subscriber; otherwise it is dropped (acknowledged) here.
    pub async fn route(
        &self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut ack: Option<AckToken>,
        received: Instant,
    ) {
        if retain {
            let mut r = self.retained.write().unwrap_or_else(|p| p.into_inner());
            if payload.is_empty() {
                r.remove(topic);
            } else {
                r.insert(
                    topic.to_string(),
                    (payload.clone(), min_qos(qos, QoS::AtLeastOnce)),
                );
            }
        }
        for (filter, tx) in &self.internal {
            if matches(topic, filter) {
                let msg = Inbound {
                    topic: topic.to_string(),
                    payload: payload.clone(),
                    received,
                    ack: ack.take(),
                };
                // A closed channel means the aggregator is shutting down.
                let _ = tx.send(msg).await;
            }
        }
        let targets: Vec<(String, QoS)> = {
            let idx = self.subs.read().unwrap_or_else(|p| p.into_inner());
            let mut t: Vec<(String, QoS)> = idx
                .exact
                .get(topic)
                .map(|m| m.iter().map(|(c, q)| (c.clone(), *q)).collect())
                .unwrap_or_default();
            for (f, m) in idx.wild.iter() {
                if matches(topic, f) {
                    t.extend(m.iter().map(|(c, q)| (c.clone(), *q)));
                }
            }
            t
        };
        if targets.is_empty() {
            return;
        }
        let topic: Arc<str> = Arc::from(topic);
        let sessions: Vec<SessionRef> = {
            let s = lock(&self.sessions);
            targets
                .iter()
                .filter_map(|(c, _)| s.get(c).cloned())
                .collect()
        };
        for (s, (_, sub_qos)) in sessions.iter().zip(&targets) {
            let mut g = lock(s);
            if g.queue.len() >= self.config.session_queue {
                g.queue.pop_front();
                self.metrics.dropped.fetch_add(1, Relaxed);
                if let Some(n) = self.drop_log.check() {
                    tracing::warn!(
                        %topic,
                        suppressed = n,
                        limit = self.config.session_queue,
                        "subscriber queue full: oldest message dropped (counted in yunjian_broker_dropped_total)"
                    );
                }
            }
            g.queue.push_back(Out {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: min_qos(qos, *sub_qos),
                retain: false,
            });
            if let Some(c) = &g.conn {
                c.notify.notify_one();
            }
        }
    }
}

pub(crate) fn min_qos(a: QoS, b: QoS) -> QoS {
    let n = (a as u8).min(b as u8).min(1);
    if n == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}
