//! The SQLite storage backend: the embedded default, one file, WAL mode. Implements every
//! port of [`yunjian_aggregator_core::store`]; the SQL of each domain is in its own module.

mod applications;
mod audit;
mod detections;
mod hardware;
mod reclaim;
mod register;
mod usage;
mod users;

use bytes::Bytes;
use rusqlite::{params, Connection};
use std::path::Path;
use yunjian_aggregator_core::alarms::{Alarm, AlarmState};
use yunjian_aggregator_core::audit::{AuditFilter, ChainedEntry, Checkpoint};
use yunjian_aggregator_core::identity::{ApiToken, User};
use yunjian_aggregator_core::lifecycle::{Application, ApplicationWrite};
use yunjian_aggregator_core::reclaim::{Case, CommandRecord, LogEntry, ReclaimWrite};
use yunjian_aggregator_core::register::Register;
use yunjian_aggregator_core::store::{
    role_from, role_str, severity_from, severity_str, AlarmStore, ApplicationStore, AuditEntry,
    AuditStore, DetectionRow, DetectionStore, EventRow, NodeRow, NodeStore, ReclaimStore,
    RegisterStore, Schema, SelRow, StorageError, UsageStore, UserStore, WriteBatch,
};
use yunjian_aggregator_core::time::Day;
use yunjian_aggregator_core::usage::{Exemption, UsageDayRow};
use yunjian_ratelimit::now_ms;

/// Versioned migrations, applied in ascending version order, each once. Versions are explicit
/// so independent features can each claim a block without colliding (1–9 core and register,
/// 10–19 hardware, 20–29 utilisation history, 30–39 reclaim cases, 40–49 users). Only append; never edit
/// an applied one.
const MIGRATIONS: &[(u32, &str)] = &[
    // 1: nodes and agent events
    (
        1,
        "CREATE TABLE nodes (
        node TEXT PRIMARY KEY,
        role TEXT,
        last_seen_ms INTEGER NOT NULL,
        last_report_ts_ms INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        received INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        missing INTEGER NOT NULL,
        hello BLOB,
        inventory BLOB,
        report BLOB,
        guests BLOB
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        severity TEXT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_node_ts ON events(node, ts_ms);",
    ),
    // 2: alarms (latest state of each, the alarm itself as JSON) and the audit log
    (
        2,
        "CREATE TABLE alarms (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        state TEXT NOT NULL,
        raised_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX alarms_state ON alarms(state);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_subject_ts ON audit(subject, ts_ms);
    CREATE INDEX audit_ts ON audit(ts_ms);",
    ),
    // 3: the allocation register (units, VMs)
    (3, register::MIGRATION),
    // 4: the mandated antivirus per node: the latest report's frame and what was seen
    // installed before (JSON), so a removal is still known after a restart
    (
        4,
        "ALTER TABLE nodes ADD COLUMN antivirus BLOB;
    ALTER TABLE nodes ADD COLUMN antivirus_history TEXT;",
    ),
    // 5: the sequence numbers each node's stream still awaits (`store::encode_gaps`), so a
    // replay reaching a restarted aggregator fills its gap
    (5, "ALTER TABLE nodes ADD COLUMN gaps BLOB;"),
    // 10: BMC System Event Log entries, one row each
    (10, hardware::MIGRATION_10),
    // 20: utilisation history (one compact row per VM and day) and the exemption register
    (20, usage::MIGRATION_20),
    // 30: reclaim cases, their append-only timeline, commands to agents
    (30, reclaim::MIGRATION_30),
    // 35: the latest reclaim finding per VM, for the re-check after a restart
    (35, detections::MIGRATION_35),
    // 40: users and API tokens
    (40, users::MIGRATION_40),
    // 41: the audit log hash-chained and append-only, retention checkpoints
    (41, audit::MIGRATION_41),
    // 50: applications (申请) with their timelines and files; allocation terms in the register
    (50, applications::MIGRATION_50),
];

fn state_str(s: AlarmState) -> &'static str {
    match s {
        AlarmState::Active => "active",
        AlarmState::Acknowledged => "acknowledged",
        AlarmState::Cleared => "cleared",
    }
}

/// The mode of the database file and of the files SQLite keeps beside it.
pub const FILE_MODE: u32 = 0o600;

/// Create the database file `0600` if it is missing (its directory `0700`), or tighten it and
/// the files SQLite keeps beside it to `0600` if group or others may read them.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let beside = ["", "-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    });
    for file in beside {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(FILE_MODE))?;
            tracing::warn!(
                file = %file.display(),
                was = %format!("{mode:04o}"),
                "the database file was readable by other users; tightened to 0600"
            );
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct SqliteStorage {
    conn: Connection,
    path: String,
}

