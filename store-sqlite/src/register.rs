//! The allocation register in SQLite (schema version 3): one row per unit (quota and sanction
//! as JSON) and one row per VM with the 附件3 columns. A change stores the whole unit: its row
//! is upserted and its VMs replaced, in the order they are kept in memory.

use rusqlite::{params, Connection, Transaction};
use yunjian_aggregator_core::register::{
    Register, ServerType, Term, Unit, UnitRecord, VmAllocation,
};
use yunjian_aggregator_core::store::StorageError;

pub(crate) const MIGRATION: &str = "CREATE TABLE register_units (
        name TEXT PRIMARY KEY,
        quota TEXT,
        sanction TEXT
    );
    CREATE TABLE register_vms (
        unit TEXT NOT NULL,
        pos INTEGER NOT NULL,
        zone TEXT NOT NULL,
        developer TEXT NOT NULL,
        system TEXT NOT NULL,
        subsystem TEXT NOT NULL,
        server_type TEXT NOT NULL,
        owner TEXT NOT NULL,
        email TEXT NOT NULL,
        phone TEXT NOT NULL,
        vcpus INTEGER NOT NULL,
        mem_gb INTEGER NOT NULL,
        sys_disk_gb INTEGER NOT NULL,
        data_disk_gb INTEGER NOT NULL,
        os TEXT NOT NULL,
        clustered INTEGER NOT NULL,
        cluster_group TEXT NOT NULL,
        note TEXT NOT NULL,
        uuid TEXT,
        PRIMARY KEY (unit, pos)
    );";

/// Store each unit as it now is, in order (a later record of the same unit wins).
pub(crate) fn write(tx: &Transaction<'_>, records: &[UnitRecord]) -> rusqlite::Result<()> {
    let mut unit = tx.prepare_cached(
        "INSERT INTO register_units (name, quota, sanction) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET quota = excluded.quota, sanction = excluded.sanction",
    )?;
    let mut clear = tx.prepare_cached("DELETE FROM register_vms WHERE unit = ?1")?;
    let mut vm = tx.prepare_cached(
        "INSERT INTO register_vms (unit, pos, zone, developer, system, subsystem, server_type,
            owner, email, phone, vcpus, mem_gb, sys_disk_gb, data_disk_gb, os, clustered,
            cluster_group, note, uuid, term)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20)",
    )?;
    for r in records {
        let u = &r.unit;
        unit.execute(params![
            u.name,
            u.quota.map(|q| serde_json::json!(q).to_string()),
            u.sanction
                .as_ref()
                .map(|s| serde_json::json!(s).to_string()),
        ])?;
        clear.execute(params![u.name])?;
        for (pos, v) in r.vms.iter().enumerate() {
            vm.execute(params![
                u.name,
                pos as i64,
                v.zone,
                v.developer,
                v.system,
                v.subsystem,
                v.server_type.as_str(),
                v.owner,
                v.email,
                v.phone,
                v.vcpus,
                v.mem_gb,
                v.sys_disk_gb,
                v.data_disk_gb,
                v.os,
                v.clustered,
                v.cluster_group,
                v.note,
                v.uuid,
                (v.term != Term::default()).then(|| serde_json::json!(v.term).to_string()),
            ])?;
        }
    }
    Ok(())
}

/// The stored units and VMs (pools are configuration, not stored).
pub(crate) fn load(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Register, StorageError> {
    let corrupt = |what: String, reason: String| StorageError::Corrupt { what, reason };
    let mut reg = Register::default();
    let mut st = conn
        .prepare("SELECT name, quota, sanction FROM register_units ORDER BY name")
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (name, quota, sanction) = row.map_err(err)?;
        let what = || format!("register unit {name}");
        let quota = quota
            .map(|q| serde_json::from_str(&q))
            .transpose()
            .map_err(|e| corrupt(what(), format!("quota: {e}")))?;
        let sanction = sanction
            .map(|s| serde_json::from_str(&s))
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
    let mut st = conn
        .prepare(
            "SELECT unit, zone, developer, system, subsystem, server_type, owner, email, phone,
                vcpus, mem_gb, sys_disk_gb, data_disk_gb, os, clustered, cluster_group, note, uuid,
                term
             FROM register_vms ORDER BY unit, pos",
        )
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            let server_type: String = r.get(5)?;
            let term: Option<String> = r.get(18)?;
            Ok((
                server_type,
                term,
                VmAllocation {
                    unit: r.get(0)?,
                    zone: r.get(1)?,
                    developer: r.get(2)?,
                    system: r.get(3)?,
                    subsystem: r.get(4)?,
                    server_type: ServerType::Oth,
                    owner: r.get(6)?,
                    email: r.get(7)?,
                    phone: r.get(8)?,
                    vcpus: r.get(9)?,
                    mem_gb: r.get(10)?,
                    sys_disk_gb: r.get(11)?,
                    data_disk_gb: r.get(12)?,
                    os: r.get(13)?,
                    clustered: r.get(14)?,
                    cluster_group: r.get(15)?,
                    note: r.get(16)?,
                    uuid: r.get(17)?,
                    term: Term::default(),
                },
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (server_type, term, mut vm) = row.map_err(err)?;
        if let Some(t) = term {
            vm.term = serde_json::from_str(&t).map_err(|e| {
                corrupt(
                    format!("register unit {}", vm.unit),
                    format!("allocation term: {e}"),
                )
            })?;
        }
        vm.server_type = ServerType::parse(&server_type).ok_or_else(|| {
            corrupt(
                format!("register unit {}", vm.unit),
                format!("server type {server_type:?}"),
            )
        })?;
        reg.vms.push(vm);
    }
    Ok(reg)
}
