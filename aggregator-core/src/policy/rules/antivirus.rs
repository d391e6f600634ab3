//! The mandated antivirus (003 附件1 承诺书; 001 第九条(四)). A VM whose antivirus was
//! removed is critical: the unit promised never to uninstall it, and its VM may be stopped
//! (the stop needs the authority's approval: `POST /api/antivirus/{node}/stop-request`). An
//! antivirus not running, with stale signatures, or never installed is a warning: units must
//! install and update antivirus on their cloud hosts. See [`crate::antivirus`] for the states.

use crate::alarms::{AlarmKey, Finding, Level};
use crate::antivirus::{AvState, FIRST_REPORT_GRACE_MS};
use crate::fleet::NodeState;
use crate::policy::{Context, Findings, NodeScan, Profile, Rule};

pub const NAME: &str = "antivirus";

/// Incremental: a node is looked at again when its antivirus track, liveness or inventory
/// changed; everything every [`crate::policy::FULL_REFRESH_MS`] (signatures age with time).
#[derive(Debug, Default)]
pub struct Antivirus {
    /// Nodes within the wait for a first antivirus report are watched on every pass.
    scan: NodeScan,
}

pub fn build(_: &Profile) -> Box<dyn Rule> {
    Box::new(Antivirus::default())
}

impl Rule for Antivirus {
    fn name(&self) -> &'static str {
        NAME
    }

    fn clause<'p>(&self, profile: &'p Profile) -> &'p str {
        &profile.clauses.antivirus_removed
    }

    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings) {
        for st in self.scan.begin(ctx, out) {
            let waiting = ctx.now_ms.saturating_sub(st.liveness_since_ms)
                <= FIRST_REPORT_GRACE_MS + crate::policy::TIME_SLACK_MS;
            self.scan.watch(&st.node, waiting);
            out.scope(&st.node);
            self.node(ctx, st, out);
        }
    }
}

impl Antivirus {
    fn node(&self, ctx: &Context<'_>, st: &NodeState, out: &mut Findings) {
        let max_age = ctx.profile.antivirus.signature_max_age_days;
        let Some(a) = st.antivirus_assessment(max_age, ctx.now_ms) else {
            return;
        };
        let c = &ctx.profile.clauses;
        let (level, clause, what) = match a.state {
            AvState::Removed => (Level::Critical, &c.antivirus_removed, "杀毒软件已被卸载"),
            AvState::Degraded => (Level::Warning, &c.antivirus_missing, "杀毒软件异常"),
            AvState::Missing => (Level::Warning, &c.antivirus_missing, "未安装杀毒软件"),
            AvState::Unknown | AvState::Compliant => return,
        };
        let uuid = st.inventory.as_ref().and_then(|i| i.smbios_uuid.as_deref());
        let unit = uuid.and_then(|u| self.scan.unit_of(u));
        let products: Vec<&str> = a.removals.iter().map(|r| r.profile.as_str()).collect();
        let title = match a.state {
            AvState::Removed => format!(
                "虚拟机 {} {what}（{}），可申请停止虚拟机",
                st.node,
                products.join("、")
            ),
            _ => format!("虚拟机 {} {what}", st.node),
        };
        out.push(Finding {
            key: AlarmKey {
                rule: NAME.into(),
                subject: format!("node:{}/{}", st.node, serde_plain(a.state)),
            },
            level,
            clause: clause.clone(),
            unit,
            title,
            evidence: serde_json::json!({
                "node": st.node,
                "smbios_uuid": uuid,
                "state": a.state,
                "notes": a.notes,
                "removals": a.removals,
                "stop": st.antivirus.history.stop,
            }),
        });
    }
}

