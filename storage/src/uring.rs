//! The WAL's I/O layer: an io_uring with a synced write (an `O_DSYNC` write, or a write linked
//! to an `fdatasync`), submitted by [`Ring::begin`] and completed by [`Ring::wait`] (or
//! [`Ring::poll`]), and the 4096-aligned buffers that `O_DIRECT` writes need.
//!
//! The WAL writes with [`Sync::Dsync`]: the write carries `RWF_DSYNC`, so the kernel flushes
//! the device's cache before it completes the write (or writes with FUA where the device has
//! it). A linked `fdatasync` costs more on every write: io_uring always hands an fsync to one of
//! its worker threads, and it queues the linked request from the submitter's task work, which
//! wakes the submitting thread once more before the sync even starts. Measured on the 2-CPU
//! test VM with three nodes: a third of the context switches, 20-25% less server CPU per put.
//!
//! Submission and completion are separate so that a thread-per-core runtime can submit a batch,
//! go on with other work (encode the next batch), and poll for the completion; the WAL's
//! `submit` / `wait` / `poll` are built on them. The ring owns each in-flight buffer until its operations complete (and
//! waits for them when dropped), so the kernel never reads memory that was freed or reused.

use std::alloc::{self, Layout};
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use io_uring::{opcode, squeue, types, IoUring};

/// The alignment and size unit of `O_DIRECT` I/O. Why 4096: it is the logical block size of
/// every device and page size we run on, and a multiple of the 512-byte sector; a buffer,
/// offset and length aligned to it satisfy `O_DIRECT` everywhere.
pub const BLOCK_BYTES: usize = 4096;

/// Submission queue entries. Why 8: one append needs at most three (a write, an `fdatasync`
/// when not `O_DSYNC`, and after a rotation the directory's `fsync`), and a WAL keeps at most
/// two in flight.
const RING_ENTRIES: u32 = 8;

/// A zero-initialised byte buffer whose start is aligned to [`BLOCK_BYTES`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation outright, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer; allocates on first growth.
    pub fn new() -> AlignedBuf {
        AlignedBuf {
            ptr: NonNull::dangling(),
            len: 0,
            capacity: 0,
        }
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        if self.capacity == 0 {
            return &[];
        }
        // SAFETY: `ptr` is valid for `capacity >= len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes written so far, to patch in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.capacity == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the buffer, keeping its allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the length to `len`, growing the allocation when needed. Bytes past the old length
    /// are whatever the allocation held (zeros when it was made, or earlier contents): for a
    /// buffer about to be filled by a read.
    pub fn set_len(&mut self, len: usize) {
        if len > self.len {
            self.reserve(len - self.len);
        }
        // Every byte below `capacity` is initialised: `reserve` allocates zeroed memory.
        self.len = len;
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: `reserve` made room for `bytes.len()` more bytes after `len`; a slice cannot
        // overlap this buffer's allocation, which nothing else borrows mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Appends zeros up to the next multiple of [`BLOCK_BYTES`].
    pub fn pad_to_block(&mut self) {
        let padded = self.len.next_multiple_of(BLOCK_BYTES);
        self.reserve(padded - self.len);
        // SAFETY: room was reserved above.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, padded - self.len) };
        self.len = padded;
    }

    /// Makes room for `additional` more bytes, so that appending them does not reallocate.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self
            .len
            .checked_add(additional)
            .expect("buffer size overflow");
        if needed <= self.capacity {
            return;
        }
        let capacity = needed
            .next_power_of_two()
            .max(BLOCK_BYTES)
            .next_multiple_of(BLOCK_BYTES);
        let layout = Layout::from_size_align(capacity, BLOCK_BYTES).expect("valid layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::handle_alloc_error(layout)
        };
        if self.capacity > 0 {
            // SAFETY: both allocations are valid for `len` bytes and distinct.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len) };
            self.free();
        }
        self.ptr = ptr;
        self.capacity = capacity;
    }

    fn free(&mut self) {
        let layout = Layout::from_size_align(self.capacity, BLOCK_BYTES).expect("valid layout");
        // SAFETY: allocated in `reserve` with this very layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Default for AlignedBuf {
    fn default() -> AlignedBuf {
        AlignedBuf::new()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.capacity > 0 {
            self.free();
        }
    }
}

/// Which step of a submitted write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The write of the buffer (with [`Sync::Dsync`]: and the flush that makes it durable).
    Write,
    /// The `fdatasync` linked after it.
    Fdatasync,
    /// The `fsync` of the directory linked ahead of the write.
    DirectoryFsync,
}

