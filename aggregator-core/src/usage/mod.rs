//! Utilisation history and the idle / over-provisioned findings (降配 / 回收: 002 第十一条,
//! 003 第二十一条 and 第三十条, 004 第十六条, 001 第三十七条).
//!
//! * [`history`]: per VM, one compact [`DailySummary`] per day by **event time** (the
//!   envelope's `ts_ms`, so the simulator's accelerated clock works), in the deployment's time
//!   zone: CPU mean / p95 / p99 / max, memory really used (mean and peak), network and disk
//!   bytes, samples and the share of the day they cover. Kept `[usage] retention_days` (≥ 90).
//! * [`detect`]: the idle rule (candidate for reclaim) and the over-provisioned rule (candidate
//!   for downsizing, with a recommended size), parameterised by the profile's `[idle]` and
//!   `[rightsizing]` sections, each finding with its evidence.
//! * [`exempt`]: the exemption register (DR standby, batch, 等保 reserve, test period...), with
//!   approver and expiry; an expired exemption sends the VM back to review.
//!
//! Data flow: ingest extracts a [`Sample`] from every guest report and records it under the
//! guest's SMBIOS UUID (lower case; the node id while the inventory is unknown); finished days
//! go to storage in ingest's own write batch, so they are durable before the reports' PUBACK.
//! Findings are not alarms: the reclaim case code turns them into cases.
//!
//! The API, synchronous and cheap (one [`SharedUsage`] lock; evaluation of 100,000 VMs × 30
//! days is measured in `benches/usage.rs`):
//!
//! ```
//! use yunjian_aggregator_core::policy::Profile;
//! use yunjian_aggregator_core::usage::Usage;
//! let profile = Profile::default();
//! let mut usage = Usage::new(&profile.usage);
//! // ingest calls `record(uuid, ts_ms, &report)`; the extracted figures work the same way
//! let sample = yunjian_aggregator_core::usage::Sample { cpu: 150, vcpus: 4, ..Default::default() };
//! usage.history.record_sample("4c4c4544-0042-3510-8052-b4c04f4d3332", 1_772_380_800_000, &sample);
//! let now = usage.history.now_ms();
//! // the profile hands over its `[idle]` and `[rightsizing]` sections: this module does not
//! // depend on the policy engine
//! let findings = usage.history.evaluate(now, profile.usage_rules(), &usage.exemptions);
//! assert!(findings.is_empty()); // one sample is far from 14 days
//! let day = usage.history.day_of(now);
//! let days = usage.history.days("4c4c4544-0042-3510-8052-b4c04f4d3332", day - 29, day);
//! assert_eq!(days.len(), 1);
//! ```

pub mod detect;
pub mod exempt;
pub mod history;

pub use detect::{
    Coverage, Evidence, Figures, FindingKind, IdlePolicy, RightsizingPolicy, Size, Thresholds,
    UsageFinding, UsageRules, Window,
};
pub use exempt::{ExemptError, ExemptReason, Exemption, ExemptionState, Exemptions, NewExemption};
pub use history::{DailySummary, Sample, UsageDayRow, UsageHistory};

use crate::time::duration;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The history and the exemptions, behind one lock shared by ingest, the web layer and the
/// reclaim cases.
#[derive(Debug, Clone)]
pub struct Usage {
    pub history: UsageHistory,
    pub exemptions: Exemptions,
}

pub type SharedUsage = Arc<RwLock<Usage>>;

impl Usage {
    pub fn new(policy: &UsagePolicy) -> Self {
        Usage {
            history: UsageHistory::new(policy),
            exemptions: Exemptions::default(),
        }
    }

    pub fn shared(policy: &UsagePolicy) -> SharedUsage {
        Arc::new(RwLock::new(Usage::new(policy)))
    }
}

/// `[usage]` in the policy profile: how the history is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsagePolicy {
    /// Days of daily summaries kept per VM (at least the longest rule window; 90 covers a
    /// quarter, so a quarter-end job is seen).
    pub retention_days: u32,
    /// The deployment's time zone, minutes east of UTC (Asia/Shanghai: 480). Days start at
    /// local midnight.
    pub utc_offset_minutes: i32,
    /// A day is closed (and stored) once its VM reports this long after its end; a report for
    /// a closed day is merged as a late one.
    #[serde(with = "duration")]
    pub close_after: Duration,
    /// The longest gap one report may stand for; a longer silence counts as uncovered time.
    #[serde(with = "duration")]
    pub max_sample_gap: Duration,
}

impl Default for UsagePolicy {
    fn default() -> Self {
        UsagePolicy {
            retention_days: 90,
            utc_offset_minutes: 480,
            close_after: Duration::from_secs(3_600),
            max_sample_gap: Duration::from_secs(900),
        }
    }
}

/// Check the three sections together; the message names the key.
pub fn validate(
    usage: &UsagePolicy,
    idle: &IdlePolicy,
    rs: &RightsizingPolicy,
) -> Result<(), String> {
    let longest = idle.window_days.max(idle.lookback_days).max(rs.window_days);
    if usage.retention_days < longest {
        return Err(format!(
            "usage.retention_days ({}) must cover the longest rule window ({longest} days)",
            usage.retention_days
        ));
    }
    if !(-720..=840).contains(&usage.utc_offset_minutes) {
        return Err(format!(
            "usage.utc_offset_minutes ({}) is not a time zone offset",
            usage.utc_offset_minutes
        ));
    }
    if usage.max_sample_gap.is_zero() {
        return Err("usage.max_sample_gap must be longer than zero".into());
    }
    idle.validate()?;
    rs.validate()
}

/// The history key of a node's reports: a guest's SMBIOS UUID in lower case, or its node id
/// while its inventory is unknown; `None` for hosts and nodes whose role is not known yet.
pub fn vm_key(node: Option<&crate::fleet::NodeState>) -> Option<String> {
    let st = node?;
    if st.role != Some(yunjian_protocol::Role::Guest) {
        return None;
    }
    Some(
        st.inventory
            .as_ref()
            .and_then(|i| i.smbios_uuid.as_deref())
            .map_or_else(|| st.node.clone(), str::to_ascii_lowercase),
    )
}
