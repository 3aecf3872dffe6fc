//! The outbox: frames queued for one destination, encoded back to back into one buffer so that
//! whatever piles up while a write is in flight leaves in the next single write.
//!
//! Shared by [`crate::framed::FrameWriter`] (one connection) and [`crate::peer::PeerLink`] (one
//! peer node across reconnects). Senders append encoded frames; the one writer task swaps the
//! whole buffer out ([`Outbox::take_batch`]) and writes it, or, while that task is idle, a
//! sender writes what is queued itself ([`Outbox::send_now`]: one nonblocking send). The outbox is bounded in bytes: a
//! sender waits (or `try_push` refuses) while the queued bytes would pass the bound, except
//! that one frame larger than the bound is accepted into an empty outbox, so that no frame the
//! protocol allows is unsendable.
//!
//! Everything here runs on one core, so the state is in `Cell`s; the `Event`s are only used
//! for their wakeups.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;

use bytes::{Buf, BytesMut};
use event_listener::Event;
use shardcore_protocol::limits::FRAME_HEADER_BYTES;
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
    /// The connection's socket while the writer task waits for frames with no write of its own
    /// in flight: [`Outbox::send_now`] may then write to it directly.
    idle_fd: Cell<Option<RawFd>>,
    /// Bytes at the front of `pending` that finish a frame `send_now` sent in part (the frame
    /// is still counted in `pending_frames`): they must follow its first part on the same
    /// connection.
    partial_tail: Cell<usize>,
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
            idle_fd: Cell::new(None),
            partial_tail: Cell::new(0),
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
        // A frame's tail goes with the batch: written on the connection its head went on.
        self.partial_tail.set(0);
        let mut stats = self.stats.get();
        stats.batches += 1;
        stats.bytes_taken += batch.len() as u64;
        self.stats.set(stats);
        self.has_room.notify(usize::MAX);
        frames
    }

    /// The writer task tells whether it is idle: `Some(socket)` while it waits for frames with
    /// no write in flight, `None` from the moment it takes a batch or its connection ends.
    pub(crate) fn set_idle_fd(&self, fd: Option<RawFd>) {
        self.idle_fd.set(fd);
    }

    /// Writes what is queued to the socket now, from the caller, if the writer task is idle:
    /// a sender whose frames must be on the wire before its next step (a leader's Appends
    /// before it submits its own disk write) need not wait for the writer task's turn. One
    /// nonblocking send; what the socket does not take stays queued for the writer task (woken
    /// when the frames were queued), and an error is left for the writer task's own write to
    /// meet. Returns the bytes sent.
    pub(crate) fn send_now(&self) -> usize {
        let Some(fd) = self.idle_fd.get() else {
            return 0;
        };
        let mut pending = self.pending.borrow_mut();
        if pending.is_empty() {
            return 0;
        }
        // SAFETY: `fd` is the writer's open socket: the writer clears `idle_fd` before its
        // connection can be dropped, and nothing else writes to it while the writer is idle.
        // The pointer and length describe `pending`'s initialized bytes.
        let sent = unsafe {
            libc::send(
                fd,
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        // -1: the socket is full (the writer task waits for room) or failed (its write fails).
        let sent = match usize::try_from(sent) {
            Ok(sent) if sent > 0 => sent,
            _ => return 0,
        };
        let (frames, tail) = frames_sent(&pending, self.partial_tail.get(), sent);
        pending.advance(sent);
        drop(pending);
        self.partial_tail.set(tail);
        self.pending_frames.set(self.pending_frames.get() - frames);
        let mut stats = self.stats.get();
        stats.batches += 1;
        stats.bytes_taken += sent as u64;
        self.stats.set(stats);
        self.has_room.notify(usize::MAX);
        self.mark_written(frames);
        sent
    }

    /// The connection ended: the rest of a frame `send_now` sent in part cannot go on the next
    /// connection (which starts on a frame boundary), so it is dropped. Returns the frames
    /// dropped (0 or 1).
    pub(crate) fn drop_partial(&self) -> u64 {
        let tail = self.partial_tail.replace(0);
        if tail == 0 {
            return 0;
        }
        self.pending.borrow_mut().advance(tail);
        self.pending_frames.set(self.pending_frames.get() - 1);
        1
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

/// The writer task's side of [`Outbox::send_now`]: the outbox counts as idle, with the
/// connection's socket, only while the task waits for frames here; it stops counting when the
/// task has frames to take, and when the task (with its connection) is dropped.
pub(crate) struct IdleWriter<'a> {
    outbox: &'a Outbox,
    fd: Option<RawFd>,
}

impl<'a> IdleWriter<'a> {
    /// `fd`: the socket `send_now` may write to; `None` for a writer over another stream.
    pub(crate) fn new(outbox: &'a Outbox, fd: Option<RawFd>) -> IdleWriter<'a> {
        IdleWriter { outbox, fd }
    }

    /// [`Outbox::wait_for_frames`], idle meanwhile.
    pub(crate) async fn wait_for_frames(&self) -> bool {
        self.outbox.set_idle_fd(self.fd);
        let more = self.outbox.wait_for_frames().await;
        self.outbox.set_idle_fd(None);
        more
    }
}

impl Drop for IdleWriter<'_> {
    fn drop(&mut self) {
        self.outbox.set_idle_fd(None);
    }
}

/// After `sent` bytes of `queued` went out, where the first `tail` bytes finished a frame
/// begun earlier: the frames now wholly sent, and the bytes left of one sent in part.
fn frames_sent(queued: &[u8], tail: usize, sent: usize) -> (u64, usize) {
    if sent < tail {
        return (0, tail - sent);
    }
    let mut frames = u64::from(tail > 0);
    let mut at = tail;
    while at < sent {
        let header = queued[at..]
            .first_chunk::<FRAME_HEADER_BYTES>()
            .expect("the outbox holds whole frames after a tail");
        let end = at
            + FrameHeader::parse(header)
                .expect("the outbox holds frames it encoded")
                .frame_bytes();
        if end > sent {
            return (frames, end - sent);
        }
        frames += 1;
        at = end;
    }
    (frames, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[usize]) -> BytesMut {
        let mut out = BytesMut::new();
        for len in bodies {
            encode(FrameKind::PeerRaft, &vec![7u8; *len], &mut out).expect("small frame");
        }
        out
    }

    /// A frame `send_now` wrote in part: the rest stays queued, ahead of later frames, and is
    /// what the writer's next batch starts with; if the connection ends first, `drop_partial`
    /// drops exactly that rest, so the next batch starts on a frame boundary.
    #[test]
    fn the_rest_of_a_frame_sent_in_part_goes_next_or_not_at_all() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let big = vec![3u8; 4 << 20];
        for drop_it in [false, true] {
            let outbox = Outbox::new(8 << 20);
            outbox.try_push(FrameKind::PeerRaft, &big).expect("queued");
            // Not idle: nothing is sent.
            assert_eq!(outbox.send_now(), 0);
            outbox.set_idle_fd(Some(ours.as_raw_fd()));
            let sent = outbox.send_now();
            assert!(sent > 0 && sent < big.len(), "sent {sent}");
            outbox
                .try_push(FrameKind::PeerRaft, b"next")
                .expect("queued");
            let rest = FRAME_HEADER_BYTES + big.len() - sent;
            let mut batch = BytesMut::new();
            if drop_it {
                assert_eq!(outbox.drop_partial(), 1);
                assert_eq!(outbox.take_batch(&mut batch), 1);
                let header = FrameHeader::parse(batch.first_chunk().expect("a header"))
                    .expect("the batch starts on a frame boundary");
                assert_eq!(&batch[FRAME_HEADER_BYTES..], b"next");
                assert_eq!(header.frame_bytes(), batch.len());
            } else {
                assert_eq!(
                    outbox.take_batch(&mut batch),
                    2,
                    "the cut frame and the next"
                );
                assert_eq!(batch.len(), rest + FRAME_HEADER_BYTES + 4);
                assert!(batch[..rest].iter().all(|b| *b == 3), "the rest first");
                assert_eq!(outbox.drop_partial(), 0, "the batch took the rest");
            }
            // Empty the socket for the next round.
            let mut sink = vec![0u8; sent];
            theirs.read_exact(&mut sink).expect("the sent bytes");
        }
    }

    /// Every split point of three frames, with and without a tail before them, counts the
    /// frames that went out whole and the bytes left of the one cut.
    #[test]
    fn frames_sent_counts_whole_frames_and_the_cut_ones_rest() {
        let lens = [0usize, 5, 40];
        let queued = frames(&lens);
        let ends: Vec<usize> = lens
            .iter()
            .scan(0, |at, len| {
                *at += FRAME_HEADER_BYTES + len;
                Some(*at)
            })
            .collect();
        for sent in 1..=queued.len() {
            let whole = ends.iter().filter(|end| **end <= sent).count() as u64;
            // The frame cut: begun (its start before `sent`) but not ended.
            let rest = ends
                .iter()
                .zip(std::iter::once(&0).chain(&ends))
                .find(|(end, start)| **start < sent && **end > sent)
                .map_or(0, |(end, _)| end - sent);
            assert_eq!(frames_sent(&queued, 0, sent), (whole, rest), "sent {sent}");
        }
        // A 9-byte tail of an earlier frame first.
        let mut with_tail = BytesMut::from(&[1u8; 9][..]);
        with_tail.extend_from_slice(&queued);
        assert_eq!(frames_sent(&with_tail, 9, 4), (0, 5));
        assert_eq!(frames_sent(&with_tail, 9, 9), (1, 0));
        assert_eq!(frames_sent(&with_tail, 9, 10), (1, FRAME_HEADER_BYTES - 1));
        assert_eq!(frames_sent(&with_tail, 9, with_tail.len()), (4, 0));
    }
}
