//! Frames over a byte stream: [`FrameReader`] turns bytes into checked frames, [`FrameWriter`]
//! turns frames into as few writes as it can.
//!
//! Reading follows the protocol's "check before parse": the reader keeps one buffer per
//! connection, reads into it, and asks `shardcore_protocol::check` whether a whole valid frame is
//! there. An incomplete frame means "read more" (and says how much, so a large body is read
//! without re-checking every chunk); a malformed one ends the connection with a [`FrameError`]
//! that names the reason, and nothing else is affected. Bodies come out as `Bytes` sharing the
//! read buffer, with no copy.
//!
//! Writing coalesces: frames are encoded into the connection's outbox (the private `outbox` module) and a writer
//! task writes everything queued in one write. Frames queued while a write is in flight go out
//! together in the next one, so a burst of small replies costs one system call, not one each.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use shardcore_protocol::{check, decode, CheckError, Frame, FrameKind, Malformed};

use crate::limits::{CONNECTION_READ_BUFFER_BYTES, CONNECTION_WRITE_QUEUE_BYTES};
use crate::net::{ReadHalf, TcpStream, WriteHalf};
use crate::outbox::{IdleWriter, Outbox, OutboxStats};
use crate::task::spawn;

/// Why a connection's frames cannot be read any more. The caller closes that connection.
#[derive(Debug)]
pub enum FrameError {
    /// The bytes are not a valid frame (bad magic, version, kind, reserved bytes, an oversize
    /// length, or a checksum mismatch); the protocol's error names which.
    Malformed(Malformed),
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered_bytes: usize,
    },
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Malformed(malformed) => write!(f, "malformed frame: {malformed}"),
            FrameError::Truncated { buffered_bytes } => write!(
                f,
                "the connection ended inside a frame ({buffered_bytes} bytes of it had arrived)"
            ),
            FrameError::Io(error) => write!(f, "reading frames: {error}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Malformed(malformed) => Some(malformed),
            FrameError::Truncated { .. } => None,
            FrameError::Io(error) => Some(error),
        }
    }
}

/// Reads whole, checked frames from a byte stream (by default a connection's [`ReadHalf`]).
pub struct FrameReader<R = ReadHalf> {
    reader: R,
    /// Bytes read and not yet returned as frames.
    buf: BytesMut,
    /// Where each read lands before it is appended to `buf`: reading into `buf`'s spare capacity
    /// directly would need it zeroed first on every read, a larger cost than this copy of only
    /// the bytes that arrived.
    scratch: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `reader` with a [`CONNECTION_READ_BUFFER_BYTES`] buffer.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: BytesMut::with_capacity(CONNECTION_READ_BUFFER_BYTES),
            scratch: vec![0u8; CONNECTION_READ_BUFFER_BYTES].into_boxed_slice(),
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames. After an error
    /// the stream is not aligned on a frame any more: close the connection.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            let needed_bytes = match check(&self.buf) {
                Ok(_) => {
                    let frame = decode(&mut self.buf).map_err(FrameError::Malformed)?;
                    return Ok(Some(frame.expect("check found a whole frame")));
                }
                Err(CheckError::Malformed(malformed)) => {
                    return Err(FrameError::Malformed(malformed))
                }
                Err(CheckError::Incomplete { needed_bytes }) => needed_bytes,
            };
            // Room for the rest of this frame at once, so a large body is not re-checked (and
            // its buffer regrown) on every chunk.
            self.buf.reserve(needed_bytes);
            let read = self
                .reader
                .read(&mut self.scratch)
                .await
                .map_err(FrameError::Io)?;
            if read == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    buffered_bytes => Err(FrameError::Truncated { buffered_bytes }),
                };
            }
            self.buf.extend_from_slice(&self.scratch[..read]);
        }
    }

    /// Bytes read and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Writes frames to a byte stream (usually a connection's [`crate::net::WriteHalf`]), coalescing what
