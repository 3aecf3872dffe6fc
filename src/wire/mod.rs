//! Where bytes become requests and messages: conversion between the in-memory types
//! (`raft::Message`, `kv::command::Request` and `Response`) and the FlatBuffers tables of
//! `shardcore_protocol::schema`, framed by `shardcore_protocol::frame`.
//!
//! # Sending
//! One [`Encoder`] per connection writer (or per core) owns a `FlatBufferBuilder` and scratch
//! vectors that it resets and reuses for every frame, so encoding allocates nothing once they
//! have grown to the largest frame sent. Each method returns one frame body (at most
//! `MAX_FRAME_BYTES`), for the caller to frame with `shardcore_protocol::encode`:
//! - [`Encoder::hello_body`] (`FrameKind::Hello`): the first frame on a connection;
//! - [`Encoder::raft_batch_body`] (`FrameKind::PeerRaft`): every Raft message one node has for
//!   one destination node, any number of groups; heartbeats and their answers travel as
//!   fixed-size structs, coalesced per node;
//! - [`Encoder::requests_body`] (`FrameKind::ClientRequest`) and [`Encoder::replies_body`]
//!   (`FrameKind::ClientResponse`): a batch of client requests, each with the client's request
//!   id and the Raft group it is for, and a batch of replies that echo the id (in any order).
//!
//! # Receiving
//! A frame taken off a connection with `shardcore_protocol::decode` (checksum checked) goes to
//! the decode function of its kind: [`decode_hello`], [`decode_raft_batch`],
//! [`decode_requests`], [`decode_replies`]. Each first runs the FlatBuffers verifier with
//! bounded options (`shardcore_protocol::body`), then reads the fields and judges what the
//! verifier cannot: enum values and union variants this build does not know, fields that do not
//! fit together. Any failure is a [`DecodeError`] (close the connection); no input panics.
//!
//! Byte strings (entry data, snapshot chunks, keys, values, contexts) are decoded as
//! `Bytes::slice_ref` slices of the frame body: no copy, but each keeps the whole body alive
//! while it lives. That suits Raft (entries of one Append stay together in the log) and the KV
//! service (a write's bytes are re-encoded into a log entry); a caller that keeps one small
//! slice of a large frame for long should copy it.
//!
//! Keys and values are not held to the KV bounds here: a too-long key is a well-formed request
//! that the KV service answers with `KeyTooLarge`, not a reason to close the connection. The
//! frame size bounds the memory either way.
//!
//! # Layout
//! - `hello`: [`Hello`] and [`HelloRole`].
//! - `raft`: Raft batches.
//! - `client`: [`ClientRequest`], [`ClientReply`], [`ReplyError`].
//! - [`mapreduce`]: MapReduce coordinator, worker and fetch messages (`MrMessage`).
//! - `tests`: round trips of every variant from a seeded generator, and refusal of garbage,
//!   truncated and bit-flipped bodies.

mod client;
mod hello;
pub mod mapreduce;
mod raft;
pub mod shardctl;
#[cfg(test)]
mod tests;

use std::fmt;

use shardcore_protocol::flatbuffers::{self, FlatBufferBuilder, WIPOffset};
use shardcore_protocol::schema::{client as fb_client, raft as fb_raft};
use shardcore_protocol::BodyError;

use crate::raft::{GroupId, NodeId};

pub use client::{
    decode_replies, decode_requests, request_estimate, ClientReply, ClientRequest, ReplyError,
};
pub use hello::{decode_hello, Hello, HelloRole};
pub use raft::decode_raft_batch;

/// A client's id for one of its requests, echoed by the reply. Unique among the client's
/// requests in flight on one connection; replies may come back in any order.
pub type RequestId = u64;

