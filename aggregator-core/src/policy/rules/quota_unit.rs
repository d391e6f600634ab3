//! A unit whose VMs together are bigger than its quota: the unit's own quota, or while it is
//! sanctioned the lowered one (004 第十六条 降低配额), or with neither the sum of its approved
//! allocations (000 第二十一条(五)). Sizes are what is observed of its registered VMs (see
//! [`crate::register::observe`]). Level major, one alarm per unit.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::policy::{Context, Findings, Incremental, Profile, Rule};
use crate::register::observe::{excess, observe};
use crate::register::{Resources, VmAllocation};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const NAME: &str = "quota_unit";

/// Incremental: a unit is summed again when what is seen of one of its VMs changed;
/// everything after a register change and every [`crate::policy::FULL_REFRESH_MS`].
#[derive(Debug, Default)]
pub struct QuotaUnit {
    inc: Incremental,
    /// Register, rebuilt on full evaluations: each unit's VMs (indexes into `register.vms`)
    /// and the unit of each lower-case UUID.
    units: BTreeMap<String, Vec<usize>>,
    unit_of: HashMap<String, String>,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(QuotaUnit::default())
}

impl Rule for QuotaUnit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.quota_unit
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        match self.inc.begin(ctx, out) {
            None => {
                self.index(ctx);
                for unit in self.units.keys() {
                    if let Some(f) = self.check(ctx, unit) {
                        out.scope(&f.key.subject);
                        out.push(f);
                    }
                }
            }
            Some(since) => {
                let dirty: BTreeSet<&String> = crate::policy::vms_to_check(ctx, since)
                    .into_iter()
                    .filter_map(|(uuid, _)| self.unit_of.get(uuid))
                    .collect();
                for unit in dirty {
                    out.scope(&subject(unit));
                    if let Some(f) = self.check(ctx, unit) {
                        out.push(f);
                    }
                }
            }
        }
    }
}

fn subject(unit: &str) -> String {
    format!("unit:{unit}")
}

impl QuotaUnit {
    fn index(&mut self, ctx: &Context<'_>) {
        let reg = ctx.register;
        // every unit, those with a unit row and no VMs too; VMs in register order
        let mut units: BTreeMap<String, Vec<usize>> =
            reg.units.keys().map(|u| (u.clone(), Vec::new())).collect();
        for (i, v) in reg.vms.iter().enumerate() {
            units.entry(v.unit.clone()).or_default().push(i);
        }
        self.units = units;
        self.unit_of = reg
            .vms
            .iter()
            .filter_map(|v| Some((v.uuid.as_deref()?.to_ascii_lowercase(), v.unit.clone())))
            .collect();
    }

    /// The unit's violation, if its observed VMs are above its quota.
    fn check(&self, ctx: &Context<'_>, unit: &str) -> Option<Finding> {
        let reg = ctx.register;
        let vms: Vec<&VmAllocation> = self
            .units
            .get(unit)?
            .iter()
            .filter_map(|&i| reg.vms.get(i))
            .collect();
        let approved: Resources = vms.iter().map(|v| v.approved()).sum();
        let seen: Vec<(&VmAllocation, Resources)> = vms
            .into_iter()
            .filter_map(|v| {
                let uuid = v.uuid.as_deref()?.to_ascii_lowercase();
                let claims = ctx.fleet.claims_of(&uuid)?;
                Some((v, observe(ctx.fleet, &uuid, claims)?.size()))
            })
            .collect();
        let observed: Resources = seen.iter().map(|(_, size)| *size).sum();
        let (quota, source) = reg.effective_quota(unit, approved);
        let over = excess(quota, observed);
        if over.is_empty() {
            return None;
        }
        let what: Vec<String> = over
            .iter()
            .map(|e| format!("{} {} > {}", e.label(), e.observed, e.approved))
            .collect();
        Some(Finding {
            key: AlarmKey {
                rule: NAME.into(),
                subject: subject(unit),
            },
            level: Level::Major,
            clause: ctx.profile.clauses.quota_unit.clone(),
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::policy::test_support::evaluate;
    use crate::register::test_support::vm;
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
        assert!(evaluate(&mut QuotaUnit::default(), &f, &reg).is_empty());

        reg.units.get_mut("财政局").unwrap().quota = Some(quota(12.0));
        let out = evaluate(&mut QuotaUnit::default(), &f, &reg);
        assert_eq!(out.len(), 1);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, 0) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.quota_unit);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        let u = &out[0];
        assert_eq!((u.level, u.unit.as_deref()), (Level::Major, Some("财政局")));
        assert_eq!(u.key.subject, "unit:财政局");
        assert_eq!(u.evidence["quota_source"], "unit");
        assert_eq!(u.evidence["observed"]["vcpus"], 16.0);
        assert_eq!(u.evidence["vms"].as_array().unwrap().len(), 2);
        assert_eq!(u.title, "单位 财政局 使用资源超出配额：vCPU 16 > 12");

        // a sanction's lowered quota wins over the unit's own
        reg.units.get_mut("财政局").unwrap().quota = Some(quota(32.0));
        assert!(evaluate(&mut QuotaUnit::default(), &f, &reg).is_empty());
        reg.units.get_mut("财政局").unwrap().sanction = Some(Sanction {
            reason: "使用率低".into(),
            since_ms: 1,
            quota: Some(quota(8.0)),
            hold_requests: true,
        });
        let out = evaluate(&mut QuotaUnit::default(), &f, &reg);
        assert_eq!(out[0].evidence["quota_source"], "sanction");
        assert_eq!(out[0].evidence["sanction"]["reason"], "使用率低");
    }
}
