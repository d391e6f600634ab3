//! The mandated antivirus per VM (003 附件1 承诺书, 001 第九条(四)): what the agents' antivirus
//! reports say, remembered across reports and restarts, as one of five states.
//!
//! | state       | meaning                                                                   |
//! |-------------|---------------------------------------------------------------------------|
//! | `removed`   | a product seen installed before is gone, on two reports in a row          |
//! | `degraded`  | installed but not running, signatures stale, or gone on one report only   |
//! | `missing`   | no antivirus seen on this VM, ever                                        |
//! | `unknown`   | the agent is silent or offline (a removal stays `removed`)                |
//! | `compliant` | every installed product runs with signatures younger than the profile's   |
//! |             | `antivirus.signature_max_age_days`                                        |
//!
//! **Removal, not an upgrade or a restart.** A product is *gone* when what it was known by has
//! disappeared: its package when it was seen with one (files left behind by `dpkg --remove`
//! do not count), else its install paths. A dpkg upgrade keeps the package present
//! (`half-installed`, `unpacked`: [`yunjian_protocol::PackageState::Changing`]) and a restart
//! only takes the process away, so neither is a removal. A product gone on one report is only
//! `degraded` (an upgrade caught between package removal and reinstall); gone on
//! [`CONFIRM_REPORTS`] reports in a row it is `removed`, with the evidence of what was there
//! and when. The agent sends every changed report once more at its next probe, so a removal
//! is confirmed about a probe interval after it happens.
//!
//! **Persistence.** [`AntivirusTrack::history`] (the products ever seen installed, their
//! absences, the stop decision) is stored as JSON with the node; the latest report as its
//! verified frame. So "seen installed before" and a removal survive an aggregator restart.
//!
//! **The stop decision.** The 承诺书 allows stopping the VM of a removed antivirus. A person
//! requests it, the authority approves it (when the profile's `stop_requires_approval` says
//! so); both are recorded here and in the audit log. The command that stops a VM comes later.

use crate::liveness::Liveness;
use serde::{Deserialize, Serialize};
use yunjian_protocol::{
    decode_unverified, AntivirusProduct, AntivirusReport, Body, Envelope, PackageState, Role,
};

/// Reports in a row without a product that make it `removed`.
pub const CONFIRM_REPORTS: u32 = 2;
/// How long a VM may be online before its first antivirus report (the agent probes at start
/// and every minute) until it counts as `missing`.
pub const FIRST_REPORT_GRACE_MS: u64 = 3 * 60_000;
const DAY_S: u64 = 86_400;

/// The five states, worst first (the order of the antivirus page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvState {
    Removed,
    Degraded,
    Missing,
    Unknown,
    Compliant,
}

impl AvState {
    pub fn zh(self) -> &'static str {
        match self {
            AvState::Removed => "已卸载",
            AvState::Degraded => "异常",
            AvState::Missing => "未安装",
            AvState::Unknown => "未知",
            AvState::Compliant => "合规",
        }
    }
}

/// A node's antivirus as the aggregator knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AntivirusTrack {
    /// The latest report and its event time (ms).
    pub latest: Option<(u64, AntivirusReport)>,
    /// What is persisted apart from the latest frame.
    pub history: AvHistory,
    /// Sequence number of the latest report applied: older ones arriving late are ignored.
    #[serde(skip)]
    pub seq: u64,
    /// The node's highest sequence number when `history` last changed: storage writes the
    /// history with the node's row written right then.
    #[serde(skip)]
    pub history_seq: u64,
}

/// The persisted memory of one node's antivirus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvHistory {
    /// Every product ever seen installed on the node.
    pub products: Vec<ProductHistory>,
    /// The stop decision about the current removal, if one was requested.
    pub stop: Option<StopDecision>,
}

