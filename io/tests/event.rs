//! The event counter: a core asleep in `wait` wakes when a plain thread adds to it (as the
//! WAL's io_uring does for every completion); adds made before the wait are all counted by one
//! wait; a wait with nothing added does not complete.

mod support;

use std::thread;
use std::time::Duration;

use shardcore_io::{timeout, EventCounter};
use support::run_cores;

/// The core waits with nothing else to do (its executor sleeps in io_uring); a thread adds 3
/// then 4, 50 ms apart. The first wait sees 3 (or 7, if both adds came first), and the waits
/// together see 7. A lost wake-up leaves the core asleep until the 10 s bound fails the test.
#[test]
fn a_plain_thread_wakes_a_core_waiting_on_the_counter() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let counter = EventCounter::new().expect("eventfd");
        let fd = counter.raw_fd();
        let thread = thread::spawn(move || {
            for n in [3u64, 4] {
                thread::sleep(Duration::from_millis(50));
                let bytes = n.to_ne_bytes();
                // SAFETY: writes 8 bytes from a live buffer to the counter's open descriptor.
                let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), 8) };
                assert_eq!(written, 8);
            }
        });
        let mut seen = Vec::new();
        while seen.iter().sum::<u64>() < 7 {
            match timeout(Duration::from_secs(10), counter.wait()).await {
                Ok(Ok(n)) => seen.push(n),
                other => panic!("waiting for the counter: {other:?}"),
            }
        }
        thread.join().expect("adder");
        seen
    });
    let seen = &results[0];
    assert_eq!(seen.iter().sum::<u64>(), 7, "{seen:?}");
    assert!(seen[0] == 3 || seen[0] == 7, "{seen:?}");
}

/// Adds made before a wait are reported together and reset the counter: the next wait has
/// nothing to report and does not complete.
#[test]
fn adds_before_a_wait_are_counted_together_and_reset() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let counter = EventCounter::new().expect("eventfd");
        counter.add(1).expect("add");
        counter.add(2).expect("add");
        let first = timeout(Duration::from_secs(10), counter.wait()).await;
        let second = timeout(Duration::from_millis(100), counter.wait()).await;
        (first.map(|r| r.ok()), second.is_err())
    });
    assert_eq!(results[0], (Ok(Some(3)), true));
}
