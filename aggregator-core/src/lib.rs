//! yunjian-aggregator-core: the aggregator's domain, free of any runtime, web framework or
//! database driver (`cargo tree -p yunjian-aggregator-core -e normal` shows it).
//!
//! Data flow through the core: verified reports update the [`fleet`] state; the [`policy`]
//! engine evaluates its rules against the fleet and the allocation [`register`] and keeps the
//! [`alarms`]; [`usage`] keeps the utilisation history that finds idle VMs, which become
//! [`reclaim`] cases. Everything that must outlive a restart goes through the ports of
//! [`store`], implemented by the storage backend crates (`yunjian-store-sqlite`,
//! `yunjian-store-postgres`).

pub mod alarms;
pub mod antivirus;
pub mod audit;
pub mod fleet;
pub mod hardware;
pub mod identity;
pub mod liveness;
pub mod policy;
pub mod reclaim;
pub mod register;
pub mod store;
pub mod time;
pub mod usage;
