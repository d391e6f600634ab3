//! Commands run against the database with the aggregator stopped (a running one keeps its own
//! copy of the register and would not see the change): the register import. They go through
//! the same services as the API, with the storage thread and the holds read from storage.

use crate::ingest::{self, StoreHandle};
use crate::metrics::Metrics;
use crate::ratelimit::now_ms;
use crate::register::changes::{ChangeError, Import};
use crate::register::form::Format;
use crate::service::{Holds, RegisterError, RegisterService};
use crate::store::{Storage, StorageError};
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// The command line's import (`yunjian-aggregator import`) failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ImportFileError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: cannot tell the format from the name; give --format xlsx or --format csv")]
    Format(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{}", change_message(.0))]
    Change(ChangeError),
    #[error("storage stopped before the import was written")]
    Closed,
    #[error("cannot start the import's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A change error, with every bad row on its own line.
fn change_message(e: &ChangeError) -> String {
    match e {
        ChangeError::Rows(rows) => std::iter::once(e.to_string())
            .chain(rows.iter().map(|r| format!("  {r}")))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => e.to_string(),
    }
}

/// Import a form file into the database behind `storage`, through the register service (the
/// same checks as `POST /api/register/import`, including the 003 第三十条 hold of units with
/// open low-use cases); returns a line for the operator.
pub fn import_file(
    storage: &mut dyn Storage,
    profile: &yunjian_aggregator_core::policy::Profile,
    unit: &str,
    by: &str,
    path: &Path,
    format: Option<&str>,
) -> Result<String, ImportFileError> {
    let shown = path.display().to_string();
    let format = match format {
        Some(f) => Format::parse(f),
        None => Format::of_file(&shown),
    }
    .ok_or_else(|| ImportFileError::Format(shown.clone()))?;
    let bytes = std::fs::read(path).map_err(|source| ImportFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let file = path
        .file_name()
        .map_or(shown.clone(), |n| n.to_string_lossy().into_owned());
    let register = Arc::new(RwLock::new(storage.load_register()?));
    let holds = crate::reclaim::held_units(storage.reclaim_cases()?.iter());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(ImportFileError::Runtime)?;
    // whoever runs the command holds the database: recorded as operations (运维) under the
    // name given, from the command line
    let actor = crate::identity::Actor::person(by, crate::identity::Role::Ops, None)
        .from_source("command line");
    let req = Import {
        unit,
        by: &actor,
        file: &file,
        format,
        bytes: &bytes,
        form: &profile.register,
    };
    let (tx, rx) = mpsc::channel(4);
    let update = std::thread::scope(|s| {
        s.spawn(move || ingest::storage_loop(storage, rx, Arc::new(Metrics::default())));
        let store = StoreHandle::new(tx);
        let turn = tokio::sync::Mutex::new(());
        let service = RegisterService {
            register: &register,
            store: &store,
            holds: Holds::Stored(holds),
            turn: &turn,
            profile,
        };
        // the storage thread ends when the last handle is gone
        rt.block_on(service.import(&req, now_ms()))
    })
    .map_err(|e| match e {
        RegisterError::Change(c) => ImportFileError::Change(c),
        RegisterError::Store(_) => ImportFileError::Closed,
    })?;
    let imported = update.audit.detail["imported"].as_u64().unwrap_or(0);
    Ok(format!(
        "imported {imported} VM(s) of {} from {file}; the unit now has {} VM(s)",
        update.record.unit.name,
        update.record.vms.len()
    ))
}

/// A user to create on the command line.
#[derive(Debug)]
pub struct NewUserArgs {
    pub name: String,
    pub display_name: String,
    pub role: crate::identity::Role,
    pub unit: Option<String>,
    /// `None`: generate one and show it once.
    pub password: Option<String>,
}

/// Create a user in the database behind `storage` through the identity service, acting as
/// the system (whoever runs this command holds the database); returns lines for the operator,
/// with the generated password if one was generated.
pub fn add_user(storage: &mut dyn Storage, args: NewUserArgs) -> Result<String, AddUserError> {
    use crate::service::identity::{self, Directory, IdentityService, NewUser};
    let directory = Arc::new(RwLock::new(Directory::new(
        storage.load_users()?,
        storage.load_tokens()?,
    )));
    let generated = args.password.is_none();
    let password = match args.password {
        Some(p) => p,
        None => identity::generate_password()?,
    };
    let new = NewUser {
        name: args.name,
        display_name: args.display_name,
        role: args.role,
        unit: args.unit,
        password: password.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(AddUserError::Runtime)?;
    let (tx, rx) = mpsc::channel(4);
    let user = std::thread::scope(|s| {
        s.spawn(move || ingest::storage_loop(storage, rx, Arc::new(Metrics::default())));
        let store = StoreHandle::new(tx);
        let service = IdentityService {
            directory: &directory,
            store: &store,
            sign_ins: &Default::default(),
            counters: &Default::default(),
            policy: &Default::default(),
        };
        rt.block_on(service.add_user(&crate::identity::Actor::job("command line"), new, now_ms()))
    })?;
    let mut out = format!(
        "已创建用户 {}（{}，{}{}）",
        user.name,
        user.display_name,
        user.role.zh(),
        user.unit
            .as_deref()
            .map(|u| format!("，{u}"))
            .unwrap_or_default()
    );
    if generated {
        out.push_str(&format!(
            "\n初始密码（只显示这一次，请登录后修改）：{password}"
        ));
    }
    Ok(out)
}

/// `user add` failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Identity(#[from] crate::service::identity::IdentityError),
    #[error("cannot start the command's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Everything is read in one go, so "no limit" is the largest limit both backends accept.
const ALL: usize = i64::MAX as usize;
/// Rows per transaction while copying.
const CHUNK: usize = 2_000;

/// What `migrate-storage` copied, per kind of row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub nodes: usize,
    pub events: usize,
    pub open_alarms: usize,
    pub audit: usize,
    pub units: usize,
    pub usage_days: usize,
    pub exemptions: usize,
    pub sel: usize,
    pub cases: usize,
    pub case_log: usize,
    pub commands: usize,
    pub users: usize,
    pub tokens: usize,
    pub applications: usize,
    pub application_log: usize,
    pub application_files: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes, {} events, {} open alarms, {} audit entries, {} units, {} usage days, \
             {} exemptions, {} SEL entries, {} reclaim cases ({} timeline entries), {} commands, \
             {} users, {} API tokens, {} applications ({} timeline entries, {} files)",
            self.nodes,
            self.events,
            self.open_alarms,
            self.audit,
            self.units,
            self.usage_days,
            self.exemptions,
            self.sel,
            self.cases,
            self.case_log,
            self.commands,
            self.users,
            self.tokens,
            self.applications,
            self.application_log,
            self.application_files
        )
    }
}

