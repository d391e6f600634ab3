//! Reclaim cases for low-use VMs (002 第十一条, 003 第二十一条/第三十条, 000 第二十一条(七)):
//! the domain part. The service that drives cases, the dispatch of commands over MQTT and the
//! web pages live in the aggregator crate. See `docs/RECLAIM.md`.
//!
//! * [`calendar`]: working days from a holiday calendar file;
//! * [`case`]: the state machine (pure);
//! * [`command`]: commands to agents as stored (same id on every resend);
//! * [`outcome`]: whether an executed action is shown done by the host and the VM itself.

pub mod calendar;
pub mod case;
pub mod command;
pub mod outcome;

pub use case::{Actor, Basis, Case, CaseError, Kind, LogEntry, Role, State, Step};
pub use command::{CommandRecord, CommandStatus};

use crate::audit::AuditEntry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the usage module found about one VM (fed to [`Reclaim::detect`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The VM's SMBIOS / domain UUID.
    pub uuid: String,
    pub kind: Kind,
    /// The figures behind it (window, daily CPU p95 / mean, memory…), shown on the case page.
    pub evidence: serde_json::Value,
}

impl Detection {
    /// A finding of the usage module ([`crate::usage`]): idle → stop and reclaim;
    /// over-provisioned → downsize to its recommended size.
    pub fn from_usage(f: &crate::usage::UsageFinding) -> Detection {
        let kind = match &f.kind {
            crate::usage::FindingKind::Idle => Kind::Idle,
            crate::usage::FindingKind::OverProvisioned { recommended, .. } => {
                Kind::OverProvisioned {
                    recommended: yunjian_protocol::VmSize {
                        vcpus: recommended.vcpus,
                        mem_kib: u64::from(recommended.mem_gib) * 1024 * 1024,
                    },
                }
            }
        };
        Detection {
            uuid: f.vm.clone(),
            kind,
            evidence: serde_json::to_value(&f.evidence).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// What one storage transaction of the reclaim service writes.
#[derive(Debug, Default, Clone)]
pub struct ReclaimWrite {
    pub cases: Vec<Case>,
    pub log: Vec<LogEntry>,
    pub commands: Vec<CommandRecord>,
    pub audit: Vec<AuditEntry>,
    /// Units of the register as a step leaves them (a verified downsize, a released VM):
    /// stored with the register's own write code in the same transaction as the step.
    pub register: Vec<crate::register::UnitRecord>,
}

/// Units with open cases they were notified of: not yet terminal, past `detected`.
pub fn held_units<'a>(cases: impl Iterator<Item = &'a Case>) -> BTreeMap<String, (Vec<u64>, u64)> {
    let mut out: BTreeMap<String, (Vec<u64>, u64)> = BTreeMap::new();
    for c in cases.filter(|c| !c.state.is_terminal() && c.state != State::Detected) {
        let e = out.entry(c.unit.clone()).or_insert((Vec::new(), u64::MAX));
        e.0.push(c.id);
        e.1 = e.1.min(c.opened_ms);
    }
    out
}
