//! Child processes and the machine: the real `presence-hub` binary with a clean
//! environment, temporary directories, free ports, and `/proc` readings.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The hub binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_presence-hub");

/// The hub's command line: `BIN` without any `PRESENCE_HUB_*` variable of this
/// environment, `RUST_LOG=info`, no stdin. Callers add the flags, `RUST_BACKTRACE` and
/// where the output goes.
pub fn hub_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("PRESENCE_HUB_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").stdin(Stdio::null());
    cmd
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `presence-hub-{tag}-{pid}-{n}-{nanos}`: unique across the tests of this process
    /// and across runs.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "presence-hub-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free on 127.0.0.1 right now (another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Set in the child process of [`run_alone`].
const ALONE: &str = "PRESENCE_HUB_TEST_ALONE";

/// Runs the test `name` (a module path inside this test binary, `#[ignore]`d so that it
/// never runs beside the others) alone in a child process of this test binary, with `envs`
/// set there only; fails with the child's output unless that one test passed. For tests
/// that read the process's own memory or descriptors, or need environment variables:
/// no other test shares the child's process.
pub fn run_alone(name: &str, envs: &[(&str, &str)]) {
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ALONE, "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What the child measured, for `--nocapture`.
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{name} failed alone:\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name} did not run alone:\n{stdout}"
    );
}

/// Fails unless this process was started by [`run_alone`] (a test run with `--ignored`
/// beside the others would measure them too).
pub fn assert_alone() {
    assert_eq!(
        std::env::var(ALONE).as_deref(),
        Ok("1"),
        "this test must run alone: its `_alone` twin runs it in a child process"
    );
}

/// One field of `/proc/self/status` (`VmRSS`, `VmHWM`, `VmPeak`...), in KiB: this whole
/// process, so only a test alone in its process (see [`run_alone`]) can read it as the hub's.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB")
}
