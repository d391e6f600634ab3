//! The audit log in SQLite: append-only and hash-chained (schema version 41). Each entry is
//! written with the next id, the previous entry's hash and its own ([`chain_hash`]); triggers
//! refuse UPDATE, and DELETE of anything but the entries before the latest retention
//! checkpoint. Writers are serialised by SQLite's write lock (every writing transaction here is
//! IMMEDIATE), so the chain never forks.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use yunjian_aggregator_core::audit::{
    chain_hash, checkpoint_signature, AuditEntry, ChainedEntry, Checkpoint,
};
use yunjian_aggregator_core::store::StorageError;

pub(crate) const MIGRATION_41: &str = "ALTER TABLE audit ADD COLUMN role TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN unit TEXT;
    ALTER TABLE audit ADD COLUMN source TEXT;
    ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
    CREATE TABLE audit_checkpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        first_kept_id INTEGER NOT NULL,
        prev_hash TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        signature TEXT NOT NULL
    );
    CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_keep_after_checkpoint BEFORE DELETE ON audit
    WHEN OLD.id >= COALESCE((SELECT MAX(first_kept_id) FROM audit_checkpoints), 0)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: only entries before a retention checkpoint may be removed'); END;
    CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TRIGGER audit_checkpoints_kept BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;";

/// The chain's head: the last entry's id and hash, or where the latest checkpoint left it.
fn head(tx: &Connection) -> rusqlite::Result<(u64, String)> {
    if let Some((id, hash)) = tx
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
        )
        .optional()?
    {
        return Ok((id, hash));
    }
    Ok(latest_checkpoint(tx)?.map_or((0, String::new()), |c| {
        (c.first_kept_id.saturating_sub(1), c.prev_hash)
    }))
}

/// Append entries to the chain, within the caller's transaction.
pub(crate) fn append(tx: &Transaction<'_>, entries: &[AuditEntry]) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (mut id, mut prev) = head(tx)?;
    let mut st = tx.prepare_cached(
        "INSERT INTO audit (id, ts_ms, actor, role, unit, source, action, subject, detail,
            prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for e in entries {
        id += 1;
        let hash = chain_hash(&prev, id, e);
        st.execute(params![
            id as i64,
            e.ts_ms as i64,
            e.actor,
            e.role,
            e.unit,
            e.source,
            e.action,
            e.subject,
            e.detail.to_string(),
            prev,
            hash,
        ])?;
        prev = hash;
    }
    Ok(())
}

pub(crate) const COLUMNS: &str =
    "id, ts_ms, actor, role, unit, source, action, subject, detail, prev_hash, hash";

pub(crate) fn chained_of(r: &Row<'_>) -> rusqlite::Result<ChainedEntry> {
    Ok(ChainedEntry {
        id: r.get::<_, i64>(0)? as u64,
        entry: AuditEntry {
            ts_ms: r.get::<_, i64>(1)? as u64,
            actor: r.get(2)?,
            role: r.get(3)?,
            unit: r.get(4)?,
            source: r.get(5)?,
            action: r.get(6)?,
            subject: r.get(7)?,
            detail: serde_json::from_str(&r.get::<_, String>(8)?)
                .unwrap_or(serde_json::Value::Null),
        },
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

/// Entries with an id above `after_id`, in id order, at most `limit`.
pub(crate) fn chain(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    after_id: u64,
    limit: usize,
) -> Result<Vec<ChainedEntry>, StorageError> {
    let mut st = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))
        .map_err(err)?;
    let rows = st
        .query_map(
            params![after_id as i64, limit.min(i64::MAX as usize) as i64],
            chained_of,
        )
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}

pub(crate) fn latest_checkpoint(conn: &Connection) -> rusqlite::Result<Option<Checkpoint>> {
    conn.query_row(
        "SELECT first_kept_id, prev_hash, ts_ms, signature FROM audit_checkpoints
         ORDER BY id DESC LIMIT 1",
        [],
        |r| {
            Ok(Checkpoint {
                first_kept_id: r.get::<_, i64>(0)? as u64,
                prev_hash: r.get(1)?,
                ts_ms: r.get::<_, i64>(2)? as u64,
                signature: r.get(3)?,
            })
        },
    )
    .optional()
}

/// Remove the entries older than `before_ms`, leaving a checkpoint signed with `key` at the
/// first entry kept; returns how many were removed.
pub(crate) fn expire(
    conn: &mut Connection,
    before_ms: u64,
    key: &[u8],
    now_ms: u64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // the first entry kept: the oldest at or after the cut-off, or the next to be written
    let first_kept: Option<u64> = tx
        .query_row(
            "SELECT MIN(id) FROM audit WHERE ts_ms >= ?1",
            params![before_ms as i64],
            |r| r.get::<_, Option<i64>>(0),
        )?
        .map(|v| v as u64);
    let (head_id, head_hash) = head(&tx)?;
    let first_kept = first_kept.unwrap_or(head_id + 1);
    let removed: i64 = tx.query_row(
        "SELECT COUNT(*) FROM audit WHERE id < ?1",
        params![first_kept as i64],
        |r| r.get(0),
    )?;
    if removed == 0 {
        return Ok(0);
    }
    let prev_hash = if first_kept > head_id {
        head_hash
    } else {
        tx.query_row(
            "SELECT prev_hash FROM audit WHERE id = ?1",
            params![first_kept as i64],
            |r| r.get::<_, String>(0),
        )?
    };
    tx.execute(
        "INSERT INTO audit_checkpoints (first_kept_id, prev_hash, ts_ms, signature)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            first_kept as i64,
            prev_hash,
            now_ms as i64,
            checkpoint_signature(key, first_kept, &prev_hash)
        ],
    )?;
    let n = tx.execute(
        "DELETE FROM audit WHERE id < ?1",
        params![first_kept as i64],
    )?;
    tx.commit()?;
    Ok(n)
}
