//! Tests of the socket loop ([`drive`]) over real loopback TCP with a real hub: a silent
//! peer is pinged after the interval and dropped after the pong timeout, the token's
//! expiry closes with 1008 (even while a pong is awaited), shutdown and a close request
//! come before anything queued, queued frames go out in order in batches, and a binary
//! frame is answered with `bad_message` while the socket stays open.

use super::*;
use crate::config::Settings;
use crate::outbox::{outbox, Outbox};
use crate::protocol::Text;
use crate::ws::admin::AdminSession;
use crate::ws::frame::{OP_BINARY, OP_CLOSE, OP_TEXT};
use crate::ws::socket::tests::{client_frame, received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A hub (in-memory store) and one admin socket's parts, the loop not yet running.
struct Rig {
    stop: CancellationToken,
    client: TcpStream,
    outbox: Outbox,
    conn: Conn,
}

async fn rig(settings: Settings) -> Rig {
    let (store, recovered) = crate::hub::persist::open(&settings).await.expect("store");
    let stop = CancellationToken::new();
    let node = crate::cluster::NodeId::parse("conn-tests").expect("node id");
    let hub = Hub::new(settings, node, None, stop.clone(), store, recovered);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let socket = WsSocket::new(server, &[], hub.settings());
    let (outbox, rx) = outbox(1 << 20);
    let session = Session::Admin(Box::new(AdminSession::new(hub.clone(), 1, outbox.clone())));
    Rig {
        stop,
        client,
        outbox,
        conn: Conn {
            socket,
            rx,
            session,
            hub,
            expires: None,
        },
    }
}

impl Rig {
    /// Runs the loop to its end; returns how it ended and what the peer received.
    async fn run(mut self, expires: Option<Instant>) -> (Exit, Vec<u8>) {
        self.conn.expires = expires;
        let exit = drive(&mut self.conn).await;
        drop(self.conn);
        (exit, received(&mut self.client).await)
    }
}

fn settings(ping_interval: u64, pong_timeout: u64) -> Settings {
    Settings {
        ping_interval: Duration::from_secs(ping_interval),
        pong_timeout: Duration::from_secs(pong_timeout),
        ..Settings::default()
    }
}

/// A server frame (unmasked, payload under 126 bytes).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    [&[0x80 | opcode, payload.len() as u8][..], payload].concat()
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    server_frame(
        OP_CLOSE,
        &[&code.to_be_bytes()[..], reason.as_bytes()].concat(),
    )
}

const PING: [u8; 2] = [0x89, 0];

/// Splits server frames (unmasked, final) into (opcode, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, head) = match bytes[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => panic!("no frame here is that large"),
            n => (usize::from(n), 2),
        };
        out.push((bytes[0] & 0x0F, bytes[head..head + len].to_vec()));
        bytes = &bytes[head + len..];
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_pinged_after_the_interval_and_dropped_after_the_pong_timeout() {
    let r = rig(settings(30, 10)).await;
    let started = Instant::now();
    let (exit, got) = r.run(None).await;
    assert_eq!(exit, Exit::Gone);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(40),
        "30 s, then 10 s"
    );
    assert_eq!(got, PING, "one ping, no close frame to a dead peer");
}

#[tokio::test(start_paused = true)]
async fn the_token_expiry_closes_with_1008_before_the_first_ping() {
    let r = rig(settings(30, 10)).await;
    let started = Instant::now();
    let (exit, got) = r.run(Some(started + Duration::from_secs(5))).await;
    assert_eq!(exit, Exit::Close(CLOSE_POLICY, "token expired"));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(got, close_frame(1008, "token expired"));
}

#[tokio::test(start_paused = true)]
async fn the_token_expiry_wins_over_an_awaited_pong() {
    // Ping at 2 s; the pong would be due at 12 s, the token runs out at 5 s.
    let r = rig(settings(2, 10)).await;
    let started = Instant::now();
    let (exit, got) = r.run(Some(started + Duration::from_secs(5))).await;
    assert_eq!(exit, Exit::Close(CLOSE_POLICY, "token expired"));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        got,
        [&PING[..], &close_frame(1008, "token expired")].concat()
    );
}