/// One product seen installed on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductHistory {
    pub profile: String,
    /// The product as last seen installed.
    pub last_present: AntivirusProduct,
    /// Event time (ms) of that report.
    pub last_present_ms: u64,
    /// Set while the product is gone.
    pub absence: Option<Absence>,
}

/// A product gone since `since_ms`, on `reports` reports in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absence {
    pub since_ms: u64,
    pub reports: u32,
    /// Event time of the report that confirmed the removal.
    pub confirmed_ms: Option<u64>,
}

/// Stopping the VM of a removed antivirus: requested, then approved by the authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopDecision {
    pub requested_by: String,
    pub reason: String,
    pub requested_ms: u64,
    /// The policy profile asked for the authority's approval when the request was made.
    pub approval_required: bool,
    pub approved_by: Option<String>,
    pub approved_ms: Option<u64>,
}

impl StopDecision {
    /// Requested and not yet approved.
    pub fn pending(&self) -> bool {
        self.approved_ms.is_none()
    }
}

/// Why a stop request or approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    #[error("node {0} has no removed antivirus: stopping it is not offered")]
    NotRemoved(String),
    #[error("a stop of node {0} was already requested")]
    AlreadyRequested(String),
    #[error("no stop of node {0} is waiting for approval")]
    NothingToApprove(String),
    #[error("the stop of node {node} was requested by {by}: another person must approve it")]
    SameApprover { node: String, by: String },
}

/// One element of a removed product that is no longer there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gone {
    /// `package`, `path`, `unit` or `process`.
    pub kind: &'static str,
    pub name: String,
}

/// The evidence of one removal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    pub profile: String,
    /// The product as last seen installed (package and version, unit, processes, paths).
    pub was: AntivirusProduct,
    pub last_present_ms: u64,
    pub gone_since_ms: u64,
    pub confirmed_ms: u64,
    /// What disappeared since `last_present_ms`.
    pub gone: Vec<Gone>,
}

/// A VM's antivirus state with the reasons for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub state: AvState,
    /// Why (zh-CN), one line each; also observations that do not change the state (an
    /// unknown signature date).
    pub notes: Vec<String>,
    pub removals: Vec<Removal>,
}

/// Whether `now` still has the product that `history` knew: its package if it was seen with
/// one, else any of its install paths.
fn still_there(now: &AntivirusProduct, history: Option<&ProductHistory>) -> bool {
    match history {
        Some(h) if h.last_present.package.is_some() => now.package.is_some(),
        _ => now.installed(),
    }
}

/// An empty finding for a product the report does not mention.
fn not_reported(profile: &str) -> AntivirusProduct {
    AntivirusProduct {
        profile: profile.to_string(),
        package: None,
        paths: Vec::new(),
        unit: None,
        processes: Vec::new(),
        version: None,
        signatures_s: None,
    }
}

