//! The bridge between cores and plain threads: a send from a plain thread wakes a core that is
//! asleep; a WAL-writer-shaped round trip (core -> thread -> core) with backpressure and a clean
//! end; and the closed states without any runtime.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use shardcore_io::bridge::channel;
use shardcore_io::{timeout, TryRecvError, TrySendError};
use support::run_cores;

/// The core has nothing to do but wait in `recv`, so its executor goes to sleep in io_uring; a
/// plain thread sends 50 ms later, and the core's task wakes with the item. A lost foreign
/// wakeup would leave it asleep until the 10 s timeout and fail the test.
#[test]
fn a_plain_thread_wakes_an_idle_core() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let (sender, receiver) = channel::<u64>(4);
        let started = Instant::now();
        let thread = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            sender.send_blocking(7).unwrap();
        });
        let received = timeout(Duration::from_secs(10), receiver.recv()).await;
        thread.join().unwrap();
        (received, started.elapsed())
    });
    let (received, waited) = &results[0];
    assert_eq!(*received, Ok(Some(7)));
    // Only a lower bound: the send happens 50 ms in, so the core cannot have had it earlier.
    assert!(*waited >= Duration::from_millis(50), "{waited:?}");
}

/// The node's WAL writer in miniature: the core sends 500 requests through a 4-slot bridge
/// (waiting whenever the thread is behind), the thread answers each through another, and the
/// core sees every answer in order; dropping the core's sender ends the thread, whose ending
/// ends the core's receive.
#[test]
fn core_to_thread_and_back_like_a_wal_writer() {
    const REQUESTS: u64 = 500;
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let (request_tx, request_rx) = channel::<u64>(4);
        let (done_tx, done_rx) = channel::<u64>(4);
        let writer = thread::spawn(move || {
            let mut handled = 0;
            while let Some(request) = request_rx.recv_blocking() {
                done_tx.send_blocking(request * 10).unwrap();
                handled += 1;
            }
            handled
        });
        let answers = shardcore_io::spawn(async move {
            let mut answers = Vec::new();
            while let Some(answer) = done_rx.recv().await {
                answers.push(answer);
            }
            answers
        });
        for request in 0..REQUESTS {
            request_tx.send(request).await.unwrap();
        }
        drop(request_tx);
        let answers = answers.await;
        (writer.join().unwrap(), answers)
    });
    let (handled, answers) = &results[0];
    assert_eq!(*handled, REQUESTS);
    assert_eq!(*answers, (0..REQUESTS).map(|r| r * 10).collect::<Vec<_>>());
}

/// Without any core: a full bridge refuses, a bridge whose senders are all gone reports closed
/// once drained, and sending to a dropped receiver hands the item back.
#[test]
fn closed_and_full_states() {
    let (sender, receiver) = channel::<&str>(1);
    let second = sender.clone();
    sender.try_send("a").unwrap();
    assert!(matches!(second.try_send("b"), Err(TrySendError::Full("b"))));
    drop(sender);
    assert_eq!(receiver.try_recv(), Ok("a"));
    assert_eq!(
        receiver.try_recv(),
        Err(TryRecvError::Empty),
        "one sender is left"
    );
    drop(second);
    assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(receiver.recv_blocking(), None);

    let (sender, receiver) = channel::<u8>(2);
    drop(receiver);
    assert_eq!(sender.send_blocking(5).unwrap_err().0, 5);
}

/// A plain thread blocked on a full bridge is released when a core makes room.
#[test]
fn a_core_unblocks_a_plain_thread_on_a_full_bridge() {
    let results = run_cores(1, 4, |_core: shardcore_io::Core<()>| async move {
        let (sender, receiver) = channel::<u32>(1);
        let producer = thread::spawn(move || {
            for item in 0..100 {
                sender.send_blocking(item).unwrap();
            }
        });
        let mut received = Vec::new();
        while let Some(item) = receiver.recv().await {
            received.push(item);
        }
        producer.join().unwrap();
        received
    });
    assert_eq!(results[0], (0..100).collect::<Vec<_>>());
}