#[tokio::test]
async fn shutdown_closes_with_1001_before_what_is_queued() {
    let r = rig(settings(30, 10)).await;
    r.outbox.push(Text::from("queued")).expect("room");
    r.stop.cancel();
    // Shutdown reaches sockets through the hub's list of them (a task of the hub).
    while !r.conn.hub.sockets().is_closing() {
        tokio::task::yield_now().await;
    }
    let (exit, got) = r.run(None).await;
    assert_eq!(exit, Exit::Close(CLOSE_GOING_AWAY, "hub shutting down"));
    assert_eq!(got, close_frame(1001, "hub shutting down"));
}

#[tokio::test]
async fn shutdown_reaches_a_running_idle_socket_and_it_leaves_the_list() {
    let r = rig(settings(30, 10)).await;
    let hub = r.conn.hub.clone();
    let stop = r.stop.clone();
    let running = tokio::spawn(r.run(None));
    while hub.sockets().len() == 0 {
        tokio::task::yield_now().await;
    }
    stop.cancel();
    let (exit, got) = running.await.expect("the loop");
    assert_eq!(exit, Exit::Close(CLOSE_GOING_AWAY, "hub shutting down"));
    assert_eq!(got, close_frame(1001, "hub shutting down"));
    assert_eq!(hub.sockets().len(), 0, "the socket left the list");
}

#[tokio::test]
async fn a_close_request_ends_the_loop_with_its_code_before_what_is_queued() {
    let r = rig(settings(30, 10)).await;
    r.outbox.push(Text::from("queued")).expect("room");
    r.outbox.close(CLOSE_SLOW_CONSUMER);
    let (exit, got) = r.run(None).await;
    assert_eq!(exit, Exit::Close(CLOSE_SLOW_CONSUMER, "slow consumer"));
    assert_eq!(got, close_frame(CLOSE_SLOW_CONSUMER, "slow consumer"));
}

#[tokio::test]
async fn queued_frames_go_out_in_order_until_the_peer_closes() {
    const N: usize = 3 * MAX_BATCH + 5;
    let mut r = rig(settings(30, 10)).await;
    for i in 0..N {
        r.outbox.push(Text::from(i.to_string())).expect("room");
    }
    let expected: Vec<u8> = (0..N)
        .flat_map(|i| server_frame(OP_TEXT, i.to_string().as_bytes()))
        .collect();
    let mut client = r.client;
    let want = expected.len();
    let reader = async move {
        let mut got = vec![0; want];
        client.read_exact(&mut got).await.expect("every frame");
        // Then our close: the loop echoes it and ends.
        client
            .write_all(&client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()))
            .await
            .expect("write");
        let mut echo = Vec::new();
        client
            .read_to_end(&mut echo)
            .await
            .expect("the echo, then FIN");
        (got, echo)
    };
    let looping = async {
        let exit = drive(&mut r.conn).await;
        drop(r.conn);
        exit
    };
    let (exit, (got, echo)) = tokio::join!(looping, reader);
    assert_eq!(exit, Exit::Gone, "the peer closed");
    assert!(got == expected, "every frame, in order");
    assert_eq!(echo, close_frame(1000, ""));
}

#[tokio::test]
async fn a_binary_frame_gets_bad_message_and_the_socket_keeps_serving() {
    let mut r = rig(settings(30, 10)).await;
    let mut bytes = client_frame(true, OP_BINARY, b"{}");
    bytes.extend(client_frame(true, OP_TEXT, br#"{"type":"ping","ref":1}"#));
    bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
    r.client.write_all(&bytes).await.expect("write");
    let (exit, got) = r.run(None).await;
    assert_eq!(exit, Exit::Gone);
    let got = frames(&got);
    assert_eq!(got.len(), 3, "{got:?}");
    let json = |p: &[u8]| serde_json::from_slice::<serde_json::Value>(p).expect("JSON");
    assert_eq!(got[0].0, OP_TEXT);
    let bad = json(&got[0].1);
    assert_eq!(bad["type"], "error", "{bad}");
    assert_eq!(bad["code"], "bad_message", "{bad}");
    assert_eq!(got[1].0, OP_TEXT);
    let pong = json(&got[1].1);
    assert_eq!(
        (&pong["type"], &pong["ref"]),
        (&"pong".into(), &1.into()),
        "{pong}"
    );
    assert_eq!(
        got[2],
        (OP_CLOSE, 1000u16.to_be_bytes().to_vec()),
        "the echo"
    );
}