/// One submission: (when `sync_dir_first`) `fsync` a directory, then write
/// `buf[..write_bytes]` at `offset` of `fd`, durably as `sync` says, all linked: each step
/// runs only after the one before it succeeded.
pub struct WriteRequest {
    /// The file, opened with `O_DIRECT`; it must stay open until the request completes.
    pub fd: RawFd,
    /// Where the write starts; a multiple of [`BLOCK_BYTES`].
    pub offset: u64,
    /// How many bytes of the buffer to write; a multiple of [`BLOCK_BYTES`].
    pub write_bytes: usize,
    /// How the write is made durable.
    pub sync: Sync,
    /// A directory to `fsync` ahead of the write, linked: the WAL's directory after a rotation
    /// renamed the segment's file into place, so that the name is durable before any data is
    /// written under it, without the submitting thread blocking on the directory's sync.
    pub sync_dir_first: Option<RawFd>,
}

/// How a write is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// The write is `O_DSYNC` (`RWF_DSYNC`): it completes once its data is durable, one request.
    Dsync,
    /// Link an `fdatasync(fd)` after the write.
    Fdatasync,
    /// Write only.
    None,
}

/// A submitted request, to pass to [`Ring::wait`] or [`Ring::poll`].
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "a submitted request must be waited for"]
pub struct Ticket(u64);

/// A completed request: its buffer back, and how it went.
pub struct Completion {
    /// The buffer that was written, returned for reuse.
    pub buf: AlignedBuf,
    /// `Ok` when the write (and its sync, if any) completed in full.
    pub result: Result<(), (Step, io::Error)>,
}

struct InFlight {
    buf: AlignedBuf,
    write_bytes: usize,
    sync: Sync,
    sync_dir: bool,
    write_result: Option<i32>,
    sync_result: Option<i32>,
    dir_result: Option<i32>,
}

impl InFlight {
    fn done(&self) -> bool {
        self.write_result.is_some()
            && (self.sync != Sync::Fdatasync || self.sync_result.is_some())
            && (!self.sync_dir || self.dir_result.is_some())
    }

    fn outcome(&self) -> Result<(), (Step, io::Error)> {
        // A failed step cancels the linked steps after it (-ECANCELED): report the first.
        if let Some(synced) = self.dir_result.filter(|&r| r < 0) {
            return Err((Step::DirectoryFsync, io::Error::from_raw_os_error(-synced)));
        }
        let written = self.write_result.expect("done");
        if written < 0 {
            return Err((Step::Write, io::Error::from_raw_os_error(-written)));
        }
        if written as usize != self.write_bytes {
            let message = format!("short write: {written} of {} bytes", self.write_bytes);
            return Err((
                Step::Write,
                io::Error::new(io::ErrorKind::WriteZero, message),
            ));
        }
        match self.sync_result {
            Some(synced) if synced < 0 => {
                Err((Step::Fdatasync, io::Error::from_raw_os_error(-synced)))
            }
            _ => Ok(()),
        }
    }
}

/// An io_uring for one WAL; see the module docs.
pub struct Ring {
    ring: IoUring,
    next_ticket: u64,
    in_flight: HashMap<u64, InFlight>,
}

/// A completion's `user_data`: the ticket shifted left by [`OP_BITS`], and which step.
const OP_BITS: u32 = 2;
const OP_MASK: u64 = (1 << OP_BITS) - 1;
const OP_WRITE: u64 = 0;
const OP_SYNC: u64 = 1;
const OP_DIR_SYNC: u64 = 2;

