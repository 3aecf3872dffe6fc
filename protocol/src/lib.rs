//! shardcore-protocol: everything that turns untrusted bytes from the network into typed
//! messages, and back.
//!
//! Every byte a node receives over TCP, from a client or from a peer, arrives in a **frame**: a
//! fixed 16-byte header followed by a body. The header names the frame's kind and the body's
//! length and carries a CRC-32C checksum; the body is a FlatBuffers message of that kind (once the
//! schemas land; see below). Reading
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
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use shardcore_protocol::{check, decode, encode, CheckError, FrameKind};
//!
//! let mut wire = BytesMut::new();
//! encode(FrameKind::ClientRequest, b"get k1", &mut wire).unwrap();
//!
//! // Half a frame is not an error: the reader waits for more bytes.
//! assert!(matches!(check(&wire[..10]), Err(CheckError::Incomplete { .. })));
//!
//! // A whole frame is checked (bounds, then checksum) and split off the read buffer.
//! let frame = decode(&mut wire).unwrap().expect("a whole frame");
//! assert_eq!((frame.kind, &frame.body[..]), (FrameKind::ClientRequest, &b"get k1"[..]));
//! ```
//!
//! # What exists and what comes
//! Built now: the frame codec and the frame limits above, tested against truncation at every
//! byte and a flipped bit at every position.
//!
//! Not built yet (arrives with the server and the KV service):
//! - the FlatBuffers schemas in `protocol/schema/*.fbs` (Raft messages coalesced per destination
//!   node, client requests and replies, shard migration, MapReduce tasks) and their generated
//!   Rust code, committed so that a build needs no `flatc`;
//! - per-message `check()` (the FlatBuffers verifier plus shardcore's own bounds on keys, values,
//!   batch lengths and group counts) before any accessor reads the body;
//! - conversion between the wire messages and the Raft core's plain types (`shardcore::raft`).
//!
//! Crate dependencies are limited to `bytes` and a CRC-32C implementation (later `flatbuffers`):
//! the protocol knows nothing of I/O, runtimes or storage.
#![deny(missing_docs)]

pub mod frame;
pub mod limits;

pub use frame::{
    check, decode, encode, CheckError, EncodeError, Frame, FrameHeader, FrameKind, Malformed,
};
