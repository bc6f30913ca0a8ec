//! Tests of what `Store::open` refuses: nothing written to a file it will not use.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::tests::{open_at, TempDir};
use super::*;

fn open_err(path: &Path) -> StoreError {
    let seed = Directory::default();
    match Store::open(path, StoreOptions::new(&seed, 0)) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn a_corrupt_file_is_refused_and_left_unchanged() {
    let dir = TempDir::new("corrupt");
    let random = dir.file("random.db");
    let bytes: Vec<u8> = (0..8192).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&random, &bytes).expect("write");
    let err = open_err(&random);
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("random.db"));
    assert_eq!(std::fs::read(&random).expect("read"), bytes);

    // A valid header followed by garbage: SQLite itself refuses it, before any write.
    let garbled = dir.file("garbled.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192).map(|_| rand::random::<u8>()));
    std::fs::write(&garbled, &bytes).expect("write");
    let err = open_err(&garbled);
    assert!(
        matches!(
            err,
            StoreError::NotADatabase { .. } | StoreError::Corrupt { .. }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&garbled).expect("read"), bytes);
    let mut files: Vec<String> = std::fs::read_dir(&dir.0)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["garbled.db", "random.db"],
        "no -wal, -shm or journal"
    );
}

#[test]
fn read_only_files_and_directories_are_refused() {
    let dir = TempDir::new("readonly");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    store.close().expect("close");
    let before = std::fs::read(&path).expect("read");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let err = open_err(&path);
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);

    let ro_dir = TempDir::new("readonly-dir");
    std::fs::set_permissions(&ro_dir.0, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let err = open_err(&ro_dir.file("new.db"));
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    assert!(!ro_dir.file("new.db").exists());
}

#[test]
fn foreign_databases_a_second_hub_and_missing_directories_are_refused() {
    let dir = TempDir::new("foreign");
    let path = dir.file("other.db");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY);")
        .expect("create");
    drop(conn);
    let before = std::fs::read(&path).expect("read");
    assert!(matches!(open_err(&path), StoreError::Foreign { .. }));
    assert_eq!(std::fs::read(&path).expect("read"), before);

    let ours = dir.file("hub.db");
    let (store, _) = open_at(&ours, Durability::Commit);
    assert!(matches!(open_err(&ours), StoreError::Locked { .. }));
    store.close().expect("close");
    let (store, _) = open_at(&ours, Durability::Commit);
    store.close().expect("close");

    let missing = dir.file("no/such/dir/hub.db");
    assert!(matches!(open_err(&missing), StoreError::CannotOpen { .. }));
}

#[tokio::test]
async fn an_undecodable_stored_state_is_refused_before_any_write() {
    let dir = TempDir::new("undecodable");
    let path = dir.file("hub.db");
    let (store, _) = open_at(&path, Durability::Commit);
    let s0 = AgentState::new(AgentId::parse("a1").expect("id"), 0);
    let mut s1 = s0.clone();
    s1.version = 1;
    store.record_change(&s0, &s1, 1).await.expect("commit");
    store.close().expect("close");
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute("UPDATE agent_state SET state = '{\"not\":1}'", [])
        .expect("damage");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    drop(conn);
    let before = std::fs::read(&path).expect("read");
    let err = open_err(&path);
    assert!(matches!(err, StoreError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("a1"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}
