//! The storage ports: what the aggregator keeps across a restart, one trait per domain, and
//! the one error every backend speaks. SQL stays in the backend crates (`yunjian-store-sqlite`,
//! `yunjian-store-postgres`), which implement every trait here; the storage scenario test
//! (`tests/tests/storage.rs`) runs the same story against each.
//!
//! What is stored: the latest state of every node (so a restarted aggregator shows the fleet
//! as it last saw it, and resumes sequence checking where it stopped) and the agents' events;
//! alarms, the append-only audit log, the allocation register, utilisation history and
//! exemptions, BMC event logs, reclaim cases with their timelines and the commands to agents.
//! Bodies are stored as the verified wire frames they arrived in: ingest does no encoding on its
//! hot path, and loading decodes them with the protocol's own decoder.
//!
//! Backends are synchronous: each handle is one connection, used from one thread (the storage
//! thread, a reader behind a lock, or a blocking task), never on the async runtime itself.

use crate::alarms::{Alarm, AlarmEvent};
use crate::antivirus::AntivirusTrack;
pub use crate::audit::AuditEntry;
use crate::fleet::{Liveness, NodeState};
use crate::register::{Register, UnitRecord};
use bytes::Bytes;
use std::collections::VecDeque;
use yunjian_protocol::{decode_unverified, Body, Role, Severity, Status};

/// What went wrong with storage, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The thing asked for is not stored.
    #[error("not stored: {what}")]
    NotFound { what: String },
    /// The write contradicts what is stored (a key taken, an append-only row changed).
    #[error("conflicts with what is stored: {what}")]
    Conflict { what: String },
    /// A stored row cannot be read back.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("database schema version {found} is newer than this build knows ({known}); upgrade the aggregator")]
    SchemaTooNew { found: u32, known: u32 },
    /// The database itself failed (I/O, connection, SQL); `target` names the file or server.
    #[error("{backend} database {target}: {source}")]
    Backend {
        backend: &'static str,
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// A stable name for counters and API error codes.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::NotFound { .. } => "not_found",
            StorageError::Conflict { .. } => "conflict",
            StorageError::Corrupt { .. } => "corrupt",
            StorageError::SchemaTooNew { .. } => "schema_too_new",
            StorageError::Backend { .. } => "backend",
        }
    }
}

/// The persisted part of a node's state. A `None` frame means "unchanged": the stored one is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node: String,
    pub role: Option<Role>,
    pub last_seen_ms: u64,
    pub last_report_ts_ms: u64,
    pub last_seq: u64,
    pub received: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Latest verified frames by body kind.
    pub hello: Option<Bytes>,
    pub inventory: Option<Bytes>,
    pub report: Option<Bytes>,
    pub guests: Option<Bytes>,
    pub antivirus: Option<Bytes>,
    /// What the node's antivirus was seen like before ([`crate::antivirus::AvHistory`], JSON).
    pub antivirus_history: Option<String>,
    /// The sequence numbers still awaited ([`NodeState::gaps`], as [`encode_gaps`] writes
    /// them), so that a replay reaching a restarted aggregator fills its gap instead of being
    /// taken for a duplicate. Unlike the frames, `None` means "none awaited": every row
    /// carries the node's whole set.
    pub gaps: Option<Bytes>,
}

/// The awaited sequence numbers as runs `first..=last`, each two u64 LE; `None` for none.
pub fn encode_gaps(gaps: &std::collections::BTreeSet<u64>) -> Option<Bytes> {
    let mut out = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for &seq in gaps {
        run = match run {
            Some((first, last)) if last + 1 == seq => Some((first, seq)),
            Some((first, last)) => {
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&last.to_le_bytes());
                Some((seq, seq))
            }
            None => Some((seq, seq)),
        };
    }
    let (first, last) = run?;
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    Some(out.into())
}

/// Read back what [`encode_gaps`] wrote; at most [`crate::fleet::GAP_MEMORY`] numbers.
pub fn decode_gaps(bytes: &[u8]) -> Result<std::collections::BTreeSet<u64>, String> {
    if !bytes.len().is_multiple_of(16) {
        return Err(format!("gaps: {} bytes, not runs of 16", bytes.len()));
    }
    let mut gaps = std::collections::BTreeSet::new();
    for run in bytes.chunks_exact(16) {
        let (first, last) = run.split_at(8);
        let first = u64::from_le_bytes(first.try_into().unwrap_or_default());
        let last = u64::from_le_bytes(last.try_into().unwrap_or_default());
        if first > last || last - first >= crate::fleet::GAP_MEMORY as u64 {
            return Err(format!("gaps: run {first}..={last}"));
        }
        gaps.extend(first..=last);
        if gaps.len() > crate::fleet::GAP_MEMORY {
            return Err(format!(
                "gaps: more than {} numbers",
                crate::fleet::GAP_MEMORY
            ));
        }
    }
    Ok(gaps)
}

