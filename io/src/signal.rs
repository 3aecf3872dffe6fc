//! Graceful shutdown: SIGTERM and SIGINT (ctrl-c) become a process-wide "shutdown requested"
//! that every core can await.
//!
//! [`install_shutdown_handler`] registers the handlers once and starts one plain thread,
//! `shardcore-signals`, that waits for them (`signal-hook`); on the first signal it sets the flag
//! and wakes every core waiting in [`shutdown_signal`] (a foreign wake, as in the bridge). A
//! second signal while shutdown is under way exits the process at once with status 128 + the
//! signal number, so a stuck shutdown can still be interrupted. [`request_shutdown`] takes the
//! same path without a signal (tests, an admin command).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

use event_listener::Event;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Why shutdown was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// A signal arrived: `SIGTERM` (15) or `SIGINT` (2).
    Signal(i32),
    /// [`request_shutdown`] was called.
    Requested,
}

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// The signal that requested shutdown, or 0 for [`request_shutdown`].
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static SHUTDOWN: Event = Event::new();
static HANDLER: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the SIGTERM / SIGINT handlers and starts the thread that waits for them. Safe to
/// call any number of times, from any thread; only the first call does anything. From then on
/// the signals no longer end the process at once: the node must watch [`shutdown_signal`].
pub fn install_shutdown_handler() -> io::Result<()> {
    let installed = HANDLER.get_or_init(|| {
        let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(|error| error.to_string())?;
        std::thread::Builder::new()
            .name("shardcore-signals".to_string())
            .spawn(move || {
                for signal in signals.forever() {
                    if shutdown_requested() {
                        eprintln!("signal {signal} during shutdown: exiting now");
                        std::process::exit(128 + signal);
                    }
                    request(signal);
                }
            })
            .map(drop)
            .map_err(|error| error.to_string())
    });
    installed
        .clone()
        .map_err(|reason| io::Error::other(format!("cannot install the signal handler: {reason}")))
}

fn request(signal: i32) {
    // The reason first, so whoever sees the flag sees why.
    SIGNAL.store(signal, Ordering::Relaxed);
    REQUESTED.store(true, Ordering::Release);
    SHUTDOWN.notify(usize::MAX);
}

/// Requests shutdown as a signal would.
pub fn request_shutdown() {
    request(0);
}

/// Whether shutdown has been requested.
pub fn shutdown_requested() -> bool {
    REQUESTED.load(Ordering::Acquire)
}

/// Why shutdown was requested, if it was.
pub fn shutdown_reason() -> Option<ShutdownReason> {
    if !shutdown_requested() {
        return None;
    }
    Some(match SIGNAL.load(Ordering::Relaxed) {
        0 => ShutdownReason::Requested,
        signal => ShutdownReason::Signal(signal),
    })
}

/// Waits until shutdown is requested (at once if it already was). Works on any core and in any
/// number of tasks. Call [`install_shutdown_handler`] first for signals to count.
pub async fn shutdown_signal() -> ShutdownReason {
    loop {
        if let Some(reason) = shutdown_reason() {
            return reason;
        }
        let requested = SHUTDOWN.listen();
        if let Some(reason) = shutdown_reason() {
            return reason;
        }
        requested.await;
    }
}
