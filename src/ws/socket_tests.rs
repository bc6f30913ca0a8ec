//! Tests of the socket over real loopback TCP: nothing is held per socket while idle, a
//! partial frame is kept only until it completes, unsent bytes only until the peer reads,
//! pings get a pong each while the peer reads and one for the latest while writes are
//! blocked, a ping before a close is answered before the close echo and nothing follows
//! the echo, bytes read past the handshake come first, protocol errors and EOF are
//! reported, and lingering (after a close of ours, or the peer's) ends at the peer's close
//! frame or FIN, not at its time limit.

use super::*;
use crate::ws::frame::{apply_mask, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A masked client frame (also used by the socket loop's tests).
pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9, 8, 7, 6];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let mut p = payload.to_vec();
    apply_mask(&mut p, mask);
    out.extend(p);
    out
}

async fn pair(settings: &Settings) -> (WsSocket, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (WsSocket::new(server, &[], settings), client)
}

/// One poll of the read side (no waiting).
fn read_now(s: &mut WsSocket) -> Option<Result<Incoming, WsError>> {
    std::future::poll_fn(|cx| s.poll_read(cx)).now_or_never()
}

#[tokio::test]
async fn a_partial_frame_is_kept_until_complete_then_freed() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    assert_eq!(s.buffered_capacity(), 0, "nothing held while idle");
    assert!(s.busy.is_none());
    let frame = client_frame(true, OP_TEXT, &[b'x'; 300]);
    c.write_all(&frame[..100]).await.expect("write");
    s.tcp.readable().await.expect("readable");
    assert!(read_now(&mut s).is_none(), "incomplete");
    let busy = s.busy.as_ref().expect("busy while a frame is partial");
    assert!(busy.inbuf.len() >= 100, "the partial frame is kept");
    c.write_all(&frame[100..]).await.expect("write");
    s.tcp.readable().await.expect("readable");
    match read_now(&mut s) {
        Some(Ok(Incoming::Text(t))) => assert_eq!(t, "x".repeat(300)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.buffered_capacity(), 0, "freed once consumed");
    assert!(s.busy.is_none());
}

#[tokio::test]
async fn frames_after_a_message_wait_in_the_socket_and_are_freed_when_taken() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend(client_frame(false, OP_TEXT, format!("m{i}").as_bytes()));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"!"));
    }
    c.write_all(&bytes).await.expect("write");
    s.tcp.readable().await.expect("readable");
    for i in 0..3 {
        match read_now(&mut s) {
            Some(Ok(Incoming::Text(t))) => assert_eq!(t, format!("m{i}!")),
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(s.buffered_capacity(), 0);
    assert!(read_now(&mut s).is_none());
}

/// Fills the kernel's buffers (the peer does not read) until the socket keeps unsent
/// bytes; returns the bytes written.
fn block(s: &mut WsSocket) -> usize {
    let payload = vec![b'y'; 1000];
    let mut frames = 0usize;
    while !s.has_unsent() {
        s.write_batch(|b| {
            for _ in 0..64 {
                b.text(&payload);
            }
        })
        .expect("write");
        frames += 64;
        assert!(frames < 1_000_000, "never blocked");
    }
    frames * (4 + 1000)
}

#[tokio::test]
async fn pings_each_get_their_pong_in_order_while_the_peer_reads() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    let mut bytes = Vec::new();
    for i in 0..10u8 {
        bytes.extend(client_frame(true, OP_PING, &[i]));
    }
    c.write_all(&bytes).await.expect("write");
    let mut reads = 0;
    // Nine pongs go out as the pings are decoded; the tenth is owed to the loop.
    while !s.pong_pending() || s.busy.as_ref().and_then(|b| b.pong.as_deref()) != Some(&[9][..]) {
        s.tcp.readable().await.expect("readable");
        match read_now(&mut s) {
            Some(Ok(Incoming::Control)) | None => {}
            other => panic!("{other:?}"),
        }
        reads += 1;
        assert!(reads < 100, "never caught up");
    }
    s.send_pong().expect("pong");
    let mut got = [0u8; 30];
    c.read_exact(&mut got).await.expect("pongs");
    let want: Vec<u8> = (0..10u8).flat_map(|i| [0x8A, 1, i]).collect();
    assert_eq!(got.to_vec(), want, "one pong per ping, in order");
    assert_eq!(s.buffered_capacity(), 0);
}

