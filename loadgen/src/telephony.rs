//! `telephony`: adapter sockets send offer -> answered -> ended cycles for available agents,
//! pipelined (many events in flight, replies matched by `ref`), at full speed or at a fixed
//! rate. Reports events/s and ack latency.

use anyhow::{bail, Result};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{connect_with_hello, drain, login_available};
use crate::common::{
    clip, histogram, latency_json, latency_row, now_ns, parse_frame, record, round3, CpuMeter,
    Table, Target, Ws,
};

const PREFIX: &str = "tp-";
const KINDS: [&str; 3] = ["call_offered", "call_answered", "call_ended"];

#[derive(Args, Debug, Clone)]
pub(crate) struct TelephonyArgs {
    /// Adapter sockets; each drives its share of the agents.
    #[arg(long, default_value_t = 1)]
    pub adapters: usize,
    /// Agents (logged in and available) that receive the calls.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Events to send in all (each agent cycles offer, answered, ended).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Events per second over all adapters; 0 = as fast as possible (pipelined).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Rate 0: most events in flight per adapter.
    #[arg(long, default_value_t = 512)]
    pub inflight: usize,
    /// Connections opened at once during set-up.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds the whole drive may take before giving up.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

struct AdapterResult {
    sent: u64,
    acks: u64,
    errors: u64,
    not_accepted: u64,
    first_error: Option<String>,
    behind: u64,
    first_send_ns: u64,
    last_ack_ns: u64,
    latency: Histogram<u64>,
}

struct AgentCycle {
    global: usize,
    phase: usize,
    call: u64,
    sent_ns: u64,
}

pub(crate) async fn run(
    target: Arc<Target>,
    hub_pid: Option<u32>,
    args: TelephonyArgs,
) -> Result<bool> {
    let mut warnings = Vec::new();
    if args.adapters == 0 || args.agents < args.adapters {
        bail!("need at least one adapter and one agent per adapter");
    }
    let sockets = args.agents + args.adapters;
    if crate::common::check_fd_budget(sockets, &mut warnings) < sockets {
        bail!("{}", warnings.join("; "));
    }
    println!("telephony: logging in {} available agents", args.agents);
    let logged_in = login_available(&target, PREFIX, args.agents, args.concurrency).await?;
    let drains: Vec<_> = logged_in
        .into_iter()
        .map(|(ws, _)| tokio::spawn(drain(ws)))
        .collect();
    let mut adapters = Vec::new();
    for k in 0..args.adapters {
        adapters.push(
            connect_with_hello(
                &target,
                &format!("/ws/telephony?adapter=loadgen-{k}"),
                64 * 1024,
            )
            .await?,
        );
    }
    println!(
        "telephony: {} events over {} adapter(s) at {}",
        args.events,
        args.adapters,
        if args.rate == 0 {
            "full speed".into()
        } else {
            format!("{}/s", args.rate)
        }
    );
    let cpu = CpuMeter::start(hub_pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, ws) in adapters.into_iter().enumerate() {
        let quota = args.events / args.adapters as u64
            + u64::from((k as u64) < args.events % args.adapters as u64);
        let agents: Vec<usize> = (0..args.agents)
            .filter(|i| i % args.adapters == k)
            .collect();
        let rate = args.rate as f64 / args.adapters as f64;
        tasks.push(tokio::spawn(adapter(
            ws,
            agents,
            quota,
            rate,
            args.inflight,
            Duration::from_secs_f64(args.timeout),
        )));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await?);
    }
    let cpu_use = cpu.stop();
    let wall = start.elapsed().as_secs_f64();
    for d in drains {
        d.abort();
    }

