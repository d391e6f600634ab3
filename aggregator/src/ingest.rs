//! Ingest: decode → verify → de-duplicate → apply to fleet state → hand to storage.
//!
//! One task drains the inbound channel in batches of up to [`BATCH`] messages: frames are
//! decoded and verified without any lock, then applied under one write lock of the fleet, then
//! the touched nodes' rows go to the storage thread together with the messages' ack tokens.
//! The storage thread commits and only then drops the tokens, which sends the PUBACKs.

use crate::fleet::{Applied, SharedFleet};
use crate::metrics::Metrics;
use crate::ratelimit::{now_ms, LogLimiter};
use crate::store::{EventRow, NodeRow, Schema, SelRow, WriteBatch};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use yunjian_broker::{AckToken, Inbound};
use yunjian_protocol::{decode, topics, Body, Envelope, FrameError, MasterKey, NodeKey, Role};

/// Command evidence held for results not yet arrived (an agent sends one right before its
/// result): past this many, those held are dropped with a warning.
const MAX_PENDING_EVIDENCE: usize = 1024;

/// Messages handled per batch.
pub const BATCH: usize = 1024;

/// `[event_time]`: how far a frame's event time (`Envelope::ts_ms`) may be from the
/// aggregator's wall clock. Event time drives shared state — the usage history's "today", the
/// idle findings, exemptions' expiry — so one node's clock (or a hostile node) must not move
/// it: a frame outside the bounds is refused (acknowledged and dropped), counted in
/// `yunjian_frames_refused_total{reason="time_ahead"|"time_behind"}` and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimeConfig {
    /// Largest lead of an event time over the aggregator's clock (agents' clocks drift; a
    /// simulator's accelerated clock must start far enough in the past to stay behind now).
    #[serde(with = "crate::time::duration")]
    pub max_ahead: Duration,
    /// Largest lag of live data behind the aggregator's clock, e.g. `"30d"` (an agent's
    /// buffer replays at most its cap's worth of an outage). Unset: no bound.
    #[serde(with = "crate::time::duration::option")]
    pub max_behind: Option<Duration>,
    /// A declared backfill: data older than `max_behind` is still accepted from this date
    /// (`YYYY-MM-DD`, Beijing time) on — imported history, a simulator's backfill.
    pub backfill_from: Option<crate::time::Day>,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        EventTimeConfig {
            max_ahead: Duration::from_secs(10 * 60),
            max_behind: None,
            backfill_from: None,
        }
    }
}

impl EventTimeConfig {
    /// The bounds as checked by ingest.
    pub fn bounds(&self) -> TimeBounds {
        TimeBounds {
            max_ahead_ms: self.max_ahead.as_millis() as u64,
            max_behind_ms: self.max_behind.map(|d| d.as_millis() as u64),
            backfill_from_ms: self
                .backfill_from
                .map(|d| d.start_ms(crate::time::BEIJING_OFFSET_MS)),
        }
    }
}

/// [`EventTimeConfig`] in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    pub max_ahead_ms: u64,
    pub max_behind_ms: Option<u64>,
    pub backfill_from_ms: Option<u64>,
}

impl Default for TimeBounds {
    fn default() -> Self {
        EventTimeConfig::default().bounds()
    }
}

impl TimeBounds {
    /// `None` when `ts_ms` is acceptable at wall time `now_ms`, else the refusal's label.
    pub fn check(&self, ts_ms: u64, now_ms: u64) -> Option<&'static str> {
        if ts_ms > now_ms.saturating_add(self.max_ahead_ms) {
            return Some("time_ahead");
        }
        let behind = self
            .max_behind_ms
            .is_some_and(|max| ts_ms < now_ms.saturating_sub(max));
        let backfill = self.backfill_from_ms.is_some_and(|from| ts_ms >= from);
        (behind && !backfill).then_some("time_behind")
    }
}

