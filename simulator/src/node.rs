//! One simulated node: a tokio task with its own publisher, identity and key.
//!
//! The task waits for its connection slot, starts the agent's [`Publisher`], publishes the
//! scenario's history if it asks for one ([`crate::backfill`]), sends a report at once and
//! then every wall interval (phase-shifted per node so 10,000 nodes do not report
//! in the same millisecond), answers commands, and mirrors the publisher's statistics into
//! [`Counters`] for [`crate::Simulation::stats`].

use crate::antivirus::AvSim;
use crate::backfill::{self, Backfill};
use crate::bmc::BmcSim;
use crate::clock::AccelClock;
use crate::exec::{cap_report, SimHypervisors};
use crate::fleet::{Fleet, NodeKind};
use crate::rng::{hash_u64s, unit_f64};
use crate::synth::{self, NodeSim};
use crate::NodeStats;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};
use yunjian_agent::hypervisor::{execute, label, Outcome};
use yunjian_agent::publish::config::{BufferConfig, MqttConfig};
use yunjian_agent::publish::{Identity, Publisher, PublisherStats};
use yunjian_protocol::{Body, Command, CommandEvidence, CommandResult, GuestView, MasterKey};

/// Version string the simulated agents announce in `Hello`.
pub const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-sim");
/// In-memory buffer of unacknowledged messages per node. 64 KiB holds a few hundred reports
/// and bounds a 10,000-node simulation cut off from its broker to 640 MiB.
pub const BUFFER_BYTES_PER_NODE: u64 = 64 * 1024;
/// A host re-sends its guest list after this many reports even when it did not change.
const GUESTS_EVERY_REPORTS: u32 = 60;
/// How often a node copies its publisher's statistics when reports are rarer than that.
const STATS_REFRESH: Duration = Duration::from_secs(1);

/// How a node is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Clean shutdown: retained `Offline` status.
    Shutdown,
    /// Abrupt disconnect: the broker publishes the last will.
    Kill,
}

/// What the simulation shares with all its node tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub fleet: Fleet,
    pub clock: AccelClock,
    pub wall_interval: Duration,
    /// Event-time spacing of reports (announced in `Hello`).
    pub interval_ms: u64,
    pub mqtt: MqttConfig,
    pub master: MasterKey,
    pub counters: Box<[Counters]>,
    /// The hosts' VMs as their hypervisors hold them; changed by VM commands.
    pub hypervisors: SimHypervisors,
    /// The past reports each node publishes before its real-time loop.
    pub backfill: Option<Backfill>,
}

/// One node's live figures, written by its task, read by `Simulation::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub running: AtomicBool,
    /// Set by `kill_node`: a killed VM shows as not running in its host's guest list.
    pub killed: AtomicBool,
    pub start_failed: AtomicBool,
    pub connected: AtomicBool,
    pub reports: AtomicU64,
    pub backfilled: AtomicU64,
    pub send_errors: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub buffered: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Counters {
    /// Counters of a node whose task is about to be spawned.
    pub fn starting() -> Self {
        Counters {
            running: AtomicBool::new(true),
            ..Counters::default()
        }
    }

    fn mirror(&self, s: &PublisherStats) {
        self.connected.store(s.connected, Relaxed);
        self.sent.store(s.sent, Relaxed);
        self.acked.store(s.acked, Relaxed);
        self.buffered.store(s.buffered, Relaxed);
        self.dropped.store(s.dropped_overflow, Relaxed);
        self.reconnects.store(s.reconnects, Relaxed);
    }

    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            running: self.running.load(Relaxed),
            connected: self.connected.load(Relaxed),
            start_failed: self.start_failed.load(Relaxed),
            reports: self.reports.load(Relaxed),
            backfilled: self.backfilled.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
        }
    }
}

