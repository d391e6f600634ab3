//! The audit log is tamper-evident: entries edited, deleted or swapped directly in the
//! database (after dropping the triggers that refuse it) are each found by
//! `yunjian-aggregator audit verify`, which names the first entry touched; retention counts
//! calendar months across 29 February and leaves a signed checkpoint the rest verifies from.
//! On SQLite through the command, and on PostgreSQL through the same verification.

use std::path::Path;
use std::process::Command;
use yunjian_aggregator::service::audit::{checkpoint_key, verify};
use yunjian_aggregator_core::audit::{retention_cutoff_ms, AuditEvent};
use yunjian_aggregator_core::identity::{Actor, Role};
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::WriteBatch;
use yunjian_aggregator_core::time::{Day, BEIJING_OFFSET_MS};
use yunjian_protocol::MasterKey;

/// Noon (Beijing) on a day.
fn noon(y: i64, m: u32, d: u32) -> u64 {
    Day::from_ymd(y, m, d).start_ms(BEIJING_OFFSET_MS) + 4 * 3_600_000
}

/// One entry a day from 2024-02-26 to 2024-03-03 (the leap day included), by ops from an
/// address, then one by the system.
fn write_story(s: &mut dyn Storage) {
    let ops = Actor::person("ops-zhang", Role::Ops, None).from_source("10.0.0.7");
    let days = [(2, 26), (2, 27), (2, 28), (2, 29), (3, 1), (3, 2), (3, 3)];
    let audit = days
        .iter()
        .enumerate()
        .map(|(i, &(m, d))| {
            AuditEvent::ExemptionRevoked {
                id: i as u64 + 1,
                vm: format!("vm-{d}"),
                reason: "不再需要".into(),
            }
            .entry(noon(2024, m, d), &ops)
        })
        .collect();
    s.write(&WriteBatch {
        audit,
        ..WriteBatch::default()
    })
    .unwrap();
    s.write(&WriteBatch {
        audit: vec![AuditEvent::CommandExpired {
            purpose: "reclaim:1".into(),
            command: "c1".into(),
            node: "h1".into(),
        }
        .entry(noon(2024, 3, 4), &Actor::system())],
        ..WriteBatch::default()
    })
    .unwrap();
}

