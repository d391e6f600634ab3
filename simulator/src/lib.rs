//! # yunjian-simulator: racks of servers and VMs on one machine
//!
//! Each simulated node is a separate MQTT client with its own identity: node id, key derived
//! from the aggregator's master key and bound to the node's role
//! ([`yunjian_protocol::MasterKey::node_key`]), and one instance of the agent's own publisher
//! fed by a synthetic sample source. One process runs 10,000 nodes (a node is one tokio task;
//! its simulation state is a few hundred bytes).
//!
//! * [`scenario`]: the TOML scenario format (racks, templates, seed, acceleration).
//! * [`fleet`]: the scenario expanded into nodes with deterministic ids and VM UUIDs.
//! * [`profile`]: workload profiles (diurnal, bursty, idle, steady) as functions of time.
//! * [`synth`]: inventories, reports and guest lists in the protocol's types.
//! * [`antivirus`]: the VMs' synthetic antivirus (compliant, or removed / stopped by the
//!   scenario's `[antivirus]` knobs).
//! * [`bmc`]: the servers' emulated BMCs (sensors following load, PSU faults, SEL), sent as
//!   hardware sweeps every few host reports (the scenario's `[hardware]` knobs).
//! * [`exec`]: the hosts' simulated hypervisors, carrying out the aggregator's VM commands
//!   (stop, downsize, rollback, release...) with the agent's own semantics.
//! * [`backfill`]: weeks of past reports published right after connecting (the scenario's
//!   `backfill`), for rules that need a long history.
//! * [`clock`]: the accelerated event clock. [`rng`]: the deterministic generator.
//!
//! Dates (Beijing business hours, weekdays, month ends, a scenario's start date) come from
//! `yunjian-time`, the same `Day` the aggregator counts in; the simulator depends on the
//! protocol, the agent and that crate, never on the aggregator.
//!
//! ```no_run
//! # async fn demo(master_key: yunjian_protocol::MasterKey) -> Result<(), yunjian_simulator::SimError> {
//! use yunjian_simulator::{Scenario, SimConfig};
//! let sim = yunjian_simulator::start(
//!     Scenario::uniform(2, 3, 2, 42),
//!     SimConfig { broker_host: "127.0.0.1".into(), broker_port: 1883, master_key, connect_rate: None },
//! )
//! .await?;
//! sim.wait_connected(18, std::time::Duration::from_secs(10)).await;
//! sim.kill_node("rack1-h02").await;
//! sim.stop().await;
//! # Ok(()) }
//! ```

pub mod antivirus;
pub mod backfill;
pub mod bmc;
pub mod clock;
pub mod exec;
pub mod fleet;
pub mod forms;
mod node;
pub mod profile;
pub mod rng;
pub mod scenario;
pub mod synth;

pub use node::{AGENT_VERSION, BUFFER_BYTES_PER_NODE};
pub use scenario::{parse_duration, Scenario, ScenarioError};

use clock::{unix_now_ms, AccelClock};
use fleet::Fleet;
use node::{Counters, Shared, Stop};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use yunjian_agent::publish::config::MqttConfig;
use yunjian_protocol::MasterKey;

/// Where the simulated agents connect and how they sign.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub broker_host: String,
    pub broker_port: u16,
    /// The aggregator's master key; each node signs with `master_key.node_key(node, role)`.
    pub master_key: MasterKey,
    /// New connections per second; `None` connects every node at once.
    pub connect_rate: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("connect rate must be at least 1 connection per second")]
    ConnectRate,
}

/// One node's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// The node's task runs (waiting for its connection slot counts).
    pub running: bool,
    /// Its MQTT session is up.
    pub connected: bool,
    /// The publisher could not start (see the log); the node stopped.
    pub start_failed: bool,
    /// Reports handed to the publisher (backfilled ones included).
    pub reports: u64,
    /// Of those, past reports of the backfill.
    pub backfilled: u64,
    /// Messages the publisher refused.
    pub send_errors: u64,
    /// Publisher figures: messages published, acknowledged by the broker, waiting in the
    /// buffer, dropped because the buffer was full, and reconnections.
    pub sent: u64,
    pub acked: u64,
    pub buffered: u64,
    pub dropped: u64,
    pub reconnects: u64,
}

/// Totals over all nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub nodes: usize,
    pub running: usize,
    pub connected: usize,
    pub start_failures: usize,
    pub reports: u64,
    pub backfilled: u64,
    pub send_errors: u64,
    pub sent: u64,
    pub acked: u64,
    pub buffered: u64,
    pub dropped: u64,
    pub reconnects: u64,
}

impl SimStats {
    fn add(&mut self, n: &NodeStats) {
        self.nodes += 1;
        self.running += usize::from(n.running);
        self.connected += usize::from(n.connected);
        self.start_failures += usize::from(n.start_failed);
        self.reports += n.reports;
        self.backfilled += n.backfilled;
        self.send_errors += n.send_errors;
        self.sent += n.sent;
        self.acked += n.acked;
        self.buffered += n.buffered;
        self.dropped += n.dropped;
        self.reconnects += n.reconnects;
    }
}

#[derive(Debug)]
struct NodeHandle {
    stop: oneshot::Sender<Stop>,
    task: JoinHandle<()>,
}

