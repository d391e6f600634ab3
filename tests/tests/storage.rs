//! The storage scenario, written once against the ports of `yunjian_aggregator_core::store` and
//! run on every backend (SQLite in a tempdir, PostgreSQL on a server the test starts): what one
//! handle writes, each port reads back with the aggregator's semantics (frames kept when a
//! later row carries none, newest first, latest alarm state, a unit's VMs replaced, replayed
//! SEL entries stored once, the reclaim timeline append-only in the database itself); a
//! reopened handle reads back the same; two handles writing at once lose nothing; a database
//! from a newer build is refused.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use yunjian_aggregator_core::alarms::{
    Alarm, AlarmBook, AlarmEvent, AlarmKey, AlarmState, Finding, Level,
};
use yunjian_aggregator_core::hardware::SelRecord;
use yunjian_aggregator_core::identity::{ApiToken, Role as UserRole, User};
use yunjian_aggregator_core::lifecycle::Application;
use yunjian_aggregator_core::policy::Profile;
use yunjian_aggregator_core::reclaim::calendar::Calendar;
use yunjian_aggregator_core::reclaim::case::Rules;
use yunjian_aggregator_core::reclaim::{
    Actor, Case, CommandRecord, CommandStatus, Detection, Kind, LogEntry, ReclaimWrite, Step,
};
use yunjian_aggregator_core::register::test_support::vm;
use yunjian_aggregator_core::register::{
    Register, Resources, Sanction, ServerType, Unit, UnitRecord, VmAllocation,
};
use yunjian_aggregator_core::store::prelude::*;
use yunjian_aggregator_core::store::{
    encode_gaps, AuditEntry, DetectionRow, EventRow, NodeRow, SelRow, StorageError, WriteBatch,
};
use yunjian_aggregator_core::time::Day;
use yunjian_aggregator_core::usage::exempt::Revocation;
use yunjian_aggregator_core::usage::{
    ExemptReason, Exemption, Sample, UsageDayRow, UsageHistory, UsagePolicy,
};
use yunjian_protocol::hardware::SelEntry;
use yunjian_protocol::{
    encode, Action, Body, Envelope, Hello, Inventory, MasterKey, Memory, Report, Role, Severity,
    VmRef,
};

const T0: u64 = 1_790_000_000_000;

/// Runs SQL of the backend's own dialect on its database, for what the ports never do (mark
/// the schema as migrated by a newer build, try to rewrite the reclaim timeline); an error is
/// the database's message.
type RawSql<'a> = &'a dyn Fn(&str) -> Result<(), String>;

/// A new handle on the story's database.
type Open<'a> = &'a (dyn Fn() -> Box<dyn Storage> + Sync);

/// Everything the ports read, to compare a reopened handle with the one that wrote.
#[derive(Debug, Default, PartialEq)]
struct Everything {
    nodes: Vec<NodeRow>,
    events: Vec<EventRow>,
    alarms: Vec<Alarm>,
    audit: Vec<AuditEntry>,
    register: Register,
    usage: Vec<UsageDayRow>,
    exemptions: Vec<Exemption>,
    sel: Vec<SelRow>,
    cases: Vec<Case>,
    timeline: Vec<LogEntry>,
    commands: Vec<CommandRecord>,
    outstanding: Vec<CommandRecord>,
    detections: Vec<DetectionRow>,
    users: Vec<User>,
    tokens: Vec<ApiToken>,
    applications: Vec<Application>,
    application_log: Vec<yunjian_aggregator_core::lifecycle::LogEntry>,
    application_file: Option<(String, Vec<u8>)>,
}

fn everything(s: &mut dyn Storage, case_id: u64) -> Everything {
    let mut nodes = s.load_nodes().unwrap();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Everything {
        nodes,
        events: s.events(None, 1000).unwrap(),
        alarms: s.open_alarms().unwrap(),
        audit: s.audit(None, 1000).unwrap(),
        register: s.load_register().unwrap(),
        usage: s.load_usage(Day::MIN).unwrap(),
        exemptions: s.load_exemptions().unwrap(),
        sel: s.load_sel(1000).unwrap(),
        cases: s.reclaim_cases().unwrap(),
        timeline: s.reclaim_log(case_id).unwrap(),
        commands: s.commands(false).unwrap(),
        outstanding: s.commands(true).unwrap(),
        detections: s.load_detections().unwrap(),
        users: s.load_users().unwrap(),
        tokens: s.load_tokens().unwrap(),
        applications: s.applications().unwrap(),
        application_log: s.application_log(1).unwrap(),
        application_file: s.application_file(1, 1).unwrap(),
    }
}

