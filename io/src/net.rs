//! TCP on a core: listeners every core can bind on the same port, connections with Nagle off,
//! and halves that let one task read while another writes.
//!
//! Every core binds the client port with `SO_REUSEPORT`, so the kernel spreads incoming
//! connections over the cores and no core hands connections to another. Listeners also set
//! `SO_REUSEADDR`, so a restarted node binds its port again at once even while connections of
//! its previous life sit in `TIME_WAIT`. Every stream has `TCP_NODELAY`: frames are small and
//! the writer coalesces them itself (see [`crate::framed`]), so the kernel must not wait for
//! more.
//!
//! Streams implement the `futures-io` `AsyncRead` / `AsyncWrite` traits (re-exported by
//! `futures_lite::io`); glommio issues the reads and writes and waits on its io_uring.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::limits::LISTEN_BACKLOG;
use crate::time::timeout;

/// A listening socket on one core.
pub struct TcpListener {
    inner: glommio::net::TcpListener,
}

impl TcpListener {
    /// Listens on `addr` with `SO_REUSEPORT` and `SO_REUSEADDR` (see the module docs). Port 0
    /// picks a free port; [`TcpListener::local_addr`] tells which.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        // SAFETY: the descriptor is a bound, listening TCP socket that nothing else owns: it
        // leaves `socket` here and is owned by the glommio listener from now on.
        let inner = unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
        Ok(TcpListener { inner })
    }

    /// The next incoming connection, with `TCP_NODELAY` set.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let stream = self.inner.accept().await?;
        TcpStream::new(stream)
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

/// A TCP connection on one core.
pub struct TcpStream {
    inner: glommio::net::TcpStream,
}

impl TcpStream {
    fn new(inner: glommio::net::TcpStream) -> io::Result<TcpStream> {
        inner.set_nodelay(true)?;
        Ok(TcpStream { inner })
    }

    /// Connects to `addr`, with `TCP_NODELAY` set.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = glommio::net::TcpStream::connect(addr).await?;
        TcpStream::new(stream)
    }

    /// Connects to `addr`, giving up with [`io::ErrorKind::TimedOut`] after `limit`.
    pub async fn connect_timeout(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
        match timeout(limit, TcpStream::connect(addr)).await {
            Ok(connected) => connected,
            Err(elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {addr}: {elapsed}"),
            )),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.peer_addr()?)
    }

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }

    /// Splits the stream so that one task can read while another writes. The connection closes
    /// when both halves are dropped; closing the write half (`close().await`) sends FIN.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let shared = Rc::new(RefCell::new(self.inner));
        (
            ReadHalf {
                stream: shared.clone(),
            },
            WriteHalf { stream: shared },
        )
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The reading half of a [`TcpStream`].
///
/// The halves share the stream through a `RefCell` borrowed only inside one `poll_*` call, never
/// across an await, so they never conflict; glommio keeps separate wait sources for reading and
/// writing, so a pending read and a pending write each wake their own task.
pub struct ReadHalf {
    stream: Rc<RefCell<glommio::net::TcpStream>>,
}

/// The writing half of a [`TcpStream`]. See [`ReadHalf`].
pub struct WriteHalf {
    stream: Rc<RefCell<glommio::net::TcpStream>>,
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_read(cx, buf)
    }
}

impl std::os::fd::AsRawFd for WriteHalf {
    /// The connection's socket, for a nonblocking write outside glommio while no write of
    /// this half is in flight (see the private `outbox` module's `send_now`).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.borrow().as_raw_fd()
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_close(cx)
    }
}
