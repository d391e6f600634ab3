//! Alarms: the sink every rule change goes through, and a person's acknowledgement.

use crate::alarms::{AckError, Alarm, AlarmEvent};
use crate::ingest::{StoreClosed, StoreHandle};
use crate::policy::SharedPolicy;
use crate::store::WriteBatch;
use tokio::sync::{mpsc, watch};
use yunjian_aggregator_core::audit::AuditEvent;
use yunjian_aggregator_core::identity::Actor;

/// Where alarm changes go: the log, the notification queue, storage (with one audit entry per
/// change, actor `system`) and the dashboards' change counter. The policy task and the
/// reclaim task both publish through it.
#[derive(Debug, Clone)]
pub struct AlarmSink {
    pub notices: mpsc::Sender<AlarmEvent>,
    pub store: StoreHandle,
    pub changes: watch::Sender<u64>,
}

impl AlarmSink {
    /// Publish the changes of one evaluation. `Err` only when storage is shutting down.
    pub async fn publish(&self, events: Vec<AlarmEvent>, now_ms: u64) -> Result<(), StoreClosed> {
        if events.is_empty() {
            return Ok(());
        }
        for e in &events {
            let a = e.alarm();
            tracing::info!(
                id = a.id, rule = %a.key.rule, subject = %a.key.subject, unit = ?a.unit,
                level = ?a.level, clause = %a.clause, "alarm {}", change_name(e)
            );
            // a full notice queue drops the notice, never the alarm (it is stored below)
            let _ = self.notices.try_send(e.clone());
        }
        let audit = events.iter().map(|e| audit_of(e, now_ms)).collect();
        self.store
            .write(WriteBatch {
                alarms: events,
                audit,
                ..WriteBatch::default()
            })
            .await?;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }
}

/// The name of a change in logs and audit actions (`alarm.raised`...).
pub fn change_name(e: &AlarmEvent) -> &'static str {
    match e {
        AlarmEvent::Raised(_) => "raised",
        AlarmEvent::Escalated(_) => "escalated",
        AlarmEvent::Acknowledged(_) => "acknowledged",
        AlarmEvent::Cleared(_) => "cleared",
    }
}

/// The automatic alarm changes are operations of the system: audited like any other.
fn audit_of(e: &AlarmEvent, now: u64) -> crate::store::AuditEntry {
    AuditEvent::AlarmChanged {
        change: change_name(e),
        alarm: e.alarm().clone(),
    }
    .entry(now, &Actor::job(format!("rule:{}", e.alarm().key.rule)))
}

/// Why an acknowledgement did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AckFailure {
    #[error(transparent)]
    Alarm(#[from] AckError),
    /// Storage is shutting down: the acknowledgement was undone.
    #[error(transparent)]
    Store(#[from] StoreClosed),
}

/// A person acknowledges an open alarm: recorded in the alarm and the audit log in one
/// transaction, and undone in memory if storage cannot take it.
#[tracing::instrument(skip(policy, store, actor, note), fields(alarm = id, by = %actor.name))]
pub async fn acknowledge(
    policy: &SharedPolicy,
    store: &StoreHandle,
    actor: &Actor,
    id: u64,
    note: Option<&str>,
    now_ms: u64,
) -> Result<Alarm, AckFailure> {
    let by = actor.name.as_str();
    let event = policy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .book_mut()
        .acknowledge(id, by, now_ms)?;
    let alarm = event.alarm().clone();
    let audit = AuditEvent::AlarmAcknowledged {
        alarm: alarm.clone(),
        note: note.map(str::to_string),
    }
    .entry(now_ms, actor);
    let stored = store
        .commit(WriteBatch {
            alarms: vec![event],
            audit: vec![audit],
            ..WriteBatch::default()
        })
        .await;
    if let Err(e) = stored {
        policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .book_mut()
            .undo_acknowledge(id, by);
        tracing::warn!("acknowledgement not stored, undone: {e}");
        return Err(e.into());
    }
    tracing::info!(rule = %alarm.key.rule, "alarm acknowledged");
    Ok(alarm)
}
