//! A VM running on the cloud with no entry in the allocation register: resources go to units
//! only through an approved request (000 第二十一条), and a VM nobody registered is a change
//! outside it (003 第十五条). A VM counts as seen when its own agent reports its SMBIOS UUID or
//! a hypervisor lists it; both sightings are one alarm, per UUID. Level warning.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::policy::{Context, Findings, Incremental, Profile, Rule};
use crate::register::observe::{observe, Observation, Sightings};
use std::collections::HashSet;

pub const NAME: &str = "unregistered_vm";

/// Incremental like [`super::quota_vm::QuotaVm`]: a VM is looked at again when what is seen
/// of it changed.
#[derive(Debug, Default)]
pub struct UnregisteredVm {
    inc: Incremental,
    /// Registered lower-case UUIDs, rebuilt on full evaluations.
    registered: HashSet<String>,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(UnregisteredVm::default())
}

impl Rule for UnregisteredVm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.unregistered_vm
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        match self.inc.begin(ctx, out) {
            None => {
                self.registered = ctx.register.uuid_index().into_keys().collect();
                for (uuid, seen) in Sightings::of(ctx.fleet).iter() {
                    if let Some(f) = self.check(uuid, seen, &ctx.profile.clauses.unregistered_vm) {
                        out.scope(&f.key.subject);
                        out.push(f);
                    }
                }
            }
            Some(since) => {
                for (uuid, claims) in crate::policy::vms_to_check(ctx, since) {
                    out.scope(&subject(uuid));
                    if let Some(f) = observe(ctx.fleet, uuid, claims).and_then(|seen| {
                        self.check(uuid, &seen, &ctx.profile.clauses.unregistered_vm)
                    }) {
                        out.push(f);
                    }
                }
            }
        }
    }
}

fn subject(uuid: &str) -> String {
    format!("vm:{uuid}")
}

impl UnregisteredVm {
    fn check(&self, uuid: &str, seen: &Observation, clause: &str) -> Option<Finding> {
        if self.registered.contains(uuid) {
            return None;
        }
        let name = match (&seen.guest, &seen.hypervisor) {
            (Some(g), _) => g.node.clone(),
            (None, Some(h)) => format!("{}（宿主机 {}）", h.domain, h.host),
            (None, None) => return None,
        };
        Some(Finding {
            key: AlarmKey {
                rule: NAME.into(),
                subject: subject(uuid),
            },
            level: Level::Warning,
            clause: clause.to_string(),
            unit: None,
            title: format!("虚拟机 {name} 未在资源登记表中（UUID {uuid}）"),
            evidence: serde_json::json!({
                "uuid": uuid,
                "guest": seen.guest,
                "hypervisor": seen.hypervisor,
                "size": seen.size(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::test_support::evaluate;
    use crate::register::test_support::vm;
    use crate::register::Register;
    use yunjian_protocol::{Body, Envelope, GuestView, Inventory, Role};

    const KNOWN: &str = "11111111-2222-3333-4444-555555555555";
    const GUEST_SEEN: &str = "aaaaaaaa-2222-3333-4444-555555555555";
    const HOST_SEEN: &str = "bbbbbbbb-2222-3333-4444-555555555555";

    fn inventory(role: Role, uuid: &str) -> Body {
        Body::Inventory(Inventory {
            hostname: "n".into(),
            role,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: 2,
            mem_total_kib: 1,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some(uuid.into()),
            rack: None,
        })
    }

    #[test]
    fn a_vm_seen_either_way_without_an_entry_is_one_warning() {
        let mut f = Fleet::new();
        let listed = |uuid: &str| GuestView {
            uuid: uuid.to_uppercase(),
            name: format!("dom-{}", &uuid[..4]),
            vcpus: 2,
            mem_kib: 1,
            disk_kib: 1,
            running: true,
        };
        f.apply(
            Envelope::new(
                "h1",
                1,
                0,
                Body::Guests(vec![listed(KNOWN), listed(GUEST_SEEN), listed(HOST_SEEN)]),
            ),
            0,
        );
        f.apply(
            Envelope::new("vm-a", 1, 0, inventory(Role::Guest, GUEST_SEEN)),
            0,
        );
        f.apply(
            Envelope::new("vm-k", 1, 0, inventory(Role::Guest, KNOWN)),
            0,
        );
        // a physical host's own SMBIOS UUID is not a VM
        f.apply(
            Envelope::new(
                "h1",
                2,
                0,
                inventory(Role::Host, "cccccccc-2222-3333-4444-555555555555"),
            ),
            0,
        );
        let reg = Register {
            vms: vec![vm("财政局", KNOWN, 8)],
            ..Register::default()
        };
        let out = evaluate(&mut UnregisteredVm::default(), &f, &reg);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, 0) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.unregistered_vm);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        let subjects: Vec<&str> = out.iter().map(|f| f.key.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [format!("vm:{GUEST_SEEN}"), format!("vm:{HOST_SEEN}")]
        );
        assert!(out
            .iter()
            .all(|f| f.level == Level::Warning && f.unit.is_none()));
        assert_eq!(out[0].evidence["guest"]["node"], "vm-a");
        assert_eq!(out[0].evidence["hypervisor"]["host"], "h1");
        assert_eq!(
            out[1].title,
            format!("虚拟机 dom-bbbb（宿主机 h1） 未在资源登记表中（UUID {HOST_SEEN}）")
        );
    }
}
