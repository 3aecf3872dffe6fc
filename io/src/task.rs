//! Tasks on a core: [`spawn`] a future onto the current core's executor, [`yield_now`] to let the
//! core's other tasks run.
//!
//! A task runs on the core that spawned it and never moves, so its future need not be `Send`
//! and may hold `Rc`s and `RefCell`s of the core's state. Every function here must be called on
//! a core (inside the future given to [`crate::run`] or a task it spawned); outside one they
//! panic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A spawned task. Awaiting it gives the task's output. Dropping it **cancels** the task (it is
/// dropped at its next await point); call [`Task::detach`] to let it run on by itself.
#[must_use = "dropping a Task cancels it; call detach() to let it run"]
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    /// Lets the task run to completion in the background; its output is dropped. A detached
    /// task still ends when its core's executor stops.
    pub fn detach(self) {
        // glommio hands back a join handle that would only tell whether the task completed;
        // nothing here needs it.
        drop(self.0.detach());
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Starts `future` as a task on the current core. It runs **at once**, inside this call, up to
/// its first pending await (glommio runs a new task right away); the caller continues after
/// that. For work that should see what the running task and the tasks already woken will
/// still do in this turn, use [`spawn_queued`].
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    Task(glommio::spawn_local(future))
}

/// Starts `future` as a task behind the core's ready tasks: it first runs after the running
/// task yields and every task already queued has had its turn. The batching pattern: the
/// first of many callers in a turn spawns one task that then sends what all of them queued.
pub fn spawn_queued<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    let queue = glommio::executor().current_task_queue();
    // Spawning into a queue (even the running one) schedules the task rather than running it;
    // the queue exists, since a task of it is running this.
    Task(glommio::spawn_local_into(future, queue).expect("the running task's queue exists"))
}

/// Lets every other ready task on this core run once before this one continues.
pub async fn yield_now() {
    futures_lite::future::yield_now().await;
}

/// Lets another thread that is runnable on this CPU run first (`sched_yield`), then
/// continues; returns at once when none is. For work that can wait behind another process's
/// latency-critical step on a shared CPU (a follower about to apply while the other follower
/// on its CPU has an acknowledgement to send). Not an executor yield: no other task of this
/// core runs meanwhile.
pub fn yield_cpu() {
    // SAFETY: sched_yield has no preconditions and touches no memory of ours.
    unsafe {
        libc::sched_yield();
    }
}
