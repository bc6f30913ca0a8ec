//! What every scenario shares: the process clock, WebSocket connections spread over source
//! addresses, the file-descriptor limit, CPU and memory readings of both processes, the
//! hub's `/metrics`, latency summaries, and the table + `RESULT` line output.

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

static START: OnceLock<Instant> = OnceLock::new();

/// Starts the process clock (call first thing in `main`).
pub(crate) fn init_clock() {
    let _ = START.get_or_init(Instant::now);
}

/// Nanoseconds since the process clock started: the timestamps every scenario embeds in
/// what it sends and compares with on receipt (one process, one monotonic clock).
pub(crate) fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Where the hub is and how to reach it: one node, or the nodes of a cluster, over which
/// the sockets of each role (agents, admins, adapters) are spread round robin.
pub(crate) struct Target {
    /// The first node: HTTP calls (`/metrics`, `/healthz`) go there.
    pub addr: SocketAddr,
    /// Every node (`--addr a,b,c`); one for a single hub.
    nodes: Vec<SocketAddr>,
    /// The next node of each role: agent, admin, telephony, anything else.
    next_node: [AtomicUsize; 4],
    /// Client source addresses, used round robin (empty: let the kernel choose).
    sources: Vec<Ipv4Addr>,
    next_source: AtomicUsize,
}

impl Target {
    /// `source_ips` addresses starting at 127.0.0.2 when the hubs are on loopback.
    pub(crate) fn new(nodes: Vec<SocketAddr>, source_ips: u8) -> Target {
        let addr = nodes[0];
        let sources = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && source_ips > 0 => (0..source_ips)
                .map(|i| Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i)))
                .collect(),
            _ => Vec::new(),
        };
        Target {
            addr,
            nodes,
            next_node: Default::default(),
            sources,
            next_source: AtomicUsize::new(0),
        }
    }

    /// How many hub nodes the sockets are spread over.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node for the next socket on `path_and_query`: round robin per role.
    fn node_for(&self, path_and_query: &str) -> SocketAddr {
        let role = if path_and_query.starts_with("/ws/agent") {
            0
        } else if path_and_query.starts_with("/ws/admin") {
            1
        } else if path_and_query.starts_with("/ws/telephony") {
            2
        } else {
            3
        };
        let i = self.next_node[role].fetch_add(1, Ordering::Relaxed);
        self.nodes[i % self.nodes.len()]
    }

    /// How many source addresses the connections are spread over.
    pub(crate) fn source_count(&self) -> usize {
        self.sources.len().max(1)
    }

    /// Opens a TCP connection from the next source address. `IP_BIND_ADDRESS_NO_PORT`
    /// defers the port choice to `connect`, so each source address gives the whole
    /// ephemeral range (~28k ports) towards the hub.
    async fn tcp(&self, to: SocketAddr) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            set_bind_no_port(&socket);
            socket
                .bind(SocketAddr::new(IpAddr::V4(self.sources[i]), 0))
                .with_context(|| format!("bind {}", self.sources[i]))?;
        }
        let stream = socket
            .connect(to)
            .await
            .with_context(|| format!("connect {to}"))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a WebSocket to `path_and_query` (e.g. `/ws/agent?agent_id=a1`).
    pub(crate) async fn ws(&self, path_and_query: &str, read_buffer: usize) -> Result<Ws> {
        let node = self.node_for(path_and_query);
        let stream = self.tcp(node).await?;
        let url = format!("ws://{node}{path_and_query}");
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0)
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake on {path_and_query}"))?;
        Ok(ws)
    }

    /// `GET path` on the first node over HTTP/1.1: status and body.
    pub(crate) async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.addr, path).await
    }

    /// The hub's `/metrics`.
    pub(crate) async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = self.http_get("/metrics").await?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        Ok(Metrics(body))
    }

    /// Waits until `GET /healthz` answers 200 on every node.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            loop {
                if let Ok((200, _)) = http_get(*node, "/healthz").await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("hub at {node} not ready within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

/// `GET path` on `addr` over HTTP/1.1: status and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("HTTP reply without header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

#[allow(unsafe_code)] // one setsockopt, see SAFETY
fn set_bind_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or(&[]);
    }
}

/// A `/metrics` scrape.
pub(crate) struct Metrics(String);

