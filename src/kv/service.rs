//! What a replicated service plugs into the generic replica server ([`super::server`]) and
//! client ([`super::client`]): the [`StateMachine`] trait, and the request, response and
//! applied-entry shapes every service shares.
//!
//! A service is a state machine with exactly-once client sessions (Raft thesis §6.3) whose
//! operations are either reads (served from the state after a ReadIndex) or writes (encoded
//! into a log entry, answered when applied). The KV store ([`super::KvStore`]) and the shard
//! controller ([`crate::shardctl::CtlStore`]) are the two implementations; the server logic
//! (proposals, ReadIndex, timeouts, leader changes) and the clerk logic (leader finding,
//! retries with the same sequence, backoff) are written once against this trait.

use std::fmt::Debug;

use bytes::Bytes;

use super::command::{ClientId, Consistency, DecodeError};
use super::store::SessionLimits;
use crate::raft::{Index, NodeId};

/// A client's request to a service: one operation in its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest<O> {
    /// The session.
    pub client: ClientId,
    /// The session's sequence number: one per operation, starting at 1; a retry repeats it.
    pub seq: u64,
    /// The operation.
    pub op: O,
    /// How a read is served (ignored for writes, which are always linearizable).
    pub consistency: Consistency,
}

/// The answer to a [`ServiceRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceResponse<R, E> {
    /// The session.
    pub client: ClientId,
    /// The request's sequence number.
    pub seq: u64,
    /// What happened.
    pub result: Result<R, E>,
    /// For a read: how it was served (a serializable read says so).
    pub consistency: Consistency,
}

/// The response type of service `M`.
pub type ResponseOf<M> = ServiceResponse<<M as StateMachine>::Reply, <M as StateMachine>::Error>;

/// What applying one entry produced, for whoever waits on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceApplied<R, E> {
    /// The session (0 for a registration).
    pub client: ClientId,
    /// The sequence number (0 for a registration).
    pub seq: u64,
    /// The result.
    pub result: Result<R, E>,
}

/// The refusals every service shares: the server and the clerk make and read them without
/// knowing the service's own error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This replica cannot serve the request; `leader` is its guess (0: unknown).
    WrongLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// The server gave up waiting for the request to complete (it may still complete).
    Timeout,
    /// Too many requests are waiting at this replica.
    Busy,
    /// The command is larger than the log accepts in one entry.
    TooLarge,
    /// The session is unknown: expired or evicted. The request was not applied now; whether an
    /// earlier copy of it was, nobody can tell.
    SessionExpired,
}

/// A replicated service's state machine, changed only by applying committed entries in order.
///
/// Implementations must be deterministic: the same entries applied from the same snapshot give
/// the same state and the same results on every replica (no clock, no hash-map order).
pub trait StateMachine: Sized {
    /// What a client asks.
    type Op: Clone + Debug + PartialEq;
    /// A successful result.
    type Reply: Clone + Debug + PartialEq;
    /// Why a request did not succeed (includes every [`Refusal`]).
    type Error: Copy + Debug + PartialEq;
    /// What an empty state machine is made from besides its session limits (the controller's
    /// shard count; nothing for KV). A restored one reads it from its snapshot.
    type Settings: Copy + Debug + Default;

    /// An empty state machine.
    fn new(limits: SessionLimits, settings: Self::Settings) -> Self;
    /// Rebuilds a state machine from [`StateMachine::snapshot`]'s bytes.
    fn restore(limits: SessionLimits, snapshot: &Bytes) -> Result<Self, DecodeError>;
    /// The whole state (data and session table) as bytes.
    fn snapshot(&self) -> Bytes;
    /// Applies one committed entry's bytes at `index`; `None` when the entry is not one of
    /// this service's commands (skipped alike on every replica).
    fn apply(
        &mut self,
        index: Index,
        data: &Bytes,
    ) -> Option<ServiceApplied<Self::Reply, Self::Error>>;
    /// Reads what applying the entry `data` will touch (the data it changes), without
    /// changing anything: called for a run of committed entries before they are applied, so
    /// the cache misses of different entries overlap instead of each stalling its own apply.
    fn warm(&self, _data: &Bytes) {}
    /// The reply already given to `(client, seq)` when that is the session's latest, so a
    /// retry is answered without a new entry.
    fn cached_reply(&self, client: ClientId, seq: u64) -> Option<Result<Self::Reply, Self::Error>>;
    /// Serves a read operation from the current state.
    fn read(&self, op: &Self::Op) -> Result<Self::Reply, Self::Error>;

    /// True when `op` is a read (served after a ReadIndex, never logged).
    fn is_read(op: &Self::Op) -> bool;
    /// Checks an operation's bounds before anything else happens to it.
    fn check_bounds(op: &Self::Op) -> Result<(), Self::Error>;
    /// A write's log entry: the session, the operation, the proposing leader's clock.
    fn encode_write(client: ClientId, seq: u64, stamp_ms: u64, op: &Self::Op) -> Bytes;
    /// The operation that opens a session.
    fn register_op() -> Self::Op;
    /// The session id a successful registration returned.
    fn registered(reply: &Self::Reply) -> Option<ClientId>;
    /// The service's error for a shared refusal.
    fn refusal(refusal: Refusal) -> Self::Error;
    /// The shared refusal an error is, if it is one.
    fn as_refusal(error: &Self::Error) -> Option<Refusal>;
}
