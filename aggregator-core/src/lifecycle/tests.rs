//! Every profile, every kind of application, every step, across the 2026 National Day week
//! (1–7 October off, Sunday 20 September and Saturday 10 October worked). The deadlines are
//! checked against a working-day list written out by hand, not against the calendar code.

use super::effects::{check_submission, register_change, Holds};
use super::*;
use crate::identity::{Actor, Role};
use crate::policy::profile::{Profile, BUILTIN};
use crate::reclaim::calendar::Calendar;
use crate::register::test_support::vm;
use crate::register::{AllocationKind, Register, ServerType, Unit, UnitRecord};
use crate::time::Day;

const HOUR: u64 = 3_600_000;

/// The working days of 2026-09-28 … 2026-10-12, by hand from the State Council's notice;
/// after that, until the end of 2026, every Monday to Friday (no holiday falls there).
const WORKING: &[&str] = &[
    "2026-09-28",
    "2026-09-29",
    "2026-09-30",
    "2026-10-08",
    "2026-10-09",
    "2026-10-10",
    "2026-10-12",
];

fn working_days() -> Vec<Day> {
    let mut out: Vec<Day> = WORKING.iter().map(|d| day(d)).collect();
    let mut d = day("2026-10-13");
    while d <= day("2026-12-31") {
        if d.weekday() < 5 {
            out.push(d);
        }
        d += 1;
    }
    out
}

fn day(s: &str) -> Day {
    Day::parse(s).unwrap()
}

/// The end (next midnight, Beijing) of the n-th working day after the day of `from_ms`.
fn by_hand(cal: &Calendar, from_ms: u64, n: u32) -> u64 {
    let from = cal.day_of(from_ms);
    let after: Vec<Day> = working_days().into_iter().filter(|d| *d > from).collect();
    assert!(after.len() >= n as usize, "the hand list is too short");
    let due = if n == 0 { from } else { after[n as usize - 1] };
    cal.start_of(due + 1)
}

fn person(role: Role) -> Actor {
    let unit = (role == Role::Unit).then(|| "区教育局".to_string());
    Actor::person(format!("{}-1", role.as_str()), role, unit)
}

fn register() -> Register {
    let mut a = vm("区教育局", "4c4c4544-0000-0000-0000-00000000000a", 4);
    a.term.kind = AllocationKind::Temporary;
    let b = vm("区教育局", "4c4c4544-0000-0000-0000-00000000000b", 8);
    let mut reg = Register::default();
    reg.apply(UnitRecord {
        unit: Unit {
            name: "区教育局".into(),
            ..Unit::default()
        },
        vms: vec![a, b],
    });
    reg
}

fn request(kind: Kind, now_ms: u64, reg: &mut Register, cal: &Calendar) -> Request {
    match kind {
        Kind::New | Kind::Test | Kind::Temporary => {
            let mut row = vm("区教育局", "", 2);
            row.uuid = None;
            row.system = "学籍管理系统".into();
            Request::Grant {
                vms: vec![row],
                ends_ms: None,
            }
        }
        Kind::Change => Request::Change {
            changes: vec![SizeChange {
                uuid: "4c4c4544-0000-0000-0000-00000000000b".into(),
                vcpus: Some(4),
                ..SizeChange::default()
            }],
        },
        Kind::Termination => Request::Termination {
            uuids: vec!["4c4c4544-0000-0000-0000-00000000000b".into()],
            declaration: "系统已下线，数据已迁移并备份至本单位存储".into(),
        },
        Kind::Extension => {
            // the temporary VM ends in two months: early enough under every profile
            let end = cal.start_of(cal.day_of(now_ms) + 60);
            for v in reg.vms.iter_mut().filter(|v| v.term.kind.expires()) {
                v.term.ends_ms = Some(end);
            }
            Request::Extension {
                uuids: vec!["4c4c4544-0000-0000-0000-00000000000a".into()],
                ends_ms: end + 30 * 24 * HOUR,
            }
        }
    }
}

/// The steps of a kind, in order, under a profile.
fn path(kind: Kind, p: &LifecyclePolicy) -> Vec<Step> {
    if !kind.is_grant() {
        return vec![Step::Approve, Step::CarryOut];
    }
    let mut s = vec![Step::Accept, Step::Review, Step::Approve, Step::Provision];
    if kind == Kind::New && p.test.is_some() {
        s.push(Step::PassTest);
        if p.trial_min.is_some() {
            s.push(Step::GoLive);
        }
    }
    s.push(Step::Confirm);
    s
}

