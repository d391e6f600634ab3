//! The latest finding fed to the reclaim service per VM (schema version 35), so that the
//! re-check before a scheduled case acts survives a restart. One row per VM UUID, replaced by
//! each newer finding; the finding is stored whole as JSON.

use rusqlite::{params, Connection};
use yunjian_aggregator_core::store::{DetectionRow, StorageError};

pub(crate) const MIGRATION_35: &str = "CREATE TABLE reclaim_detections (
        uuid TEXT PRIMARY KEY,
        fed_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );";

pub(crate) fn store(conn: &mut Connection, found: &[DetectionRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut up = tx.prepare_cached(
            "INSERT INTO reclaim_detections (uuid, fed_ms, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(uuid) DO UPDATE SET fed_ms = excluded.fed_ms, body = excluded.body",
        )?;
        for d in found {
            let body = serde_json::to_string(&d.detection).unwrap_or_default();
            up.execute(params![d.detection.uuid, d.fed_ms as i64, body])?;
        }
    }
    tx.commit()
}

pub(crate) fn load(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<DetectionRow>, StorageError> {
    let mut st = conn
        .prepare("SELECT uuid, fed_ms, body FROM reclaim_detections ORDER BY uuid")
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (uuid, fed_ms, body) = row.map_err(err)?;
        let detection = serde_json::from_str(&body).map_err(|e| StorageError::Corrupt {
            what: format!("reclaim detection {uuid}"),
            reason: e.to_string(),
        })?;
        out.push(DetectionRow {
            fed_ms: fed_ms as u64,
            detection,
        });
    }
    Ok(out)
}
