//! SQLite: the BMCs' System Event Log entries, one row per entry, so the SEL view survives a
//! restart. An entry is identified by node, record id and BMC timestamp (a BMC reuses record
//! ids after its SEL is cleared): a replayed sweep inserts nothing twice.

use rusqlite::{params, Connection, Transaction};
use yunjian_aggregator_core::hardware::SelRecord;
use yunjian_aggregator_core::store::SelRow;
use yunjian_protocol::hardware::SelEntry;

/// Migration 10.
pub const MIGRATION_10: &str = "CREATE TABLE hardware_sel (
        node TEXT NOT NULL,
        record_id INTEGER NOT NULL,
        ts_s INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        sensor_type INTEGER NOT NULL,
        sensor_number INTEGER NOT NULL,
        sensor TEXT,
        event_type INTEGER NOT NULL,
        asserted INTEGER NOT NULL,
        event_offset INTEGER NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (node, record_id, ts_s)
    );
    CREATE INDEX hardware_sel_node_received ON hardware_sel(node, received_ms);";

pub fn write(tx: &Transaction<'_>, rows: &[SelRow]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut st = tx.prepare_cached(
        "INSERT OR IGNORE INTO hardware_sel (node, record_id, ts_s, received_ms, sensor_type,
            sensor_number, sensor, event_type, asserted, event_offset, description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for r in rows {
        let e = &r.record.entry;
        st.execute(params![
            r.node,
            e.record_id,
            e.ts_s,
            r.record.received_ms as i64,
            e.sensor_type,
            e.sensor_number,
            e.sensor,
            e.event_type,
            e.asserted,
            e.offset,
            e.description,
        ])?;
    }
    Ok(())
}

/// The newest `per_node` entries of every node, per node oldest first.
pub fn load(conn: &Connection, per_node: usize) -> rusqlite::Result<Vec<SelRow>> {
    let mut st = conn.prepare(
        "SELECT node, record_id, ts_s, received_ms, sensor_type, sensor_number, sensor,
                event_type, asserted, event_offset, description
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY node
                   ORDER BY received_ms DESC, ts_s DESC, record_id DESC) AS newest
               FROM hardware_sel)
         WHERE newest <= ?1
         ORDER BY node, received_ms, ts_s, record_id",
    )?;
    let rows = st.query_map(params![per_node as i64], |r| {
        Ok(SelRow {
            node: r.get(0)?,
            record: SelRecord {
                received_ms: r.get::<_, i64>(3)? as u64,
                entry: SelEntry {
                    record_id: r.get(1)?,
                    ts_s: r.get(2)?,
                    sensor_type: r.get(4)?,
                    sensor_number: r.get(5)?,
                    sensor: r.get(6)?,
                    event_type: r.get(7)?,
                    asserted: r.get(8)?,
                    offset: r.get(9)?,
                    description: r.get(10)?,
                },
            },
        })
    })?;
    rows.collect()
}