#[test]
fn every_kind_walks_every_step_under_every_profile_across_national_day() {
    let cal = Calendar::builtin();
    for (name, _) in BUILTIN {
        let profile = Profile::load(name).unwrap();
        let p = &profile.lifecycle;
        let rules = Rules::of(&profile, &cal);
        for kind in Kind::ALL {
            let what = format!("profile {name}, {}", kind.as_str());
            // submitted Tuesday 29 September 2026, 15:00 Beijing time
            let mut now = cal.start_of(day("2026-09-29")) + 15 * HOUR;
            let mut reg = register();
            let mut req = request(kind, now, &mut reg, &cal);
            // where the regulation sets no maximum, the application gives the end
            let asked_end = cal.start_of(day("2026-11-20"));
            if let (Kind::Test, None, Request::Grant { ends_ms, .. }) = (kind, p.test_max, &mut req)
            {
                *ends_ms = Some(asked_end);
            }
            let checked =
                check_submission(&reg, kind, "区教育局", &req, &Holds::new(), &rules, now);
            if kind == Kind::Temporary && p.temporary_max.is_none() {
                assert_eq!(
                    checked.unwrap_err().code(),
                    "application_no_temporary",
                    "{what}"
                );
                continue;
            }
            checked.unwrap_or_else(|e| panic!("{what}: {e}"));
            let (mut a, log) = Application::submit_kind(
                7,
                kind,
                "区教育局",
                "学籍管理系统",
                "新学期学籍系统上云",
                req,
                &person(Role::Unit),
                &rules,
                now,
            );
            assert_eq!(log.to, State::Submitted);
            for step in path(kind, p) {
                // the deadline of the waiting state, by hand
                let rule = rules.waiting(kind, a.state).cloned();
                match &rule {
                    Some(r) if r.days > 0 => {
                        let from = if r.from_submission {
                            a.submitted_ms
                        } else {
                            a.state_since_ms
                        };
                        assert_eq!(
                            a.deadline_ms,
                            Some(by_hand(&cal, from, r.days)),
                            "{what}: deadline of {}",
                            a.state.as_str()
                        );
                        assert_eq!(a.deadline_clause.as_deref(), Some(r.clause.as_str()));
                        // one minute past it, the step is overdue
                        assert!(a.overdue(a.deadline_ms.unwrap() + 60_000), "{what}");
                    }
                    _ if a.state == State::Testing => {
                        let end = p.test.unwrap().end(cal.day_of(a.state_since_ms));
                        assert_eq!(a.deadline_ms, Some(cal.start_of(end)), "{what}");
                    }
                    _ => assert_eq!(a.deadline_ms, None, "{what}: {}", a.state.as_str()),
                }
                // take the step on its last day (23:00), or the next working day
                now = match a.deadline_ms {
                    Some(d) => d - HOUR,
                    None => by_hand(&cal, now, 1) - 9 * HOUR,
                };
                if step == Step::GoLive {
                    // not before the trial's minimum
                    let early = a
                        .apply(
                            step,
                            &person(a.who(step, &rules).0),
                            "",
                            serde_json::Value::Null,
                            &rules,
                            now,
                        )
                        .unwrap_err();
                    assert_eq!(early.code(), "application_trial_not_over", "{what}");
                    now = a.period_until_ms.unwrap() + HOUR;
                }
                let (role, _) = a.who(step, &rules);
                // a role that may not take it is refused, citing the clause
                let wrong = if role == Role::Ops {
                    Role::Authority
                } else {
                    Role::Ops
                };
                let e = a
                    .apply(
                        step,
                        &person(wrong),
                        "",
                        serde_json::Value::Null,
                        &rules,
                        now,
                    )
                    .unwrap_err();
                assert_eq!(e.code(), "application_role_forbidden", "{what}: {e}");
                let before = a.clone();
                let (next, log) = a
                    .apply(
                        step,
                        &person(role),
                        "",
                        serde_json::Value::Null,
                        &rules,
                        now,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!next.overdue(now), "{what}: taken in time");
                assert_eq!(log.step, step.as_str());
                let change =
                    register_change(&reg, &before, &next, step, &Holds::new(), &rules, now)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                if let Some(record) = change {
                    reg.apply(record);
                }
                a = next;
            }
            assert!(
                a.state.is_terminal(),
                "{what}: ends in {}",
                a.state.as_str()
            );
            // what the register shows at the end
            match kind {
                Kind::New | Kind::Test | Kind::Temporary => {
                    let row = reg
                        .vms
                        .iter()
                        .find(|v| v.term.application == Some(7))
                        .unwrap_or_else(|| panic!("{what}: registered"));
                    let expect = match kind {
                        Kind::New => AllocationKind::Formal,
                        Kind::Test => AllocationKind::Test,
                        _ => AllocationKind::Temporary,
                    };
                    assert_eq!(row.term.kind, expect, "{what}");
                    assert!(row.term.starts_ms.is_some(), "{what}");
                    if kind != Kind::New {
                        let max = if kind == Kind::Test {
                            p.test_max
                        } else {
                            p.temporary_max
                        };
                        let opened = cal.day_of(row.term.starts_ms.unwrap());
                        assert_eq!(
                            row.term.ends_ms,
                            Some(max.map_or(asked_end, |m| cal.start_of(m.end(opened)))),
                            "{what}: ends after the profile's maximum"
                        );
                    }
                }
                Kind::Change => assert_eq!(
                    reg.vm_by_uuid("4c4c4544-0000-0000-0000-00000000000b")
                        .unwrap()
                        .vcpus,
                    4
                ),
                // stop cases take it from here; their release retires the row
                Kind::Termination => {
                    assert!(reg
                        .vm_by_uuid("4c4c4544-0000-0000-0000-00000000000b")
                        .is_some())
                }
                Kind::Extension => assert_eq!(
                    reg.vm_by_uuid("4c4c4544-0000-0000-0000-00000000000a")
                        .unwrap()
                        .term
                        .ends_ms,
                    match &a.request {
                        Request::Extension { ends_ms, .. } => Some(*ends_ms),
                        _ => None,
                    }
                ),
            }
        }
    }
}

