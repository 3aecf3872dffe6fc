//! The runtime's named bounds. Each says why it is that number; the server will refuse to start
//! with a setting outside them rather than run unbounded.

/// Messages one core may have queued for one other core before the sender must wait.
///
/// Why 256: a core drains every inbound queue once per scheduler turn, and handling one forwarded
/// request costs on the order of a microsecond, so a full queue adds at most about a quarter of a
/// millisecond of queueing to what it carries. Past that, waiting at the sender (backpressure
/// that reaches the sockets) is better than growing memory. With [`MAX_CORES`] cores the mesh has
/// `MAX_CORES * (MAX_CORES - 1)` queues, so the capacity is also what keeps the mesh's own
/// memory small.
pub const MESH_QUEUE_CAPACITY: usize = 256;

/// The most cores one node runs executors on.
///
/// Why 256: the mesh is all-to-all, so its queue count grows with the square of the core count;
/// 256 cores cover today's largest common servers while keeping the mesh at 65,280 queues.
pub const MAX_CORES: usize = 256;

/// Connections (client and peer together) one core accepts; past it, a new connection is
/// closed at once with a clear error, as mini-redis does with its `MAX_CONNECTIONS`.
///
/// Why 256: each connection holds a [`CONNECTION_READ_BUFFER_BYTES`] read buffer and a landing
/// buffer of the same size, and up to twice [`CONNECTION_WRITE_QUEUE_BYTES`] for writes (the
/// batch in flight and the next), so 256 connections pin at most 64 MiB per core (larger frames
/// only while one is in transit); and 2 cores × 256 stays below
/// Linux's default limit of 1024 open files per process, leaving room for WAL segments and
/// peer links, so a small node runs without raising `ulimit -n`.
pub const MAX_CONNECTIONS_PER_CORE: usize = 256;

/// The read buffer a connection starts with.
///
/// Why 64 KiB: it holds many small client frames per read system call; a larger frame (up to
/// the protocol's `MAX_FRAME_BYTES`) grows the buffer only while that frame is being read.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 << 10;

/// How often the runtime ticks every Raft group on a core.
///
/// Why 10 ms: the Raft core's defaults are counted in ticks for a 10 ms tick (heartbeats every
/// 100 ms, elections after 1-2 s, as etcd), and the simulator's virtual clock uses the same
/// tick, so simulated and real timings mean the same thing.
pub const TICK_INTERVAL_MS: u64 = 10;

/// The largest mesh queue capacity a node accepts (`RuntimeConfig::mesh_capacity`).
///
/// Why 65,536: the mesh allocates every queue up front, `cores * cores * capacity` slots, so the
/// capacity multiplies by the square of the core count; at 16 cores and this capacity the slots
/// alone are 16 M, already more than any backpressure benefit is worth.
pub const MAX_MESH_QUEUE_CAPACITY: usize = 1 << 16;

/// The longest an idle core may poll for work before sleeping (`RuntimeConfig::idle_spin`).
///
/// Why 1 ms: spinning pays off only while the next message is likely to come within the spin;
/// past a millisecond (a tenth of a tick) the core is just burning a CPU that another process,
/// or the WAL writer thread, could use.
pub const MAX_IDLE_SPIN_US: u64 = 1000;

/// The memory each executor sets aside for glommio's own I/O buffers (`io_memory`), which it
/// registers with its io_uring when the locked-memory limit allows.
///
/// Why 1 MiB and not glommio's 10 MiB default: nothing here reads files through glommio (the WAL
/// has its own io_uring in `shardcore-storage`) and sockets read into the connection's own
/// buffers, so the area only serves glommio's internals; and registering it counts against
/// `RLIMIT_MEMLOCK`, whose common default (8 MiB) could not hold 10 MiB for even one core.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 1 << 20;

/// Bytes of frames a connection's writer holds queued (beyond the write in flight) before a
/// sender must wait; one frame larger than this still goes out alone.
///
/// Why 64 KiB: the same as the read buffer, which keeps [`MAX_CONNECTIONS_PER_CORE`]'s memory
/// budget true, and enough to coalesce hundreds of small replies into one write.
pub const CONNECTION_WRITE_QUEUE_BYTES: usize = 64 << 10;

/// Bytes of frames a peer link holds queued for its node before `try_send` refuses more.
///
/// Why 4 MiB: one link carries every group's Raft traffic to one node, so it must absorb a burst
/// of a few full Appends (1 MiB each by the Raft core's default) while a write is in flight or a
/// reconnect is under way. Past that, dropping is right: Raft retransmits what a follower lacks.
pub const PEER_QUEUE_BYTES: usize = 4 << 20;

/// How long a peer link waits for one connection attempt.
///
/// Why 500 ms: half the shortest election timeout (100 ticks of 10 ms), so a node that does not
/// answer SYNs is retried, and given up on for this attempt, before elections depend on it.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;

/// The first wait between failed connection attempts to a peer; it doubles per failure.
///
/// Why 10 ms: one tick. A peer that is restarting is usually back within milliseconds.
pub const PEER_BACKOFF_MIN_MS: u64 = 10;

/// The longest wait between connection attempts to a peer.
///
/// Why 1 s: the shortest election timeout, so a peer that comes back is reached before the
/// cluster would elect around it, while a long-dead peer costs one SYN a second.
pub const PEER_BACKOFF_MAX_MS: u64 = 1000;

/// The accept queue of a listening socket (`listen(2)` backlog).
///
/// Why 1024: every client reconnects at once after a leader change or a node restart; 1024
/// pending connections per core absorb that burst, and Linux caps it at `net.core.somaxconn`
/// (4096 by default) anyway.
pub const LISTEN_BACKLOG: i32 = 1024;

const _: () = assert!(
    MESH_QUEUE_CAPACITY.is_power_of_two(),
    "ring buffers want a power of two"
);
const _: () = assert!(MAX_CORES >= 1 && MAX_CONNECTIONS_PER_CORE >= 1);
const _: () = assert!(MESH_QUEUE_CAPACITY <= MAX_MESH_QUEUE_CAPACITY);
const _: () = assert!(PEER_BACKOFF_MIN_MS >= 1 && PEER_BACKOFF_MIN_MS <= PEER_BACKOFF_MAX_MS);
