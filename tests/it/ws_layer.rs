//! The hub's own RFC 6455 layer over raw TCP, with what tungstenite clients cannot send:
//! fragmented messages with control frames between fragments, pings with payloads,
//! unmasked frames, invalid UTF-8, bare headers declaring 1 GiB, close handshakes, and
//! hand-made upgrade requests that must be refused.

use crate::common::raw::*;
use crate::common::*;
use presence_hub::Settings;
use serde_json::json;

fn text(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled_around_control_frames() {
    let hub = TestHub::start().await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    let msg = text(json!({"type": "ping", "ref": "frag-é"}));
    let (a, rest) = msg.split_at(5);
    // Cut inside the two bytes of the é as well.
    let cut = rest.len() - 4;
    let (b, c) = rest.split_at(cut);
    ws.send_frame(false, OP_TEXT, a).await;
    ws.send_frame(true, OP_PING, b"between").await;
    ws.send_frame(false, OP_CONT, b).await;
    ws.send_frame(true, OP_PONG, b"").await;
    ws.send_frame(true, OP_CONT, c).await;
    // The pong for the ping comes first (it was owed before the message completed).
    let pong = ws.next_frame().await.expect("pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"between"[..])
    );
    let reply = ws.next_frame().await.expect("reply").json();
    assert_eq!(reply["type"], "pong", "{reply}");
    assert_eq!(reply["ref"], "frag-é");
    // Binary fragments: bad_message, the socket stays open.
    ws.send_frame(false, OP_BINARY, &[1, 2]).await;
    ws.send_frame(true, OP_CONT, &[3]).await;
    let bad = ws.next_json().await;
    assert_eq!(
        (bad["type"].as_str(), bad["code"].as_str()),
        (Some("error"), Some("bad_message"))
    );
    ws.send_frame(true, OP_TEXT, &text(json!({"type": "ping", "ref": 2})))
        .await;
    assert_eq!(ws.next_json().await["ref"], 2);
    hub.stop().await;
}

#[tokio::test]
async fn a_ping_gets_a_pong_with_its_payload_at_once() {
    let hub = TestHub::start().await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/admin?admin_id=boss").await;
    for payload in [&b""[..], b"x", &[7u8; 125]] {
        ws.send_frame(true, OP_PING, payload).await;
        let f = ws.next_frame().await.expect("pong");
        assert_eq!(f.opcode, OP_PONG);
        assert!(f.fin);
        assert_eq!(f.payload, payload);
    }
    hub.stop().await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let hub = TestHub::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", {
            let mut f = client_header(true, OP_TEXT, 2, None);
            f.extend_from_slice(b"{}");
            f
        }),
        ("rsv1 without an extension", {
            let mut f = client_frame(true, OP_TEXT, b"{}");
            f[0] |= 0x40;
            f
        }),
        ("reserved opcode", client_frame(true, 0x3, b"")),
        ("continuation of nothing", client_frame(true, OP_CONT, b"x")),
        ("fragmented ping", client_frame(false, OP_PING, b"")),
        (
            "ping over 125 bytes",
            client_frame(true, OP_PING, &[0; 126]),
        ),
        (
            "close code 1005",
            client_frame(true, OP_CLOSE, &1005u16.to_be_bytes()),
        ),
        ("text while a message is open", {
            let mut f = client_frame(false, OP_TEXT, b"{");
            f.extend(client_frame(true, OP_TEXT, b"{}"));
            f
        }),
    ];
    for (i, (name, bytes)) in cases.iter().enumerate() {
        let (mut ws, _) = RawWs::connect(&hub, &format!("/ws/agent?agent_id=p{i}")).await;
        ws.send(bytes).await;
        assert_eq!(ws.expect_close().await, Some(1002), "{name}");
    }
    // The agents' sockets are gone.
    eventually_metric(&hub, r#"presence_hub_connections{role="agent"}"#, 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let hub = TestHub::start().await;
    let cases: Vec<Vec<u8>> = vec![
        client_frame(true, OP_TEXT, &[b'{', 0xC3, 0x28, b'}']),
        {
            // Cut in the middle of a character at the end of the message.
            let mut f = client_frame(false, OP_TEXT, b"{\"a\":\"");
            f.extend(client_frame(true, OP_CONT, &[0xE2, 0x82]));
            f
        },
        {
            let mut payload = 1000u16.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0xFF, 0xFE]);
            client_frame(true, OP_CLOSE, &payload)
        },
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let (mut ws, _) = RawWs::connect(&hub, &format!("/ws/telephony?adapter=u{i}")).await;
        ws.send(bytes).await;
        assert_eq!(ws.expect_close().await, Some(1007), "case {i}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_header_declaring_1_gib_closes_with_1009_at_once() {
    let hub = TestHub::start().await;
    for (i, path) in ["/ws/agent?agent_id=big", "/ws/admin?admin_id=big"]
        .iter()
        .enumerate()
    {
        let (mut ws, _) = RawWs::connect(&hub, path).await;
        // The header alone, and a few bytes of payload: the hub does not wait for more.
        ws.send(&client_header(true, OP_TEXT, 1 << 30, Some([1, 2, 3, 4])))
            .await;
        ws.send(b"{\"type\"").await;
        assert_eq!(ws.expect_close().await, Some(1009), "{path}");
        eventually_metric(
            &hub,
            r#"presence_hub_rejected_total{cause="message_too_big"}"#,
            i as u64 + 1,
        )
        .await;
    }
    // (Memory: tests/it/frame_limits.rs checks peak RSS and virtual memory under such headers.)
    let (mut tab, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    tab.send_frame(true, OP_TEXT, &text(json!({"type": "ping", "ref": 1})))
        .await;
    assert_eq!(tab.next_json().await["type"], "pong");
    hub.stop().await;
}

#[tokio::test]
async fn a_close_frame_is_echoed_and_the_connection_ends() {
    let hub = TestHub::start().await;
    let (mut admin, _) = hub.admin("watch").await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    assert_eq!(admin.update().await["agent"]["connections"], 1);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    ws.send_frame(true, OP_CLOSE, &payload).await;
    assert_eq!(ws.expect_close().await, Some(1000), "the code is echoed");
    let u = admin.update().await;
    assert_eq!(u["agent"]["connections"], 0, "{u}");
    // An empty close frame gets an empty close frame.
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a2").await;
    ws.send_frame(true, OP_CLOSE, b"").await;
    assert_eq!(ws.expect_close().await, None);
    hub.stop().await;
}

#[tokio::test]
async fn hub_closes_carry_their_code_and_reason() {
    let hub = TestHub::start().await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    ws.send_frame(true, OP_TEXT, &text(json!({"type": "logout"})))
        .await;
    let close = loop {
        let f = ws.next_frame().await.expect("open");
        if f.opcode == OP_CLOSE {
            break f;
        }
    };
    assert_eq!(close.close_code(), Some(1000));
    assert!(close.fin);
    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());
    assert_eq!(
        ws.next_frame().await,
        None,
        "then the hub ends the connection"
    );
    hub.stop().await;
}

