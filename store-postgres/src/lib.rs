//! The PostgreSQL storage backend, for sites that outgrow one SQLite file (a province with many
//! city clouds, an HA pair with the database on its own servers). Implements every port of
//! [`yunjian_aggregator_core::store`] with the semantics of `yunjian-store-sqlite`, row for row
//! and in the same order; the storage scenario test (`tests/tests/storage.rs`) runs the same
//! story on both.
//!
//! One [`PostgresStorage`] is one connection, synchronous (the `postgres` crate drives its own
//! small runtime), used from one thread. The schema is the SQLite one in PostgreSQL's dialect
//! (`migrations/*.sql`, the same explicit versions): u64 values in BIGINT (stored as i64, as
//! SQLite does), frames in BYTEA, JSON bodies in TEXT, text keys that reads order by in the "C"
//! collation so the order is SQLite's whatever the server's locale. The reclaim timeline is
//! append-only in the database itself: a trigger refuses updates, deletes and truncation.
//! Migrations run in one transaction under an advisory lock, so two aggregators starting
//! together on a new database do not race.
//!
//! Errors name the server by its URL without the password ([`redact`]).

use bytes::Bytes;
use postgres::{Client, NoTls, Row, Transaction};
use yunjian_aggregator_core::alarms::{Alarm, AlarmEvent, AlarmState};
use yunjian_aggregator_core::audit::{
    chain_hash, checkpoint_signature, AuditFilter, ChainedEntry, Checkpoint,
};
use yunjian_aggregator_core::hardware::SelRecord;
use yunjian_aggregator_core::identity::{ApiToken, Role, User};
use yunjian_aggregator_core::lifecycle::{Application, ApplicationWrite};
use yunjian_aggregator_core::reclaim::{Case, CommandRecord, LogEntry, ReclaimWrite};
use yunjian_aggregator_core::register::{
    Register, ServerType, Term, Unit, UnitRecord, VmAllocation,
};
use yunjian_aggregator_core::store::{
    role_from, role_str, severity_from, severity_str, AlarmStore, ApplicationStore, AuditEntry,
    AuditStore, DetectionRow, DetectionStore, EventRow, NodeRow, NodeStore, ReclaimStore,
    RegisterStore, Schema, SelRow, StorageError, UsageStore, UserStore, WriteBatch,
};
use yunjian_aggregator_core::time::Day;
use yunjian_aggregator_core::usage::{DailySummary, Exemption, UsageDayRow};
use yunjian_protocol::hardware::SelEntry;
use yunjian_ratelimit::now_ms;

/// Versioned migrations, the same versions as the SQLite backend's. Only append.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_nodes_events.sql")),
    (2, include_str!("../migrations/0002_alarms_audit.sql")),
    (3, include_str!("../migrations/0003_register.sql")),
    (4, include_str!("../migrations/0004_antivirus.sql")),
    (5, include_str!("../migrations/0005_gaps.sql")),
    (10, include_str!("../migrations/0010_hardware_sel.sql")),
    (20, include_str!("../migrations/0020_usage.sql")),
    (30, include_str!("../migrations/0030_reclaim.sql")),
    (
        35,
        include_str!("../migrations/0035_reclaim_detections.sql"),
    ),
    (40, include_str!("../migrations/0040_users.sql")),
    (41, include_str!("../migrations/0041_audit_chain.sql")),
    (50, include_str!("../migrations/0050_applications.sql")),
];

/// How long the check of a suspect connection may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The advisory lock migrations take (any constant the site does not use otherwise).
const MIGRATION_LOCK: i64 = 0x7975_6e6a_6961_6e01; // "yunjian" 1

/// A connection to a PostgreSQL database.
pub struct PostgresStorage {
    /// Always present; taken only by `Drop`.
    client: Option<Client>,
    /// To connect again after the server closed the connection (never printed).
    url: String,
    /// The last call failed in the database's client: check the connection before the next.
    suspect: bool,
    /// The URL without its password, for errors and logs.
    target: String,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for errors and logs: `postgres://yj:secret@db/yunjian` →
/// `postgres://yj:***@db/yunjian`; a `password=` parameter is masked too.
pub fn redact(url: &str) -> String {
    // the credentials end at the first '@', as the client's own URL parser reads them
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    let mut out = String::with_capacity(shown.len());
    let mut rest = shown.as_str();
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        out.push_str(head);
        out.push_str("***");
        rest = &tail[tail.find('&').unwrap_or(tail.len())..];
    }
    out.push_str(rest);
    out
}

/// A PostgreSQL failure on the database at `target`.
fn backend(target: &str, source: postgres::Error) -> StorageError {
    StorageError::Backend {
        backend: "postgres",
        target: target.to_string(),
        source: Box::new(source),
    }
}

