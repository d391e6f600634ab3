//! A node that went offline or silent is a fault that may affect its unit: 001 第十六条 asks for
//! automatic alarms and telling the unit. A physical host down is major (its VMs are affected);
//! a VM down is a warning. A node must have been down for [`GRACE_INTERVALS`] report intervals
//! first, so a quick agent restart or an aggregator restart (every node is restored offline
//! until it reconnects) raises nothing. A VM stopped on purpose (a reclaim case's stop, an
//! antivirus stop decision: [`crate::fleet::NodeState::stopped_on_purpose`]) raises nothing
//! either, and an alarm raised before the mark clears.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::{Liveness, NodeState};
use crate::policy::{Context, Findings, NodeScan, Profile, Rule, TIME_SLACK_MS};
use yunjian_protocol::Role;

pub const NAME: &str = "node_down";

/// Report intervals a node must stay down before the alarm.
pub const GRACE_INTERVALS: u64 = 3;

/// Incremental: a node is looked at again when its liveness (or anything but its reports)
/// changed, and on every evaluation while it is down within its grace.
#[derive(Debug, Default)]
pub struct NodeDown {
    /// Nodes down but within their grace are watched on every pass.
    scan: NodeScan,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(NodeDown::default())
}

impl Rule for NodeDown {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.liveness
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        for st in self.scan.begin(ctx, out) {
            let grace = GRACE_INTERVALS * st.interval_ms();
            let down_for = ctx.now_ms.saturating_sub(st.liveness_since_ms);
            self.scan.watch(
                &st.node,
                st.liveness != Liveness::Online && down_for <= grace + TIME_SLACK_MS,
            );
            out.scope(&st.node);
            // a VM stopped on purpose (a reclaim case, an antivirus stop) is not a fault
            if st.liveness == Liveness::Online
                || st.role.is_none()
                || down_for < grace
                || st.stopped_on_purpose.is_some()
            {
                continue;
            }
            self.node(ctx, st, out);
        }
    }
}

impl NodeDown {
    fn node(&self, ctx: &Context<'_>, st: &NodeState, out: &mut Findings) {
        let s = ctx.fleet.summary(st);
        let unit = s.smbios_uuid.as_deref().and_then(|u| self.scan.unit_of(u));
        let (level, what) = match st.role {
            Some(Role::Host) => (Level::Major, "物理服务器"),
            _ => (Level::Warning, "虚拟机"),
        };
        let state = match st.liveness {
            Liveness::Silent => "静默（超时未上报）",
            _ => "离线",
        };
        out.push(Finding {
            key: AlarmKey {
                rule: NAME.into(),
                subject: format!("node:{}", st.node),
            },
            level,
            clause: ctx.profile.clauses.liveness.clone(),
            unit,
            title: format!("{what} {} {state}", st.node),
            evidence: serde_json::json!({
                "node": st.node,
                "liveness": st.liveness,
                "last_seen_ms": st.last_seen_ms,
                "host": s.host,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::{Alarm, AlarmBook};
    use crate::fleet::Fleet;
    use crate::policy::Engine;
    use crate::register::Register;
    use yunjian_protocol::{Body, Envelope, Hello, Status};

    #[test]
    fn offline_host_is_major_and_clears_when_back() {
        let mut fleet = Fleet::new();
        let hello = Body::Hello(Hello {
            agent_version: "t".into(),
            role: Role::Host,
            interval_ms: 1000,
            buffered: 0,
            epoch: 1,
        });
        fleet.apply(Envelope::new("h1", 0, 0, Body::Status(Status::Online)), 0);
        fleet.apply(Envelope::new("h1", 1, 0, hello), 0);
        let reg = Register::default();
        let profile = Profile::default();
        // through the engine: evaluations after the first are partial
        let mut engine = Engine::new(vec![build(&profile)], AlarmBook::new());
        let mut ctx = |f: &Fleet, now_ms: u64| -> Vec<Alarm> {
            engine.evaluate(&Context {
                fleet: f,
                register: &reg,
                profile: &profile,
                now_ms,
            });
            engine.book().open().into_iter().cloned().collect()
        };
        assert!(ctx(&fleet, 0).is_empty());
        fleet.apply(
            Envelope::new("h1", 0, 0, Body::Status(Status::Offline)),
            1_000,
        );
        // within the grace (3 intervals of 1 s): nothing yet
        assert!(ctx(&fleet, 3_999).is_empty());
        let f = ctx(&fleet, 4_000);
        assert_eq!(f.len(), 1);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in
            crate::policy::test_support::under_every_profile(build, &fleet, &reg, 4_000)
        {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.liveness);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        assert_eq!(f[0].level, Level::Major);
        assert_eq!(f[0].key.subject, "node:h1");
        // back online: nothing to report, the engine clears the alarm
        fleet.apply(
            Envelope::new("h1", 0, 0, Body::Status(Status::Online)),
            5_000,
        );
        assert!(ctx(&fleet, 9_000).is_empty());
    }

    #[test]
    fn a_vm_stopped_on_purpose_is_not_silent_until_it_runs_again() {
        let mut fleet = Fleet::new();
        let hello = Body::Hello(Hello {
            agent_version: "t".into(),
            role: Role::Guest,
            interval_ms: 1000,
            buffered: 0,
            epoch: 1,
        });
        let status = |s| Body::Status(s);
        fleet.apply(Envelope::new("vm1", 0, 0, status(Status::Online)), 0);
        fleet.apply(Envelope::new("vm1", 1, 0, hello), 0);
        let reg = Register::default();
        let profile = Profile::default();
        let mut engine = Engine::new(vec![build(&profile)], AlarmBook::new());
        let mut open = |f: &Fleet, now_ms: u64| -> Vec<Alarm> {
            engine.evaluate(&Context {
                fleet: f,
                register: &reg,
                profile: &profile,
                now_ms,
            });
            engine.book().open().into_iter().cloned().collect()
        };
        assert!(open(&fleet, 0).is_empty());
        // a reclaim case's stop goes out, the VM's agent goes offline: no alarm past the grace
        assert!(fleet.mark_stopped("vm1", Some("回收工单 #3 停机".into())));
        assert!(
            !fleet.mark_stopped("vm1", Some("回收工单 #3 停机".into())),
            "no change"
        );
        fleet.apply(Envelope::new("vm1", 1, 0, status(Status::Offline)), 1_000);
        assert!(open(&fleet, 10_000).is_empty());
        // once it runs again, a later fall is a fault again
        fleet.apply(Envelope::new("vm1", 2, 0, status(Status::Online)), 20_000);
        assert_eq!(fleet.get("vm1").unwrap().stopped_on_purpose, None);
        fleet.apply(Envelope::new("vm1", 3, 0, status(Status::Offline)), 21_000);
        let f = open(&fleet, 30_000);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].key.subject.as_str(), f[0].level),
            ("node:vm1", Level::Warning)
        );
        // an alarm raised before the stop decision clears when the stop is recorded
        assert!(fleet.mark_stopped("vm1", Some("防病毒停机".into())));
        assert!(open(&fleet, 31_000).is_empty());
        // the mark withdrawn (the stop failed): the alarm is back
        assert!(fleet.mark_stopped("vm1", None));
        assert_eq!(open(&fleet, 32_000).len(), 1);
    }
}