#[test]
fn under_003_the_dates_are_those_of_the_regulation() {
    // 第十二条: 受理 within 3 working days, 审核 within 2; 第十三条: test resources within 2,
    // for 15 calendar days; 第十四条: trial at least 30 calendar days.
    let cal = Calendar::builtin();
    let profile = Profile::load("003").unwrap();
    let rules = Rules::of(&profile, &cal);
    let submitted = cal.start_of(day("2026-09-29")) + 15 * HOUR;
    let mut reg = register();
    let req = request(Kind::New, submitted, &mut reg, &cal);
    let (a, _) = Application::submit(
        1,
        "区教育局",
        "学籍",
        "",
        req,
        &person(Role::Unit),
        &rules,
        submitted,
    );
    // Wed 30 Sep, (1–7 Oct off), Thu 8, Fri 9 → due at the end of Friday 9 October
    assert_eq!(a.deadline_ms, Some(cal.start_of(day("2026-10-10"))));
    assert_eq!(a.deadline_clause.as_deref(), Some("第十二条（受理）"));
    let t = cal.start_of(day("2026-10-09")) + 10 * HOUR;
    let (a, _) = a
        .apply(
            Step::Accept,
            &person(Role::Authority),
            "",
            serde_json::Value::Null,
            &rules,
            t,
        )
        .unwrap();
    // Sat 10 Oct (调休) and Mon 12 → the end of Monday 12 October
    assert_eq!(a.deadline_ms, Some(cal.start_of(day("2026-10-13"))));
    // not accepted: back to the unit with the reason, resubmitted, the clock starts again
    let (b, _) = Application::submit(
        2,
        "区教育局",
        "学籍",
        "",
        a.request.clone(),
        &person(Role::Unit),
        &rules,
        submitted,
    );
    let e = b
        .apply(
            Step::Refuse,
            &person(Role::Authority),
            " ",
            serde_json::Value::Null,
            &rules,
            t,
        )
        .unwrap_err();
    assert_eq!(e.code(), "application_reason_required");
    let (b, log) = b
        .apply(
            Step::Refuse,
            &person(Role::Authority),
            "缺少上云方案",
            serde_json::Value::Null,
            &rules,
            t,
        )
        .unwrap();
    assert_eq!(
        (b.state, log.reason.as_str()),
        (State::Returned, "缺少上云方案")
    );
    assert_eq!(b.deadline_ms, None);
    let other = Actor::person("u2", Role::Unit, Some("区卫健委".into()));
    assert_eq!(
        b.apply(
            Step::Resubmit,
            &other,
            "",
            serde_json::Value::Null,
            &rules,
            t
        )
        .unwrap_err()
        .code(),
        "application_other_unit"
    );
    let (b, _) = b
        .apply(
            Step::Resubmit,
            &person(Role::Unit),
            "",
            serde_json::Value::Null,
            &rules,
            t,
        )
        .unwrap();
    assert_eq!(b.state, State::Submitted);
    assert_eq!(b.deadline_ms, Some(cal.start_of(day("2026-10-14"))));
}