/// `migrate-storage` did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("source: {0}")]
    Source(StorageError),
    #[error("target: {0}")]
    Target(StorageError),
    #[error("the target already holds data ({0}); copy into an empty database")]
    TargetNotEmpty(&'static str),
    #[error("after copying, the target reads back {what} {found}, the source {expected}")]
    Verify {
        what: &'static str,
        expected: usize,
        found: usize,
    },
}

/// Copy a site's data from one backend to another (e.g. SQLite to PostgreSQL), with the
/// aggregator stopped. The target is migrated to the current schema and must be empty; the
/// source is read through the same ports the aggregator uses, and the target is read back
/// and counted afterwards. `progress` is told each kind as it is done.
///
/// Cleared alarms are not copied as rows (no port reads them back; nothing shows them after a
/// restart); their whole history is in the audit log, which is.
pub fn migrate_storage(
    from: &mut dyn Storage,
    to: &mut dyn Storage,
    mut progress: impl FnMut(&str, usize),
) -> Result<Copied, MigrateError> {
    use crate::alarms::AlarmEvent;
    use crate::reclaim::ReclaimWrite;
    use crate::store::WriteBatch;
    let src = MigrateError::Source;
    let dst = MigrateError::Target;
    from.migrate().map_err(src)?;
    to.migrate().map_err(dst)?;
    if !to.load_nodes().map_err(dst)?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("nodes"));
    }
    if !to.audit(None, 1).map_err(dst)?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("audit log"));
    }
    if !to.load_register().map_err(dst)?.units.is_empty() {
        return Err(MigrateError::TargetNotEmpty("register"));
    }
    if !to.reclaim_cases().map_err(dst)?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("reclaim cases"));
    }
    if !to.load_users().map_err(dst)?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("users"));
    }
    if !to.applications().map_err(dst)?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("applications"));
    }
    let mut copied = Copied::default();
    let write = |to: &mut dyn Storage, batch: WriteBatch| to.write(&batch).map_err(dst);

    let nodes = from.load_nodes().map_err(src)?;
    copied.nodes = nodes.len();
    let mut nodes = nodes.into_iter().peekable();
    while nodes.peek().is_some() {
        let chunk = nodes.by_ref().take(CHUNK).collect();
        write(
            to,
            WriteBatch {
                nodes: chunk,
                ..WriteBatch::default()
            },
        )?;
    }
    progress("nodes", copied.nodes);

    let mut events = from.events(None, ALL).map_err(src)?;
    events.reverse(); // oldest first, so the target's order is the source's
    copied.events = events.len();
    for chunk in events.chunks(CHUNK) {
        write(
            to,
            WriteBatch {
                events: chunk.to_vec(),
                ..WriteBatch::default()
            },
        )?;
    }
    progress("events", copied.events);

    let alarms: Vec<AlarmEvent> = from
        .open_alarms()
        .map_err(src)?
        .into_iter()
        .map(AlarmEvent::Raised)
        .collect();
    copied.open_alarms = alarms.len();
    write(
        to,
        WriteBatch {
            alarms,
            ..WriteBatch::default()
        },
    )?;
    progress("open alarms", copied.open_alarms);

    let mut audit = from.audit(None, ALL).map_err(src)?;
    audit.reverse();
    copied.audit = audit.len();
    for chunk in audit.chunks(CHUNK) {
        write(
            to,
            WriteBatch {
                audit: chunk.to_vec(),
                ..WriteBatch::default()
            },
        )?;
    }
    progress("audit entries", copied.audit);

    let register = from.load_register().map_err(src)?;
    let units: Vec<_> = register.units.keys().map(|u| register.record(u)).collect();
    copied.units = units.len();
    write(
        to,
        WriteBatch {
            register: units,
            ..WriteBatch::default()
        },
    )?;
    progress("register units", copied.units);

    let days = from.load_usage(crate::time::Day::MIN).map_err(src)?;
    copied.usage_days = days.len();
    for chunk in days.chunks(CHUNK) {
        write(
            to,
            WriteBatch {
                usage_days: chunk.to_vec(),
                ..WriteBatch::default()
            },
        )?;
    }
    let exemptions = from.load_exemptions().map_err(src)?;
    copied.exemptions = exemptions.len();
    write(
        to,
        WriteBatch {
            exemptions,
            ..WriteBatch::default()
        },
    )?;
    progress("usage days", copied.usage_days);

    let sel = from.load_sel(ALL).map_err(src)?;
    copied.sel = sel.len();
    for chunk in sel.chunks(CHUNK) {
        write(
            to,
            WriteBatch {
                sel: chunk.to_vec(),
                ..WriteBatch::default()
            },
        )?;
    }
    progress("SEL entries", copied.sel);

    let cases = from.reclaim_cases().map_err(src)?;
    let mut log = Vec::new();
    for c in &cases {
        log.extend(from.reclaim_log(c.id).map_err(src)?);
    }
    let commands = from.commands(false).map_err(src)?;
    copied.cases = cases.len();
    copied.case_log = log.len();
    copied.commands = commands.len();
    to.reclaim_write(&ReclaimWrite {
        cases,
        log,
        commands,
        ..ReclaimWrite::default()
    })
    .map_err(dst)?;
    // the latest findings, so a scheduled case's re-check still finds them on the target
    let detections = from.load_detections().map_err(src)?;
    to.store_detections(&detections).map_err(dst)?;
    progress("reclaim cases", copied.cases);

    let users = from.load_users().map_err(src)?;
    let tokens = from.load_tokens().map_err(src)?;
    copied.users = users.len();
    copied.tokens = tokens.len();
    write(
        to,
        WriteBatch {
            users,
            tokens,
            ..WriteBatch::default()
        },
    )?;
    progress("users", copied.users);

    // applications one by one, each with its timeline and files
    for a in from.applications().map_err(src)? {
        let log = from.application_log(a.id).map_err(src)?;
        let mut files = Vec::new();
        for f in &a.attachments {
            if let Some((name, bytes)) = from.application_file(a.id, f.id).map_err(src)? {
                files.push(yunjian_aggregator_core::lifecycle::FileRow {
                    application: a.id,
                    id: f.id,
                    name,
                    bytes: bytes.into(),
                });
            }
        }
        copied.applications += 1;
        copied.application_log += log.len();
        copied.application_files += files.len();
        to.application_write(&yunjian_aggregator_core::lifecycle::ApplicationWrite {
            applications: vec![a],
            log,
            files,
            ..Default::default()
        })
        .map_err(dst)?;
    }
    progress("applications", copied.applications);

    verify(to, &copied)?;
    Ok(copied)
}

