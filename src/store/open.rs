//! Opening the database: checks that refuse a file the hub must not touch (before anything
//! is written to it), connection pragmas, versioned migrations, the first-start seed of the
//! directory, and loading what a restart recovers.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::codec::{from_json, ms_from_sql, ms_to_sql, parse_error_code, secs_to_sql, to_json};
use super::read::read_directory;
use super::{Durability, RecoveredAgent, StoreError};
use crate::directory::Directory;
use crate::model::{AgentState, Millis, Session};
use crate::protocol::StoredReply;

/// The migrations, in order: migration `i` brings the schema to version `i + 1`.
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/0001_init.sql")),
    (
        "0002_event_ids_append",
        include_str!("migrations/0002_event_ids_append.sql"),
    ),
    (
        "0003_agent_created_at",
        include_str!("migrations/0003_agent_created_at.sql"),
    ),
];

/// The schema version this binary writes.
pub(super) fn latest_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX)
}

/// Page cache of the write connection by default, in KiB (`--store-cache-mib`).
pub(super) const WRITER_CACHE_KIB: u32 = 32 * 1024;
/// Page cache of a read connection at most, in KiB (SQLite's default).
pub(super) const READER_CACHE_KIB: u32 = 2 * 1024;
/// WAL pages (4 KiB) after which a commit checkpoints.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
/// Bytes the WAL file is cut back to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Where the data lives.
#[derive(Debug, Clone)]
pub(super) enum Location {
    /// A file; the lock handle keeps other hub processes out while the store is open.
    File(std::path::PathBuf),
    /// A private in-memory database shared by this store's connections (SQLite's `memdb`
    /// VFS; gone when the store closes).
    Memory(String),
}

impl Location {
    pub(super) fn of(path: &Path) -> Location {
        if path.as_os_str() == ":memory:" {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Location::Memory(format!(
                "file:/presence-hub-{}-{n}?vfs=memdb",
                std::process::id()
            ))
        } else {
            Location::File(path.to_path_buf())
        }
    }

    /// Opens a connection (`write`: read-write and create, else read-only).
    pub(super) fn connect(&self, write: bool) -> Result<Connection, rusqlite::Error> {
        self.connect_with_cache(write, READER_CACHE_KIB)
    }

    /// [`Location::connect`]; a read connection's page cache is capped at `cache_kib`.
    pub(super) fn connect_with_cache(
        &self,
        write: bool,
        cache_kib: u32,
    ) -> Result<Connection, rusqlite::Error> {
        let mode = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match self {
            Location::File(path) => Connection::open_with_flags(path, flags)?,
            Location::Memory(uri) => {
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if !write {
            conn.pragma_update(None, "query_only", true)?;
            conn.pragma_update(None, "cache_size", -i64::from(cache_kib))?;
        }
        Ok(conn)
    }

    pub(super) fn display(&self) -> &Path {
        match self {
            Location::File(path) => path,
            Location::Memory(_) => Path::new(":memory:"),
        }
    }
}

/// Checks a database file before SQLite opens it: an existing file must be writable and
/// start with the SQLite header (an empty file counts as new); a new one needs a writable
/// directory. Returns an open handle of the file holding an exclusive advisory lock.
///
/// Permission bits are checked explicitly (not only through `open`) so a write-protected
/// file is refused even when the hub runs as root, who could write it anyway.
pub(super) fn check_file(path: &Path) -> Result<File, StoreError> {
    let read_only = |detail: &str| StoreError::ReadOnly {
        path: path.display().to_string(),
        detail: detail.to_string(),
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.is_dir() {
                return Err(StoreError::CannotOpen {
                    path: path.display().to_string(),
                    detail: "it is a directory".into(),
                });
            }
            let mut header = Vec::with_capacity(16);
            File::open(path)
                .and_then(|f| f.take(16).read_to_end(&mut header))
                .map_err(|e| StoreError::io(path, e))?;
            if !header.is_empty() && header.as_slice() != SQLITE_HEADER {
                return Err(StoreError::NotADatabase {
                    path: path.display().to_string(),
                });
            }
            if meta.permissions().readonly() {
                return Err(read_only("the file is write-protected"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(path, e)),
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.permissions().readonly() => {
            return Err(read_only("its directory is write-protected"))
        }
        Ok(_) => {}
        Err(e) => {
            return Err(StoreError::CannotOpen {
                path: path.display().to_string(),
                detail: format!("directory {}: {e}", dir.display()),
            })
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => read_only(&e.to_string()),
            _ => StoreError::io(path, e),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(path, e)),
    }
}

/// Reads the schema before writing anything: the file must be readable as SQLite, writable,
/// and either empty, or ours at a version this binary knows.
pub(super) fn check_schema(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    let at_open = |e| StoreError::at_open(path, e);
    if conn.is_readonly("main").map_err(at_open)? {
        return Err(StoreError::ReadOnly {
            path: path.display().to_string(),
            detail: "SQLite opened it read-only".into(),
        });
    }
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(at_open)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .map_err(at_open)?;
    if version == 0 && tables > 0 {
        return Err(StoreError::Foreign {
            path: path.display().to_string(),
        });
    }
    if version > latest_version() {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            supported: latest_version(),
        });
    }
    Ok(version)
}

/// Pragmas of the write connection. WAL lets readers run beside the writer; `synchronous`
/// follows the durability mode (see the module docs of `store`).
pub(super) fn configure_writer(
    conn: &Connection,
    location: &Location,
    durability: Durability,
    cache_kib: u32,
) -> Result<(), StoreError> {
    let at_open = |e| StoreError::at_open(location.display(), e);
    if let Location::File(_) = location {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(at_open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "durable store: WAL mode unavailable on this file system; readers will wait for the writer");
        }
    }
    let sync = match durability {
        Durability::Commit => "FULL",
        Durability::Async => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(at_open)?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(at_open)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(at_open)?;
    // Every change touches an agent's row, a history index page and the event ids: with
    // SQLite's default 2 MiB cache those pages were read back from the file again and
    // again. The cache is a cap (filled as pages are used), not an allocation.
    // (SQLite's `cache_size` takes KiB as a negative number.)
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))
        .map_err(at_open)?;
    // Checkpoint (copy the WAL into the database file, with its fsyncs) every ~40 MiB of
    // WAL instead of SQLite's ~4 MiB: a page changed by many commits is copied once, and
    // the commit that runs the checkpoint is held up ten times less often. The WAL file is
    // cut back to `WAL_SIZE_LIMIT` after a checkpoint, and truncated at a clean stop.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(at_open)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(at_open)?;
    Ok(())
}