fn event(node: &str, ts_ms: u64, message: &str) -> EventRow {
    EventRow {
        node: node.into(),
        ts_ms,
        severity: Severity::Warning,
        code: "buffer.dropped".into(),
        message: message.into(),
    }
}

fn audit(ts_ms: u64, actor: &str, action: &str, subject: &str) -> AuditEntry {
    AuditEntry {
        ts_ms,
        actor: actor.into(),
        role: if actor == "system" { "system" } else { "ops" }.into(),
        unit: None,
        source: (actor != "system").then(|| "10.0.0.7".to_string()),
        action: action.into(),
        subject: subject.into(),
        detail: serde_json::json!({ "at": ts_ms, "note": "经办" }),
    }
}

fn report(cpu_busy: u16) -> Report {
    Report {
        cpu_busy,
        per_core: vec![cpu_busy; 4],
        load: [120, 100, 90],
        mem: Memory {
            total_kib: 263_000_000,
            used_kib: 180_000_000,
            available_kib: 83_000_000,
            swap_total_kib: 8_000_000,
            swap_used_kib: 0,
        },
        disks: vec![],
        nets: vec![],
        uptime_s: 86_400,
        failed: vec![],
    }
}

fn sel(node: &str, record_id: u16, ts_s: u32, received_ms: u64) -> SelRow {
    SelRow {
        node: node.into(),
        record: SelRecord {
            received_ms,
            entry: SelEntry {
                record_id,
                ts_s,
                sensor_type: 0x08,
                sensor_number: 0x31,
                sensor: Some("PSU1 Status".into()),
                event_type: 0x6f,
                asserted: true,
                offset: 1,
                description: "Power Supply Failure detected".into(),
            },
        },
    }
}

fn finding(rule: &str, subject: &str, level: Level) -> Finding {
    Finding {
        key: AlarmKey {
            rule: rule.into(),
            subject: subject.into(),
        },
        level,
        clause: "003 第十九条".into(),
        unit: Some("市财政局".into()),
        title: format!("{subject} 超过阈值"),
        evidence: serde_json::json!({ "used_pct": 71.5 }),
    }
}