fn corrupt(what: String, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        what,
        reason: reason.to_string(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(what: String, body: &str) -> Result<T, StorageError> {
    serde_json::from_str(body).map_err(|e| corrupt(what, e))
}

fn state_str(s: AlarmState) -> &'static str {
    match s {
        AlarmState::Active => "active",
        AlarmState::Acknowledged => "acknowledged",
        AlarmState::Cleared => "cleared",
    }
}

/// A limit as PostgreSQL takes it (`LIMIT` is a BIGINT).
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PostgresStorage {
    /// Connect to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`). The database must
    /// exist; [`Schema::migrate`] creates the tables.
    pub fn connect(url: &str) -> Result<Self, StorageError> {
        let target = redact(url);
        let client = Client::connect(url, NoTls).map_err(|e| backend(&target, e))?;
        Ok(PostgresStorage {
            client: Some(client),
            url: url.to_string(),
            suspect: false,
            target,
        })
    }

    /// Remember a failure of the database's client, so the next call checks the connection.
    fn note<T>(&mut self, r: &Result<T, StorageError>) {
        if matches!(r, Err(StorageError::Backend { .. })) {
            self.suspect = true;
        }
    }

    /// The connection, opened again first if the server closed it (a restart, a failover, an
    /// administrator's `pg_terminate_backend`): the call that found it broken failed, the next
    /// one reconnects (the storage thread retries a failed write).
    fn client(&mut self) -> Result<&mut Client, StorageError> {
        let suspect = std::mem::take(&mut self.suspect);
        let broken = match self.client.as_mut() {
            None => true,
            Some(c) => c.is_closed() || suspect && c.is_valid(CHECK_TIMEOUT).is_err(),
        };
        if broken {
            let fresh = Client::connect(&self.url, NoTls).map_err(|e| backend(&self.target, e))?;
            tracing::info!(target = %self.target, "reconnected to PostgreSQL");
            if let Some(old) = self.client.replace(fresh) {
                close_elsewhere(old, &self.target);
            }
        }
        Ok(self
            .client
            .as_mut()
            .expect("the connection was just opened"))
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StorageError> {
        let r = (|| -> Result<Vec<Row>, StorageError> {
            let target = self.target.clone();
            self.client()?
                .query(sql, params)
                .map_err(|e| backend(&target, e))
        })();
        self.note(&r);
        r
    }
}

/// Closing a connection blocks on the client's own runtime, which panics on a thread that
/// drives an async runtime; the handle may be dropped anywhere, so the client is closed on a
/// thread of its own.
impl Drop for PostgresStorage {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            close_elsewhere(client, &self.target);
        }
    }
}

/// Close a connection on a thread of its own (see the `Drop` impl).
fn close_elsewhere(client: Client, target: &str) {
    let closing = std::thread::Builder::new()
        .name("yj-pg-close".into())
        .spawn(move || drop(client));
    if let Err(e) = closing {
        tracing::warn!(target = %target, "cannot close the connection: {e}");
    }
}

impl Schema for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn migrate(&mut self) -> Result<u32, StorageError> {
        let r = (|| -> Result<u32, StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(err)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .map_err(err)?;
            let applied: std::collections::BTreeSet<i32> = tx
                .query("SELECT version FROM schema_migrations", &[])
                .map_err(err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let known = MIGRATIONS.iter().map(|(v, _)| *v).max().unwrap_or(0) as u32;
            if let Some(&found) = applied
                .iter()
                .find(|v| !MIGRATIONS.iter().any(|(k, _)| k == *v))
            {
                return Err(StorageError::SchemaTooNew {
                    found: found as u32,
                    known,
                });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
                tx.batch_execute(sql).map_err(err)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[version, &(now_ms() as i64)],
                )
                .map_err(err)?;
                tracing::info!(version, "storage schema migrated");
            }
            tx.commit().map_err(err)?;
            Ok(known)
        })();
        self.note(&r);
        r
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        let r = (|| -> Result<(), StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            write_nodes(&mut tx, &batch.nodes).map_err(err)?;
            write_events(&mut tx, &batch.events).map_err(err)?;
            write_alarms(&mut tx, &batch.alarms).map_err(err)?;
            write_audit(&mut tx, &batch.audit).map_err(err)?;
            write_register(&mut tx, &batch.register).map_err(err)?;
            write_sel(&mut tx, &batch.sel).map_err(err)?;
            write_usage(&mut tx, &batch.usage_days, &batch.exemptions).map_err(err)?;
            write_users(&mut tx, &batch.users, &batch.tokens).map_err(err)?;
            tx.commit().map_err(err)
        })();
        self.note(&r);
        r
    }
}

fn write_nodes(tx: &mut Transaction<'_>, nodes: &[NodeRow]) -> Result<(), postgres::Error> {
    if nodes.is_empty() {
        return Ok(());
    }
    // One statement for the whole batch (a round trip per row bounded ingest at a few
    // thousand reports a second). A node twice in one batch is folded first, exactly as two
    // upserts in a row would leave it: the newer counters, each frame from the newest row
    // that has one.
    let mut folded: Vec<NodeRow> = Vec::with_capacity(nodes.len());
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for n in nodes {
        match at.get(n.node.as_str()) {
            Some(&i) => folded[i].merge(n.clone()),
            None => {
                at.insert(&n.node, folded.len());
                folded.push(n.clone());
            }
        }
    }
    let col = |f: fn(&NodeRow) -> i64| folded.iter().map(f).collect::<Vec<i64>>();
    let frame = |f: fn(&NodeRow) -> Option<&[u8]>| folded.iter().map(f).collect::<Vec<_>>();
    tx.execute(
        "INSERT INTO nodes (node, role, last_seen_ms, last_report_ts_ms, last_seq, received,
            duplicates, missing, hello, inventory, report, guests, antivirus, antivirus_history,
            gaps)
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[],
            $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BYTEA[], $10::BYTEA[], $11::BYTEA[],
            $12::BYTEA[], $13::BYTEA[], $14::TEXT[], $15::BYTEA[])
         ON CONFLICT (node) DO UPDATE SET role = EXCLUDED.role,
            last_seen_ms = EXCLUDED.last_seen_ms,
            last_report_ts_ms = EXCLUDED.last_report_ts_ms,
            last_seq = EXCLUDED.last_seq, received = EXCLUDED.received,
            duplicates = EXCLUDED.duplicates, missing = EXCLUDED.missing,
            hello = COALESCE(EXCLUDED.hello, nodes.hello),
            inventory = COALESCE(EXCLUDED.inventory, nodes.inventory),
            report = COALESCE(EXCLUDED.report, nodes.report),
            guests = COALESCE(EXCLUDED.guests, nodes.guests),
            antivirus = COALESCE(EXCLUDED.antivirus, nodes.antivirus),
            antivirus_history = COALESCE(EXCLUDED.antivirus_history, nodes.antivirus_history),
            gaps = EXCLUDED.gaps",
        &[
            &folded.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            &folded.iter().map(|n| role_str(n.role)).collect::<Vec<_>>(),
            &col(|n| n.last_seen_ms as i64),
            &col(|n| n.last_report_ts_ms as i64),
            &col(|n| n.last_seq as i64),
            &col(|n| n.received as i64),
            &col(|n| n.duplicates as i64),
            &col(|n| n.missing as i64),
            &frame(|n| n.hello.as_deref()),
            &frame(|n| n.inventory.as_deref()),
            &frame(|n| n.report.as_deref()),
            &frame(|n| n.guests.as_deref()),
            &frame(|n| n.antivirus.as_deref()),
            &folded
                .iter()
                .map(|n| n.antivirus_history.as_deref())
                .collect::<Vec<_>>(),
            &frame(|n| n.gaps.as_deref()),
        ],
    )?;
    Ok(())
}

