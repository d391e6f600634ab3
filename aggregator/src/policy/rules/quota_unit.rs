//! A unit whose VMs together are bigger than its quota: the unit's own quota, or while it is
//! sanctioned the lowered one (004 第十六条 降低配额), or with neither the sum of its approved
//! allocations (000 第二十一条(五)). Sizes are what is observed of its registered VMs (see
//! [`crate::register::observe`]). Level major, one alarm per unit.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::policy::{Context, Profile, Rule};
use crate::register::observe::{excess, Sightings};
use crate::register::{Resources, VmAllocation};

pub const NAME: &str = "quota_unit";

#[derive(Debug, Default)]
pub struct QuotaUnit;

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(QuotaUnit)
}

impl Rule for QuotaUnit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause(&self) -> &'static str {
        "004 第十六条, 000 第二十一条(五)"
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Vec<Finding>) {
        let reg = ctx.register;
        let sightings = Sightings::of(ctx.fleet);
        for (unit, vms) in reg.vms_by_unit() {
            let approved: Resources = vms.iter().map(|v| v.approved()).sum();
            let seen: Vec<(&VmAllocation, Resources)> = vms
                .into_iter()
                .filter_map(|v| Some((v, sightings.get(v.uuid.as_deref()?)?.size())))
                .collect();
            let observed: Resources = seen.iter().map(|(_, size)| *size).sum();
            let (quota, source) = reg.effective_quota(unit, approved);
            let over = excess(quota, observed);
            if over.is_empty() {
                continue;
            }
            let what: Vec<String> = over
                .iter()
                .map(|e| format!("{} {} > {}", e.label(), e.observed, e.approved))
                .collect();
            out.push(Finding {
                key: AlarmKey {
                    rule: NAME.into(),
                    subject: format!("unit:{unit}"),
                },
                level: Level::Major,
                clause: self.clause().into(),
                unit: Some(unit.to_string()),
                title: format!("单位 {unit} 使用资源超出配额：{}", what.join("，")),
                evidence: serde_json::json!({
                    "unit": unit,
                    "quota": quota,
                    "quota_source": source,
                    "observed": observed,
                    "over": over,
                    "sanction": reg.units.get(unit).and_then(|u| u.sanction.as_ref()),
                    "vms": seen
                        .iter()
                        .map(|(v, size)| serde_json::json!({
                            "uuid": v.uuid, "system": v.system, "subsystem": v.subsystem,
                            "approved": v.approved(), "observed": size,
                        }))
                        .collect::<Vec<_>>(),
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::register::test_support::{evaluate, vm};
    use crate::register::{Register, Sanction, Unit};
    use yunjian_protocol::{Body, Envelope, GuestView};

    const GIB: u64 = 1024 * 1024;

    fn quota(vcpus: f64) -> Resources {
        Resources {
            vcpus,
            mem_gb: 1000.0,
            disk_gb: 10_000.0,
            net_mbps: 0.0,
        }
    }

    #[test]
    fn a_unit_over_its_quota_and_over_a_sanctions_lowered_one() {
        let uuids = ["a1", "a2", "b1"];
        let mut reg = Register {
            vms: vec![
                vm("财政局", "A1", 8),
                vm("财政局", "a2", 8),
                vm("教育局", "b1", 8),
            ],
            ..Register::default()
        };
        reg.units.insert(
            "财政局".into(),
            Unit {
                name: "财政局".into(),
                quota: Some(quota(16.0)),
                sanction: None,
            },
        );
        let mut f = Fleet::new();
        let listed = uuids
            .iter()
            .map(|u| GuestView {
                uuid: u.to_string(),
                name: u.to_string(),
                vcpus: 8,
                mem_kib: 16 * GIB,
                disk_kib: 360 * GIB,
                running: true,
            })
            .collect();
        f.apply(Envelope::new("h1", 1, 0, Body::Guests(listed)), 0);
        // 16 vCPUs in use against a quota of 16; 教育局 has no quota: its approved sum
        assert!(evaluate(&mut QuotaUnit, &f, &reg).is_empty());

        reg.units.get_mut("财政局").unwrap().quota = Some(quota(12.0));
        let out = evaluate(&mut QuotaUnit, &f, &reg);
        assert_eq!(out.len(), 1);
        let u = &out[0];
        assert_eq!((u.level, u.unit.as_deref()), (Level::Major, Some("财政局")));
        assert_eq!(u.key.subject, "unit:财政局");
        assert_eq!(u.evidence["quota_source"], "unit");
        assert_eq!(u.evidence["observed"]["vcpus"], 16.0);
        assert_eq!(u.evidence["vms"].as_array().unwrap().len(), 2);
        assert_eq!(u.title, "单位 财政局 使用资源超出配额：vCPU 16 > 12");

        // a sanction's lowered quota wins over the unit's own
        reg.units.get_mut("财政局").unwrap().quota = Some(quota(32.0));
        assert!(evaluate(&mut QuotaUnit, &f, &reg).is_empty());
        reg.units.get_mut("财政局").unwrap().sanction = Some(Sanction {
            reason: "使用率低".into(),
            since_ms: 1,
            quota: Some(quota(8.0)),
            hold_requests: true,
        });
        let out = evaluate(&mut QuotaUnit, &f, &reg);
        assert_eq!(out[0].evidence["quota_source"], "sanction");
        assert_eq!(out[0].evidence["sanction"]["reason"], "使用率低");
    }
}
