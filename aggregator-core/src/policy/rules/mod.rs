//! Every policy rule, one per file, listed once here with an on-by-default flag.

pub mod antivirus;
pub mod capacity;
pub mod capacity_forecast;
pub mod hardware;
pub mod node_down;
pub mod peak;
pub mod quota_unit;
pub mod quota_vm;
pub mod unregistered_vm;
pub mod vm_claim_conflict;

use super::{Profile, Rule};

/// One registry line per rule.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub build: fn(&Profile) -> Box<dyn Rule>,
}

pub const REGISTRY: &[Registration] = &[
    Registration {
        name: antivirus::NAME,
        enabled_by_default: true,
        build: antivirus::build,
    },
    Registration {
        name: node_down::NAME,
        enabled_by_default: true,
        build: node_down::build,
    },
    Registration {
        name: hardware::NAME,
        enabled_by_default: true,
        build: hardware::build,
    },
    Registration {
        name: capacity::NAME,
        enabled_by_default: true,
        build: capacity::build,
    },
    Registration {
        name: capacity_forecast::NAME,
        enabled_by_default: true,
        build: capacity_forecast::build,
    },
    Registration {
        name: peak::NAME,
        enabled_by_default: true,
        build: peak::build,
    },
    Registration {
        name: unregistered_vm::NAME,
        enabled_by_default: true,
        build: unregistered_vm::build,
    },
    Registration {
        name: vm_claim_conflict::NAME,
        enabled_by_default: true,
        build: vm_claim_conflict::build,
    },
    Registration {
        name: quota_vm::NAME,
        enabled_by_default: true,
        build: quota_vm::build,
    },
    Registration {
        name: quota_unit::NAME,
        enabled_by_default: true,
        build: quota_unit::build,
    },
];

/// The enabled rules for a profile (`disabled`: names switched off in the config).
pub fn build(profile: &Profile, disabled: &[String]) -> Vec<Box<dyn Rule>> {
    REGISTRY
        .iter()
        .filter(|r| r.enabled_by_default && !disabled.iter().any(|d| d == r.name))
        .map(|r| (r.build)(profile))
        .collect()
}
