//! What one request may see: everything for the cloud's roles; for a using unit's people
//! (使用单位) only the VMs the allocation register gives their unit. A VM no unit registered
//! is nobody's, a host is never a unit's, and which host runs a unit's VM is the cloud's
//! business. Handlers answer another unit's object as if it did not exist (404, never 403)
//! and count only what they show, so totals say nothing about other units.

use super::session::Principal;
use super::AppState;
use crate::fleet::NodeSummary;
use crate::register::Register;
use std::collections::HashSet;
use std::sync::PoisonError;

#[derive(Debug, Clone)]
pub enum Scope {
    /// Every object.
    Cloud,
    /// One unit's registered VMs.
    Unit {
        name: String,
        /// Their SMBIOS UUIDs, lower case.
        vms: HashSet<String>,
    },
}

impl Scope {
    /// The scope of `unit`'s people (`None`: the cloud's) as the register stands.
    pub fn of(unit: Option<&str>, register: &Register) -> Scope {
        match unit {
            None => Scope::Cloud,
            Some(name) => Scope::Unit {
                name: name.to_string(),
                vms: register
                    .vms
                    .iter()
                    .filter(|v| v.unit == name)
                    .filter_map(|v| v.uuid.as_deref())
                    .map(str::to_ascii_lowercase)
                    .collect(),
            },
        }
    }

    /// The scope of the user behind a request (takes the register's read lock briefly).
    pub fn of_request(who: &Principal, app: &AppState) -> Scope {
        let register = app.register.read().unwrap_or_else(PoisonError::into_inner);
        Scope::of(who.own_unit(), &register)
    }

    pub fn is_cloud(&self) -> bool {
        matches!(self, Scope::Cloud)
    }

    /// The VM with this SMBIOS UUID (any case; `None`: not known) is visible.
    pub fn sees_vm(&self, uuid: Option<&str>) -> bool {
        match self {
            Scope::Cloud => true,
            Scope::Unit { vms, .. } => uuid.is_some_and(|u| vms.contains(&u.to_ascii_lowercase())),
        }
    }

    /// Objects about `unit` (`None`: cloud-wide ones) are visible.
    pub fn sees_unit(&self, unit: Option<&str>) -> bool {
        match self {
            Scope::Cloud => true,
            Scope::Unit { name, .. } => unit == Some(name.as_str()),
        }
    }

    /// The node as this scope shows it: a unit sees its VMs without their host, and no host.
    pub fn node(&self, mut n: NodeSummary) -> Option<NodeSummary> {
        if self.is_cloud() {
            return Some(n);
        }
        let visible = n.role != Some("host") && self.sees_vm(n.smbios_uuid.as_deref());
        visible.then(|| {
            n.host = None;
            n
        })
    }

    /// Evidence as this scope shows it: a unit is not told which host runs its VM (the rules
    /// name it as `host`, or as `hypervisor.host` with what the host sees of the VM).
    pub fn evidence(&self, evidence: &mut serde_json::Value) {
        if self.is_cloud() {
            return;
        }
        if let Some(e) = evidence.as_object_mut() {
            e.remove("host");
            if let Some(h) = e.get_mut("hypervisor").and_then(|h| h.as_object_mut()) {
                h.remove("host");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Liveness;

    fn summary(node: &str, role: &'static str, uuid: &str) -> NodeSummary {
        NodeSummary {
            node: node.into(),
            role: Some(role),
            liveness: Liveness::Online,
            hostname: None,
            rack: None,
            host: Some("host-1".into()),
            vm_count: 0,
            smbios_uuid: Some(uuid.into()),
            cpu_pct: None,
            mem_pct: None,
            disk_pct: None,
            net_rx_bps: None,
            net_tx_bps: None,
            cpu_cores: None,
            mem_total_kib: None,
            last_seen_ms: 0,
            last_report_ts_ms: 0,
            last_seq: 0,
            received: 0,
            duplicates: 0,
            missing: 0,
        }
    }

    #[test]
    fn a_unit_sees_its_registered_vms_without_their_host_and_nothing_else() {
        let unit = Scope::Unit {
            name: "财政局".into(),
            vms: HashSet::from(["aa-01".to_string()]),
        };
        let mine = unit.node(summary("vm-1", "guest", "AA-01")).unwrap();
        assert_eq!(mine.host, None);
        assert!(unit.node(summary("vm-2", "guest", "bb-02")).is_none());
        assert!(unit.node(summary("h-1", "host", "aa-01")).is_none());
        assert!(unit.sees_unit(Some("财政局")) && !unit.sees_unit(None));
        assert_eq!(
            Scope::Cloud
                .node(summary("vm-2", "guest", "bb-02"))
                .unwrap()
                .host
                .as_deref(),
            Some("host-1")
        );
        let mut evidence = serde_json::json!({"hypervisor": {"host": "h-1", "domain": "d"}});
        unit.evidence(&mut evidence);
        assert_eq!(evidence, serde_json::json!({"hypervisor": {"domain": "d"}}));
        let mut evidence = serde_json::json!({"node": "vm-1", "host": "h-1"});
        unit.evidence(&mut evidence);
        assert_eq!(evidence, serde_json::json!({"node": "vm-1"}));
    }
}
