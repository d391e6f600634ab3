//! Stopping a VM whose mandated antivirus was removed (003 附件1 承诺书): the request, the
//! authority's approval by another person, and the signed stop command once approved.
//!
//! Each decision is made on the node's antivirus track, stored with the node and its audit
//! entry in one transaction (waiting for the commit) and undone in memory if storage cannot
//! take it. Only an approved (or approval-free) stop goes out as a command, snapshot first.

use crate::antivirus::{AntivirusTrack, StopDecision, StopError};
use crate::fleet::SharedFleet;
use crate::ingest::{StoreClosed, StoreHandle};
use crate::reclaim::Reclaim;
use crate::store::{NodeRow, WriteBatch};
use yunjian_aggregator_core::audit::AuditEvent;
use yunjian_aggregator_core::identity::Actor;

/// Why a stop decision did not happen; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StopFailure {
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("{0}")]
    Refused(#[from] StopError),
    /// Storage is shutting down: the decision was undone.
    #[error(transparent)]
    Store(#[from] StoreClosed),
}

/// The antivirus stop's use cases over the fleet, storage and the command path.
#[derive(Debug)]
pub struct AntivirusService<'a> {
    pub fleet: &'a SharedFleet,
    pub store: &'a StoreHandle,
    /// Sends the stop command; `None` where no command path runs (tests of the decision).
    pub reclaim: Option<&'a Reclaim>,
    /// The active profile: a second person (the authority) approves before the stop.
    pub approval_required: bool,
    /// What a stop decision cites: the active profile's `[clauses] antivirus_removed`.
    pub clause: &'a str,
}

impl AntivirusService<'_> {
    /// `actor` asks to stop `node` for `reason`; stopped at once when the profile needs no
    /// approval.
    #[tracing::instrument(skip_all, fields(node = %node, by = %actor.name))]
    pub async fn request_stop(
        &self,
        node: &str,
        actor: &Actor,
        reason: &str,
        now_ms: u64,
    ) -> Result<StopDecision, StopFailure> {
        let by = actor.name.as_str();
        let approval = self.approval_required;
        let decision = self
            .record(node, |track| {
                let d = track
                    .request_stop(node, by, reason, now_ms, approval)?
                    .clone();
                let event = AuditEvent::AntivirusStopRequested {
                    node: node.to_string(),
                    reason: reason.to_string(),
                    approval_required: approval,
                    clause: self.clause.to_string(),
                    removals: serde_json::json!(track.removals()),
                };
                Ok((d, event.entry(now_ms, actor)))
            })
            .await?;
        self.stop_when_approved(node, actor, &decision, now_ms)
            .await;
        Ok(decision)
    }

    /// `actor` (the authority, another person than the requester) approves the pending stop
    /// of `node`.
    #[tracing::instrument(skip_all, fields(node = %node, by = %actor.name))]
    pub async fn approve_stop(
        &self,
        node: &str,
        actor: &Actor,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<StopDecision, StopFailure> {
        let by = actor.name.as_str();
        let decision = self
            .record(node, |track| {
                let d = track.approve_stop(node, by, now_ms)?.clone();
                let event = AuditEvent::AntivirusStopApproved {
                    node: node.to_string(),
                    requested_by: d.requested_by.clone(),
                    reason: d.reason.clone(),
                    note: note.map(str::to_string),
                };
                Ok((d, event.entry(now_ms, actor)))
            })
            .await?;
        self.stop_when_approved(node, actor, &decision, now_ms)
            .await;
        Ok(decision)
    }

    /// Apply `decide` to the node's track, then store the node's history with the audit entry;
    /// if storage refuses, the decision is undone.
    async fn record(
        &self,
        node: &str,
        decide: impl FnOnce(
            &mut AntivirusTrack,
        ) -> Result<(StopDecision, crate::store::AuditEntry), StopError>,
    ) -> Result<StopDecision, StopFailure> {
        let (before, decision, audit, row) = {
            let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
            let track = fleet
                .antivirus_mut(node)
                .ok_or_else(|| StopFailure::UnknownNode(node.to_string()))?;
            let before = track.history.stop.clone();
            let (decision, audit) = decide(track)?;
            let row = fleet.get(node).map(|st| {
                let mut row = NodeRow::counters(st);
                row.antivirus_history = st.antivirus.history_json();
                row
            });
            (before, decision, audit, row)
        };
        let written = self
            .store
            .commit(WriteBatch {
                nodes: row.into_iter().collect(),
                audit: vec![audit],
                ..WriteBatch::default()
            })
            .await;
        if let Err(e) = written {
            let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
            if let Some(track) = fleet.antivirus_mut(node) {
                track.history.stop = before;
            }
            tracing::warn!("stop decision not stored, undone: {e}");
            return Err(e.into());
        }
        Ok(decision)
    }

    /// Once the stop is approved (or needs no approval), the VM is stopped through the command
    /// path, snapshot first (`docs/RECLAIM.md`); the command and its result are audited.
    async fn stop_when_approved(&self, node: &str, by: &Actor, d: &StopDecision, now_ms: u64) {
        if d.approved_ms.is_none() {
            return;
        }
        if let Some(r) = self.reclaim {
            match r.stop_for_antivirus(node, by, now_ms).await {
                Ok(cmd) => {
                    tracing::info!(command = %cmd.id, host = %cmd.node, "antivirus stop command sent")
                }
                Err(e) => tracing::warn!("antivirus stop command not sent: {e}"),
            }
        }
    }
}
