//! A peer link: one outbound connection to another node, kept alive across failures, carrying
//! every frame this core has for that node.
//!
//! Frames go into the link's outbox (the private `outbox` module) whether or not the link is connected; its task
//! connects (with a timeout), sends the optional hello frame first on every new connection, and
//! then writes whatever is queued in one write per batch, so traffic for many Raft groups
//! bound for one node shares writes (STYLE: coalesce per destination node). When a connection
//! fails, the task waits and reconnects, the wait doubling from [`PEER_BACKOFF_MIN_MS`] to
//! [`PEER_BACKOFF_MAX_MS`].
//!
//! [`PeerLink::send_now`] writes what is queued from the caller while the task is idle, so a
//! frame need not wait for the task's turn; a frame it sends in part is finished by the task
//! on the same connection, or dropped with it.
//!
//! Delivery is at most once: the batch being written when a connection fails is dropped (its
//! frames are counted in [`PeerLinkStats::frames_dropped`]), because there is no telling how much
//! of it arrived, and a new connection must start on a frame boundary. Raft retransmits what a
//! follower lacks, so a lost batch costs a round trip, never safety.
//!
//! The link is one-way: the remote node answers over its own link to this node. The task still
//! reads the connection, discarding anything that arrives, because a read that ends is how a
//! connection closed by the remote is noticed before the next write is lost into it.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use shardcore_protocol::{encode, FrameKind};

use crate::limits::{
    PEER_BACKOFF_MAX_MS, PEER_BACKOFF_MIN_MS, PEER_CONNECT_TIMEOUT_MS, PEER_QUEUE_BYTES,
};
use crate::net::{ReadHalf, TcpStream, WriteHalf};
use crate::outbox::{IdleWriter, Outbox, OutboxStats};
use crate::task::spawn;
use crate::time::sleep;

/// How a peer link connects and how much it queues.
#[derive(Clone, Debug)]
pub struct PeerLinkConfig {
    /// The peer node's address.
    pub addr: SocketAddr,
    /// A frame sent first on every new connection (who is speaking), if any.
    pub hello: Option<(FrameKind, Bytes)>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The first wait after a failure; it doubles per consecutive failure.
    pub backoff_min: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// Bytes of frames held queued; past it `try_send` refuses and `send` waits.
    pub queue_bytes: usize,
}

impl PeerLinkConfig {
    /// The defaults from [`crate::limits`] for a peer at `addr`, with no hello frame.
    pub fn new(addr: SocketAddr) -> PeerLinkConfig {
        PeerLinkConfig {
            addr,
            hello: None,
            connect_timeout: Duration::from_millis(PEER_CONNECT_TIMEOUT_MS),
            backoff_min: Duration::from_millis(PEER_BACKOFF_MIN_MS),
            backoff_max: Duration::from_millis(PEER_BACKOFF_MAX_MS),
            queue_bytes: PEER_QUEUE_BYTES,
        }
    }
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    /// Connections made.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Frames dropped with a batch whose write failed.
    pub frames_dropped: u64,
    /// The outbox's counters: frames queued, batches written, bytes.
    pub outbox: OutboxStats,
}

/// An outbound link to one peer node. See the module docs. Creating one spawns its task on the
/// current core. Dropping it ends the task: frames still queued are written first if a
/// connection is up, and dropped if not.
pub struct PeerLink {
    shared: Rc<LinkShared>,
}

struct LinkShared {
    outbox: Outbox,
    connected: Cell<bool>,
    connects: Cell<u64>,
    connect_failures: Cell<u64>,
    frames_dropped: Cell<u64>,
    /// Frames of the batch being written: dropped if the connection ends before it is done.
    frames_in_flight: Cell<u64>,
}

impl PeerLink {
    /// A link to `config.addr`; it starts connecting at once.
    pub fn new(config: PeerLinkConfig) -> PeerLink {
        assert!(
            !config.backoff_min.is_zero() && config.backoff_min <= config.backoff_max,
            "backoff from {:?} to {:?}",
            config.backoff_min,
            config.backoff_max
        );
        let shared = Rc::new(LinkShared {
            outbox: Outbox::new(config.queue_bytes),
            connected: Cell::new(false),
            connects: Cell::new(0),
            connect_failures: Cell::new(0),
            frames_dropped: Cell::new(0),
            frames_in_flight: Cell::new(0),
        });
        spawn(keep_connected(shared.clone(), config)).detach();
        PeerLink { shared }
    }