/// Read the target back and compare the counts.
fn verify(to: &mut dyn Storage, copied: &Copied) -> Result<(), MigrateError> {
    let dst = MigrateError::Target;
    let cases = to.reclaim_cases().map_err(dst)?;
    let mut case_log = 0;
    for c in &cases {
        case_log += to.reclaim_log(c.id).map_err(dst)?.len();
    }
    let apps = to.applications().map_err(dst)?;
    let (mut application_log, mut application_files) = (0, 0);
    for a in &apps {
        application_log += to.application_log(a.id).map_err(dst)?.len();
        for f in &a.attachments {
            application_files +=
                usize::from(to.application_file(a.id, f.id).map_err(dst)?.is_some());
        }
    }
    let found = Copied {
        nodes: to.load_nodes().map_err(dst)?.len(),
        events: to.events(None, ALL).map_err(dst)?.len(),
        open_alarms: to.open_alarms().map_err(dst)?.len(),
        audit: to.audit(None, ALL).map_err(dst)?.len(),
        units: to.load_register().map_err(dst)?.units.len(),
        usage_days: to.load_usage(crate::time::Day::MIN).map_err(dst)?.len(),
        exemptions: to.load_exemptions().map_err(dst)?.len(),
        sel: to.load_sel(ALL).map_err(dst)?.len(),
        cases: cases.len(),
        case_log,
        commands: to.commands(false).map_err(dst)?.len(),
        users: to.load_users().map_err(dst)?.len(),
        tokens: to.load_tokens().map_err(dst)?.len(),
        applications: apps.len(),
        application_log,
        application_files,
    };
    let pairs = [
        ("nodes", copied.nodes, found.nodes),
        ("events", copied.events, found.events),
        ("open alarms", copied.open_alarms, found.open_alarms),
        ("audit entries", copied.audit, found.audit),
        ("units", copied.units, found.units),
        ("usage days", copied.usage_days, found.usage_days),
        ("exemptions", copied.exemptions, found.exemptions),
        ("SEL entries", copied.sel, found.sel),
        ("reclaim cases", copied.cases, found.cases),
        ("timeline entries", copied.case_log, found.case_log),
        ("commands", copied.commands, found.commands),
        ("users", copied.users, found.users),
        ("API tokens", copied.tokens, found.tokens),
        ("applications", copied.applications, found.applications),
        (
            "application timeline entries",
            copied.application_log,
            found.application_log,
        ),
        (
            "application files",
            copied.application_files,
            found.application_files,
        ),
    ];
    for (what, expected, found) in pairs {
        if expected != found {
            return Err(MigrateError::Verify {
                what,
                expected,
                found,
            });
        }
    }
    Ok(())
}