#[test]
fn a_late_004_extension_is_refused_citing_第二十条() {
    let cal = Calendar::builtin();
    let profile = Profile::load("004").unwrap();
    let rules = Rules::of(&profile, &cal);
    let mut reg = register();
    // the temporary VM ends on Friday 23 October 2026
    let end = cal.start_of(day("2026-10-24"));
    for v in reg.vms.iter_mut().filter(|v| v.term.kind.expires()) {
        v.term.ends_ms = Some(end);
    }
    let ask = |on: &str| {
        check_submission(
            &reg,
            Kind::Extension,
            "区教育局",
            &Request::Extension {
                uuids: vec!["4c4c4544-0000-0000-0000-00000000000A".into()],
                ends_ms: end + 30 * 24 * HOUR,
            },
            &Holds::new(),
            &rules,
            cal.start_of(day(on)) + 10 * HOUR,
        )
    };
    // from Mon 28 Sep: 29, 30 Sep, 8, 9, 10 (调休), 12–16, 19–23 Oct = 15 working days: in time
    ask("2026-09-28").unwrap();
    // from Tue 29 Sep: 14 left: refused
    let e = ask("2026-09-29").unwrap_err();
    assert_eq!(e.code(), "application_extension_late");
    let msg = e.to_string();
    assert!(
        msg.contains("第二十条") && msg.contains("14 个工作日"),
        "{msg}"
    );
    assert!(!msg.contains("003") && !msg.contains("第三十条"), "{msg}");
}

#[test]
fn a_change_of_use_is_refused_under_003_and_a_held_unit_cannot_grow() {
    let cal = Calendar::builtin();
    let now = cal.start_of(day("2026-10-12")) + 10 * HOUR;
    let reg = register();
    let change = Request::Change {
        changes: vec![SizeChange {
            uuid: "4c4c4544-0000-0000-0000-00000000000b".into(),
            server_type: Some(ServerType::Web),
            ..SizeChange::default()
        }],
    };
    for (name, refused) in [("003", true), ("004", false)] {
        let profile = Profile::load(name).unwrap();
        let rules = Rules::of(&profile, &cal);
        let r = check_submission(
            &reg,
            Kind::Change,
            "区教育局",
            &change,
            &Holds::new(),
            &rules,
            now,
        );
        assert_eq!(r.is_err(), refused, "{name}: {r:?}");
        if let Err(e) = r {
            assert_eq!(e.code(), "application_change_of_use");
            assert!(e.to_string().contains("第十五条"), "{e}");
        }
    }
    // 003 第三十条: a unit with an open low-use case cannot apply for more
    let profile = Profile::load("003").unwrap();
    let rules = Rules::of(&profile, &cal);
    let holds: Holds = [("区教育局".to_string(), (vec![12], now))].into();
    let mut r = register();
    let grant = request(Kind::New, now, &mut r, &cal);
    let e = check_submission(&reg, Kind::New, "区教育局", &grant, &holds, &rules, now).unwrap_err();
    assert_eq!(e.code(), "application_held");
    assert!(
        e.to_string().contains("#12") && e.to_string().contains("第三十条"),
        "{e}"
    );
    // a termination gives back: not held
    let term = request(Kind::Termination, now, &mut r, &cal);
    check_submission(
        &reg,
        Kind::Termination,
        "区教育局",
        &term,
        &holds,
        &rules,
        now,
    )
    .unwrap();
    // another unit's VM is unknown to this unit
    let other = Request::Termination {
        uuids: vec!["4c4c4544-0000-0000-0000-00000000000b".into()],
        declaration: "已备份".into(),
    };
    let e = check_submission(
        &reg,
        Kind::Termination,
        "区卫健委",
        &other,
        &holds,
        &rules,
        now,
    )
    .unwrap_err();
    assert_eq!(e.code(), "application_unknown_vm");
    // a termination without the declaration is refused citing 第十六条
    let bare = Request::Termination {
        uuids: vec!["4c4c4544-0000-0000-0000-00000000000b".into()],
        declaration: " ".into(),
    };
    let e = check_submission(
        &reg,
        Kind::Termination,
        "区教育局",
        &bare,
        &holds,
        &rules,
        now,
    )
    .unwrap_err();
    assert!(e.to_string().contains("第十六条"), "{e}");
}

