//! shardcore-protocol: everything that turns untrusted bytes from the network into typed
//! messages, and back.
//!
//! Every byte a node receives over TCP, from a client or from a peer, arrives in a **frame**: a
//! fixed 16-byte header followed by a body. The header names the frame's kind and the body's
//! length and carries a CRC-32C checksum; the body is a FlatBuffers message of that kind. Reading
//! follows "check before parse" (as mini-redis's `Frame::check` then `Frame::parse`): cheap length
//! and bound checks run first, before a single byte of the body is buffered or interpreted. An
//! incomplete frame is not an error (read more); a malformed one is, and it closes that connection
//! with a clear error and nothing else.
//!
//! # Layout
//! - [`limits`]: the named bounds on untrusted input, each with the reason for its number.
//! - [`frame`]: the frame header layout, [`frame::FrameHeader`] encode, [`frame::check`] (is a
//!   whole valid frame in this buffer?) and [`frame::decode`] (split it off a `BytesMut`), with
//!   an error type that keeps "incomplete" apart from "malformed".
//! - [`schema`]: the FlatBuffers types generated from `protocol/schema/*.fbs`, one module per
//!   schema: [`schema::hello`] (the first frame on a connection), [`schema::raft`] (Raft
//!   messages coalesced per destination node), [`schema::client`] (KV requests and replies),
//!   [`schema::shardctl`] (the shard controller; not yet sent by a node) and
//!   [`schema::mapreduce`] (coordinator and workers). The generated code is committed, so a
//!   build needs no `flatc`; `scripts/gen-protocol.sh` regenerates it with the pinned flatc and
//!   `scripts/gen-protocol.sh --check` fails when it is stale.
//! - [`body`]: [`body::verify`], the FlatBuffers verifier with bounded options (depth, tables,
//!   apparent size) plus shardcore's count bounds, run on every body before any field is read.
//!
//! Converting between the wire tables and the Raft and KV types is `shardcore::wire`'s job:
//! this crate knows nothing of them.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use flatbuffers::FlatBufferBuilder;
//! use shardcore_protocol::schema::hello::{Hello, HelloArgs, Role};
//! use shardcore_protocol::{check, decode, encode, verify, Body, CheckError, FrameKind};
//!
//! // Build a body with the generated code and frame it.
//! let mut builder = FlatBufferBuilder::new();
//! let args = HelloArgs { cluster_id: 42, node_id: 1, role: Role::Peer, core_count: 2 };
//! let hello = Hello::create(&mut builder, &args);
//! builder.finish_minimal(hello);
//! let mut wire = BytesMut::new();
//! encode(FrameKind::Hello, builder.finished_data(), &mut wire).unwrap();
//!
//! // Half a frame is not an error: the reader waits for more bytes.
//! assert!(matches!(check(&wire[..10]), Err(CheckError::Incomplete { .. })));
//!
//! // A whole frame is checked (bounds, then checksum) and split off the read buffer, then its
//! // body is verified before a field is read.
//! let frame = decode(&mut wire).unwrap().expect("a whole frame");
//! let Ok(Body::Hello(hello)) = verify(frame.kind, &frame.body) else { panic!("not a hello") };
//! assert_eq!((hello.cluster_id(), hello.role()), (42, Role::Peer));
//! ```
//!
//! Crate dependencies are limited to `bytes`, a CRC-32C implementation and the `flatbuffers`
//! runtime (pinned to the flatc release that generated the code): the protocol knows nothing of
//! I/O, runtimes or storage.
#![deny(missing_docs)]

pub mod body;
pub mod frame;
pub mod limits;

// flatc's output, as scripts/gen-protocol.sh writes it: not formatted (rustfmt's output varies
// by version, and `gen-protocol.sh --check` compares bytes), and not held to this crate's lints.
#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    unused_imports,
    deprecated,
    dead_code
)]
mod generated;

/// The FlatBuffers types generated from `protocol/schema/*.fbs` (by flatc 25.12.19), one module
/// per schema file. Read a received body only through [`crate::body::verify`]'s accessors.
pub mod schema {
    pub use crate::generated::client_generated::shardcore::client;
    pub use crate::generated::hello_generated::shardcore::hello;
    pub use crate::generated::mapreduce_generated::shardcore::mapreduce;
    pub use crate::generated::raft_generated::shardcore::raft;
    pub use crate::generated::shardctl_generated::shardcore::shardctl;
}

/// The FlatBuffers runtime the generated code was made for, re-exported so that users build and
/// read bodies with exactly that version.
pub use flatbuffers;

pub use body::{verifier_options, verify, verify_frame, Body, BodyError};
pub use frame::{
    check, decode, encode, CheckError, EncodeError, Frame, FrameHeader, FrameKind, Malformed,
};
