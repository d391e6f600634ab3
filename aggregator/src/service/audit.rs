//! The audit log's upkeep: retention in calendar months from the active profile (pruned at
//! start and daily, leaving a signed checkpoint) and the verification of its hash chain
//! (`yunjian-aggregator audit verify`).

use crate::store::{Storage, StorageError};
use crate::web::SharedReader;
use std::time::Duration;
use tokio::sync::watch;
use yunjian_aggregator_core::audit::{retention_cutoff_ms, ChainBreak, Verified, Verifier};
use yunjian_protocol::MasterKey;

/// The key that signs retention checkpoints: derived from the master key under a name that is
/// not a valid node id, so no enrolled agent holds it.
pub fn checkpoint_key(master: &MasterKey) -> Vec<u8> {
    master.checkpoint_key().to_hex().into_bytes()
}

/// Remove the entries older than `months` calendar months, logging what was done.
pub fn prune(storage: &mut dyn Storage, key: &[u8], months: u32, now_ms: u64) {
    let cutoff = retention_cutoff_ms(now_ms, months);
    match storage.expire_audit(cutoff, key) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            months,
            "audit retention: entries older than {} removed, checkpoint left",
            crate::time::beijing_date(cutoff)
        ),
        Err(e) => tracing::warn!("audit retention: {e}"),
    }
}

/// [`prune`] once a day until shutdown.
pub async fn prune_daily(
    reader: SharedReader,
    key: Vec<u8>,
    months: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    loop {
        tokio::select! {
            () = tokio::time::sleep(DAY) => {}
            _ = shutdown.changed() => return,
        }
        let (reader, key) = (reader.clone(), key.clone());
        let pruned = tokio::task::spawn_blocking(move || {
            let mut r = reader.lock().unwrap_or_else(|p| p.into_inner());
            prune(&mut **r, &key, months, crate::ratelimit::now_ms());
        })
        .await;
        if let Err(e) = pruned {
            tracing::warn!("audit retention task failed: {e}");
        }
    }
}

/// Why `audit verify` failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    #[error("无法读取审计日志：{0}")]
    Storage(#[from] StorageError),
}

/// Entries read per round while verifying.
const PAGE: usize = 10_000;

/// Walk the whole chain in storage; `progress` is told how many entries were checked so far.
pub fn verify(
    storage: &mut dyn Storage,
    key: &[u8],
    mut progress: impl FnMut(u64),
) -> Result<Verified, VerifyError> {
    let checkpoint = storage.audit_checkpoint()?;
    let mut v = Verifier::new(key, checkpoint.as_ref())?;
    let mut after = 0;
    let mut seen = 0;
    loop {
        let page = storage.audit_chain(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for c in &page {
            v.push(c)?;
        }
        seen += page.len() as u64;
        progress(seen);
    }
    Ok(v.finish())
}