#[tokio::test]
async fn a_ping_flood_while_blocked_owes_one_pong_for_the_latest_ping() {
    let settings = Settings {
        write_buffer_bytes: 16 * 1024,
        ..Settings::default()
    };
    let (mut s, mut c) = pair(&settings).await;
    let written = block(&mut s);
    let unsent = s.buffered_capacity();
    let mut bytes = Vec::new();
    for i in 0..1000u32 {
        bytes.extend(client_frame(true, OP_PING, &i.to_be_bytes()));
    }
    c.write_all(&bytes).await.expect("write");
    let mut reads = 0;
    while s.busy.as_ref().and_then(|b| b.pong.as_deref()) != Some(&999u32.to_be_bytes()[..]) {
        s.tcp.readable().await.expect("readable");
        match read_now(&mut s) {
            Some(Ok(Incoming::Control)) | None => {}
            other => panic!("{other:?}"),
        }
        reads += 1;
        assert!(reads < 1000, "never caught up");
    }
    assert!(
        s.buffered_capacity() <= unsent + 64,
        "the flood queued nothing: {} -> {}",
        unsent,
        s.buffered_capacity()
    );
    // Once the peer reads: the text frames, then one pong, the latest payload.
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; written + 6];
        c.read_exact(&mut got).await.expect("read");
        got
    });
    std::future::poll_fn(|cx| s.poll_flush(cx))
        .await
        .expect("flush");
    s.send_pong().expect("pong");
    let got = reader.await.expect("task");
    assert_eq!(&got[written..], [0x8A, 4, 0, 0, 3, 0xE7]);
    assert_eq!(s.buffered_capacity(), 0);
}

#[tokio::test]
async fn unsent_bytes_are_kept_only_until_the_peer_reads_them() {
    let settings = Settings {
        write_buffer_bytes: 16 * 1024,
        ..Settings::default()
    };
    let (mut s, mut c) = pair(&settings).await;
    let payload = vec![b'y'; 1000];
    let mut frames = 0usize;
    // The peer does not read: the kernel's buffers fill, then the socket keeps the rest.
    while !s.has_unsent() {
        s.write_batch(|b| {
            for _ in 0..64 {
                b.text(&payload);
            }
        })
        .expect("write");
        frames += 64;
        assert!(frames < 1_000_000, "never blocked");
    }
    assert!(s.buffered_capacity() > 0);
    // Nothing more is taken while blocked (the loop stops pulling from the outbox).
    let flushed = tokio::spawn(async move {
        std::future::poll_fn(|cx| s.poll_flush(cx))
            .await
            .expect("flush");
        s
    });
    let want = frames * (4 + 1000);
    let mut got = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while got < want {
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0);
        got += n;
    }
    let s = flushed.await.expect("task");
    assert_eq!(got, want, "every frame, once");
    assert_eq!(s.buffered_capacity(), 0, "freed once written");
    assert!(s.busy.is_none());
}

#[tokio::test]
async fn a_large_owned_frame_is_written_without_a_copy_when_blocked() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    let big = vec![b'z'; 8 << 20];
    s.write_batch(|b| b.text_owned(big)).expect("write");
    assert!(s.has_unsent(), "8 MiB do not fit the kernel's buffers");
    let busy = s.busy.as_ref().expect("busy while bytes are unsent");
    assert!(
        busy.outbuf.capacity() >= 8 << 20 && busy.outpos > 0,
        "the payload itself is kept, at the offset written"
    );
    let flushed = tokio::spawn(async move {
        std::future::poll_fn(|cx| s.poll_flush(cx))
            .await
            .expect("flush");
    });
    let mut got = 0;
    let mut chunk = vec![0u8; 1 << 16];
    while got < 10 + (8 << 20) {
        let n = c.read(&mut chunk).await.expect("read");
        assert!(n > 0);
        got += n;
    }
    flushed.await.expect("task");
    assert_eq!(got, 10 + (8 << 20));
}

/// Reads what the peer was sent until the end of the stream (which must be a FIN).
pub(crate) async fn received(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
        .await
        .expect("the end of the stream in time")
        .expect("a clean end of stream, not a reset");
    got
}

#[tokio::test]
async fn a_ping_then_a_close_in_one_read_writes_the_pong_then_the_echo_then_nothing() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    let mut bytes = client_frame(true, OP_PING, b"p");
    bytes.extend(client_frame(true, OP_CLOSE, &1001u16.to_be_bytes()));
    bytes.extend(client_frame(true, OP_TEXT, b"after the close"));
    c.write_all(&bytes).await.expect("write");
    s.tcp.readable().await.expect("readable");
    assert_eq!(
        read_now(&mut s).expect("ready").expect("close"),
        Incoming::Close(Some(1001))
    );
    assert!(s.peer_closed());
    assert!(!s.pong_pending(), "the pong went out with the echo");
    assert!(
        read_now(&mut s).is_none(),
        "nothing is read after the close"
    );
    // Nothing is written after the echo, not even a late pong or a text frame.
    s.write_batch(|b| {
        b.text(b"late");
        b.ping();
    })
    .expect("write");
    assert_eq!(s.buffered_capacity(), 0);
    drop(s);
    assert_eq!(
        received(&mut c).await,
        [&[0x8A, 1, b'p'][..], &[0x88, 2, 0x03, 0xE9]].concat()
    );
}