    /// Queues a frame if the queue has room now; `WouldBlock` if not (drop it: Raft retries),
    /// `InvalidInput` if the body is over the protocol's limit.
    pub fn try_send(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        self.shared.outbox.try_push(kind, body)
    }

    /// Writes what is queued now, from the caller, when the connection is up and its writer
    /// task idle (one nonblocking send; the rest is left to the writer task): frames that
    /// must leave before the caller's next step, such as Appends before the leader's own disk
    /// write, need not wait for the writer task's turn. Returns the bytes sent.
    pub fn send_now(&self) -> usize {
        self.shared.outbox.send_now()
    }

    /// Queues a frame, waiting while the queue is full (which, while the peer is down, can be
    /// until it comes back).
    pub async fn send(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        self.shared.outbox.push(kind, body).await
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.get()
    }

    /// The link's counters.
    pub fn stats(&self) -> PeerLinkStats {
        PeerLinkStats {
            connects: self.shared.connects.get(),
            connect_failures: self.shared.connect_failures.get(),
            frames_dropped: self.shared.frames_dropped.get(),
            outbox: self.shared.outbox.stats(),
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.shared.outbox.close();
    }
}

/// The link's task: connect, write until the connection fails, back off, again.
async fn keep_connected(shared: Rc<LinkShared>, config: PeerLinkConfig) {
    let mut failures = 0u32;
    while !shared.outbox.is_closed() {
        let stream = match TcpStream::connect_timeout(config.addr, config.connect_timeout).await {
            Ok(stream) => stream,
            Err(_) => {
                shared
                    .connect_failures
                    .set(shared.connect_failures.get() + 1);
                sleep(backoff(&config, failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        shared.connects.set(shared.connects.get() + 1);
        shared.connected.set(true);
        let (read, write) = stream.into_split();
        // Whichever ends first, the writer (a failed write, or the link dropped) or the
        // watcher (the remote closed), ends this connection; the other is dropped with it.
        futures_lite::future::or(
            write_until_failure(&shared, write, &config),
            watch_for_close(read),
        )
        .await;
        shared.connected.set(false);
        let lost = shared.frames_in_flight.replace(0) + shared.outbox.drop_partial();
        shared
            .frames_dropped
            .set(shared.frames_dropped.get() + lost);
    }
}

/// The wait before the next attempt after `failures` consecutive failures (0 for the first).
fn backoff(config: &PeerLinkConfig, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    config
        .backoff_min
        .saturating_mul(factor)
        .min(config.backoff_max)
}

/// Writes the hello frame, then batches, until a write fails or the link is dropped.
async fn write_until_failure(shared: &LinkShared, mut write: WriteHalf, config: &PeerLinkConfig) {
    let mut batch = BytesMut::new();
    if let Some((kind, body)) = &config.hello {
        encode(*kind, body, &mut batch).expect("a hello frame within the protocol's limit");
        if write.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let idle = IdleWriter::new(&shared.outbox, Some(write.as_raw_fd()));
    while idle.wait_for_frames().await {
        let frames = shared.outbox.take_batch(&mut batch);
        shared.frames_in_flight.set(frames);
        if write.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
        shared.frames_in_flight.set(0);
        shared.outbox.mark_written(frames);
    }
}

/// Reads and discards until the connection ends; see the module docs.
async fn watch_for_close(mut read: ReadHalf) {
    let mut discard = [0u8; 512];
    while let Ok(1..) = read.read(&mut discard).await {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait doubles from the minimum and stops at the maximum, even after very many failures.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = PeerLinkConfig::new("127.0.0.1:1".parse().unwrap());
        let waits: Vec<u64> = [0, 1, 2, 3, 6, 7, 40, u32::MAX]
            .map(|failures| backoff(&config, failures).as_millis() as u64)
            .to_vec();
        assert_eq!(waits, vec![10, 20, 40, 80, 640, 1000, 1000, 1000]);
    }
}
