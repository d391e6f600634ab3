//! Which storage backend a deployment uses, from one string: the `storage` key of the config
//! file or `--storage`. Unset: the embedded default, SQLite in the data directory.
//!
//! * `sqlite:PATH` — one file (created if missing), WAL mode;
//! * `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (or `postgresql://`) — a PostgreSQL
//!   server; the database must exist, the schema is created and migrated at start.

use crate::store::{Storage, StorageError};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A storage location.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// A storage string that names no backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("storage {0:?}: use sqlite:PATH or postgres://USER@HOST:PORT/DATABASE")]
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
        Err(StorageUrlError(s.into()))
    }
}

impl StorageUrl {
    /// Open a connection to it (one connection per handle; see `yunjian_aggregator_core::store`).
    pub fn open(&self) -> Result<Box<dyn Storage>, StorageError> {
        Ok(match self {
            StorageUrl::Sqlite(path) => Box::new(yunjian_store_sqlite::SqliteStorage::open(path)?),
            StorageUrl::Postgres(url) => {
                return Err(StorageError::Backend {
                    backend: "postgres",
                    target: redact(url),
                    source: "this build has no PostgreSQL backend".into(),
                })
            }
        })
    }
}

/// Shown in logs: the password of a PostgreSQL URL is never printed.
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

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.into(),
        },
        None => url.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_never_show_a_password() {
        assert_eq!(
            "sqlite:/var/lib/yunjian/y.db".parse::<StorageUrl>(),
            Ok(StorageUrl::Sqlite("/var/lib/yunjian/y.db".into()))
        );
        let pg: StorageUrl = "postgres://yj:s3cret@db.example:5432/yunjian"
            .parse()
            .unwrap();
        assert_eq!(pg.to_string(), "postgres://yj:***@db.example:5432/yunjian");
        assert!(!format!("{pg:?}").contains("s3cret"));
        for bad in ["", "sqlite:", "mysql://x@y/z", "yunjian.db"] {
            let e = bad.parse::<StorageUrl>().unwrap_err();
            assert!(e.to_string().contains("sqlite:PATH"), "{e}");
        }
    }
}
