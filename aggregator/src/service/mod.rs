//! The use cases: one function per action, between the transports (web handlers, the command
//! line, the periodic tasks) and the core. Each takes who acts, checks the change against the
//! domain, persists it (waiting for the commit), audits it in the same transaction and only
//! then applies it in memory and tells whoever listens. A handler parses and maps errors;
//! it never writes by itself.
//!
//! * [`audit`]: the audit log's retention and the verification of its hash chain;
//! * [`alarms`]: the one alarm sink (rule changes from the policy and reclaim tasks: stored,
//!   audited, notified) and the acknowledgement of an alarm by a person;
//! * [`register`]: the allocation register's changes (form import, approved change, sanction,
//!   quota), the same path for the HTTP API and the `import` command;
//! * [`antivirus`]: the stop of a VM whose antivirus was removed, requested, approved by
//!   another person and carried out as a signed command;
//! * [`exemptions`]: exemptions from the idle rule, created and revoked;
//! * [`identity`]: users, sign-in with lock-out, sessions, API tokens;
//! * [`applications`]: applications (申请 → 终止) through the steps the active profile names,
//!   each with its register change and audit entry, and their deadline alarms.

pub mod alarms;
pub mod antivirus;
pub mod applications;
pub mod audit;
pub mod exemptions;
pub mod identity;
pub mod register;

pub use alarms::AlarmSink;
pub use register::{Holds, RegisterError, RegisterService};
