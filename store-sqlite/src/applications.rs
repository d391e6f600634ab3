//! Applications (申请), their timelines and attached files in SQLite (schema version 50, with
//! the register's allocation terms). The timeline is append-only (triggers), as are the files.
//! An application is stored whole as JSON, with the columns queries need beside.

use crate::reclaim::{bodies, json};
use rusqlite::{params, Connection, OptionalExtension};
use yunjian_aggregator_core::lifecycle::{Application, ApplicationWrite, LogEntry};
use yunjian_aggregator_core::store::StorageError;

pub(crate) const MIGRATION_50: &str = "ALTER TABLE register_vms ADD COLUMN term TEXT;
    CREATE TABLE applications (
        id INTEGER PRIMARY KEY,
        unit TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        submitted_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX applications_unit_state ON applications(unit, state);
    CREATE TABLE application_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        application INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX application_log_app ON application_log(application, id);
    CREATE TRIGGER application_log_append_only_update BEFORE UPDATE ON application_log
        BEGIN SELECT RAISE(ABORT, 'application_log is append-only'); END;
    CREATE TRIGGER application_log_append_only_delete BEFORE DELETE ON application_log
        BEGIN SELECT RAISE(ABORT, 'application_log is append-only'); END;
    CREATE TABLE application_files (
        application INTEGER NOT NULL,
        id INTEGER NOT NULL,
        name TEXT NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (application, id)
    );
    CREATE TRIGGER application_files_append_only_update BEFORE UPDATE ON application_files
        BEGIN SELECT RAISE(ABORT, 'application_files is append-only'); END;";

pub(crate) fn write(conn: &mut Connection, w: &ApplicationWrite) -> rusqlite::Result<()> {
    // IMMEDIATE: the audit chain's head is read and extended under the write lock
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut app = tx.prepare_cached(
            "INSERT INTO applications (id, unit, kind, state, submitted_ms, updated_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                submitted_ms = excluded.submitted_ms, updated_ms = excluded.updated_ms,
                body = excluded.body",
        )?;
        for a in &w.applications {
            app.execute(params![
                a.id as i64,
                a.unit,
                a.kind.as_str(),
                a.state.as_str(),
                a.submitted_ms as i64,
                a.updated_ms as i64,
                json(a)
            ])?;
        }
        let mut log = tx.prepare_cached(
            "INSERT INTO application_log (application, ts_ms, body) VALUES (?1, ?2, ?3)",
        )?;
        for l in &w.log {
            log.execute(params![l.application as i64, l.ts_ms as i64, json(l)])?;
        }
        let mut file = tx.prepare_cached(
            "INSERT INTO application_files (application, id, name, bytes) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for f in &w.files {
            file.execute(params![
                f.application as i64,
                f.id as i64,
                f.name,
                f.bytes.as_ref()
            ])?;
        }
        crate::register::write(&tx, &w.register)?;
        crate::audit::append(&tx, &w.audit)?;
    }
    tx.commit()
}

pub(crate) fn applications(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<Application>, StorageError> {
    bodies(
        conn,
        err,
        "SELECT id, body FROM applications ORDER BY id",
        [],
        "application",
    )
}

pub(crate) fn log(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    application: u64,
) -> Result<Vec<LogEntry>, StorageError> {
    bodies(
        conn,
        err,
        "SELECT id, body FROM application_log WHERE application = ?1 ORDER BY id",
        params![application as i64],
        "application log entry",
    )
}

pub(crate) fn file(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
    application: u64,
    id: u64,
) -> Result<Option<(String, Vec<u8>)>, StorageError> {
    conn.query_row(
        "SELECT name, bytes FROM application_files WHERE application = ?1 AND id = ?2",
        params![application as i64, id as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(err)
}
