//! Claims of one VM that contradict each other: two hypervisor hosts list the same UUID, or two
//! VMs report it as their own SMBIOS UUID. The reports cannot tell which one is the VM (or
//! its host), so commands for the VM are held back until it is resolved (the reclaim service
//! asks [`crate::fleet::Fleet::command_host`], which refuses a contested VM), and this alarm
//! says so. It clears by itself once only one claimant of each kind is left. Level major:
//! a contested VM cannot be stopped, downsized or released, and a node may be impersonating
//! another (001 第十六条: automatic alarms; 003 第二十一条: the approved plan is carried out on
//! the right VM).

use crate::alarms::{AlarmKey, Finding, Level};
use crate::fleet::{ClaimConflict, Claims};
use crate::policy::{Context, Findings, Incremental, Profile, Rule};

pub const NAME: &str = "vm_claim_conflict";

/// Incremental: a VM is looked at again when its claims changed.
#[derive(Debug, Default)]
pub struct VmClaimConflict {
    inc: Incremental,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(VmClaimConflict::default())
}

impl Rule for VmClaimConflict {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.vm_claim_conflict
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        match self.inc.begin(ctx, out) {
            None => {
                for (uuid, claims) in ctx.fleet.claims() {
                    if let Some(f) = check(uuid, claims, &ctx.profile.clauses.vm_claim_conflict) {
                        out.scope(&f.key.subject);
                        out.push(f);
                    }
                }
            }
            Some(since) => {
                for (uuid, claims) in crate::policy::vms_to_check(ctx, since) {
                    out.scope(&subject(uuid));
                    if let Some(f) = check(uuid, claims, &ctx.profile.clauses.vm_claim_conflict) {
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

fn check(uuid: &str, claims: &Claims, clause: &str) -> Option<Finding> {
    let conflict = claims.conflict()?;
    let who = match &conflict {
        ClaimConflict::Hosts(_) => "宿主机",
        ClaimConflict::Guests(_) => "虚拟机",
    };
    Some(Finding {
        key: AlarmKey {
            rule: NAME.into(),
            subject: subject(uuid),
        },
        level: Level::Major,
        clause: clause.to_string(),
        unit: None,
        title: format!(
            "虚拟机 UUID {uuid} 的归属冲突：{conflict}；在查明并消除多余的{who}声明之前，不向该虚拟机下发任何指令"
        ),
        evidence: serde_json::json!({
            "uuid": uuid,
            "conflict": conflict,
            "hosts": claims.hosts,
            "guests": claims.guests,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::test_support::evaluate;
    use crate::register::Register;
    use yunjian_protocol::{Body, Envelope, GuestView, Inventory, Role};

    const UUID: &str = "4c4c4544-0001-0002-0003-000000000001";

    fn listed(uuid: &str) -> GuestView {
        GuestView {
            uuid: uuid.into(),
            name: "czj-app-01".into(),
            vcpus: 2,
            mem_kib: 1,
            disk_kib: 1,
            running: true,
        }
    }

    fn guest_inventory(uuid: &str) -> Body {
        Body::Inventory(Inventory {
            hostname: "vm".into(),
            role: Role::Guest,
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
    fn two_hosts_listing_one_vm_raise_one_major_alarm_that_clears_when_one_lets_go() {
        let mut f = Fleet::new();
        let reg = Register::default();
        f.apply(
            Envelope::new("h1", 1, 0, Body::Guests(vec![listed(UUID)])),
            0,
        );
        f.apply(Envelope::new("vm", 1, 0, guest_inventory(UUID)), 0);
        let mut rule = VmClaimConflict::default();
        assert!(evaluate(&mut rule, &f, &reg).is_empty(), "one host, one VM");
        f.apply(
            Envelope::new("h2", 1, 0, Body::Guests(vec![listed(&UUID.to_uppercase())])),
            0,
        );
        let found = evaluate(&mut rule, &f, &reg);
        assert_eq!(found.len(), 1);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, 0) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.vm_claim_conflict);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        assert_eq!(found[0].level, Level::Major);
        assert_eq!(found[0].key.subject, format!("vm:{UUID}"));
        assert!(found[0].title.contains("h1、h2"), "{}", found[0].title);
        f.apply(Envelope::new("h2", 2, 0, Body::Guests(vec![])), 0);
        assert!(evaluate(&mut rule, &f, &reg).is_empty());
    }

    #[test]
    fn two_vms_reporting_one_smbios_uuid_raise_the_alarm_a_host_uuid_does_not() {
        let mut f = Fleet::new();
        let reg = Register::default();
        f.apply(
            Envelope::new("h1", 1, 0, Body::Guests(vec![listed(UUID)])),
            0,
        );
        f.apply(Envelope::new("vm-a", 1, 0, guest_inventory(UUID)), 0);
        // a host's own SMBIOS UUID is not a VM claim
        let mut host_inv = guest_inventory(UUID);
        if let Body::Inventory(i) = &mut host_inv {
            i.role = Role::Host;
        }
        f.apply(Envelope::new("h9", 1, 0, host_inv), 0);
        let mut rule = VmClaimConflict::default();
        assert!(evaluate(&mut rule, &f, &reg).is_empty());
        f.apply(Envelope::new("vm-b", 1, 0, guest_inventory(UUID)), 0);
        let found = evaluate(&mut rule, &f, &reg);
        assert_eq!(found.len(), 1);
        assert!(found[0].title.contains("vm-a、vm-b"), "{}", found[0].title);
    }
}
