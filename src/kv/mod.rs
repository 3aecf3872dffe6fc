//! The fault-tolerant key/value service on Raft: linearizable, exactly-once under retries.
//!
//! # Layout
//! - [`command`]: requests, replies, errors, size bounds, and a write's encoding in the log.
//! - [`data`]: how a logged write changes key/value data (shared with the sharded KV's shards).
//! - [`store`]: the state machine: the data and the bounded client session table (thesis §6.3),
//!   changed only by applying committed entries; snapshots of both.
//! - [`server`]: one replica's request handling around a Raft member: propose writes, read
//!   through ReadIndex, answer when applied, time out what waits too long.
//! - [`service`]: the [`StateMachine`] trait a replicated service implements to get the
//!   generic replica server and clerk, and the request and response shapes they share.
//! - [`session`]: the bounded exactly-once session table every service's state embeds.
//! - [`client`]: the client's logic: sessions, leader discovery, redirects, retries with the
//!   same sequence number, bounded backoff.
//!
//! All of it is sans-I/O and deterministic: the simulator and the real server run the same code.

pub mod client;
pub mod command;
pub mod data;
pub mod server;
pub mod service;
pub mod session;
pub mod store;

pub use client::{
    Clerk, ClerkConfig, Outcome, Outgoing, ServiceClerk, ServiceOutcome, ServiceOutgoing,
};
pub use command::{ClientId, Command, Consistency, KvError, Op, Reply, Request, Response};
pub use server::{KvServer, KvServerConfig, ReplicaServer, ReplyTo, ServerConfig};
pub use service::{Refusal, ServiceApplied, ServiceRequest, ServiceResponse, StateMachine};
pub use store::{KvStore, SessionLimits};
