//! The audit log's entry: who did what, when, to what. Written by the services with the change
//! it records, in the same transaction; kept append-only by the storage backends.

/// One entry of the append-only audit log: who did what, when, to what (001 第十九条: every
/// operation logged and kept; 004 第二十四条: no unauthorised operations).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    /// A person (`ops:zhang`), or `system` for automatic actions.
    pub actor: String,
    /// e.g. `alarm.acknowledge`, `register.import`.
    pub action: String,
    /// What it was done to, e.g. `alarm:12`.
    pub subject: String,
    pub detail: serde_json::Value,
}
