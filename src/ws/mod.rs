//! The three WebSocket surfaces (`/ws/agent`, `/ws/admin`, `/ws/telephony`): the hub's own
//! server-side RFC 6455 layer (handshake, frame codec, socket), the shared socket loop and
//! one session type per role. The per-socket queue they drain is the lower `outbox` module.
//!
//! ## Why the hub owns its WebSocket layer
//!
//! Most of the hub's sockets are idle agents, and their number is the memory target (100k
//! sockets; BENCHMARKS.md). With axum's WebSocket (tungstenite underneath) every socket
//! kept its read buffer, its write buffer and a `select!` of futures in its task for its
//! whole life: 13.76 KiB per idle agent socket at 5,000 sockets, a 4,096-byte socket task.
//! The hub's layer holds no buffer while a socket is idle: reads land in a per-thread
//! scratch inside a poll and are decoded there ([`socket`]); frames are encoded into a
//! per-thread scratch and written in batches ([`socket`]'s writing half); only a partial
//! frame or unsent bytes are kept, boxed, while they exist; one hand-written poll ([`conn`])
//! waits on the socket, the outbox (which also carries shutdown, from the hub's list of
//! open sockets) and one timer. Measured in BENCHMARKS.md ("Optimizations, before and
//! after", commits f270d31, 0fbf012, 8207810): 5.76-6.02 KiB per idle agent socket instead
//! of 13.76 (3.40-3.45 KiB with the actor changes), a socket task of 768 bytes instead of
//! 4,096, and fan-out to 500 admins 1.69M -> 1.88M deliveries/s with p99 13.35 -> 9.19 ms
//! at 200k/s. Since (issue 13, "Idle memory per agent"): a socket task cell of 512 bytes
//! (set-up and closing boxed, the rate limiter held only while it counts, no span or
//! shutdown waiter in the task; `the_socket_task_stays_small` guards it).
//!
//! What stays from tungstenite: the handshake's `derive_accept_key`, and the clients of the
//! tests and the load generator. Its public frame types were measured against the hand-written
//! parser and not taken (7x the instructions per header, and checks the hub needs missing):
//! see [`frame`]. Conformance of the layer: Autobahn|Testsuite, no failed case
//! (docs/autobahn.md, `scripts/autobahn.sh`, `examples/ws_echo.rs` on [`echo`]).

pub(crate) mod conn;
#[doc(hidden)]
pub mod echo;
pub mod frame;
pub(crate) mod handshake;
pub(crate) mod limit;
pub(crate) mod session;
pub(crate) mod socket;

mod admin;
mod agent;
mod reply;
mod telephony;

pub(crate) use session::spawn;