/// The whole story on one backend.
fn story(open: Open, sql: RawSql) {
    let mut s = open();
    let version = s.migrate().unwrap();
    assert_eq!(
        s.migrate().unwrap(),
        version,
        "a second migrate changes nothing"
    );
    assert_eq!(
        everything(&mut *s, 3),
        Everything::default(),
        "a new database is empty"
    );

    // Nodes: frames as the agents sent them; a later row without a frame keeps the stored one.
    let master = MasterKey::from_bytes([7; 32]);
    let frame = |node: &str, seq: u64, body: Body| {
        let env = Envelope::new(node, seq, T0 + seq, body);
        let role = if node.starts_with('g') {
            Role::Guest
        } else {
            Role::Host
        };
        Some(encode(&env, &master.node_key(node, role)).unwrap().into())
    };
    let hello = Hello {
        agent_version: "0.1.0".into(),
        role: Role::Host,
        interval_ms: 10_000,
        buffered: 3,
        epoch: 1,
    };
    let h1 = NodeRow {
        node: "h1".into(),
        role: Some(Role::Host),
        last_seen_ms: T0 + 2,
        last_report_ts_ms: T0 + 2,
        last_seq: 2,
        received: 2,
        duplicates: 0,
        missing: 0,
        hello: frame("h1", 1, Body::Hello(hello.clone())),
        inventory: None,
        report: frame("h1", 2, Body::Report(report(1500))),
        guests: None,
        antivirus: None,
        antivirus_history: None,
        gaps: None,
    };
    let h1_later = NodeRow {
        last_seen_ms: T0 + 5,
        last_report_ts_ms: T0 + 5,
        last_seq: 5,
        received: 4,
        duplicates: 1,
        missing: 1,
        // seq 3 is still awaited: a replay after a restart fills it
        gaps: encode_gaps(&BTreeSet::from([3])),
        hello: None,
        report: frame("h1", 5, Body::Report(report(4200))),
        antivirus_history: Some(r#"{"products":[],"stop":null}"#.into()),
        ..h1.clone()
    };
    let g1 = NodeRow {
        node: "g1".into(),
        role: Some(Role::Guest),
        inventory: frame(
            "g1",
            1,
            Body::Inventory(Inventory {
                hostname: "cz-app-02".into(),
                role: Role::Guest,
                os: "Debian GNU/Linux 12".into(),
                kernel: "6.1.0-18-amd64".into(),
                cpu_model: "Kunpeng 920".into(),
                cpu_cores: 8,
                mem_total_kib: 16 << 20,
                disks: vec![],
                nics: vec!["eth0".into()],
                machine_id: "0f1e2d3c".into(),
                smbios_uuid: Some("bb-2".into()),
                rack: None,
            }),
        ),
        hello: None,
        report: None,
        ..h1.clone()
    };

    // Register: units with quota and sanction, each unit's VMs in order.
    let quota = Resources {
        vcpus: 64.0,
        mem_gb: 256.0,
        disk_gb: 4096.0,
        net_mbps: 1000.0,
    };
    let caizheng = |sanction: Option<Sanction>, vms| UnitRecord {
        unit: Unit {
            name: "市财政局".into(),
            quota: Some(quota),
            sanction,
        },
        vms,
    };
    let unprovisioned = VmAllocation {
        server_type: ServerType::Dat,
        clustered: true,
        cluster_group: "pg-1".into(),
        note: "待开通".into(),
        uuid: None,
        term: Default::default(),
        ..vm("市财政局", "", 16)
    };
    let jiaoyu = UnitRecord {
        unit: Unit {
            name: "市教育局".into(),
            quota: None,
            sanction: None,
        },
        vms: vec![vm("市教育局", "cc-3", 2)],
    };

    // Usage: three closed days of two VMs, then a late merge rewrites one day.
    let midnight = 1_772_380_800_000u64; // 2026-03-02 00:00 in Beijing
    let mut history = UsageHistory::new(&UsagePolicy::default());
    for vm in ["aa-1", "bb-2"] {
        for i in 0..(3 * 96u64) {
            let sample = Sample {
                cpu: (i % 7 * 100) as u16,
                vcpus: 2,
                mem_used_kib: 1 << 20,
                mem_total_kib: 4 << 20,
                net_rx_bps: 10,
                ..Sample::default()
            };
            history.record_sample(vm, midnight + i * 900_000, &sample);
        }
    }
    history.close_all();
    let days = history.take_dirty();
    assert_eq!(days.len(), 6, "3 days of 2 VMs");
    let day0 = history.day_of(midnight);
    let mut merged = days[0].clone();
    merged.summary.samples += 1;
    let exemption = |id, vm: &str, reason| Exemption {
        id,
        vm: vm.into(),
        reason,
        note: "月末报表".into(),
        approver: "数据局".into(),
        created_by: "ops:zhang".into(),
        created_ms: T0,
        expires_ms: T0 + 90 * 86_400_000,
        revoked: None,
    };
    let batch_exempt = exemption(1, "aa-1", ExemptReason::Batch);
    let revoked = Exemption {
        revoked: Some(Revocation {
            by: "ops:li".into(),
            at_ms: T0 + 30,
            reason: "报表任务已下线".into(),
        }),
        ..batch_exempt.clone()
    };
    let standby = exemption(2, "bb-2", ExemptReason::DrStandby);

    // Alarms through the book that raises them: raise three, acknowledge one, clear another.
    let mut book = AlarmBook::new();
    let memory = finding("capacity.memory", "pool:A", Level::Major);
    let psu = finding("hardware", "h1:sensor:PSU1", Level::Critical);
    let disk = finding("capacity.disk", "pool:A", Level::Warning);
    let raised: Vec<AlarmEvent> = [&memory, &psu, &disk]
        .into_iter()
        .filter_map(|f| book.upsert(f.clone(), T0 + 10))
        .collect();
    assert_eq!(raised.len(), 3);
    let acknowledged = book.acknowledge(1, "ops:zhang", T0 + 20).unwrap();
    let cleared = book.clear(&psu.key, T0 + 30).unwrap();

    s.write(&WriteBatch {
        nodes: vec![h1.clone(), g1.clone()],
        events: (0..5)
            .map(|i| event("h1", T0 + i, &format!("第 {i} 次")))
            .collect(),
        alarms: raised,
        audit: vec![audit(T0 + 5, "ops:li", "register.import", "unit:市财政局")],
        register: vec![
            caizheng(
                None,
                vec![
                    vm("市财政局", "aa-1", 4),
                    vm("市财政局", "bb-2", 8),
                    unprovisioned,
                ],
            ),
            jiaoyu.clone(),
        ],
        sel: vec![
            sel("h1", 1, 100, T0 + 10),
            sel("h1", 2, 200, T0 + 10),
            sel("h2", 1, 50, T0 + 10),
        ],
        usage_days: days.clone(),
        exemptions: vec![batch_exempt, standby.clone()],
        ..WriteBatch::default()
    })
    .unwrap();
    let sanction = Sanction {
        reason: "连续两季度资源利用率低于 20%".into(),
        since_ms: T0 + 40,
        quota: Some(Resources {
            vcpus: 32.0,
            ..quota
        }),
        hold_requests: true,
    };
    let downsized = vm("市财政局", "bb-2", 4);
    s.write(&WriteBatch {
        nodes: vec![h1_later.clone()],
        events: vec![
            event("h2", T0 + 9, "h2"),
            event("g1", T0 + 7, "first"),
            event("g1", T0 + 7, "second"),
        ],
        alarms: vec![acknowledged],
        audit: vec![
            audit(T0 + 20, "ops:zhang", "alarm.acknowledge", "alarm:1"),
            audit(T0 + 40, "ops:li", "register.sanction", "unit:市财政局"),
        ],
        register: vec![caizheng(
            Some(sanction.clone()),
            vec![downsized.clone(), vm("市财政局", "dd-4", 8)],
        )],
        // a replayed sweep repeats entry 2; the BMC's SEL was cleared and reuses record id 1
        sel: vec![sel("h1", 2, 200, T0 + 20), sel("h1", 1, 300, T0 + 20)],
        usage_days: vec![merged.clone()],
        exemptions: vec![revoked.clone()],
        ..WriteBatch::default()
    })
    .unwrap();
    s.write(&WriteBatch {
        alarms: vec![cleared],
        ..WriteBatch::default()
    })
    .unwrap();

    // Reclaim: a case opened then notified, its timeline, commands to agents.
    let profile = Profile::default();
    let calendar = Calendar::builtin();
    let rules = Rules {
        policy: &profile.reclaim,
        calendar: &calendar,
    };
    let (case, detected) = Case::open(
        3,
        "BB-2",
        "cz-app-02",
        "市财政局",
        "预算一体化",
        Kind::Idle,
        serde_json::json!({ "cpu_p95": 1.5 }),
        &rules,
        T0 + 40,
    );
    let (notified, notify) = case
        .apply(
            Step::Notify,
            &Actor::system(),
            "",
            serde_json::Value::Null,
            &rules,
            T0 + 50,
        )
        .unwrap();
    let ttl = Duration::from_secs(3600);
    let ping = CommandRecord::new("h2", None, "ping".into(), Action::Ping, T0 + 55, ttl).unwrap();
    let vm_ref = VmRef {
        uuid: "bb-2".into(),
        name: "cz-app-02".into(),
    };
    let stop = CommandRecord::new(
        "h1",
        Some(3),
        "reclaim:3".into(),
        Action::Stop(vm_ref, "yunjian-reclaim-3".into()),
        T0 + 60,
        ttl,
    )
    .unwrap();
    let pong = CommandRecord {
        status: CommandStatus::Succeeded,
        result_ms: Some(T0 + 70),
        message: "pong".into(),
        ..ping.clone()
    };
    let reclaim_audit = audit(T0 + 50, "system", "reclaim.notify", "reclaim:3");
    s.reclaim_write(&ReclaimWrite {
        cases: vec![case],
        log: vec![detected.clone()],
        ..ReclaimWrite::default()
    })
    .unwrap();
    // a reclaim step that closes the loop stores the register in the same transaction: the
    // 教育局 VM released, its row retired
    s.reclaim_write(&ReclaimWrite {
        cases: vec![notified.clone()],
        log: vec![notify.clone()],
        commands: vec![ping, stop.clone()],
        audit: vec![reclaim_audit.clone()],
        register: vec![UnitRecord {
            unit: jiaoyu.unit.clone(),
            vms: vec![],
        }],
    })
    .unwrap();
    s.reclaim_write(&ReclaimWrite {
        commands: vec![pong.clone()],
        ..ReclaimWrite::default()
    })
    .unwrap();

    // What each port reads back.
    let mut nodes = s.load_nodes().unwrap();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let mut h1_now = h1.clone();
    h1_now.merge(h1_later.clone());
    assert_eq!(
        h1_now.hello, h1.hello,
        "the stored hello survives a row without one"
    );
    assert_eq!(
        nodes,
        [g1, h1_now],
        "the latest counters, each frame the latest sent"
    );
    let state = nodes.pop().unwrap().into_state().unwrap();
    assert_eq!(state.gaps, BTreeSet::from([3]), "the awaited seq is kept");
    assert_eq!(
        state.hello,
        Some(hello),
        "decoded with the protocol's own decoder"
    );
    assert_eq!(state.report.map(|r| r.cpu_busy), Some(4200));
    assert_eq!((state.last_seq, state.duplicates), (5, 1));

    let at = |events: Vec<EventRow>| -> Vec<(String, u64, String)> {
        events
            .into_iter()
            .map(|e| (e.node, e.ts_ms, e.message))
            .collect()
    };
    let ev = |node: &str, ts: u64, msg: &str| (node.to_string(), T0 + ts, msg.to_string());
    assert_eq!(
        at(s.events(None, 3).unwrap()),
        [
            ev("h2", 9, "h2"),
            ev("g1", 7, "second"),
            ev("g1", 7, "first")
        ],
        "newest first (the later of one millisecond first), limited"
    );
    assert_eq!(
        at(s.events(Some("h1"), 3).unwrap()),
        [
            ev("h1", 4, "第 4 次"),
            ev("h1", 3, "第 3 次"),
            ev("h1", 2, "第 2 次")
        ]
    );
    assert!(s.events(Some("h3"), 10).unwrap().is_empty());

    let open_alarms = s.open_alarms().unwrap();
    assert_eq!(
        open_alarms
            .iter()
            .map(|a| (a.key.rule.as_str(), a.state))
            .collect::<Vec<_>>(),
        [
            ("capacity.memory", AlarmState::Acknowledged),
            ("capacity.disk", AlarmState::Active)
        ],
        "the cleared alarm is not open; the acknowledged one still is"
    );
    let mut in_book: Vec<Alarm> = book.open().into_iter().cloned().collect();
    in_book.sort_by_key(|a| a.id);
    assert_eq!(open_alarms, in_book, "restored as the book holds them");
    assert_eq!(open_alarms[0].acked_by.as_deref(), Some("ops:zhang"));

    assert_eq!(
        s.audit(Some("unit:市财政局"), 10).unwrap(),
        [
            audit(T0 + 40, "ops:li", "register.sanction", "unit:市财政局"),
            audit(T0 + 5, "ops:li", "register.import", "unit:市财政局"),
        ],
        "one subject, newest first"
    );
    assert_eq!(
        s.audit(None, 2).unwrap(),
        [
            reclaim_audit,
            audit(T0 + 40, "ops:li", "register.sanction", "unit:市财政局")
        ],
        "reclaim writes audit in the same log; limited"
    );

    // units by name, each unit's VMs in the order of its latest record
    let units = BTreeMap::from([
        (
            "市财政局",
            (Some(sanction), vec![downsized, vm("市财政局", "dd-4", 8)]),
        ),
        ("市教育局", (None, vec![])),
    ]);
    let expected = Register::new(
        units
            .iter()
            .map(|(name, (sanction, _))| {
                let unit = Unit {
                    name: name.to_string(),
                    quota: (*name == "市财政局").then_some(quota),
                    sanction: sanction.clone(),
                };
                (name.to_string(), unit)
            })
            .collect(),
        units.into_values().flat_map(|(_, vms)| vms).collect(),
        vec![],
    );
    assert_eq!(s.load_register().unwrap(), expected);

    let by_vm_day = |mut rows: Vec<UsageDayRow>| {
        rows.sort_by(|a, b| (&a.vm, a.summary.day).cmp(&(&b.vm, b.summary.day)));
        rows
    };
    let mut days_now = days.clone();
    days_now[0] = merged;
    assert_eq!(
        by_vm_day(s.load_usage(day0).unwrap()),
        by_vm_day(days_now),
        "the late merge rewrote its day"
    );
    assert_eq!(s.load_usage(day0 + 1).unwrap().len(), 4, "from a day on");
    assert_eq!(s.load_exemptions().unwrap(), [revoked, standby]);

    let sel_keys = |rows: Vec<SelRow>| -> Vec<(String, u16, u32, u64)> {
        rows.into_iter()
            .map(|r| {
                let e = r.record.entry;
                (r.node, e.record_id, e.ts_s, r.record.received_ms - T0)
            })
            .collect()
    };
    let key = |node: &str, id, ts, received| (node.to_string(), id, ts, received);
    assert_eq!(
        sel_keys(s.load_sel(10).unwrap()),
        [
            key("h1", 1, 100, 10),
            key("h1", 2, 200, 10),
            key("h1", 1, 300, 20),
            key("h2", 1, 50, 10),
        ],
        "the replayed entry once, as first received; a reused record id is a new entry"
    );
    assert_eq!(
        sel_keys(s.load_sel(2).unwrap()),
        [
            key("h1", 2, 200, 10),
            key("h1", 1, 300, 20),
            key("h2", 1, 50, 10)
        ],
        "the newest per node, oldest first"
    );
    assert_eq!(
        s.load_sel(1).unwrap()[0].record,
        sel("h1", 1, 300, T0 + 20).record
    );

    assert_eq!(s.reclaim_cases().unwrap(), [notified]);
    assert_eq!(
        s.reclaim_log(3).unwrap(),
        [detected.clone(), notify.clone()]
    );
    assert!(s.reclaim_log(4).unwrap().is_empty());
    assert_eq!(
        s.commands(false).unwrap(),
        [pong, stop.clone()],
        "oldest first"
    );
    assert_eq!(
        s.commands(true).unwrap(),
        [stop],
        "only those awaiting a result"
    );

    // The latest finding per VM fed to the reclaim service (the re-check before a scheduled
    // case acts needs it after a restart): a newer one replaces the older of its VM.
    let found = |uuid: &str, fed_ms: u64, kind: Kind| DetectionRow {
        fed_ms,
        detection: Detection {
            uuid: uuid.into(),
            kind,
            evidence: serde_json::json!({ "cpu_p95_pct": 0.8, "window_days": 30 }),
        },
    };
    let oversized = Kind::OverProvisioned {
        recommended: yunjian_protocol::VmSize {
            vcpus: 2,
            mem_kib: 4 << 20,
        },
    };
    assert!(s.load_detections().unwrap().is_empty());
    s.store_detections(&[
        found("bb-2", T0 + 40, Kind::Idle),
        found("aa-1", T0 + 41, Kind::Idle),
    ])
    .unwrap();
    s.store_detections(&[found("bb-2", T0 + 90, oversized.clone())])
        .unwrap();
    assert_eq!(
        s.load_detections().unwrap(),
        [
            found("aa-1", T0 + 41, Kind::Idle),
            found("bb-2", T0 + 90, oversized)
        ],
        "by UUID, the newest of each"
    );

    // Users and API tokens: created, then changed (a password, a disabled user, a revoked
    // token) by upserts; only hashes are stored.
    let user = |name: &str, role, unit: Option<&str>| User {
        name: name.into(),
        display_name: format!("{name} 姓名"),
        role,
        unit: unit.map(str::to_string),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${name}"),
        created_ms: T0,
        password_changed_ms: T0,
        disabled: false,
    };
    let token = ApiToken {
        id: "a1b2c3d4".into(),
        user: "ops-zhang".into(),
        label: "备份脚本".into(),
        secret_hash: "9f".repeat(32),
        created_ms: T0,
        expires_ms: T0 + 86_400_000,
        revoked_ms: None,
    };
    s.write(&WriteBatch {
        users: vec![
            user("ops-zhang", UserRole::Ops, None),
            user("cz-li", UserRole::Unit, Some("市财政局")),
        ],
        tokens: vec![token.clone()],
        ..WriteBatch::default()
    })
    .unwrap();
    let mut zhang = user("ops-zhang", UserRole::Ops, None);
    zhang.password_hash.push_str("-changed");
    zhang.password_changed_ms = T0 + 5;
    let mut li = user("cz-li", UserRole::Unit, Some("市财政局"));
    li.disabled = true;
    let revoked_token = ApiToken {
        revoked_ms: Some(T0 + 6),
        ..token
    };
    s.write(&WriteBatch {
        users: vec![zhang.clone(), li.clone()],
        tokens: vec![revoked_token.clone()],
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(
        s.load_users().unwrap(),
        [li, zhang],
        "by name, as last written"
    );
    assert_eq!(s.load_tokens().unwrap(), [revoked_token]);

    // An application's step: the application, its timeline line, its file, the register
    // change and the audit entry, in one transaction.
    let profile = Profile::default();
    let app_rules = yunjian_aggregator_core::lifecycle::Rules::of(&profile, &calendar);
    let unit_actor = Actor::person("edu-wang", UserRole::Unit, Some("区教育局".into()));
    let mut row = vm("区教育局", "", 2);
    row.uuid = None;
    let (mut app, submitted) = Application::submit(
        1,
        "区教育局",
        "学籍管理",
        "上云",
        yunjian_aggregator_core::lifecycle::Request::Grant {
            vms: vec![row.clone()],
            ends_ms: None,
        },
        &unit_actor,
        &app_rules,
        T0 + 80,
    );
    app.attachments
        .push(yunjian_aggregator_core::lifecycle::Attachment {
            id: 1,
            kind: "申请表".into(),
            name: "附件1.xlsx".into(),
            size: 4,
            sha256: String::new(),
            by: "edu-wang".into(),
            ts_ms: T0 + 80,
        });
    let mut granted = row.clone();
    granted.term.kind = yunjian_aggregator_core::register::AllocationKind::Test;
    granted.term.application = Some(1);
    granted.term.ends_ms = Some(T0 + 15 * 86_400_000);
    let edu = UnitRecord {
        unit: Unit {
            name: "区教育局".into(),
            ..Unit::default()
        },
        vms: vec![granted.clone()],
    };
    s.application_write(&yunjian_aggregator_core::lifecycle::ApplicationWrite {
        applications: vec![app.clone()],
        log: vec![submitted.clone()],
        files: vec![yunjian_aggregator_core::lifecycle::FileRow {
            application: 1,
            id: 1,
            name: "附件1.xlsx".into(),
            bytes: bytes::Bytes::from_static(b"PK\x03\x04"),
        }],
        register: vec![edu],
        audit: vec![audit(
            T0 + 80,
            "edu-wang",
            "application.submit",
            "application:1",
        )],
    })
    .unwrap();
    assert_eq!(s.applications().unwrap(), [app.clone()]);
    assert_eq!(s.application_log(1).unwrap(), [submitted]);
    assert_eq!(
        s.application_file(1, 1).unwrap(),
        Some(("附件1.xlsx".to_string(), b"PK\x03\x04".to_vec()))
    );
    assert_eq!(s.application_file(1, 2).unwrap(), None);
    assert_eq!(
        s.load_register().unwrap().record("区教育局").vms,
        [granted],
        "the allocation term is stored with the row"
    );
    assert_eq!(
        s.audit(Some("application:1"), 10).unwrap()[0].action,
        "application.submit"
    );

    // The timelines cannot be rewritten, not even with SQL.
    for attempt in [
        "DELETE FROM reclaim_log",
        "UPDATE reclaim_log SET body = '{}'",
        "DELETE FROM application_log",
        "UPDATE application_log SET body = '{}'",
        "UPDATE application_files SET name = 'x'",
    ] {
        let e = sql(attempt).expect_err(attempt);
        assert!(e.contains("append-only"), "{attempt}: {e}");
    }
    assert_eq!(s.reclaim_log(3).unwrap(), [detected, notify]);

    // Reopened: everything reads back the same.
    let before = everything(&mut *s, 3);
    drop(s);
    let mut s = open();
    assert_eq!(s.migrate().unwrap(), version);
    assert_eq!(everything(&mut *s, 3), before);

    // Retention removes only what is older than asked, leaving a checkpoint the rest of the
    // chain verifies from.
    assert_eq!(s.expire_audit(T0 + 20, b"key").unwrap(), 1);
    assert_eq!(s.audit(None, 100).unwrap().len(), 4);
    let checkpoint = s.audit_checkpoint().unwrap().expect("a checkpoint");
    let chain = s.audit_chain(0, 100).unwrap();
    assert_eq!(chain.first().map(|c| c.id), Some(checkpoint.first_kept_id));
    yunjian_aggregator_core::audit::verify(b"key", Some(&checkpoint), chain).unwrap();
    assert_eq!(s.expire_usage(day0 + 1).unwrap(), 2);
    assert_eq!(s.load_usage(Day::MIN).unwrap().len(), 4);
    drop(s);

    // Two writers at once, each with its own handle: every entry of both is there.
    const EACH: usize = 200;
    std::thread::scope(|scope| {
        for writer in ["w1", "w2"] {
            scope.spawn(move || {
                let mut s = open();
                for i in 0..EACH as u64 {
                    s.write(&WriteBatch {
                        audit: vec![audit(T0 + 1000 + i, writer, "load.test", writer)],
                        events: vec![event(writer, T0 + 1000 + i, "load")],
                        ..WriteBatch::default()
                    })
                    .unwrap();
                }
            });
        }
    });
    let mut s = open();
    for writer in ["w1", "w2"] {
        let audit = s.audit(Some(writer), 10_000).unwrap();
        let distinct: HashSet<u64> = audit.iter().map(|a| a.ts_ms).collect();
        assert_eq!((audit.len(), distinct.len()), (EACH, EACH), "{writer}");
        assert_eq!(s.events(Some(writer), 10_000).unwrap().len(), EACH);
    }
    drop(s);

    // A database a newer build migrated is refused, not run on.
    sql("INSERT INTO schema_migrations (version, applied_ms) VALUES (9999, 0)").unwrap();
    let e = open().migrate().unwrap_err();
    assert!(
        matches!(e, StorageError::SchemaTooNew { found: 9999, known } if known == version),
        "{e:?}"
    );
    assert!(e.to_string().contains("upgrade the aggregator"), "{e}");
    // (and the database is left as the story wrote it, for the copy below)
    sql("DELETE FROM schema_migrations WHERE version = 9999").unwrap();
}

#[test]
fn the_storage_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yunjian.db");
    story(
        &|| -> Box<dyn Storage> {
            Box::new(yunjian_store_sqlite::SqliteStorage::open(&path).unwrap())
        },
        &|q| {
            rusqlite::Connection::open(&path)
                .and_then(|c| c.execute_batch(q))
                .map_err(|e| e.to_string())
        },
    );

    // Two aggregators starting together on a new file: both migrate, to one schema.
    for round in 0..20 {
        let fresh = dir.path().join(format!("race{round}.db"));
        migrate_together(&|| -> Box<dyn Storage> {
            Box::new(yunjian_store_sqlite::SqliteStorage::open(&fresh).unwrap())
        });
    }
}

#[test]
fn the_storage_story_on_postgresql() {
    let Some(pg) = yunjian_tests::postgres::TempPostgres::start() else {
        return;
    };
    let url = pg.create_database("story");
    story(
        &|| -> Box<dyn Storage> {
            Box::new(yunjian_store_postgres::PostgresStorage::connect(&url).unwrap())
        },
        &|q| {
            postgres::Client::connect(&url, postgres::NoTls)
                .and_then(|mut c| c.batch_execute(q))
                .map_err(|e| e.as_db_error().map_or(e.to_string(), |d| d.to_string()))
        },
    );

    // The server drops the connection (a restart, a failover, an administrator): the handle
    // connects again, at the latest on the call after the one that found it broken (the
    // storage thread retries a failed write), and nothing of that write is lost.
    let mut admin = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    // the story's handles close their connections on their own threads: let them finish
    let others = |admin: &mut postgres::Client| -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'story'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while others(&mut admin) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = yunjian_store_postgres::PostgresStorage::connect(&url).unwrap();
    s.migrate().unwrap();
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'story'",
            &[],
        )
        .unwrap();
    assert_eq!(ended.len(), 1, "the handle's one connection was ended");
    let batch = WriteBatch {
        audit: vec![audit(
            T0 + 5_000,
            "reconnect",
            "test.reconnect",
            "reconnect",
        )],
        ..WriteBatch::default()
    };
    let attempts = (1..=3)
        .find(|_| s.write(&batch).is_ok())
        .expect("written after reconnecting");
    assert!(attempts <= 2, "{attempts} attempts");
    assert_eq!(s.audit(Some("reconnect"), 10).unwrap().len(), 1);

    // Two aggregators starting together on a new database: both migrate, to one schema.
    for round in 0..5 {
        let fresh = pg.create_database(&format!("race{round}"));
        migrate_together(&|| -> Box<dyn Storage> {
            Box::new(yunjian_store_postgres::PostgresStorage::connect(&fresh).unwrap())
        });
    }
}

/// Two handles migrating the same new database at once: both succeed, at the same version.
fn migrate_together(open: &(dyn Fn() -> Box<dyn Storage> + Sync)) {
    let versions: Vec<u32> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| open().migrate().unwrap()))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(versions[0], versions[1]);
}

