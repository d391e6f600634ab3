//! One alarm lifecycle for every rule: raised → (updated, deduplicated) → acknowledged → cleared.
//!
//! Rules do not manage alarms; they report, on each evaluation, the [`Finding`]s that hold now.
//! [`AlarmBook::reconcile`] turns that into lifecycle changes: a new finding raises an alarm, a
//! repeated one updates it (count, severity, evidence) without a second alarm, an alarm whose
//! finding is gone clears. Every change is returned as an [`AlarmEvent`] for storage (alarms
//! survive restarts), the audit log and notices.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// How bad. Ordered: a higher level escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Major,
    Critical,
}

impl Level {
    pub fn zh(self) -> &'static str {
        match self {
            Level::Info => "提示",
            Level::Warning => "预警",
            Level::Major => "严重",
            Level::Critical => "紧急",
        }
    }
}

/// Identity of an alarm: one rule, one subject (e.g. `capacity.memory` on `pool:A`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlarmKey {
    pub rule: String,
    pub subject: String,
}

/// What a rule found on one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub key: AlarmKey,
    pub level: Level,
    /// The clause the rule serves, e.g. `003 第十九条`.
    pub clause: String,
    /// The using unit concerned, for notices and per-unit views.
    pub unit: Option<String>,
    /// One line for humans (zh-CN).
    pub title: String,
    /// Figures that justify it (JSON, shown as is).
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    Active,
    Acknowledged,
    Cleared,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: u64,
    pub key: AlarmKey,
    pub level: Level,
    pub clause: String,
    pub unit: Option<String>,
    pub title: String,
    pub evidence: serde_json::Value,
    pub state: AlarmState,
    pub raised_ms: u64,
    pub updated_ms: u64,
    /// Evaluations that found it (deduplicated into this one alarm).
    pub count: u64,
    pub acked_by: Option<String>,
    pub acked_ms: Option<u64>,
    pub cleared_ms: Option<u64>,
}

/// A lifecycle change, for storage, audit and notices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum AlarmEvent {
    Raised(Alarm),
    /// Level went up.
    Escalated(Alarm),
    Acknowledged(Alarm),
    Cleared(Alarm),
}

