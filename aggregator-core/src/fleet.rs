//! Fleet state: the latest known state of every host and VM, kept in memory by ingest and read
//! by the web layer and the policies.
//!
//! Online/offline comes from two sources: the retained status / last will on the node's status
//! topic, and silence (no message for [`SILENCE_FACTOR`] report intervals of wall time).

use crate::antivirus::AntivirusTrack;
use crate::hardware::HardwareTrack;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use yunjian_protocol::{Body, Envelope, Event, GuestView, Hello, Inventory, Report, Role, Status};

/// A node is "silent" after this many report intervals without a message.
pub const SILENCE_FACTOR: u64 = 3;
/// Interval assumed before a node's Hello says otherwise.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// Recent agent events kept per node.
const EVENTS_KEPT: usize = 20;
/// Missing sequence numbers remembered per node, so that a late arrival fills its gap instead
/// of counting as a duplicate. Older gaps stay counted as missing.
pub const GAP_MEMORY: usize = 4096;
/// The largest step forward a node's sequence numbers may take at once. An agent sends one
/// report every few seconds and drops its oldest frames beyond its buffer's cap, so even a
/// year's outage is a step of a few million; a larger one is a broken or hostile sender, and
/// accepting it would freeze the node's stream (everything after it a "duplicate").
pub const MAX_SEQ_STEP: u64 = 100_000_000;
/// The highest sequence number a node may ever use (a report per millisecond for 8,900 years).
pub const MAX_SEQ: u64 = 1 << 48;
/// Epochs a node left behind that are remembered, so a replayed hello of one is refused.
const RETIRED_EPOCHS: usize = 8;

pub type SharedFleet = Arc<RwLock<Fleet>>;

pub use crate::liveness::Liveness;

/// What applying one envelope did (for counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// New data, in order.
    Fresh,
    /// New data after a gap of `missing` sequence numbers.
    AfterGap { missing: u64 },
    /// An older sequence number that was missing until now (replay after an outage arrives
    /// after the reconnect's Hello): counted, but it does not replace newer state.
    Late,
    /// A sequence number already seen (replay after an outage): ignored.
    Duplicate,
    /// Not applied: the frame is authentic but cannot be right (see [`Refusal`]).
    Refused(Refusal),
}

/// Why an authentic frame was refused by the fleet state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A status of an earlier connection than one already seen (a replay).
    StaleStatus,
    /// A hello of an epoch the node has already left behind (a replay).
    RetiredEpoch,
    /// A sequence number beyond [`MAX_SEQ`] or more than [`MAX_SEQ_STEP`] ahead.
    SeqJump,
}

impl Refusal {
    /// Every reason, for counters (`yunjian_frames_refused_total{reason=...}`).
    pub const ALL: [Refusal; 3] = [
        Refusal::StaleStatus,
        Refusal::RetiredEpoch,
        Refusal::SeqJump,
    ];

    /// Stable label for counters and logs.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::StaleStatus => "stale_status",
            Refusal::RetiredEpoch => "retired_epoch",
            Refusal::SeqJump => "seq_jump",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    pub node: String,
    pub role: Option<Role>,
    pub status: Status,
    pub liveness: Liveness,
    /// Wall-clock ms since which `liveness` holds (for a node restored from storage: the
    /// restore time, so an aggregator restart does not look like every node going down).
    pub liveness_since_ms: u64,
    /// Wall-clock ms of the last message received from the node.
    pub last_seen_ms: u64,
    /// Event time of the last report.
    pub last_report_ts_ms: u64,
    pub hello: Option<Hello>,
    pub inventory: Option<Inventory>,
    pub report: Option<Report>,
    /// For a hypervisor host: its VMs as it sees them.
    pub guests: Vec<GuestView>,
    /// Highest sequence number applied.
    pub last_seq: u64,
    /// Distinct messages applied.
    pub received: u64,
    pub duplicates: u64,
    /// Sequence numbers not received (yet): counted when a later one arrives, uncounted when
    /// the missing one arrives late.
    pub missing: u64,
    /// The most recent missing sequence numbers (at most [`GAP_MEMORY`]).
    #[serde(skip)]
    pub gaps: std::collections::BTreeSet<u64>,
    /// The largest connection stamp of an accepted status (see `yunjian_protocol::Status`).
    pub status_stamp: u64,
    /// Epochs the node's sequence numbers counted in before the current one (newest last).
    #[serde(skip)]
    pub retired_epochs: Vec<u64>,
    pub events: VecDeque<(u64, Event)>,
    /// The mandated antivirus: latest report and what was seen installed before.
    pub antivirus: AntivirusTrack,
    /// The BMC (physical hosts with IPMI configured): latest sweep, sensor history, SEL.
    pub hardware: HardwareTrack,
    /// When each part of the state last changed, so the policy engine re-evaluates only what
    /// changed (see [`Stamps`]).
    #[serde(skip)]
    pub stamps: Stamps,
    /// A VM stopped on purpose (a reclaim case's stop, an antivirus stop decision), and why:
    /// its silence is not a fault. Set by the command path ([`Fleet::mark_stopped`]), gone
    /// when the node is online again.
    pub stopped_on_purpose: Option<String>,
}

