//! The real binary at start (issue 12, items 5, 7, 8, 9): out-of-range flags are refused
//! with a clear message, every startup error is one line on stderr with no backtrace even
//! with `RUST_BACKTRACE=1` (its cause said once), the log has no ANSI colours when it is
//! not a terminal, and a `--directory` file that differs from the database's directory is
//! named in a warning instead of being silently ignored.

use crate::common::process::hub_command;
use crate::common::{free_port, TempDir};
use clap::Parser;
use presence_hub::Cli;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a hub may take to start or exit (a safety net, not a timing).
const DEADLINE: Duration = Duration::from_secs(30);

/// The hub's command line, with a clean environment and `RUST_BACKTRACE=1` (as many Rust
/// developers have it set).
fn hub(args: &[&str]) -> Command {
    let mut cmd = hub_command();
    cmd.args(args).env("RUST_BACKTRACE", "1");
    cmd
}

/// Runs a hub that must refuse to start; returns (exit code, stdout, stderr).
fn refused(args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = hub(args).output().expect("run the hub");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} must fail:\n{stderr}");
    (out.status.code(), stdout, stderr)
}

/// A startup error: exit 1, one line on stderr saying `needle` once, no backtrace, and a
/// log without colour codes.
fn assert_one_clean_line(args: &[&str], needle: &str) {
    let (code, stdout, stderr) = refused(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
    assert!(lines[0].starts_with("presence-hub: error: "), "{stderr}");
    assert_eq!(
        stderr.matches(needle).count(),
        1,
        "{needle:?} once:\n{stderr}"
    );
    for noise in ["backtrace", "Caused by", "panicked", "\u{1b}["] {
        assert!(!stderr.contains(noise), "{noise:?} in:\n{stderr}");
    }
    assert!(
        !stdout.contains('\u{1b}'),
        "no ANSI codes in a piped log:\n{stdout}"
    );
}

/// Item 5: `--ring-timeout-secs` takes the API's range 1..=3600 (0 used to become 1 s);
/// `--wrap-up-secs` the directory's 0..=86400.
#[test]
fn out_of_range_timeouts_are_refused_with_the_api_range() {
    for (flag, value) in [
        ("--ring-timeout-secs", "0"),
        ("--ring-timeout-secs", "3601"),
        ("--wrap-up-secs", "86401"),
    ] {
        let (code, _, stderr) = refused(&[flag, value, "--database", ":memory:"]);
        assert_eq!(code, Some(2), "a command-line error: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        let range = if flag == "--wrap-up-secs" {
            "0..=86400"
        } else {
            "1..=3600"
        };
        assert!(stderr.contains(range), "names the range {range}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
    }
    for (flag, value, secs) in [
        ("--ring-timeout-secs", "1", 1),
        ("--ring-timeout-secs", "3600", 3600),
    ] {
        let cli = Cli::try_parse_from(["presence-hub", flag, value]).expect("in range");
        let settings = cli.settings().expect("settings");
        assert_eq!(settings.ring_timeout, Duration::from_secs(secs));
    }
}

/// Item 7: port in use, a database in a missing directory and a bad directory file each end
/// the start with one line on stderr (the cause once), exit code 1, no backtrace.
#[test]
fn startup_errors_print_once_without_a_backtrace() {
    let dir = TempDir::new("errors");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    assert_one_clean_line(
        &["--listen", &port, "--database", ":memory:"],
        "Address already in use",
    );
    let missing = dir.path("no-such-dir/hub.db");
    assert_one_clean_line(
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--database",
            missing.to_str().expect("utf-8 path"),
        ],
        "No such file or directory",
    );
    let file = dir.path("directory.toml");
    std::fs::write(
        &file,
        "[[agents]]\nid = \"a1\"\n\n[[agents]]\nid = \"a1\"\n",
    )
    .expect("write");
    assert_one_clean_line(
        &[
            "--directory",
            file.to_str().expect("utf-8 path"),
            "--database",
            ":memory:",
        ],
        "line 4: agent \"a1\": listed twice",
    );
    let syntax = dir.path("syntax.toml");
    std::fs::write(&syntax, "[[agents]]\nid = \"a1\"\nwrapup = 3\n").expect("write");
    assert_one_clean_line(
        &[
            "--directory",
            syntax.to_str().expect("utf-8 path"),
            "--database",
            ":memory:",
        ],
        "unknown field `wrapup`",
    );
    drop(taken);
}

/// Starts a hub on `db` with `directory`, waits until it serves, stops it; returns its log.
async fn run_once(dir: &TempDir, db: &Path, directory: &Path, tag: &str) -> String {
    let port = free_port();
    let log = dir.path(&format!("{tag}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = hub(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database",
        db.to_str().expect("utf-8 path"),
        "--directory",
        directory.to_str().expect("utf-8 path"),
    ])
    .stdout(file.try_clone().expect("log"))
    .stderr(file)
    .spawn()
    .expect("spawn the hub");
    let url = format!("http://127.0.0.1:{port}/api/v1/directory/agents");
    let until = Instant::now() + DEADLINE;
    let mut body = None;
    while Instant::now() < until && body.is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the hub exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if let Ok(r) = reqwest::get(&url).await {
            body = r.text().await.ok();
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(body.is_some(), "the hub never served:\n{out}");
    format!("{out}\n--- directory: {}", body.unwrap_or_default())
}

/// Item 8: the file seeds the first start only; a later start with a different file says
/// so in a warning (naming the file) and keeps the database's directory; the same file
/// again gives no warning.
#[tokio::test]
async fn a_directory_file_that_differs_from_the_database_is_named_in_a_warning() {
    let dir = TempDir::new("seed");
    let db = dir.path("hub.db");
    let first = dir.path("first.toml");
    std::fs::write(&first, "[[agents]]\nid = \"a1\"\nname = \"First\"\n").expect("write");
    let second = dir.path("second.toml");
    std::fs::write(&second, "[[agents]]\nid = \"a1\"\nname = \"Second\"\n").expect("write");
    const WARNING: &str = "differs from the directory in the database";

    let log = run_once(&dir, &db, &first, "seed").await;
    assert!(log.contains("\"First\""), "seeded:\n{log}");
    assert!(!log.contains(WARNING), "{log}");
    let log = run_once(&dir, &db, &second, "edited").await;
    assert!(log.contains(WARNING), "warned:\n{log}");
    assert!(log.contains("second.toml"), "names the file:\n{log}");
    assert!(
        log.contains("\"First\""),
        "the database's directory stays:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no ANSI codes in a piped log");
    let log = run_once(&dir, &db, &first, "same").await;
    assert!(!log.contains(WARNING), "same file, no warning:\n{log}");
}