impl AlarmEvent {
    pub fn alarm(&self) -> &Alarm {
        match self {
            AlarmEvent::Raised(a)
            | AlarmEvent::Escalated(a)
            | AlarmEvent::Acknowledged(a)
            | AlarmEvent::Cleared(a) => a,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no open alarm with id {0}")]
    NotFound(u64),
    #[error("alarm {0} is already acknowledged")]
    AlreadyAcknowledged(u64),
}

/// Open alarms (active or acknowledged) and recently cleared ones.
#[derive(Debug, Default)]
pub struct AlarmBook {
    open: BTreeMap<AlarmKey, Alarm>,
    cleared: Vec<Alarm>,
    next_id: u64,
    /// Alarms restored from storage that no evaluation has confirmed yet, and until when they
    /// may not clear: after a restart the rules first need fresh data (agents reconnecting).
    restored: HashSet<u64>,
    restored_hold_until_ms: u64,
}

/// Cleared alarms kept in memory for the dashboard (all are in storage).
const CLEARED_KEPT: usize = 500;

impl AlarmBook {
    pub fn new() -> Self {
        AlarmBook {
            next_id: 1,
            ..Self::default()
        }
    }

    /// Restore open alarms from storage at start-up. Until `hold_until_ms` a restored alarm
    /// is kept even when its rule does not find it (the rule may lack fresh data yet).
    pub fn restore(&mut self, alarms: Vec<Alarm>, hold_until_ms: u64) {
        self.restored_hold_until_ms = hold_until_ms;
        for a in alarms {
            if a.state != AlarmState::Cleared {
                self.restored.insert(a.id);
            }
            self.next_id = self.next_id.max(a.id + 1);
            if a.state == AlarmState::Cleared {
                self.cleared.push(a);
            } else {
                self.open.insert(a.key.clone(), a);
            }
        }
    }

    /// Apply one evaluation of the rules in `rules`: `findings` is everything that holds now
    /// for those rules. Open alarms of those rules without a finding clear.
    pub fn reconcile(
        &mut self,
        rules: &HashSet<&str>,
        findings: Vec<Finding>,
        now_ms: u64,
    ) -> Vec<AlarmEvent> {
        let mut events = Vec::new();
        let mut seen: HashSet<AlarmKey> = HashSet::with_capacity(findings.len());
        for f in findings {
            seen.insert(f.key.clone());
            events.extend(self.upsert(f, now_ms));
        }
        for rule in rules {
            self.clear_unseen(rule, &seen, now_ms, &mut events);
        }
        events
    }

    /// A finding that holds now: raise its alarm, or update the open one (count, evidence,
    /// title; a higher level escalates and needs a new acknowledgement).
    pub fn upsert(&mut self, f: Finding, now_ms: u64) -> Option<AlarmEvent> {
        match self.open.get_mut(&f.key) {
            Some(a) => {
                self.restored.remove(&a.id);
                a.count += 1;
                a.updated_ms = now_ms;
                a.evidence = f.evidence;
                a.title = f.title;
                if f.level > a.level {
                    a.level = f.level;
                    // an escalation needs a new acknowledgement
                    a.state = AlarmState::Active;
                    a.acked_by = None;
                    a.acked_ms = None;
                    Some(AlarmEvent::Escalated(a.clone()))
                } else {
                    a.level = f.level;
                    None
                }
            }
            None => {
                let a = Alarm {
                    id: self.next_id,
                    key: f.key.clone(),
                    level: f.level,
                    clause: f.clause,
                    unit: f.unit,
                    title: f.title,
                    evidence: f.evidence,
                    state: AlarmState::Active,
                    raised_ms: now_ms,
                    updated_ms: now_ms,
                    count: 1,
                    acked_by: None,
                    acked_ms: None,
                    cleared_ms: None,
                };
                self.next_id += 1;
                let event = AlarmEvent::Raised(a.clone());
                self.open.insert(f.key, a);
                Some(event)
            }
        }
    }

    /// A finding that no longer holds: clear its open alarm, unless it was restored from
    /// storage and the restart hold still runs.
    pub fn clear(&mut self, key: &AlarmKey, now_ms: u64) -> Option<AlarmEvent> {
        let a = self.open.get(key)?;
        if now_ms < self.restored_hold_until_ms && self.restored.contains(&a.id) {
            return None;
        }
        let mut a = self.open.remove(key)?;
        self.restored.remove(&a.id);
        a.state = AlarmState::Cleared;
        a.cleared_ms = Some(now_ms);
        a.updated_ms = now_ms;
        let event = AlarmEvent::Cleared(a.clone());
        self.push_cleared(a);
        Some(event)
    }

    /// Clear every open alarm of `rule` whose key is not in `seen` (a full evaluation of the
    /// rule found only those). Looks at that rule's alarms only (keys sort by rule first).
    pub fn clear_unseen(
        &mut self,
        rule: &str,
        seen: &HashSet<AlarmKey>,
        now_ms: u64,
        events: &mut Vec<AlarmEvent>,
    ) {
        let from = AlarmKey {
            rule: rule.to_string(),
            subject: String::new(),
        };
        let gone: Vec<AlarmKey> = self
            .open
            .range(from..)
            .take_while(|(k, _)| k.rule == rule)
            .filter(|(k, _)| !seen.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            events.extend(self.clear(&k, now_ms));
        }
    }

    fn push_cleared(&mut self, a: Alarm) {
        if self.cleared.len() == CLEARED_KEPT {
            self.cleared.remove(0);
        }
        self.cleared.push(a);
    }

    /// Acknowledge an open alarm (who, when). The alarm stays open until its cause clears.
    pub fn acknowledge(&mut self, id: u64, by: &str, now_ms: u64) -> Result<AlarmEvent, AckError> {
        let a = self
            .open
            .values_mut()
            .find(|a| a.id == id)
            .ok_or(AckError::NotFound(id))?;
        if a.state == AlarmState::Acknowledged {
            return Err(AckError::AlreadyAcknowledged(id));
        }
        a.state = AlarmState::Acknowledged;
        a.acked_by = Some(by.to_string());
        a.acked_ms = Some(now_ms);
        a.updated_ms = now_ms;
        Ok(AlarmEvent::Acknowledged(a.clone()))
    }

    /// Undo an acknowledgement storage could not take: the alarm is active again, as it was.
    /// Returns whether there was such an acknowledgement to undo.
    pub fn undo_acknowledge(&mut self, id: u64, by: &str) -> bool {
        let Some(a) = self.open.values_mut().find(|a| a.id == id) else {
            return false;
        };
        if a.state != AlarmState::Acknowledged || a.acked_by.as_deref() != Some(by) {
            return false;
        }
        a.state = AlarmState::Active;
        a.acked_by = None;
        a.acked_ms = None;
        true
    }

    /// Open alarms, worst first, then oldest first.
    pub fn open(&self) -> Vec<&Alarm> {
        let mut v: Vec<&Alarm> = self.open.values().collect();
        v.sort_by(|a, b| b.level.cmp(&a.level).then(a.raised_ms.cmp(&b.raised_ms)));
        v
    }

    pub fn get_open(&self, key: &AlarmKey) -> Option<&Alarm> {
        self.open.get(key)
    }

    /// Recently cleared alarms, newest first.
    pub fn cleared(&self) -> impl Iterator<Item = &Alarm> {
        self.cleared.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(subject: &str, level: Level) -> Finding {
        Finding {
            key: AlarmKey {
                rule: "capacity.memory".into(),
                subject: subject.into(),
            },
            level,
            clause: "003 第十九条".into(),
            unit: None,
            title: "内存接近容量".into(),
            evidence: serde_json::json!({"used_pct": 71}),
        }
    }

    fn rules() -> HashSet<&'static str> {
        ["capacity.memory"].into_iter().collect()
    }

    #[test]
    fn raise_dedupe_escalate_ack_clear() {
        let mut b = AlarmBook::new();
        let ev = b.reconcile(&rules(), vec![finding("pool:A", Level::Warning)], 1);
        assert!(matches!(ev.as_slice(), [AlarmEvent::Raised(a)] if a.id == 1));
        // the same finding again: no new alarm, count grows
        assert!(b
            .reconcile(&rules(), vec![finding("pool:A", Level::Warning)], 2)
            .is_empty());
        assert_eq!(b.open()[0].count, 2);
        let ev = b.acknowledge(1, "ops-zhang", 3).unwrap();
        assert_eq!(ev.alarm().acked_by.as_deref(), Some("ops-zhang"));
        assert_eq!(
            b.acknowledge(1, "x", 4),
            Err(AckError::AlreadyAcknowledged(1))
        );
        // escalation re-opens the acknowledgement
        let ev = b.reconcile(&rules(), vec![finding("pool:A", Level::Major)], 5);
        assert!(
            matches!(ev.as_slice(), [AlarmEvent::Escalated(a)] if a.state == AlarmState::Active)
        );
        // gone: cleared, and another rule's alarms are untouched
        let other: HashSet<&str> = ["antivirus"].into_iter().collect();
        assert!(b.reconcile(&other, vec![], 6).is_empty());
        let ev = b.reconcile(&rules(), vec![], 7);
        assert!(matches!(ev.as_slice(), [AlarmEvent::Cleared(a)] if a.cleared_ms == Some(7)));
        assert!(b.open().is_empty());
        assert_eq!(b.cleared().count(), 1);
        assert_eq!(b.acknowledge(1, "x", 8), Err(AckError::NotFound(1)));
        // a new occurrence is a new alarm with a new id
        let ev = b.reconcile(&rules(), vec![finding("pool:A", Level::Warning)], 9);
        assert!(matches!(ev.as_slice(), [AlarmEvent::Raised(a)] if a.id == 2));
    }

    #[test]
    fn restore_continues_ids() {
        let mut b = AlarmBook::new();
        b.reconcile(&rules(), vec![finding("pool:A", Level::Warning)], 1);
        let saved: Vec<Alarm> = b.open().into_iter().cloned().collect();
        let mut c = AlarmBook::new();
        c.restore(saved.clone(), 100);
        assert!(c
            .reconcile(&rules(), vec![finding("pool:A", Level::Warning)], 2)
            .is_empty());
        // a new alarm continues the ids; the confirmed restored one clears normally (no hold)
        let ev = c.reconcile(&rules(), vec![finding("pool:B", Level::Warning)], 3);
        assert!(matches!(
            ev.as_slice(),
            [AlarmEvent::Raised(b), AlarmEvent::Cleared(a)] if b.id == 2 && a.id == 1
        ));

        // an unconfirmed restored alarm is held until the hold ends, then clears
        let mut d = AlarmBook::new();
        d.restore(saved, 100);
        assert!(d.reconcile(&rules(), vec![], 50).is_empty());
        assert_eq!(d.open().len(), 1);
        let ev = d.reconcile(&rules(), vec![], 100);
        assert!(matches!(ev.as_slice(), [AlarmEvent::Cleared(a)] if a.id == 1));
    }
}