impl Metrics {
    /// The value of `series` (name with its labels, exactly as exposed), if present.
    pub(crate) fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?;
            let value = rest.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Like [`Metrics::get`], as JSON (`null` when missing).
    pub(crate) fn json(&self, series: &str) -> Value {
        self.get(series).map_or(Value::Null, |v| json!(v))
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
#[allow(unsafe_code)] // getrlimit / setrlimit, see SAFETY
pub(crate) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Checks that `sockets` more descriptors fit under the limit (with room for the runtime).
pub(crate) fn check_fd_budget(sockets: usize, warnings: &mut Vec<String>) -> usize {
    let limit = raise_nofile() as usize;
    let room = limit.saturating_sub(64);
    if sockets > room {
        warnings.push(format!(
            "RLIMIT_NOFILE of the loadgen is {limit}: capping sockets from {sockets} to {room} \
             (raise the hard limit, e.g. `ulimit -Hn`, which needs CAP_SYS_RESOURCE)"
        ));
        room
    } else {
        sockets
    }
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}

/// Our own resident memory in KiB.
pub(crate) fn self_rss_kib() -> Option<u64> {
    rss_kib(std::process::id())
}

/// CPU seconds (user + system) of this process.
#[allow(unsafe_code)] // getrusage, see SAFETY
fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// CPU seconds (utime + stime) of another process, from `/proc/<pid>/stat`.
#[allow(unsafe_code)] // sysconf, see SAFETY
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// CPU use of the load generator and of the hub over a measured phase.
pub(crate) struct CpuMeter {
    start: Instant,
    self0: f64,
    hub_pid: Option<u32>,
    hub0: Option<f64>,
}

/// What a [`CpuMeter`] measured: average cores busy over the phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    pub wall_secs: f64,
    pub loadgen_cores: f64,
    pub hub_cores: Option<f64>,
}

impl CpuMeter {
    pub(crate) fn start(hub_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            start: Instant::now(),
            self0: self_cpu_secs(),
            hub_pid,
            hub0: hub_pid.and_then(proc_cpu_secs),
        }
    }

    pub(crate) fn stop(&self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let hub = match (self.hub_pid.and_then(proc_cpu_secs), self.hub0) {
            (Some(now), Some(then)) => Some((now - then) / wall),
            _ => None,
        };
        CpuUse {
            wall_secs: wall,
            loadgen_cores: (self_cpu_secs() - self.self0) / wall,
            hub_cores: hub,
        }
    }
}

impl CpuUse {
    /// Adds the "load generator was the bottleneck" warning when it used more CPU.
    pub(crate) fn check(&self, warnings: &mut Vec<String>) {
        match self.hub_cores {
            Some(hub) if self.loadgen_cores > hub => warnings.push(format!(
                "the load generator used more CPU than the hub ({:.2} vs {:.2} cores): \
                 on this machine it may be the bottleneck, so the hub figures are a lower bound",
                self.loadgen_cores, hub
            )),
            None => warnings.push(
                "no --hub-pid: the hub's CPU use is unknown, so whether the load generator \
                 was the bottleneck cannot be told"
                    .into(),
            ),
            _ => {}
        }
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "wall_secs": round3(self.wall_secs),
            "loadgen_cores": round3(self.loadgen_cores),
            "hub_cores": self.hub_cores.map(round3),
            "loadgen_bottleneck": self.hub_cores.map(|h| self.loadgen_cores > h),
        })
    }

    pub(crate) fn rows(&self, t: &mut Table) {
        t.row(
            "load generator CPU (cores)",
            format!("{:.2}", self.loadgen_cores),
        );
        t.row(
            "hub CPU (cores)",
            self.hub_cores
                .map_or("unknown (no --hub-pid)".into(), |h| format!("{h:.2}")),
        );
    }
}

