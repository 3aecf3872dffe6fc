//! The outbox: frames queued for one destination, encoded back to back into one buffer so that
//! whatever piles up while a write is in flight leaves in the next single write.
//!
//! Shared by [`crate::framed::FrameWriter`] (one connection) and [`crate::peer::PeerLink`] (one
//! peer node across reconnects). Senders append encoded frames; the one writer task swaps the
//! whole buffer out ([`Outbox::take_batch`]) and writes it. The outbox is bounded in bytes: a
//! sender waits (or `try_push` refuses) while the queued bytes would pass the bound, except
//! that one frame larger than the bound is accepted into an empty outbox, so that no frame the
//! protocol allows is unsendable.
//!
//! Everything here runs on one core, so the state is in `Cell`s; the `Event`s are only used
//! for their wakeups.

use std::cell::{Cell, RefCell};
use std::io;

use bytes::BytesMut;
use event_listener::Event;
use shardcore_protocol::{encode, FrameHeader, FrameKind};

/// Counters of one outbox, for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Frames accepted.
    pub frames_queued: u64,
    /// Batches taken by the writer: with coalescing, fewer than the frames.
    pub batches: u64,
    /// Bytes (headers and bodies) taken by the writer.
    pub bytes_taken: u64,
}

/// Frames queued for one destination. See the module docs.
pub(crate) struct Outbox {
    pending: RefCell<BytesMut>,
    /// Frames in `pending`.
    pending_frames: Cell<u64>,
    /// Frames the writer has written in full, since the start.
    frames_written: Cell<u64>,
    limit_bytes: usize,
    /// No more frames will be queued (the owner is gone), or the writer failed.
    closed: Cell<bool>,
    /// Why the writer stopped, for every later sender.
    failure: RefCell<Option<(io::ErrorKind, String)>>,
    stats: Cell<OutboxStats>,
    /// Frames were queued, or the outbox closed.
    has_frames: Event,
    /// A batch was taken, or the outbox closed.
    has_room: Event,
    /// A batch was written, or the writer failed.
    written: Event,
}

impl Outbox {
    /// An empty outbox that holds at most `limit_bytes` queued (see the module docs).
    pub(crate) fn new(limit_bytes: usize) -> Outbox {
        Outbox {
            pending: RefCell::new(BytesMut::with_capacity(limit_bytes.min(64 << 10))),
            pending_frames: Cell::new(0),
            frames_written: Cell::new(0),
            limit_bytes,
            closed: Cell::new(false),
            failure: RefCell::new(None),
            stats: Cell::new(OutboxStats::default()),
            has_frames: Event::new(),
            has_room: Event::new(),
            written: Event::new(),
        }
    }

    /// Queues one frame if it fits now; `WouldBlock` if not, `InvalidInput` if the body is over
    /// the protocol's limit, the writer's failure if it failed.
    pub(crate) fn try_push(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        self.check_open()?;
        let header = FrameHeader::for_body(kind, body)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() && pending.len() + header.frame_bytes() > self.limit_bytes {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} bytes already queued (the bound)", pending.len()),
            ));
        }
        encode(kind, body, &mut pending).expect("the header was built from this body");
        self.pending_frames.set(self.pending_frames.get() + 1);
        let mut stats = self.stats.get();
        stats.frames_queued += 1;
        self.stats.set(stats);
        self.has_frames.notify(1);
        Ok(())
    }

    /// Queues one frame, waiting while the outbox is full.
    pub(crate) async fn push(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        loop {
            match self.try_push(kind, body) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            // Single-threaded: nothing can take a batch between the failed push and the listen.
            self.has_room.listen().await;
        }
    }

    /// Waits until frames are queued; `false` when the outbox closed with nothing left.
    pub(crate) async fn wait_for_frames(&self) -> bool {
        loop {
            if !self.pending.borrow().is_empty() {
                return true;
            }
            if self.closed.get() {
                return false;
            }
            self.has_frames.listen().await;
        }
    }

    /// Swaps every queued frame into `batch` (which must be empty) and returns how many frames
    /// it holds. The buffers alternate, so a steady stream allocates nothing.
    pub(crate) fn take_batch(&self, batch: &mut BytesMut) -> u64 {
        assert!(batch.is_empty(), "the previous batch was not written");
        std::mem::swap(&mut *self.pending.borrow_mut(), batch);
        let frames = self.pending_frames.replace(0);
        let mut stats = self.stats.get();
        stats.batches += 1;
        stats.bytes_taken += batch.len() as u64;
        self.stats.set(stats);
        self.has_room.notify(usize::MAX);
        frames
    }

    /// The writer wrote a batch of `frames` frames in full.
    pub(crate) fn mark_written(&self, frames: u64) {
        self.frames_written.set(self.frames_written.get() + frames);
        self.written.notify(usize::MAX);
    }

    /// Waits until every frame queued so far has been written in full.
    pub(crate) async fn wait_written(&self) -> io::Result<()> {
        let target = self.stats.get().frames_queued;
        loop {
            if self.frames_written.get() >= target {
                return Ok(());
            }
            self.check_failed()?;
            self.written.listen().await;
        }
    }

    /// No more frames will be queued; the writer drains what is there and stops.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.has_frames.notify(usize::MAX);
        self.has_room.notify(usize::MAX);
        self.written.notify(usize::MAX);
    }

    /// The writer failed: every queued and later frame fails with this error.
    pub(crate) fn fail(&self, error: &io::Error) {
        self.failure
            .borrow_mut()
            .get_or_insert_with(|| (error.kind(), error.to_string()));
        self.pending.borrow_mut().clear();
        self.pending_frames.set(0);
        self.close();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub(crate) fn stats(&self) -> OutboxStats {
        self.stats.get()
    }

    fn check_failed(&self) -> io::Result<()> {
        match &*self.failure.borrow() {
            Some((kind, reason)) => Err(io::Error::new(
                *kind,
                format!("the connection failed earlier: {reason}"),
            )),
            None => Ok(()),
        }
    }

    fn check_open(&self) -> io::Result<()> {
        self.check_failed()?;
        if self.closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the writer is closed",
            ));
        }
        Ok(())
    }
}
