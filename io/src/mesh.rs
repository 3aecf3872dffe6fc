//! The mesh: a bounded lock-free queue for every ordered pair of cores, including a core to
//! itself.
//!
//! Each queue is a `crossbeam` `ArrayQueue` (a bounded ring of slots, lock-free for any number of
//! producers and consumers); only the sending core pushes and only the receiving core pops. Two
//! kinds of wakeup sit beside the queues, both `event_listener::Event`s, which wake a task on
//! another thread through its ordinary `Waker` (glommio queues a foreign wake to the owning
//! executor and writes its eventfd if it sleeps):
//! - one **inbox** event per receiving core: "a message arrived for you" (or a sender left);
//! - one **room** event per queue: "a slot was freed", for senders waiting on a full queue.
//!
//! Why not glommio's `channel_mesh`: it needs every core to join before anything is sent, gives
//! one receiver per peer (a core would need a task per peer to wait on all of them at once), and
//! has no queue from a core to itself. Here one `recv` waits on every queue at once, a core can
//! send to itself, and the same two primitives serve the bridge to plain threads.
//!
//! Ending: the mesh knows which cores still hold a [`crate::Core`] handle. `recv` returns `None`
//! once the queues into this core are empty and every *other* core has dropped all its handles
//! (so a task that receives and replies, holding its own core's handle, still ends when its
//! peers do); on a one-core runtime, once this core has dropped its own. It returns `None` at
//! once when a core panicked (`Mesh::fail`). A send to a core whose receiver is gone fails
//! with the message handed back.

use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use event_listener::Event;

use crate::error::{SendError, TryRecvError, TrySendError};
use crate::placement::CoreId;

/// The queues and events of one runtime, shared by all its cores.
pub(crate) struct Mesh<M> {
    cores: usize,
    /// `queues[from * cores + to]`.
    queues: Box<[ArrayQueue<M>]>,
    /// `room[from * cores + to]`: a slot of that queue was freed.
    room: Box<[Event]>,
    /// `inbox[to]`: something arrived for that core, or the mesh is ending.
    inbox: Box<[Event]>,
    /// `receiver_open[to]`: that core's receiver still exists.
    receiver_open: Box<[AtomicBool]>,
    /// `core_open[core]`: that core still holds at least one `Core` handle.
    core_open: Box<[AtomicBool]>,
    /// How many entries of `core_open` are true.
    open_cores: AtomicUsize,
    /// A core panicked: every receive ends and every send fails from now on.
    failed: AtomicBool,
}

impl<M> Mesh<M> {
    /// A mesh for `cores` cores with `capacity` slots per queue.
    pub(crate) fn new(cores: usize, capacity: usize) -> Mesh<M> {
        assert!(
            cores >= 1 && capacity >= 1,
            "{cores} cores, capacity {capacity}"
        );
        let pairs = cores * cores;
        Mesh {
            cores,
            queues: (0..pairs).map(|_| ArrayQueue::new(capacity)).collect(),
            room: (0..pairs).map(|_| Event::new()).collect(),
            inbox: (0..cores).map(|_| Event::new()).collect(),
            receiver_open: (0..cores).map(|_| AtomicBool::new(true)).collect(),
            core_open: (0..cores).map(|_| AtomicBool::new(true)).collect(),
            open_cores: AtomicUsize::new(cores),
            failed: AtomicBool::new(false),
        }
    }

    /// How many cores the mesh connects.
    pub(crate) fn cores(&self) -> usize {
        self.cores
    }

    fn pair(&self, from: CoreId, to: CoreId) -> usize {
        assert!(
            from.0 < self.cores && to.0 < self.cores,
            "core {} -> core {}: the mesh has {} cores",
            from.0,
            to.0,
            self.cores
        );
        from.0 * self.cores + to.0
    }

    /// Queues `message` from `from` to `to` if there is room, and wakes the receiver.
    pub(crate) fn try_send(
        &self,
        from: CoreId,
        to: CoreId,
        message: M,
    ) -> Result<(), TrySendError<M>> {
        let pair = self.pair(from, to);
        if self.failed.load(Ordering::Acquire) || !self.receiver_open[to.0].load(Ordering::Acquire)
        {
            return Err(TrySendError::Closed(message));
        }
        self.queues[pair]
            .push(message)
            .map_err(TrySendError::Full)?;
        // One receiver per core, so one notification is enough; it is a fence and a load when
        // the receiver is not waiting.
        self.inbox[to.0].notify(1);
        Ok(())
    }