/// One BMC System Event Log entry of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct SelRow {
    pub node: String,
    pub record: crate::hardware::SelRecord,
}

/// A finding fed to the reclaim service ([`crate::reclaim::Detection`]) and when.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRow {
    /// When it was fed (the re-check wants it fresher than `recheck_within`).
    pub fed_ms: u64,
    /// The finding; its UUID is lower-case (the service's key).
    pub detection: crate::reclaim::Detection,
}

/// One agent event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub node: String,
    pub ts_ms: u64,
    pub severity: Severity,
    pub code: String,
    pub message: String,
}

/// Everything one transaction writes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub nodes: Vec<NodeRow>,
    pub events: Vec<EventRow>,
    /// Alarm lifecycle changes (the latest state of each alarm is kept).
    pub alarms: Vec<AlarmEvent>,
    pub audit: Vec<AuditEntry>,
    /// Register changes: each unit as it now is, in order.
    pub register: Vec<UnitRecord>,
    /// New BMC SEL entries (an entry already stored is not stored again).
    pub sel: Vec<SelRow>,
    /// Closed (or re-merged) days of VM utilisation history, upserted.
    pub usage_days: Vec<crate::usage::UsageDayRow>,
    /// Exemptions as they now are (new or revoked), upserted.
    pub exemptions: Vec<crate::usage::Exemption>,
    /// Users as they now are (new, password changed, disabled), upserted.
    pub users: Vec<crate::identity::User>,
    /// API tokens as they now are (issued or revoked), upserted.
    pub tokens: Vec<crate::identity::ApiToken>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.events.is_empty()
            && self.alarms.is_empty()
            && self.audit.is_empty()
            && self.register.is_empty()
            && self.sel.is_empty()
            && self.usage_days.is_empty()
            && self.exemptions.is_empty()
            && self.users.is_empty()
            && self.tokens.is_empty()
    }
}

/// The schema and the one write path. A [`WriteBatch`] spans domains (ingest's node rows with
/// the utilisation days and alarms they caused; a register change with its audit entry) and
/// is written in one transaction: all of it or none.
pub trait Schema {
    /// Which backend, for logs and errors (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Bring the schema to the current version; returns it. A database whose schema is newer
    /// than this build knows is refused with [`StorageError::SchemaTooNew`].
    fn migrate(&mut self) -> Result<u32, StorageError>;
    /// Write one batch in one transaction.
    fn write(&mut self, batch: &WriteBatch) -> Result<(), StorageError>;
}

/// Nodes, their agents' events and their BMC event logs.
pub trait NodeStore {
    /// Every stored node.
    fn load_nodes(&mut self) -> Result<Vec<NodeRow>, StorageError>;
    /// The most recent events, newest first, optionally of one node.
    fn events(&mut self, node: Option<&str>, limit: usize) -> Result<Vec<EventRow>, StorageError>;
    /// The newest `per_node` SEL entries of every node, per node oldest first.
    fn load_sel(&mut self, per_node: usize) -> Result<Vec<SelRow>, StorageError>;
}

/// Alarms, the latest state of each.
pub trait AlarmStore {
    /// Alarms still open (active or acknowledged), to resume after a restart.
    fn open_alarms(&mut self) -> Result<Vec<Alarm>, StorageError>;
}