impl Ring {
    /// A new ring.
    pub fn new() -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(RING_ENTRIES)?,
            next_ticket: 0,
            in_flight: HashMap::new(),
        })
    }

    /// A new ring that keeps a reference to `fd`'s open file (as a registered file) until the
    /// kernel has torn the ring down, after its last request completed, even when the process
    /// was killed. The WAL passes its lock file: a killed process's writes can still be in
    /// flight after it was reaped, and a successor that waits for the lock cannot read (or
    /// write) the log before they have landed.
    pub fn holding(fd: RawFd) -> io::Result<Ring> {
        let ring = Ring::new()?;
        ring.ring.submitter().register_files(&[fd])?;
        Ok(ring)
    }

    /// Makes the kernel signal the eventfd `fd` (add one to it) for every completion this ring
    /// posts, so an event loop can wait for the eventfd and then [`Ring::poll`] without
    /// blocking. The caller keeps `fd` open while the ring lives.
    pub fn register_eventfd(&self, fd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)
    }

    /// Submits `request` over `buf` without waiting for it. The ring keeps `buf` until the
    /// request completes. On a submission error nothing was submitted and `buf` comes back.
    pub fn begin(
        &mut self,
        request: WriteRequest,
        buf: AlignedBuf,
    ) -> Result<Ticket, (AlignedBuf, io::Error)> {
        assert_eq!(request.offset % BLOCK_BYTES as u64, 0, "unaligned offset");
        assert_eq!(request.write_bytes % BLOCK_BYTES, 0, "unaligned length");
        assert!(request.write_bytes <= buf.len(), "write past the buffer");
        let Ok(write_len) = u32::try_from(request.write_bytes) else {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "write over 4 GiB");
            return Err((buf, error));
        };
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let fd = types::Fd(request.fd);
        let mut entries = Vec::with_capacity(3);
        if let Some(dir) = request.sync_dir_first {
            let sync_dir = opcode::Fsync::new(types::Fd(dir))
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(ticket << OP_BITS | OP_DIR_SYNC);
            entries.push(sync_dir);
        }
        let rw_flags = if request.sync == Sync::Dsync {
            libc::RWF_DSYNC
        } else {
            0
        };
        let mut write = opcode::Write::new(fd, buf.as_slice().as_ptr(), write_len)
            .offset(request.offset)
            .rw_flags(rw_flags)
            .build()
            .user_data(ticket << OP_BITS | OP_WRITE);
        if request.sync == Sync::Fdatasync {
            write = write.flags(squeue::Flags::IO_LINK);
        }
        entries.push(write);
        if request.sync == Sync::Fdatasync {
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(ticket << OP_BITS | OP_SYNC);
            entries.push(sync);
        }
        // SAFETY: the buffer the write reads is moved into `in_flight` below and stays there,
        // unmoved in memory (its heap allocation does not move with the struct), until both
        // completions are reaped; `Drop` waits for them. The caller keeps `fd` open.
        let pushed = unsafe { self.ring.submission().push_multiple(&entries) };
        if pushed.is_err() {
            let error = io::Error::new(io::ErrorKind::WouldBlock, "io_uring submission queue full");
            return Err((buf, error));
        }
        self.in_flight.insert(
            ticket,
            InFlight {
                buf,
                write_bytes: request.write_bytes,
                sync: request.sync,
                sync_dir: request.sync_dir_first.is_some(),
                write_result: None,
                sync_result: None,
                dir_result: None,
            },
        );
        // A failed enter (EAGAIN, EBUSY, EINTR) leaves the entries queued: `wait` enters again
        // and submits them, so the request still completes and reports its own result.
        let _ = self.ring.submit();
        Ok(Ticket(ticket))
    }

    /// The buffer of a request still in flight, to read: the kernel only reads it too. `None`
    /// once the request has been completed and its buffer handed back.
    pub fn buffer(&self, ticket: &Ticket) -> Option<&AlignedBuf> {
        self.in_flight.get(&ticket.0).map(|f| &f.buf)
    }

    /// The request's completion if it has completed, without blocking.
    pub fn poll(&mut self, ticket: &Ticket) -> Option<Completion> {
        self.reap();
        self.take_if_done(ticket)
    }

    /// Blocks until the request completes.
    pub fn wait(&mut self, ticket: Ticket) -> Completion {
        loop {
            if let Some(completion) = self.poll(&ticket) {
                return completion;
            }
            self.enter_and_wait();
        }
    }

    fn take_if_done(&mut self, ticket: &Ticket) -> Option<Completion> {
        if !self.in_flight.get(&ticket.0)?.done() {
            return None;
        }
        let in_flight = self.in_flight.remove(&ticket.0).expect("present");
        let result = in_flight.outcome();
        Some(Completion {
            buf: in_flight.buf,
            result,
        })
    }

    fn enter_and_wait(&mut self) {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // EBUSY: the completion queue is full, and reaping (the next poll) makes room;
            // EAGAIN: the kernel was short of memory for a moment.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {}
            Err(error) => panic!("io_uring_enter failed with requests in flight: {error}"),
        }
    }

    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            let ticket = cqe.user_data() >> OP_BITS;
            let Some(in_flight) = self.in_flight.get_mut(&ticket) else {
                continue;
            };
            let result = Some(cqe.result());
            match cqe.user_data() & OP_MASK {
                OP_WRITE => in_flight.write_result = result,
                OP_SYNC => in_flight.sync_result = result,
                _ => in_flight.dir_result = result,
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The kernel may still read in-flight buffers: keep them until it is done.
        while self.in_flight.values().any(|f| !f.done()) {
            self.reap();
            if self.in_flight.values().all(|f| f.done()) {
                break;
            }
            self.enter_and_wait();
        }
        // Nothing is in flight: drop the registered file (the WAL's lock) now, synchronously,
        // rather than when the kernel's deferred teardown of the ring gets to it, so that a
        // `Wal` opened right after this one was dropped does not wait for the lock.
        let _ = self.ring.submitter().unregister_files();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    /// Aligned buffers start on a block boundary, grow keeping their bytes, and pad with zeros.
    #[test]
    fn aligned_buffers() {
        let mut buf = AlignedBuf::new();
        assert!(buf.is_empty());
        buf.extend_from_slice(b"abc");
        buf.pad_to_block();
        assert_eq!(buf.len(), BLOCK_BYTES);
        assert_eq!(buf.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
        buf.extend_from_slice(&[7u8; 3 * BLOCK_BYTES]);
        assert_eq!(&buf.as_slice()[..4], b"abc\0");
        assert_eq!(buf.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
        buf.clear();
        buf.extend_from_slice(b"x");
        assert_eq!(buf.as_slice(), b"x");
    }

    /// A new, empty file at `path` opened with `O_DIRECT`, for the ring's writes.
    fn create_direct_file(path: &std::path::Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .unwrap()
    }

    /// A fresh directory under the temp dir named for `name` and this process, its file `data`
    /// opened with `O_DIRECT`, and the directory opened (for a directory fsync).
    fn dir_with_direct_file(
        name: &str,
    ) -> (
        std::path::PathBuf,
        std::path::PathBuf,
        std::fs::File,
        std::fs::File,
    ) {
        let dir =
            std::env::temp_dir().join(format!("shardcore-uring-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        let file = create_direct_file(&path);
        let dir_file = std::fs::File::open(&dir).unwrap();
        (dir, path, file, dir_file)
    }

    /// One block holding `text`, zero-padded, and a request writing it at `offset` of `fd`
    /// with a linked fdatasync (after `sync_dir_first`, when given).
    fn one_block(
        fd: RawFd,
        offset: u64,
        text: &[u8],
        sync_dir_first: Option<RawFd>,
    ) -> (WriteRequest, AlignedBuf) {
        one_block_synced(fd, offset, text, sync_dir_first, Sync::Fdatasync)
    }

    /// [`one_block`], made durable as `sync` says.
    fn one_block_synced(
        fd: RawFd,
        offset: u64,
        text: &[u8],
        sync_dir_first: Option<RawFd>,
        sync: Sync,
    ) -> (WriteRequest, AlignedBuf) {
        let mut buf = AlignedBuf::new();
        buf.extend_from_slice(text);
        buf.pad_to_block();
        let request = WriteRequest {
            fd,
            offset,
            write_bytes: BLOCK_BYTES,
            sync,
            sync_dir_first,
        };
        (request, buf)
    }

    /// A linked write and fdatasync on an O_DIRECT file lands the bytes; begin and wait are
    /// separate, and poll does not block.
    #[test]
    fn write_then_fdatasync_through_the_ring() {
        let path = std::env::temp_dir().join(format!("shardcore-uring-{}", std::process::id()));
        let file = create_direct_file(&path);
        let mut ring = Ring::new().unwrap();
        let (request, buf) = one_block(file.as_raw_fd(), BLOCK_BYTES as u64, b"hello ring", None);
        let ticket = ring.begin(request, buf).map_err(|(_, e)| e).unwrap();
        let completion = match ring.poll(&ticket) {
            Some(completion) => completion,
            None => ring.wait(ticket),
        };
        completion.result.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len(), 2 * BLOCK_BYTES);
        assert_eq!(&bytes[BLOCK_BYTES..BLOCK_BYTES + 10], b"hello ring");
    }

    /// An `O_DSYNC` write is one request: it lands the bytes, alone and after a directory
    /// fsync, and its completion is the whole request's.
    #[test]
    fn a_dsync_write_lands_the_bytes() {
        let (dir, path, file, dir_file) = dir_with_direct_file("dsync");
        let mut ring = Ring::new().unwrap();
        for (offset, text, dir_fd) in [
            (0, &b"first dsync"[..], None),
            (
                BLOCK_BYTES as u64,
                &b"second, after the directory"[..],
                Some(dir_file.as_raw_fd()),
            ),
        ] {
            let (request, buf) =
                one_block_synced(file.as_raw_fd(), offset, text, dir_fd, Sync::Dsync);
            let ticket = ring.begin(request, buf).map_err(|(_, e)| e).unwrap();
            let completion = ring.wait(ticket);
            completion.result.unwrap();
            assert_eq!(completion.buf.len(), BLOCK_BYTES);
        }
        assert!(ring.in_flight.is_empty());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&bytes[..11], b"first dsync");
        assert_eq!(
            &bytes[BLOCK_BYTES..BLOCK_BYTES + 27],
            b"second, after the directory"
        );
    }

    /// A registered eventfd is signalled for the completions: after a write and its
    /// fdatasync complete, the counter is 1 or 2 (the kernel signals once per flush of
    /// completions, which may carry both).
    #[test]
    fn a_registered_eventfd_counts_completions() {
        let path = std::env::temp_dir().join(format!("shardcore-uring-efd-{}", std::process::id()));
        let file = create_direct_file(&path);
        let mut ring = Ring::new().unwrap();
        // SAFETY: plain syscalls on descriptors this test owns; results checked.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(efd >= 0);
        ring.register_eventfd(efd).unwrap();
        let (request, buf) = one_block(file.as_raw_fd(), 0, b"counted", None);
        let ticket = ring.begin(request, buf).map_err(|(_, e)| e).unwrap();
        ring.wait(ticket).result.unwrap();
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a live local buffer.
        let read = unsafe { libc::read(efd, count.as_mut_ptr().cast(), 8) };
        assert_eq!(read, 8);
        let count = u64::from_ne_bytes(count);
        assert!((1..=2).contains(&count), "{count}");
        drop(ring);
        // SAFETY: closes the descriptor opened above, once.
        unsafe { libc::close(efd) };
        std::fs::remove_file(&path).unwrap();
    }

    /// A directory fsync linked ahead of the write: when it succeeds the write and sync
    /// follow; when it fails the write is cancelled and the failure names the directory step.
    #[test]
    fn a_directory_fsync_goes_first_and_its_failure_cancels_the_write() {
        let (dir, path, file, dir_file) = dir_with_direct_file("dir");
        let mut ring = Ring::new().unwrap();
        let write = |ring: &mut Ring, dir_fd: RawFd, text: &[u8]| {
            let (request, buf) = one_block(file.as_raw_fd(), 0, text, Some(dir_fd));
            let ticket = ring.begin(request, buf).map_err(|(_, e)| e).unwrap();
            ring.wait(ticket).result
        };
        write(&mut ring, dir_file.as_raw_fd(), b"first").unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..5], b"first");
        // A descriptor that is not open: the directory step fails, the write never runs.
        let (step, _) = write(&mut ring, 1 << 20, b"second").unwrap_err();
        assert_eq!(step, Step::DirectoryFsync);
        assert_eq!(&std::fs::read(&path).unwrap()[..5], b"first");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
