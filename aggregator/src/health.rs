//! What `/healthz` and `/readyz` answer, so that a supervisor can act.
//!
//! * Liveness (`/healthz`): three checks, each `ok`, `degraded` or `failing` with a stable
//!   `code` and a zh-CN `detail`:
//!   - `storage`: the storage thread runs, and its last commit succeeded or it has been retrying
//!     for less than `[health] storage_failing_after`;
//!   - `broker`: the embedded broker's listeners are up, or the external broker is connected
//!     (disconnected for longer than `broker_failing_after`: failing);
//!   - `ingest`: the queue between the broker and ingest is not full with no batch taken for
//!     `ingest_stuck_after`, and ingest still takes messages at all.
//!
//!   The whole is the worst of the three; `failing` answers 503.
//! * Readiness (`/readyz`): 200 once the start-up finished (migrations ran, history loaded,
//!   listeners up) and while nothing is failing; 503 while starting, shutting down or failing.
//!
//! The parts record what they see here (plain atomics, like [`crate::metrics`]); the checks are
//! computed when asked.

use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use yunjian_broker::Inbound;

/// `[health]` section: when a check turns from degraded to failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Storage retrying a failed write for longer than this is failing (503): the agents'
    /// acknowledgements are held back meanwhile. Shorter: degraded.
    #[serde(with = "crate::time::duration")]
    pub storage_failing_after: Duration,
    /// The external broker disconnected for longer than this is failing. Shorter: degraded.
    #[serde(with = "crate::time::duration")]
    pub broker_failing_after: Duration,
    /// The ingest queue full with no batch taken for this long is failing.
    #[serde(with = "crate::time::duration")]
    pub ingest_stuck_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            storage_failing_after: Duration::from_secs(30),
            broker_failing_after: Duration::from_secs(60),
            ingest_stuck_after: Duration::from_secs(30),
        }
    }
}

/// A check's verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Failing,
}

/// One check: its verdict, a stable code and a zh-CN explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub ok: bool,
    pub status: Status,
    pub code: &'static str,
    pub detail: String,
}

impl Check {
    fn new(status: Status, code: &'static str, detail: impl Into<String>) -> Check {
        Check {
            ok: status == Status::Ok,
            status,
            code,
            detail: detail.into(),
        }
    }
}

/// The three checks and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub status: Status,
    pub storage: Check,
    pub broker: Check,
    pub ingest: Check,
}

/// Where the process is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    Stopping = 2,
}

/// Which broker feeds ingest.
#[derive(Debug)]
enum BrokerKind {
    /// The embedded broker with its listeners' addresses.
    Embedded(Vec<std::net::SocketAddr>),
    External,
}

/// What the parts record for the checks (held in [`crate::metrics::Metrics`]).
#[derive(Debug, Default)]
pub struct Health {
    config: OnceLock<HealthConfig>,
    phase: AtomicU8,
    storage_started: AtomicBool,
    storage_running: AtomicBool,
    storage_last_commit_ms: AtomicU64,
    /// When the current run of failed writes began; 0 while the last write succeeded.
    storage_failing_since_ms: AtomicU64,
    broker: OnceLock<BrokerKind>,
    external_connected: AtomicBool,
    /// Since when the external broker has been connected or disconnected (0: never seen).
    external_since_ms: AtomicU64,
    /// The queue between the broker and ingest (weak: it must not keep the queue open).
    inbound: Mutex<Option<mpsc::WeakSender<Inbound>>>,
    ingest_last_batch_ms: AtomicU64,
}

/// Clears "storage thread running" when dropped, also when the thread panics.
#[derive(Debug)]
pub struct StorageRunning<'a>(&'a Health);

impl Drop for StorageRunning<'_> {
    fn drop(&mut self) {
        self.0.storage_running.store(false, Relaxed);
    }
}

impl Health {
    pub fn configure(&self, config: HealthConfig) {
        let _ = self.config.set(config);
    }

    fn config(&self) -> HealthConfig {
        self.config.get().cloned().unwrap_or_default()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            1 => Phase::Ready,
            2 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }

