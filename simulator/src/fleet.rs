//! A scenario expanded into its nodes: ids, roles, sizes, workloads and VM UUIDs.
//!
//! Everything here is decided by the scenario seed and the node id, never by the order in
//! which things run, so the same scenario always gives the same fleet.

use crate::profile::{Profile, Workload};
use crate::rng::{hash_str, uuid_string, Rng};
use crate::scenario::{ProfileWeights, Scenario, ScenarioError};
use std::ops::Range;
use yunjian_protocol::Role;

/// One simulated node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The node id, e.g. `rack1-h03-vm2`.
    pub id: String,
    /// Index of the rack in [`Scenario::racks`].
    pub rack: usize,
    /// Seed of this node's own facts (machine id, uptime, disk growth...).
    pub seed: u64,
    pub workload: Workload,
    pub kind: NodeKind,
}

/// Host or guest, with what links them.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Host {
        /// Indices of this host's VMs in [`Fleet::nodes`].
        guests: Range<usize>,
    },
    Guest {
        /// Index of the host in [`Fleet::nodes`].
        host: usize,
        /// Index of the VM template in the rack's [`crate::scenario::Rack::vms`].
        template: usize,
        /// SMBIOS UUID, equal to the hypervisor's domain UUID.
        uuid: String,
    },
}

impl NodeSpec {
    pub fn role(&self) -> Role {
        match self.kind {
            NodeKind::Host { .. } => Role::Host,
            NodeKind::Guest { .. } => Role::Guest,
        }
    }
}

/// The expanded scenario: hosts first (in rack order), then VMs (grouped by host).
#[derive(Debug, Clone)]
pub struct Fleet {
    scenario: Scenario,
    nodes: Vec<NodeSpec>,
    hosts: usize,
}

/// The SMBIOS UUID of VM `node` in a scenario with `seed`.
pub fn vm_uuid(seed: u64, node: &str) -> String {
    uuid_string(
        hash_str(seed, &format!("smbios-hi/{node}")),
        hash_str(seed, &format!("smbios-lo/{node}")),
    )
}

fn pick_profile(weights: &ProfileWeights, rng: &mut Rng) -> Profile {
    let (profiles, w): (Vec<Profile>, Vec<u32>) = weights.iter().map(|(p, w)| (*p, *w)).unzip();
    rng.weighted(&w).map_or(Profile::Idle, |i| profiles[i])
}

