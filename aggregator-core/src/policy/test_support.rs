//! Fixtures for the rules' unit tests (the register's own fixtures are in
//! `register::test_support`: the register knows nothing of the policies that read it).

use super::{Context, Findings, Profile, Rule};
use crate::alarms::Finding;
use crate::fleet::Fleet;
use crate::register::Register;

/// One evaluation of `rule` (a full one for a fresh rule) with the default profile.
pub fn evaluate(rule: &mut dyn Rule, fleet: &Fleet, register: &Register) -> Vec<Finding> {
    let profile = Profile::default();
    let mut out = Findings::new();
    rule.evaluate(
        &Context {
            fleet,
            register,
            profile: &profile,
            now_ms: 0,
        },
        &mut out,
    );
    out.into_vec()
}