impl AntivirusTrack {
    /// The track of a stored node: its latest antivirus frame and its history (JSON). `Err`
    /// says what of it cannot be read.
    pub fn from_stored(frame: Option<&[u8]>, history: Option<&str>) -> Result<Self, String> {
        let latest = match frame.map(decode_unverified).transpose() {
            Ok(Some(Envelope {
                ts_ms,
                body: Body::Antivirus(report),
                ..
            })) => Some((ts_ms, report)),
            Ok(_) => None,
            Err(e) => return Err(format!("antivirus: {e}")),
        };
        let history = history
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("antivirus history: {e}"))?
            .unwrap_or_default();
        Ok(AntivirusTrack {
            latest,
            history,
            seq: 0,
            history_seq: 0,
        })
    }

    /// The history as stored, when the message with sequence number `last_seq` (the one just
    /// applied) changed it.
    pub fn history_to_store(&self, last_seq: u64) -> Option<String> {
        (self.history_seq != 0 && self.history_seq == last_seq)
            .then(|| self.history_json())
            .flatten()
    }

    /// The history as stored.
    pub fn history_json(&self) -> Option<String> {
        serde_json::to_string(&self.history).ok()
    }

    /// Apply a report with event time `ts_ms` and sequence number `seq`, unless an antivirus
    /// report with a higher one was applied already. `node_seq` is the node's highest sequence
    /// number (`seq`, or more for a report arriving late, replayed after a reconnect's Hello).
    pub fn observe(&mut self, ts_ms: u64, seq: u64, report: AntivirusReport, node_seq: u64) {
        if seq <= self.seq {
            return;
        }
        self.seq = seq;
        let before = self.history.clone();
        for p in &report.products {
            let known = self
                .history
                .products
                .iter_mut()
                .find(|h| h.profile == p.profile);
            match known {
                Some(h) if still_there(p, Some(h)) => {
                    h.last_present = p.clone();
                    h.last_present_ms = ts_ms;
                    h.absence = None;
                }
                Some(h) => h.absent_once(ts_ms),
                None if still_there(p, None) => self.history.products.push(ProductHistory {
                    profile: p.profile.clone(),
                    last_present: p.clone(),
                    last_present_ms: ts_ms,
                    absence: None,
                }),
                None => {}
            }
        }
        // A product the agent no longer reports at all is gone too.
        for h in &mut self.history.products {
            if !report.products.iter().any(|p| p.profile == h.profile) {
                h.absent_once(ts_ms);
            }
        }
        if !self.removed() {
            // the removal is over (reinstalled): a stop decision about it is moot
            self.history.stop = None;
        }
        if self.history != before {
            self.history_seq = node_seq;
        }
        self.latest = Some((ts_ms, report));
    }

    /// A product seen installed before is confirmed gone.
    pub fn removed(&self) -> bool {
        self.history
            .products
            .iter()
            .any(|h| h.absence.as_ref().is_some_and(|a| a.confirmed_ms.is_some()))
    }

    /// Record a request to stop the VM; with `approval_required` false it is approved at once.
    pub fn request_stop(
        &mut self,
        node: &str,
        by: &str,
        reason: &str,
        now_ms: u64,
        approval_required: bool,
    ) -> Result<&StopDecision, StopError> {
        if !self.removed() {
            return Err(StopError::NotRemoved(node.into()));
        }
        if self.history.stop.is_some() {
            return Err(StopError::AlreadyRequested(node.into()));
        }
        Ok(self.history.stop.insert(StopDecision {
            requested_by: by.into(),
            reason: reason.into(),
            requested_ms: now_ms,
            approval_required,
            approved_by: (!approval_required).then(|| by.to_string()),
            approved_ms: (!approval_required).then_some(now_ms),
        }))
    }

    /// Record the authority's approval of the pending stop request.
    pub fn approve_stop(
        &mut self,
        node: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<&StopDecision, StopError> {
        let Some(d) = self.history.stop.as_mut().filter(|d| d.pending()) else {
            return Err(StopError::NothingToApprove(node.into()));
        };
        if d.requested_by == by {
            return Err(StopError::SameApprover {
                node: node.into(),
                by: by.into(),
            });
        }
        d.approved_by = Some(by.into());
        d.approved_ms = Some(now_ms);
        Ok(d)
    }

    /// The state for a node whose connection is `liveness`, with signatures allowed to be
    /// `max_age_days` old (measured at the report's event time).
    pub fn assess(&self, liveness: Liveness, max_age_days: u32) -> Assessment {
        let mut notes = Vec::new();
        let removals = self.removals();
        if !removals.is_empty() {
            for r in &removals {
                notes.push(format!(
                    "{} 已被卸载（最后一次检测到安装的时间见证据），违反承诺书",
                    r.profile
                ));
            }
            return Assessment {
                state: AvState::Removed,
                notes,
                removals,
            };
        }
        let assessment = |state, notes| Assessment {
            state,
            notes,
            removals: Vec::new(),
        };
        if liveness != Liveness::Online {
            notes.push("代理离线或静默，杀毒软件状态未知".into());
            return assessment(AvState::Unknown, notes);
        }
        let Some((ts_ms, report)) = &self.latest else {
            notes.push("未收到杀毒软件检测报告（代理未启用探测或版本过旧）".into());
            return assessment(AvState::Missing, notes);
        };
        for e in &report.errors {
            notes.push(format!("检测错误：{e}"));
        }
        let mut degraded = false;
        for h in &self.history.products {
            if let Some(a) = &h.absence {
                degraded = true;
                notes.push(format!(
                    "{} 本次未检测到（连续 {} 次），再次确认即判定为已卸载",
                    h.profile, a.reports
                ));
            }
        }
        let installed: Vec<&AntivirusProduct> =
            report.products.iter().filter(|p| p.installed()).collect();
        if installed.is_empty() && !degraded {
            notes.push("未检测到任何杀毒软件".into());
            return assessment(AvState::Missing, notes);
        }
        let now_s = ts_ms / 1000;
        for p in installed {
            if !p.running() {
                degraded = true;
                notes.push(format!("{} 已安装但未运行", p.profile));
            }
            if p.package
                .as_ref()
                .is_some_and(|k| k.state == PackageState::Changing)
            {
                notes.push(format!("{} 正在安装或升级", p.profile));
            }
            match p.signatures_s {
                Some(s) if now_s.saturating_sub(s) > u64::from(max_age_days) * DAY_S => {
                    degraded = true;
                    notes.push(format!(
                        "{} 病毒库已 {} 天未更新（上限 {max_age_days} 天）",
                        p.profile,
                        now_s.saturating_sub(s) / DAY_S
                    ));
                }
                Some(_) => {}
                None => notes.push(format!("{} 病毒库日期未知", p.profile)),
            }
        }
        let state = if degraded {
            AvState::Degraded
        } else {
            AvState::Compliant
        };
        assessment(state, notes)
    }

    /// The evidence of every confirmed removal.
    pub fn removals(&self) -> Vec<Removal> {
        let current = |profile: &str| {
            self.latest
                .as_ref()
                .and_then(|(_, r)| r.products.iter().find(|p| p.profile == profile))
        };
        self.history
            .products
            .iter()
            .filter_map(|h| {
                let a = h.absence.as_ref()?;
                let confirmed_ms = a.confirmed_ms?;
                let empty = not_reported(&h.profile);
                let now = current(&h.profile).unwrap_or(&empty);
                Some(Removal {
                    profile: h.profile.clone(),
                    was: h.last_present.clone(),
                    last_present_ms: h.last_present_ms,
                    gone_since_ms: a.since_ms,
                    confirmed_ms,
                    gone: gone(&h.last_present, now),
                })
            })
            .collect()
    }
}