/// A running simulation. Dropping it stops every node cleanly in the background; [`stop`]
/// does the same and waits for it.
///
/// [`stop`]: Simulation::stop
#[derive(Debug)]
pub struct Simulation {
    shared: Arc<Shared>,
    handles: Mutex<Vec<Option<NodeHandle>>>,
}

/// Start every node of `scenario`. Returns once all node tasks are spawned; connections are
/// then made at `cfg.connect_rate` (see [`Simulation::wait_connected`]).
pub async fn start(scenario: Scenario, cfg: SimConfig) -> Result<Simulation, SimError> {
    if cfg.connect_rate == Some(0) {
        return Err(SimError::ConnectRate);
    }
    let start_ms = scenario.start_ms.unwrap_or_else(unix_now_ms);
    let accel = scenario.accel;
    let interval = scenario.interval;
    let backfill = scenario
        .backfill
        .and_then(|span| backfill::Backfill::plan(start_ms, span, scenario.backfill_interval));
    let fleet = Fleet::build(scenario)?;
    let wall_start = tokio::time::Instant::now();
    let clock = AccelClock::new(start_ms, wall_start.into_std(), accel);
    let n = fleet.nodes().len();
    let shared = Arc::new(Shared {
        wall_interval: clock.wall_interval(interval),
        interval_ms: clock.effective_interval(interval).as_millis() as u64,
        clock,
        mqtt: MqttConfig {
            host: cfg.broker_host,
            port: cfg.broker_port,
            ..MqttConfig::default()
        },
        master: cfg.master_key,
        counters: (0..n).map(|_| Counters::starting()).collect(),
        hypervisors: exec::SimHypervisors::new(&fleet),
        backfill,
        fleet,
    });
    tracing::info!(
        nodes = n,
        hosts = shared.fleet.hosts().len(),
        accel,
        wall_interval_ms = shared.wall_interval.as_millis() as u64,
        backfill_reports_per_node = shared.backfill.map_or(0, |b| b.count),
        "simulation starting"
    );
    let handles = (0..n)
        .map(|idx| {
            let delay = cfg.connect_rate.map_or(Duration::ZERO, |rate| {
                Duration::from_secs_f64(idx as f64 / f64::from(rate))
            });
            let (tx, rx) = oneshot::channel();
            let span = tracing::info_span!("node", node = %shared.fleet.nodes()[idx].id);
            let task = tokio::spawn(tracing::Instrument::instrument(
                node::run(shared.clone(), idx, wall_start + delay, rx),
                span,
            ));
            Some(NodeHandle { stop: tx, task })
        })
        .collect();
    Ok(Simulation {
        shared,
        handles: Mutex::new(handles),
    })
}

impl Simulation {
    /// Every node id: hosts first, then VMs.
    pub fn node_ids(&self) -> Vec<String> {
        self.shared
            .fleet
            .nodes()
            .iter()
            .map(|n| n.id.clone())
            .collect()
    }

    /// The hosts' node ids.
    pub fn host_ids(&self) -> Vec<String> {
        self.shared
            .fleet
            .hosts()
            .iter()
            .map(|n| n.id.clone())
            .collect()
    }

    /// The expanded scenario (node specs, VM UUIDs...).
    pub fn fleet(&self) -> &Fleet {
        &self.shared.fleet
    }

    /// The backfill every node publishes before its real-time loop, if the scenario asks for
    /// one.
    pub fn backfill(&self) -> Option<backfill::Backfill> {
        self.shared.backfill
    }

    /// Abruptly disconnect `node` (the broker publishes its last will, `Offline`) and stop it.
    /// A killed VM shows as not running in its host's next guest list; a killed host's VMs
    /// keep reporting. Returns `false` when there is no such node or it was already stopped.
    pub async fn kill_node(&self, node: &str) -> bool {
        let Some(idx) = self.shared.fleet.index_of(node) else {
            return false;
        };
        let handle = self.handles.lock().unwrap_or_else(PoisonError::into_inner)[idx].take();
        let Some(handle) = handle else {
            return false;
        };
        self.shared.counters[idx].killed.store(true, Relaxed);
        if handle.stop.send(Stop::Kill).is_err() {
            // The task had already ended (its publisher failed to start).
            return false;
        }
        if let Err(e) = handle.task.await {
            tracing::error!(node, error = %e, "node task failed");
        }
        true
    }

    /// Figures of one node.
    pub fn node_stats(&self, node: &str) -> Option<NodeStats> {
        let idx = self.shared.fleet.index_of(node)?;
        Some(self.shared.counters[idx].snapshot())
    }

    /// Totals over all nodes. Publisher figures are refreshed by each node at every report
    /// and at least once a second.
    pub fn stats(&self) -> SimStats {
        let mut total = SimStats::default();
        for c in self.shared.counters.iter() {
            total.add(&c.snapshot());
        }
        total
    }

    /// Wait until at least `n` nodes are connected; `false` on timeout.
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stats().connected >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop every node cleanly (retained `Offline` status) and wait for all of them.
    pub async fn stop(self) {
        let handles: Vec<NodeHandle> =
            std::mem::take(&mut *self.handles.lock().unwrap_or_else(PoisonError::into_inner))
                .into_iter()
                .flatten()
                .collect();
        let tasks: Vec<JoinHandle<()>> = handles
            .into_iter()
            .map(|h| {
                // A task that already ended has dropped its receiver: nothing to stop.
                let _ = h.stop.send(Stop::Shutdown);
                h.task
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "node task failed");
            }
        }
        tracing::info!("simulation stopped");
    }
}
