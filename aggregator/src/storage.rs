//! Which storage backend a deployment uses, from one string: the `storage` key of the config
//! file or `--storage`. Unset: the embedded default, SQLite in the data directory.
//!
//! * `sqlite:PATH` — one file (created if missing), WAL mode;
//! * `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (or `postgresql://`) — a PostgreSQL
//!   server; the database must exist, the schema is created and migrated at start.
//!
//! A further backend implements the ports of `yunjian_aggregator_core::store` in its own crate
//! and gets a scheme here.

use crate::store::{Storage, StorageError};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use yunjian_store_postgres::redact;

/// A storage location.
/// `Debug` and `Display` never show a password. In a config file it is the string.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StorageUrl {
    Sqlite(PathBuf),
    /// The URL as given (with its password, if any; never printed).
    Postgres(String),
}

/// A storage string that names no backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("storage {0:?}: use sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
pub struct StorageUrlError(pub String);

impl FromStr for StorageUrl {
    type Err = StorageUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StorageUrlError(s.into()));
            }
            return Ok(StorageUrl::Sqlite(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"));
        if rest.is_some_and(|r| !r.is_empty()) {
            return Ok(StorageUrl::Postgres(s.into()));
        }
        Err(StorageUrlError(redact(s)))
    }
}

impl TryFrom<String> for StorageUrl {
    type Error = StorageUrlError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The string as written in a config file (with its password).
impl From<StorageUrl> for String {
    fn from(u: StorageUrl) -> String {
        match u {
            StorageUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            StorageUrl::Postgres(url) => url,
        }
    }
}

impl StorageUrl {
    /// Open a connection to it (one connection per handle; see `yunjian_aggregator_core::store`).
    pub fn open(&self) -> Result<Box<dyn Storage>, StorageError> {
        Ok(match self {
            StorageUrl::Sqlite(path) => Box::new(yunjian_store_sqlite::SqliteStorage::open(path)?),
            StorageUrl::Postgres(url) => {
                Box::new(yunjian_store_postgres::PostgresStorage::connect(url)?)
            }
        })
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StorageUrl::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_bad_ones_say_what_is_accepted() {
        let url: StorageUrl = "sqlite:/var/lib/yunjian/y.db".parse().unwrap();
        assert_eq!(url, StorageUrl::Sqlite("/var/lib/yunjian/y.db".into()));
        assert_eq!(url.to_string(), "sqlite:/var/lib/yunjian/y.db");
        let pg: StorageUrl = "postgres://yj:s3cret@db.example:5432/yunjian"
            .parse()
            .unwrap();
        assert_eq!(pg.to_string(), "postgres://yj:***@db.example:5432/yunjian");
        assert!(!format!("{pg:?}").contains("s3cret"));
        for bad in [
            "",
            "sqlite:",
            "mysql://x:s3cret@y/z",
            "postgres://",
            "yunjian.db",
        ] {
            let e = bad.parse::<StorageUrl>().unwrap_err();
            assert!(e.to_string().contains("sqlite:PATH"), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}

/// Run blocking storage work from anywhere: on a worker of the multi-threaded runtime it
/// tells the runtime first (`block_in_place`: other tasks move to other workers, and a
/// backend's own client may block on its own runtime); elsewhere (the storage thread, a
/// blocking task, a current-thread runtime in tests) it just runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A storage handle whose every call runs through [`blocking`], for the parts that call
/// storage from async code (start-up, the reclaim service). On a thread outside the runtime
/// (the storage thread gets the start-up handle) a call goes straight through.
#[derive(Debug)]
pub struct OffRuntime(pub Box<dyn Storage>);

impl StorageUrl {
    /// [`StorageUrl::open`] for use from async code.
    pub fn open_off_runtime(&self) -> Result<Box<dyn Storage>, StorageError> {
        Ok(Box::new(OffRuntime(blocking(|| self.open())?)))
    }
}

use crate::alarms::Alarm;
use crate::reclaim::{Case, CommandRecord, LogEntry, ReclaimWrite};
use crate::register::Register;
use crate::store::{
    AlarmStore, ApplicationStore, AuditEntry, AuditStore, DetectionRow, DetectionStore, EventRow,
    NodeRow, NodeStore, ReclaimStore, RegisterStore, Schema, SelRow, UsageStore, UserStore,
    WriteBatch,
};
use crate::usage::{Exemption, UsageDayRow};
use yunjian_aggregator_core::identity::{ApiToken, User};
use yunjian_aggregator_core::lifecycle::{Application, ApplicationWrite};

impl Schema for OffRuntime {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn migrate(&mut self) -> Result<u32, StorageError> {
        blocking(|| self.0.migrate())
    }
    fn write(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        blocking(|| self.0.write(batch))
    }
}

impl NodeStore for OffRuntime {
    fn load_nodes(&mut self) -> Result<Vec<NodeRow>, StorageError> {
        blocking(|| self.0.load_nodes())
    }
    fn events(&mut self, node: Option<&str>, limit: usize) -> Result<Vec<EventRow>, StorageError> {
        blocking(|| self.0.events(node, limit))
    }
    fn load_sel(&mut self, per_node: usize) -> Result<Vec<SelRow>, StorageError> {
        blocking(|| self.0.load_sel(per_node))
    }
}

impl AlarmStore for OffRuntime {
    fn open_alarms(&mut self) -> Result<Vec<Alarm>, StorageError> {
        blocking(|| self.0.open_alarms())
    }
}

impl AuditStore for OffRuntime {
    fn audit(
        &mut self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        blocking(|| self.0.audit(subject, limit))
    }
    fn audit_search(
        &mut self,
        filter: &yunjian_aggregator_core::audit::AuditFilter,
    ) -> Result<Vec<AuditEntry>, StorageError> {
        blocking(|| self.0.audit_search(filter))
    }
    fn expire_audit(&mut self, before_ms: u64, key: &[u8]) -> Result<usize, StorageError> {
        blocking(|| self.0.expire_audit(before_ms, key))
    }
    fn audit_chain(
        &mut self,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<yunjian_aggregator_core::audit::ChainedEntry>, StorageError> {
        blocking(|| self.0.audit_chain(after_id, limit))
    }
    fn audit_checkpoint(
        &mut self,
    ) -> Result<Option<yunjian_aggregator_core::audit::Checkpoint>, StorageError> {
        blocking(|| self.0.audit_checkpoint())
    }
}

impl RegisterStore for OffRuntime {
    fn load_register(&mut self) -> Result<Register, StorageError> {
        blocking(|| self.0.load_register())
    }
}

impl UsageStore for OffRuntime {
    fn load_usage(
        &mut self,
        since_day: crate::time::Day,
    ) -> Result<Vec<UsageDayRow>, StorageError> {
        blocking(|| self.0.load_usage(since_day))
    }
    fn expire_usage(&mut self, before_day: crate::time::Day) -> Result<usize, StorageError> {
        blocking(|| self.0.expire_usage(before_day))
    }
    fn load_exemptions(&mut self) -> Result<Vec<Exemption>, StorageError> {
        blocking(|| self.0.load_exemptions())
    }
}

impl UserStore for OffRuntime {
    fn load_users(&mut self) -> Result<Vec<User>, StorageError> {
        blocking(|| self.0.load_users())
    }
    fn load_tokens(&mut self) -> Result<Vec<ApiToken>, StorageError> {
        blocking(|| self.0.load_tokens())
    }
}

impl ReclaimStore for OffRuntime {
    fn reclaim_write(&mut self, w: &ReclaimWrite) -> Result<(), StorageError> {
        blocking(|| self.0.reclaim_write(w))
    }
    fn reclaim_cases(&mut self) -> Result<Vec<Case>, StorageError> {
        blocking(|| self.0.reclaim_cases())
    }
    fn reclaim_log(&mut self, case_id: u64) -> Result<Vec<LogEntry>, StorageError> {
        blocking(|| self.0.reclaim_log(case_id))
    }
    fn commands(&mut self, outstanding_only: bool) -> Result<Vec<CommandRecord>, StorageError> {
        blocking(|| self.0.commands(outstanding_only))
    }
}

impl ApplicationStore for OffRuntime {
    fn application_write(&mut self, w: &ApplicationWrite) -> Result<(), StorageError> {
        blocking(|| self.0.application_write(w))
    }
    fn applications(&mut self) -> Result<Vec<Application>, StorageError> {
        blocking(|| self.0.applications())
    }
    fn application_log(
        &mut self,
        application: u64,
    ) -> Result<Vec<yunjian_aggregator_core::lifecycle::LogEntry>, StorageError> {
        blocking(|| self.0.application_log(application))
    }
    fn application_file(
        &mut self,
        application: u64,
        id: u64,
    ) -> Result<Option<(String, Vec<u8>)>, StorageError> {
        blocking(|| self.0.application_file(application, id))
    }
}

impl DetectionStore for OffRuntime {
    fn store_detections(&mut self, found: &[DetectionRow]) -> Result<(), StorageError> {
        blocking(|| self.0.store_detections(found))
    }
    fn load_detections(&mut self) -> Result<Vec<DetectionRow>, StorageError> {
        blocking(|| self.0.load_detections())
    }
}