impl Fleet {
    /// Validate `scenario` and expand it.
    pub fn build(scenario: Scenario) -> Result<Self, ScenarioError> {
        scenario
            .validate()
            .map_err(|message| ScenarioError::Invalid {
                origin: "<built>".into(),
                message,
            })?;
        let seed = scenario.seed;
        let hosts: usize = scenario.racks.iter().map(|r| r.hosts as usize).sum();
        let mut nodes = Vec::with_capacity(scenario.node_count());
        let mut vms = Vec::new();
        for (ri, rack) in scenario.racks.iter().enumerate() {
            let template_weights: Vec<u32> = rack.vms.iter().map(|v| v.weight).collect();
            for n in 1..=rack.hosts {
                let host_idx = nodes.len();
                let id = rack.host_id(n);
                let mut rng = Rng::for_key(seed, &id);
                let first_vm = hosts + vms.len();
                for v in 1..=rack.vms_per_host {
                    let vm_id = rack.vm_id(n, v);
                    let mut vrng = Rng::for_key(seed, &vm_id);
                    let template = vrng.weighted(&template_weights).unwrap_or(0);
                    let profile = pick_profile(&rack.vms[template].profiles, &mut vrng);
                    vms.push(NodeSpec {
                        workload: Workload::new(profile, &mut vrng),
                        seed: vrng.next_u64(),
                        kind: NodeKind::Guest {
                            host: host_idx,
                            template,
                            uuid: vm_uuid(seed, &vm_id),
                        },
                        id: vm_id,
                        rack: ri,
                    });
                }
                let profile = pick_profile(&rack.host.profiles, &mut rng);
                nodes.push(NodeSpec {
                    workload: Workload::new(profile, &mut rng),
                    seed: rng.next_u64(),
                    id,
                    rack: ri,
                    kind: NodeKind::Host {
                        guests: first_vm..hosts + vms.len(),
                    },
                });
            }
        }
        nodes.append(&mut vms);
        Ok(Fleet {
            scenario,
            nodes,
            hosts,
        })
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Every node: hosts first, then VMs.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The hosts (a prefix of [`Fleet::nodes`]).
    pub fn hosts(&self) -> &[NodeSpec] {
        &self.nodes[..self.hosts]
    }

    /// Index of `node` in [`Fleet::nodes`].
    pub fn index_of(&self, node: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roles_and_links() {
        let f = Fleet::build(Scenario::uniform(2, 3, 2, 7)).unwrap();
        let ids: Vec<&str> = f.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids.len(), 18);
        assert_eq!(
            &ids[..6],
            [
                "rack1-h01",
                "rack1-h02",
                "rack1-h03",
                "rack2-h01",
                "rack2-h02",
                "rack2-h03"
            ]
        );
        assert_eq!(
            &ids[6..10],
            [
                "rack1-h01-vm1",
                "rack1-h01-vm2",
                "rack1-h02-vm1",
                "rack1-h02-vm2"
            ]
        );
        assert_eq!(f.hosts().len(), 6);
        for (i, h) in f.hosts().iter().enumerate() {
            assert_eq!(h.role(), Role::Host);
            let NodeKind::Host { guests } = &h.kind else {
                panic!("{} is not a host", h.id)
            };
            assert_eq!(guests.len(), 2);
            for g in guests.clone() {
                let vm = &f.nodes()[g];
                assert_eq!(vm.role(), Role::Guest);
                assert!(vm.id.starts_with(&format!("{}-vm", h.id)));
                assert!(matches!(vm.kind, NodeKind::Guest { host, .. } if host == i));
                assert_eq!(vm.rack, h.rack);
            }
        }
        assert_eq!(f.index_of("rack2-h01-vm2"), Some(6 + 3 * 2 + 1));
        assert_eq!(f.index_of("nope"), None);
    }

    #[test]
    fn same_seed_same_fleet_other_seed_other_uuids() {
        let a = Fleet::build(Scenario::uniform(1, 4, 3, 1)).unwrap();
        let b = Fleet::build(Scenario::uniform(1, 4, 3, 1)).unwrap();
        let c = Fleet::build(Scenario::uniform(1, 4, 3, 2)).unwrap();
        assert_eq!(a.nodes(), b.nodes());
        let uuids = |f: &Fleet| -> Vec<String> {
            f.nodes()
                .iter()
                .filter_map(|n| match &n.kind {
                    NodeKind::Guest { uuid, .. } => Some(uuid.clone()),
                    NodeKind::Host { .. } => None,
                })
                .collect()
        };
        // Pinned: the same scenario gives the same UUIDs on every build.
        assert_eq!(
            vm_uuid(1, "rack1-h01-vm1"),
            "be0811a8-77c4-4991-831d-6a32c0a92023"
        );
        let ua = uuids(&a);
        assert_eq!(ua.len(), 12);
        assert!(ua.iter().all(|u| u.len() == 36 && u.as_bytes()[14] == b'4'));
        let distinct: std::collections::HashSet<&String> = ua.iter().collect();
        assert_eq!(distinct.len(), ua.len());
        assert!(uuids(&c).iter().all(|u| !ua.contains(u)));
    }

    #[test]
    fn profiles_follow_the_weights() {
        let f = Fleet::build(Scenario::uniform(10, 10, 10, 3)).unwrap();
        let count = |p: Profile| {
            f.nodes()[f.hosts().len()..]
                .iter()
                .filter(|n| n.workload.profile() == p)
                .count()
        };
        // 1000 VMs at weights 5:2:2:1.
        assert!((430..570).contains(&count(Profile::Diurnal)));
        assert!((140..260).contains(&count(Profile::Bursty)));
        assert!((140..260).contains(&count(Profile::Idle)));
        assert!((60..140).contains(&count(Profile::Steady)));
        assert!(f
            .hosts()
            .iter()
            .all(|h| h.workload.profile() == Profile::Idle));
    }

    #[test]
    fn invalid_scenarios_are_refused() {
        let mut s = Scenario::uniform(1, 1, 0, 1);
        s.racks[0].hosts = 0;
        let e = Fleet::build(s).unwrap_err().to_string();
        assert!(e.contains("hosts must be at least 1"), "{e}");
    }
}