/// The upgrade path of a site that outgrew one file: the story's SQLite database copied into
/// PostgreSQL by `migrate-storage` reads back the same through every port.
#[test]
fn migrate_storage_moves_the_story_from_sqlite_to_postgresql() {
    let Some(pg) = yunjian_tests::postgres::TempPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("yunjian.db");
    let open_sqlite = || -> Box<dyn Storage> {
        Box::new(yunjian_store_sqlite::SqliteStorage::open(&path).unwrap())
    };
    story(&open_sqlite, &|q| {
        rusqlite::Connection::open(&path)
            .and_then(|c| c.execute_batch(q))
            .map_err(|e| e.to_string())
    });
    let url = pg.create_database("upgrade");
    let mut from = open_sqlite();
    let mut to: Box<dyn Storage> =
        Box::new(yunjian_store_postgres::PostgresStorage::connect(&url).unwrap());
    let mut kinds = Vec::new();
    let copied =
        yunjian_aggregator::offline::migrate_storage(from.as_mut(), to.as_mut(), |what, n| {
            kinds.push((what.to_string(), n))
        })
        .unwrap();
    assert!(
        copied.nodes > 0 && copied.audit > 0 && copied.cases > 0,
        "{copied}"
    );
    assert_eq!(kinds.len(), 10, "progress for every kind: {kinds:?}");
    assert_eq!(everything(&mut *to, 3), everything(&mut *from, 3));
}