    /// The storage thread runs until the returned guard is dropped.
    pub fn storage_thread(&self) -> StorageRunning<'_> {
        self.storage_started.store(true, Relaxed);
        self.storage_running.store(true, Relaxed);
        StorageRunning(self)
    }

    /// A storage transaction committed.
    pub fn storage_committed(&self, now_ms: u64) {
        self.storage_last_commit_ms.store(now_ms, Relaxed);
        self.storage_failing_since_ms.store(0, Relaxed);
    }

    /// A storage write failed (it is retried).
    pub fn storage_failed(&self, now_ms: u64) {
        let _ = self
            .storage_failing_since_ms
            .compare_exchange(0, now_ms.max(1), Relaxed, Relaxed);
    }

    /// The embedded broker listens on `addrs`.
    pub fn embedded_broker(&self, addrs: Vec<std::net::SocketAddr>) {
        let _ = self.broker.set(BrokerKind::Embedded(addrs));
    }

    /// Ingest is fed by an external broker; its client reports the connection.
    pub fn external_broker(&self) {
        let _ = self.broker.set(BrokerKind::External);
    }

    /// The external broker's connection came up (`true`) or went down.
    pub fn external_connected(&self, connected: bool, now_ms: u64) {
        if self.external_connected.swap(connected, Relaxed) != connected
            || self.external_since_ms.load(Relaxed) == 0
        {
            self.external_since_ms.store(now_ms.max(1), Relaxed);
        }
    }

    /// The queue between the broker and ingest.
    pub fn ingest_queue(&self, tx: &mpsc::Sender<Inbound>) {
        *self.inbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.downgrade());
    }

    /// Ingest took a batch off its queue.
    pub fn ingest_batch(&self, now_ms: u64) {
        self.ingest_last_batch_ms.store(now_ms, Relaxed);
    }

    /// The checks as they are at `now_ms`.
    pub fn report(&self, now_ms: u64) -> Report {
        let cfg = self.config();
        let stopping = self.phase() == Phase::Stopping;
        let storage = self.storage(&cfg, now_ms, stopping);
        let broker = self.broker(&cfg, now_ms, stopping);
        let ingest = self.ingest(&cfg, now_ms, stopping);
        Report {
            status: storage.status.max(broker.status).max(ingest.status),
            storage,
            broker,
            ingest,
        }
    }

    fn storage(&self, cfg: &HealthConfig, now_ms: u64, stopping: bool) -> Check {
        if !self.storage_started.load(Relaxed) {
            return Check::new(Status::Ok, "not_configured", "此实例未启动存储线程");
        }
        if !self.storage_running.load(Relaxed) {
            return if stopping {
                Check::new(Status::Ok, "stopped", "正在停止：存储线程已结束")
            } else {
                Check::new(
                    Status::Failing,
                    "storage_thread_stopped",
                    "存储线程已停止，新的数据无法保存",
                )
            };
        }
        let since = self.storage_failing_since_ms.load(Relaxed);
        if since > 0 {
            let failing_for = Duration::from_millis(now_ms.saturating_sub(since));
            let detail = format!(
                "存储写入已连续失败 {} 秒，正在每 0.5 秒重试；期间代理的上报不予确认，数据未丢失",
                failing_for.as_secs()
            );
            return if failing_for >= cfg.storage_failing_after {
                Check::new(Status::Failing, "storage_write_failing", detail)
            } else {
                Check::new(Status::Degraded, "storage_write_retrying", detail)
            };
        }
        match self.storage_last_commit_ms.load(Relaxed) {
            0 => Check::new(Status::Ok, "ok", "存储正常，启动以来尚无写入"),
            t => Check::new(
                Status::Ok,
                "ok",
                format!(
                    "存储正常，最近一次提交在 {} 秒前",
                    now_ms.saturating_sub(t) / 1000
                ),
            ),
        }
    }

    fn broker(&self, cfg: &HealthConfig, now_ms: u64, stopping: bool) -> Check {
        match self.broker.get() {
            None => Check::new(Status::Ok, "not_configured", "此实例未配置 MQTT 代理"),
            Some(_) if stopping => Check::new(Status::Ok, "stopped", "正在停止：不再接受连接"),
            Some(BrokerKind::Embedded(addrs)) => {
                let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                Check::new(
                    Status::Ok,
                    "ok",
                    format!("内置 MQTT 代理正在监听 {}", addrs.join("、")),
                )
            }
            Some(BrokerKind::External) => {
                let since = self.external_since_ms.load(Relaxed);
                let for_s = Duration::from_millis(now_ms.saturating_sub(since));
                if self.external_connected.load(Relaxed) {
                    Check::new(Status::Ok, "ok", "已连接外部 MQTT 代理")
                } else if since == 0 {
                    Check::new(
                        Status::Degraded,
                        "broker_connecting",
                        "正在连接外部 MQTT 代理",
                    )
                } else {
                    let detail = format!(
                        "与外部 MQTT 代理的连接已断开 {} 秒，正在重连",
                        for_s.as_secs()
                    );
                    if for_s >= cfg.broker_failing_after {
                        Check::new(Status::Failing, "broker_disconnected", detail)
                    } else {
                        Check::new(Status::Degraded, "broker_reconnecting", detail)
                    }
                }
            }
        }
    }

    fn ingest(&self, cfg: &HealthConfig, now_ms: u64, stopping: bool) -> Check {
        let weak = self
            .inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(weak) = weak else {
            return Check::new(Status::Ok, "not_configured", "此实例未启动接收队列");
        };
        let Some(tx) = weak.upgrade().filter(|tx| !tx.is_closed()) else {
            return if stopping {
                Check::new(Status::Ok, "stopped", "正在停止：接收队列已关闭")
            } else {
                Check::new(
                    Status::Failing,
                    "ingest_stopped",
                    "接收任务已停止，代理的上报无人处理",
                )
            };
        };
        let (capacity, free) = (tx.max_capacity(), tx.capacity());
        drop(tx);
        let depth = capacity - free;
        let last = self.ingest_last_batch_ms.load(Relaxed);
        let idle = Duration::from_millis(now_ms.saturating_sub(last));
        if free == 0 && (last == 0 || idle >= cfg.ingest_stuck_after) {
            return Check::new(
                Status::Failing,
                "ingest_stuck",
                format!(
                    "接收队列已满（{depth}/{capacity}），{} 秒未取出新批次",
                    idle.as_secs()
                ),
            );
        }
        if depth * 5 >= capacity * 4 {
            return Check::new(
                Status::Degraded,
                "ingest_backlog",
                format!("接收队列积压 {depth}/{capacity}，上报方已被减速"),
            );
        }
        Check::new(Status::Ok, "ok", format!("接收队列 {depth}/{capacity}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_790_000_000_000;

    #[test]
    fn storage_retrying_is_degraded_then_failing_and_a_commit_heals_it() {
        let h = Health::default();
        assert_eq!(h.report(T).storage.code, "not_configured");
        let running = h.storage_thread();
        h.storage_committed(T);
        assert_eq!(h.report(T + 2_000).status, Status::Ok);
        h.storage_failed(T + 3_000);
        h.storage_failed(T + 3_500);
        let r = h.report(T + 10_000);
        assert_eq!(
            (r.status, r.storage.code),
            (Status::Degraded, "storage_write_retrying")
        );
        assert!(r.storage.detail.contains("7 秒"), "{}", r.storage.detail);
        let r = h.report(T + 33_000);
        assert_eq!(
            (r.status, r.storage.code),
            (Status::Failing, "storage_write_failing")
        );
        h.storage_committed(T + 34_000);
        assert_eq!(h.report(T + 34_000).status, Status::Ok);
        drop(running);
        assert_eq!(h.report(T + 35_000).storage.code, "storage_thread_stopped");
        h.set_phase(Phase::Stopping);
        assert_eq!(h.report(T + 35_000).status, Status::Ok);
    }

    #[test]
    fn an_external_broker_away_too_long_is_failing() {
        let h = Health::default();
        h.external_broker();
        assert_eq!(h.report(T).broker.code, "broker_connecting");
        h.external_connected(true, T);
        assert_eq!(h.report(T + 1).broker.status, Status::Ok);
        h.external_connected(false, T + 10_000);
        assert_eq!(h.report(T + 20_000).broker.code, "broker_reconnecting");
        assert_eq!(h.report(T + 70_000).broker.code, "broker_disconnected");
        assert_eq!(h.report(T + 70_000).status, Status::Failing);
    }

    #[tokio::test]
    async fn a_full_queue_nobody_takes_from_is_stuck() {
        let h = Health::default();
        let (tx, rx) = mpsc::channel::<Inbound>(5);
        h.ingest_queue(&tx);
        h.ingest_batch(T);
        assert_eq!(h.report(T).ingest.code, "ok");
        for _ in 0..4 {
            tx.try_send(inbound()).unwrap();
        }
        assert_eq!(h.report(T + 1_000).ingest.code, "ingest_backlog");
        tx.try_send(inbound()).unwrap();
        assert_eq!(h.report(T + 1_000).ingest.code, "ingest_backlog");
        assert_eq!(h.report(T + 31_000).ingest.code, "ingest_stuck");
        drop(rx);
        assert_eq!(h.report(T + 31_000).ingest.code, "ingest_stopped");
        drop(tx);
        h.set_phase(Phase::Stopping);
        assert_eq!(h.report(T + 31_000).status, Status::Ok);
    }

    fn inbound() -> Inbound {
        Inbound {
            topic: "yunjian/v1/h1/report".into(),
            payload: bytes::Bytes::new(),
            received: std::time::Instant::now(),
            ack: None,
        }
    }
}
