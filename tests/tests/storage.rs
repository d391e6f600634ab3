//! The storage scenario, written once against the ports of `yunjian_aggregator_core::store` and
//! run on every backend (SQLite, and PostgreSQL on a server the test starts): what one handle writes, a reopened handle reads back the same; two
//! handles writing at once lose nothing; a database from a newer build is refused.

use std::collections::BTreeMap;
use yunjian_aggregator_core::policy::Profile;
use yunjian_aggregator_core::reclaim::calendar::Calendar;
use yunjian_aggregator_core::reclaim::case::Rules;
use yunjian_aggregator_core::reclaim::{Case, Kind, ReclaimWrite};
use yunjian_aggregator_core::register::test_support::vm;
use yunjian_aggregator_core::register::{Unit, UnitRecord};
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::{AuditEntry, EventRow, WriteBatch};
use yunjian_protocol::Severity;

const T0: u64 = 1_790_000_000_000;

fn audit(i: u64, writer: &str) -> AuditEntry {
    AuditEntry {
        ts_ms: T0 + i,
        actor: format!("ops:{writer}"),
        action: "register.change".into(),
        subject: format!("unit:{writer}"),
        detail: serde_json::json!({ "n": i }),
    }
}

fn event(node: &str, i: u64) -> EventRow {
    EventRow {
        node: node.into(),
        ts_ms: T0 + i,
        severity: Severity::Warning,
        code: "disk_full".into(),
        message: format!("第 {i} 次"),
    }
}

/// The whole story on one backend; `open` gives a new handle on the same database.
fn story(open: &(dyn Fn() -> Box<dyn Storage> + Sync)) {
    let mut s = open();
    s.migrate().unwrap();
    s.migrate().unwrap(); // idempotent

    // the register: a unit's VMs in order, a later record of the unit replaces them
    let unit = |vms| UnitRecord {
        unit: Unit {
            name: "市财政局".into(),
            quota: None,
            sanction: None,
        },
        vms,
    };
    s.write(&WriteBatch {
        register: vec![unit(vec![
            vm("市财政局", "aa-1", 4),
            vm("市财政局", "bb-2", 8),
        ])],
        audit: vec![audit(1, "a")],
        events: (0..5).map(|i| event("h1", i)).collect(),
        ..WriteBatch::default()
    })
    .unwrap();
    s.write(&WriteBatch {
        register: vec![unit(vec![vm("市财政局", "bb-2", 8)])],
        events: vec![event("h2", 9)],
        ..WriteBatch::default()
    })
    .unwrap();

    // a reclaim case with its first timeline entry
    let profile = Profile::default();
    let calendar = Calendar::builtin();
    let rules = Rules {
        policy: &profile.reclaim,
        calendar: &calendar,
    };
    let (case, log) = Case::open(
        3,
        "BB-2",
        "cz-app-02",
        "市财政局",
        "预算系统",
        Kind::Idle,
        serde_json::json!({ "cpu_p95": 1.5 }),
        &rules,
        T0,
    );
    s.reclaim_write(&ReclaimWrite {
        cases: vec![case.clone()],
        log: vec![log.clone()],
        ..ReclaimWrite::default()
    })
    .unwrap();
    drop(s);

    // reopened: everything as written
    let mut s = open();
    s.migrate().unwrap();
    let reg = s.load_register().unwrap();
    assert_eq!(reg.vms.len(), 1, "the later record replaced the unit's VMs");
    assert_eq!(reg.vms[0].uuid.as_deref(), Some("bb-2"));
    let newest = s.events(None, 2).unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|e| (e.node.as_str(), e.ts_ms))
            .collect::<Vec<_>>(),
        [("h2", T0 + 9), ("h1", T0 + 4)],
        "newest first, limited"
    );
    assert_eq!(s.events(Some("h1"), 100).unwrap().len(), 5);
    assert_eq!(s.audit(Some("unit:a"), 10).unwrap(), vec![audit(1, "a")]);
    assert_eq!(s.reclaim_cases().unwrap(), vec![case]);
    assert_eq!(s.reclaim_log(3).unwrap(), vec![log]);
    assert!(s.open_alarms().unwrap().is_empty());
    drop(s);

    // two writers at once, each with its own handle: every entry of both is there
    const EACH: u64 = 200;
    std::thread::scope(|scope| {
        for writer in ["w1", "w2"] {
            scope.spawn(move || {
                let mut s = open();
                for i in 0..EACH {
                    s.write(&WriteBatch {
                        audit: vec![audit(100 + i, writer)],
                        events: vec![event(writer, 100 + i)],
                        ..WriteBatch::default()
                    })
                    .unwrap();
                }
            });
        }
    });
    let mut s = open();
    let mut per_writer: BTreeMap<String, usize> = BTreeMap::new();
    for a in s.audit(None, 10_000).unwrap() {
        *per_writer.entry(a.actor).or_default() += 1;
    }
    assert_eq!(per_writer["ops:w1"], EACH as usize);
    assert_eq!(per_writer["ops:w2"], EACH as usize);
    assert_eq!(s.events(Some("w2"), 10_000).unwrap().len(), EACH as usize);
    // retention removes only what is older than asked
    assert_eq!(s.expire_audit(T0 + 100).unwrap(), 1);
    assert_eq!(s.audit(None, 10_000).unwrap().len(), 2 * EACH as usize);
}

#[test]
fn the_storage_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yunjian.db");
    story(&|| -> Box<dyn Storage> {
        Box::new(yunjian_store_sqlite::SqliteStorage::open(&path).unwrap())
    });

    // a database a newer build migrated is refused, not run on
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_ms) VALUES (9999, 0)",
        [],
    )
    .unwrap();
    let mut s = yunjian_store_sqlite::SqliteStorage::open(&path).unwrap();
    let e = s.migrate().unwrap_err();
    assert_eq!(e.kind(), "schema_too_new", "{e}");
    assert!(e.to_string().contains("upgrade the aggregator"), "{e}");
}

#[test]
fn the_storage_story_on_postgresql() {
    let Some(pg) = yunjian_tests::postgres::TempPostgres::start() else {
        return;
    };
    let url = pg.create_database("story");
    story(&|| -> Box<dyn Storage> {
        Box::new(yunjian_store_postgres::PostgresStorage::connect(&url).unwrap())
    });

    // the timeline is append-only in the database itself
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let e = c.execute("DELETE FROM reclaim_log", &[]).unwrap_err();
    assert!(
        e.to_string().contains("append-only") || format!("{e:?}").contains("append-only"),
        "{e:?}"
    );

    // two aggregators starting together on a new database: both migrate, one schema
    let fresh = pg.create_database("race");
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut s = yunjian_store_postgres::PostgresStorage::connect(&fresh).unwrap();
                s.migrate().unwrap();
            });
        }
    });

    // a database a newer build migrated is refused, not run on
    c.execute(
        "INSERT INTO schema_migrations (version, applied_ms) VALUES (9999, 0)",
        &[],
    )
    .unwrap();
    let mut s = yunjian_store_postgres::PostgresStorage::connect(&url).unwrap();
    let e = s.migrate().unwrap_err();
    assert_eq!(e.kind(), "schema_too_new", "{e}");
}
