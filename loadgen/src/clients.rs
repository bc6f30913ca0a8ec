//! Small client helpers: log an agent in, connect an admin or adapter, wait for a reply.

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{clip, parse_frame, run_bounded, Target, Ws};

/// Read buffer of agent and adapter sockets (small: thousands of them are idle).
pub(crate) const SMALL_READ_BUFFER: usize = 4096;
/// Read buffer of admin sockets (they read a stream of events).
pub(crate) const ADMIN_READ_BUFFER: usize = 64 * 1024;
/// Patience for set-up steps (not a timing assertion: a broken hub fails instead of hanging).
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The next text frame; pings are answered by tungstenite, a close is an error.
pub(crate) async fn recv_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            None => bail!("socket closed by the hub"),
            Some(Err(e)) => return Err(e).context("socket error"),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                bail!(
                    "hub closed the socket: {}",
                    frame.map_or("no code".into(), |f| format!("{} {}", f.code, f.reason))
                )
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Like [`recv_text`], failing after `SETUP_TIMEOUT`.
pub(crate) async fn recv_text_timeout(ws: &mut Ws) -> Result<String> {
    tokio::time::timeout(SETUP_TIMEOUT, recv_text(ws))
        .await
        .map_err(|_| anyhow!("no frame from the hub within {SETUP_TIMEOUT:?}"))?
}

/// Sends a text frame.
pub(crate) async fn send_text(ws: &mut Ws, text: String) -> Result<()> {
    ws.send(Message::text(text)).await.context("send")
}

/// Reads frames until the reply with `reply_ref` (other frames are skipped); returns it.
pub(crate) async fn wait_reply(ws: &mut Ws, reply_ref: u64) -> Result<String> {
    loop {
        let text = recv_text_timeout(ws).await?;
        let frame = parse_frame(&text)?;
        if frame.reply_ref == Some(reply_ref) && (frame.kind == "ok" || frame.kind == "error") {
            return Ok(text);
        }
    }
}

/// An agent tab: connects `/ws/agent?agent_id=<id>` and reads its `hello`. Returns the
/// socket and the agent's version.
pub(crate) async fn agent_login(target: &Target, id: &str) -> Result<(Ws, u64)> {
    let mut ws = target
        .ws(&format!("/ws/agent?agent_id={id}"), SMALL_READ_BUFFER)
        .await?;
    let hello = recv_text_timeout(&mut ws).await?;
    let frame = parse_frame(&hello)?;
    if frame.kind != "hello" {
        bail!("first frame of agent {id} is not hello: {}", clip(&hello));
    }
    let version = frame
        .agent
        .as_ref()
        .map(|a| a.version)
        .ok_or_else(|| anyhow!("hello without agent: {}", clip(&hello)))?;
    Ok((ws, version))
}

/// `set_status` with a `ref`, waiting for its `ok`; returns the new version.
pub(crate) async fn set_status(ws: &mut Ws, status: &str, reply_ref: u64) -> Result<u64> {
    send_text(
        ws,
        format!(r#"{{"type":"set_status","ref":{reply_ref},"status":"{status}"}}"#),
    )
    .await?;
    let reply = wait_reply(ws, reply_ref).await?;
    let frame = parse_frame(&reply)?;
    if frame.kind != "ok" {
        bail!("set_status {status} refused: {}", clip(&reply));
    }
    frame
        .version
        .ok_or_else(|| anyhow!("set_status ok without version: {}", clip(&reply)))
}

/// An admin or adapter socket on `path_and_query`, its `hello` read.
pub(crate) async fn connect_with_hello(
    target: &Target,
    path_and_query: &str,
    read_buffer: usize,
) -> Result<Ws> {
    let mut ws = target.ws(path_and_query, read_buffer).await?;
    let hello = recv_text_timeout(&mut ws).await?;
    if parse_frame(&hello)?.kind != "hello" {
        bail!(
            "first frame on {path_and_query} is not hello: {}",
            clip(&hello)
        );
    }
    Ok(ws)
}

/// Keeps reading a socket (answering pings) until it closes; returns the close code.
pub(crate) async fn drain(mut ws: Ws) -> Option<u16> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Logs in `n` agents `{prefix}0..n` (at most `concurrency` at once) and sets each one
/// available: their sockets and versions in order, or the first failure, naming the agent.
pub(crate) async fn login_available(
    target: &Arc<Target>,
    prefix: &'static str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<(Ws, u64)>> {
    let logins = run_bounded(n, concurrency, {
        let target = target.clone();
        move |i| {
            let target = target.clone();
            async move {
                let (mut ws, _) = agent_login(&target, &format!("{prefix}{i}")).await?;
                let version = set_status(&mut ws, "available", 1).await?;
                anyhow::Ok((ws, version))
            }
        }
    })
    .await;
    logins
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("agent {prefix}{i}")))
        .collect()
}