    let mut latency = histogram();
    let (mut sent, mut acks, mut errors, mut not_accepted, mut behind) = (0, 0, 0, 0, 0);
    let mut first_send = u64::MAX;
    let mut last_ack = 0;
    let mut first_error = None;
    for r in &results {
        latency.add(&r.latency).ok();
        sent += r.sent;
        acks += r.acks;
        errors += r.errors;
        not_accepted += r.not_accepted;
        behind += r.behind;
        first_send = first_send.min(r.first_send_ns);
        last_ack = last_ack.max(r.last_ack_ns);
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
    }
    let secs = (last_ack.saturating_sub(first_send) as f64 / 1e9).max(1e-9);
    let events_per_sec = acks as f64 / secs;
    cpu_use.check(&mut warnings);
    if let Some(e) = &first_error {
        warnings.push(format!("first error: {e}"));
    }
    let kept_up = args.rate == 0 || events_per_sec >= args.rate as f64 * 0.95;
    if !kept_up {
        warnings.push(format!(
            "asked for {} events/s, the hub acknowledged {events_per_sec:.0}/s: it did not keep \
             up, so the ack latency above is mostly queueing",
            args.rate
        ));
    } else if behind > 0 {
        warnings.push(format!(
            "{behind} times every agent was waiting for an ack when the next event was due \
             (add --agents)"
        ));
    }
    let ok = acks == args.events && errors == 0 && not_accepted == 0;
    let mut t = Table::new(format!(
        "telephony: {} adapter(s), {} agents, {} events, rate {}",
        args.adapters,
        args.agents,
        args.events,
        if args.rate == 0 {
            "max".into()
        } else {
            format!("{}/s", args.rate)
        }
    ));
    t.row(
        "events acknowledged",
        format!("{acks} of {sent} sent in {wall:.2}s"),
    );
    t.row("events/s", format!("{events_per_sec:.0}"));
    latency_row(&mut t, "ack latency", &latency);
    t.row(
        "errors",
        format!("{errors} errors, {not_accepted} offers not accepted"),
    );
    cpu_use.rows(&mut t);
    let result = json!({
        "scenario": "telephony",
        "params": {
            "adapters": args.adapters,
            "agents": args.agents,
            "events": args.events,
            "rate": args.rate,
            "inflight": args.inflight,
        },
        "figures": {
            "sent": sent,
            "acks": acks,
            "events_per_sec": round3(events_per_sec),
            "ack_latency": latency_json(&latency),
            "errors": errors,
            "offers_not_accepted": not_accepted,
            "no_free_agent": behind,
            "kept_up": kept_up,
        },
        "cpu": cpu_use.json(),
    });
    crate::common::finish(&t, result, &warnings, ok);
    Ok(ok)
}

/// One adapter socket: cycles its agents through offer/answered/ended, one event in flight
/// per agent, up to `inflight` in all (rate 0) or paced at `rate` events/s.
async fn adapter(
    ws: Ws,
    agents: Vec<usize>,
    quota: u64,
    rate: f64,
    inflight: usize,
    timeout: Duration,
) -> AdapterResult {
    let (mut sink, mut stream) = ws.split();
    let nonce = crate::common::run_nonce();
    let mut cycles: Vec<AgentCycle> = agents
        .iter()
        .map(|&global| AgentCycle {
            global,
            phase: 0,
            call: 0,
            sent_ns: 0,
        })
        .collect();
    let mut ready: VecDeque<usize> = (0..cycles.len()).collect();
    let mut r = AdapterResult {
        sent: 0,
        acks: 0,
        errors: 0,
        not_accepted: 0,
        first_error: None,
        behind: 0,
        first_send_ns: u64::MAX,
        last_ack_ns: 0,
        latency: histogram(),
    };
    let start = Instant::now();
    // At a fixed rate, event k is due at start + k / rate: its latency counts from then, so
    // an event the load generator itself sent late (starved of CPU, or no agent free) is
    // not reported as faster than it was (no coordinated omission).
    let pace = (rate > 0.0).then(|| (now_ns(), rate));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let paced = rate > 0.0;
    let mut in_flight = 0usize;
    while r.acks < quota {
        // How many to send now.
        let allowed = if paced {
            0
        } else {
            inflight.saturating_sub(in_flight) as u64
        };
        if allowed > 0 {
            let n = send_some(
                &mut sink,
                &mut cycles,
                &mut ready,
                allowed,
                quota,
                &mut r,
                (nonce, None),
            )
            .await;
            in_flight += n;
        }
        tokio::select! {
            _ = tick.tick(), if paced => {
                let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(quota);
                let want = due.saturating_sub(r.sent);
                if want > ready.len() as u64 {
                    r.behind += 1;
                }
                let n = send_some(&mut sink, &mut cycles, &mut ready, want, quota, &mut r, (nonce, pace)).await;
                in_flight += n;
            }
            msg = stream.next() => match on_message(msg, &mut r, &mut cycles, &agents, &mut ready) {
                Reply::Ack => in_flight = in_flight.saturating_sub(1),
                Reply::Other => {}
                Reply::End => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                r.first_error.get_or_insert_with(|| format!("gave up after {timeout:?}: {} of {quota} acked", r.acks));
                break;
            }
        }
    }
    r
}

