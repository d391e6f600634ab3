//! yunjian-aggregator-core: the aggregator's domain, free of any runtime, web framework or
//! database driver (`cargo tree -p yunjian-aggregator-core -e normal` shows it).
//!
//! Data flow through the core: verified reports update the [`fleet`] state; the [`policy`]
//! engine evaluates its rules against the fleet and the allocation [`register`] and keeps the
//! [`alarms`]; [`usage`] keeps the utilisation history that finds idle VMs, which become
//! [`reclaim`] cases. Everything that must outlive a restart goes through the ports of
//! [`store`], implemented by the storage backend crates (`yunjian-store-sqlite`,
//! `yunjian-store-postgres`).
//!
//! ## Layers
//!
//! Imports between the modules point one way, down this list (a module uses only those below
//! it; `grep -rn "crate::" src/<module>` shows it):
//!
//! ```text
//! store                      the ports: persist every domain's state
//! lifecycle                  applications (申请 → 终止): steps, deadlines, register effects
//! reclaim                    cases from usage findings, deadlines on the calendar
//! policy                     the profile and the rules over fleet, register and usage
//! register   usage           allocations and changes; utilisation history and its findings
//! fleet                      the latest state of every node
//! antivirus  hardware  audit assessments of a node; the audit entry
//! time  identity  liveness  alarms  ratelimit
//! ```
//!
//! A lower module never names a higher one: the policy profile holds the usage sections and
//! hands them to [`usage::UsageHistory::evaluate`] ([`policy::Profile::usage_rules`]); the
//! register's test fixtures know nothing of rules (a rule's one-off evaluation for tests is in
//! `policy`).

pub mod alarms;
pub mod antivirus;
pub mod audit;
pub mod fleet;
pub mod hardware;
pub mod identity;
pub mod lifecycle;
pub mod liveness;
pub mod policy;
pub mod reclaim;
pub mod register;
pub mod store;
pub mod time;
pub mod usage;
