//! Graceful shutdown: a real SIGTERM sent to this process wakes every core waiting in
//! `shutdown_signal`, and the process lives on. A test binary of its own, because the handler
//! and the flag are process-wide.

mod support;

use std::time::Duration;

use shardcore_io::{
    install_shutdown_handler, shutdown_reason, shutdown_requested, shutdown_signal, Core,
    ShutdownReason,
};
use support::run_cores;

/// Two cores wait for shutdown (idle, so asleep in io_uring); a plain thread sends SIGTERM to
/// the process 50 ms later; both cores wake with the reason.
#[test]
fn sigterm_wakes_every_core() {
    install_shutdown_handler().unwrap();
    install_shutdown_handler().expect("installing twice is harmless");
    assert!(!shutdown_requested());
    let signaller = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: kill with this process's own id and a signal whose handler is installed.
        let sent = unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        assert_eq!(sent, 0);
    });
    let results = run_cores(
        2,
        4,
        |_core: Core<()>| async move { shutdown_signal().await },
    );
    signaller.join().unwrap();
    let expected = ShutdownReason::Signal(libc::SIGTERM);
    assert_eq!(results, vec![expected, expected]);
    assert_eq!(shutdown_reason(), Some(expected));
}
