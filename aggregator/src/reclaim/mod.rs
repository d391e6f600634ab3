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
    /// Holiday calendar files (see `aggregator-core/calendars/cn-2026.toml` for the format), merged.
    /// Empty: the built-in 2026 calendar. Years no file covers count weekends only.
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
    /// Who may act on cases from the page and the API: `Authorization: Bearer <token>`.
    pub tokens: Vec<TokenEntry>,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig {
            calendars: Vec::new(),
            tick: Duration::from_secs(5),
            detect_every: Duration::from_secs(60),
            command_ttl: Duration::from_secs(24 * 3600),
            resend_every: Duration::from_secs(30),
            tokens: Vec::new(),
        }
    }
}

impl ReclaimConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.tick.is_zero()
            || self.detect_every.is_zero()
            || self.resend_every.is_zero()
            || self.command_ttl.is_zero()
        {
            return Err(
                "reclaim: tick, detect_every, resend_every and command_ttl must be above 0".into(),
            );
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 16 {
                return Err(format!(
                    "reclaim.tokens[{i}] ({}): a token needs at least 16 characters",
                    t.name
                ));
            }
            if t.role == Role::System {
                return Err(format!(
                    "reclaim.tokens[{i}] ({}): role \"system\" is the aggregator's own",
                    t.name
                ));
            }
            if (t.role == Role::Unit) != t.unit.is_some() {
                return Err(format!(
                    "reclaim.tokens[{i}] ({}): a unit token names its unit, other roles none",
                    t.name
                ));
            }
            if self.tokens[..i].iter().any(|o| o.token == t.token) {
                return Err(format!(
                    "reclaim.tokens[{i}] ({}): token used twice",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// The person a bearer token stands for.
    pub fn actor(&self, token: &str) -> Option<Actor> {
        self.tokens
            .iter()
            .find(|t| t.token == token)
            .map(|t| Actor {
                name: t.name.clone(),
                role: t.role,
                unit: t.unit.clone(),
            })
    }
}

/// One person's token: `{ token = "…", role = "ops" | "authority" | "unit", name = "…",
/// unit = "…" (unit role only) }`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub token: String,
    pub role: Role,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("unit", &self.unit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_printed() {
        let mut c = ReclaimConfig::default();
        c.tokens.push(TokenEntry {
            token: "s3cret-token-0123456789".into(),
            role: Role::Unit,
            name: "li".into(),
            unit: Some("财政局".into()),
        });
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            c.actor("s3cret-token-0123456789").unwrap().unit.as_deref(),
            Some("财政局")
        );
        assert!(c.actor("nope").is_none());
        c.tokens.push(TokenEntry {
            token: "another-token-0123456789".into(),
            role: Role::Ops,
            name: "zhang".into(),
            unit: Some("财政局".into()),
        });
        let e = c.validate().unwrap_err();
        assert!(e.contains("tokens[1]") && e.contains("zhang"), "{e}");
    }
}
