//! The errors the runtime returns: [`IoError`] when the runtime cannot start or a core failed,
//! and the channel errors shared by the mesh and the bridge, which hand the unsent message back.
//!
//! Socket and frame errors live with what returns them (`std::io::Error` for sockets,
//! [`crate::framed::FrameError`] for framing).

use std::fmt;

use crate::placement::CoreId;

/// Why [`crate::run`] failed. Each says what to do about it.
#[derive(Debug)]
pub enum IoError {
    /// The configuration is out of bounds.
    Config {
        /// What is wrong, as a sentence.
        reason: String,
    },
    /// The locked-memory limit is below what the executor needs for its io_uring, and this
    /// process may not raise it.
    MemlockTooLow {
        /// The soft `RLIMIT_MEMLOCK`, in bytes, after trying to raise it.
        soft_bytes: u64,
        /// The hard limit, in bytes.
        hard_bytes: u64,
        /// What the executor needs at least, in bytes.
        required_bytes: u64,
    },
    /// A core's executor could not be created (io_uring refused, a CPU that does not exist, a
    /// thread that could not be spawned). No core ran the caller's function.
    Start {
        /// The core that failed.
        core: CoreId,
        /// What the executor or the kernel said, with a hint where one is known.
        reason: String,
    },
    /// A core panicked; the other cores were told through the mesh (their `recv` ends, their
    /// sends fail) and their results are discarded.
    CorePanicked {
        /// The first core that panicked.
        core: CoreId,
        /// The panic message, when it was a string.
        message: String,
    },
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::Config { reason } => write!(f, "runtime configuration: {reason}"),
            IoError::MemlockTooLow {
                soft_bytes,
                hard_bytes,
                required_bytes,
            } => write!(
                f,
                "the locked-memory limit (RLIMIT_MEMLOCK: soft {soft_bytes} B, hard \
                 {hard_bytes} B) is below the {required_bytes} B each io_uring executor needs, \
                 and this process may not raise it. Raise it for the service: `ulimit -l \
                 unlimited` in the starting shell (as root), `LimitMEMLOCK=infinity` in a \
                 systemd unit, `--ulimit memlock=-1` for docker, or a `memlock` line in \
                 /etc/security/limits.conf"
            ),
            IoError::Start { core, reason } => {
                write!(f, "core {}: the executor could not start: {reason}", core.0)
            }
            IoError::CorePanicked { core, message } => {
                write!(f, "core {} panicked: {message}", core.0)
            }
        }
    }
}

impl std::error::Error for IoError {}

/// A send that could not complete: the receiving side is gone (or the runtime is failing). The
/// message comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// A `try_send` that could not complete now, with the message handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue is full: wait (`send().await`) or drop the message.
    Full(T),
    /// The receiving side is gone; no send will ever succeed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(message) | TrySendError::Closed(message) => message,
        }
    }
}

/// A `try_recv` that found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now; more may come.
    Empty,
    /// Nothing queued and every sender is gone: nothing more will come.
    Closed,
}

// Debug without requiring `T: Debug`, so that `unwrap()` works on any message type.
impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the receiving side is gone")
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the queue is full"),
            TrySendError::Closed(_) => f.write_str("the receiving side is gone"),
        }
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("nothing queued"),
            TryRecvError::Closed => f.write_str("nothing queued and every sender is gone"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}
impl<T> std::error::Error for TrySendError<T> {}
impl std::error::Error for TryRecvError {}
