//! Cluster nodes as child processes of the real `presence-hub` binary, for the failure
//! tests that `kill -9`, freeze (`SIGSTOP`) or stop (`SIGTERM`) a node, and the checks every
//! such test makes over the public protocol: polling a node's view, and an admin's feed whose
//! `seq`s must come in order (or the admin is told `recovered: false`).

use super::process::{free_port, hub_command, TempDir};
use super::{Client, PATIENCE};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// One hub node: a child process on a free port with its own database, in cluster mode.
pub struct NodeProc {
    /// `--node-id`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The command line, to start it again after a kill.
    args: Vec<String>,
    /// Its database and log live here.
    dir: TempDir,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts node `name` on `nats` (comma-separated URLs) with `extra` flags; returns once
    /// it answers HTTP (not necessarily ready: see [`NodeProc::until_members`]).
    pub fn start(name: &str, nats: &str, extra: &[&str]) -> NodeProc {
        let dir = TempDir::new(&format!("node-{name}"));
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            addr.to_string(),
            "--nats".into(),
            nats.into(),
            "--node-id".into(),
            name.into(),
            "--database".into(),
            dir.path("hub.db").display().to_string(),
            "--ping-interval-secs".into(),
            "3600".into(),
            "--agent-rate".into(),
            "0".into(),
            "--admin-rate".into(),
            "0".into(),
            "--shutdown-timeout-secs".into(),
            "5".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProc {
            name: name.into(),
            addr,
            args,
            dir,
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path("hub.log"))
            .expect("log file");
        let child = hub_command()
            .args(&self.args)
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start presence-hub");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {} did not listen; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("hub.log")).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Sends `sig` (`KILL`, `TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1)")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `SIGTERM`; waits (polling, up to [`PATIENCE`]) for the exit and returns its status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("node running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node {} did not exit", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://addr/path`.
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `ws://addr/path`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// GET: status and JSON body (`Null` when there is none or the node does not answer).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        match reqwest::get(self.http(path)).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// POST JSON: status and body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(self.http(path))
            .json(body)
            .send()
            .await
            .expect("http post");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the node is ready and sees exactly `members`.
    pub async fn until_members(&self, members: &[&str]) {
        let start = Instant::now();
        loop {
            let (status, body) = self.get("/healthz").await;
            let seen: Vec<&str> = body["members"]
                .as_array()
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if status == 200 && seen == members {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "node {} never saw {members:?}: {status} {body}\nlog:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the node's view of agent `id` until `done` holds; returns it.
    pub async fn agent_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(&format!("/api/v1/agents/{id}")).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "agent {id} on {} never got there: {status} {body}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// An agent tab on this node: the socket and its `hello`, or `None` if the node closed
    /// it or answered something else first (an agent that is moving).
    pub async fn try_tab(&self, id: &str) -> Option<(Client, Value)> {
        let (ws, _) =
            tokio_tungstenite::connect_async(self.ws(&format!("/ws/agent?agent_id={id}")))
                .await
                .ok()?;
        let mut c = Client::from_ws(ws);
        let hello = first_text(&mut c).await?;
        (hello["type"] == "hello").then_some((c, hello))
    }

    /// An agent tab, retried until the node takes it (within [`PATIENCE`]).
    pub async fn tab(&self, id: &str) -> (Client, Value) {
        let start = Instant::now();
        loop {
            if let Some(t) = self.try_tab(id).await {
                return t;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "node {} never took a tab of {id}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A telephony adapter socket.
    pub async fn telephony(&self) -> Client {
        let mut c = Client::connect(&self.ws("/ws/telephony?adapter=test")).await;
        assert_eq!(c.recv().await["type"], "hello");
        c
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The first text frame, or `None` when the socket closes first.
pub async fn first_text(c: &mut Client) -> Option<Value> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(PATIENCE, c.ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Sends `req` (a change) on `c` until it is answered other than `unavailable`, within
/// [`PATIENCE`]; returns the answer and how many `unavailable`s came first. The request is
/// the same each time (a telephony event keeps its `event_id`).
pub async fn until_taken(c: &mut Client, req: Value) -> (Value, u32) {
    let start = Instant::now();
    let mut refused = 0;
    loop {
        let reply = c.request(req.clone()).await;
        if reply["code"] != "unavailable" {
            return (reply, refused);
        }
        refused += 1;
        assert!(
            start.elapsed() < PATIENCE,
            "still unavailable after {refused} tries: {reply}"
        );
        let wait = reply["retry_after_ms"].as_u64().unwrap_or(100).min(500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// What one admin socket saw: every `agent` event's (seq, agent_id, version, status), and
/// whether it was ever told `recovered: false`.
#[derive(Default, Debug)]
pub struct Feed {
    /// (seq, agent_id, version, status) in arrival order.
    pub events: Vec<(u64, String, u64, String)>,
    /// A `resume` answered `recovered: false` (a snapshot instead of the missed events).
    pub unrecovered: bool,
}

impl Feed {
    /// Records an `agent` frame (others are ignored).
    pub fn record(&mut self, frame: &Value) {
        if frame["type"] != "agent" {
            return;
        }
        self.events.push((
            frame["seq"].as_u64().expect("seq"),
            frame["agent"]["agent_id"].as_str().expect("id").to_owned(),
            frame["agent"]["version"].as_u64().expect("version"),
            frame["agent"]["status"]
                .as_str()
                .expect("status")
                .to_owned(),
        ));
    }

    /// Every `seq` in order with no repeat, and (unless told `recovered: false`) each
    /// agent's versions one after the other: nothing missed, nothing twice.
    pub fn assert_in_order(&self, who: &str) {
        for w in self.events.windows(2) {
            assert!(w[0].0 < w[1].0, "{who}: seq out of order: {w:?}");
        }
        if self.unrecovered {
            return;
        }
        let mut last: std::collections::HashMap<&str, u64> = Default::default();
        for (seq, id, version, _) in &self.events {
            if let Some(prev) = last.insert(id, *version) {
                assert_eq!(
                    *version,
                    prev + 1,
                    "{who}: agent {id} skipped from version {prev} at seq {seq}"
                );
            }
        }
    }

    /// The last version seen of `id`.
    pub fn last_version(&self, id: &str) -> Option<u64> {
        self.events.iter().rev().find(|e| e.1 == id).map(|e| e.2)
    }
}

/// An admin subscribed to everything on `node`, with its feed started from the snapshot's
/// seq; returns the socket, the feed and the snapshot's epoch.
pub async fn admin_on(node: &NodeProc) -> (Client, Feed, Value) {
    let mut c = Client::connect(&node.ws("/ws/admin?admin_id=boss")).await;
    assert_eq!(c.recv().await["type"], "hello");
    let snap = c.request(json!({"type": "subscribe"})).await;
    assert_eq!(snap["type"], "ok", "{snap}");
    (c, Feed::default(), snap["snapshot"]["epoch"].clone())
}

/// Reads `c`'s frames into `feed` until `done(feed)` holds (within [`PATIENCE`]).
pub async fn read_until(c: &mut Client, feed: &mut Feed, done: impl Fn(&Feed) -> bool) {
    let start = Instant::now();
    while !done(feed) {
        assert!(
            start.elapsed() < PATIENCE,
            "admin feed never got there: {:?}",
            feed.events.last()
        );
        let frame = c.recv().await;
        feed.record(&frame);
    }
}
