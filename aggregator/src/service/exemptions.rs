//! Exemptions from the idle rule (a DR standby, a batch job, an 等保 reserve...): created with
//! the approver's name and an expiry, revoked early. Each change is stored with its audit entry
//! (waiting for the commit) before it takes effect; changes take turns, so two revocations of
//! one exemption cannot both succeed.

use crate::ingest::{StoreClosed, StoreHandle};
use crate::register::SharedRegister;
use crate::store::WriteBatch;
use crate::usage::{ExemptError, Exemption, NewExemption, SharedUsage};
use yunjian_aggregator_core::audit::AuditEvent;
use yunjian_aggregator_core::identity::Actor;

/// Why an exemption change did not happen; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ExemptionFailure {
    /// The VM is neither in the register nor reporting.
    #[error("unknown VM {0:?}: neither in the register nor reporting")]
    UnknownVm(String),
    #[error("{0}")]
    Refused(#[from] ExemptError),
    #[error(transparent)]
    Store(#[from] StoreClosed),
}

#[derive(Debug)]
pub struct ExemptionService<'a> {
    pub usage: &'a SharedUsage,
    pub register: &'a SharedRegister,
    pub store: &'a StoreHandle,
    /// The active profile's longest exemption.
    pub max_days: u32,
    /// One change at a time.
    pub turn: &'a tokio::sync::Mutex<()>,
}

impl ExemptionService<'_> {
    /// The authority's `actor` grants an exemption (creator and approver in one);
    /// `now_ms` is the evaluation's (event) time, `wall_ms` the clock's.
    #[tracing::instrument(skip_all, fields(vm = %new.vm, by = %actor.name))]
    pub async fn create(
        &self,
        actor: &Actor,
        mut new: NewExemption,
        now_ms: u64,
        wall_ms: u64,
    ) -> Result<Exemption, ExemptionFailure> {
        let _turn = self.turn.lock().await;
        new.created_by = actor.name.clone();
        new.approver = actor.name.clone();
        new.vm = new.vm.trim().to_ascii_lowercase();
        let registered = self
            .register
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .vms
            .iter()
            .any(|v| {
                v.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(&new.vm))
            });
        let exemption = {
            let mut u = self.usage.write().unwrap_or_else(|p| p.into_inner());
            if !new.vm.is_empty() && !registered && u.history.get(&new.vm).is_none() {
                return Err(ExemptionFailure::UnknownVm(new.vm));
            }
            u.exemptions.create(new, now_ms, wall_ms, self.max_days)?
        };
        let audit = AuditEvent::ExemptionCreated {
            id: exemption.id,
            vm: exemption.vm.clone(),
            reason: serde_json::json!(exemption.reason),
            approver: exemption.approver.clone(),
            expires_ms: exemption.expires_ms,
            note: exemption.note.clone(),
        }
        .entry(exemption.created_ms, actor);
        self.apply(exemption, audit).await
    }

    /// Revoke exemption `id` before its expiry.
    #[tracing::instrument(skip_all, fields(exemption = id, by = %actor.name))]
    pub async fn revoke(
        &self,
        id: u64,
        actor: &Actor,
        reason: &str,
        wall_ms: u64,
    ) -> Result<Exemption, ExemptionFailure> {
        let _turn = self.turn.lock().await;
        let revoked = self
            .usage
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .exemptions
            .revoked(id, &actor.name, reason, wall_ms)?;
        let audit = AuditEvent::ExemptionRevoked {
            id,
            vm: revoked.vm.clone(),
            reason: reason.trim().to_string(),
        }
        .entry(wall_ms, actor);
        self.apply(revoked, audit).await
    }

    /// Store the exemption with its audit entry, then let it take effect.
    async fn apply(
        &self,
        e: Exemption,
        audit: crate::store::AuditEntry,
    ) -> Result<Exemption, ExemptionFailure> {
        self.store
            .commit(WriteBatch {
                exemptions: vec![e.clone()],
                audit: vec![audit],
                ..WriteBatch::default()
            })
            .await?;
        self.usage
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .exemptions
            .insert(e.clone());
        Ok(e)
    }
}