/// Agent events, in the batch's order (one statement).
fn write_events(tx: &mut Transaction<'_>, events: &[EventRow]) -> Result<(), postgres::Error> {
    if events.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO events (node, ts_ms, severity, code, message)
         SELECT node, ts_ms, severity, code, message
         FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])
            WITH ORDINALITY AS e(node, ts_ms, severity, code, message, n)
         ORDER BY n",
        &[
            &events.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(),
            &events.iter().map(|e| e.ts_ms as i64).collect::<Vec<_>>(),
            &events
                .iter()
                .map(|e| severity_str(e.severity))
                .collect::<Vec<_>>(),
            &events.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
            &events
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
        ],
    )?;
    Ok(())
}

/// The latest state of each alarm, the alarm itself as JSON.
fn write_alarms(tx: &mut Transaction<'_>, alarms: &[AlarmEvent]) -> Result<(), postgres::Error> {
    if alarms.is_empty() {
        return Ok(());
    }
    let st = tx.prepare(
        "INSERT INTO alarms (id, rule, subject, state, raised_ms, updated_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,
            updated_ms = EXCLUDED.updated_ms, body = EXCLUDED.body",
    )?;
    for ev in alarms {
        let a = ev.alarm();
        tx.execute(
            &st,
            &[
                &(a.id as i64),
                &a.key.rule,
                &a.key.subject,
                &state_str(a.state),
                &(a.raised_ms as i64),
                &(a.updated_ms as i64),
                &json(a),
            ],
        )?;
    }
    Ok(())
}

/// Key of the advisory lock that serialises appends to the audit chain (every connection
/// that writes audit entries takes it inside its transaction).
const AUDIT_CHAIN_LOCK: i64 = 0x7975_6e6a_6175_6469; // "yunjaudi"

/// The chain's head: the last entry's id and hash, or where the latest checkpoint left it.
fn audit_head(tx: &mut Transaction<'_>) -> Result<(u64, String), postgres::Error> {
    if let Some(r) = tx.query_opt("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &[])? {
        return Ok((r.get::<_, i64>(0) as u64, r.get(1)));
    }
    Ok(tx
        .query_opt(
            "SELECT first_kept_id, prev_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
            &[],
        )?
        .map_or((0, String::new()), |r| {
            ((r.get::<_, i64>(0) as u64).saturating_sub(1), r.get(1))
        }))
}

/// Append entries to the hash chain (see the SQLite backend), under the advisory lock so that
/// two connections never fork it.
fn write_audit(tx: &mut Transaction<'_>, audit: &[AuditEntry]) -> Result<(), postgres::Error> {
    if audit.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_CHAIN_LOCK])?;
    let (mut id, mut prev) = audit_head(tx)?;
    let st = tx.prepare(
        "INSERT INTO audit (id, ts_ms, actor, role, unit, source, action, subject, detail,
            prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )?;
    for a in audit {
        id += 1;
        let hash = chain_hash(&prev, id, a);
        tx.execute(
            &st,
            &[
                &(id as i64),
                &(a.ts_ms as i64),
                &a.actor,
                &a.role,
                &a.unit,
                &a.source,
                &a.action,
                &a.subject,
                &a.detail.to_string(),
                &prev,
                &hash,
            ],
        )?;
        prev = hash;
    }
    Ok(())
}

fn chained_of(r: &Row) -> ChainedEntry {
    ChainedEntry {
        id: r.get::<_, i64>(0) as u64,
        entry: AuditEntry {
            ts_ms: r.get::<_, i64>(1) as u64,
            actor: r.get(2),
            role: r.get(3),
            unit: r.get(4),
            source: r.get(5),
            action: r.get(6),
            subject: r.get(7),
            detail: serde_json::from_str(r.get(8)).unwrap_or(serde_json::Value::Null),
        },
        prev_hash: r.get(9),
        hash: r.get(10),
    }
}

const AUDIT_COLUMNS: &str =
    "id, ts_ms, actor, role, unit, source, action, subject, detail, prev_hash, hash";

