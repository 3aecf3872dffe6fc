//! The mesh between cores: round trips on two cores and on one (a core sending to itself),
//! backpressure (a full queue makes `send` wait; nothing is lost; order per pair is kept), the
//! end of the mesh, failures, and more cores than CPUs.

mod support;

use std::time::Duration;

use shardcore_io::{run, sleep, CoreId, IoError, Pinning, RuntimeConfig, TrySendError};
use support::run_cores;

/// Core 0 sends a number, core 1 answers with the next; 1,000 round trips arrive intact and in
/// order, each tagged with the core it came from.
#[test]
fn ping_pong_across_two_cores() {
    const ROUNDS: u64 = 1000;
    let results = run_cores(2, 8, |core| async move {
        let inbox = core.take_receiver().expect("first take");
        assert!(core.take_receiver().is_none(), "the receiver is taken once");
        let peer = CoreId(1 - core.id().0);
        for round in 0..ROUNDS {
            if core.id() == CoreId(0) {
                core.send(peer, 2 * round).await.unwrap();
                let (from, answer) = inbox.recv().await.unwrap();
                assert_eq!((from, answer), (peer, 2 * round + 1));
            } else {
                let (from, ping) = inbox.recv().await.unwrap();
                assert_eq!((from, ping), (peer, 2 * round));
                core.send(from, ping + 1).await.unwrap();
            }
        }
        (core.id(), core.count())
    });
    assert_eq!(results, vec![(CoreId(0), 2), (CoreId(1), 2)]);
}

/// With one core, the mesh still works: a core sends to itself and receives its own messages,
/// marked as coming from itself; its receiver ends once its own handles are dropped.
#[test]
fn ping_pong_on_one_core_sends_to_itself() {
    let results = run_cores(1, 4, |core| async move {
        let inbox = core.take_receiver().unwrap();
        for round in 0..1000u32 {
            core.send(core.id(), round).await.unwrap();
            assert_eq!(inbox.recv().await, Some((CoreId(0), round)));
        }
        // Up to the capacity fits without a receiver draining; one more is refused now.
        for round in 0..4u32 {
            core.try_send(CoreId(0), round).unwrap();
        }
        assert!(matches!(
            core.try_send(CoreId(0), 99),
            Err(TrySendError::Full(99))
        ));
        let drained = (0..4)
            .map(|_| inbox.try_recv().unwrap().1)
            .collect::<Vec<_>>();
        // Alone, a core is its own only sender: its receiver ends once its handles are gone.
        assert_eq!(inbox.try_recv(), Err(shardcore_io::TryRecvError::Empty));
        drop(core);
        assert_eq!(inbox.recv().await, None);
        drained
    });
    assert_eq!(results, vec![vec![0, 1, 2, 3]]);
}

/// Core 1 sleeps before receiving, so core 0 fills the 4-slot queue and its next `send` has to
/// wait; then 2,000 messages all arrive in the order they were sent.
#[test]
fn full_queue_makes_send_wait_without_loss_or_reordering() {
    const MESSAGES: u64 = 2000;
    const CAPACITY: usize = 4;
    let results = run_cores(2, CAPACITY, |core| async move {
        let inbox = core.take_receiver().unwrap();
        if core.id() == CoreId(0) {
            // Fill the queue while core 1 sleeps: exactly CAPACITY fit.
            let mut sent = 0;
            while core.try_send(CoreId(1), sent).is_ok() {
                sent += 1;
            }
            assert_eq!(sent, CAPACITY as u64, "the queue holds its capacity");
            // The rest wait for room as core 1 drains.
            for message in sent..MESSAGES {
                core.send(CoreId(1), message).await.unwrap();
            }
            // Wait for core 1's word that all arrived before ending (and closing its queue).
            inbox.recv().await.unwrap();
            MESSAGES
        } else {
            sleep(Duration::from_millis(50)).await;
            let mut received = 0;
            while received < MESSAGES {
                let (from, message) = inbox.recv().await.unwrap();
                assert_eq!(
                    (from, message),
                    (CoreId(0), received),
                    "FIFO per pair, nothing lost"
                );
                received += 1;
            }
            core.send(CoreId(0), 0).await.unwrap();
            received
        }
    });
    assert_eq!(results, vec![MESSAGES, MESSAGES]);
}