    /// Queues `message` from `from` to `to`, waiting while the queue is full (backpressure).
    pub(crate) async fn send(
        &self,
        from: CoreId,
        to: CoreId,
        mut message: M,
    ) -> Result<(), SendError<M>> {
        let pair = self.pair(from, to);
        loop {
            match self.try_send(from, to, message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(returned)) => return Err(SendError(returned)),
                Err(TrySendError::Full(returned)) => message = returned,
            }
            // Listen, then try again before sleeping: a slot freed between the failed push and
            // the listen would otherwise be missed.
            let room = self.room[pair].listen();
            match self.try_send(from, to, message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(returned)) => return Err(SendError(returned)),
                Err(TrySendError::Full(returned)) => message = returned,
            }
            room.await;
        }
    }

    /// Takes one message for `to`, looking at the queues round-robin from `*next_from` so that
    /// one busy sender cannot starve the others.
    fn pop_for(&self, to: CoreId, next_from: &mut usize) -> Option<(CoreId, M)> {
        for step in 0..self.cores {
            let from = (*next_from + step) % self.cores;
            let pair = from * self.cores + to.0;
            if let Some(message) = self.queues[pair].pop() {
                *next_from = (from + 1) % self.cores;
                // Every waiting sender on that core retries; those that find the queue full
                // again listen again. They are all on one core, so this wakes no other thread
                // more than once.
                self.room[pair].notify(usize::MAX);
                return Some((CoreId(from), message));
            }
        }
        None
    }

    /// Has the mesh ended for `me`'s receiver: every other core's handles gone (on a one-core
    /// runtime, this core's own), or a core failed?
    fn ended_for(&self, me: CoreId) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return true;
        }
        let open = self.open_cores.load(Ordering::Acquire);
        let me_open = usize::from(self.core_open[me.0].load(Ordering::Acquire));
        match self.cores {
            1 => open == 0,
            _ => open.saturating_sub(me_open) == 0,
        }
    }

    /// Core `core` dropped its last `Core` handle.
    pub(crate) fn core_closed(&self, core: CoreId) {
        let was_open = self.core_open[core.0].swap(false, Ordering::AcqRel);
        assert!(was_open, "core {} closed twice", core.0);
        self.open_cores.fetch_sub(1, Ordering::AcqRel);
        // Rare (once per core per run): wake every receiver to look again.
        self.wake_all_receivers();
    }

    /// A core panicked: end every receive and fail every send, so that the other cores stop
    /// instead of waiting forever for a core that is gone.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.wake_all_receivers();
        for room in self.room.iter() {
            room.notify(usize::MAX);
        }
    }

    fn wake_all_receivers(&self) {
        for inbox in self.inbox.iter() {
            inbox.notify(usize::MAX);
        }
    }

    fn receiver_closed(&self, to: CoreId) {
        self.receiver_open[to.0].store(false, Ordering::Release);
        for from in 0..self.cores {
            self.room[from * self.cores + to.0].notify(usize::MAX);
        }
    }
}

/// The receiving end of the mesh on one core: messages from every core (itself included), each
/// with the core it came from. Taken once per core with [`crate::Core::take_receiver`]; it stays
/// on its core (it is neither `Send` nor `Clone`), since the core owns what it receives.
///
/// Order: messages from one core arrive in the order that core queued them (FIFO per pair);
/// queues from different cores are served round-robin.
pub struct MeshReceiver<M> {
    mesh: Arc<Mesh<M>>,
    me: CoreId,
    next_from: std::cell::Cell<usize>,
    /// Not `Send`: the receiver belongs to its core.
    _local: PhantomData<Rc<()>>,
}

impl<M> MeshReceiver<M> {
    pub(crate) fn new(mesh: Arc<Mesh<M>>, me: CoreId) -> MeshReceiver<M> {
        MeshReceiver {
            mesh,
            me,
            next_from: std::cell::Cell::new(0),
            _local: PhantomData,
        }
    }

    /// The next message and the core that sent it; waits while nothing is queued. `None` once
    /// nothing is queued and every other core has dropped its `Core` handles (on a one-core
    /// runtime: this core has), or at once when a core panicked.
    pub async fn recv(&self) -> Option<(CoreId, M)> {
        loop {
            match self.try_recv() {
                Ok(received) => return Some(received),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let arrived = self.mesh.inbox[self.me.0].listen();
            match self.try_recv() {
                Ok(received) => return Some(received),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => arrived.await,
            }
        }
    }

    /// The next message if one is queued now. Draining with `try_recv` until `Empty` handles a
    /// burst without a wakeup per message.
    pub fn try_recv(&self) -> Result<(CoreId, M), TryRecvError> {
        if self.mesh.failed.load(Ordering::Acquire) {
            return Err(TryRecvError::Closed);
        }
        // Read "ended" before popping: a sender's last push happens before its core closes, so
        // if the mesh had ended before the pop, the pop sees every message there will be.
        let ended = self.mesh.ended_for(self.me);
        let mut next_from = self.next_from.get();
        let popped = self.mesh.pop_for(self.me, &mut next_from);
        self.next_from.set(next_from);
        match popped {
            Some(received) => Ok(received),
            None if ended => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<M> Drop for MeshReceiver<M> {
    fn drop(&mut self) {
        self.mesh.receiver_closed(self.me);
    }
}