/// Builds frame bodies, reusing one builder and its scratch space for every body. Each method
/// returns the body, borrowed from the encoder until the next call; frame it with
/// `shardcore_protocol::encode` and the method's frame kind.
pub struct Encoder {
    builder: FlatBufferBuilder<'static>,
    /// The messages of the Raft batch being built.
    messages: Vec<WIPOffset<fb_raft::Message<'static>>>,
    /// The entries of the Append being built.
    entries: Vec<WIPOffset<fb_raft::Entry<'static>>>,
    /// The requests of the batch being built.
    requests: Vec<WIPOffset<fb_client::Request<'static>>>,
    /// The replies of the batch being built.
    replies: Vec<WIPOffset<fb_client::Reply<'static>>>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder with empty buffers; they grow to the largest frame built and stay.
    pub fn new() -> Encoder {
        Encoder {
            builder: FlatBufferBuilder::new(),
            messages: Vec::new(),
            entries: Vec::new(),
            requests: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// The finished body, refused if it exceeds the frame limit.
    fn finished_body(&self) -> Result<&[u8], EncodeError> {
        let body = self.builder.finished_data();
        if body.len() > shardcore_protocol::limits::MAX_FRAME_BYTES as usize {
            return Err(EncodeError::TooLarge {
                body_bytes: body.len(),
            });
        }
        Ok(body)
    }
}

/// Refuses, before building anything, a frame whose contents alone exceed the frame limit (the
/// builder would otherwise grow to hold it, up to a panic at 2 GiB).
fn check_estimate(estimated_bytes: usize) -> Result<(), EncodeError> {
    if estimated_bytes > shardcore_protocol::limits::MAX_FRAME_BYTES as usize {
        return Err(EncodeError::TooLarge {
            body_bytes: estimated_bytes,
        });
    }
    Ok(())
}

/// Why a frame body could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The body would exceed the frame limit; split the batch.
    TooLarge {
        /// The body's size (or, when refused before building, its estimate).
        body_bytes: usize,
    },
    /// A message in a Raft batch has another sender or destination than the batch.
    WrongEndpoints {
        /// The message's group.
        group: GroupId,
        /// The message's sender.
        from: NodeId,
        /// The message's destination.
        to: NodeId,
    },
    /// More requests or replies than one frame may carry; split the batch.
    TooManyItems {
        /// How many were given.
        count: usize,
        /// The bound, `shardcore_protocol::limits::MAX_REQUESTS_PER_FRAME`.
        max: usize,
    },
}

/// Why a body was refused. The connection it came on should be closed with this error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The FlatBuffers verifier or a count bound refused the body.
    Body(BodyError),
    /// An enum or union field holds a value this build does not know.
    UnknownEnum {
        /// `Table.field`.
        field: &'static str,
        /// The value found.
        value: u8,
    },
    /// A field that must be present is not.
    MissingField {
        /// `Table.field`.
        field: &'static str,
    },
    /// Fields that do not fit together.
    Inconsistent {
        /// `Table.field` (or the table, when it is about several fields).
        field: &'static str,
        /// What is wrong, as a sentence fragment.
        why: &'static str,
    },
}

impl From<BodyError> for DecodeError {
    fn from(error: BodyError) -> Self {
        DecodeError::Body(error)
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { body_bytes } => write!(
                f,
                "frame body of {body_bytes} bytes exceeds the limit of {}",
                shardcore_protocol::limits::MAX_FRAME_BYTES
            ),
            EncodeError::WrongEndpoints { group, from, to } => write!(
                f,
                "group {group}'s message from node {from} to node {to} does not belong in this \
                 batch's frame"
            ),
            EncodeError::TooManyItems { count, max } => {
                write!(
                    f,
                    "{count} requests or replies in one frame, more than {max}"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Body(error) => error.fmt(f),
            DecodeError::UnknownEnum { field, value } => {
                write!(f, "unknown value {value} in {field}")
            }
            DecodeError::MissingField { field } => write!(f, "missing field {field}"),
            DecodeError::Inconsistent { field, why } => write!(f, "bad {field}: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A byte vector of a verified body as a slice of the body's `Bytes` (absent: empty).
fn slice_of(body: &bytes::Bytes, vector: Option<flatbuffers::Vector<'_, u8>>) -> bytes::Bytes {
    vector.map_or_else(bytes::Bytes::new, |vector| body.slice_ref(vector.bytes()))
}