/// Each unit as it now is: its row upserted, its VMs replaced in memory order.
fn write_register(tx: &mut Transaction<'_>, records: &[UnitRecord]) -> Result<(), postgres::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let unit = tx.prepare(
        "INSERT INTO register_units (name, quota, sanction) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET quota = EXCLUDED.quota, sanction = EXCLUDED.sanction",
    )?;
    let clear = tx.prepare("DELETE FROM register_vms WHERE unit = $1")?;
    let vm = tx.prepare(
        "INSERT INTO register_vms (unit, pos, zone, developer, system, subsystem, server_type,
            owner, email, phone, vcpus, mem_gb, sys_disk_gb, data_disk_gb, os, clustered,
            cluster_group, note, uuid, term)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18, $19, $20)",
    )?;
    for r in records {
        let u = &r.unit;
        let quota = u.quota.map(|q| serde_json::json!(q).to_string());
        let sanction = u
            .sanction
            .as_ref()
            .map(|s| serde_json::json!(s).to_string());
        tx.execute(&unit, &[&u.name, &quota, &sanction])?;
        tx.execute(&clear, &[&u.name])?;
        for (pos, v) in r.vms.iter().enumerate() {
            let term = (v.term != Term::default()).then(|| serde_json::json!(v.term).to_string());
            tx.execute(
                &vm,
                &[
                    &u.name,
                    &(pos as i64),
                    &v.zone,
                    &v.developer,
                    &v.system,
                    &v.subsystem,
                    &v.server_type.as_str(),
                    &v.owner,
                    &v.email,
                    &v.phone,
                    &i64::from(v.vcpus),
                    &i64::from(v.mem_gb),
                    &i64::from(v.sys_disk_gb),
                    &i64::from(v.data_disk_gb),
                    &v.os,
                    &v.clustered,
                    &v.cluster_group,
                    &v.note,
                    &v.uuid,
                    &term,
                ],
            )?;
        }
    }
    Ok(())
}

/// New SEL entries; one already stored (same node, record id and BMC time) is not stored again.
fn write_sel(tx: &mut Transaction<'_>, rows: &[SelRow]) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let st = tx.prepare(
        "INSERT INTO hardware_sel (node, record_id, ts_s, received_ms, sensor_type,
            sensor_number, sensor, event_type, asserted, event_offset, description)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT DO NOTHING",
    )?;
    for r in rows {
        let e = &r.record.entry;
        tx.execute(
            &st,
            &[
                &r.node,
                &i32::from(e.record_id),
                &i64::from(e.ts_s),
                &(r.record.received_ms as i64),
                &i16::from(e.sensor_type),
                &i16::from(e.sensor_number),
                &e.sensor,
                &i16::from(e.event_type),
                &e.asserted,
                &i16::from(e.offset),
                &e.description,
            ],
        )?;
    }
    Ok(())
}

/// Upsert closed days (a re-merged day replaces its summary) and exemptions.
fn write_usage(
    tx: &mut Transaction<'_>,
    days: &[UsageDayRow],
    exemptions: &[Exemption],
) -> Result<(), postgres::Error> {
    if !days.is_empty() {
        let vm_id = tx.prepare(
            "INSERT INTO usage_vms (vm) VALUES ($1)
             ON CONFLICT (vm) DO UPDATE SET vm = EXCLUDED.vm RETURNING id",
        )?;
        let day = tx.prepare(
            "INSERT INTO usage_days (vm_id, day, summary) VALUES ($1, $2, $3)
             ON CONFLICT (vm_id, day) DO UPDATE SET summary = EXCLUDED.summary",
        )?;
        let mut last: Option<(&str, i64)> = None;
        for r in days {
            let id = match last {
                Some((vm, id)) if vm == r.vm => id,
                _ => tx.query_one(&vm_id, &[&r.vm])?.get(0),
            };
            last = Some((r.vm.as_str(), id));
            tx.execute(&day, &[&id, &r.summary.day.0, &&r.summary.encode()[..]])?;
        }
    }
    if !exemptions.is_empty() {
        let st = tx.prepare(
            "INSERT INTO usage_exemptions (id, vm, body) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET vm = EXCLUDED.vm, body = EXCLUDED.body",
        )?;
        for e in exemptions {
            tx.execute(&st, &[&(e.id as i64), &e.vm, &json(e)])?;
        }
    }
    Ok(())
}

/// Upsert users and tokens (a token's secret and owner never change; only its revocation).
fn write_users(
    tx: &mut Transaction<'_>,
    users: &[User],
    tokens: &[ApiToken],
) -> Result<(), postgres::Error> {
    if !users.is_empty() {
        let st = tx.prepare(
            "INSERT INTO users (name, display_name, role, unit, password_hash, created_ms,
                password_changed_ms, disabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET display_name = EXCLUDED.display_name,
                role = EXCLUDED.role, unit = EXCLUDED.unit,
                password_hash = EXCLUDED.password_hash,
                password_changed_ms = EXCLUDED.password_changed_ms,
                disabled = EXCLUDED.disabled",
        )?;
        for u in users {
            tx.execute(
                &st,
                &[
                    &u.name,
                    &u.display_name,
                    &u.role.as_str(),
                    &u.unit,
                    &u.password_hash,
                    &(u.created_ms as i64),
                    &(u.password_changed_ms as i64),
                    &u.disabled,
                ],
            )?;
        }
    }
    if !tokens.is_empty() {
        let st = tx.prepare(
            "INSERT INTO api_tokens (id, user_name, label, secret_hash, created_ms, expires_ms,
                revoked_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET revoked_ms = EXCLUDED.revoked_ms",
        )?;
        for t in tokens {
            tx.execute(
                &st,
                &[
                    &t.id,
                    &t.user,
                    &t.label,
                    &t.secret_hash,
                    &(t.created_ms as i64),
                    &(t.expires_ms as i64),
                    &t.revoked_ms.map(|v| v as i64),
                ],
            )?;
        }
    }
    Ok(())
}

