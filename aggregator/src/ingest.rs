//! Ingest: decode → verify → de-duplicate → apply to fleet state → hand to storage.
//!
//! One task drains the inbound channel in batches of up to [`BATCH`] messages: frames are
//! decoded and verified without any lock, then applied under one write lock of the fleet, then
//! the touched nodes' rows go to the storage thread together with the messages' ack tokens.
//! The storage thread commits and only then drops the tokens, which sends the PUBACKs.

use crate::fleet::{Applied, SharedFleet};
use crate::inbound::{AckToken, Inbound};
use crate::metrics::Metrics;
use crate::ratelimit::{now_ms, LogLimiter};
use crate::storage::{EventRow, NodeRow, Storage, WriteBatch};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use yunjian_protocol::{decode, topics, Body, Envelope, MasterKey, NodeKey};

/// Messages handled per batch.
pub const BATCH: usize = 1024;

static REJECT_LOG: LogLimiter = LogLimiter::new(10_000);
static TOPIC_LOG: LogLimiter = LogLimiter::new(10_000);
static STORAGE_LOG: LogLimiter = LogLimiter::new(10_000);

/// Work for the storage thread: rows to write, and the acks to release once they are durable.
#[derive(Debug, Default)]
pub struct Pending {
    pub batch: WriteBatch,
    pub acks: Vec<AckToken>,
}

/// A handle for other parts (policy engine, web actions) to write through the storage thread,
/// in order with ingest's writes.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: Option<mpsc::Sender<Pending>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage is not available (shutting down, or not configured)")]
pub struct StoreClosed;

impl StoreHandle {
    pub fn new(tx: mpsc::Sender<Pending>) -> Self {
        StoreHandle { tx: Some(tx) }
    }

    /// A handle that stores nothing and refuses writes (tests of read-only parts).
    pub fn detached() -> Self {
        StoreHandle { tx: None }
    }

    /// Queue a batch; it is committed in order with everything else.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StoreClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(StoreClosed)?;
        tx.send(Pending {
            batch,
            acks: Vec::new(),
        })
        .await
        .map_err(|_| StoreClosed)
    }
}

/// The decode/verify/apply stage, independent of channels so benchmarks can drive it directly.
#[derive(Debug)]
pub struct Ingester {
    fleet: SharedFleet,
    metrics: Arc<Metrics>,
    master: MasterKey,
    /// Verified nodes' keys (a node enters only after its first valid frame).
    keys: HashMap<String, NodeKey>,
    decoded: Vec<(Envelope, Bytes, u64)>,
}

impl Ingester {
    pub fn new(fleet: SharedFleet, metrics: Arc<Metrics>, master: MasterKey) -> Self {
        Ingester {
            fleet,
            metrics,
            master,
            keys: HashMap::new(),
            decoded: Vec::with_capacity(BATCH),
        }
    }

    fn verify(&mut self, msg: &Inbound) -> Option<Envelope> {
        let m = &self.metrics;
        m.messages_in.fetch_add(1, Relaxed);
        m.bytes_in.fetch_add(msg.payload.len() as u64, Relaxed);
        let Some((node, _kind)) = topics::parse(&msg.topic) else {
            m.bad_topic.fetch_add(1, Relaxed);
            if let Some(n) = TOPIC_LOG.check() {
                tracing::warn!(topic = %msg.topic, suppressed = n, "message on a topic outside the Yunjian scheme ignored");
            }
            return None;
        };
        let result = match self.keys.get(node) {
            Some(k) => decode(&msg.payload, node, k),
            None => {
                let k = self.master.node_key(node);
                let r = decode(&msg.payload, node, &k);
                if r.is_ok() {
                    self.keys.insert(node.to_string(), k);
                }
                r
            }
        };
        match result {
            Ok(env) => Some(env),
            Err(e) => {
                m.decode_error(&e);
                if let Some(n) = REJECT_LOG.check() {
                    tracing::warn!(topic = %msg.topic, kind = e.kind(), suppressed = n, "message rejected: {e}");
                }
                None
            }
        }
    }