/// Change stamps: values of one process-wide counter that only grows, taken when a part of a
/// node's state changed. A rule that remembers the counter's value at its last evaluation
/// ([`Fleet::current_stamp`]) knows a node changed since when one of its stamps is above it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    /// A new periodic report (usage figures).
    pub report: u64,
    /// What is observed of the VMs: the node's inventory or a hypervisor's guest list changed
    /// content (a re-sent identical one does not count).
    pub observed: u64,
    /// Anything else a rule may look at: liveness, status, hello, the antivirus track, the
    /// hardware sweep.
    pub state: u64,
}

/// The fleet's change counter: it only grows; every stamp is a value it handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampClock(u64);

impl Default for StampClock {
    fn default() -> Self {
        StampClock(1)
    }
}

impl StampClock {
    /// The counter now: every stamp taken so far is at most this.
    pub fn current(&self) -> u64 {
        self.0
    }

    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

impl Stamps {
    /// A node new to this process: everything changed at stamp `s`.
    pub fn at(s: u64) -> Self {
        Stamps {
            report: s,
            observed: s,
            state: s,
        }
    }

    /// The newest of the three.
    pub fn any(&self) -> u64 {
        self.report.max(self.observed).max(self.state)
    }
}

impl NodeState {
    fn new(node: &str, stamp: u64) -> Self {
        NodeState {
            node: node.to_string(),
            role: None,
            status: Status::Offline,
            liveness: Liveness::Offline,
            liveness_since_ms: 0,
            last_seen_ms: 0,
            last_report_ts_ms: 0,
            hello: None,
            inventory: None,
            report: None,
            guests: Vec::new(),
            last_seq: 0,
            received: 0,
            duplicates: 0,
            missing: 0,
            gaps: std::collections::BTreeSet::new(),
            status_stamp: 0,
            retired_epochs: Vec::new(),
            events: VecDeque::new(),
            antivirus: AntivirusTrack::default(),
            hardware: HardwareTrack::default(),
            stamps: Stamps::at(stamp),
            stopped_on_purpose: None,
        }
    }

    /// The antivirus assessment of this node (a VM) at wall time `now_ms`; see
    /// [`crate::antivirus::assess_node`].
    pub fn antivirus_assessment(
        &self,
        max_age_days: u32,
        now_ms: u64,
    ) -> Option<crate::antivirus::Assessment> {
        crate::antivirus::assess_node(
            self.role,
            &self.antivirus,
            self.liveness,
            self.liveness_since_ms,
            max_age_days,
            now_ms,
        )
    }

    /// Everything wrong with this node's hardware now; see [`crate::hardware::assess`].
    pub fn hardware_problems(&self, now_ms: u64) -> Vec<crate::hardware::Problem> {
        crate::hardware::assess(&self.hardware, self.interval_ms(), self.liveness, now_ms)
    }

    pub fn interval_ms(&self) -> u64 {
        self.hello
            .as_ref()
            .map(|h| h.interval_ms as u64)
            .filter(|&i| i > 0)
            .unwrap_or(DEFAULT_INTERVAL_MS)
    }
}

/// Summary row for lists, the JSON API and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    pub node: String,
    pub role: Option<&'static str>,
    pub liveness: Liveness,
    pub hostname: Option<String>,
    pub rack: Option<String>,
    /// For a VM: the host whose guest list carries its SMBIOS UUID (none while the VM's
    /// claims conflict: two hosts list it, or two VMs report it).
    pub host: Option<String>,
    /// For a host: how many VMs it runs.
    pub vm_count: usize,
    pub smbios_uuid: Option<String>,
    pub cpu_pct: Option<f64>,
    pub mem_pct: Option<f64>,
    /// The fullest filesystem.
    pub disk_pct: Option<f64>,
    pub net_rx_bps: Option<u64>,
    pub net_tx_bps: Option<u64>,
    pub cpu_cores: Option<u16>,
    pub mem_total_kib: Option<u64>,
    pub last_seen_ms: u64,
    pub last_report_ts_ms: u64,
    pub last_seq: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
}

/// Counts for the dashboard header and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetTotals {
    pub hosts: usize,
    pub guests: usize,
    pub unknown_role: usize,
    pub online: usize,
    pub silent: usize,
    pub offline: usize,
}

impl FleetTotals {
    /// Counts over some nodes' summaries (a using unit's VMs: counts of what is shown only).
    pub fn of(nodes: &[NodeSummary]) -> FleetTotals {
        let mut t = FleetTotals::default();
        for n in nodes {
            t.count(n.role, n.liveness);
        }
        t
    }

    fn count(&mut self, role: Option<&str>, liveness: Liveness) {
        match role {
            Some("host") => self.hosts += 1,
            Some("guest") => self.guests += 1,
            _ => self.unknown_role += 1,
        }
        match liveness {
            Liveness::Online => self.online += 1,
            Liveness::Silent => self.silent += 1,
            Liveness::Offline => self.offline += 1,
        }
    }
}

#[derive(Debug, Default)]
pub struct Fleet {
    nodes: HashMap<String, NodeState>,
    /// SMBIOS UUID (lower case) → every node that claims it, kept as messages arrive so a
    /// VM's observation is a lookup, not a scan of the fleet (see [`Fleet::claims`]).
    claims: HashMap<String, Claims>,
    /// Recent changes other than reports, oldest first, so a rule looks at what changed
    /// instead of scanning the fleet (see [`Fleet::nodes_changed_since`]).
    changes: VecDeque<(u64, Changed)>,
    /// Changes stamped at or below this may have been dropped from `changes`.
    changes_floor: u64,
    /// Where this fleet's change stamps come from.
    clock: StampClock,
}