impl NodeStore for PostgresStorage {
    fn load_nodes(&mut self) -> Result<Vec<NodeRow>, StorageError> {
        let rows = self.query(
            "SELECT node, role, last_seen_ms, last_report_ts_ms, last_seq, received, duplicates,
                    missing, hello, inventory, report, guests, antivirus, antivirus_history, gaps
             FROM nodes",
            &[],
        )?;
        let frame = |r: &Row, i: usize| r.get::<_, Option<Vec<u8>>>(i).map(Bytes::from);
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                node: r.get(0),
                role: role_from(r.get(1)),
                last_seen_ms: r.get::<_, i64>(2) as u64,
                last_report_ts_ms: r.get::<_, i64>(3) as u64,
                last_seq: r.get::<_, i64>(4) as u64,
                received: r.get::<_, i64>(5) as u64,
                duplicates: r.get::<_, i64>(6) as u64,
                missing: r.get::<_, i64>(7) as u64,
                hello: frame(r, 8),
                inventory: frame(r, 9),
                report: frame(r, 10),
                guests: frame(r, 11),
                antivirus: frame(r, 12),
                antivirus_history: r.get(13),
                gaps: frame(r, 14),
            })
            .collect())
    }

    fn events(&mut self, node: Option<&str>, n: usize) -> Result<Vec<EventRow>, StorageError> {
        let rows = self.query(
            "SELECT node, ts_ms, severity, code, message FROM events
             WHERE ($1::TEXT IS NULL OR node = $1) ORDER BY ts_ms DESC, id DESC LIMIT $2",
            &[&node, &limit(n)],
        )?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                node: r.get(0),
                ts_ms: r.get::<_, i64>(1) as u64,
                severity: severity_from(r.get(2)),
                code: r.get(3),
                message: r.get(4),
            })
            .collect())
    }

    fn load_sel(&mut self, per_node: usize) -> Result<Vec<SelRow>, StorageError> {
        let rows = self.query(
            "SELECT node, record_id, ts_s, received_ms, sensor_type, sensor_number, sensor,
                    event_type, asserted, event_offset, description
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY node
                       ORDER BY received_ms DESC, ts_s DESC, record_id DESC) AS newest
                   FROM hardware_sel) s
             WHERE newest <= $1
             ORDER BY node, received_ms, ts_s, record_id",
            &[&limit(per_node)],
        )?;
        rows.iter()
            .map(|r| {
                let node: String = r.get(0);
                let small = |i: usize| -> Result<u8, StorageError> {
                    u8::try_from(r.get::<_, i16>(i))
                        .map_err(|e| corrupt(format!("SEL entry of {node}"), e))
                };
                Ok(SelRow {
                    record: SelRecord {
                        received_ms: r.get::<_, i64>(3) as u64,
                        entry: SelEntry {
                            record_id: u16::try_from(r.get::<_, i32>(1))
                                .map_err(|e| corrupt(format!("SEL entry of {node}"), e))?,
                            ts_s: u32::try_from(r.get::<_, i64>(2))
                                .map_err(|e| corrupt(format!("SEL entry of {node}"), e))?,
                            sensor_type: small(4)?,
                            sensor_number: small(5)?,
                            sensor: r.get(6),
                            event_type: small(7)?,
                            asserted: r.get(8),
                            offset: small(9)?,
                            description: r.get(10),
                        },
                    },
                    node,
                })
            })
            .collect()
    }
}

impl AlarmStore for PostgresStorage {
    fn open_alarms(&mut self) -> Result<Vec<Alarm>, StorageError> {
        let rows = self.query(
            "SELECT id, body FROM alarms WHERE state <> 'cleared' ORDER BY id",
            &[],
        )?;
        rows.iter()
            .map(|r| decode(format!("alarm {}", r.get::<_, i64>(0)), r.get(1)))
            .collect()
    }
}