impl ProductHistory {
    fn absent_once(&mut self, ts_ms: u64) {
        let a = self.absence.get_or_insert(Absence {
            since_ms: ts_ms,
            reports: 0,
            confirmed_ms: None,
        });
        a.reports = a.reports.saturating_add(1);
        if a.reports >= CONFIRM_REPORTS && a.confirmed_ms.is_none() {
            a.confirmed_ms = Some(ts_ms);
        }
    }
}

/// What `was` had that `now` lacks.
fn gone(was: &AntivirusProduct, now: &AntivirusProduct) -> Vec<Gone> {
    let mut out = Vec::new();
    if let (Some(p), None) = (&was.package, &now.package) {
        out.push(Gone {
            kind: "package",
            name: format!("{} {}", p.name, p.version),
        });
    }
    for path in was.paths.iter().filter(|p| !now.paths.contains(p)) {
        out.push(Gone {
            kind: "path",
            name: path.clone(),
        });
    }
    if let (Some(u), None) = (&was.unit, &now.unit) {
        out.push(Gone {
            kind: "unit",
            name: u.name.clone(),
        });
    }
    for proc in was.processes.iter().filter(|p| !now.processes.contains(p)) {
        out.push(Gone {
            kind: "process",
            name: proc.clone(),
        });
    }
    out
}

