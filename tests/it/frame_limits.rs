//! Security table: "message > 64 KiB: close 1009, memory not grown by the declared size".
//!
//! The hub runs in a process of its own (the test binary running only this test, started
//! by its `_alone` twin: nothing else allocates meanwhile, nor did before, and the peaks
//! below are the process's since it started), whose memory is read from `/proc/self/status`:
//! `VmHWM` (peak resident) and `VmPeak` (peak virtual, which a reservation of the declared
//! size would raise even if its pages were never touched).

use crate::common::*;
use presence_hub::Settings;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// Writes raw bytes on a client's TCP stream, under the WebSocket layer.
async fn raw(c: &mut Client, bytes: &[u8]) {
    let MaybeTlsStream::Plain(tcp) = c.ws.get_mut() else {
        panic!("plain TCP");
    };
    tcp.write_all(bytes).await.expect("raw write");
}

/// A masked client frame header: `opcode` (with FIN when `fin`), declared `len`, with a
/// mask of zeros: the payload is sent as is.
fn header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    raw::client_header(fin, opcode, len, Some([0; 4]))
}

async fn connect(hub: &TestHub, role: usize, n: usize) -> Client {
    let path = match role {
        0 => format!("/ws/agent?agent_id=m{n}"),
        1 => format!("/ws/admin?admin_id=m{n}"),
        _ => format!("/ws/telephony?adapter=m{n}"),
    };
    let mut c = Client::connect(&hub.ws_url(&path)).await;
    assert_eq!(c.recv().await["type"], "hello");
    c
}

/// Runs the test below alone in a child process of this test binary: it reads the
/// process's own peak memory, which other tests running beside it would change.
#[test]
fn oversized_messages_close_1009_without_growing_memory_by_the_declared_size_alone() {
    run_alone(
        "frame_limits::oversized_messages_close_1009_without_growing_memory_by_the_declared_size",
        &[],
    );
}

#[tokio::test]
#[ignore = "reads the process's own peak memory: run alone by its `_alone` twin"]
async fn oversized_messages_close_1009_without_growing_memory_by_the_declared_size() {
    assert_alone();
    let settings = settings();
    assert_eq!(Settings::default().max_message_bytes, 64 * 1024);
    assert_eq!(Settings::default().max_frame_bytes, 64 * 1024);
    let hub = TestHub::with(settings).await;
    const GIB: u64 = 1 << 30;

    // Warm up every path once (allocator arenas, buffers of the largest allowed message).
    for role in 0..3 {
        let mut c = connect(&hub, role, 0).await;
        let pad = "x".repeat(64 * 1024 - 40);
        let msg = format!(r#"{{"type":"ping","ref":1,"pad":"{pad}"}}"#);
        assert!(msg.len() <= 64 * 1024);
        c.send_raw(Message::text(msg)).await;
        assert_eq!(c.recv().await["type"], "pong");
        c.close().await;
    }
    let _ = hub.get("/metrics").await;
    let (hwm0, peak0, rss0) = (
        status_kib("VmHWM"),
        status_kib("VmPeak"),
        status_kib("VmRSS"),
    );

    let mut closes = 0;
    for round in 0..10 {
        for role in 0..3 {
            // 1. A single frame declaring 1 GiB: refused on its header, no payload sent.
            let mut c = connect(&hub, role, round * 10 + 1).await;
            raw(&mut c, &header(0x1, true, GIB)).await;
            assert_eq!(c.closed().await, Closed::Code(1009), "role {role}");
            closes += 1;

            // 2. A fragmented message: frames of 16 KiB, each under the frame limit, that
            //    add up past 64 KiB: refused once the sum passes the limit.
            let mut c = connect(&hub, role, round * 10 + 2).await;
            let chunk = vec![b'x'; 16 * 1024];
            let mut frames = header(0x1, false, chunk.len() as u64);
            frames.extend_from_slice(&chunk);
            for _ in 0..4 {
                frames.extend(header(0x0, false, chunk.len() as u64));
                frames.extend_from_slice(&chunk);
            }
            raw(&mut c, &frames).await;
            assert_eq!(c.closed().await, Closed::Code(1009), "role {role}");
            closes += 1;

            // 3. A binary frame declaring 2^63 - 1 bytes (the largest legal length).
            let mut c = connect(&hub, role, round * 10 + 3).await;
            raw(&mut c, &header(0x2, true, i64::MAX as u64)).await;
            assert_eq!(c.closed().await, Closed::Code(1009), "role {role}");
            closes += 1;
        }
    }

    let (hwm1, peak1, rss1) = (
        status_kib("VmHWM"),
        status_kib("VmPeak"),
        status_kib("VmRSS"),
    );
    eprintln!(
        "VmHWM {hwm0} -> {hwm1} KiB, VmPeak {peak0} -> {peak1} KiB, VmRSS {rss0} -> {rss1} KiB"
    );
    // 90 sockets told us of 1 GiB and more each: the process never even reserved it.
    assert!(
        peak1 - peak0 < 256 * 1024,
        "virtual peak grew by {} KiB",
        peak1 - peak0
    );
    assert!(
        hwm1 - hwm0 < 8 * 1024,
        "resident peak grew by {} KiB",
        hwm1 - hwm0
    );
    assert!(
        rss1.saturating_sub(rss0) < 4 * 1024,
        "resident grew by {} KiB",
        rss1 - rss0
    );

    let (_, m) = hub.get("/healthz").await;
    assert_eq!(m["status"], "ok");
    let text = reqwest::get(hub.http_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let too_big = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"presence_hub_rejected_total{cause="message_too_big"} "#))
        .expect("message_too_big counter");
    assert_eq!(too_big.parse::<u64>().expect("number"), closes);
    // Every refused socket is gone.
    let mut tab = connect(&hub, 0, 999).await;
    let pong = tab.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    hub.stop().await;
}
