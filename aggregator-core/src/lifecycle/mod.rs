//! The resource lifecycle of the regulations (申请 → 受理 → 审核 → 审批 → 测试 → 开通 → 变更 →
//! 终止): applications, their steps under the active profile's rules and working-day
//! deadlines, and what each step does to the allocation register. The domain part; the service
//! (`aggregator/src/service/applications.rs`) persists, audits and applies, the pages show
//! it. See `docs/LIFECYCLE.md`.
//!
//! * [`crate::policy::lifecycle`]: a profile's `[lifecycle]` section (who, how many working
//!   days, which clause);
//! * [`application`]: the state machine (pure);
//! * [`effects`]: what a submission must satisfy and what a step changes in the register.

pub mod application;
pub mod effects;

pub use crate::policy::lifecycle::{LifecyclePolicy, Period, StepRule};
pub use application::{
    Application, ApplicationError, Attachment, Kind, LogEntry, Request, Rules, SizeChange, State,
    Step,
};
pub use effects::LifecycleError;

use crate::audit::AuditEntry;
use crate::register::UnitRecord;

/// A file to store with an application (its description is in the application).
#[derive(Debug, Clone)]
pub struct FileRow {
    pub application: u64,
    pub id: u64,
    pub name: String,
    pub bytes: bytes::Bytes,
}

/// What one storage transaction of the application service writes.
#[derive(Debug, Default, Clone)]
pub struct ApplicationWrite {
    pub applications: Vec<Application>,
    pub log: Vec<LogEntry>,
    pub files: Vec<FileRow>,
    pub register: Vec<UnitRecord>,
    pub audit: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests;
