//! shardcore-io: the runtime a node runs on, and the only crate that names it.
//!
//! A node runs one executor per CPU core, pinned to that core. A core owns its Raft groups and
//! their data outright (shared-nothing): a request that arrives on the wrong core travels to the
//! owner as a message, never through a lock. This crate owns the machinery for that: executors,
//! the cross-core message mesh, sockets and timers. The system in `shardcore` (`src/`) drives it
//! and stays unaware of which runtime is underneath (glommio today): no glommio type appears in
//! this crate's public API, so moving to another io_uring runtime touches this crate only.
//!
//! # Layout
//! - [`runtime`]: [`run`] starts one executor thread per core (pinned, all or nothing) and hands
//!   each a [`Core`]: its id, the core count, and its end of the mesh.
//! - [`mesh`]: a bounded lock-free queue for every ordered pair of cores; `send` waits while the
//!   destination's queue is full (backpressure), one [`MeshReceiver`] per core receives from all.
//! - [`bridge`]: a bounded channel between a core and a plain thread (the node's snapshot
//!   writers, MapReduce workers), each end usable by awaiting or by blocking.
//! - [`task`] and [`time`]: spawn local tasks, yield, sleep, time out, and the [`Ticker`] that
//!   drives Raft's 10 ms tick.
//! - [`net`]: TCP listeners (`SO_REUSEPORT`, so every core binds the client port) and streams
//!   (`TCP_NODELAY`) that split into a read half and a write half.
//! - [`framed`]: [`FrameReader`] (bytes to checked frames, "check before parse", a malformed frame
//!   ends only its connection) and [`FrameWriter`] (frames queued during a write leave in one
//!   write), on `shardcore-protocol`'s codec. The coalescing queue itself is the private
//!   `outbox` module.
//! - [`peer`]: [`PeerLink`], one outbound connection per peer node kept alive with reconnects and
//!   bounded backoff, coalescing everything queued for that node.
//! - [`signal`]: SIGTERM / SIGINT as a shutdown that every core can await.
//! - [`event`]: [`EventCounter`], an eventfd a core awaits in its own ring: another io_uring
//!   (the WAL's) signals it on every completion, so the core drives that ring itself.
//! - [`cpu`]: this process's CPU time, for benchmarks.
//! - [`limits`]: the named bounds of the runtime, each with the reason for its number.
//! - [`placement`]: which core of a node owns a Raft group, a pure function pinned by a golden
//!   test because it is part of the on-disk layout.
//! - [`memlock`]: the locked-memory limit io_uring needs, raised before start or reported.
//! - [`error`]: the runtime's start errors and the channel errors.
//!
//! # Example
//! Two cores; core 0 sends a number to core 1, which answers with its double.
//! ```no_run
//! use shardcore_io::{run, CoreId, RuntimeConfig};
//!
//! let cfg = RuntimeConfig { cores: 2, ..RuntimeConfig::default() };
//! let results = run(cfg, |core| async move {
//!     let inbox = core.take_receiver().expect("taken once");
//!     if core.id() == CoreId(0) {
//!         core.send(CoreId(1), 21u64).await.unwrap();
//!         let (_, answer) = inbox.recv().await.unwrap();
//!         answer
//!     } else {
//!         let (from, n) = inbox.recv().await.unwrap();
//!         core.send(from, n * 2).await.unwrap();
//!         0
//!     }
//! })
//! .unwrap();
//! assert_eq!(results, vec![42, 0]);
//! ```
//!
//! # What exists and what comes
//! Built: everything above, tested over loopback in `io/tests` (mesh, bridge, TCP framing and
//! malformed input, peer reconnects, ticks, signals, start-up errors); `cargo test -p
//! shardcore-io --bench runtime` prints mesh and TCP round trips per second.
//!
//! Not built yet: the node that wires Raft's Readies to these pieces (`src/node`), a
//! per-connection limit enforced at accept ([`limits::MAX_CONNECTIONS_PER_CORE`] is named but
//! the node counts connections), and TLS.
#![deny(missing_docs)]

pub mod bridge;
pub mod cpu;
pub mod error;
pub mod event;
pub mod framed;
pub mod limits;
pub mod memlock;
pub mod mesh;
pub mod net;
mod outbox;
pub mod peer;
pub mod placement;
pub mod runtime;
pub mod signal;
pub mod task;
pub mod time;

pub use bridge::{BridgeReceiver, BridgeSender};
pub use cpu::{process_cpu_time, CpuTime};
pub use error::{IoError, SendError, TryRecvError, TrySendError};
pub use event::EventCounter;
pub use framed::{FrameError, FrameReader, FrameWriter};
pub use mesh::MeshReceiver;
pub use net::{ReadHalf, TcpListener, TcpStream, WriteHalf};
pub use outbox::OutboxStats;
pub use peer::{PeerLink, PeerLinkConfig, PeerLinkStats};
pub use placement::{core_for_group, CoreId};
pub use runtime::{run, Core, Pinning, RuntimeConfig};
pub use signal::{
    install_shutdown_handler, request_shutdown, shutdown_reason, shutdown_requested,
    shutdown_signal, ShutdownReason,
};
pub use task::{spawn, spawn_queued, yield_cpu, yield_now, Task};
pub use time::{sleep, sleep_until, timeout, Elapsed, Ticker};