/// queues up while a write is in flight (see the module docs).
///
/// Creating one spawns its writer task on the current core. Dropping the writer lets the task
/// write what is queued, then close the stream's write side (FIN).
pub struct FrameWriter {
    outbox: Rc<Outbox>,
}

impl FrameWriter {
    /// A writer over `writer`, queueing at most [`CONNECTION_WRITE_QUEUE_BYTES`].
    pub fn new<W: AsyncWrite + Unpin + 'static>(writer: W) -> FrameWriter {
        FrameWriter::with_queue_bytes(writer, CONNECTION_WRITE_QUEUE_BYTES)
    }

    /// A writer over `writer` queueing at most `queue_bytes` (one larger frame still goes alone).
    pub fn with_queue_bytes<W: AsyncWrite + Unpin + 'static>(
        writer: W,
        queue_bytes: usize,
    ) -> FrameWriter {
        FrameWriter::start(writer, queue_bytes, None)
    }

    /// A writer over a connection's write half: like [`FrameWriter::new`], and
    /// [`FrameWriter::send_now`] can write to the socket directly.
    pub fn for_socket(writer: WriteHalf) -> FrameWriter {
        let fd = writer.as_raw_fd();
        FrameWriter::start(writer, CONNECTION_WRITE_QUEUE_BYTES, Some(fd))
    }

    /// Spawns the writer task over `writer`; `fd` is its socket when `send_now` may use it.
    fn start<W: AsyncWrite + Unpin + 'static>(
        writer: W,
        queue_bytes: usize,
        fd: Option<RawFd>,
    ) -> FrameWriter {
        let outbox = Rc::new(Outbox::new(queue_bytes));
        spawn(write_batches(outbox.clone(), writer, fd)).detach();
        FrameWriter { outbox }
    }

    /// Writes what is queued now, from the caller, when the writer task is idle (one
    /// nonblocking send; the rest is left to the writer task), instead of in the writer task's
    /// turn: answers leave before the caller goes on to other work. Only for a writer made by
    /// [`FrameWriter::for_socket`]; 0 otherwise. Returns the bytes sent.
    pub fn send_now(&self) -> usize {
        self.outbox.send_now()
    }

    /// Queues a frame, waiting while the queue is full. Fails if the body is over the protocol's
    /// limit (`InvalidInput`) or the connection failed (its error).
    pub async fn send(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        self.outbox.push(kind, body).await
    }

    /// Queues a frame if it fits now; `WouldBlock` if the queue is full.
    pub fn try_send(&self, kind: FrameKind, body: &[u8]) -> io::Result<()> {
        self.outbox.try_push(kind, body)
    }

    /// Waits until every frame queued so far has been written to the socket.
    pub async fn flush(&self) -> io::Result<()> {
        self.outbox.wait_written().await
    }

    /// Frames queued, writes made, bytes written.
    pub fn stats(&self) -> OutboxStats {
        self.outbox.stats()
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// The writer task: one write per batch, until the outbox closes or a write fails.
async fn write_batches<W: AsyncWrite + Unpin>(
    outbox: Rc<Outbox>,
    mut writer: W,
    fd: Option<RawFd>,
) {
    let mut batch = BytesMut::new();
    let idle = IdleWriter::new(&outbox, fd);
    while idle.wait_for_frames().await {
        let frames = outbox.take_batch(&mut batch);
        if let Err(error) = writer.write_all(&batch).await {
            outbox.fail(&error);
            return;
        }
        batch.clear();
        outbox.mark_written(frames);
    }
    // Everything queued is written: tell the peer no more frames come.
    let _ = writer.close().await;
}

impl TcpStream {
    /// Splits the connection into a frame reader and a frame writer (whose task is spawned on the
    /// current core).
    pub fn into_framed(self) -> (FrameReader, FrameWriter) {
        let (read, write) = self.into_split();
        (FrameReader::new(read), FrameWriter::for_socket(write))
    }
}