/// Work for the storage thread: rows to write, and the acks to release once they are durable.
#[derive(Debug, Default)]
pub struct Pending {
    pub batch: WriteBatch,
    pub acks: Vec<AckToken>,
    /// Told once the batch is committed (a person's action waits for it).
    pub committed: Option<oneshot::Sender<()>>,
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
            ..Pending::default()
        })
        .await
        .map_err(|_| StoreClosed)
    }

    /// Queue a batch and wait until it is committed, in order with everything else. A
    /// storage that fails keeps retrying (and logging), so this waits rather than pretend;
    /// `Err` only when storage is shutting down, and then nothing of the batch was written.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StoreClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(StoreClosed)?;
        let (done, committed) = oneshot::channel();
        tx.send(Pending {
            batch,
            acks: Vec::new(),
            committed: Some(done),
        })
        .await
        .map_err(|_| StoreClosed)?;
        committed.await.map_err(|_| StoreClosed)
    }
}

/// The decode/verify/apply stage, independent of channels so benchmarks can drive it directly.
#[derive(Debug)]
pub struct Ingester {
    fleet: SharedFleet,
    metrics: Arc<Metrics>,
    master: MasterKey,
    /// Verified nodes' keys and the role each was enrolled with (known from which role-bound
    /// key verified the node's first valid frame).
    keys: HashMap<String, (Role, NodeKey)>,
    decoded: Vec<(Envelope, Bytes, u64)>,
    /// Guest reports also go into the utilisation history when set.
    usage: Option<crate::usage::SharedUsage>,
    /// Command results go to the reclaim dispatcher (with their PUBACK) when set.
    results: Option<mpsc::UnboundedSender<crate::reclaim::CommandReply>>,
    /// Evidence waiting for its command's result, by node and command id.
    evidence: HashMap<(String, [u8; 16]), (yunjian_protocol::Evidence, Option<AckToken>)>,
    /// Event-time bounds of accepted frames.
    bounds: TimeBounds,
    /// Rate-limited warnings: rejected frames, foreign topics, refused frames.
    reject_log: LogLimiter,
    topic_log: LogLimiter,
    refuse_log: LogLimiter,
}

impl Ingester {
    pub fn new(fleet: SharedFleet, metrics: Arc<Metrics>, master: MasterKey) -> Self {
        Ingester {
            fleet,
            metrics,
            master,
            keys: HashMap::new(),
            decoded: Vec::with_capacity(BATCH),
            usage: None,
            results: None,
            evidence: HashMap::new(),
            bounds: TimeBounds::default(),
            reject_log: LogLimiter::new(10_000),
            topic_log: LogLimiter::new(10_000),
            refuse_log: LogLimiter::new(10_000),
        }
    }

