//! The allocation register's changes: each one computed from the register as it is, checked
//! (rows, quota, the 003 第三十条 hold while a unit has open low-use cases), committed to storage
//! with its audit entry, then applied in memory. One change at a time, so storage and memory
//! see them in the same order. The HTTP API and the `import` command both come here.

use crate::ingest::{StoreClosed, StoreHandle};
use crate::reclaim::Reclaim;
use crate::register::changes::{
    self, ChangeError, ChangeRequest, Import, QuotaInput, SanctionRequest, Update,
};
use crate::register::{Register, SharedRegister};
use crate::store::WriteBatch;
use std::collections::BTreeMap;
use std::sync::PoisonError;
use yunjian_aggregator_core::identity::Actor;

/// Units held by open low-use cases: unit → (case ids, held since).
pub type HeldUnits = BTreeMap<String, (Vec<u64>, u64)>;

/// Where the 003 第三十条 holds come from.
#[derive(Debug)]
pub enum Holds<'a> {
    /// The running reclaim service's cases.
    Live(&'a Reclaim),
    /// Read from storage (the aggregator is stopped: the command line).
    Stored(HeldUnits),
    /// No reclaim cases in this setting (tests of the register alone).
    None,
}

impl Holds<'_> {
    async fn get(&self) -> HeldUnits {
        match self {
            Holds::Live(r) => r.held_units().await,
            Holds::Stored(h) => h.clone(),
            Holds::None => HeldUnits::new(),
        }
    }
}

/// A register change that did not happen; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Store(#[from] StoreClosed),
}

/// The register's use cases over one register, one storage and one source of holds.
#[derive(Debug)]
pub struct RegisterService<'a> {
    pub register: &'a SharedRegister,
    pub store: &'a StoreHandle,
    pub holds: Holds<'a>,
    /// One change at a time (shared by every handle on the same register).
    pub turn: &'a tokio::sync::Mutex<()>,
    /// The active profile: what a held request cites (`[clauses] low_use_hold`).
    pub profile: &'a yunjian_aggregator_core::policy::Profile,
}

impl RegisterService<'_> {
    /// Import a unit's filled-in 云资源使用需求表 (附件3).
    #[tracing::instrument(skip_all, fields(unit = %req.unit, by = %req.by.name, file = %req.file))]
    pub async fn import(&self, req: &Import<'_>, now_ms: u64) -> Result<Update, RegisterError> {
        self.commit(|reg| changes::import(reg, req, now_ms)).await
    }

    /// An approved change of one VM's size.
    #[tracing::instrument(skip_all, fields(vm = %uuid, by = %by.name))]
    pub async fn change(
        &self,
        uuid: &str,
        by: &Actor,
        req: &ChangeRequest,
        now_ms: u64,
    ) -> Result<Update, RegisterError> {
        self.commit(|reg| changes::change(reg, uuid, by, req, now_ms))
            .await
    }

    /// Sanction a unit (lowered quota, held requests).
    #[tracing::instrument(skip_all, fields(unit = %unit, by = %by.name))]
    pub async fn sanction(
        &self,
        unit: &str,
        by: &Actor,
        req: &SanctionRequest,
        now_ms: u64,
    ) -> Result<Update, RegisterError> {
        self.commit(|reg| changes::sanction(reg, unit, by, req, now_ms))
            .await
    }

    /// Lift a unit's sanction.
    #[tracing::instrument(skip_all, fields(unit = %unit, by = %by.name))]
    pub async fn lift(
        &self,
        unit: &str,
        by: &Actor,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<Update, RegisterError> {
        self.commit(|reg| changes::lift(reg, unit, by, note, now_ms))
            .await
    }

    /// Set (or clear) a unit's own quota.
    #[tracing::instrument(skip_all, fields(unit = %unit, by = %by.name))]
    pub async fn set_quota(
        &self,
        unit: &str,
        by: &Actor,
        quota: Option<QuotaInput>,
        now_ms: u64,
    ) -> Result<Update, RegisterError> {
        self.commit(|reg| changes::set_quota(reg, unit, by, quota, now_ms))
            .await
    }

    /// Compute a change from the register as it is, check the holds, commit it with its audit
    /// entry, then apply it.
    async fn commit(
        &self,
        make: impl FnOnce(&Register) -> Result<Update, ChangeError>,
    ) -> Result<Update, RegisterError> {
        let _turn = self.turn.lock().await;
        let cite = |e: ChangeError| e.citing(&self.profile.clauses.low_use_hold);
        let update = make(&self.read()).map_err(cite)?;
        // open low-use cases hold the unit's requests for more (003 第三十条; the profile's clause)
        let holds = self.holds.get().await;
        changes::check_low_use_hold(&self.read(), &update.record, &holds).map_err(cite)?;
        self.store
            .commit(WriteBatch {
                register: vec![update.record.clone()],
                audit: vec![update.audit.clone()],
                ..WriteBatch::default()
            })
            .await?;
        self.register
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(update.record.clone());
        tracing::info!(action = %update.audit.action, "register changed");
        Ok(update)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Register> {
        self.register.read().unwrap_or_else(PoisonError::into_inner)
    }
}
