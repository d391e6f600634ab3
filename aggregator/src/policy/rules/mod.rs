//! Every policy rule, one per file, listed once here with an on-by-default flag.

pub mod node_down;

use super::{Profile, Rule};

/// One registry line per rule.
#[derive(Debug)]
pub struct Registration {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub build: fn(&Profile) -> Box<dyn Rule>,
}

pub const REGISTRY: &[Registration] = &[Registration {
    name: node_down::NAME,
    enabled_by_default: true,
    build: node_down::build,
}];

/// The enabled rules for a profile (`disabled`: names switched off in the config).
pub fn build(profile: &Profile, disabled: &[String]) -> Vec<Box<dyn Rule>> {
    REGISTRY
        .iter()
        .filter(|r| r.enabled_by_default && !disabled.iter().any(|d| d == r.name))
        .map(|r| (r.build)(profile))
        .collect()
}
