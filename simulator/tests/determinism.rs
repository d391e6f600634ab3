//! Same seed, same estate: ids, UUIDs, inventories and every sample at the same event times.

use yunjian_protocol::{Inventory, Report};
use yunjian_simulator::fleet::Fleet;
use yunjian_simulator::synth::{guests, inventory, NodeSim};
use yunjian_simulator::Scenario;

/// Monday 2025-03-03 09:00 Beijing time.
const T0: u64 = 1_740_963_600_000;

fn run(seed: u64) -> (Vec<Inventory>, Vec<Vec<Report>>) {
    let fleet = Fleet::build(Scenario::uniform(2, 3, 2, seed)).unwrap();
    let up = |_: usize| true;
    let inventories = (0..fleet.nodes().len())
        .map(|i| inventory(&fleet, i))
        .collect();
    let reports = (0..fleet.nodes().len())
        .map(|i| {
            let mut sim = NodeSim::new(&fleet, i, T0, 10_000);
            (0..100)
                .map(|k| sim.report(&fleet, T0 + k * 10_000, up))
                .collect()
        })
        .collect();
    (inventories, reports)
}

#[test]
fn same_seed_gives_the_same_estate_and_samples() {
    let (inv_a, rep_a) = run(42);
    let (inv_b, rep_b) = run(42);
    assert_eq!(inv_a, inv_b);
    assert_eq!(rep_a, rep_b);
}

#[test]
fn another_seed_gives_other_samples_and_uuids() {
    let (inv_a, rep_a) = run(42);
    let (inv_c, rep_c) = run(43);
    // Node ids and templates do not depend on the seed; UUIDs, machine ids and samples do.
    for (a, c) in inv_a.iter().zip(&inv_c) {
        assert_eq!(a.hostname, c.hostname);
        assert_ne!(a.machine_id, c.machine_id);
        match &a.smbios_uuid {
            Some(uuid) => assert_ne!(Some(uuid), c.smbios_uuid.as_ref()),
            None => assert_eq!(c.smbios_uuid, None),
        }
    }
    assert!(rep_a.iter().zip(&rep_c).all(|(a, c)| a != c));
}

#[test]
fn hosts_and_guests_agree_on_uuids() {
    let fleet = Fleet::build(Scenario::uniform(2, 3, 2, 7)).unwrap();
    for h in 0..fleet.hosts().len() {
        for g in guests(&fleet, h, |_| true) {
            let idx = fleet.index_of(&g.name).unwrap();
            assert_eq!(
                inventory(&fleet, idx).smbios_uuid.as_deref(),
                Some(g.uuid.as_str())
            );
            assert!(g.name.starts_with(&fleet.nodes()[h].id));
        }
    }
}
