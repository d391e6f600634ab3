//! Reclaim cases for low-use VMs (002 第十一条, 003 第二十一条/第三十条, 000 第二十一条(七)):
//! detection → notice to the unit → its answer → filing with and approval by the authority →
//! scheduling → re-check → execution through the host agent (snapshot first) → verification →
//! hold → release, or withdrawal, rejection, rollback. See `docs/RECLAIM.md`.
//!
//! * [`calendar`], [`case`], [`command`]: the core's (working days, the pure state machine,
//!   commands as stored);
//! * [`dispatch`]: commands to agents (stored before published, same id on every resend);
//! * [`service`]: the cases in memory and storage, the periodic drive, results from ingest.

pub mod dispatch;
pub mod drive;
pub mod service;

// The domain part (state machine, calendar, stored commands) is the core's.
pub use dispatch::{CommandReply, Outlet};
pub use service::{Reclaim, ReclaimError};
pub use yunjian_aggregator_core::reclaim::{
    calendar, case, command, held_units, Actor, Case, CaseError, CommandRecord, CommandStatus,
    Detection, Kind, LogEntry, ReclaimWrite, Role, State, Step,
};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[reclaim]` section of the aggregator config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReclaimConfig {
    /// Holiday calendar files (see `aggregator-core/calendars/cn-2026.toml` for the format),
    /// merged in order over the built-in 2026 calendar (a file listing a year replaces that
    /// year). Years no file covers count weekends only and raise the alarm
    /// `calendar_year_missing` when a deadline falls in them (README, "Working-day calendars").
    pub calendars: Vec<PathBuf>,
    /// How often cases are driven (re-check and execution of due ones, results, resends,
    /// verification, overdue escalation).
    #[serde(with = "crate::time::duration")]
    pub tick: Duration,
    /// How often the usage module's findings are read (opening cases, feeding the re-check).
    #[serde(with = "crate::time::duration")]
    pub detect_every: Duration,
    /// A command not answered within this is refused by the agent and shown as expired.
    #[serde(with = "crate::time::duration")]
    pub command_ttl: Duration,
    /// An outstanding command is published again (same id) this often until answered.
    #[serde(with = "crate::time::duration")]
    pub resend_every: Duration,
    /// After a host reports a stop or downsize done, the case is verified only once the
    /// host's guest list and the VM's own agent both show it (a stopped VM's agent goes
    /// offline; a downsized VM's inventory shows the new size). Without that agreement within
    /// this time the case goes to `execution_failed` instead.
    #[serde(with = "crate::time::duration")]
    pub verify_within: Duration,
    /// Release a stopped VM with `ReleaseAndWipe` (every volume wiped, then deleted, with the
    /// evidence on the case) rather than `Release` (undefined, disks kept). Default on: the
    /// release comes after the unit's handover. Off only where the hypervisor cannot wipe
    /// (libvirt's test driver has no volume wipe).
    pub wipe_on_release: bool,
    /// No longer used: people sign in as users (`yunjian-aggregator user add`); a config that
    /// still lists tokens is refused with that advice rather than acted on.
    #[serde(default, skip_serializing)]
    pub tokens: Option<serde::de::IgnoredAny>,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig {
            calendars: Vec::new(),
            tick: Duration::from_secs(5),
            detect_every: Duration::from_secs(60),
            command_ttl: Duration::from_secs(24 * 3600),
            resend_every: Duration::from_secs(30),
            verify_within: Duration::from_secs(30 * 60),
            wipe_on_release: true,
            tokens: None,
        }
    }
}

impl ReclaimConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick.is_zero()
            || self.detect_every.is_zero()
            || self.resend_every.is_zero()
            || self.command_ttl.is_zero()
            || self.verify_within.is_zero()
        {
            return Err(
                "reclaim: tick, detect_every, resend_every, command_ttl and verify_within must be above 0".into(),
            );
        }
        if self.tokens.is_some() {
            return Err(
                "reclaim.tokens 已停用：请改用 `yunjian-aggregator user add --name … \
                 --role ops|authority|unit [--unit …]` 为每个人创建用户，并从配置中删除 tokens"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_the_old_tokens_is_refused_with_advice() {
        let c: ReclaimConfig = toml::from_str(
            "tokens = [{ token = \"s3cret-token-0123456789\", role = \"ops\", name = \"li\" }]",
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("user add"), "{e}");
        ReclaimConfig::default().validate().unwrap();
    }
}
