//! Policies: the profile (numbers from one regulation), the rules (one per file in [`rules`],
//! listed in one registry) and the engine that evaluates them and keeps the alarms.
//!
//! Rules are pure with respect to I/O: they read a [`Context`] (fleet state, register, profile,
//! time) and push [`Finding`]s; the [`Engine`] reconciles those with the [`AlarmBook`], so
//! every rule gets the same lifecycle (raise, de-duplicate, acknowledge, clear, persist).

pub mod forecast;
pub mod hysteresis;
pub mod lifecycle;
pub mod profile;
pub mod rules;
#[cfg(test)]
pub(crate) mod test_support;

pub use profile::{Profile, ProfileError};

use crate::alarms::AlarmKey;
use crate::alarms::{AlarmBook, AlarmEvent, Finding};
use crate::fleet::Fleet;
use crate::register::Register;
use std::collections::{HashMap, HashSet};

/// What a rule may look at.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub fleet: &'a Fleet,
    pub register: &'a Register,
    pub profile: &'a Profile,
    /// Wall-clock now (ms since the epoch): hold times and deadlines run on it.
    pub now_ms: u64,
}

/// One policy rule.
pub trait Rule: Send + Sync + std::fmt::Debug {
    /// Stable name, also the `rule` of its alarm keys (e.g. `capacity`).
    fn name(&self) -> &'static str;
    /// The clause it cites under `profile` (its `[clauses]`), e.g. `003 第十九条（…）`: always
    /// the active profile's own document.
    fn clause<'p>(&self, profile: &'p Profile) -> &'p str;
    /// Report what holds now into `out`: either everything (a full evaluation, the default)
    /// or, after [`Findings::partial`], only the scopes it looked at again (see [`Findings`]).
    /// Rules may keep state between calls (hold timers, trend history, what changed since).
    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Findings);
    /// The least time between two evaluations of this rule; the engine skips it (its alarms
    /// stay as they are) until then. 0 (the default): every evaluation.
    fn interval_ms(&self) -> u64 {
        0
    }
}

/// The cadence of the rules over aggregates of the hosts' reports (pools, platform, systems):
/// an agent's report interval, so each report is looked at about once. Their holds and
/// trends run in minutes and days, so evaluating them more often would only cost.
pub const AGGREGATE_INTERVAL_MS: u64 = 10_000;

/// How often a rule that evaluates incrementally looks at everything again anyway: it catches
/// what changes with time alone over days (antivirus signatures ageing past their limit) and
/// heals anything an incremental pass could miss. Rules also go full when the register
/// changes; what turns with time within minutes (grace periods) is watched on every pass.
pub const FULL_REFRESH_MS: u64 = 900_000;

/// A condition that turns true with time alone (a grace period ending) is re-checked on every
/// evaluation until this long after it could have turned: more than any sane policy interval.
pub const TIME_SLACK_MS: u64 = 60_000;

/// What one rule reports on one evaluation.
///
/// **Full** (the default): every finding that holds now; the rule's open alarms without one
/// clear. **Partial** ([`Findings::partial`]): the rule names each scope it looked at again
/// ([`Findings::scope`], e.g. one node) and pushes that scope's findings after it; alarms of
/// the named scopes without a finding clear, and scopes not named keep their alarms untouched.
/// This lets a rule cost what changed instead of what exists.
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<Finding>,
    /// Index into `scopes` of each item (`u32::MAX`: no scope named yet).
    item_scope: Vec<u32>,
    scopes: Vec<String>,
    partial: bool,
}

impl Findings {
    pub fn new() -> Self {
        Self::default()
    }

    /// This evaluation covers only the scopes named from now on.
    pub fn partial(&mut self) {
        self.partial = true;
    }

    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The findings pushed next belong to `scope` (in a full evaluation too: the engine
    /// remembers which alarms a scope holds for the next partial one). Name each scope at
    /// most once per evaluation.
    pub fn scope(&mut self, scope: &str) {
        self.scopes.push(scope.to_string());
    }

    /// Add a finding; in a partial evaluation it must follow the [`Findings::scope`] it
    /// belongs to.
    pub fn push(&mut self, f: Finding) {
        debug_assert!(
            !self.partial || !self.scopes.is_empty(),
            "a partial evaluation pushed a finding before naming its scope"
        );
        self.items.push(f);
        self.item_scope.push(
            self.scopes
                .len()
                .checked_sub(1)
                .map_or(u32::MAX, |i| i as u32),
        );
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.item_scope.clear();
        self.scopes.clear();
        self.partial = false;
    }

    /// The scopes named in this evaluation.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    pub fn into_vec(self) -> Vec<Finding> {
        self.items
    }
}