#[tokio::test]
async fn an_empty_close_is_echoed_empty_and_ends_writing() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    c.write_all(&client_frame(true, OP_CLOSE, b""))
        .await
        .expect("write");
    s.tcp.readable().await.expect("readable");
    assert_eq!(
        read_now(&mut s).expect("ready").expect("close"),
        Incoming::Close(None)
    );
    s.write_batch(|b| b.text(b"late")).expect("write");
    drop(s);
    assert_eq!(received(&mut c).await, [0x88, 0]);
}

#[tokio::test]
async fn linger_after_a_peer_close_drains_until_the_peers_fin_without_a_reset() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    let mut bytes = client_frame(true, OP_CLOSE, b"");
    // More than one read (4 KiB) behind the close frame, still unread by the socket.
    bytes.extend(vec![0u8; 64 * 1024]);
    c.write_all(&bytes).await.expect("write");
    s.tcp.readable().await.expect("readable");
    assert_eq!(
        read_now(&mut s).expect("ready").expect("close"),
        Incoming::Close(None)
    );
    let lingering = tokio::spawn(async move {
        s.linger(Duration::from_secs(60), true).await;
        s
    });
    // The echo, then our FIN: a clean end of stream, not a reset.
    assert_eq!(received(&mut c).await, [0x88, 0]);
    c.shutdown().await.expect("our FIN");
    let s = tokio::time::timeout(Duration::from_secs(5), lingering)
        .await
        .expect("linger ends at the peer's FIN, not at its limit")
        .expect("task");
    assert_eq!(s.buffered_capacity(), 0);
}

#[tokio::test]
async fn bytes_read_past_the_handshake_are_decoded_first() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut c = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    // hyper read the first frame and half of the second along with the request head.
    let mut early = client_frame(true, OP_TEXT, b"first");
    let second = client_frame(true, OP_TEXT, b"second");
    early.extend_from_slice(&second[..4]);
    let mut s = WsSocket::new(server, &early, &Settings::default());
    assert_eq!(
        read_now(&mut s).expect("ready").expect("text"),
        Incoming::Text("first".into())
    );
    assert!(read_now(&mut s).is_none(), "the second is incomplete");
    c.write_all(&second[4..]).await.expect("write");
    s.tcp.readable().await.expect("readable");
    assert_eq!(
        read_now(&mut s).expect("ready").expect("text"),
        Incoming::Text("second".into())
    );
    assert_eq!(s.buffered_capacity(), 0);
}

#[tokio::test]
async fn a_protocol_error_is_reported_with_its_close_code_and_a_fin_is_eof() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    // Unmasked text frame.
    c.write_all(&[0x81, 0x02, b'{', b'}']).await.expect("write");
    s.tcp.readable().await.expect("readable");
    match read_now(&mut s) {
        Some(Err(WsError::Protocol(e))) => assert_eq!(e.close_code(), 1002),
        other => panic!("{other:?}"),
    }
    let (mut s, mut c) = pair(&Settings::default()).await;
    c.shutdown().await.expect("FIN");
    s.tcp.readable().await.expect("readable");
    assert!(matches!(read_now(&mut s), Some(Err(WsError::Eof))));
}

#[tokio::test]
async fn after_our_close_linger_drops_frames_until_the_peers_close_and_writes_nothing() {
    let (mut s, mut c) = pair(&Settings::default()).await;
    s.write_batch(|b| b.close(1008, "rate limit exceeded"))
        .expect("close");
    s.write_batch(|b| b.text(b"after the close"))
        .expect("write");
    // The peer, not yet aware, sends messages and a ping, then its close frame.
    let mut bytes = Vec::new();
    for i in 0..100u32 {
        bytes.extend(client_frame(true, OP_TEXT, format!("m{i}").as_bytes()));
    }
    bytes.extend(client_frame(true, OP_PING, b"late"));
    bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
    c.write_all(&bytes).await.expect("write");
    let lingering = tokio::spawn(async move {
        s.linger(Duration::from_secs(60), false).await;
        s
    });
    let mut want = Vec::new();
    crate::ws::frame::encode_close(&mut want, 1008, "rate limit exceeded");
    // Our close frame, then our FIN: no text, pong or echo after the close.
    assert_eq!(received(&mut c).await, want);
    let s = tokio::time::timeout(Duration::from_secs(5), lingering)
        .await
        .expect("linger ends at the peer's close frame")
        .expect("task");
    assert_eq!(s.buffered_capacity(), 0);
}
