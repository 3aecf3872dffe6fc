//! [`EventCounter`]: a kernel event counter (an `eventfd`) a core awaits in its own io_uring.
//!
//! What it is for: another io_uring (the WAL's, in `shardcore-storage`) registers the counter
//! (`IORING_REGISTER_EVENTFD`), so the kernel adds one to it for every completion it posts
//! there. The core awaits the counter like any other I/O, then reaps that ring without
//! blocking. The core thus drives a ring it does not own without a thread in between: no
//! hand-off to a writer thread on submission, none back on completion.
//!
//! The wait is a read of the counter's 8 bytes through the executor's ring: it completes (and
//! resets the counter to zero) as soon as the counter is above zero, at once if it already is.
//! A completion posted after a read finished raises the counter again, so a caller that reaps
//! after every finished wait never misses one.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// An `eventfd`, read through the executor's io_uring; see the module docs. Create it, and
/// use it, on one core's executor thread: it belongs to that executor's ring.
pub struct EventCounter {
    file: glommio::io::BufferedFile,
    fd: RawFd,
}

impl EventCounter {
    /// A new counter at zero. Must be called on an executor thread.
    pub fn new() -> io::Result<EventCounter> {
        // SAFETY: a plain syscall with no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it; the file closes it when
        // dropped.
        let file = unsafe { glommio::io::BufferedFile::from_raw_fd(fd) };
        Ok(EventCounter { file, fd })
    }

    /// The descriptor, to register with another io_uring. It stays open while `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Waits until the counter is above zero, resets it, and returns what it was.
    pub async fn wait(&self) -> io::Result<u64> {
        let read = self.file.read_at(0, 8).await.map_err(io::Error::from)?;
        let bytes: [u8; 8] = read[..]
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::UnexpectedEof, "short eventfd read"))?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Adds `n` to the counter (from any thread: a plain `write` of the descriptor).
    pub fn add(&self, n: u64) -> io::Result<()> {
        let bytes = n.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local buffer to a descriptor `self` owns.
        let written = unsafe { libc::write(self.fd, bytes.as_ptr().cast(), bytes.len()) };
        if written == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