impl std::ops::Deref for Findings {
    type Target = [Finding];
    fn deref(&self) -> &[Finding] {
        &self.items
    }
}

/// Bookkeeping for a rule that evaluates incrementally: when to look at everything, and
/// since which change stamp ([`crate::fleet::Stamps`]) a node counts as changed.
#[derive(Debug, Default)]
pub struct Incremental {
    since: u64,
    full_at_ms: Option<u64>,
    register_rev: u64,
}

impl Incremental {
    /// Start an evaluation. `None`: evaluate fully (the first time, after a register change,
    /// every [`FULL_REFRESH_MS`]). `Some(since)`: `out` is switched to partial; look again at
    /// the nodes with a relevant stamp above `since`.
    pub fn begin(&mut self, ctx: &Context<'_>, out: &mut Findings) -> Option<u64> {
        let since = self.since;
        self.since = ctx.fleet.current_stamp();
        let rev = ctx.register.revision();
        let stale = match self.full_at_ms {
            None => true,
            // a clock that went back counts as due too
            Some(t) => ctx.now_ms >= t.saturating_add(FULL_REFRESH_MS) || ctx.now_ms < t,
        };
        if stale || rev != self.register_rev {
            self.register_rev = rev;
            self.full_at_ms = Some(ctx.now_ms);
            None
        } else {
            out.partial();
            Some(since)
        }
    }
}

/// The nodes a node-scoped incremental rule looks at: every node on a full evaluation
/// (`since` is `None`); otherwise those whose state changed after `since` (from the fleet's
/// change log, or a scan of the stamps when the log does not reach back) plus `watch`, the
/// nodes whose finding may change with time alone. Each node once, in no particular order.
pub fn nodes_to_check<'a>(
    ctx: &Context<'a>,
    since: Option<u64>,
    watch: &HashSet<String>,
) -> Vec<&'a crate::fleet::NodeState> {
    let fleet = ctx.fleet;
    let Some(since) = since else {
        return fleet.nodes().collect();
    };
    let mut nodes = match fleet.nodes_changed_since(since) {
        Some(changed) => changed,
        None => fleet
            .nodes()
            .filter(|st| st.stamps.state.max(st.stamps.observed) > since)
            .collect(),
    };
    let mut named: HashSet<&str> = nodes.iter().map(|st| st.node.as_str()).collect();
    for w in watch {
        if let Some(st) = fleet.get(w).filter(|_| !named.contains(w.as_str())) {
            named.insert(&st.node);
            nodes.push(st);
        }
    }
    nodes
}

/// What a node-scoped incremental rule keeps between passes: when to look at everything, the
/// register's unit of each VM UUID (rebuilt on full passes, when the register may have
/// changed) and the nodes watched on every pass because their finding can turn with time.
#[derive(Debug, Default)]
pub struct NodeScan {
    inc: Incremental,
    units: HashMap<String, String>,
    watched: HashSet<String>,
}

impl NodeScan {
    /// Start an evaluation: the nodes to look at now (see [`nodes_to_check`]).
    pub fn begin<'a>(
        &mut self,
        ctx: &Context<'a>,
        out: &mut Findings,
    ) -> Vec<&'a crate::fleet::NodeState> {
        let since = self.inc.begin(ctx, out);
        if since.is_none() {
            self.units = ctx
                .register
                .uuid_index()
                .into_iter()
                .map(|(u, v)| (u, v.unit.clone()))
                .collect();
            self.watched.clear();
        }
        nodes_to_check(ctx, since, &self.watched)
    }

    /// Look at `node` on every pass while `on`.
    pub fn watch(&mut self, node: &str, on: bool) {
        if on {
            self.watched.insert(node.to_string());
        } else {
            self.watched.remove(node);
        }
    }

    /// The unit of the registered VM with this SMBIOS UUID (any case).
    pub fn unit_of(&self, uuid: &str) -> Option<String> {
        self.units.get(&uuid.to_ascii_lowercase()).cloned()
    }
}