/// Applies every migration newer than `from`, each in its own transaction together with
/// the new `user_version`. Applying none is the normal reopen.
pub(super) fn migrate(conn: &mut Connection, from: u32, now: Millis) -> Result<(), StoreError> {
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if version <= from {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, ms_to_sql(now)],
        )?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, name, "durable store: migration applied");
    }
    Ok(())
}

/// Writes `seed` into the directory tables once, on the store's first start.
pub(super) fn seed_directory(conn: &mut Connection, seed: &Directory) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let seeded: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'directory_seeded'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if seeded.is_some() {
        return Ok(false);
    }
    for p in seed.agents.values() {
        tx.execute(
            "INSERT OR REPLACE INTO directory_agents (id, name, teams, wrap_up_seconds, ring_groups) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                p.id.as_str(),
                p.name,
                to_json("teams", &p.teams)?,
                secs_to_sql(p.wrap_up_seconds),
                to_json("ring groups", &p.ring_groups)?,
            ],
        )?;
    }
    for g in seed.ring_groups.values() {
        tx.execute(
            "INSERT OR REPLACE INTO ring_groups (id, ring_timeout_seconds, members) VALUES (?1, ?2, ?3)",
            params![g.id, secs_to_sql(g.ring_timeout_seconds), to_json("members", &g.members)?],
        )?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('directory_seeded', '1')",
        [],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Every stored agent state, with its session.
pub(super) fn load_agents(conn: &Connection) -> Result<Vec<RecoveredAgent>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT agent_id, state, session FROM agent_state ORDER BY agent_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut agents = Vec::new();
    for row in rows {
        let (id, state, session) = row?;
        let in_row =
            |e: StoreError| StoreError::decode("agent state", format!("agent {id:?}: {e}"));
        let mut state: AgentState = from_json("agent state", &state).map_err(in_row)?;
        let session: Session = from_json("session", &session).map_err(in_row)?;
        state.session = session;
        agents.push(RecoveredAgent { state, session });
    }
    Ok(agents)
}

/// Every stored event id with its reply and when it was stored, oldest first.
pub(super) fn load_event_ids(
    conn: &Connection,
) -> Result<Vec<(String, StoredReply, Millis)>, StoreError> {
    // Rows in the order they were written: an id stored twice (answered again after the
    // hub's cache forgot it) keeps its first reply, as `INSERT OR IGNORE` did.
    let mut stmt =
        conn.prepare("SELECT event_id, error, fields, at FROM event_ids ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for row in rows {
        let (id, error, fields, at) = row?;
        if !seen.insert(id.clone()) {
            continue;
        }
        let error = error.as_deref().map(parse_error_code).transpose()?;
        let reply = StoredReply {
            error,
            fields: fields.into(),
        };
        out.push((id, reply, ms_from_sql(at)));
    }
    // Oldest first (stable: ids stored in one millisecond keep their order).
    out.sort_by_key(|e| e.2);
    Ok(out)
}

/// The directory the database holds.
pub(super) fn load_directory(conn: &Connection) -> Result<Directory, StoreError> {
    read_directory(conn)
}