/// `recv` returns `None` once every other core has dropped its handles and the queue is
/// drained: the messages sent before core 1 finished still arrive first, and core 0's own
/// handle (which a receive-and-reply loop holds) does not keep it waiting.
#[test]
fn recv_ends_when_the_other_cores_are_done() {
    let results = run_cores(2, 8, |core| async move {
        let inbox = core.take_receiver().unwrap();
        if core.id() == CoreId(1) {
            for message in 0..3u8 {
                core.send(CoreId(0), message).await.unwrap();
            }
            return Vec::new();
        }
        let mut received = Vec::new();
        while let Some((_, message)) = inbox.recv().await {
            received.push(message);
        }
        received
    });
    assert_eq!(results[0], vec![0, 1, 2]);
}

/// A send to a core whose receiver is gone fails and hands the message back.
#[test]
fn send_to_a_closed_inbox_fails() {
    let results = run_cores(2, 8, |core| async move {
        let inbox = core.take_receiver().unwrap();
        if core.id() == CoreId(1) {
            drop(inbox);
            core.send(CoreId(0), "closed").await.unwrap();
            return None;
        }
        assert_eq!(inbox.recv().await, Some((CoreId(1), "closed")));
        let refused = core.try_send(CoreId(1), "late");
        assert!(matches!(refused, Err(TrySendError::Closed("late"))));
        Some(core.send(CoreId(1), "later").await.unwrap_err().0)
    });
    assert_eq!(results[0], Some("later"));
}

/// A core that panics is reported by `run`, and the other core, waiting in `recv`, is released
/// (its `recv` returns `None`) instead of waiting forever.
#[test]
fn a_panicking_core_is_reported_and_releases_the_others() {
    let cfg = RuntimeConfig {
        cores: 2,
        pinning: Pinning::Unpinned,
        name: "io-test-panic".to_string(),
        mesh_capacity: 8,
        ..RuntimeConfig::default()
    };
    let outcome = run(cfg, |core| async move {
        let inbox = core.take_receiver().unwrap();
        if core.id() == CoreId(1) {
            sleep(Duration::from_millis(20)).await;
            panic!("core one gives up");
        }
        assert_eq!(inbox.recv().await, None::<(CoreId, ())>);
    });
    match outcome {
        Err(IoError::CorePanicked { core, message }) => {
            assert_eq!(core, CoreId(1));
            assert!(message.contains("core one gives up"), "{message}");
        }
        other => panic!("expected a panic report, got {other:?}"),
    }
}

/// More cores than CPUs still runs (unpinned, even when pinning was asked for), and every core
/// hears from every other one.
#[test]
fn more_cores_than_cpus_runs_unpinned() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = cpus + 2;
    let cfg = RuntimeConfig {
        cores,
        pinning: Pinning::Pinned,
        name: "io-test-many".to_string(),
        mesh_capacity: 8,
        ..RuntimeConfig::default()
    };
    let results = run(cfg, |core| async move {
        let inbox = core.take_receiver().unwrap();
        for to in 0..core.count() {
            core.send(CoreId(to), core.id().0).await.unwrap();
        }
        let mut heard = vec![false; core.count()];
        for _ in 0..core.count() {
            let (from, said) = inbox.recv().await.unwrap();
            assert_eq!(from.0, said);
            heard[from.0] = true;
        }
        (core.cpu(), heard.iter().all(|h| *h))
    })
    .unwrap();
    assert_eq!(results, vec![(None, true); cores]);
}