/// What a frame from the hub was.
enum Reply {
    /// The reply to one of our events.
    Ack,
    /// A notification or a frame that is not ours.
    Other,
    /// The socket ended: stop driving.
    End,
}

/// Books one frame read from the adapter socket: an ack (latency, errors, next phase of
/// its agent, which becomes ready again) or the end of the socket.
fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    r: &mut AdapterResult,
    cycles: &mut [AgentCycle],
    agents: &[usize],
    ready: &mut VecDeque<usize>,
) -> Reply {
    match msg {
        Some(Ok(Message::Text(text))) => {
            let now = now_ns();
            let Ok(frame) = parse_frame(text.as_str()) else {
                r.errors += 1;
                return Reply::Other;
            };
            // ref -> local index: refs are the agents' global numbers.
            let Some(local) = frame
                .reply_ref
                .and_then(|g| agents.binary_search(&(g as usize)).ok())
            else {
                return Reply::Other; // a notification
            };
            r.acks += 1;
            r.last_ack_ns = now;
            let c = &mut cycles[local];
            record(&mut r.latency, now.saturating_sub(c.sent_ns));
            if frame.kind != "ok" || frame.stale == Some(true) {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| clip(text.as_str()));
            } else if c.phase == 0 && frame.accepted != Some(true) {
                r.not_accepted += 1;
                r.first_error.get_or_insert_with(|| clip(text.as_str()));
            } else {
                c.phase = (c.phase + 1) % 3;
                if c.phase == 0 {
                    c.call += 1;
                }
            }
            ready.push_back(local);
            Reply::Ack
        }
        Some(Ok(Message::Close(frame))) => {
            r.first_error
                .get_or_insert_with(|| format!("adapter closed by the hub: {frame:?}"));
            Reply::End
        }
        Some(Ok(_)) => Reply::Other,
        Some(Err(e)) => {
            r.first_error
                .get_or_insert_with(|| format!("adapter socket error: {e}"));
            Reply::End
        }
        None => Reply::End,
    }
}

/// Sends up to `n` events for ready agents (never past `quota`); returns how many. With a
/// `pace` (start in ns, events/s), each event's latency counts from when it was due.
async fn send_some(
    sink: &mut futures::stream::SplitSink<Ws, Message>,
    cycles: &mut [AgentCycle],
    ready: &mut VecDeque<usize>,
    n: u64,
    quota: u64,
    r: &mut AdapterResult,
    (nonce, pace): (u64, Option<(u64, f64)>),
) -> usize {
    let mut sent = 0usize;
    while (sent as u64) < n && r.sent < quota {
        let Some(local) = ready.pop_front() else {
            break;
        };
        let c = &mut cycles[local];
        let now = now_ns();
        let due = pace.map_or(now, |(start, rate)| {
            (start + (r.sent as f64 * 1e9 / rate) as u64).min(now)
        });
        c.sent_ns = due;
        r.first_send_ns = r.first_send_ns.min(due);
        let text = format!(
            r#"{{"type":"{}","ref":{g},"event_id":"{nonce}-{g}-{}-{}","call_id":"c{nonce}-{g}-{}","agent_id":"{PREFIX}{g}"}}"#,
            KINDS[c.phase],
            c.call,
            c.phase,
            c.call,
            g = c.global
        );
        if sink.feed(Message::text(text)).await.is_err() {
            r.first_error
                .get_or_insert_with(|| "adapter socket failed while sending".into());
            break;
        }
        r.sent += 1;
        sent += 1;
    }
    if sent > 0 && sink.flush().await.is_err() {
        r.first_error
            .get_or_insert_with(|| "adapter socket failed while flushing".into());
    }
    sent
}