/// The VM UUIDs (lower case) whose claims changed after `since`, with their claims: from the
/// fleet's change log, or a scan when the log does not reach back.
pub fn vms_to_check<'a>(ctx: &Context<'a>, since: u64) -> Vec<(&'a str, &'a crate::fleet::Claims)> {
    ctx.fleet.vms_changed_since(since).unwrap_or_else(|| {
        ctx.fleet
            .claims()
            .filter(|(_, c)| c.stamp > since)
            .collect()
    })
}

/// The rules and the alarm book.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<RuleSlot>,
    book: AlarmBook,
}

/// The policy engine, shared by the policy task, the reclaim task and the services.
pub type SharedPolicy = std::sync::Arc<std::sync::Mutex<Engine>>;

#[derive(Debug)]
struct RuleSlot {
    rule: Box<dyn Rule>,
    out: Findings,
    /// The alarm keys each scope held after the last evaluation naming it.
    by_scope: HashMap<String, Vec<AlarmKey>>,
    /// Wall time of its last evaluation.
    last_ms: Option<u64>,
}

impl Engine {
    pub fn new(rules: Vec<Box<dyn Rule>>, book: AlarmBook) -> Self {
        Engine {
            rules: rules
                .into_iter()
                .map(|rule| RuleSlot {
                    rule,
                    out: Findings::new(),
                    by_scope: HashMap::new(),
                    last_ms: None,
                })
                .collect(),
            book,
        }
    }

    /// Evaluate every rule once and return the alarm changes.
    pub fn evaluate(&mut self, ctx: &Context<'_>) -> Vec<AlarmEvent> {
        let mut events = Vec::new();
        for slot in &mut self.rules {
            let every = slot.rule.interval_ms();
            // a clock that went back evaluates at once
            if slot
                .last_ms
                .is_some_and(|t| ctx.now_ms >= t && ctx.now_ms < t.saturating_add(every))
            {
                continue;
            }
            slot.last_ms = Some(ctx.now_ms);
            slot.out.clear();
            slot.rule.evaluate(ctx, &mut slot.out);
            let out = std::mem::take(&mut slot.out);
            if out.partial {
                apply_partial(&mut self.book, slot, out, ctx.now_ms, &mut events);
            } else {
                apply_full(&mut self.book, slot, out, ctx.now_ms, &mut events);
            }
        }
        events
    }

