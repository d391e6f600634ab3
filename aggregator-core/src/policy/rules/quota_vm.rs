//! A VM with more vCPUs, memory or disk than its approved allocation: a unit may not change its
//! resources without an approved change request (003 第十五条). Sizes come from the
//! hypervisor's view and the guest's own inventory, joined to the register by SMBIOS UUID (see
//! [`crate::register::observe`]); below the allocation is never a violation (the kernel sees a
//! little less memory than the VM has). Level major, one alarm per VM.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::policy::{Context, Findings, Incremental, Profile, Rule};
use crate::register::observe::{excess, observe, Observation, Sightings};
use crate::register::VmAllocation;
use std::collections::HashMap;

pub const NAME: &str = "quota_vm";

/// Incremental: a VM is looked at again when what is seen of it changed (its claims' stamp,
/// see [`crate::fleet::Claims`]); everything after a register change and every
/// [`crate::policy::FULL_REFRESH_MS`].
#[derive(Debug, Default)]
pub struct QuotaVm {
    inc: Incremental,
    /// Register: lower-case UUID → index into `register.vms`, rebuilt on full evaluations.
    index: HashMap<String, usize>,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(QuotaVm::default())
}

impl Rule for QuotaVm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.quota_vm
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        match self.inc.begin(ctx, out) {
            None => {
                self.index = vm_index(ctx);
                let sightings = Sightings::of(ctx.fleet);
                for vm in &ctx.register.vms {
                    let Some(uuid) = vm.uuid.as_deref() else {
                        continue;
                    };
                    if let Some(f) = sightings
                        .get(uuid)
                        .and_then(|seen| check(vm, uuid, seen, &ctx.profile.clauses.quota_vm))
                    {
                        out.scope(&f.key.subject);
                        out.push(f);
                    }
                }
            }
            Some(since) => {
                for (uuid, claims) in crate::policy::vms_to_check(ctx, since) {
                    out.scope(&subject(uuid));
                    let Some(vm) = self.index.get(uuid).and_then(|&i| ctx.register.vms.get(i))
                    else {
                        continue;
                    };
                    if let Some(f) = observe(ctx.fleet, uuid, claims)
                        .and_then(|seen| check(vm, uuid, &seen, &ctx.profile.clauses.quota_vm))
                    {
                        out.push(f);
                    }
                }
            }
        }
    }
}

/// The register's VMs by lower-case UUID (index into `register.vms`).
pub(crate) fn vm_index(ctx: &Context<'_>) -> HashMap<String, usize> {
    ctx.register
        .vms
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((v.uuid.as_deref()?.to_ascii_lowercase(), i)))
        .collect()
}

fn subject(uuid: &str) -> String {
    format!("vm:{}", uuid.to_ascii_lowercase())
}

/// The violation, if the VM is bigger than approved.
fn check(vm: &VmAllocation, uuid: &str, seen: &Observation, clause: &str) -> Option<Finding> {
    let over = excess(vm.approved(), seen.size());
    if over.is_empty() {
        return None;
    }
    let name = seen
        .guest
        .as_ref()
        .map(|g| g.node.clone())
        .or_else(|| seen.hypervisor.as_ref().map(|h| h.domain.clone()))
        .unwrap_or_else(|| uuid.to_string());
    let what: Vec<String> = over
        .iter()
        .map(|e| format!("{} {} > {}", e.label(), e.observed, e.approved))
        .collect();
    Some(Finding {
        key: AlarmKey {
            rule: NAME.into(),
            subject: subject(uuid),
        },
        level: Level::Major,
        clause: clause.to_string(),
        unit: Some(vm.unit.clone()),
        title: format!(
            "虚拟机 {name}（{} {}）配置超出核准且无变更申请：{}",
            vm.unit,
            system_name(vm),
            what.join("，")
        ),
        evidence: serde_json::json!({
            "uuid": uuid,
            "approved": vm.approved(),
            "observed": seen.size(),
            "over": over,
            "hypervisor": seen.hypervisor,
            "guest": seen.guest,
            "register_row": vm,
        }),
    })
}