/// A SQLite failure on the database at `path`.
fn backend_error(path: &str, source: rusqlite::Error) -> StorageError {
    StorageError::Backend {
        backend: "sqlite",
        target: path.to_string(),
        source: Box::new(source),
    }
}

/// Whether SQLite answered "busy" (another connection holds the lock).
fn is_busy(e: &StorageError) -> bool {
    matches!(e, StorageError::Backend { source, .. }
        if source.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code)
            == Some(rusqlite::ErrorCode::DatabaseBusy))
}

impl SqliteStorage {
    /// Open (creating if needed) the database file. `:memory:` gives a private in-memory db.
    ///
    /// The file is created `0600` (a missing directory `0700`) before SQLite opens it, and
    /// SQLite gives its `-wal`, `-shm` and `-journal` files the database file's mode, so only
    /// the aggregator's user may read the register's contacts. A file found open to others
    /// (made by an older build) is tightened, with a warning.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let p = path.display().to_string();
        let err = |source| backend_error(&p, source);
        if path != Path::new(":memory:") {
            private_file(path).map_err(|source| StorageError::Backend {
                backend: "sqlite",
                target: p.clone(),
                source: Box::new(source),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        // first, so that opening while another connection migrates waits instead of failing
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        // switching a new file to WAL can answer "busy" without waiting (see `migrate`)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                done => break done.map_err(err)?,
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        Ok(SqliteStorage { conn, path: p })
    }

    /// One attempt at [`Schema::migrate`].
    fn migrate_once(&mut self) -> Result<u32, StorageError> {
        let path = self.path.clone();
        let err = move |source| backend_error(&path, source);
        // One immediate transaction: a second process migrating the same file waits for this
        // one (busy timeout) and then finds everything applied.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
        )
        .map_err(&err)?;
        let applied: std::collections::BTreeSet<u32> = {
            let mut st = tx
                .prepare("SELECT version FROM schema_migrations")
                .map_err(&err)?;
            let rows = st.query_map([], |r| r.get::<_, u32>(0)).map_err(&err)?;
            rows.collect::<Result<_, _>>().map_err(&err)?
        };
        let known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0);
        if let Some(&found) = applied
            .iter()
            .find(|v| !MIGRATIONS.iter().any(|(k, _)| k == *v))
        {
            // A newer build applied a migration this one does not know: refuse rather than run
            // on a schema we do not understand.
            return Err(StorageError::SchemaTooNew { found, known });
        }
        let mut pending: Vec<&(u32, &str)> = MIGRATIONS
            .iter()
            .filter(|(v, _)| !applied.contains(v))
            .collect();
        pending.sort_by_key(|(v, _)| *v);
        for (version, sql) in pending {
            tx.execute_batch(sql).map_err(&err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                params![version, now_ms() as i64],
            )
            .map_err(&err)?;
            tracing::info!(version, "storage schema migrated");
        }
        tx.commit().map_err(&err)?;
        Ok(known)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
        move |source| backend_error(&self.path, source)
    }
}

impl Schema for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn migrate(&mut self) -> Result<u32, StorageError> {
        // A new file that another connection is switching to WAL can answer "busy" without
        // waiting (SQLite does not call the busy handler there): try again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.migrate_once() {
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                done => return done,
            }
        }
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        let path = self.path.clone();
        let err = move |source| backend_error(&path, source);
        // IMMEDIATE: the audit chain's head is read and extended under the write lock
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO nodes (node, role, last_seen_ms, last_report_ts_ms, last_seq,
                        received, duplicates, missing, hello, inventory, report, guests,
                        antivirus, antivirus_history, gaps)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT(node) DO UPDATE SET role = excluded.role,
                        last_seen_ms = excluded.last_seen_ms,
                        last_report_ts_ms = excluded.last_report_ts_ms,
                        last_seq = excluded.last_seq, received = excluded.received,
                        duplicates = excluded.duplicates, missing = excluded.missing,
                        hello = COALESCE(excluded.hello, nodes.hello),
                        inventory = COALESCE(excluded.inventory, nodes.inventory),
                        report = COALESCE(excluded.report, nodes.report),
                        guests = COALESCE(excluded.guests, nodes.guests),
                        antivirus = COALESCE(excluded.antivirus, nodes.antivirus),
                        antivirus_history =
                            COALESCE(excluded.antivirus_history, nodes.antivirus_history),
                        gaps = excluded.gaps",
                )
                .map_err(&err)?;
            for n in &batch.nodes {
                up.execute(params![
                    n.node,
                    role_str(n.role),
                    n.last_seen_ms as i64,
                    n.last_report_ts_ms as i64,
                    n.last_seq as i64,
                    n.received as i64,
                    n.duplicates as i64,
                    n.missing as i64,
                    n.hello.as_deref(),
                    n.inventory.as_deref(),
                    n.report.as_deref(),
                    n.guests.as_deref(),
                    n.antivirus.as_deref(),
                    n.antivirus_history.as_deref(),
                    n.gaps.as_deref(),
                ])
                .map_err(&err)?;
            }
            let mut ev = tx
                .prepare_cached(
                    "INSERT INTO events (node, ts_ms, severity, code, message)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(&err)?;
            for e in &batch.events {
                ev.execute(params![
                    e.node,
                    e.ts_ms as i64,
                    severity_str(e.severity),
                    e.code,
                    e.message
                ])
                .map_err(&err)?;
            }
            let mut al = tx
                .prepare_cached(
                    "INSERT INTO alarms (id, rule, subject, state, raised_ms, updated_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                        updated_ms = excluded.updated_ms, body = excluded.body",
                )
                .map_err(&err)?;
            for ev in &batch.alarms {
                let a = ev.alarm();
                al.execute(params![
                    a.id as i64,
                    a.key.rule,
                    a.key.subject,
                    state_str(a.state),
                    a.raised_ms as i64,
                    a.updated_ms as i64,
                    serde_json::to_string(a).unwrap_or_default(),
                ])
                .map_err(&err)?;
            }
            audit::append(&tx, &batch.audit).map_err(&err)?;
            register::write(&tx, &batch.register).map_err(&err)?;
            hardware::write(&tx, &batch.sel).map_err(&err)?;
            usage::write(&tx, &batch.usage_days, &batch.exemptions).map_err(&err)?;
            users::write(&tx, &batch.users, &batch.tokens).map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }
}