#[tokio::test]
async fn bad_upgrade_requests_are_refused_before_anything_is_set_up() {
    let secret = Settings {
        jwt_secret: Some("a-secret-for-the-handshake-test".into()),
        ..settings()
    };
    let hub = TestHub::with(secret).await;
    let without = |name: &str| -> Vec<(&str, &str)> {
        UPGRADE_HEADERS
            .iter()
            .copied()
            .filter(|(k, _)| *k != name)
            .collect()
    };
    // As with axum's extractor, the request is checked before the token: 400, not 401.
    let a = RawWs::handshake(&hub, "/ws/agent", &without("Sec-WebSocket-Key")).await;
    assert_eq!(a.status, 400, "{}", a.head);
    let mut bad_key = without("Sec-WebSocket-Key");
    bad_key.push(("Sec-WebSocket-Key", "not-a-nonce"));
    assert_eq!(
        RawWs::handshake(&hub, "/ws/agent", &bad_key).await.status,
        400
    );
    let a = RawWs::handshake(&hub, "/ws/agent", &without("Sec-WebSocket-Version")).await;
    assert_eq!(a.status, 426, "{}", a.head);
    let mut v8 = without("Sec-WebSocket-Version");
    v8.push(("Sec-WebSocket-Version", "8"));
    let a = RawWs::handshake(&hub, "/ws/admin", &v8).await;
    assert_eq!(a.status, 426, "{}", a.head);
    assert_eq!(a.header("sec-websocket-version").as_deref(), Some("13"));
    let a = RawWs::handshake(&hub, "/ws/telephony", &without("Upgrade")).await;
    assert_eq!(a.status, 400, "{}", a.head);
    // RFC 6455 4.2.1: no `Host`, or an empty one: 400.
    let a = RawWs::handshake_exactly(&hub, "/ws/agent", &UPGRADE_HEADERS).await;
    assert_eq!(a.status, 400, "{}", a.head);
    let mut empty_host = vec![("Host", "")];
    empty_host.extend_from_slice(&UPGRADE_HEADERS);
    let a = RawWs::handshake_exactly(&hub, "/ws/admin", &empty_host).await;
    assert_eq!(a.status, 400, "{}", a.head);
    // A plain GET (a browser opening the URL): 400 with a clear reason.
    let (status, _) = hub.get("/ws/agent").await;
    assert_eq!(status, 400);
    let body = reqwest::get(hub.http_url("/ws/agent"))
        .await
        .expect("get")
        .text()
        .await
        .expect("body");
    assert!(body.contains("upgrade"), "{body}");
    // A valid upgrade without a token: 401, still before the upgrade.
    let a = RawWs::handshake(&hub, "/ws/agent", &UPGRADE_HEADERS).await;
    assert_eq!(a.status, 401, "{}", a.head);
    let m = metrics(&hub).await;
    assert_eq!(
        metric(&m, r#"presence_hub_connections_opened_total{role="agent"}"#),
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn bytes_sent_right_behind_the_handshake_are_not_lost() {
    // A client may pipeline its first frame right after the request head: hyper may have
    // read it already, and it must reach the WebSocket layer.
    let hub = TestHub::start().await;
    let mut tcp = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    let mut req = format!(
        "GET /ws/agent?agent_id=a1 HTTP/1.1\r\nHost: {}\r\n",
        hub.addr
    );
    for (k, v) in UPGRADE_HEADERS {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend(client_frame(
        true,
        OP_TEXT,
        &text(json!({"type": "ping", "ref": 9})),
    ));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(&bytes).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&got).contains("\"ref\":9") {
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("the reply in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_ping_right_before_a_close_gets_its_pong_before_the_close_echo() {
    // RFC 6455 5.5.2: the ping came before the close frame, so it is answered; both
    // frames arrive in one write (one read on the hub's side).
    let hub = TestHub::start().await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    let mut bytes = client_frame(true, OP_PING, b"last words");
    bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
    ws.send(&bytes).await;
    let pong = ws.next_frame().await.expect("the pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (OP_PONG, &b"last words"[..]),
        "{pong:?}"
    );
    assert_eq!(ws.expect_close().await, Some(1000));
    hub.stop().await;
}

#[tokio::test]
async fn bytes_behind_a_client_close_are_drained_so_the_echo_is_not_reset() {
    // The client's close frame, then more than one read of bytes in the same write: the
    // hub echoes the close, then reads and drops the rest before it closes the TCP socket
    // (closing with unread bytes would make the kernel send a reset instead of a FIN).
    use tokio::io::AsyncReadExt;
    let hub = TestHub::start().await;
    let (mut ws, _) = RawWs::connect(&hub, "/ws/agent?agent_id=a1").await;
    let mut bytes = client_frame(true, OP_CLOSE, &1000u16.to_be_bytes());
    for _ in 0..16 {
        // 16 x 4 KiB of text frames: several of the hub's 4 KiB reads.
        bytes.extend(client_frame(true, OP_TEXT, &[b' '; 4096]));
    }
    ws.send(&bytes).await;
    let echo = ws.next_frame().await.expect("the close echo");
    assert_eq!(echo.close_code(), Some(1000));
    // Then a clean end of stream (FIN), not a reset.
    let mut rest = [0u8; 64];
    let end = tokio::time::timeout(PATIENCE, ws.tcp.read(&mut rest))
        .await
        .expect("the end in time");
    assert!(matches!(end, Ok(0)), "expected the hub's FIN, got {end:?}");
    hub.stop().await;
}

#[tokio::test]
async fn the_conformance_echo_sends_back_text_and_binary_and_echoes_the_close() {
    // examples/ws_echo.rs (run by scripts/autobahn.sh) on the hub's own layer.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(presence_hub::ws_echo::serve(listener));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .expect("connect");
    let big: Vec<u8> = (0..(2 << 20)).map(|i| (i % 251) as u8).collect();
    let sent = [
        Message::text("héllo"),
        Message::binary(big),
        Message::Ping(b"p".to_vec().into()),
        Message::text(""),
    ];
    for m in &sent {
        ws.send(m.clone()).await.expect("send");
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        got.push(m);
    }
    assert_eq!(got[0], sent[0]);
    assert_eq!(got[1], sent[1], "2 MiB of binary, byte for byte");
    assert_eq!(got[2], Message::Pong(b"p".to_vec().into()));
    assert_eq!(got[3], sent[3]);
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    match tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("echo")
    {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
    // A request that is not an upgrade is refused as the hub refuses it.
    let status = reqwest::get(format!("http://{addr}/"))
        .await
        .expect("get")
        .status();
    assert_eq!(status.as_u16(), 400);
    server.abort();
}