/// Rounds to 3 decimals for the JSON line.
pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A latency histogram in nanoseconds (1 µs .. 10 min, 3 significant digits).
#[allow(clippy::expect_used)] // constant bounds, checked by every run
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` (clamped into the histogram's range).
pub(crate) fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1_000));
}

/// Percentiles of a histogram, in milliseconds.
pub(crate) fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let ms = |ns: u64| round3(ns as f64 / 1e6);
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": round3(h.mean() / 1e6),
    })
}

/// One table line for a latency histogram.
pub(crate) fn latency_row(t: &mut Table, what: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        t.row(what, "no samples");
        return;
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    t.row(
        what,
        format!(
            "p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3} ms  (n={})",
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            h.len()
        ),
    );
}

/// A two-column human table.
pub(crate) struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn new(title: impl Into<String>) -> Table {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.rows.push((what.into(), value.into()));
    }

    pub(crate) fn print(&self) {
        let w = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!("\n== {} ==", self.title);
        for (k, v) in &self.rows {
            println!("  {k:<w$}  {v}");
        }
    }
}

/// Prints the warnings, the table, and the final `RESULT {json}` line.
pub(crate) fn finish(table: &Table, mut result: Value, warnings: &[String], ok: bool) {
    table.print();
    for w in warnings {
        println!("  WARNING: {w}");
    }
    if let Value::Object(map) = &mut result {
        map.insert("warnings".into(), json!(warnings));
        map.insert("ok".into(), json!(ok));
        map.insert(
            "loadgen_rss_kib".into(),
            self_rss_kib().map_or(Value::Null, |v| json!(v)),
        );
    }
    println!("RESULT {result}");
}

/// Fields of a hub frame that the load generator looks at (the rest is skipped unparsed).
#[derive(Debug, Deserialize)]
pub(crate) struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(rename = "ref", default)]
    pub reply_ref: Option<u64>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub agent: Option<AgentLite<'a>>,
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub accepted: Option<bool>,
    #[serde(default)]
    pub stale: Option<bool>,
}

/// The parts of an `AgentState` the checks use.
#[derive(Debug, Deserialize)]
pub(crate) struct AgentLite<'a> {
    #[serde(borrow)]
    pub agent_id: Cow<'a, str>,
    pub version: u64,
    #[serde(default, borrow)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub note: Option<Cow<'a, str>>,
}

/// Decodes a hub frame.
pub(crate) fn parse_frame(text: &str) -> Result<Frame<'_>> {
    serde_json::from_str(text).with_context(|| format!("unexpected frame: {}", clip(text)))
}

/// The first 200 characters of a frame, for error messages.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The index of an agent id `<prefix><n>`.
pub(crate) fn agent_index(id: &str, prefix: &str) -> Option<usize> {
    id.strip_prefix(prefix)?.parse().ok()
}

/// Runs `n` jobs with at most `concurrency` at once, each job getting its index; returns
/// the outputs in index order.
pub(crate) async fn run_bounded<T, F, Fut>(n: usize, concurrency: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    use futures::stream::StreamExt;
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut stream = futures::stream::iter((0..n).map(|i| {
        let fut = tokio::spawn(job(i));
        async move { (i, fut.await) }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((i, r)) = stream.next().await {
        match r {
            Ok(v) => out[i] = Some(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    // Every index was filled above (a job that panicked re-raised its panic).
    out.into_iter().flatten().collect()
}

/// A per-run tag for ids that must be unique across runs against one hub (event ids).
pub(crate) fn run_nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            % 1_000_000_000
    })
}

/// The fields of an `agent` event the fan-out checks use.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Event<'a> {
    pub seq: u64,
    pub agent_id: &'a str,
    pub version: u64,
    pub reason: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// Reads an `agent` event the way the hub writes it (`{"type":"agent","seq":N,"agent":{...}}`)
/// without a JSON parser, so the load generator's admins stay cheaper than the hub that
/// feeds them. A quoted key followed by `:` can only be a key (quotes inside JSON strings
/// are escaped), and `reason`, `note` and `version` are keys of `AgentState` only (not of its
/// nested `call`). Returns `None` for anything unexpected: the caller then parses with serde.
pub(crate) fn scan_event(text: &str) -> Option<Event<'_>> {
    let rest = text.strip_prefix(r#"{"type":"agent","seq":"#)?;
    let (seq, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(r#","agent":{"agent_id":""#)?;
    let end = rest.find('"')?;
    let agent_id = &rest[..end];
    if agent_id.contains('\\') {
        return None;
    }
    let body = &rest[end..];
    let version_at = body.rfind(r#""version":"#)?;
    let (version, _) = leading_u64(&body[version_at + 10..])?;
    Some(Event {
        seq,
        agent_id,
        version,
        reason: string_field(body, r#""reason":"#)?,
        note: string_field(body, r#""note":"#)?,
    })
}

fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    Some((s[..digits].parse().ok()?, &s[digits..]))
}

/// `Some(None)` for `null`, `Some(Some(s))` for a string without escapes, `None` otherwise
/// (missing key, escapes: let serde handle it).
fn string_field<'a>(body: &'a str, key: &str) -> Option<Option<&'a str>> {
    let at = body.find(key)? + key.len();
    let v = &body[at..];
    if v.starts_with("null") {
        return Some(None);
    }
    let v = v.strip_prefix('"')?;
    let end = v.find('"')?;
    let s = &v[..end];
    if s.contains('\\') {
        return None;
    }
    Some(Some(s))
}

/// A WebSocket frame header.
pub(crate) struct Header {
    pub fin: bool,
    pub opcode: u8,
    /// Header length in bytes.
    pub header: usize,
    /// Payload length in bytes.
    pub len: usize,
}

/// Parses a server (unmasked) WebSocket frame header, if complete.
pub(crate) fn frame_header(buf: &[u8]) -> Result<Option<Header>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        bail!("server frame is masked");
    }
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    Ok(Some(Header {
        fin,
        opcode,
        header,
        len,
    }))
}

/// A masked client frame (`opcode`, FIN set) carrying `payload` (< 126 bytes: control frames).
pub(crate) fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x5a, 0x17, 0xc3, 0x9e];
    let len = payload.len().min(125);
    let mut out = Vec::with_capacity(6 + len);
    out.push(0x80 | opcode);
    out.push(0x80 | len as u8);
    out.extend_from_slice(&KEY);
    out.extend(
        payload[..len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ KEY[i % 4]),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_event(text: &str) -> Event<'_> {
        let f = parse_frame(text).expect("valid frame");
        let a = f.agent.expect("agent");
        let leak =
            |c: Option<Cow<'_, str>>| c.map(|c| &*Box::leak(c.into_owned().into_boxed_str()));
        Event {
            seq: f.seq.expect("seq"),
            agent_id: Box::leak(a.agent_id.into_owned().into_boxed_str()),
            version: a.version,
            reason: leak(a.reason),
            note: leak(a.note),
        }
    }

    #[test]
    fn scanner_agrees_with_serde_on_hub_frames() {
        let frames = [
            r#"{"type":"agent","seq":42,"agent":{"agent_id":"fo-7","name":null,"teams":[],"status":"busy","manual_status":"busy","since":1700000000000,"reason":"manual","note":"123456789","call":null,"ring_expires_at":null,"wrap_up_expires_at":null,"connections":1,"missed_in_row":0,"version":9}}"#,
            r#"{"type":"agent","seq":43,"agent":{"agent_id":"fo-0","name":"A \"quoted\" name","teams":["t1"],"status":"ringing","manual_status":"available","since":1,"reason":"call_offered","note":null,"call":{"call_id":"c1-0-0","direction":"inbound","ring_group":null,"from":"\"version\":1","to":null,"offered_at":1,"answered_at":null},"ring_expires_at":2,"wrap_up_expires_at":null,"connections":1,"missed_in_row":0,"version":10}}"#,
            r#"{"type":"agent","seq":1,"agent":{"agent_id":"x","name":null,"teams":[],"status":"offline","manual_status":"offline","since":0,"reason":null,"note":null,"call":null,"ring_expires_at":null,"wrap_up_expires_at":null,"connections":0,"missed_in_row":0,"version":0}}"#,
        ];
        for f in frames {
            assert_eq!(scan_event(f), Some(serde_event(f)), "{f}");
        }
    }

    #[test]
    fn frame_headers_and_masked_frames() {
        let short = [0x81u8, 5, b'h', b'e', b'l', b'l', b'o'];
        let h = frame_header(&short).unwrap().unwrap();
        assert!(h.fin && h.opcode == 1 && h.header == 2 && h.len == 5);
        let mid = [0x81u8, 126, 0x01, 0x00];
        assert_eq!(frame_header(&mid).unwrap().unwrap().len, 256);
        let long = [0x81u8, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        let h = frame_header(&long).unwrap().unwrap();
        assert_eq!((h.header, h.len), (10, 65536));
        assert!(frame_header(&long[..5]).unwrap().is_none());
        assert!(
            frame_header(&[0x81u8, 0x85]).is_err(),
            "server frames are not masked"
        );
        let pong = masked_frame(0xA, b"ping!");
        assert_eq!((pong[0], pong[1]), (0x8A, 0x85));
        let unmasked: Vec<u8> = pong[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ pong[2 + i % 4])
            .collect();
        assert_eq!(unmasked, b"ping!");
    }

    #[test]
    fn scanner_declines_what_it_does_not_know() {
        assert_eq!(scan_event(r#"{"type":"ok","ref":1}"#), None);
        assert_eq!(
            scan_event(r#"{"seq":1,"type":"agent","agent":{"agent_id":"a","version":1}}"#),
            None
        );
        let escaped = r#"{"type":"agent","seq":2,"agent":{"agent_id":"a","reason":"manual","note":"a\"b","version":3}}"#;
        assert_eq!(scan_event(escaped), None);
    }
}