/// The append-only audit log.
pub trait AuditStore {
    /// The most recent audit entries, newest first, optionally about one subject.
    fn audit(
        &mut self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StorageError>;
    /// The entries matching `filter`, newest first.
    fn audit_search(
        &mut self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<Vec<AuditEntry>, StorageError>;
    /// Delete audit entries older than `before_ms` (retention from the policy profile),
    /// leaving a checkpoint signed with `key` so that the rest of the chain still verifies.
    fn expire_audit(&mut self, before_ms: u64, key: &[u8]) -> Result<usize, StorageError>;
    /// The chain in id order from after `after_id`, at most `limit` entries (for `audit verify`).
    fn audit_chain(
        &mut self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::ChainedEntry>, StorageError>;
    /// The latest retention checkpoint, if entries were ever removed.
    fn audit_checkpoint(&mut self) -> Result<Option<crate::audit::Checkpoint>, StorageError>;
}

/// The allocation register.
pub trait RegisterStore {
    /// The register's units and VMs (pools come from configuration).
    fn load_register(&mut self) -> Result<Register, StorageError>;
}

/// Utilisation history and the exemption register.
pub trait UsageStore {
    /// Stored utilisation days from `since_day` on. Backends keep a day as its number
    /// ([`crate::time::Day`]`.0`, days since 1970-01-01).
    fn load_usage(
        &mut self,
        since_day: crate::time::Day,
    ) -> Result<Vec<crate::usage::UsageDayRow>, StorageError>;
    /// Delete utilisation days before `before_day` (retention from the policy profile).
    fn expire_usage(&mut self, before_day: crate::time::Day) -> Result<usize, StorageError>;
    /// Every exemption ever registered, by id.
    fn load_exemptions(&mut self) -> Result<Vec<crate::usage::Exemption>, StorageError>;
}

/// Reclaim cases, their append-only timelines and the commands to agents.
pub trait ReclaimStore {
    /// Cases, timeline entries, commands and audit entries, in one transaction: durable when
    /// this returns (a command is stored before it is published).
    fn reclaim_write(&mut self, w: &crate::reclaim::ReclaimWrite) -> Result<(), StorageError>;
    /// Every reclaim case, by id.
    fn reclaim_cases(&mut self) -> Result<Vec<crate::reclaim::Case>, StorageError>;
    /// One case's timeline, oldest first.
    fn reclaim_log(&mut self, case_id: u64) -> Result<Vec<crate::reclaim::LogEntry>, StorageError>;
    /// Commands to agents, oldest first; only those still waiting for a result if asked.
    fn commands(
        &mut self,
        outstanding_only: bool,
    ) -> Result<Vec<crate::reclaim::CommandRecord>, StorageError>;
}

/// The latest finding fed to the reclaim service per VM, kept so that the re-check before a
/// scheduled case acts still finds it after a restart.
/// Applications (申请) with their timelines and files (see [`crate::lifecycle`]).
pub trait ApplicationStore {
    /// One transaction: the applications as they now are, their new timeline lines, new files,
    /// the register changes their steps made and the audit entries.
    fn application_write(
        &mut self,
        w: &crate::lifecycle::ApplicationWrite,
    ) -> Result<(), StorageError>;
    /// Every application, by id.
    fn applications(&mut self) -> Result<Vec<crate::lifecycle::Application>, StorageError>;
    /// One application's timeline, oldest first.
    fn application_log(
        &mut self,
        application: u64,
    ) -> Result<Vec<crate::lifecycle::LogEntry>, StorageError>;
    /// An attached file's name and bytes.
    fn application_file(
        &mut self,
        application: u64,
        id: u64,
    ) -> Result<Option<(String, Vec<u8>)>, StorageError>;
}

pub trait DetectionStore {
    /// Store findings in one transaction, each replacing the stored one of its VM UUID.
    fn store_detections(&mut self, found: &[DetectionRow]) -> Result<(), StorageError>;
    /// Every stored finding, by VM UUID.
    fn load_detections(&mut self) -> Result<Vec<DetectionRow>, StorageError>;
}

/// The people who sign in and their API tokens.
pub trait UserStore {
    /// Every user, by name.
    fn load_users(&mut self) -> Result<Vec<crate::identity::User>, StorageError>;
    /// Every API token ever issued (revoked and expired ones included), by id.
    fn load_tokens(&mut self) -> Result<Vec<crate::identity::ApiToken>, StorageError>;
}

/// Every port trait, for code that calls a whole backend (`use ...::store::prelude::*`).
pub mod prelude {
    pub use super::{
        AlarmStore, ApplicationStore, AuditStore, DetectionStore, NodeStore, ReclaimStore,
        RegisterStore, Schema, Storage, UsageStore, UserStore,
    };
}

/// A whole backend: every port. Implemented for anything that implements them all.
pub trait Storage:
    Schema
    + NodeStore
    + AlarmStore
    + AuditStore
    + RegisterStore
    + UsageStore
    + ReclaimStore
    + DetectionStore
    + UserStore
    + ApplicationStore
    + Send
    + std::fmt::Debug
{
}

impl<T> Storage for T where
    T: Schema
        + NodeStore
        + AlarmStore
        + AuditStore
        + RegisterStore
        + UsageStore
        + ReclaimStore
        + DetectionStore
        + UserStore
        + ApplicationStore
        + Send
        + std::fmt::Debug
{
}

impl NodeRow {
    /// The counters of `s`, with no frames (set them for the bodies that changed).
    pub fn counters(s: &NodeState) -> Self {
        NodeRow {
            node: s.node.clone(),
            role: s.role,
            last_seen_ms: s.last_seen_ms,
            last_report_ts_ms: s.last_report_ts_ms,
            last_seq: s.last_seq,
            received: s.received,
            duplicates: s.duplicates,
            missing: s.missing,
            hello: None,
            inventory: None,
            report: None,
            guests: None,
            antivirus: None,
            antivirus_history: s.antivirus.history_to_store(s.last_seq),
            gaps: encode_gaps(&s.gaps),
        }
    }

    /// The stored frame slot for a body kind ([`Body::kind`]), if that kind is stored.
    pub fn frame_mut(&mut self, kind: &str) -> Option<&mut Option<Bytes>> {
        match kind {
            "hello" => Some(&mut self.hello),
            "inventory" => Some(&mut self.inventory),
            "report" => Some(&mut self.report),
            "guests" => Some(&mut self.guests),
            "antivirus" => Some(&mut self.antivirus),
            _ => None,
        }
    }

    /// Fold a newer row for the same node into this one: newer counters, and each frame from
    /// the newest row that carries one.
    pub fn merge(&mut self, newer: NodeRow) {
        let older = std::mem::replace(self, newer);
        self.hello = self.hello.take().or(older.hello);
        self.inventory = self.inventory.take().or(older.inventory);
        self.report = self.report.take().or(older.report);
        self.guests = self.guests.take().or(older.guests);
        self.antivirus = self.antivirus.take().or(older.antivirus);
        self.antivirus_history = self.antivirus_history.take().or(older.antivirus_history);
    }

    /// Rebuild the node's state from a stored row.
    pub fn into_state(self) -> Result<NodeState, StorageError> {
        let node = self.node.clone();
        let body = |what: &str, frame: &Option<Bytes>| -> Result<Option<Body>, StorageError> {
            frame
                .as_deref()
                .map(|b| {
                    decode_unverified(b)
                        .map(|e| e.body)
                        .map_err(|e| StorageError::Corrupt {
                            what: format!("node {node}"),
                            reason: format!("{what}: {e}"),
                        })
                })
                .transpose()
        };
        let hello = match body("hello", &self.hello)? {
            Some(Body::Hello(h)) => Some(h),
            _ => None,
        };
        let inventory = match body("inventory", &self.inventory)? {
            Some(Body::Inventory(i)) => Some(i),
            _ => None,
        };
        let report = match body("report", &self.report)? {
            Some(Body::Report(r)) => Some(r),
            _ => None,
        };
        let guests = match body("guests", &self.guests)? {
            Some(Body::Guests(g)) => g,
            _ => Vec::new(),
        };
        let antivirus = AntivirusTrack::from_stored(
            self.antivirus.as_deref(),
            self.antivirus_history.as_deref(),
        )
        .map_err(|reason| StorageError::Corrupt {
            what: format!("node {node}"),
            reason,
        })?;
        let gaps = self
            .gaps
            .as_deref()
            .map(decode_gaps)
            .transpose()
            .map_err(|reason| StorageError::Corrupt {
                what: format!("node {node}"),
                reason,
            })?
            .unwrap_or_default();
        Ok(NodeState {
            node: self.node,
            role: self.role,
            status: Status::Offline,
            liveness: Liveness::Offline,
            liveness_since_ms: 0,
            last_seen_ms: self.last_seen_ms,
            last_report_ts_ms: self.last_report_ts_ms,
            hello,
            inventory,
            report,
            guests,
            last_seq: self.last_seq,
            received: self.received,
            duplicates: self.duplicates,
            missing: self.missing,
            gaps,
            // not stored: after a restart the next status sets it (a replayed status can then
            // mark a node online until its silence shows; its epoch is the stored hello's)
            status_stamp: 0,
            retired_epochs: Vec::new(),
            events: VecDeque::new(),
            antivirus,
            hardware: Default::default(),
            stamps: crate::fleet::Stamps::default(),
            stopped_on_purpose: None,
        })
    }
}

pub fn role_str(r: Option<Role>) -> Option<&'static str> {
    r.map(Role::as_str)
}

pub fn role_from(s: Option<String>) -> Option<Role> {
    match s.as_deref() {
        Some("host") => Some(Role::Host),
        Some("guest") => Some(Role::Guest),
        _ => None,
    }
}

pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

pub fn severity_from(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn awaited_seqs_are_stored_as_runs_and_read_back() {
        assert_eq!(encode_gaps(&BTreeSet::new()), None);
        let gaps = BTreeSet::from([3, 6, 7, 8, 9, 20]);
        let bytes = encode_gaps(&gaps).unwrap();
        assert_eq!(bytes.len(), 3 * 16, "three runs: 3, 6..=9, 20");
        assert_eq!(decode_gaps(&bytes).unwrap(), gaps);
        assert!(decode_gaps(&bytes[..15]).is_err());
        let backwards = [9u64.to_le_bytes(), 6u64.to_le_bytes()].concat();
        assert!(decode_gaps(&backwards).is_err());
        let huge = [1u64.to_le_bytes(), u64::MAX.to_le_bytes()].concat();
        assert!(decode_gaps(&huge).is_err(), "bounded by GAP_MEMORY");
    }
}
