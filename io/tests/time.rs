//! Tasks and time on a core: the ticker's cadence (counted loosely: lower bounds only, which a
//! loaded machine cannot break), timeouts both ways, and spawned tasks with yield and detach.

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardcore_io::{sleep, spawn, timeout, yield_now, Core, Ticker};
use support::run_cores;

/// Five ticks of 10 ms: each reports at least one period and the five take at least 50 ms
/// (deadlines are fixed, so they cannot come early). Then the core is blocked for 35 ms past a
/// deadline, and the next tick reports the periods it missed (at least 3) instead of drifting.
#[test]
fn ticker_ticks_on_fixed_deadlines() {
    let results = run_cores(1, 4, |_core: Core<()>| async move {
        let period = Duration::from_millis(10);
        let started = Instant::now();
        let mut ticker = Ticker::new(period);
        let mut periods = Vec::new();
        for _ in 0..5 {
            periods.push(ticker.tick().await);
        }
        let five_ticks = started.elapsed();
        // Block the whole core (as a long computation would).
        std::thread::sleep(Duration::from_millis(35));
        let after_stall = ticker.tick().await;
        (periods, five_ticks, after_stall)
    });
    let (periods, five_ticks, after_stall) = &results[0];
    assert!(periods.iter().all(|p| *p >= 1), "{periods:?}");
    assert!(*five_ticks >= Duration::from_millis(50), "{five_ticks:?}");
    assert!(
        *after_stall >= 3,
        "{after_stall} periods after a 35 ms stall"
    );
    println!("ticks: {periods:?} in {five_ticks:?}; after a 35 ms stall: {after_stall}");
}

/// `take_due` counts the periods that fell due without waiting (0 before a deadline, at least 3
/// after a 350 ms stall of 100 ms periods) and takes them: the next deadline is then later than
/// the moment it was asked, so the same periods are never counted twice; `tick` counts only
/// later ones. (The stall is the thing under test, not a wait for a condition.)
#[test]
fn take_due_delivers_what_fell_due_without_waiting() {
    let results = run_cores(1, 4, |_core: Core<()>| async move {
        let mut ticker = Ticker::new(Duration::from_secs(3600));
        let before_any = ticker.take_due();
        let mut ticker = Ticker::new(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(350));
        let asked = Instant::now();
        let after_stall = ticker.take_due();
        let next_after_asked = ticker.next_deadline() > asked;
        let next = ticker.tick().await;
        (before_any, after_stall, next_after_asked, next)
    });
    let (before_any, after_stall, next_after_asked, next) = results[0];
    assert_eq!(before_any, 0, "nothing is due before the first deadline");
    assert!(
        after_stall >= 3,
        "{after_stall} periods after a 350 ms stall"
    );
    assert!(next_after_asked, "taken periods are not counted twice");
    assert!(next >= 1);
}

/// A future slower than its timeout is cut off with `Elapsed`; a fast one passes its output.
#[test]
fn timeout_cuts_off_the_slow_and_passes_the_fast() {
    let results = run_cores(1, 4, |_core: Core<()>| async move {
        let slow = timeout(Duration::from_millis(10), sleep(Duration::from_secs(60))).await;
        let fast = timeout(Duration::from_secs(60), async { 5 }).await;
        (slow.map_err(|e| e.after), fast)
    });
    assert_eq!(results[0], (Err(Duration::from_millis(10)), Ok(5)));
}

/// Spawned tasks run on the same core and share its `Rc` state; `yield_now` lets a ready task
/// run; a detached task keeps running; a dropped task is cancelled.
#[test]
fn tasks_share_the_core() {
    let results = run_cores(1, 4, |_core: Core<()>| async move {
        let counter = Rc::new(Cell::new(0u32));
        let c = counter.clone();
        spawn(async move { c.set(c.get() + 1) }).detach();
        yield_now().await;
        let after_yield = counter.get();
        let c = counter.clone();
        let cancelled = spawn(async move {
            sleep(Duration::from_millis(20)).await;
            c.set(c.get() + 100);
        });
        drop(cancelled);
        let c = counter.clone();
        let awaited = spawn(async move {
            c.set(c.get() + 10);
            7
        })
        .await;
        sleep(Duration::from_millis(40)).await;
        (after_yield, awaited, counter.get())
    });
    assert_eq!(results[0], (1, 7, 11));
}
