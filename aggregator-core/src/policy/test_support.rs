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

/// `build`'s rule, fresh, evaluated once under each built-in profile at `now_ms`: each
/// profile with its findings.
pub fn under_every_profile(
    build: fn(&Profile) -> Box<dyn Rule>,
    fleet: &Fleet,
    register: &Register,
    now_ms: u64,
) -> Vec<(Profile, Vec<Finding>)> {
    super::profile::BUILTIN
        .iter()
        .map(|(name, _)| {
            let profile = Profile::load(name).expect("a built-in profile");
            let mut rule = build(&profile);
            let mut out = Findings::new();
            rule.evaluate(
                &Context {
                    fleet,
                    register,
                    profile: &profile,
                    now_ms,
                },
                &mut out,
            );
            (profile, out.into_vec())
        })
        .collect()
}

/// `clause` cites `profile`'s own document and no other built-in profile's.
pub fn assert_cites_own(profile: &Profile, clause: &str) {
    assert!(
        clause.starts_with(&format!("{} ", profile.name)),
        "under {}: {clause:?} does not cite {}",
        profile.name,
        profile.title
    );
    for (other, _) in super::profile::BUILTIN {
        assert!(
            *other == profile.name || !clause.contains(other),
            "under {}: {clause:?} cites {other}",
            profile.name
        );
    }
}