fn system_name(vm: &VmAllocation) -> &str {
    if vm.system.is_empty() {
        &vm.subsystem
    } else {
        &vm.system
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::test_support::evaluate;
    use crate::register::changes::{change, ChangeRequest};
    use crate::register::test_support::vm;
    use crate::register::Register;
    use yunjian_protocol::{Body, Envelope, GuestView, Inventory, Role};

    const UUID: &str = "4c4c4544-0042-3510-8058-b4c04f384d32";
    const GIB: u64 = 1024 * 1024;

    fn listed(vcpus: u16, mem_gb: u64) -> Body {
        Body::Guests(vec![GuestView {
            uuid: UUID.to_uppercase(),
            name: "caiwu-app-01".into(),
            vcpus,
            mem_kib: mem_gb * GIB,
            disk_kib: 360 * GIB,
            running: true,
        }])
    }

    #[test]
    fn grown_without_a_change_request_is_a_violation_until_one_is_approved() {
        let mut reg = Register {
            vms: vec![vm("财政局", UUID, 8)],
            ..Register::default()
        };
        let mut f = Fleet::new();
        f.apply(Envelope::new("h1", 1, 0, listed(8, 16)), 0);
        assert!(evaluate(&mut QuotaVm::default(), &f, &reg).is_empty());
        // someone gave the VM 16 vCPUs on the hypervisor
        f.apply(Envelope::new("h1", 2, 0, listed(16, 16)), 0);
        let out = evaluate(&mut QuotaVm::default(), &f, &reg);
        assert_eq!(out.len(), 1);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, 0) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.quota_vm);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        let v = &out[0];
        assert_eq!((v.level, v.unit.as_deref()), (Level::Major, Some("财政局")));
        assert_eq!(v.key.subject, format!("vm:{UUID}"));
        assert_eq!(
            (
                v.evidence["approved"]["vcpus"].as_f64(),
                v.evidence["observed"]["vcpus"].as_f64()
            ),
            (Some(8.0), Some(16.0))
        );
        assert_eq!(v.evidence["over"][0]["resource"], "vcpus");
        assert_eq!(v.evidence["register_row"]["subsystem"], "财务管理系统");
        assert_eq!(v.evidence["hypervisor"]["host"], "h1");
        assert_eq!(
            v.title,
            "虚拟机 caiwu-app-01（财政局 预算一体化）配置超出核准且无变更申请：vCPU 16 > 8"
        );
        // the approved change request to 16 makes it lawful
        let req = ChangeRequest {
            approved_by: "大数据局".into(),
            vcpus: Some(16),
            reason: "扩容".into(),
            ..ChangeRequest::default()
        };
        reg.apply(
            change(
                &reg,
                UUID,
                &crate::identity::Actor::person("ops-li", crate::identity::Role::Ops, None),
                &req,
                1,
            )
            .unwrap()
            .record,
        );
        assert!(evaluate(&mut QuotaVm::default(), &f, &reg).is_empty());
    }

    #[test]
    fn the_guests_own_view_counts_and_less_memory_is_fine() {
        let reg = Register {
            vms: vec![vm("财政局", UUID, 8)],
            ..Register::default()
        };
        let mut f = Fleet::new();
        let inv = |cores: u16| {
            Body::Inventory(Inventory {
                hostname: "caiwu".into(),
                role: Role::Guest,
                os: String::new(),
                kernel: String::new(),
                cpu_model: String::new(),
                cpu_cores: cores,
                // the kernel sees 15.6 of the 16 GB
                mem_total_kib: 15_600 * 1024,
                disks: vec![],
                nics: vec![],
                machine_id: String::new(),
                smbios_uuid: Some(UUID.into()),
                rack: None,
            })
        };
        f.apply(Envelope::new("caiwu", 1, 0, inv(8)), 0);
        assert!(evaluate(&mut QuotaVm::default(), &f, &reg).is_empty());
        f.apply(Envelope::new("caiwu", 2, 0, inv(12)), 0);
        let out = evaluate(&mut QuotaVm::default(), &f, &reg);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence["guest"]["node"], "caiwu");
        assert_eq!(out[0].evidence["observed"]["vcpus"], 12.0);
    }
}