fn verify_cmd(data_dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yunjian-aggregator"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["audit", "verify"])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A copy of the data directory with `sql` run on its database.
fn tampered(data_dir: &Path, sql: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for f in ["yunjian.db", "master.key"] {
        std::fs::copy(data_dir.join(f), copy.path().join(f)).unwrap();
    }
    let conn = rusqlite::Connection::open(copy.path().join("yunjian.db")).unwrap();
    conn.execute_batch(sql).unwrap();
    copy
}

#[test]
fn edits_deletions_and_swaps_are_found_and_retention_keeps_whole_calendar_months() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
    let mut db = yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    db.migrate().unwrap();
    write_story(&mut db);

    let stored = db.audit(None, 100).unwrap();
    assert_eq!(stored.len(), 8);
    let first = stored.last().unwrap();
    assert_eq!(
        (
            first.actor.as_str(),
            first.role.as_str(),
            first.source.as_deref()
        ),
        ("ops-zhang", "ops", Some("10.0.0.7")),
        "who, in which role, from where"
    );
    drop(db);

    let (ok, said) = verify_cmd(dir.path());
    assert!(ok, "{said}");
    assert!(
        said.contains("审计日志完整：第 1 条至第 8 条共 8 条"),
        "{said}"
    );

    // the triggers refuse changes through SQL...
    let conn = rusqlite::Connection::open(dir.path().join("yunjian.db")).unwrap();
    for sql in [
        "UPDATE audit SET actor = 'x' WHERE id = 3",
        "DELETE FROM audit WHERE id = 3",
    ] {
        let e = conn.execute_batch(sql).unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    drop(conn);

    // ...and whoever drops them is found out by the chain
    let edited = tampered(
        dir.path(),
        "DROP TRIGGER audit_append_only; UPDATE audit SET actor = 'someone' WHERE id = 3;",
    );
    let (ok, said) = verify_cmd(edited.path());
    assert!(!ok);
    assert!(said.contains("第 3 条的内容与其哈希不符"), "{said}");

    let deleted = tampered(
        dir.path(),
        "DROP TRIGGER audit_keep_after_checkpoint; DELETE FROM audit WHERE id = 5;",
    );
    let (ok, said) = verify_cmd(deleted.path());
    assert!(!ok);
    assert!(said.contains("缺少第 5 条"), "{said}");

    // two entries swapped, every column (hashes too) but the id
    let swapped = tampered(
        dir.path(),
        "DROP TRIGGER audit_append_only;
         CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (2, 6);
         UPDATE audit SET (ts_ms, actor, role, unit, source, action, subject, detail, prev_hash, hash) =
            (SELECT ts_ms, actor, role, unit, source, action, subject, detail, prev_hash, hash
             FROM t WHERE t.id = 8 - audit.id) WHERE id IN (2, 6);",
    );
    let (ok, said) = verify_cmd(swapped.path());
    assert!(!ok);
    assert!(said.contains("第 2 条与前一条不衔接"), "{said}");

    // Retention of 12 months run on 2025-03-01: the leap day goes, 1 March 2024 stays, and the
    // rest still verifies from the signed checkpoint.
    let key = checkpoint_key(&master);
    let mut db = yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    let removed = db
        .expire_audit(retention_cutoff_ms(noon(2025, 3, 1), 12), &key)
        .unwrap();
    assert_eq!(removed, 4, "26, 27, 28 and 29 February 2024");
    let kept: Vec<u64> = db
        .audit(None, 100)
        .unwrap()
        .iter()
        .map(|e| e.ts_ms)
        .collect();
    assert_eq!(kept.last(), Some(&noon(2024, 3, 1)));
    assert_eq!(kept.len(), 4);
    let v = verify(&mut db, &key, |_| {}).unwrap();
    assert_eq!((v.first_id, v.last_id), (Some(5), Some(8)));
    // writing goes on from the chain's head
    write_story(&mut db);
    drop(db);
    let conn = rusqlite::Connection::open(dir.path().join("yunjian.db")).unwrap();
    for sql in [
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET first_kept_id = 1",
        "DELETE FROM audit WHERE id = 5",
    ] {
        let e = conn.execute_batch(sql).unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    drop(conn);
    let (ok, said) = verify_cmd(dir.path());
    assert!(ok, "{said}");
    assert!(said.contains("第 5 条至第 16 条共 12 条"), "{said}");

    // a checkpoint forged by someone without the master key is found
    let forged = tampered(
        dir.path(),
        "DROP TRIGGER audit_checkpoints_append_only;
         UPDATE audit_checkpoints SET signature = 'f00d';",
    );
    let (ok, said) = verify_cmd(forged.path());
    assert!(!ok);
    assert!(said.contains("检查点签名无效"), "{said}");
}

#[test]
fn the_chain_is_verified_on_postgresql_too() {
    let Some(pg) = yunjian_tests::postgres::TempPostgres::start() else {
        return;
    };
    let url = pg.create_database("audit");
    let key = b"test-key".to_vec();
    let mut db = yunjian_store_postgres::PostgresStorage::connect(&url).unwrap();
    db.migrate().unwrap();
    write_story(&mut db);
    assert_eq!(verify(&mut db, &key, |_| {}).unwrap().entries, 8);

    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let e = admin
        .batch_execute("UPDATE audit SET actor = 'x' WHERE id = 3")
        .unwrap_err();
    assert!(format!("{e:?}").contains("append-only"), "{e:?}");
    admin
        .batch_execute(
            "ALTER TABLE audit DISABLE TRIGGER audit_append_only;
             UPDATE audit SET detail = '{}' WHERE id = 6;",
        )
        .unwrap();
    let e = verify(&mut db, &key, |_| {}).unwrap_err().to_string();
    assert!(e.contains("第 6 条的内容与其哈希不符"), "{e}");

    // a deletion, in a database of its own
    let url = pg.create_database("audit_deleted");
    let mut db = yunjian_store_postgres::PostgresStorage::connect(&url).unwrap();
    db.migrate().unwrap();
    write_story(&mut db);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "ALTER TABLE audit DISABLE TRIGGER audit_append_only;
             DELETE FROM audit WHERE id = 7;",
        )
        .unwrap();
    let e = verify(&mut db, &key, |_| {}).unwrap_err().to_string();
    assert!(e.contains("缺少第 7 条"), "{e}");
}

#[tokio::test]
async fn the_auditor_filters_the_log_and_exports_it() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let mut db = yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("yunjian.db")).unwrap();
    db.migrate().unwrap();
    write_story(&mut db);
    let (_tx, rx) = tokio::sync::watch::channel(0);
    let mut state = yunjian_aggregator::web::AppState::new(
        yunjian_aggregator_core::fleet::Fleet::shared(),
        Arc::new(yunjian_aggregator::metrics::Metrics::default()),
        rx,
    );
    state.reader = Some(Arc::new(Mutex::new(Box::new(db))));
    let auditor = state.auth.test_bearer("audit-sun", Role::Auditor, None);
    let app = yunjian_aggregator::web::router(state);
    let get = |uri: String| {
        let app = app.clone();
        let auditor = auditor.clone();
        async move {
            let resp = app
                .oneshot(
                    Request::get(uri)
                        .header("authorization", format!("Bearer {auditor}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, bytes)
        }
    };

    let (status, _, body) =
        get("/api/audit?actor=ops-zhang&from=2024-02-28&to=2024-03-01".into()).await;
    assert_eq!(status, StatusCode::OK);
    let entries: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let subjects: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["exemption:5", "exemption:4", "exemption:3"],
        "newest first, through the last day"
    );
    assert_eq!(entries[0]["source"], "10.0.0.7");

    let (_, _, body) = get("/api/audit?action=command.".into()).await;
    let entries: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(entries[0]["actor"], "system");

    let (status, _, body) = get("/api/audit?from=2024-02-30".into()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );

    let (status, headers, body) = get("/api/audit/export.xlsx?subject=exemption:".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("audit.xlsx"));
    assert_eq!(&body[..2], b"PK", "an xlsx workbook (a ZIP)");
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(body.to_vec())).unwrap();
    use calamine::Reader;
    let sheet = book.worksheet_range("审计日志").unwrap();
    let rows: Vec<_> = sheet.rows().collect();
    assert_eq!(rows.len(), 8, "the header and the seven exemption entries");
    assert_eq!(rows[0][0].to_string(), "时间（北京时间）");
    assert_eq!(rows[1][1].to_string(), "ops-zhang");
    assert_eq!(rows[1][2].to_string(), "运维单位");
    assert!(
        rows[1][0].to_string().starts_with("2024-03-03"),
        "{}",
        rows[1][0]
    );
}
