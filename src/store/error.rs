//! What can go wrong with the durable store, and how SQLite's error codes map onto it.
//!
//! The opening errors (`NotADatabase`, `Corrupt`, `ReadOnly`, `Locked`, `Foreign`, `TooNew`)
//! name the file and say what to do, because they end the process at start with a non-zero
//! exit code; none of them is raised after anything was written to the file.

use std::path::Path;
use std::sync::Arc;

/// An error of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not an SQLite database (wrong header). Nothing was written.
    #[error("{path} is not a presence-hub database (not an SQLite file); refusing to use or overwrite it: move it away or pass another --database")]
    NotADatabase { path: String },
    /// The file is an SQLite database but damaged. Nothing was written.
    #[error("database {path} is corrupt ({detail}); refusing to start: restore it from a backup or move it away")]
    Corrupt { path: String, detail: String },
    /// The file or its directory cannot be written.
    #[error("database {path} is read-only ({detail}): the hub needs write access to the file and its directory (for the -wal and -shm files)")]
    ReadOnly { path: String, detail: String },
    /// The file cannot be opened or created at all (missing directory, a directory, ...).
    #[error("cannot open database {path}: {detail}")]
    CannotOpen { path: String, detail: String },
    /// Another process holds the database.
    #[error(
        "database {path} is in use by another process (is another presence-hub running on it?)"
    )]
    Locked { path: String },
    /// An SQLite database of some other application.
    #[error("{path} is an SQLite database of another application (it has tables but no presence-hub schema version); refusing to touch it")]
    Foreign { path: String },
    /// The schema is newer than this binary knows.
    #[error("database {path} has schema version {found}, newer than this presence-hub supports ({supported}): upgrade the binary")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    /// A stored value could not be decoded.
    #[error("cannot decode stored {what}: {detail}")]
    Decode { what: &'static str, detail: String },
    /// The transaction carrying this change failed (after retries); it is not stored.
    #[error("durable store write failed: {0}")]
    WriteFailed(Arc<str>),
    /// The store was closed (or its writer ended) before the change was committed.
    #[error("durable store is closed")]
    Closed,
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other I/O error around the database file.
    #[error("database file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Maps an SQLite error met while opening or checking `path` to the clearest variant.
    pub(super) fn at_open(path: &Path, err: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        let path_s = path.display().to_string();
        let detail = err.to_string();
        match err.sqlite_error_code() {
            Some(C::NotADatabase) => StoreError::NotADatabase { path: path_s },
            Some(C::DatabaseCorrupt) => StoreError::Corrupt {
                path: path_s,
                detail,
            },
            Some(C::ReadOnly) | Some(C::PermissionDenied) => StoreError::ReadOnly {
                path: path_s,
                detail,
            },
            Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => StoreError::Locked { path: path_s },
            Some(C::CannotOpen) => StoreError::CannotOpen {
                path: path_s,
                detail,
            },
            _ => StoreError::Sqlite(err),
        }
    }

    /// An I/O error about `path`.
    pub(super) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// A value that could not be decoded.
    pub(super) fn decode(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Decode {
            what,
            detail: detail.to_string(),
        }
    }
}
