//! When a spawned task first runs: `spawn` runs it at once, `spawn_queued` behind the ready tasks.

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use shardcore_io::{spawn, spawn_queued, yield_now, Core};
use support::run_cores;

/// `spawn` runs the new task up to its first await before returning; `spawn_queued` runs it
/// only after the spawner yields, behind the tasks that were ready before it.
#[test]
fn spawn_runs_at_once_and_spawn_queued_runs_behind_ready_tasks() {
    let orders = run_cores(1, 8, |_: Core<()>| async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let log = |what: &'static str| {
            let order = order.clone();
            move || order.borrow_mut().push(what)
        };
        let queued = spawn_queued({
            let done = log("queued");
            async move { done() }
        });
        let ready = spawn({
            let (before, after) = (log("spawned: first part"), log("spawned: after yield"));
            async move {
                before();
                yield_now().await;
                after();
            }
        });
        order.borrow_mut().push("spawner");
        yield_now().await;
        ready.await;
        queued.await;
        order.take()
    });
    assert_eq!(
        orders,
        vec![vec![
            "spawned: first part",
            "spawner",
            "queued",
            "spawned: after yield"
        ]]
    );
}
