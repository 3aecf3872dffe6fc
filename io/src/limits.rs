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
/// Why 256: each connection holds a [`CONNECTION_READ_BUFFER_BYTES`] read buffer and as much
/// again for writes, so 256 connections pin 32 MiB per core; and 2 cores × 256 stays below
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

const _: () = assert!(
    MESH_QUEUE_CAPACITY.is_power_of_two(),
    "ring buffers want a power of two"
);
const _: () = assert!(MAX_CORES >= 1 && MAX_CONNECTIONS_PER_CORE >= 1);