/// What one entry of the change log names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Changed {
    /// A node's state or what it shows of its VMs (not a mere report).
    Node(String),
    /// The claims of one VM UUID (lower case).
    Vm(String),
}

/// Entries kept in the change log; older ones are dropped (rules then scan once).
pub const CHANGES_KEPT: usize = 1 << 16;

/// The nodes that claim one VM UUID: hypervisors listing it, guests reporting it as their
/// SMBIOS UUID. Sorted by node id, so two claimants resolve the same way every time.
///
/// Only host identities claim as hosts and only guest identities as guests: ingest refuses a
/// guest list from a node enrolled as a guest ([`admits`]), and a host's own SMBIOS UUID is
/// not a VM claim.
#[derive(Debug, Default, Clone)]
pub struct Claims {
    pub hosts: std::collections::BTreeSet<String>,
    pub guests: std::collections::BTreeSet<String>,
    /// Change stamp: taken whenever a claim, or a claimant's view of the VM, changed. Kept
    /// when the last claim goes, so a rule looking for changes sees the VM disappear.
    pub stamp: u64,
}

/// Claims of one VM UUID that contradict each other: nobody can tell from the reports which
/// claimant is the VM (or its hypervisor), so no command is addressed to the VM until the
/// contradiction is resolved (an alarm says so: the `vm_claim_conflict` rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "nodes")]
pub enum ClaimConflict {
    /// Two or more hypervisor hosts list the VM (a copy left behind by a migration, a cloned
    /// domain, or a host claiming a VM that is not its own).
    Hosts(Vec<String>),
    /// Two or more VMs report the UUID as their own SMBIOS UUID (a cloned VM, or a VM
    /// claiming another's identity).
    Guests(Vec<String>),
}

impl std::fmt::Display for ClaimConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimConflict::Hosts(n) => {
                write!(f, "多台宿主机同时声明运行该虚拟机（{}）", n.join("、"))
            }
            ClaimConflict::Guests(n) => {
                write!(f, "多个虚拟机代理上报同一 SMBIOS UUID（{}）", n.join("、"))
            }
        }
    }
}

impl Claims {
    /// The contradiction among these claims, if any (hosts first: commands go to hosts).
    pub fn conflict(&self) -> Option<ClaimConflict> {
        if self.hosts.len() > 1 {
            Some(ClaimConflict::Hosts(self.hosts.iter().cloned().collect()))
        } else if self.guests.len() > 1 {
            Some(ClaimConflict::Guests(self.guests.iter().cloned().collect()))
        } else {
            None
        }
    }
}

/// Why a command for a VM cannot be addressed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unaddressable {
    /// No hypervisor host lists the VM.
    NoHost,
    /// The VM's claims contradict each other.
    Conflict(ClaimConflict),
}

/// Why a verified message does not fit the role its node was enrolled with (the role is bound
/// into the node's key, see [`yunjian_protocol::MasterKey::node_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoleMismatch {
    #[error("the node declares itself a {declared} but is enrolled as a {enrolled}")]
    Declared {
        declared: &'static str,
        enrolled: &'static str,
    },
    #[error("a guest list (claims of VMs) from a node enrolled as a guest")]
    GuestsFromGuest,
}

impl RoleMismatch {
    /// Short name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RoleMismatch::Declared { .. } => "declared_role",
            RoleMismatch::GuestsFromGuest => "guests_from_guest",
        }
    }
}

/// May a node enrolled as `enrolled` send `body`? A Hello or Inventory must declare the
/// enrolled role, and only hosts list VMs. (A guest's SMBIOS UUID is then a guest's claim,
/// since its Inventory declares the guest role.)
pub fn admits(enrolled: Role, body: &Body) -> Result<(), RoleMismatch> {
    let declared = match body {
        Body::Hello(h) => Some(h.role),
        Body::Inventory(i) => Some(i.role),
        Body::Guests(_) if enrolled != Role::Host => return Err(RoleMismatch::GuestsFromGuest),
        _ => None,
    };
    match declared {
        Some(d) if d != enrolled => Err(RoleMismatch::Declared {
            declared: d.as_str(),
            enrolled: enrolled.as_str(),
        }),
        _ => Ok(()),
    }
}