impl NodeStore for SqliteStorage {
    fn load_nodes(&mut self) -> Result<Vec<NodeRow>, StorageError> {
        let e = self.err();
        let mut st = self
            .conn
            .prepare(
                "SELECT node, role, last_seen_ms, last_report_ts_ms, last_seq, received,
                        duplicates, missing, hello, inventory, report, guests, antivirus,
                        antivirus_history, gaps FROM nodes",
            )
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| {
                Ok(NodeRow {
                    node: r.get(0)?,
                    role: role_from(r.get(1)?),
                    last_seen_ms: r.get::<_, i64>(2)? as u64,
                    last_report_ts_ms: r.get::<_, i64>(3)? as u64,
                    last_seq: r.get::<_, i64>(4)? as u64,
                    received: r.get::<_, i64>(5)? as u64,
                    duplicates: r.get::<_, i64>(6)? as u64,
                    missing: r.get::<_, i64>(7)? as u64,
                    hello: r.get::<_, Option<Vec<u8>>>(8)?.map(Bytes::from),
                    inventory: r.get::<_, Option<Vec<u8>>>(9)?.map(Bytes::from),
                    report: r.get::<_, Option<Vec<u8>>>(10)?.map(Bytes::from),
                    guests: r.get::<_, Option<Vec<u8>>>(11)?.map(Bytes::from),
                    antivirus: r.get::<_, Option<Vec<u8>>>(12)?.map(Bytes::from),
                    antivirus_history: r.get(13)?,
                    gaps: r.get::<_, Option<Vec<u8>>>(14)?.map(Bytes::from),
                })
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    fn events(&mut self, node: Option<&str>, limit: usize) -> Result<Vec<EventRow>, StorageError> {
        let e = self.err();
        let mut st = self
            .conn
            .prepare(
                "SELECT node, ts_ms, severity, code, message FROM events
                 WHERE (?1 IS NULL OR node = ?1) ORDER BY ts_ms DESC, id DESC LIMIT ?2",
            )
            .map_err(&e)?;
        let rows = st
            .query_map(params![node, limit as i64], |r| {
                Ok(EventRow {
                    node: r.get(0)?,
                    ts_ms: r.get::<_, i64>(1)? as u64,
                    severity: severity_from(&r.get::<_, String>(2)?),
                    code: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    fn load_sel(&mut self, per_node: usize) -> Result<Vec<SelRow>, StorageError> {
        hardware::load(&self.conn, per_node).map_err(self.err())
    }
}

impl AlarmStore for SqliteStorage {
    fn open_alarms(&mut self) -> Result<Vec<Alarm>, StorageError> {
        let e = self.err();
        let mut st = self
            .conn
            .prepare("SELECT id, body FROM alarms WHERE state != 'cleared' ORDER BY id")
            .map_err(&e)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(&e)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(&e)?;
            out.push(
                serde_json::from_str(&body).map_err(|err| StorageError::Corrupt {
                    what: format!("alarm {id}"),
                    reason: err.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

impl AuditStore for SqliteStorage {
    fn audit(
        &mut self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        let e = self.err();
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM audit
                 WHERE (?1 IS NULL OR subject = ?1) ORDER BY ts_ms DESC, id DESC LIMIT ?2",
                audit::COLUMNS
            ))
            .map_err(&e)?;
        let rows = st
            .query_map(params![subject, limit as i64], |r| {
                audit::chained_of(r).map(|c| c.entry)
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    fn audit_search(&mut self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
        let e = self.err();
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM audit
                 WHERE (?1 IS NULL OR actor = ?1)
                   AND (?2 IS NULL OR substr(action, 1, length(?2)) = ?2)
                   AND (?3 IS NULL OR substr(subject, 1, length(?3)) = ?3)
                   AND (?4 IS NULL OR ts_ms >= ?4) AND (?5 IS NULL OR ts_ms < ?5)
                 ORDER BY id DESC LIMIT ?6",
                audit::COLUMNS
            ))
            .map_err(&e)?;
        let rows = st
            .query_map(
                params![
                    f.actor,
                    f.action,
                    f.subject,
                    f.from_ms.map(|v| v as i64),
                    f.to_ms.map(|v| v as i64),
                    f.limit.min(i64::MAX as usize) as i64
                ],
                |r| audit::chained_of(r).map(|c| c.entry),
            )
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    fn expire_audit(&mut self, before_ms: u64, key: &[u8]) -> Result<usize, StorageError> {
        let path = self.path.clone();
        audit::expire(&mut self.conn, before_ms, key, now_ms())
            .map_err(|source| backend_error(&path, source))
    }

    fn audit_chain(
        &mut self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<ChainedEntry>, StorageError> {
        audit::chain(&self.conn, &self.err(), after_id, limit)
    }

    fn audit_checkpoint(&mut self) -> Result<Option<Checkpoint>, StorageError> {
        audit::latest_checkpoint(&self.conn).map_err(self.err())
    }
}

impl RegisterStore for SqliteStorage {
    fn load_register(&mut self) -> Result<Register, StorageError> {
        register::load(&self.conn, &self.err())
    }
}

impl UsageStore for SqliteStorage {
    fn load_usage(&mut self, since_day: Day) -> Result<Vec<UsageDayRow>, StorageError> {
        usage::load_days(&self.conn, &self.err(), since_day)
    }

    fn expire_usage(&mut self, before_day: Day) -> Result<usize, StorageError> {
        usage::expire(&self.conn, before_day).map_err(self.err())
    }

    fn load_exemptions(&mut self) -> Result<Vec<Exemption>, StorageError> {
        usage::load_exemptions(&self.conn, &self.err())
    }
}

impl UserStore for SqliteStorage {
    fn load_users(&mut self) -> Result<Vec<User>, StorageError> {
        users::load_users(&self.conn, &self.err())
    }

    fn load_tokens(&mut self) -> Result<Vec<ApiToken>, StorageError> {
        users::load_tokens(&self.conn, &self.err())
    }
}

impl ReclaimStore for SqliteStorage {
    fn reclaim_write(&mut self, w: &ReclaimWrite) -> Result<(), StorageError> {
        let path = self.path.clone();
        reclaim::write(&mut self.conn, w).map_err(|source| backend_error(&path, source))
    }

    fn reclaim_cases(&mut self) -> Result<Vec<Case>, StorageError> {
        reclaim::cases(&self.conn, &self.err())
    }

    fn reclaim_log(&mut self, case_id: u64) -> Result<Vec<LogEntry>, StorageError> {
        reclaim::log(&self.conn, &self.err(), case_id)
    }

    fn commands(&mut self, outstanding_only: bool) -> Result<Vec<CommandRecord>, StorageError> {
        reclaim::commands(&self.conn, &self.err(), outstanding_only)
    }
}

impl ApplicationStore for SqliteStorage {
    fn application_write(&mut self, w: &ApplicationWrite) -> Result<(), StorageError> {
        let path = self.path.clone();
        applications::write(&mut self.conn, w).map_err(|source| backend_error(&path, source))
    }

    fn applications(&mut self) -> Result<Vec<Application>, StorageError> {
        applications::applications(&self.conn, &self.err())
    }

    fn application_log(
        &mut self,
        application: u64,
    ) -> Result<Vec<yunjian_aggregator_core::lifecycle::LogEntry>, StorageError> {
        applications::log(&self.conn, &self.err(), application)
    }

    fn application_file(
        &mut self,
        application: u64,
        id: u64,
    ) -> Result<Option<(String, Vec<u8>)>, StorageError> {
        applications::file(&self.conn, &self.err(), application, id)
    }
}

impl DetectionStore for SqliteStorage {
    fn store_detections(&mut self, found: &[DetectionRow]) -> Result<(), StorageError> {
        let path = self.path.clone();
        detections::store(&mut self.conn, found).map_err(|source| backend_error(&path, source))
    }

    fn load_detections(&mut self) -> Result<Vec<DetectionRow>, StorageError> {
        detections::load(&self.conn, &self.err())
    }
}