/// What `demo-applications` did: one line per application.
#[derive(Debug, Default)]
pub struct DemoApplications {
    pub lines: Vec<String>,
}

impl std::fmt::Display for DemoApplications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Why the demo's applications could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the demo needs users of the roles ops, authority and unit (for at least {0} units): create them first (scripts/demo.sh does)")]
    Users(usize),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// The demo's applications (scripts/demo.sh runs this once, before the aggregator starts): a
/// few applications of the demo's units walked through their steps by the demo's users, at
/// times in the past, so the queue shows one of each: a new system in its test period, one
/// overdue for acceptance, a change waiting for review, a termination waiting to be carried
/// out and a test resource about to end. Every step goes through the application service with
/// the user's role checked and is audited, marked as made by the demo script.
pub fn demo_applications(
    storage: Box<dyn Storage>,
    profile: Arc<crate::policy::Profile>,
    calendar: Arc<crate::reclaim::calendar::Calendar>,
    now_ms: u64,
) -> Result<DemoApplications, DemoError> {
    use crate::identity::{Actor, Role};
    use crate::service::applications::{Applications, Draft};
    use yunjian_aggregator_core::lifecycle::{Kind, Request, SizeChange};
    let mut storage = storage;
    let users = storage.load_users()?;
    let register = storage.load_register()?;
    let person = |u: &yunjian_aggregator_core::identity::User| {
        Actor::person(u.name.clone(), u.role, u.unit.clone()).from_source("scripts/demo.sh")
    };
    let first = |role: Role| users.iter().find(|u| u.role == role && !u.disabled);
    let (Some(ops), Some(chief)) = (first(Role::Ops), first(Role::Authority)) else {
        return Err(DemoError::Users(1));
    };
    let (ops, chief) = (person(ops), person(chief));
    // units with a demo user and registered VMs
    let units: Vec<(Actor, Vec<crate::register::VmAllocation>)> = users
        .iter()
        .filter(|u| u.role == Role::Unit && !u.disabled)
        .filter_map(|u| {
            let vms = register.record(u.unit.as_deref()?).vms;
            (!vms.is_empty()).then(|| (person(u), vms))
        })
        .take(3)
        .collect();
    if units.len() < 3 {
        return Err(DemoError::Users(3));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DemoError::Runtime)?;
    let shared = Arc::new(RwLock::new(register));
    let apps = Applications::start(
        storage,
        profile.clone(),
        calendar,
        shared,
        Arc::default(),
        None,
    )?;
    const DAY: u64 = 86_400_000;
    let mut out = DemoApplications::default();
    rt.block_on(async {
        let walk = |lines: &mut Vec<String>, what: String, r: Result<_, _>| match r {
            Ok(v) => {
                let v: crate::service::applications::View = v;
                lines.push(format!(
                    "  #{} {}（{}）：{}",
                    v.application.id, what, v.application.unit, v.state_zh
                ));
                Some(v.application.id)
            }
            Err(e) => {
                lines.push(format!("  {what}：未完成（{e}）"));
                None
            }
        };
        let row = |unit: &str, st: crate::register::ServerType, vcpus: u32| {
            let mut v = units[0].1[0].clone();
            v.unit = unit.into();
            v.uuid = None;
            v.server_type = st;
            v.vcpus = vcpus;
            v.mem_gb = vcpus * 4;
            v.system = "一网通办（演示）".into();
            v.subsystem = String::new();
            v.term = Default::default();
            v
        };
        let grant = |vms| Draft {
            kind: Kind::New,
            system: "一网通办（演示）".into(),
            purpose: "新建系统上云（演示数据）".into(),
            request: Request::Grant { vms, ends_ms: None },
            files: Vec::new(),
        };
        let (u1, u2, u3) = (&units[0].0, &units[1].0, &units[2].0);
        let unit1 = u1.unit.clone().unwrap_or_default();
        // 1. a new system: accepted, reviewed, approved, test resources provided
        let t = now_ms - 8 * DAY;
        let id = walk(
            &mut out.lines,
            "资源申请".into(),
            apps.submit(
                u1,
                grant(vec![
                    row(&unit1, crate::register::ServerType::App, 4),
                    row(&unit1, crate::register::ServerType::Dat, 8),
                ]),
                t,
            )
            .await,
        );
        if let Some(id) = id {
            let p = &profile.lifecycle;
            let steps = [
                ("accept", p.accept.by),
                ("review", p.review.by),
                ("approve", p.approve.by),
                ("provision", p.provision.by),
            ];
            for (i, (step, by)) in steps.into_iter().enumerate() {
                let who = if by == Role::Ops { &ops } else { &chief };
                let r = apps
                    .act(who, id, step, "演示", t + (i as u64 + 1) * DAY / 2)
                    .await;
                walk(&mut out.lines, format!("资源申请 → {step}"), r);
            }
        }
        // 2. a new system nobody accepted in time: overdue
        let r = apps
            .submit(
                u1,
                Draft {
                    system: "12345 热线（演示）".into(),
                    ..grant(vec![row(&unit1, crate::register::ServerType::Web, 2)])
                },
                now_ms - 10 * DAY,
            )
            .await;
        walk(&mut out.lines, "资源申请（逾期未受理）".into(), r);
        // 3. a change waiting for review
        if let Some(v) = units[1].1.iter().find(|v| v.uuid.is_some()) {
            let r = apps
                .submit(
                    u2,
                    Draft {
                        kind: Kind::Change,
                        system: v.system.clone(),
                        purpose: "业务量增长，扩容内存（演示）".into(),
                        request: Request::Change {
                            changes: vec![SizeChange {
                                uuid: v.uuid.clone().unwrap_or_default(),
                                mem_gb: Some(v.mem_gb * 2),
                                ..SizeChange::default()
                            }],
                        },
                        files: Vec::new(),
                    },
                    now_ms - DAY,
                )
                .await;
            walk(&mut out.lines, "资源变更".into(), r);
        }
        // 4. a termination approved, waiting for ops to take the resources back
        if let Some(v) = units[2].1.iter().rev().find(|v| v.uuid.is_some()) {
            let r = apps
                .submit(
                    u3,
                    Draft {
                        kind: Kind::Termination,
                        system: v.system.clone(),
                        purpose: "系统整合后停用（演示）".into(),
                        request: Request::Termination {
                            uuids: vec![v.uuid.clone().unwrap_or_default()],
                            declaration: "系统已下线，业务数据已迁移至新平台并完成备份".into(),
                        },
                        files: Vec::new(),
                    },
                    now_ms - 3 * DAY,
                )
                .await;
            if let Some(id) = walk(&mut out.lines, "资源终止".into(), r) {
                let r = apps
                    .act(&chief, id, "approve", "同意终止", now_ms - 2 * DAY)
                    .await;
                walk(&mut out.lines, "资源终止 → approve".into(), r);
            }
        }
        // 5. a test resource opened two weeks ago: about to end
        let unit2 = u2.unit.clone().unwrap_or_default();
        let t = now_ms - 14 * DAY;
        let r = apps
            .submit(
                u2,
                Draft {
                    kind: Kind::Test,
                    system: "数据共享平台测试环境（演示）".into(),
                    purpose: "开发测试（演示）".into(),
                    request: Request::Grant {
                        vms: vec![row(&unit2, crate::register::ServerType::Tst, 2)],
                        ends_ms: None,
                    },
                    files: Vec::new(),
                },
                t - DAY,
            )
            .await;
        if let Some(id) = walk(&mut out.lines, "测试资源".into(), r) {
            let p = &profile.lifecycle;
            for (i, (step, by)) in [
                ("accept", p.accept.by),
                ("review", p.review.by),
                ("approve", p.approve.by),
                ("provision", p.provision.by),
                ("confirm", Role::Unit),
            ]
            .into_iter()
            .enumerate()
            {
                let who = match by {
                    Role::Ops => &ops,
                    Role::Unit => u2,
                    _ => &chief,
                };
                let r = apps
                    .act(who, id, step, "演示", t + i as u64 * 3_600_000)
                    .await;
                walk(&mut out.lines, format!("测试资源 → {step}"), r);
            }
        }
    });
    Ok(out)
}