impl Fleet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn shared() -> SharedFleet {
        Arc::new(RwLock::new(Fleet::new()))
    }

    pub fn get(&self, node: &str) -> Option<&NodeState> {
        self.nodes.get(node)
    }

    /// The change counter now: a rule that remembers it at its evaluation asks
    /// [`Fleet::nodes_changed_since`] next time.
    pub fn current_stamp(&self) -> u64 {
        self.clock.current()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's antivirus track, for the stop decision recorded by the web layer (counts as
    /// a change of the node's state).
    pub fn antivirus_mut(&mut self, node: &str) -> Option<&mut AntivirusTrack> {
        let stamp = self.clock.next();
        let st = self.nodes.get_mut(node)?;
        st.stamps.state = stamp;
        log_change(
            &mut self.changes,
            &mut self.changes_floor,
            stamp,
            Changed::Node(node.into()),
        );
        Some(&mut st.antivirus)
    }

    /// A node's BMC track, for the SEL restored from storage at start-up.
    pub fn hardware_mut(&mut self, node: &str) -> Option<&mut HardwareTrack> {
        let stamp = self.clock.next();
        let st = self.nodes.get_mut(node)?;
        st.stamps.state = stamp;
        log_change(
            &mut self.changes,
            &mut self.changes_floor,
            stamp,
            Changed::Node(node.into()),
        );
        Some(&mut st.hardware)
    }

    /// The nodes whose state or observed VMs (not mere reports) changed after stamp `since`,
    /// each once. `None` when the change log no longer reaches back that far: look at every
    /// node instead.
    pub fn nodes_changed_since(&self, since: u64) -> Option<Vec<&NodeState>> {
        let names = self.changed_since(since, |c| match c {
            Changed::Node(n) => Some(n),
            Changed::Vm(_) => None,
        })?;
        Some(
            names
                .into_iter()
                .filter_map(|n| self.nodes.get(n))
                .collect(),
        )
    }

    /// The VM UUIDs (lower case) whose claims changed after stamp `since`, each once, with
    /// their claims; `None` as for [`Fleet::nodes_changed_since`].
    pub fn vms_changed_since(&self, since: u64) -> Option<Vec<(&str, &Claims)>> {
        let uuids = self.changed_since(since, |c| match c {
            Changed::Vm(u) => Some(u),
            Changed::Node(_) => None,
        })?;
        Some(
            uuids
                .into_iter()
                .filter_map(|u| Some((u, self.claims.get(u)?)))
                .collect(),
        )
    }

    fn changed_since<'a>(
        &'a self,
        since: u64,
        pick: impl Fn(&'a Changed) -> Option<&'a String>,
    ) -> Option<std::collections::BTreeSet<&'a str>> {
        if since < self.changes_floor {
            return None;
        }
        Some(
            self.changes
                .iter()
                .rev()
                .take_while(|(stamp, _)| *stamp > since)
                .filter_map(|(_, c)| pick(c).map(String::as_str))
                .collect(),
        )
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values()
    }

    /// Every VM UUID (lower case) ever claimed, with its claimants and change stamp.
    pub fn claims(&self) -> impl Iterator<Item = (&str, &Claims)> {
        self.claims.iter().map(|(u, c)| (u.as_str(), c))
    }

    /// The claimants of one VM UUID (any case).
    pub fn claims_of(&self, uuid: &str) -> Option<&Claims> {
        self.claims.get(&uuid.to_ascii_lowercase())
    }

    /// The one host a command for VM `uuid` (any case) goes to, with the VM as that host lists
    /// it: only when exactly one host lists it and its claims do not contradict each other.
    pub fn command_host(&self, uuid: &str) -> Result<(String, GuestView), Unaddressable> {
        let claims = self.claims_of(uuid).ok_or(Unaddressable::NoHost)?;
        if let Some(c) = claims.conflict() {
            return Err(Unaddressable::Conflict(c));
        }
        claims
            .hosts
            .iter()
            .find_map(|h| {
                let g = self
                    .nodes
                    .get(h)?
                    .guests
                    .iter()
                    .find(|g| g.uuid.eq_ignore_ascii_case(uuid))?;
                Some((h.clone(), g.clone()))
            })
            .ok_or(Unaddressable::NoHost)
    }

    /// Record that `node` claims (or stopped claiming) `uuid` as a host or a guest.
    fn claim(&mut self, uuid: &str, node: &str, host: bool, present: bool) {
        let c = self.claims.entry(uuid.to_ascii_lowercase()).or_default();
        let set = if host { &mut c.hosts } else { &mut c.guests };
        if present {
            set.insert(node.to_string());
        } else {
            set.remove(node);
        }
        c.stamp = self.clock.next();
        let uuid = uuid.to_ascii_lowercase();
        log_change(
            &mut self.changes,
            &mut self.changes_floor,
            c.stamp,
            Changed::Vm(uuid),
        );
    }

    /// The SMBIOS UUID a VM reports for itself (a host's own UUID is not a VM claim).
    fn own_uuid(st: &NodeState) -> Option<String> {
        let inv = st.inventory.as_ref().filter(|i| i.role == Role::Guest)?;
        inv.smbios_uuid.clone()
    }

    /// Restore a node from storage at start-up (it stays offline until it speaks).
    pub fn restore(&mut self, mut state: NodeState, now_ms: u64) {
        state.liveness = Liveness::Offline;
        state.liveness_since_ms = now_ms;
        state.status = Status::Offline;
        state.stamps = Stamps::at(self.clock.next());
        if state.role == Some(Role::Guest) {
            // stored before guest lists were refused from guests: not a claim
            state.guests.clear();
        }
        for g in &state.guests {
            self.claim(&g.uuid, &state.node, true, true);
        }
        if let Some(u) = Self::own_uuid(&state) {
            self.claim(&u, &state.node, false, true);
        }
        self.nodes.insert(state.node.clone(), state);
    }

    /// Apply a verified envelope received at wall time `now_ms`.
    pub fn apply(&mut self, env: Envelope, now_ms: u64) -> Applied {
        let node = env.node.clone();
        let before = self.nodes.get(&node).map(|st| st.stamps);
        let applied = self.apply_inner(env, now_ms);
        if let Some(st) = self.nodes.get(&node) {
            let (b, a) = (
                before.unwrap_or(Stamps {
                    report: 0,
                    observed: 0,
                    state: 0,
                }),
                st.stamps,
            );
            if a.state != b.state || a.observed != b.observed {
                let stamp = a.state.max(a.observed);
                log_change(
                    &mut self.changes,
                    &mut self.changes_floor,
                    stamp,
                    Changed::Node(node),
                );
            }
        }
        applied
    }

    fn apply_inner(&mut self, env: Envelope, now_ms: u64) -> Applied {
        if !self.nodes.contains_key(&env.node) {
            let stamp = self.clock.next();
            self.nodes
                .insert(env.node.clone(), NodeState::new(&env.node, stamp));
        }
        let Some(st) = self.nodes.get_mut(&env.node) else {
            return Applied::Duplicate;
        };
        if let Some(refusal) = check_stream(st, &env) {
            return Applied::Refused(refusal);
        }
        st.last_seen_ms = now_ms;
        if let Body::Status(s) = env.body {
            // Status messages are outside the sequence stream; their seq is the connection
            // stamp, checked above.
            st.status_stamp = env.seq;
            st.status = s;
            set_liveness(
                st,
                &mut self.clock,
                match s {
                    Status::Online => Liveness::Online,
                    Status::Offline => Liveness::Offline,
                },
                now_ms,
            );
            return Applied::Fresh;
        }
        // Any upstream message proves the node is connected.
        if st.status == Status::Online {
            set_liveness(st, &mut self.clock, Liveness::Online, now_ms);
        }
        let applied = if env.seq <= st.last_seq {
            if !st.gaps.remove(&env.seq) {
                st.duplicates += 1;
                return Applied::Duplicate;
            }
            st.missing = st.missing.saturating_sub(1);
            st.received += 1;
            // Older than what we hold: keep its event, not its state. Antivirus reports are
            // ordered by their own track (one sent before a reconnect's Hello is still news).
            match env.body {
                Body::Event(e) => push_event(st, env.ts_ms, e),
                Body::Antivirus(a) => {
                    st.antivirus.observe(env.ts_ms, env.seq, a, st.last_seq);
                    st.stamps.state = self.clock.next();
                }
                Body::Hardware(h) => {
                    st.hardware.observe_late(h, now_ms);
                    st.stamps.state = self.clock.next();
                }
                _ => {}
            }
            return Applied::Late;
        } else if env.seq > st.last_seq + 1
            // A node first seen mid-stream (its agent ran before this aggregator knew it)
            // starts fresh; one first seen near the start of its stream (seq counts from 1)
            // expects the numbers before: the first report can come after a reconnect's Hello.
            && (st.last_seq > 0 || env.seq <= GAP_MEMORY as u64)
        {
            let missing = env.seq - st.last_seq - 1;
            st.missing = st.missing.saturating_add(missing);
            let from = (st.last_seq + 1).max(env.seq.saturating_sub(GAP_MEMORY as u64));
            st.gaps.extend(from..env.seq);
            while st.gaps.len() > GAP_MEMORY {
                st.gaps.pop_first();
            }
            Applied::AfterGap { missing }
        } else {
            Applied::Fresh
        };
        st.last_seq = env.seq;
        st.received += 1;
        match env.body {
            Body::Hello(h) => {
                st.role = Some(h.role);
                st.hello = Some(h);
                st.stamps.state = self.clock.next();
            }
            Body::Inventory(inv) => {
                st.role = Some(inv.role);
                if st.inventory.as_ref() != Some(&inv) {
                    st.stamps.observed = self.clock.next();
                    let node = st.node.clone();
                    let old = Self::own_uuid(st);
                    st.inventory = Some(inv);
                    let new = Self::own_uuid(st);
                    if let Some(u) = old.filter(|o| Some(o) != new.as_ref()) {
                        self.claim(&u, &node, false, false);
                    }
                    if let Some(u) = new {
                        // present again, or the same UUID with a new size: a change of its view
                        self.claim(&u, &node, false, true);
                    }
                } else {
                    st.inventory = Some(inv);
                }
            }
            Body::Report(r) => {
                st.last_report_ts_ms = env.ts_ms;
                st.report = Some(r);
                st.stamps.report = self.clock.next();
            }
            Body::Event(e) => push_event(st, env.ts_ms, e),
            Body::Guests(g) if g == st.guests => {}
            Body::Guests(g) => {
                st.stamps.observed = self.clock.next();
                let node = st.node.clone();
                let old: Vec<GuestView> = st.guests.drain(..).collect();
                for o in &old {
                    // gone from the list, or listed differently: both change its view
                    if !g.contains(o) {
                        let still = g.iter().any(|v| v.uuid.eq_ignore_ascii_case(&o.uuid));
                        self.claim(&o.uuid, &node, true, still);
                    }
                }
                for v in &g {
                    if !old.contains(v) {
                        self.claim(&v.uuid, &node, true, true);
                    }
                }
                // re-borrow: the entry was released by the claim updates above
                if let Some(st) = self.nodes.get_mut(&node) {
                    st.guests = g;
                }
            }
            Body::Antivirus(a) => {
                st.antivirus.observe(env.ts_ms, env.seq, a, st.last_seq);
                st.stamps.state = self.clock.next();
            }
            Body::Hardware(h) => {
                st.hardware.observe(env.ts_ms, h, now_ms);
                st.stamps.state = self.clock.next();
            }
            // Commands flow the other way; results are recorded by the command path.
            Body::Command(_)
            | Body::CommandResult(_)
            | Body::CommandEvidence(_)
            | Body::Status(_) => {}
        }
        applied
    }

    /// Say that the VM agent `node` is stopped on purpose (`why`), or no longer (`None`).
    /// Returns whether anything changed; a change is seen by the rules like any other.
    pub fn mark_stopped(&mut self, node: &str, why: Option<String>) -> bool {
        let Some(st) = self.nodes.get_mut(node) else {
            return false;
        };
        if st.stopped_on_purpose == why {
            return false;
        }
        st.stopped_on_purpose = why;
        st.stamps.state = self.clock.next();
        log_change(
            &mut self.changes,
            &mut self.changes_floor,
            st.stamps.state,
            Changed::Node(st.node.clone()),
        );
        true
    }

    /// [`Fleet::mark_stopped`] for every VM agent reporting SMBIOS UUID `uuid`.
    pub fn mark_stopped_vm(&mut self, uuid: &str, why: Option<String>) -> usize {
        let nodes: Vec<String> = self
            .claims_of(uuid)
            .map(|c| c.guests.iter().cloned().collect())
            .unwrap_or_default();
        nodes
            .iter()
            .filter(|n| self.mark_stopped(n, why.clone()))
            .count()
    }

    /// Mark nodes silent when they have not spoken for [`SILENCE_FACTOR`] intervals.
    /// Returns how many changed state.
    pub fn sweep_silence(&mut self, now_ms: u64) -> usize {
        let mut changed = 0;
        for st in self.nodes.values_mut() {
            if st.liveness == Liveness::Online
                && now_ms.saturating_sub(st.last_seen_ms) > SILENCE_FACTOR * st.interval_ms()
            {
                set_liveness(st, &mut self.clock, Liveness::Silent, now_ms);
                log_change(
                    &mut self.changes,
                    &mut self.changes_floor,
                    st.stamps.state,
                    Changed::Node(st.node.clone()),
                );
                changed += 1;
            }
        }
        changed
    }

    pub fn totals(&self) -> FleetTotals {
        let mut t = FleetTotals::default();
        for st in self.nodes.values() {
            t.count(st.role.map(Role::as_str), st.liveness);
        }
        t
    }

    pub fn summary(&self, st: &NodeState) -> NodeSummary {
        let inv = st.inventory.as_ref();
        let uuid = inv.and_then(|i| i.smbios_uuid.as_ref());
        let r = st.report.as_ref();
        NodeSummary {
            node: st.node.clone(),
            role: st.role.map(Role::as_str),
            liveness: st.liveness,
            hostname: inv.map(|i| i.hostname.clone()),
            rack: inv.and_then(|i| i.rack.clone()),
            host: uuid
                .filter(|_| st.role == Some(Role::Guest))
                .and_then(|u| self.command_host(u).ok())
                .map(|(h, _)| h),
            vm_count: st.guests.len(),
            smbios_uuid: uuid.cloned(),
            cpu_pct: r.map(|r| r.cpu_busy as f64 / 100.0),
            mem_pct: r
                .filter(|r| r.mem.total_kib > 0)
                .map(|r| pct(r.mem.used_kib, r.mem.total_kib)),
            disk_pct: r.and_then(|r| {
                r.disks
                    .iter()
                    .filter(|d| d.total_kib > 0)
                    .map(|d| pct(d.used_kib, d.total_kib))
                    .reduce(f64::max)
            }),
            net_rx_bps: r.map(|r| r.nets.iter().map(|n| n.rx_bps).sum()),
            net_tx_bps: r.map(|r| r.nets.iter().map(|n| n.tx_bps).sum()),
            cpu_cores: inv.map(|i| i.cpu_cores),
            mem_total_kib: inv.map(|i| i.mem_total_kib),
            last_seen_ms: st.last_seen_ms,
            last_report_ts_ms: st.last_report_ts_ms,
            last_seq: st.last_seq,
            received: st.received,
            missing: st.missing,
            duplicates: st.duplicates,
        }
    }

    /// Every node, sorted by role (hosts first), rack, then node id.
    pub fn summaries(&self) -> Vec<NodeSummary> {
        let mut v: Vec<NodeSummary> = self.nodes.values().map(|s| self.summary(s)).collect();
        v.sort_by(|a, b| {
            (a.role != Some("host"), &a.rack, &a.node).cmp(&(
                b.role != Some("host"),
                &b.rack,
                &b.node,
            ))
        });
        v
    }
}

