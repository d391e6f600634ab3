//! Reclaim cases, their timelines and the outstanding commands in SQLite (schema versions
//! 30–39). The timeline (`reclaim_log`) is append-only: triggers refuse updates and deletes.
//! A case and a command are stored whole as JSON, with the columns queries need beside.

use rusqlite::{params, Connection};
use yunjian_aggregator_core::reclaim::{Case, CommandRecord, LogEntry, ReclaimWrite};
use yunjian_aggregator_core::store::StorageError;

pub(crate) const MIGRATION_30: &str = "CREATE TABLE reclaim_cases (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL,
        unit TEXT NOT NULL,
        state TEXT NOT NULL,
        opened_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX reclaim_cases_uuid ON reclaim_cases(uuid);
    CREATE INDEX reclaim_cases_unit_state ON reclaim_cases(unit, state);
    CREATE TABLE reclaim_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX reclaim_log_case ON reclaim_log(case_id, id);
    CREATE TRIGGER reclaim_log_append_only_update BEFORE UPDATE ON reclaim_log
        BEGIN SELECT RAISE(ABORT, 'reclaim_log is append-only'); END;
    CREATE TRIGGER reclaim_log_append_only_delete BEFORE DELETE ON reclaim_log
        BEGIN SELECT RAISE(ABORT, 'reclaim_log is append-only'); END;
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        case_id INTEGER,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX commands_status ON commands(status);";

pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn write(conn: &mut Connection, w: &ReclaimWrite) -> rusqlite::Result<()> {
    // IMMEDIATE: the audit chain's head is read and extended under the write lock
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut case = tx.prepare_cached(
            "INSERT INTO reclaim_cases (id, uuid, unit, state, opened_ms, updated_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                updated_ms = excluded.updated_ms, body = excluded.body",
        )?;
        for c in &w.cases {
            case.execute(params![
                c.id as i64,
                c.uuid,
                c.unit,
                c.state.as_str(),
                c.opened_ms as i64,
                c.updated_ms as i64,
                json(c)
            ])?;
        }
        let mut log = tx
            .prepare_cached("INSERT INTO reclaim_log (case_id, ts_ms, body) VALUES (?1, ?2, ?3)")?;
        for l in &w.log {
            log.execute(params![l.case_id as i64, l.ts_ms as i64, json(l)])?;
        }
        let mut cmd = tx.prepare_cached(
            "INSERT INTO commands (id, node, case_id, status, created_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, body = excluded.body",
        )?;
        for c in &w.commands {
            cmd.execute(params![
                c.id,
                c.node,
                c.case_id.map(|i| i as i64),
                c.status.as_str(),
                c.created_ms as i64,
                json(c)
            ])?;
        }
        crate::audit::append(&tx, &w.audit)?;
        crate::register::write(&tx, &w.register)?;
    }
    tx.commit()
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    id: String,
    body: &str,
) -> Result<T, StorageError> {
    serde_json::from_str(body).map_err(|e| StorageError::Corrupt {
        what: format!("{what} {id}"),
        reason: e.to_string(),
    })
}

/// Rows of `(id, body)` from `sql`, each body decoded from JSON (`what` names it in errors).
pub(crate) fn bodies<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
) -> Result<Vec<T>, StorageError> {
    let mut st = conn.prepare(sql).map_err(err)?;
    let rows = st
        .query_map(params, |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(err)?;
        out.push(decode(what, id.to_string(), &body)?);
    }
    Ok(out)
}

pub(crate) fn cases(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<Case>, StorageError> {
    bodies(
        conn,
        err,
        "SELECT id, body FROM reclaim_cases ORDER BY id",
        [],
        "reclaim case",
    )
}

pub(crate) fn log(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    case_id: u64,
) -> Result<Vec<LogEntry>, StorageError> {
    bodies(
        conn,
        err,
        "SELECT id, body FROM reclaim_log WHERE case_id = ?1 ORDER BY id",
        params![case_id as i64],
        "reclaim log entry",
    )
}

pub(crate) fn commands(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    outstanding_only: bool,
) -> Result<Vec<CommandRecord>, StorageError> {
    let mut st = conn
        .prepare(
            "SELECT id, body FROM commands WHERE (?1 = 0 OR status = 'outstanding')
             ORDER BY created_ms, id",
        )
        .map_err(err)?;
    let rows = st
        .query_map(params![outstanding_only as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(err)?;
        out.push(decode("command", id, &body)?);
    }
    Ok(out)
}