/// Run node `idx` until told to stop (a dropped sender counts as `Shutdown`).
pub(crate) async fn run(
    shared: Arc<Shared>,
    idx: usize,
    connect_at: Instant,
    mut stop: oneshot::Receiver<Stop>,
) {
    let counters = &shared.counters[idx];
    tokio::select! {
        () = sleep_until(connect_at) => {}
        _ = &mut stop => {
            counters.running.store(false, Relaxed);
            return;
        }
    }
    let fleet = &shared.fleet;
    let spec = &fleet.nodes()[idx];
    let identity = Identity {
        node: spec.id.clone(),
        key: shared.master.node_key(&spec.id, spec.role()),
        role: spec.role(),
        agent_version: AGENT_VERSION.into(),
        // wall-clock spacing: the aggregator judges silence by its own clock
        interval_ms: u32::try_from(shared.wall_interval.as_millis()).unwrap_or(u32::MAX),
    };
    let buffer = BufferConfig {
        dir: None,
        max_bytes: BUFFER_BYTES_PER_NODE,
    };
    let (publisher, mut commands) = match Publisher::start(&shared.mqtt, &buffer, identity).await {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "could not start the publisher; node stopped");
            counters.start_failed.store(true, Relaxed);
            counters.running.store(false, Relaxed);
            return;
        }
    };
    publisher.set_inventory(synth::inventory(fleet, idx)).await;
    counters.mirror(&publisher.stats());

    let mut sim = NodeSim::new(fleet, idx, shared.clock.start_ms(), shared.interval_ms);
    let stopped = match &shared.backfill {
        Some(plan) => publish_history(&shared, idx, plan, &publisher, &mut sim, &mut stop).await,
        None => None,
    };
    let mut antivirus = AvSim::new(fleet, idx, shared.clock.start_ms(), shared.wall_interval);
    let mut bmc = BmcSim::new(fleet, idx, shared.clock.start_ms());
    let mut guests = GuestTracker::default();
    let is_vm = matches!(spec.kind, NodeKind::Guest { .. });
    let hypervisors = &shared.hypervisors;
    let killed = |g: usize| shared.counters[g].killed.load(Relaxed);
    // Whether a VM or host node runs: a VM stopped or released through its hypervisor is
    // powered off; a killed node's task has ended.
    let up = |g: usize| !killed(g) && hypervisors.powered(g);
    let mut commands_open = true;
    let wall = shared.wall_interval;
    // After the first report, the next comes 0.5 to 1.5 intervals later: a per-node phase.
    let phase = wall.mul_f64(0.5 + unit_f64(hash_u64s(&[spec.seed, 0x9a5e])));
    let mut next_report = Instant::now();
    let mut next_refresh = next_report + STATS_REFRESH;
    let history = sim.reports();
    let stop_kind = match stopped {
        Some(kind) => kind,
        None => loop {
            // A powered-off VM reports nothing and takes no commands (they wait in the
            // publisher's queue) until it runs again; its connection stays up, so the aggregator
            // sees it silent.
            let powered = !is_vm || hypervisors.powered(idx);
            tokio::select! {
                biased;
                kind = &mut stop => break kind.unwrap_or(Stop::Shutdown),
                cmd = commands.recv(), if commands_open && powered => match cmd {
                    Some(cmd) => {
                        let (evidence, result) = answer(hypervisors, idx, killed, cmd);
                        // like the agent: the evidence right before its result
                        if let Some(evidence) = evidence {
                            if let Err(e) = publisher.send(shared.clock.now_ms(), Body::CommandEvidence(evidence)).await {
                                tracing::warn!(error = %e, "cannot queue a command's evidence");
                            }
                        }
                        publisher.send_result(result).await;
                        // like the agent: the guest list follows every command at once
                        if let Some(list) = hypervisors.guests(idx, killed) {
                            guests.sent(&list);
                            if let Err(e) = publisher.send(shared.clock.now_ms(), Body::Guests(list)).await {
                                if counters.send_errors.fetch_add(1, Relaxed) == 0 {
                                    tracing::warn!(error = %e, "send failed (further failures of this node are only counted)");
                                }
                            }
                        }
                    }
                    None => commands_open = false,
                },
                () = sleep_until(next_report.min(next_refresh)) => {
                    // Mirrored before this tick's report, so `buffered` shows a real backlog
                    // rather than the report just handed over.
                    counters.mirror(&publisher.stats());
                    let now = Instant::now();
                    if now >= next_report {
                        let ts = shared.clock.now_ms();
                        let mut bodies = Vec::with_capacity(3);
                        if !is_vm || hypervisors.powered(idx) {
                            if let Some(list) = guests.due(hypervisors, idx, killed) {
                                bodies.push(Body::Guests(list));
                            }
                            let mut report = sim.report(fleet, ts, up);
                            if is_vm {
                                cap_report(&mut report, hypervisors.limits(idx));
                            }
                            let busy = f64::from(report.cpu_busy) / 10_000.0;
                            bodies.push(Body::Report(report));
                            if let Some(hw) = bmc.as_mut().and_then(|b| b.due(ts, busy)) {
                                bodies.push(Body::Hardware(hw));
                            }
                            if let Some(av) = antivirus.as_mut().and_then(|a| a.due(ts, now.into_std())) {
                                bodies.push(Body::Antivirus(av));
                            }
                        }
                        for body in bodies {
                            let is_report = matches!(body, Body::Report(_));
                            match publisher.send(ts, body).await {
                                Ok(_) if is_report => {
                                    counters.reports.fetch_add(1, Relaxed);
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    if counters.send_errors.fetch_add(1, Relaxed) == 0 {
                                        tracing::warn!(error = %e, "send failed (further failures of this node are only counted)");
                                    }
                                }
                            }
                        }
                        next_report = if sim.reports() == history + 1 {
                            now + phase
                        } else {
                            (next_report + wall).max(now)
                        };
                    }
                    next_refresh = now + STATS_REFRESH;
                }
            }
        },
    };
    counters.mirror(&publisher.stats());
    match stop_kind {
        Stop::Kill => publisher.kill().await,
        Stop::Shutdown => publisher.shutdown().await,
    }
    counters.connected.store(false, Relaxed);
    counters.running.store(false, Relaxed);
}