fn set_liveness(st: &mut NodeState, clock: &mut StampClock, l: Liveness, now_ms: u64) {
    if st.liveness != l {
        st.liveness = l;
        st.liveness_since_ms = now_ms;
        st.stamps.state = clock.next();
        if l == Liveness::Online {
            // running again: a later silence is a fault again
            st.stopped_on_purpose = None;
        }
    }
}

/// Append to the change log, dropping the oldest entry past [`CHANGES_KEPT`]. Entries go in
/// in stamp order except where two changes of one message interleave; `floor` covers that.
fn log_change(log: &mut VecDeque<(u64, Changed)>, floor: &mut u64, stamp: u64, what: Changed) {
    if log.back().is_some_and(|(s, w)| *s == stamp && *w == what) {
        return;
    }
    if log.len() == CHANGES_KEPT {
        if let Some((s, _)) = log.pop_front() {
            *floor = (*floor).max(s);
        }
    }
    // keep the log sorted by stamp so a reader can stop at the first old entry
    let at = log
        .iter()
        .rposition(|(s, _)| *s <= stamp)
        .map_or(0, |i| i + 1);
    log.insert(at, (stamp, what));
}

/// The stream checks that come before anything is applied: a status must be of the newest
/// connection, a hello of a new epoch starts a new count (and one of a retired epoch is a
/// replay), and a sequence number may not leap. `None`: go on.
fn check_stream(st: &mut NodeState, env: &Envelope) -> Option<Refusal> {
    match &env.body {
        Body::Status(_) => {
            return (env.seq < st.status_stamp).then_some(Refusal::StaleStatus);
        }
        Body::Hello(h) if h.epoch != 0 => {
            let current = st.hello.as_ref().map_or(0, |c| c.epoch);
            if h.epoch != current {
                if st.retired_epochs.contains(&h.epoch) {
                    return Some(Refusal::RetiredEpoch);
                }
                if env.seq > MAX_SEQ {
                    return Some(Refusal::SeqJump);
                }
                // A new count: the frames the hello says wait in the buffer (replayed after
                // it) are the gap before it; whatever the old epoch still missed is lost for
                // good and stays counted in `missing`.
                if current != 0 {
                    st.retired_epochs.push(current);
                    if st.retired_epochs.len() > RETIRED_EPOCHS {
                        st.retired_epochs.remove(0);
                    }
                }
                st.gaps.clear();
                // the hello itself then comes next in the new count and is applied as usual
                st.last_seq = env.seq.saturating_sub(u64::from(h.buffered) + 1);
                return None;
            }
        }
        _ => {}
    }
    let leap = env.seq > MAX_SEQ
        || (st.last_seq > 0 && env.seq.saturating_sub(st.last_seq) > MAX_SEQ_STEP);
    leap.then_some(Refusal::SeqJump)
}