/// The state's name as in the JSON API (`removed`, `degraded`...).
fn serde_plain(state: AvState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::register::{Register, ServerType, VmAllocation};
    use yunjian_protocol::{
        AntivirusPackage, AntivirusProduct, AntivirusReport, Body, Envelope, Hello, Inventory,
        PackageState, Role, Status,
    };

    const UUID: &str = "4c4c4544-0042-3510-8058-b4c04f384d32";

    fn register() -> Register {
        Register {
            vms: vec![VmAllocation {
                zone: "政务外网".into(),
                developer: "某软件公司".into(),
                unit: "区财政局".into(),
                system: "财政一体化".into(),
                subsystem: String::new(),
                server_type: ServerType::App,
                owner: "李工".into(),
                email: String::new(),
                phone: String::new(),
                vcpus: 4,
                mem_gb: 8,
                sys_disk_gb: 100,
                data_disk_gb: 0,
                os: "Kylin V10".into(),
                clustered: false,
                cluster_group: String::new(),
                note: String::new(),
                uuid: Some(UUID.to_ascii_uppercase()),
                term: Default::default(),
            }],
            ..Register::default()
        }
    }

    fn av(installed: bool) -> Body {
        Body::Antivirus(AntivirusReport {
            products: vec![AntivirusProduct {
                profile: "trend-ds-agent".into(),
                package: installed.then(|| AntivirusPackage {
                    name: "ds-agent".into(),
                    version: "20.0.1-3180".into(),
                    state: PackageState::Installed,
                }),
                paths: vec![],
                unit: None,
                processes: if installed {
                    vec!["ds_agent".into()]
                } else {
                    vec![]
                },
                version: None,
                signatures_s: None,
            }],
            errors: vec![],
        })
    }

    fn vm() -> Fleet {
        let mut f = Fleet::new();
        f.apply(Envelope::new("vm1", 0, 0, Body::Status(Status::Online)), 0);
        let hello = Body::Hello(Hello {
            agent_version: "t".into(),
            role: Role::Guest,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        });
        f.apply(Envelope::new("vm1", 1, 0, hello), 0);
        let inv = Inventory {
            hostname: "vm1".into(),
            role: Role::Guest,
            os: String::new(),
            kernel: String::new(),
            cpu_model: String::new(),
            cpu_cores: 4,
            mem_total_kib: 1,
            disks: vec![],
            nics: vec![],
            machine_id: String::new(),
            smbios_uuid: Some(UUID.into()),
            rack: None,
        };
        f.apply(Envelope::new("vm1", 2, 0, Body::Inventory(inv)), 0);
        f
    }

    /// Past the grace for a first antivirus report.
    const LATER: u64 = crate::antivirus::FIRST_REPORT_GRACE_MS;

    fn findings(f: &Fleet, reg: &Register, now_ms: u64) -> Vec<Finding> {
        let profile = Profile::default();
        let mut out = Findings::new();
        Antivirus::default().evaluate(
            &Context {
                fleet: f,
                register: reg,
                profile: &profile,
                now_ms,
            },
            &mut out,
        );
        out.into_vec()
    }

    #[test]
    fn a_removal_is_critical_for_the_vms_unit_and_missing_is_a_warning() {
        let reg = register();
        let mut f = vm();
        assert!(
            findings(&f, &reg, LATER - 1).is_empty(),
            "just connected: its first report may still come"
        );
        let missing = findings(&f, &reg, LATER);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            (missing[0].level, missing[0].clause.as_str()),
            (
                Level::Warning,
                Profile::default().clauses.antivirus_missing.as_str()
            )
        );
        assert_eq!(missing[0].key.subject, "node:vm1/missing");
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, LATER) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.antivirus_missing);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }

        f.apply(Envelope::new("vm1", 3, 1_000, av(true)), 1);
        assert!(findings(&f, &reg, LATER).is_empty(), "compliant");
        f.apply(Envelope::new("vm1", 4, 2_000, av(false)), 2);
        let one = findings(&f, &reg, LATER);
        assert_eq!((one.len(), one[0].level), (1, Level::Warning), "gone once");
        f.apply(Envelope::new("vm1", 5, 3_000, av(false)), 3);
        let removed = findings(&f, &reg, LATER);
        let [r] = &removed[..] else {
            panic!("{removed:?}")
        };
        assert_eq!(r.level, Level::Critical);
        assert_eq!(r.clause, Profile::default().clauses.antivirus_removed);
        // under every profile, the alarm cites that profile's own document
        for (p, found) in crate::policy::test_support::under_every_profile(build, &f, &reg, LATER) {
            assert!(!found.is_empty(), "under {}", p.name);
            for x in &found {
                assert_eq!(x.clause, p.clauses.antivirus_removed);
                crate::policy::test_support::assert_cites_own(&p, &x.clause);
            }
        }
        assert_eq!(r.unit.as_deref(), Some("区财政局"));
        assert_eq!(r.key.subject, "node:vm1/removed");
        assert!(r.title.contains("trend-ds-agent"), "{}", r.title);
        assert_eq!(r.evidence["removals"][0]["last_present_ms"], 1_000);
        assert_eq!(r.evidence["removals"][0]["gone"][0]["kind"], "package");

        // a physical host is not judged
        let mut hosts = Fleet::new();
        let hello = Body::Hello(Hello {
            agent_version: "t".into(),
            role: Role::Host,
            interval_ms: 10_000,
            buffered: 0,
            epoch: 1,
        });
        hosts.apply(Envelope::new("h1", 1, 0, hello), 0);
        assert!(findings(&hosts, &reg, LATER).is_empty());
    }
}