/// Publish node `idx`'s past reports (`plan`) through its publisher, never letting more than
/// [`backfill::WINDOW`] frames wait for acknowledgement. Returns how the node was told to stop
/// if that happened meanwhile; `None` once the history is out.
async fn publish_history(
    shared: &Shared,
    idx: usize,
    plan: &Backfill,
    publisher: &Publisher,
    sim: &mut NodeSim,
    stop: &mut oneshot::Receiver<Stop>,
) -> Option<Stop> {
    let counters = &shared.counters[idx];
    for ts in plan.times() {
        loop {
            match stop.try_recv() {
                Ok(kind) => return Some(kind),
                Err(oneshot::error::TryRecvError::Closed) => return Some(Stop::Shutdown),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let stats = publisher.stats();
            counters.mirror(&stats);
            if stats.buffered < backfill::WINDOW {
                break;
            }
            tokio::time::sleep(backfill::POLL).await;
        }
        // The past as the scenario describes it: every VM was running.
        let report = sim.report(&shared.fleet, ts, |_| true);
        match publisher.send(ts, Body::Report(report)).await {
            Ok(_) => {
                counters.reports.fetch_add(1, Relaxed);
                counters.backfilled.fetch_add(1, Relaxed);
            }
            Err(e) => {
                if counters.send_errors.fetch_add(1, Relaxed) == 0 {
                    tracing::warn!(error = %e, "send failed (further failures of this node are only counted)");
                }
            }
        }
    }
    counters.mirror(&publisher.stats());
    None
}

/// The answer to a command, with the agent's semantics: a host carries out VM actions on its
/// simulated VMs ([`execute`] over [`SimHypervisors::host`]); a VM node answers pings only.
/// The evidence, when the command leaves some, goes out before the result.
fn answer(
    hypervisors: &SimHypervisors,
    idx: usize,
    killed: impl Fn(usize) -> bool,
    cmd: Command,
) -> (Option<CommandEvidence>, CommandResult) {
    let outcome = match (cmd.action.vm(), hypervisors.host(idx, killed)) {
        (Some(_), Some(mut domains)) => execute(&mut domains, &cmd.action),
        (None, _) => Outcome::done("pong".into()),
        (Some(vm), None) => Outcome::failed(format!(
            "{} of {} refused: this node is a VM, not a hypervisor host",
            cmd.action.kind(),
            label(vm)
        )),
    };
    if outcome.ok {
        tracing::info!(action = cmd.action.kind(), message = %outcome.message, "command carried out");
    } else {
        tracing::warn!(action = cmd.action.kind(), message = %outcome.message, "command failed");
    }
    let evidence = outcome.evidence.map(|evidence| CommandEvidence {
        id: cmd.id,
        evidence,
    });
    let result = CommandResult {
        id: cmd.id,
        ok: outcome.ok,
        message: outcome.message,
    };
    (evidence, result)
}

/// When a host sends its guest list: first report, any change, every 60 reports, and right
/// after each command ([`GuestTracker::sent`]).
#[derive(Debug, Default)]
struct GuestTracker {
    last: Option<Vec<GuestView>>,
    since: u32,
}

impl GuestTracker {
    /// The guest list of node `idx` when one is due with this report; `None` for VMs and
    /// hosts without VMs.
    fn due(
        &mut self,
        hypervisors: &SimHypervisors,
        idx: usize,
        killed: impl Fn(usize) -> bool,
    ) -> Option<Vec<GuestView>> {
        let list = hypervisors.guests(idx, killed)?;
        self.since += 1;
        if self.last.as_ref() == Some(&list) && self.since < GUESTS_EVERY_REPORTS {
            return None;
        }
        self.sent(&list);
        Some(list)
    }

    /// `list` was sent now.
    fn sent(&mut self, list: &[GuestView]) {
        self.last = Some(list.to_vec());
        self.since = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use yunjian_protocol::Action;

    fn vm_ref(fleet: &Fleet, node: usize) -> yunjian_protocol::VmRef {
        let NodeKind::Guest { uuid, .. } = &fleet.nodes()[node].kind else {
            panic!("node {node} is not a VM")
        };
        yunjian_protocol::VmRef {
            uuid: uuid.clone(),
            name: fleet.nodes()[node].id.clone(),
        }
    }

    fn command(id: u8, action: Action) -> Command {
        Command {
            id: [id; 16],
            expires_ms: 0,
            action,
        }
    }

    #[test]
    fn guest_list_on_first_report_on_change_and_every_sixty() {
        let fleet = Fleet::build(Scenario::uniform(1, 1, 2, 1)).unwrap();
        let hv = SimHypervisors::new(&fleet);
        let mut t = GuestTracker::default();
        let none = |_: usize| false;
        assert_eq!(t.due(&hv, 0, none).map(|l| l.len()), Some(2));
        for _ in 1..GUESTS_EVERY_REPORTS {
            assert!(t.due(&hv, 0, none).is_none());
        }
        assert!(t.due(&hv, 0, none).is_some());
        let vm2_killed = |g: usize| g == 2;
        let list = t.due(&hv, 0, vm2_killed).unwrap();
        assert_eq!(
            list.iter().map(|g| g.running).collect::<Vec<_>>(),
            [true, false]
        );
        assert!(t.due(&hv, 0, vm2_killed).is_none());
        // VMs never send guest lists.
        assert!(GuestTracker::default().due(&hv, 1, none).is_none());
    }

    #[test]
    fn a_host_carries_out_vm_commands_and_its_next_list_shows_them() {
        let fleet = Fleet::build(Scenario::uniform(1, 1, 2, 1)).unwrap();
        let hv = SimHypervisors::new(&fleet);
        let mut t = GuestTracker::default();
        let none = |_: usize| false;
        assert!(t.due(&hv, 0, none).is_some());
        assert!(t.due(&hv, 0, none).is_none());

        let (_, r) = answer(
            &hv,
            0,
            none,
            command(1, Action::Stop(vm_ref(&fleet, 1), "s".into())),
        );
        assert_eq!(r.id, [1; 16]);
        assert!(r.ok && r.message.contains("stopped"), "{r:?}");
        assert!(!hv.powered(1) && hv.powered(2));
        let list = t.due(&hv, 0, none).expect("a changed list is due at once");
        assert_eq!(
            list.iter().map(|g| g.running).collect::<Vec<_>>(),
            [false, true]
        );

        // a list sent after a command is not sent again with the next report
        let (_, r) = answer(&hv, 0, none, command(2, Action::Start(vm_ref(&fleet, 1))));
        assert!(r.ok, "{r:?}");
        t.sent(&hv.guests(0, none).unwrap());
        assert!(t.due(&hv, 0, none).is_none());
        assert!(hv.powered(1));
    }

    #[test]
    fn a_wiping_release_answers_with_its_evidence_under_the_commands_id() {
        let fleet = Fleet::build(Scenario::uniform(1, 1, 1, 1)).unwrap();
        let hv = SimHypervisors::new(&fleet);
        let none = |_: usize| false;
        let vm = vm_ref(&fleet, 1);
        let (evidence, r) = answer(
            &hv,
            0,
            none,
            command(3, Action::Stop(vm.clone(), "s".into())),
        );
        assert!(r.ok && evidence.is_none(), "{r:?}");
        let (evidence, r) = answer(&hv, 0, none, command(4, Action::ReleaseAndWipe(vm.clone())));
        assert!(r.ok, "{r:?}");
        let evidence = evidence.expect("a wiping release leaves evidence");
        assert_eq!(evidence.id, [4; 16]);
        let yunjian_protocol::Evidence::Wipe(wipe) = evidence.evidence;
        assert!(
            wipe.complete() && wipe.vm == vm && !wipe.disks.is_empty(),
            "{wipe:?}"
        );
    }

    #[test]
    fn ping_is_answered_and_a_vm_node_refuses_vm_actions() {
        let fleet = Fleet::build(Scenario::uniform(1, 1, 1, 1)).unwrap();
        let hv = SimHypervisors::new(&fleet);
        let none = |_: usize| false;
        for node in [0, 1] {
            let (_, r) = answer(&hv, node, none, command(7, Action::Ping));
            assert_eq!((r.id, r.ok, r.message.as_str()), ([7; 16], true, "pong"));
        }
        let vm = vm_ref(&fleet, 1);
        let (_, r) = answer(
            &hv,
            1,
            none,
            command(8, Action::Stop(vm.clone(), "s".into())),
        );
        assert!(
            !r.ok && r.message.contains("not a hypervisor host") && r.message.contains(&vm.uuid),
            "{r:?}"
        );
        assert!(hv.powered(1));
    }
}
