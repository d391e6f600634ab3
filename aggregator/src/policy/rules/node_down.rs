//! A node that went offline or silent is a fault that may affect its unit: 001 第十六条 asks for
//! automatic alarms and telling the unit. A physical host down is major (its VMs are affected);
//! a VM down is a warning. A node must have been down for [`GRACE_INTERVALS`] report intervals
//! first, so a quick agent restart or an aggregator restart (every node is restored offline
//! until it reconnects) raises nothing.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::Liveness;
use crate::policy::{Context, Profile, Rule};
use yunjian_protocol::Role;

pub const NAME: &str = "node_down";

/// Report intervals a node must stay down before the alarm.
pub const GRACE_INTERVALS: u64 = 3;

#[derive(Debug, Default)]
pub struct NodeDown;

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(NodeDown)
}

impl Rule for NodeDown {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause(&self) -> &'static str {
        "001 第十六条"
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        for st in ctx.fleet.nodes() {
            if st.liveness == Liveness::Online
                || st.role.is_none()
                || ctx.now_ms.saturating_sub(st.liveness_since_ms)
                    < GRACE_INTERVALS * st.interval_ms()
            {
                continue;
            }
            let s = ctx.fleet.summary(st);
            let unit = s
                .smbios_uuid
                .as_deref()
                .and_then(|u| ctx.register.vm_by_uuid(u))
                .map(|v| v.unit.clone());
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
                clause: self.clause().into(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
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
        });
        fleet.apply(Envelope::new("h1", 0, 0, Body::Status(Status::Online)), 0);
        fleet.apply(Envelope::new("h1", 1, 0, hello), 0);
        let reg = Register::default();
        let profile = Profile::default();
        let mut rule = NodeDown;
        let mut ctx = |f: &Fleet, now_ms: u64| -> Vec<Finding> {
            let mut out = Vec::new();
            rule.evaluate(
                &Context {
                    fleet: f,
                    register: &reg,
                    profile: &profile,
                    now_ms,
                },
                &mut out,
            );
            out
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
        assert_eq!(f[0].level, Level::Major);
        assert_eq!(f[0].key.subject, "node:h1");
        // back online: nothing to report, the engine clears the alarm
        fleet.apply(
            Envelope::new("h1", 0, 0, Body::Status(Status::Online)),
            5_000,
        );
        assert!(ctx(&fleet, 9_000).is_empty());
    }
}