impl AuditStore for PostgresStorage {
    fn audit(&mut self, subject: Option<&str>, n: usize) -> Result<Vec<AuditEntry>, StorageError> {
        let rows = self.query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit
                 WHERE ($1::TEXT IS NULL OR subject = $1) ORDER BY ts_ms DESC, id DESC LIMIT $2"
            ),
            &[&subject, &limit(n)],
        )?;
        Ok(rows.iter().map(|r| chained_of(r).entry).collect())
    }

    fn audit_search(&mut self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
        let rows = self.query(
            &format!(
                "SELECT {AUDIT_COLUMNS} FROM audit
                 WHERE ($1::TEXT IS NULL OR actor = $1)
                   AND ($2::TEXT IS NULL OR substr(action, 1, length($2::TEXT)) = $2)
                   AND ($3::TEXT IS NULL OR substr(subject, 1, length($3::TEXT)) = $3)
                   AND ($4::BIGINT IS NULL OR ts_ms >= $4) AND ($5::BIGINT IS NULL OR ts_ms < $5)
                 ORDER BY id DESC LIMIT $6"
            ),
            &[
                &f.actor,
                &f.action,
                &f.subject,
                &f.from_ms.map(|v| v as i64),
                &f.to_ms.map(|v| v as i64),
                &limit(f.limit),
            ],
        )?;
        Ok(rows.iter().map(|r| chained_of(r).entry).collect())
    }

    fn expire_audit(&mut self, before_ms: u64, key: &[u8]) -> Result<usize, StorageError> {
        let r = (|| -> Result<usize, StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_CHAIN_LOCK])
                .map_err(err)?;
            let first_kept: Option<i64> = tx
                .query_one(
                    "SELECT MIN(id) FROM audit WHERE ts_ms >= $1",
                    &[&(before_ms as i64)],
                )
                .map_err(err)?
                .get(0);
            let (head_id, head_hash) = audit_head(&mut tx).map_err(err)?;
            let first_kept = first_kept.map_or(head_id + 1, |v| v as u64);
            let removed: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM audit WHERE id < $1",
                    &[&(first_kept as i64)],
                )
                .map_err(err)?
                .get(0);
            if removed == 0 {
                return Ok(0);
            }
            let prev_hash: String = if first_kept > head_id {
                head_hash
            } else {
                tx.query_one(
                    "SELECT prev_hash FROM audit WHERE id = $1",
                    &[&(first_kept as i64)],
                )
                .map_err(err)?
                .get(0)
            };
            tx.execute(
                "INSERT INTO audit_checkpoints (first_kept_id, prev_hash, ts_ms, signature)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &(first_kept as i64),
                    &prev_hash,
                    &(now_ms() as i64),
                    &checkpoint_signature(key, first_kept, &prev_hash),
                ],
            )
            .map_err(err)?;
            let n = tx
                .execute("DELETE FROM audit WHERE id < $1", &[&(first_kept as i64)])
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n as usize)
        })();
        self.note(&r);
        r
    }

    fn audit_chain(&mut self, after_id: u64, n: usize) -> Result<Vec<ChainedEntry>, StorageError> {
        let rows = self.query(
            &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1 ORDER BY id LIMIT $2"),
            &[&(after_id as i64), &limit(n)],
        )?;
        Ok(rows.iter().map(chained_of).collect())
    }

    fn audit_checkpoint(&mut self) -> Result<Option<Checkpoint>, StorageError> {
        let rows = self.query(
            "SELECT first_kept_id, prev_hash, ts_ms, signature FROM audit_checkpoints
             ORDER BY id DESC LIMIT 1",
            &[],
        )?;
        Ok(rows.first().map(|r| Checkpoint {
            first_kept_id: r.get::<_, i64>(0) as u64,
            prev_hash: r.get(1),
            ts_ms: r.get::<_, i64>(2) as u64,
            signature: r.get(3),
        }))
    }
}

impl RegisterStore for PostgresStorage {
    fn load_register(&mut self) -> Result<Register, StorageError> {
        let mut reg = Register::default();
        for r in self.query(
            "SELECT name, quota, sanction FROM register_units ORDER BY name",
            &[],
        )? {
            let name: String = r.get(0);
            let what = || format!("register unit {name}");
            let quota = r
                .get::<_, Option<&str>>(1)
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(what(), format!("quota: {e}")))?;
            let sanction = r
                .get::<_, Option<&str>>(2)
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(what(), format!("sanction: {e}")))?;
            reg.units.insert(
                name.clone(),
                Unit {
                    name,
                    quota,
                    sanction,
                },
            );
        }
        for r in self.query(
            "SELECT unit, zone, developer, system, subsystem, server_type, owner, email, phone,
                vcpus, mem_gb, sys_disk_gb, data_disk_gb, os, clustered, cluster_group, note, uuid,
                term
             FROM register_vms ORDER BY unit, pos",
            &[],
        )? {
            let unit: String = r.get(0);
            let bad = |what: &str| corrupt(format!("register unit {unit}"), what);
            let size = |i: usize| -> Result<u32, StorageError> {
                u32::try_from(r.get::<_, i64>(i)).map_err(|_| bad("a size out of range"))
            };
            let server_type: &str = r.get(5);
            reg.vms.push(VmAllocation {
                zone: r.get(1),
                developer: r.get(2),
                system: r.get(3),
                subsystem: r.get(4),
                server_type: ServerType::parse(server_type)
                    .ok_or_else(|| bad(&format!("server type {server_type:?}")))?,
                owner: r.get(6),
                email: r.get(7),
                phone: r.get(8),
                vcpus: size(9)?,
                mem_gb: size(10)?,
                sys_disk_gb: size(11)?,
                data_disk_gb: size(12)?,
                os: r.get(13),
                clustered: r.get(14),
                cluster_group: r.get(15),
                note: r.get(16),
                uuid: r.get(17),
                term: r
                    .get::<_, Option<&str>>(18)
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| bad(&format!("allocation term: {e}")))?
                    .unwrap_or_default(),
                unit,
            });
        }
        Ok(reg)
    }
}

impl UsageStore for PostgresStorage {
    fn load_usage(&mut self, since_day: Day) -> Result<Vec<UsageDayRow>, StorageError> {
        let rows = self.query(
            "SELECT v.vm, d.day, d.summary FROM usage_days d JOIN usage_vms v ON v.id = d.vm_id
             WHERE d.day >= $1 ORDER BY d.vm_id, d.day",
            &[&since_day.0],
        )?;
        rows.iter()
            .map(|r| {
                let vm: String = r.get(0);
                let day: i32 = r.get(1);
                let blob: &[u8] = r.get(2);
                let summary = DailySummary::decode(Day(day), blob).ok_or_else(|| {
                    corrupt(
                        format!("usage of {vm}"),
                        format!("usage day {day}: summary blob of {} bytes", blob.len()),
                    )
                })?;
                Ok(UsageDayRow { vm, summary })
            })
            .collect()
    }

