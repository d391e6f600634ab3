//! Storage behind one trait; one module per backend. SQL stays in the backend modules.
//!
//! What is stored: the latest state of every node (so a restarted aggregator shows the fleet
//! as it last saw it, and resumes sequence checking where it stopped) and the agents' events.
//! Bodies are stored as postcard bytes of the protocol types: compact, and decoded by the same
//! code as the wire.

pub mod sqlite;

use crate::fleet::{Liveness, NodeState};
use std::collections::VecDeque;
use yunjian_protocol::{GuestView, Hello, Inventory, Report, Role, Severity, Status};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("SQLite database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than this build knows ({known}); upgrade the aggregator")]
    SchemaTooNew { found: u32, known: u32 },
    #[error("stored row for node {node} is corrupt: {reason}")]
    Corrupt { node: String, reason: String },
}

/// The persisted part of a node's state.
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
    pub hello: Option<Vec<u8>>,
    pub inventory: Option<Vec<u8>>,
    pub report: Option<Vec<u8>>,
    pub guests: Vec<u8>,
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
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.events.is_empty()
    }
}

/// A storage backend. Synchronous: it runs on its own thread, fed by ingest in batches.
pub trait Storage: Send {
    /// Bring the schema to the current version; returns it.
    fn migrate(&mut self) -> Result<u32, StorageError>;
    /// Write one batch in one transaction.
    fn write(&mut self, batch: &WriteBatch) -> Result<(), StorageError>;
    /// Every stored node.
    fn load_nodes(&mut self) -> Result<Vec<NodeRow>, StorageError>;
    /// The most recent events, newest first, optionally of one node.
    fn events(&mut self, node: Option<&str>, limit: usize) -> Result<Vec<EventRow>, StorageError>;
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap_or_default()
}

fn dec<T: serde::de::DeserializeOwned>(node: &str, what: &str, b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|e| StorageError::Corrupt {
        node: node.to_string(),
        reason: format!("{what}: {e}"),
    })
}

impl NodeRow {
    pub fn from_state(s: &NodeState) -> Self {
        NodeRow {
            node: s.node.clone(),
            role: s.role,
            last_seen_ms: s.last_seen_ms,
            last_report_ts_ms: s.last_report_ts_ms,
            last_seq: s.last_seq,
            received: s.received,
            duplicates: s.duplicates,
            missing: s.missing,
            hello: s.hello.as_ref().map(enc),
            inventory: s.inventory.as_ref().map(enc),
            report: s.report.as_ref().map(enc),
            guests: enc(&s.guests),
        }
    }

    pub fn into_state(self) -> Result<NodeState, StorageError> {
        let n = &self.node;
        Ok(NodeState {
            role: self.role,
            status: Status::Offline,
            liveness: Liveness::Offline,
            last_seen_ms: self.last_seen_ms,
            last_report_ts_ms: self.last_report_ts_ms,
            hello: self
                .hello
                .as_deref()
                .map(|b| dec::<Hello>(n, "hello", b))
                .transpose()?,
            inventory: self
                .inventory
                .as_deref()
                .map(|b| dec::<Inventory>(n, "inventory", b))
                .transpose()?,
            report: self
                .report
                .as_deref()
                .map(|b| dec::<Report>(n, "report", b))
                .transpose()?,
            guests: dec::<Vec<GuestView>>(n, "guests", &self.guests)?,
            last_seq: self.last_seq,
            received: self.received,
            duplicates: self.duplicates,
            missing: self.missing,
            events: VecDeque::new(),
            node: self.node,
        })
    }
}

pub(crate) fn role_str(r: Option<Role>) -> Option<&'static str> {
    r.map(Role::as_str)
}

pub(crate) fn role_from(s: Option<String>) -> Option<Role> {
    match s.as_deref() {
        Some("host") => Some(Role::Host),
        Some("guest") => Some(Role::Guest),
        _ => None,
    }
}

pub(crate) fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

pub(crate) fn severity_from(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    }
}