    /// Handle a batch: returns what storage must persist before the acks go out.
    pub fn process(&mut self, msgs: &mut Vec<Inbound>) -> Pending {
        let mut acks = Vec::with_capacity(msgs.len());
        self.decoded.clear();
        for mut msg in msgs.drain(..) {
            if let Some(env) = self.verify(&msg) {
                let latency = msg.received.elapsed().as_nanos() as u64;
                self.decoded.push((env, msg.payload.clone(), latency));
            }
            if let Some(a) = msg.ack.take() {
                acks.push(a);
            }
        }
        let mut batch = WriteBatch::default();
        if self.decoded.is_empty() {
            return Pending { batch, acks };
        }
        let now = now_ms();
        let m = &self.metrics;
        let mut rows: HashMap<String, NodeRow> = HashMap::new();
        let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
        for (env, frame, latency) in self.decoded.drain(..) {
            if let Body::Event(e) = &env.body {
                batch.events.push(EventRow {
                    node: env.node.clone(),
                    ts_ms: env.ts_ms,
                    severity: e.severity,
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
            // status is not persisted; every other message moves the counters, and four
            // kinds replace a stored frame
            let persist = !matches!(env.body, Body::Status(_));
            let kind = env.body.kind();
            let node = env.node.clone();
            let newest = match fleet.apply(env, now) {
                Applied::Fresh => true,
                Applied::AfterGap { missing } => {
                    m.gaps.fetch_add(missing, Relaxed);
                    true
                }
                Applied::Late => {
                    m.late.fetch_add(1, Relaxed);
                    false
                }
                Applied::Duplicate => {
                    m.duplicates.fetch_add(1, Relaxed);
                    continue;
                }
            };
            m.applied.fetch_add(1, Relaxed);
            m.ingest_latency.observe_ns(latency);
            let (true, Some(st)) = (persist, fleet.get(&node)) else {
                continue;
            };
            let mut row = NodeRow::counters(st);
            if let (true, Some(slot)) = (newest, row.frame_mut(kind)) {
                *slot = Some(frame);
            }
            match rows.get_mut(&node) {
                Some(r) => r.merge(row),
                None => {
                    rows.insert(node, row);
                }
            }
        }
        drop(fleet);
        batch.nodes = rows.into_values().collect();
        Pending { batch, acks }
    }
}

/// The ingest task: drain `rx`, process, pass to storage, signal changes.
pub async fn run(
    mut ingester: Ingester,
    mut rx: mpsc::Receiver<Inbound>,
    storage: mpsc::Sender<Pending>,
    changes: watch::Sender<u64>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut buf, BATCH).await > 0 {
        let pending = ingester.process(&mut buf);
        changes.send_modify(|v| *v += 1);
        if pending.batch.is_empty() {
            drop(pending.acks); // nothing to persist: acknowledge now
            continue;
        }
        if storage.send(pending).await.is_err() {
            break;
        }
    }
}

/// The storage thread: merge what is queued, commit, then release the acks. On error it keeps
/// the acks and retries, so back-pressure reaches the publishers instead of losing data.
pub fn storage_loop(
    mut storage: Box<dyn Storage>,
    mut rx: mpsc::Receiver<Pending>,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut nodes: HashMap<String, NodeRow> = HashMap::new();
        let mut events = Vec::new();
        let mut alarms = Vec::new();
        let mut audit = Vec::new();
        let mut register = Vec::new();
        let mut acks = Vec::new();
        let mut add = |p: Pending| {
            for n in p.batch.nodes {
                match nodes.get_mut(&n.node) {
                    Some(old) => old.merge(n),
                    None => {
                        nodes.insert(n.node.clone(), n);
                    }
                }
            }
            events.extend(p.batch.events);
            alarms.extend(p.batch.alarms);
            audit.extend(p.batch.audit);
            register.extend(p.batch.register);
            acks.extend(p.acks);
        };
        add(first);
        for _ in 0..256 {
            match rx.try_recv() {
                Ok(p) => add(p),
                Err(_) => break,
            }
        }
        let batch = WriteBatch {
            nodes: nodes.into_values().collect(),
            events,
            alarms,
            audit,
            register,
        };
        let rows = (batch.nodes.len()
            + batch.events.len()
            + batch.alarms.len()
            + batch.audit.len()
            + batch.register.len()) as u64;
        loop {
            match storage.write(&batch) {
                Ok(()) => {
                    metrics.storage_batches.fetch_add(1, Relaxed);
                    metrics.storage_rows.fetch_add(rows, Relaxed);
                    break;
                }
                Err(e) => {
                    metrics.storage_errors.fetch_add(1, Relaxed);
                    if let Some(n) = STORAGE_LOG.check() {
                        tracing::error!(
                            suppressed = n,
                            "storage write failed, retrying (acks held back): {e}"
                        );
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        drop(acks);
    }
}