#[test]
fn approval_registers_the_rows_and_a_quota_refuses_growth() {
    let cal = Calendar::builtin();
    let profile = Profile::load("003").unwrap();
    let rules = Rules::of(&profile, &cal);
    let now = cal.start_of(day("2026-10-12")) + 10 * HOUR;
    let mut reg = register();
    let req = request(Kind::New, now, &mut reg, &cal);
    let (a, _) = Application::submit(
        3,
        "区教育局",
        "学籍",
        "",
        req,
        &person(Role::Unit),
        &rules,
        now,
    );
    let mut a2 = a.clone();
    a2.state = State::Reviewed;
    let (approved, _) = a2
        .apply(
            Step::Approve,
            &person(Role::Authority),
            "",
            serde_json::Value::Null,
            &rules,
            now,
        )
        .unwrap();
    let record = register_change(
        &reg,
        &a2,
        &approved,
        Step::Approve,
        &Holds::new(),
        &rules,
        now,
    )
    .unwrap()
    .unwrap();
    let row = record
        .vms
        .iter()
        .find(|v| v.term.application == Some(3))
        .unwrap();
    // 003 has a test period: the approved rows are test resources until the test is passed
    assert_eq!(row.term.kind, AllocationKind::Test);
    // with a quota the unit is at, approval is refused and nothing changes
    let mut capped = reg.clone();
    let mut unit = capped.units["区教育局"].clone();
    unit.quota = Some(crate::register::Resources {
        vcpus: 12.0,
        mem_gb: 1000.0,
        disk_gb: 100_000.0,
        net_mbps: 0.0,
    });
    capped.units.insert("区教育局".into(), unit);
    let e = register_change(
        &capped,
        &a2,
        &approved,
        Step::Approve,
        &Holds::new(),
        &rules,
        now,
    )
    .unwrap_err();
    assert_eq!(e.code(), "application_over_quota");
    assert!(e.to_string().contains("超过其配额 12"), "{e}");
}

#[test]
fn under_002_a_shortfall_is_tracked_for_10_working_days() {
    let cal = Calendar::builtin();
    let now = cal.start_of(day("2026-09-29")) + 15 * HOUR;
    let mut reg = register();
    for (name, allowed) in [("002", true), ("003", false)] {
        let profile = Profile::load(name).unwrap();
        let rules = Rules::of(&profile, &cal);
        let req = request(Kind::New, now, &mut reg, &cal);
        let (mut a, _) = Application::submit(
            9,
            "区教育局",
            "学籍",
            "",
            req,
            &person(Role::Unit),
            &rules,
            now,
        );
        a.state = State::Approved;
        let r = a.apply(
            Step::Shortfall,
            &person(Role::Ops),
            "资源池内存已满，待扩容",
            serde_json::Value::Null,
            &rules,
            now,
        );
        assert_eq!(r.is_ok(), allowed, "{name}: {r:?}");
        let Ok((short, _)) = r else { continue };
        assert_eq!(short.state, State::Shortfall);
        // Wed 30 Sep, 8, 9, 10 (调休), 12–16, 19 Oct: the end of Monday 19 October
        assert_eq!(short.deadline_ms, Some(cal.start_of(day("2026-10-20"))));
        assert!(short.deadline_clause.as_deref().unwrap().contains("第十条"));
        let (done, _) = short
            .apply(
                Step::Provision,
                &person(Role::Ops),
                "",
                serde_json::Value::Null,
                &rules,
                now + HOUR,
            )
            .unwrap();
        assert_eq!(done.state, State::Opened);
    }
}