    fn expire_usage(&mut self, before_day: Day) -> Result<usize, StorageError> {
        let r = (|| -> Result<usize, StorageError> {
            let target = self.target.clone();
            self.client()?
                .execute("DELETE FROM usage_days WHERE day < $1", &[&before_day.0])
                .map(|n| n as usize)
                .map_err(|e| backend(&target, e))
        })();
        self.note(&r);
        r
    }

    fn load_exemptions(&mut self) -> Result<Vec<Exemption>, StorageError> {
        let rows = self.query("SELECT id, body FROM usage_exemptions ORDER BY id", &[])?;
        rows.iter()
            .map(|r| decode(format!("exemption {}", r.get::<_, i64>(0)), r.get(1)))
            .collect()
    }
}

impl UserStore for PostgresStorage {
    fn load_users(&mut self) -> Result<Vec<User>, StorageError> {
        let rows = self.query(
            "SELECT name, display_name, role, unit, password_hash, created_ms,
                password_changed_ms, disabled FROM users ORDER BY name",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                let role: String = r.get(2);
                let role = Role::of_person(&role).ok_or_else(|| {
                    corrupt(format!("user {name}"), format!("unknown role {role:?}"))
                })?;
                Ok(User {
                    name,
                    display_name: r.get(1),
                    role,
                    unit: r.get(3),
                    password_hash: r.get(4),
                    created_ms: r.get::<_, i64>(5) as u64,
                    password_changed_ms: r.get::<_, i64>(6) as u64,
                    disabled: r.get(7),
                })
            })
            .collect()
    }

    fn load_tokens(&mut self) -> Result<Vec<ApiToken>, StorageError> {
        let rows = self.query(
            "SELECT id, user_name, label, secret_hash, created_ms, expires_ms, revoked_ms
             FROM api_tokens ORDER BY id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| ApiToken {
                id: r.get(0),
                user: r.get(1),
                label: r.get(2),
                secret_hash: r.get(3),
                created_ms: r.get::<_, i64>(4) as u64,
                expires_ms: r.get::<_, i64>(5) as u64,
                revoked_ms: r.get::<_, Option<i64>>(6).map(|v| v as u64),
            })
            .collect())
    }
}

impl ReclaimStore for PostgresStorage {
    fn reclaim_write(&mut self, w: &ReclaimWrite) -> Result<(), StorageError> {
        let r = (|| -> Result<(), StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            if !w.cases.is_empty() {
                let st = tx
                .prepare(
                    "INSERT INTO reclaim_cases (id, uuid, unit, state, opened_ms, updated_ms, body)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,
                        updated_ms = EXCLUDED.updated_ms, body = EXCLUDED.body",
                )
                .map_err(err)?;
                for c in &w.cases {
                    tx.execute(
                        &st,
                        &[
                            &(c.id as i64),
                            &c.uuid,
                            &c.unit,
                            &c.state.as_str(),
                            &(c.opened_ms as i64),
                            &(c.updated_ms as i64),
                            &json(c),
                        ],
                    )
                    .map_err(err)?;
                }
            }
            if !w.log.is_empty() {
                let st = tx
                    .prepare("INSERT INTO reclaim_log (case_id, ts_ms, body) VALUES ($1, $2, $3)")
                    .map_err(err)?;
                for l in &w.log {
                    tx.execute(&st, &[&(l.case_id as i64), &(l.ts_ms as i64), &json(l)])
                        .map_err(err)?;
                }
            }
            if !w.commands.is_empty() {
                let st = tx
                    .prepare(
                        "INSERT INTO commands (id, node, case_id, status, created_ms, body)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body",
                    )
                    .map_err(err)?;
                for c in &w.commands {
                    tx.execute(
                        &st,
                        &[
                            &c.id,
                            &c.node,
                            &c.case_id.map(|i| i as i64),
                            &c.status.as_str(),
                            &(c.created_ms as i64),
                            &json(c),
                        ],
                    )
                    .map_err(err)?;
                }
            }
            write_audit(&mut tx, &w.audit).map_err(err)?;
            write_register(&mut tx, &w.register).map_err(err)?;
            tx.commit().map_err(err)
        })();
        self.note(&r);
        r
    }

    fn reclaim_cases(&mut self) -> Result<Vec<Case>, StorageError> {
        let rows = self.query("SELECT id, body FROM reclaim_cases ORDER BY id", &[])?;
        rows.iter()
            .map(|r| decode(format!("reclaim case {}", r.get::<_, i64>(0)), r.get(1)))
            .collect()
    }

    fn reclaim_log(&mut self, case_id: u64) -> Result<Vec<LogEntry>, StorageError> {
        let rows = self.query(
            "SELECT id, body FROM reclaim_log WHERE case_id = $1 ORDER BY id",
            &[&(case_id as i64)],
        )?;
        rows.iter()
            .map(|r| {
                decode(
                    format!("reclaim log entry {}", r.get::<_, i64>(0)),
                    r.get(1),
                )
            })
            .collect()
    }

    fn commands(&mut self, outstanding_only: bool) -> Result<Vec<CommandRecord>, StorageError> {
        let rows = self.query(
            "SELECT id, body FROM commands WHERE (NOT $1 OR status = 'outstanding')
             ORDER BY created_ms, id",
            &[&outstanding_only],
        )?;
        rows.iter()
            .map(|r| decode(format!("command {}", r.get::<_, &str>(0)), r.get(1)))
            .collect()
    }
}

