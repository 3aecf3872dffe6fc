//! The bridge between cores and plain threads: a bounded lock-free channel whose ends can each
//! wait either by awaiting (on a core) or by blocking (on a plain thread).
//!
//! The node runs a snapshot writer thread per core (and MapReduce workers run blocking file
//! work): the core sends it jobs with `send().await` or `try_send` (waiting, not blocking the
//! executor, when the thread is behind) and the thread takes them with `recv_blocking()`; the
//! thread sends completions back with `send_blocking()` and the core's task wakes in
//! `recv().await`. The same channel serves both directions.
//!
//! Built like the mesh: a `crossbeam` `ArrayQueue` plus two `event_listener::Event`s ("an item
//! arrived", "a slot was freed"). An item sent from a plain thread wakes a core that is asleep
//! in its io_uring: the task's waker is a glommio waker, which queues a foreign wake to its
//! executor and writes that executor's eventfd.
//!
//! Ending: the receiver sees `None` (or [`TryRecvError::Closed`]) once every sender is dropped
//! and the queue is empty; senders fail once the receiver is dropped. There may be any number of
//! senders and one receiver.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use event_listener::{Event, Listener};

use crate::error::{SendError, TryRecvError, TrySendError};

struct Shared<T> {
    queue: ArrayQueue<T>,
    /// An item was pushed, or the last sender left.
    arrived: Event,
    /// An item was popped, or the receiver left.
    room: Event,
    senders: AtomicUsize,
    receiver_open: AtomicBool,
}

/// A bounded channel holding at most `capacity` items (at least 1). Choose the capacity as a
/// bound on the work in flight between the two sides (e.g. WAL batches not yet durable).
pub fn channel<T: Send>(capacity: usize) -> (BridgeSender<T>, BridgeReceiver<T>) {
    assert!(capacity >= 1, "a bridge needs room for at least one item");
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(capacity),
        arrived: Event::new(),
        room: Event::new(),
        senders: AtomicUsize::new(1),
        receiver_open: AtomicBool::new(true),
    });
    (
        BridgeSender {
            shared: shared.clone(),
        },
        BridgeReceiver { shared },
    )
}

/// The sending end: `Send` and `Clone`, usable from any thread or core.
pub struct BridgeSender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end: `Send`, so it can be handed to the thread or core that will own it.
pub struct BridgeReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> BridgeSender<T> {
    /// Sends `item` if there is room now.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let shared = &*self.shared;
        if !shared.receiver_open.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(item));
        }
        shared.queue.push(item).map_err(TrySendError::Full)?;
        shared.arrived.notify(1);
        Ok(())
    }

    /// Sends `item`, waiting (on a core) while the channel is full. Fails, handing the item back,
    /// once the receiver is gone.
    pub async fn send(&self, mut item: T) -> Result<(), SendError<T>> {
        loop {
            item = match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(item)) => return Err(SendError(item)),
                Err(TrySendError::Full(item)) => item,
            };
            let room = self.shared.room.listen();
            item = match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(item)) => return Err(SendError(item)),
                Err(TrySendError::Full(item)) => item,
            };
            room.await;
        }
    }

    /// Sends `item`, blocking the calling thread while the channel is full. For plain threads:
    /// on a core it would stall every task of that core.
    pub fn send_blocking(&self, mut item: T) -> Result<(), SendError<T>> {
        loop {
            item = match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(item)) => return Err(SendError(item)),
                Err(TrySendError::Full(item)) => item,
            };
            let room = self.shared.room.listen();
            item = match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(item)) => return Err(SendError(item)),
                Err(TrySendError::Full(item)) => item,
            };
            room.wait();
        }
    }
}

impl<T> Clone for BridgeSender<T> {
    fn clone(&self) -> BridgeSender<T> {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        BridgeSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for BridgeSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.arrived.notify(usize::MAX);
        }
    }
}

impl<T> BridgeReceiver<T> {
    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let shared = &*self.shared;
        // Read the sender count before popping: a sender's last push happens before its drop,
        // so if every sender was gone before the pop, the pop sees every item there will be.
        let closed = shared.senders.load(Ordering::Acquire) == 0;
        match shared.queue.pop() {
            Some(item) => {
                shared.room.notify(usize::MAX);
                Ok(item)
            }
            None if closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next item, waiting (on a core) while none is queued; `None` once every sender is gone
    /// and the channel is empty.
    pub async fn recv(&self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let arrived = self.shared.arrived.listen();
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => arrived.await,
            }
        }
    }

    /// The next item, blocking the calling thread while none is queued; `None` once every sender
    /// is gone and the channel is empty. For plain threads only.
    pub fn recv_blocking(&self) -> Option<T> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let arrived = self.shared.arrived.listen();
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Closed) => return None,
                Err(TryRecvError::Empty) => arrived.wait(),
            }
        }
    }

    /// How many items are queued now (a snapshot: senders may add more at once).
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }
}

impl<T> Drop for BridgeReceiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_open.store(false, Ordering::Release);
        self.shared.room.notify(usize::MAX);
    }
}
