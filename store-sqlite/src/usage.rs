//! Utilisation history and exemptions in SQLite (schema version 20).
//!
//! A VM's name (SMBIOS UUID) is stored once in `usage_vms`; each closed day is one row of
//! `usage_days` keyed by (VM number, day) without a rowid, the summary a fixed 49-byte blob
//! ([`DailySummary::encode`]). Exemptions are one JSON row each, never deleted.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use yunjian_aggregator_core::store::StorageError;
use yunjian_aggregator_core::time::Day;
use yunjian_aggregator_core::usage::{DailySummary, Exemption, UsageDayRow};

pub(crate) const MIGRATION_20: &str = "CREATE TABLE usage_vms (
        id INTEGER PRIMARY KEY,
        vm TEXT NOT NULL UNIQUE
    );
    CREATE TABLE usage_days (
        vm_id INTEGER NOT NULL,
        day INTEGER NOT NULL,
        summary BLOB NOT NULL,
        PRIMARY KEY (vm_id, day)
    ) WITHOUT ROWID;
    CREATE INDEX usage_days_day ON usage_days(day);
    CREATE TABLE usage_exemptions (
        id INTEGER PRIMARY KEY,
        vm TEXT NOT NULL,
        body TEXT NOT NULL
    );";

/// Upsert closed days and exemptions (within the caller's transaction).
pub(crate) fn write(
    tx: &Transaction<'_>,
    days: &[UsageDayRow],
    exemptions: &[Exemption],
) -> rusqlite::Result<()> {
    if !days.is_empty() {
        let mut find = tx.prepare_cached("SELECT id FROM usage_vms WHERE vm = ?1")?;
        let mut add = tx.prepare_cached("INSERT INTO usage_vms (vm) VALUES (?1)")?;
        let mut day = tx.prepare_cached(
            "INSERT INTO usage_days (vm_id, day, summary) VALUES (?1, ?2, ?3)
             ON CONFLICT(vm_id, day) DO UPDATE SET summary = excluded.summary",
        )?;
        let mut last: Option<(&str, i64)> = None;
        for r in days {
            let id = match last {
                Some((vm, id)) if vm == r.vm => id,
                _ => match find
                    .query_row(params![r.vm], |row| row.get::<_, i64>(0))
                    .optional()?
                {
                    Some(id) => id,
                    None => {
                        add.execute(params![r.vm])?;
                        tx.last_insert_rowid()
                    }
                },
            };
            last = Some((r.vm.as_str(), id));
            day.execute(params![id, r.summary.day.0, &r.summary.encode()[..]])?;
        }
    }
    if !exemptions.is_empty() {
        let mut ex = tx.prepare_cached(
            "INSERT INTO usage_exemptions (id, vm, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET vm = excluded.vm, body = excluded.body",
        )?;
        for e in exemptions {
            let body = serde_json::to_string(e).unwrap_or_default();
            ex.execute(params![e.id as i64, e.vm, body])?;
        }
    }
    Ok(())
}

/// Every stored day from `since_day` on, by VM then day.
pub(crate) fn load_days(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    since_day: Day,
) -> Result<Vec<UsageDayRow>, StorageError> {
    let mut st = conn
        .prepare(
            "SELECT v.vm, d.day, d.summary FROM usage_days d JOIN usage_vms v ON v.id = d.vm_id
             WHERE d.day >= ?1 ORDER BY d.vm_id, d.day",
        )
        .map_err(err)?;
    let rows = st
        .query_map(params![since_day.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i32>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (vm, day, blob) = row.map_err(err)?;
        let summary =
            DailySummary::decode(Day(day), &blob).ok_or_else(|| StorageError::Corrupt {
                what: format!("usage of {vm}"),
                reason: format!("usage day {day}: summary blob of {} bytes", blob.len()),
            })?;
        out.push(UsageDayRow { vm, summary });
    }
    Ok(out)
}

pub(crate) fn load_exemptions(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<Exemption>, StorageError> {
    let mut st = conn
        .prepare("SELECT id, body FROM usage_exemptions ORDER BY id")
        .map_err(err)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(err)?;
        out.push(
            serde_json::from_str(&body).map_err(|e| StorageError::Corrupt {
                what: format!("exemption {id}"),
                reason: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// Delete days before `before_day`.
pub(crate) fn expire(conn: &Connection, before_day: Day) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM usage_days WHERE day < ?1",
        params![before_day.0],
    )
}

#[cfg(test)]
mod tests {
    use crate::SqliteStorage;
    use yunjian_aggregator_core::store::{Schema, UsageStore, WriteBatch};
    use yunjian_aggregator_core::time::Day;
    use yunjian_aggregator_core::usage::{
        DailySummary, ExemptReason, Exemption, Sample, UsageDayRow, UsageHistory, UsagePolicy,
    };

    #[test]
    fn closed_days_and_exemptions_survive_a_restart_and_old_days_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.db");
        let mut h = UsageHistory::new(&UsagePolicy::default());
        let t0 = 1_772_380_800_000u64;
        for vm in ["aa-1", "bb-2"] {
            for i in 0..(3 * 96u64) {
                let s = Sample {
                    cpu: (i % 7 * 100) as u16,
                    vcpus: 2,
                    mem_used_kib: 1 << 20,
                    mem_total_kib: 4 << 20,
                    net_rx_bps: 10,
                    ..Sample::default()
                };
                h.record_sample(vm, t0 + i * 900_000, &s);
            }
        }
        h.close_all();
        let rows = h.take_dirty();
        assert_eq!(rows.len(), 6);
        let ex = Exemption {
            id: 3,
            vm: "aa-1".into(),
            reason: ExemptReason::Batch,
            note: "月末报表".into(),
            approver: "数据局".into(),
            created_by: "ops:zhang".into(),
            created_ms: 1,
            expires_ms: t0 + 90 * 86_400_000,
            revoked: None,
        };
        {
            let mut s = SqliteStorage::open(&path).unwrap();
            s.migrate().unwrap();
            s.write(&WriteBatch {
                usage_days: rows.clone(),
                exemptions: vec![ex.clone()],
                ..WriteBatch::default()
            })
            .unwrap();
            // a late merge rewrites its day
            let mut again = rows[0].clone();
            again.summary.samples += 1;
            s.write(&WriteBatch {
                usage_days: vec![again],
                ..WriteBatch::default()
            })
            .unwrap();
        }
        let mut s = SqliteStorage::open(&path).unwrap();
        s.migrate().unwrap();
        let day0 = h.day_of(t0);
        let loaded: Vec<UsageDayRow> = s.load_usage(day0).unwrap();
        assert_eq!(loaded.len(), 6);
        let find = |vm: &str, day| -> DailySummary {
            loaded
                .iter()
                .find(|r| r.vm == vm && r.summary.day == day)
                .unwrap()
                .summary
        };
        assert_eq!(
            find(&rows[0].vm, rows[0].summary.day).samples,
            rows[0].summary.samples + 1
        );
        assert_eq!(find(&rows[5].vm, rows[5].summary.day), rows[5].summary);
        assert_eq!(s.load_exemptions().unwrap(), vec![ex]);
        assert_eq!(s.expire_usage(day0 + 1).unwrap(), 2);
        assert_eq!(s.load_usage(Day(0)).unwrap().len(), 4);
    }
}
