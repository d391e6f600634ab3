//! yunjian-agent: collectors, configuration and the MQTT publisher.
//!
//! The agent reads metrics and presence facts only (from `/proc`, `/sys`, `statvfs`, the
//! package database): never the contents of users' files or databases.
//!
//! The publisher ([`publish`]) is also used by the simulator, with a synthetic sample source.

pub mod antivirus;
pub mod collect;
pub mod config;
pub mod hypervisor;
pub mod ipmi;
pub mod publish;
