//! Policies: the profile (numbers from one regulation), the rules (one per file in [`rules`],
//! listed in one registry) and the engine that evaluates them and keeps the alarms.
//!
//! Rules are pure with respect to I/O: they read a [`Context`] (fleet state, register, profile,
//! time) and push [`Finding`]s; the [`Engine`] reconciles those with the [`AlarmBook`], so
//! every rule gets the same lifecycle (raise, de-duplicate, acknowledge, clear, persist).

pub mod forecast;
pub mod hysteresis;
pub mod profile;
pub mod rules;

pub use profile::{Profile, ProfileError};

use crate::alarms::{AlarmBook, AlarmEvent, Finding};
use crate::fleet::Fleet;
use crate::register::Register;
use std::collections::HashSet;

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
    /// The clause it serves, e.g. `003 第十九条`.
    fn clause(&self) -> &'static str;
    /// Push every finding that holds now. Rules may keep state between calls (hold timers,
    /// trend history, what was seen before).
    fn evaluate(&mut self, ctx: &Context<'_>, out: &mut Vec<Finding>);
}

/// The rules and the alarm book.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Box<dyn Rule>>,
    names: HashSet<&'static str>,
    book: AlarmBook,
    findings: Vec<Finding>,
}

impl Engine {
    pub fn new(rules: Vec<Box<dyn Rule>>, book: AlarmBook) -> Self {
        let names = rules.iter().map(|r| r.name()).collect();
        Engine {
            rules,
            names,
            book,
            findings: Vec::new(),
        }
    }

    /// Evaluate every rule once and return the alarm changes.
    pub fn evaluate(&mut self, ctx: &Context<'_>) -> Vec<AlarmEvent> {
        self.findings.clear();
        for r in &mut self.rules {
            r.evaluate(ctx, &mut self.findings);
        }
        let findings = std::mem::take(&mut self.findings);
        self.book.reconcile(&self.names, findings, ctx.now_ms)
    }

    pub fn book(&self) -> &AlarmBook {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut AlarmBook {
        &mut self.book
    }

    pub fn rules(&self) -> impl Iterator<Item = &dyn Rule> {
        self.rules.iter().map(|r| r.as_ref())
    }
}