/// The assessment of a VM at wall time `now_ms` (`None` for physical hosts and nodes of
/// unknown role). A VM online for less than [`FIRST_REPORT_GRACE_MS`] without any antivirus
/// report yet is `unknown`, not `missing`: its agent probes at start, but the report may come
/// a moment after the connection (no alarm flaps while a fleet connects).
pub fn assess_node(
    role: Option<Role>,
    track: &AntivirusTrack,
    liveness: Liveness,
    liveness_since_ms: u64,
    max_age_days: u32,
    now_ms: u64,
) -> Option<Assessment> {
    if role != Some(Role::Guest) {
        return None;
    }
    let waiting = track.latest.is_none()
        && liveness == Liveness::Online
        && now_ms.saturating_sub(liveness_since_ms) < FIRST_REPORT_GRACE_MS;
    if waiting {
        return Some(Assessment {
            state: AvState::Unknown,
            notes: vec!["等待首次杀毒软件检测报告".into()],
            removals: Vec::new(),
        });
    }
    Some(track.assess(liveness, max_age_days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yunjian_protocol::{AntivirusPackage, AntivirusUnit};

    const DAY_MS: u64 = 86_400_000;
    /// 2025-03-03 08:00 Beijing.
    const T0: u64 = 1_740_960_000_000;

    fn trend(version: &str, state: PackageState, running: bool) -> AntivirusProduct {
        AntivirusProduct {
            profile: "trend-ds-agent".into(),
            package: Some(AntivirusPackage {
                name: "ds-agent".into(),
                version: version.into(),
                state,
            }),
            paths: vec!["/opt/ds_agent/ds_agent".into()],
            unit: Some(AntivirusUnit {
                name: "ds_agent.service".into(),
                enabled: true,
            }),
            processes: if running {
                vec!["ds_agent".into()]
            } else {
                vec![]
            },
            version: None,
            signatures_s: Some(T0 / 1000 - 3600),
        }
    }

    fn report(products: Vec<AntivirusProduct>) -> AntivirusReport {
        AntivirusReport {
            products,
            errors: vec![],
        }
    }

    fn installed() -> AntivirusReport {
        report(vec![trend("20.0.1-3180", PackageState::Installed, true)])
    }

    /// After `dpkg --remove ds-agent`: the binary may stay behind; the package and the
    /// process are gone.
    fn uninstalled() -> AntivirusReport {
        let mut p = not_reported("trend-ds-agent");
        p.paths = vec!["/opt/ds_agent/ds_agent".into()];
        report(vec![p])
    }

    fn feed(track: &mut AntivirusTrack, reports: Vec<AntivirusReport>) -> Vec<AvState> {
        reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let seq = track.seq + 1;
                track.observe(T0 + i as u64 * 60_000, seq, r, seq);
                track.assess(Liveness::Online, 7).state
            })
            .collect()
    }

    #[test]
    fn compliant_then_removed_on_the_second_report_with_evidence() {
        let mut t = AntivirusTrack::default();
        let states = feed(
            &mut t,
            vec![installed(), installed(), uninstalled(), uninstalled()],
        );
        assert_eq!(
            states,
            [
                AvState::Compliant,
                AvState::Compliant,
                AvState::Degraded,
                AvState::Removed
            ]
        );
        let a = t.assess(Liveness::Online, 7);
        let [r] = &a.removals[..] else {
            panic!("{a:?}")
        };
        assert_eq!(r.profile, "trend-ds-agent");
        assert_eq!(r.was.package.as_ref().unwrap().version, "20.0.1-3180");
        assert_eq!(r.last_present_ms, T0 + 60_000);
        assert_eq!(r.gone_since_ms, T0 + 120_000);
        assert_eq!(r.confirmed_ms, T0 + 180_000);
        let gone: Vec<(&str, &str)> = r.gone.iter().map(|g| (g.kind, g.name.as_str())).collect();
        assert_eq!(
            gone,
            [
                ("package", "ds-agent 20.0.1-3180"),
                ("unit", "ds_agent.service"),
                ("process", "ds_agent")
            ],
            "the binary left behind is not evidence of presence"
        );
        // removed stays removed while the agent is offline
        assert_eq!(t.assess(Liveness::Offline, 7).state, AvState::Removed);
        // reinstalled: compliant again, the removal is over
        assert_eq!(feed(&mut t, vec![installed()]), [AvState::Compliant]);
        assert!(t.removals().is_empty());
    }

    #[test]
    fn an_upgrade_is_not_a_removal() {
        let mut t = AntivirusTrack::default();
        // dpkg replaces the package: half-installed, then unpacked, process restarted
        let states = feed(
            &mut t,
            vec![
                installed(),
                report(vec![trend("20.0.1-3180", PackageState::Changing, true)]),
                report(vec![trend("20.0.2-100", PackageState::Changing, false)]),
                report(vec![trend("20.0.2-100", PackageState::Installed, true)]),
            ],
        );
        assert_eq!(
            states,
            [
                AvState::Compliant,
                AvState::Compliant,
                AvState::Degraded,
                AvState::Compliant
            ]
        );
        // an upgrade by remove-then-install, caught between the two on one report
        let states = feed(&mut t, vec![uninstalled(), installed(), installed()]);
        assert_eq!(
            states,
            [AvState::Degraded, AvState::Compliant, AvState::Compliant]
        );
        assert!(!t.removed());
        assert_eq!(
            t.history.products[0]
                .last_present
                .package
                .as_ref()
                .unwrap()
                .version,
            "20.0.1-3180"
        );
    }

    #[test]
    fn a_restart_is_not_a_removal() {
        let mut t = AntivirusTrack::default();
        let stopped = report(vec![trend("20.0.1-3180", PackageState::Installed, false)]);
        let states = feed(
            &mut t,
            vec![installed(), stopped.clone(), stopped, installed()],
        );
        assert_eq!(
            states,
            [
                AvState::Compliant,
                AvState::Degraded,
                AvState::Degraded,
                AvState::Compliant
            ]
        );
        assert!(!t.removed());
    }

    #[test]
    fn never_installed_is_missing_and_silence_is_unknown() {
        let mut t = AntivirusTrack::default();
        assert_eq!(t.assess(Liveness::Online, 7).state, AvState::Missing);
        let nothing = report(vec![not_reported("trend-ds-agent"), not_reported("clamav")]);
        assert_eq!(
            feed(&mut t, vec![nothing.clone(), nothing]),
            [AvState::Missing, AvState::Missing]
        );
        assert!(t.history.products.is_empty());
        assert_eq!(t.assess(Liveness::Silent, 7).state, AvState::Unknown);
        feed(&mut t, vec![installed()]);
        assert_eq!(t.assess(Liveness::Offline, 7).state, AvState::Unknown);
    }

    #[test]
    fn stale_signatures_degrade() {
        let mut t = AntivirusTrack::default();
        let mut old = trend("1", PackageState::Installed, true);
        old.signatures_s = Some((T0 - 8 * DAY_MS) / 1000);
        t.observe(T0, 1, report(vec![old.clone()]), 1);
        let a = t.assess(Liveness::Online, 7);
        assert_eq!(a.state, AvState::Degraded);
        assert!(a.notes.iter().any(|n| n.contains("8 天未更新")), "{a:?}");
        assert_eq!(t.assess(Liveness::Online, 9).state, AvState::Compliant);
        old.signatures_s = None;
        t.observe(T0, 2, report(vec![old]), 2);
        let a = t.assess(Liveness::Online, 7);
        assert_eq!(a.state, AvState::Compliant, "an unknown date is noted only");
        assert!(a.notes.iter().any(|n| n.contains("日期未知")));
    }

    #[test]
    fn products_known_by_files_and_products_no_longer_reported() {
        let mut t = AntivirusTrack::default();
        let mut rpm = trend("x", PackageState::Installed, true);
        rpm.package = None; // installed by rpm: known by its files
        t.observe(T0, 1, report(vec![rpm.clone()]), 1);
        rpm.processes.clear();
        t.observe(T0 + 1, 2, report(vec![rpm]), 2);
        assert_eq!(t.assess(Liveness::Online, 7).state, AvState::Degraded);
        // the agent stops reporting the profile: gone as well
        t.observe(T0 + 2, 3, report(vec![]), 3);
        t.observe(T0 + 3, 4, report(vec![]), 4);
        let a = t.assess(Liveness::Online, 7);
        assert_eq!(a.state, AvState::Removed);
        assert_eq!(a.removals[0].gone[0].kind, "path");
    }

    #[test]
    fn stop_needs_a_removal_a_request_and_another_person_to_approve() {
        let mut t = AntivirusTrack::default();
        assert_eq!(
            t.request_stop("vm1", "ops-li", "r", 1, true),
            Err(StopError::NotRemoved("vm1".into()))
        );
        feed(&mut t, vec![installed(), uninstalled(), uninstalled()]);
        assert_eq!(
            t.approve_stop("vm1", "chief-wang", 2),
            Err(StopError::NothingToApprove("vm1".into()))
        );
        let d = t
            .request_stop("vm1", "ops-li", "承诺书：卸载杀毒软件", 3, true)
            .unwrap();
        assert!(d.pending() && d.approval_required);
        assert!(matches!(
            t.request_stop("vm1", "ops-li", "again", 4, true),
            Err(StopError::AlreadyRequested(_))
        ));
        assert!(matches!(
            t.approve_stop("vm1", "ops-li", 5),
            Err(StopError::SameApprover { .. })
        ));
        let d = t.approve_stop("vm1", "chief-wang", 6).unwrap();
        assert_eq!(
            (d.approved_by.as_deref(), d.approved_ms),
            (Some("chief-wang"), Some(6))
        );
        assert!(matches!(
            t.approve_stop("vm1", "chief-zhao", 7),
            Err(StopError::NothingToApprove(_))
        ));
        // the history carries the decision, so storage keeps it
        let json = serde_json::to_string(&t.history).unwrap();
        let back: AvHistory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t.history);
        // reinstalled: the decision is moot
        feed(&mut t, vec![installed()]);
        assert_eq!(t.history.stop, None);

        let mut quick = AntivirusTrack::default();
        feed(&mut quick, vec![installed(), uninstalled(), uninstalled()]);
        let d = quick.request_stop("vm2", "ops-li", "r", 9, false).unwrap();
        assert!(!d.pending(), "no approval needed: approved at once");
    }

    #[test]
    fn the_history_changes_mark_their_sequence_number() {
        let mut t = AntivirusTrack::default();
        t.observe(T0, 5, installed(), 5);
        assert_eq!(t.history_seq, 5);
        t.observe(T0, 6, installed(), 6);
        assert_eq!(t.history_seq, 5, "the same report again changes nothing");
        t.observe(T0 + 60_000, 7, installed(), 7);
        assert_eq!(t.history_seq, 7, "last_present_ms moved");
        assert!(t.history_to_store(7).is_some() && t.history_to_store(8).is_none());
        let nothing = report(vec![not_reported("clamav")]);
        let mut fresh = AntivirusTrack::default();
        fresh.observe(T0, 7, nothing.clone(), 7);
        fresh.observe(T0, 8, nothing, 8);
        assert_eq!(
            fresh.history_seq, 0,
            "nothing ever installed: nothing to store"
        );
    }
}