    pub fn book(&self) -> &AlarmBook {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut AlarmBook {
        &mut self.book
    }

    pub fn rules(&self) -> impl Iterator<Item = &dyn Rule> {
        self.rules.iter().map(|s| s.rule.as_ref())
    }
}

fn apply_full(
    book: &mut AlarmBook,
    slot: &mut RuleSlot,
    out: Findings,
    now_ms: u64,
    events: &mut Vec<AlarmEvent>,
) {
    let Findings {
        items,
        item_scope,
        scopes,
        ..
    } = out;
    let mut per_scope: Vec<Vec<AlarmKey>> = vec![Vec::new(); scopes.len()];
    let mut seen: HashSet<AlarmKey> = HashSet::with_capacity(items.len());
    for (f, sc) in items.into_iter().zip(item_scope) {
        if let Some(keys) = per_scope.get_mut(sc as usize) {
            keys.push(f.key.clone());
        }
        seen.insert(f.key.clone());
        events.extend(book.upsert(f, now_ms));
    }
    slot.by_scope.clear();
    for (scope, keys) in scopes.into_iter().zip(per_scope) {
        if !keys.is_empty() {
            slot.by_scope.entry(scope).or_default().extend(keys);
        }
    }
    book.clear_unseen(slot.rule.name(), &seen, now_ms, events);
}

fn apply_partial(
    book: &mut AlarmBook,
    slot: &mut RuleSlot,
    out: Findings,
    now_ms: u64,
    events: &mut Vec<AlarmEvent>,
) {
    let Findings {
        items,
        item_scope,
        scopes,
        ..
    } = out;
    let mut fresh: Vec<Vec<AlarmKey>> = vec![Vec::new(); scopes.len()];
    for (f, sc) in items.into_iter().zip(item_scope) {
        if let Some(keys) = fresh.get_mut(sc as usize) {
            keys.push(f.key.clone());
        }
        events.extend(book.upsert(f, now_ms));
    }
    for (scope, keys) in scopes.into_iter().zip(fresh) {
        let old = if keys.is_empty() {
            slot.by_scope.remove(&scope)
        } else {
            slot.by_scope.insert(scope, keys.clone())
        };
        for k in old.unwrap_or_default() {
            if !keys.contains(&k) {
                events.extend(book.clear(&k, now_ms));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::Level;
    use crate::fleet::Fleet;
    use crate::register::Register;

    /// A rule scripted from outside: each evaluation reports what `plan` says.
    #[derive(Debug, Default)]
    struct Scripted {
        /// `None`: a full evaluation of these subjects; `Some(scopes)`: partial, each scope
        /// with the subjects found in it.
        plan: std::collections::VecDeque<Plan>,
        every: u64,
        calls: usize,
    }

    #[derive(Debug)]
    enum Plan {
        Full(Vec<&'static str>),
        Partial(Vec<(&'static str, Vec<&'static str>)>),
    }

    fn finding(subject: &str) -> Finding {
        Finding {
            key: AlarmKey {
                rule: "scripted".into(),
                subject: subject.into(),
            },
            level: Level::Warning,
            clause: "test".into(),
            unit: None,
            title: subject.into(),
            evidence: serde_json::Value::Null,
        }
    }

    impl Rule for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn clause<'p>(&self, _: &'p Profile) -> &'p str {
            "test"
        }
        fn interval_ms(&self) -> u64 {
            self.every
        }
        fn evaluate(&mut self, _: &Context<'_>, out: &mut Findings) {
            self.calls += 1;
            match self
                .plan
                .pop_front()
                .expect("an evaluation more than planned")
            {
                Plan::Full(subjects) => {
                    for s in subjects {
                        // scope = the subject's node, before the slash
                        out.scope(s.split('/').next().unwrap_or(s));
                        out.push(finding(s));
                    }
                }
                Plan::Partial(scopes) => {
                    out.partial();
                    for (scope, subjects) in scopes {
                        out.scope(scope);
                        for s in subjects {
                            out.push(finding(s));
                        }
                    }
                }
            }
        }
    }

    fn open(engine: &Engine) -> Vec<String> {
        let mut v: Vec<String> = engine
            .book()
            .open()
            .iter()
            .map(|a| a.key.subject.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_partial_evaluation_touches_only_the_scopes_it_names() {
        let rule = Scripted {
            plan: [
                Plan::Full(vec!["a/x", "a/y", "b/x", "c/x"]),
                // a: one of its two findings is gone; b: unchanged (not named); c: all gone
                Plan::Partial(vec![("a", vec!["a/x"]), ("c", vec![])]),
                // d is new; b still not named
                Plan::Partial(vec![("d", vec!["d/x"])]),
                // a full evaluation clears whatever it does not find, named or not
                Plan::Full(vec!["d/x"]),
            ]
            .into(),
            ..Scripted::default()
        };
        let mut engine = Engine::new(vec![Box::new(rule)], AlarmBook::new());
        let (fleet, register, profile) = (Fleet::new(), Register::default(), Profile::default());
        let mut step = |now_ms| {
            engine.evaluate(&Context {
                fleet: &fleet,
                register: &register,
                profile: &profile,
                now_ms,
            });
            open(&engine)
        };
        assert_eq!(step(0), ["a/x", "a/y", "b/x", "c/x"]);
        assert_eq!(step(1), ["a/x", "b/x"]);
        assert_eq!(step(2), ["a/x", "b/x", "d/x"]);
        assert_eq!(step(3), ["d/x"]);
    }

    #[test]
    fn a_rule_with_an_interval_is_skipped_until_it_passed() {
        let rule = Scripted {
            plan: [Plan::Full(vec!["a/x"]), Plan::Full(vec![])].into(),
            every: 10_000,
            ..Scripted::default()
        };
        let mut engine = Engine::new(vec![Box::new(rule)], AlarmBook::new());
        let (fleet, register, profile) = (Fleet::new(), Register::default(), Profile::default());
        let mut step = |now_ms| {
            engine.evaluate(&Context {
                fleet: &fleet,
                register: &register,
                profile: &profile,
                now_ms,
            });
            open(&engine)
        };
        assert_eq!(step(1_000), ["a/x"]);
        // within its interval: not evaluated (the plan would panic), the alarm stays
        assert_eq!(step(5_000), ["a/x"]);
        assert_eq!(step(10_999), ["a/x"]);
        assert!(step(11_000).is_empty());
    }
}