fn push_event(st: &mut NodeState, ts_ms: u64, e: Event) {
    if st.events.len() == EVENTS_KEPT {
        st.events.pop_front();
    }
    st.events.push_back((ts_ms, e));
}

fn pct(part: u64, whole: u64) -> f64 {
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunjian_protocol::{GuestView, Memory};

    fn report(cpu: u16) -> Body {
        Body::Report(Report {
            cpu_busy: cpu,
            per_core: vec![cpu],
            load: [0; 3],
            mem: Memory {
                total_kib: 1000,
                used_kib: 250,
                ..Memory::default()
            },
            disks: vec![],
            nets: vec![],
            uptime_s: 1,
            failed: vec![],
        })
    }

    fn env(node: &str, seq: u64, body: Body) -> Envelope {
        Envelope::new(node, seq, 1000 + seq, body)
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_counted() {
        let mut f = Fleet::new();
        // the first message seen is seq 2: seq 1 is expected (it may come late)
        assert_eq!(
            f.apply(env("a", 2, report(200)), 1),
            Applied::AfterGap { missing: 1 }
        );
        assert_eq!(f.apply(env("a", 1, report(100)), 1), Applied::Late);
        assert_eq!(f.get("a").unwrap().missing, 0);
        // a node first seen far into its stream starts there
        assert_eq!(f.apply(env("b", 90_000, report(1)), 1), Applied::Fresh);
        assert_eq!(f.get("b").unwrap().missing, 0);
        assert_eq!(f.apply(env("a", 2, report(999)), 3), Applied::Duplicate);
        assert_eq!(
            f.apply(env("a", 5, report(500)), 4),
            Applied::AfterGap { missing: 2 }
        );
        let s = f.get("a").unwrap();
        assert_eq!(
            (s.last_seq, s.received, s.duplicates, s.missing),
            (5, 3, 1, 2)
        );
        assert_eq!(s.report.as_ref().unwrap().cpu_busy, 500);
        assert_eq!(f.summary(s).mem_pct, Some(25.0));
        // the missing 4 arrives late: it fills its gap, does not replace the newer report,
        // and a second copy of it is a duplicate
        assert_eq!(f.apply(env("a", 4, report(400)), 5), Applied::Late);
        assert_eq!(f.apply(env("a", 4, report(400)), 6), Applied::Duplicate);
        let s = f.get("a").unwrap();
        assert_eq!((s.received, s.duplicates, s.missing), (4, 2, 1));
        assert_eq!(s.report.as_ref().unwrap().cpu_busy, 500);
    }

    #[test]
    fn status_and_silence_drive_liveness() {
        let mut f = Fleet::new();
        f.apply(env("a", 0, Body::Status(Status::Online)), 0);
        f.apply(env("a", 1, report(1)), 1_000);
        assert_eq!(f.get("a").unwrap().liveness, Liveness::Online);
        assert_eq!(f.sweep_silence(1_000 + 3 * DEFAULT_INTERVAL_MS), 0);
        assert_eq!(f.sweep_silence(1_001 + 3 * DEFAULT_INTERVAL_MS), 1);
        assert_eq!(f.get("a").unwrap().liveness, Liveness::Silent);
        f.apply(env("a", 2, report(1)), 50_000);
        assert_eq!(f.get("a").unwrap().liveness, Liveness::Online);
        f.apply(env("a", 0, Body::Status(Status::Offline)), 50_001);
        assert_eq!(f.get("a").unwrap().liveness, Liveness::Offline);
        // a late report after the will does not resurrect it; only a new Online status does
        f.apply(env("a", 3, report(1)), 50_002);
        assert_eq!(f.get("a").unwrap().liveness, Liveness::Offline);
    }

    #[test]
    fn guests_join_vms_to_their_host() {
        let mut f = Fleet::new();
        let g = |uuid: &str| GuestView {
            uuid: uuid.into(),
            name: "vm".into(),
            vcpus: 2,
            mem_kib: 1,
            disk_kib: 1,
            running: true,
        };
        f.apply(env("h1", 1, Body::Guests(vec![g("AA-1"), g("bb-2")])), 1);
        let inv = Inventory {
            hostname: "vm1".into(),
            role: Role::Guest,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: 2,
            mem_total_kib: 1,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some("aa-1".into()),
            rack: None,
        };
        f.apply(env("vm1", 1, Body::Inventory(inv)), 1);
        let s = f.summary(f.get("vm1").unwrap());
        assert_eq!(s.host.as_deref(), Some("h1"));
        assert_eq!(f.summary(f.get("h1").unwrap()).vm_count, 2);
        // the host no longer lists it: the join goes away
        f.apply(env("h1", 2, Body::Guests(vec![g("bb-2")])), 2);
        assert_eq!(f.summary(f.get("vm1").unwrap()).host, None);
    }

    #[test]
    fn a_node_may_send_only_what_fits_its_enrolled_role() {
        let hello = |role| {
            Body::Hello(Hello {
                agent_version: String::new(),
                role,
                interval_ms: 1,
                buffered: 0,
                epoch: 1,
            })
        };
        assert_eq!(admits(Role::Host, &hello(Role::Host)), Ok(()));
        assert!(matches!(
            admits(Role::Guest, &hello(Role::Host)),
            Err(RoleMismatch::Declared { .. })
        ));
        assert_eq!(admits(Role::Host, &Body::Guests(vec![])), Ok(()));
        assert_eq!(
            admits(Role::Guest, &Body::Guests(vec![])),
            Err(RoleMismatch::GuestsFromGuest)
        );
        assert_eq!(admits(Role::Guest, &report(1)), Ok(()));
    }

    #[test]
    fn a_command_is_addressed_only_to_the_one_host_of_an_uncontested_vm() {
        let mut f = Fleet::new();
        let g = GuestView {
            uuid: "AA-1".into(),
            name: "vm".into(),
            vcpus: 2,
            mem_kib: 1,
            disk_kib: 1,
            running: true,
        };
        assert_eq!(f.command_host("aa-1"), Err(Unaddressable::NoHost));
        f.apply(env("h1", 1, Body::Guests(vec![g.clone()])), 1);
        assert_eq!(f.command_host("aa-1").map(|(h, _)| h), Ok("h1".into()));
        f.apply(env("h2", 1, Body::Guests(vec![g])), 1);
        assert_eq!(
            f.command_host("AA-1"),
            Err(Unaddressable::Conflict(ClaimConflict::Hosts(vec![
                "h1".into(),
                "h2".into()
            ])))
        );
    }

    #[test]
    fn the_change_log_names_what_changed_and_not_mere_reports() {
        let mut f = Fleet::new();
        let view = |uuid: &str, vcpus| GuestView {
            uuid: uuid.into(),
            name: "vm".into(),
            vcpus,
            mem_kib: 1,
            disk_kib: 1,
            running: true,
        };
        f.apply(env("h1", 1, Body::Guests(vec![view("AA-1", 2)])), 1);
        f.apply(env("h2", 0, Body::Status(Status::Online)), 1);
        f.apply(env("h2", 1, report(10)), 1);
        let since = f.current_stamp();
        // reports alone, and a guest list sent again unchanged: nothing changed
        f.apply(env("h2", 2, report(20)), 2);
        f.apply(env("h1", 2, Body::Guests(vec![view("AA-1", 2)])), 2);
        assert!(f.nodes_changed_since(since).unwrap().is_empty());
        assert!(f.vms_changed_since(since).unwrap().is_empty());
        // the VM resized on its host: the host and the VM's UUID changed
        f.apply(env("h1", 3, Body::Guests(vec![view("AA-1", 4)])), 3);
        // h2 goes silent
        f.sweep_silence(1_000_000);
        let nodes: Vec<&str> = f
            .nodes_changed_since(since)
            .unwrap()
            .iter()
            .map(|st| st.node.as_str())
            .collect();
        assert_eq!(nodes.len(), 2);
        assert!(nodes.contains(&"h1") && nodes.contains(&"h2"));
        let vms: Vec<&str> = f
            .vms_changed_since(since)
            .unwrap()
            .iter()
            .map(|(u, _)| *u)
            .collect();
        assert_eq!(vms, ["aa-1"]);
    }

    #[test]
    fn a_change_log_that_no_longer_reaches_back_says_so() {
        let mut f = Fleet::new();
        f.apply(env("h0", 1, report(1)), 1);
        let since = f.current_stamp();
        for i in 0..CHANGES_KEPT + 10 {
            f.apply(env(&format!("n{i}"), 1, report(1)), 1);
        }
        assert!(f.nodes_changed_since(since).is_none(), "must scan instead");
        assert!(f.nodes_changed_since(f.current_stamp()).is_some());
    }
}
