//! Which storage backend a deployment uses, from one string: the `storage` key of the config
//! file or `--storage`. Unset: the embedded default, SQLite in the data directory.
//!
//! * `sqlite:PATH` — one file (created if missing), WAL mode.
//!
//! Further backends implement the ports of `yunjian_aggregator_core::store` in their own crate
//! and get a scheme here.

use crate::store::{Storage, StorageError};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    Sqlite(PathBuf),
}

/// A storage string that names no backend.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("storage {0:?}: use sqlite:PATH (the backends this build has)")]
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
        Err(StorageUrlError(s.into()))
    }
}

impl StorageUrl {
    /// Open a connection to it (one connection per handle; see `yunjian_aggregator_core::store`).
    pub fn open(&self) -> Result<Box<dyn Storage>, StorageError> {
        Ok(match self {
            StorageUrl::Sqlite(path) => Box::new(yunjian_store_sqlite::SqliteStorage::open(path)?),
        })
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
        }
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
        for bad in [
            "",
            "sqlite:",
            "mysql://x@y/z",
            "postgres://yj@db/yunjian",
            "yunjian.db",
        ] {
            let e = bad.parse::<StorageUrl>().unwrap_err();
            assert!(e.to_string().contains("sqlite:PATH"), "{e}");
        }
    }
}