impl ApplicationStore for PostgresStorage {
    fn application_write(&mut self, w: &ApplicationWrite) -> Result<(), StorageError> {
        let r = (|| -> Result<(), StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            if !w.applications.is_empty() {
                let st = tx
                    .prepare(
                        "INSERT INTO applications (id, unit, kind, state, submitted_ms, updated_ms,
                            body)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state,
                            submitted_ms = EXCLUDED.submitted_ms,
                            updated_ms = EXCLUDED.updated_ms, body = EXCLUDED.body",
                    )
                    .map_err(err)?;
                for a in &w.applications {
                    tx.execute(
                        &st,
                        &[
                            &(a.id as i64),
                            &a.unit,
                            &a.kind.as_str(),
                            &a.state.as_str(),
                            &(a.submitted_ms as i64),
                            &(a.updated_ms as i64),
                            &json(a),
                        ],
                    )
                    .map_err(err)?;
                }
            }
            if !w.log.is_empty() {
                let st = tx
                    .prepare(
                        "INSERT INTO application_log (application, ts_ms, body)
                         VALUES ($1, $2, $3)",
                    )
                    .map_err(err)?;
                for l in &w.log {
                    tx.execute(&st, &[&(l.application as i64), &(l.ts_ms as i64), &json(l)])
                        .map_err(err)?;
                }
            }
            if !w.files.is_empty() {
                let st = tx
                    .prepare(
                        "INSERT INTO application_files (application, id, name, bytes)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .map_err(err)?;
                for f in &w.files {
                    tx.execute(
                        &st,
                        &[
                            &(f.application as i64),
                            &(f.id as i64),
                            &f.name,
                            &f.bytes.as_ref(),
                        ],
                    )
                    .map_err(err)?;
                }
            }
            write_register(&mut tx, &w.register).map_err(err)?;
            write_audit(&mut tx, &w.audit).map_err(err)?;
            tx.commit().map_err(err)
        })();
        self.note(&r);
        r
    }

    fn applications(&mut self) -> Result<Vec<Application>, StorageError> {
        let rows = self.query("SELECT id, body FROM applications ORDER BY id", &[])?;
        rows.iter()
            .map(|r| decode(format!("application {}", r.get::<_, i64>(0)), r.get(1)))
            .collect()
    }

    fn application_log(
        &mut self,
        application: u64,
    ) -> Result<Vec<yunjian_aggregator_core::lifecycle::LogEntry>, StorageError> {
        let rows = self.query(
            "SELECT id, body FROM application_log WHERE application = $1 ORDER BY id",
            &[&(application as i64)],
        )?;
        rows.iter()
            .map(|r| {
                decode(
                    format!("application log entry {}", r.get::<_, i64>(0)),
                    r.get(1),
                )
            })
            .collect()
    }

    fn application_file(
        &mut self,
        application: u64,
        id: u64,
    ) -> Result<Option<(String, Vec<u8>)>, StorageError> {
        let rows = self.query(
            "SELECT name, bytes FROM application_files WHERE application = $1 AND id = $2",
            &[&(application as i64), &(id as i64)],
        )?;
        Ok(rows.first().map(|r| (r.get(0), r.get::<_, Vec<u8>>(1))))
    }
}

impl DetectionStore for PostgresStorage {
    fn store_detections(&mut self, found: &[DetectionRow]) -> Result<(), StorageError> {
        let r = (|| -> Result<(), StorageError> {
            let target = self.target.clone();
            let err = |e| backend(&target, e);
            let mut tx = self.client()?.transaction().map_err(err)?;
            if !found.is_empty() {
                let st = tx
                    .prepare(
                        "INSERT INTO reclaim_detections (uuid, fed_ms, body) VALUES ($1, $2, $3)
                         ON CONFLICT (uuid) DO UPDATE SET fed_ms = EXCLUDED.fed_ms,
                            body = EXCLUDED.body",
                    )
                    .map_err(err)?;
                for d in found {
                    tx.execute(
                        &st,
                        &[&d.detection.uuid, &(d.fed_ms as i64), &json(&d.detection)],
                    )
                    .map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })();
        self.note(&r);
        r
    }

    fn load_detections(&mut self) -> Result<Vec<DetectionRow>, StorageError> {
        let rows = self.query(
            "SELECT uuid, fed_ms, body FROM reclaim_detections ORDER BY uuid",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(DetectionRow {
                    fed_ms: r.get::<_, i64>(1) as u64,
                    detection: decode(
                        format!("reclaim detection {}", r.get::<_, &str>(0)),
                        r.get(2),
                    )?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs_or_errors() {
        assert_eq!(
            redact("postgres://yj:s3cret@db.example:5432/yunjian"),
            "postgres://yj:***@db.example:5432/yunjian"
        );
        assert_eq!(
            redact("postgres://yj@db/yunjian"),
            "postgres://yj@db/yunjian"
        );
        assert_eq!(
            redact("postgresql://yj:a/b@db/yunjian?application_name=yj@a"),
            "postgresql://yj:***@db/yunjian?application_name=yj@a"
        );
        assert_eq!(
            redact("postgres://db/yunjian?user=yj&password=s3cret&sslmode=disable"),
            "postgres://db/yunjian?user=yj&password=***&sslmode=disable"
        );
        // an unreachable server: the error names the server, not the password
        let e = PostgresStorage::connect("postgres://yj:s3cret@127.0.0.1:1/yunjian").unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("postgres database postgres://yj:***@127.0.0.1:1/yunjian"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !format!("{e:?}").contains("s3cret"),
            "{e:?}"
        );
    }
}