    /// Refuse frames whose event time is outside `bounds` (default: [`EventTimeConfig`]'s).
    pub fn with_time_bounds(mut self, bounds: TimeBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Count and log (rate-limited) an authentic frame that is not applied.
    fn refuse(&self, env: &Envelope, reason: &str, now: u64) {
        self.metrics.count_refusal(reason);
        if let Some(n) = self.refuse_log.check() {
            tracing::warn!(
                node = %env.node,
                kind = env.body.kind(),
                seq = env.seq,
                event_time_ms = env.ts_ms,
                wall_ms = now,
                reason,
                suppressed = n,
                "authentic frame refused (not applied): event time out of bounds, a stale status, a retired epoch or a sequence-number leap"
            );
        }
    }

    /// Hand every verified command result to `tx` (the dispatcher stores it, then drops the
    /// message's PUBACK token).
    pub fn with_command_results(
        mut self,
        tx: mpsc::UnboundedSender<crate::reclaim::CommandReply>,
    ) -> Self {
        self.results = Some(tx);
        self
    }

    /// Record guest reports into `usage` (finished days go out with the batch).
    pub fn with_usage(mut self, usage: crate::usage::SharedUsage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Close every open day of the utilisation history (clean stop), for storage.
    pub fn close_usage(&mut self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        if let Some(u) = &self.usage {
            let mut u = u.write().unwrap_or_else(|p| p.into_inner());
            u.history.close_all();
            batch.usage_days = u.history.take_dirty();
        }
        batch
    }

    fn verify(&mut self, msg: &Inbound) -> Option<Envelope> {
        let m = &self.metrics;
        m.messages_in.fetch_add(1, Relaxed);
        m.bytes_in.fetch_add(msg.payload.len() as u64, Relaxed);
        let Some((node, _kind)) = topics::parse(&msg.topic) else {
            m.bad_topic.fetch_add(1, Relaxed);
            if let Some(n) = self.topic_log.check() {
                tracing::warn!(topic = %msg.topic, suppressed = n, "message on a topic outside the Yunjian scheme ignored");
            }
            return None;
        };
        let result = match self.keys.get(node) {
            Some((role, k)) => decode(&msg.payload, node, k).map(|env| (*role, env)),
            None => {
                // the role is bound into the key: whichever verifies is the enrolled role
                let mut r = Err(FrameError::BadMac);
                for role in [Role::Host, Role::Guest] {
                    let k = self.master.node_key(node, role);
                    r = decode(&msg.payload, node, &k).map(|env| (role, env));
                    match &r {
                        Ok(_) => {
                            self.keys.insert(node.to_string(), (role, k));
                            break;
                        }
                        // garbage is garbage under either key
                        Err(FrameError::BadMac) => {}
                        Err(_) => break,
                    }
                }
                r
            }
        };
        match result {
            Ok((role, env)) => match crate::fleet::admits(role, &env.body) {
                Ok(()) => Some(env),
                Err(e) => {
                    m.role_refused.fetch_add(1, Relaxed);
                    if let Some(n) = self.reject_log.check() {
                        tracing::warn!(topic = %msg.topic, kind = e.kind(), enrolled = role.as_str(), suppressed = n, "message refused: {e}");
                    }
                    None
                }
            },
            Err(e) => {
                m.decode_error(&e);
                if let Some(n) = self.reject_log.check() {
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
        let wall = now_ms();
        for mut msg in msgs.drain(..) {
            let env = self
                .verify(&msg)
                .and_then(|env| match self.bounds.check(env.ts_ms, wall) {
                    None => Some(env),
                    Some(reason) => {
                        self.refuse(&env, reason, wall);
                        None
                    }
                });
            if let Some(env) = env {
                match (&env.body, &self.results) {
                    (Body::CommandResult(r), Some(tx)) => {
                        let evidence = self.evidence.remove(&(env.node.clone(), r.id));
                        let _ = tx.send(crate::reclaim::CommandReply {
                            node: env.node.clone(),
                            result: r.clone(),
                            ack: msg.ack.take(),
                            evidence,
                        });
                    }
                    // sent right before its result: kept (its PUBACK held) until the result
                    // comes, then stored with it
                    (Body::CommandEvidence(e), Some(_)) => {
                        if self.evidence.len() >= MAX_PENDING_EVIDENCE {
                            tracing::warn!(node = %env.node, "over {MAX_PENDING_EVIDENCE} command evidence messages without their results: those held are dropped");
                            self.evidence.clear();
                        }
                        self.evidence.insert(
                            (env.node.clone(), e.id),
                            (e.evidence.clone(), msg.ack.take()),
                        );
                    }
                    _ => {}
                }
                let latency = msg.received.elapsed().as_nanos() as u64;
                self.decoded.push((env, msg.payload.clone(), latency));
            }
            if let Some(a) = msg.ack.take() {
                acks.push(a);
            }
        }
        let mut batch = WriteBatch::default();
        if self.decoded.is_empty() {
            return Pending {
                batch,
                acks,
                committed: None,
            };
        }
        let now = wall;
        let m = &self.metrics;
        let mut rows: HashMap<String, NodeRow> = HashMap::new();
        let mut usage_samples = Vec::new();
        let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
        for (env, frame, latency) in self.decoded.drain(..) {
            let usage_sample = match (&self.usage, &env.body) {
                (Some(_), Body::Report(r)) => crate::usage::vm_key(fleet.get(&env.node))
                    .map(|vm| (vm, env.ts_ms, crate::usage::Sample::from_report(r))),
                _ => None,
            };
            if let Body::Event(e) = &env.body {
                batch.events.push(EventRow {
                    node: env.node.clone(),
                    ts_ms: env.ts_ms,
                    severity: e.severity,
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
            // SEL entries are stored as rows (the storage ignores one it holds already)
            let sel = match &env.body {
                Body::Hardware(h) => h.sel.clone(),
                _ => Vec::new(),
            };
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
                Applied::Refused(why) => {
                    m.count_refusal(why.label());
                    if let Some(n) = self.refuse_log.check() {
                        tracing::warn!(node = %node, kind, reason = why.label(), suppressed = n, "authentic frame refused (not applied)");
                    }
                    continue;
                }
            };
            m.applied.fetch_add(1, Relaxed);
            m.ingest_latency.observe_ns(latency);
            usage_samples.extend(usage_sample);
            batch.sel.extend(sel.into_iter().map(|entry| SelRow {
                node: node.clone(),
                record: crate::hardware::SelRecord {
                    received_ms: now,
                    entry,
                },
            }));
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
        if let (Some(u), false) = (&self.usage, usage_samples.is_empty()) {
            let mut u = u.write().unwrap_or_else(|p| p.into_inner());
            for (vm, ts_ms, sample) in &usage_samples {
                u.history.record_sample(vm, *ts_ms, sample);
            }
            batch.usage_days = u.history.take_dirty();
        }
        batch.nodes = rows.into_values().collect();
        Pending {
            batch,
            acks,
            committed: None,
        }
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
        ingester.metrics.health.ingest_batch(now_ms());
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
    // clean stop: the days still open are stored (continued as late days after a restart)
    let batch = ingester.close_usage();
    if !batch.is_empty() {
        let _ = storage
            .send(Pending {
                batch,
                ..Pending::default()
            })
            .await;
    }
}

/// The storage thread: merge what is queued, commit, then release the acks. On error it keeps
/// the acks and retries, so back-pressure reaches the publishers instead of losing data.
pub fn storage_loop<S: Schema + ?Sized>(
    storage: &mut S,
    mut rx: mpsc::Receiver<Pending>,
    metrics: Arc<Metrics>,
) {
    let storage_log = LogLimiter::new(10_000);
    while let Some(first) = rx.blocking_recv() {
        let mut nodes: HashMap<String, NodeRow> = HashMap::new();
        let mut events = Vec::new();
        let mut alarms = Vec::new();
        let mut audit = Vec::new();
        let mut register = Vec::new();
        let mut sel = Vec::new();
        let mut usage_days = Vec::new();
        let mut exemptions = Vec::new();
        let mut users = Vec::new();
        let mut tokens = Vec::new();
        let mut acks = Vec::new();
        let mut committed = Vec::new();
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
            sel.extend(p.batch.sel);
            usage_days.extend(p.batch.usage_days);
            exemptions.extend(p.batch.exemptions);
            users.extend(p.batch.users);
            tokens.extend(p.batch.tokens);
            acks.extend(p.acks);
            committed.extend(p.committed);
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
            sel,
            usage_days,
            exemptions,
            users,
            tokens,
        };
        let rows = (batch.nodes.len()
            + batch.events.len()
            + batch.alarms.len()
            + batch.audit.len()
            + batch.register.len()
            + batch.sel.len()
            + batch.usage_days.len()
            + batch.exemptions.len()
            + batch.users.len()
            + batch.tokens.len()) as u64;
        loop {
            match storage.write(&batch) {
                Ok(()) => {
                    metrics.health.storage_committed(now_ms());
                    metrics.storage_batches.fetch_add(1, Relaxed);
                    metrics.storage_rows.fetch_add(rows, Relaxed);
                    break;
                }
                Err(e) => {
                    metrics.health.storage_failed(now_ms());
                    metrics.storage_errors.fetch_add(1, Relaxed);
                    if let Some(n) = storage_log.check() {
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
        for done in committed {
            let _ = done.send(());
        }
    }
}
