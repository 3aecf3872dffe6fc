//! Frame bodies: the FlatBuffers verifier, with bounded options, before anything reads a body.
//!
//! A frame's [`FrameKind`] names its body's root table. [`verify`] runs the verifier over the
//! body for that root (every offset in bounds, every required field present, every string
//! UTF-8, nesting, table count and apparent size bounded by [`verifier_options`]) and then
//! shardcore's own count bounds; only then does it hand out the typed accessor. An accessor on a
//! verified body never panics and never reads outside the body, so everything after this point
//! may read fields freely.
//!
//! What the verifier does not judge is left to the reader of the fields, in `shardcore::wire`:
//! enum values outside the schema's (FlatBuffers keeps them, for forward compatibility), union
//! variants this build does not know, and whether the fields make sense together.

use std::fmt;

use flatbuffers::{Follow, InvalidFlatbuffer, Verifiable, VerifierOptions};

use crate::frame::{Frame, FrameKind};
use crate::limits::{
    MAX_REQUESTS_PER_FRAME, MAX_VERIFY_DEPTH, VERIFY_APPARENT_BYTES_PER_BODY_BYTE,
    VERIFY_BODY_BYTES_PER_TABLE,
};
use crate::schema::{client, hello, mapreduce, raft, shardctl};

/// A verified body, by frame kind.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// [`FrameKind::Hello`].
    Hello(hello::Hello<'a>),
    /// [`FrameKind::PeerRaft`].
    PeerRaft(raft::RaftBatch<'a>),
    /// [`FrameKind::ClientRequest`].
    ClientRequest(client::RequestBatch<'a>),
    /// [`FrameKind::ClientResponse`].
    ClientResponse(client::ReplyBatch<'a>),
    /// [`FrameKind::ControllerRequest`].
    ControllerRequest(shardctl::ControllerRequest<'a>),
    /// [`FrameKind::ControllerReply`].
    ControllerReply(shardctl::ControllerReply<'a>),
    /// [`FrameKind::MapReduce`].
    MapReduce(mapreduce::MapReduceMessage<'a>),
}

/// Why a body was refused. Either way the connection it came on is closed: its peer sends
/// something this build cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The FlatBuffers verifier refused the body: an offset out of bounds, a missing required
    /// field, bad UTF-8, too deep, too many tables, too large an apparent size.
    Invalid {
        /// The frame kind whose root table was expected.
        kind: FrameKind,
        /// The verifier's finding, with the path to the field where it has one.
        error: InvalidFlatbuffer,
    },
    /// The body is valid FlatBuffers but carries more items than shardcore accepts per frame.
    TooManyItems {
        /// The frame kind.
        kind: FrameKind,
        /// What was counted.
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The bound.
        max: usize,
    },
}

impl BodyError {
    /// The frame kind of the refused body.
    pub fn kind(&self) -> FrameKind {
        match self {
            BodyError::Invalid { kind, .. } | BodyError::TooManyItems { kind, .. } => *kind,
        }
    }
}

/// The verifier's bounds for a body of `body_bytes` bytes: nesting up to [`MAX_VERIFY_DEPTH`],
/// tables and apparent size in proportion to the body (see [`VERIFY_BODY_BYTES_PER_TABLE`] and
/// [`VERIFY_APPARENT_BYTES_PER_BODY_BYTE`]), so the verifier's work is linear in the bytes a
/// peer sent however the offsets are arranged.
pub fn verifier_options(body_bytes: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: MAX_VERIFY_DEPTH,
        max_tables: body_bytes / VERIFY_BODY_BYTES_PER_TABLE + 1,
        max_apparent_size: body_bytes.saturating_mul(VERIFY_APPARENT_BYTES_PER_BODY_BYTE),
        ignore_missing_null_terminator: false,
    }
}

/// Verifies `body` as the root table `kind` names and returns its accessor.
pub fn verify(kind: FrameKind, body: &[u8]) -> Result<Body<'_>, BodyError> {
    Ok(match kind {
        FrameKind::Hello => Body::Hello(verify_hello(body)?),
        FrameKind::PeerRaft => Body::PeerRaft(verify_raft_batch(body)?),
        FrameKind::ClientRequest => Body::ClientRequest(verify_request_batch(body)?),
        FrameKind::ClientResponse => Body::ClientResponse(verify_reply_batch(body)?),
        FrameKind::ControllerRequest => Body::ControllerRequest(verify_controller_request(body)?),
        FrameKind::ControllerReply => Body::ControllerReply(verify_controller_reply(body)?),
        FrameKind::MapReduce => Body::MapReduce(verify_mapreduce(body)?),
    })
}

/// Verifies a checked frame's body: [`verify`] with the frame's kind.
pub fn verify_frame(frame: &Frame) -> Result<Body<'_>, BodyError> {
    verify(frame.kind, &frame.body)
}

/// Verifies a [`FrameKind::Hello`] body.
pub fn verify_hello(body: &[u8]) -> Result<hello::Hello<'_>, BodyError> {
    root::<hello::Hello>(FrameKind::Hello, body)
}

/// Verifies a [`FrameKind::PeerRaft`] body.
pub fn verify_raft_batch(body: &[u8]) -> Result<raft::RaftBatch<'_>, BodyError> {
    root::<raft::RaftBatch>(FrameKind::PeerRaft, body)
}

/// Verifies a [`FrameKind::ClientRequest`] body, and that it carries at most
/// [`MAX_REQUESTS_PER_FRAME`] requests.
pub fn verify_request_batch(body: &[u8]) -> Result<client::RequestBatch<'_>, BodyError> {
    let kind = FrameKind::ClientRequest;
    let batch = root::<client::RequestBatch>(kind, body)?;
    check_count(kind, "requests", batch.requests().len())?;
    Ok(batch)
}

/// Verifies a [`FrameKind::ClientResponse`] body, and that it carries at most
/// [`MAX_REQUESTS_PER_FRAME`] replies.
pub fn verify_reply_batch(body: &[u8]) -> Result<client::ReplyBatch<'_>, BodyError> {
    let kind = FrameKind::ClientResponse;
    let batch = root::<client::ReplyBatch>(kind, body)?;
    check_count(kind, "replies", batch.replies().len())?;
    Ok(batch)
}

/// Verifies a [`FrameKind::ControllerRequest`] body.
pub fn verify_controller_request(
    body: &[u8],
) -> Result<shardctl::ControllerRequest<'_>, BodyError> {
    root::<shardctl::ControllerRequest>(FrameKind::ControllerRequest, body)
}

/// Verifies a [`FrameKind::ControllerReply`] body.
pub fn verify_controller_reply(body: &[u8]) -> Result<shardctl::ControllerReply<'_>, BodyError> {
    root::<shardctl::ControllerReply>(FrameKind::ControllerReply, body)
}

/// Verifies a [`FrameKind::MapReduce`] body.
pub fn verify_mapreduce(body: &[u8]) -> Result<mapreduce::MapReduceMessage<'_>, BodyError> {
    root::<mapreduce::MapReduceMessage>(FrameKind::MapReduce, body)
}

/// The verifier with [`verifier_options`], for root table `T`.
fn root<'a, T>(kind: FrameKind, body: &'a [u8]) -> Result<T::Inner, BodyError>
where
    T: 'a + Follow<'a> + Verifiable,
{
    flatbuffers::root_with_opts::<T>(&verifier_options(body.len()), body)
        .map_err(|error| BodyError::Invalid { kind, error })
}

fn check_count(kind: FrameKind, what: &'static str, count: usize) -> Result<(), BodyError> {
    if count > MAX_REQUESTS_PER_FRAME {
        return Err(BodyError::TooManyItems {
            kind,
            what,
            count,
            max: MAX_REQUESTS_PER_FRAME,
        });
    }
    Ok(())
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Invalid { kind, error } => {
                // The verifier's text ends in a newline and an error trace; keep it on one line.
                let text = error.to_string();
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                write!(f, "invalid {kind:?} frame body: {text}")
            }
            BodyError::TooManyItems {
                kind,
                what,
                count,
                max,
            } => write!(
                f,
                "{kind:?} frame body carries {count} {what}, more than the limit of {max}"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use flatbuffers::FlatBufferBuilder;

    fn hello_body() -> Vec<u8> {
        let mut builder = FlatBufferBuilder::new();
        let hello = hello::Hello::create(
            &mut builder,
            &hello::HelloArgs {
                cluster_id: 7,
                node_id: 3,
                role: hello::Role::Client,
                core_count: 2,
            },
        );
        builder.finish_minimal(hello);
        builder.finished_data().to_vec()
    }

    /// A body built by the generated code verifies and reads back; the same bytes under
    /// another kind's root are judged by that root's rules, never trusted blindly.
    #[test]
    fn a_built_hello_verifies_and_reads_back() {
        let body = hello_body();
        let Body::Hello(hello) = verify(FrameKind::Hello, &body).unwrap() else {
            panic!("not a hello");
        };
        assert_eq!(
            (
                hello.cluster_id(),
                hello.node_id(),
                hello.role(),
                hello.core_count()
            ),
            (7, 3, hello::Role::Client, 2)
        );
        // A RequestBatch needs its `requests` vector; a Hello has no such field.
        assert!(matches!(
            verify(FrameKind::ClientRequest, &body),
            Err(BodyError::Invalid { .. })
        ));
    }

    /// Every kind refuses bodies that are empty, too short for a root offset, or whose root
    /// offset points outside the body, with an error naming the kind.
    #[test]
    fn every_kind_refuses_garbage() {
        for kind in FrameKind::ALL {
            for body in [&[][..], &[1, 2][..], &[0xff, 0xff, 0xff, 0x7f][..]] {
                let error = verify(kind, body).unwrap_err();
                assert_eq!(error.kind(), kind);
                let text = error.to_string();
                assert!(text.contains(&format!("{kind:?}")), "{text}");
                assert!(!text.contains('\n'), "{text}");
            }
        }
    }

    /// Tables that all point at one shared vtable-less table a thousand times (a DAG that
    /// multiplies the verifier's work) exceed the table bound scaled to the body's size.
    #[test]
    fn offsets_to_one_table_many_times_are_refused() {
        // A RequestBatch whose `requests` vector holds 1000 offsets to the same Request table.
        let mut builder = FlatBufferBuilder::new();
        let op = client::Register::create(&mut builder, &client::RegisterArgs {});
        let request = client::Request::create(
            &mut builder,
            &client::RequestArgs {
                id: 1,
                op_type: client::Op::Register,
                op: Some(op.as_union_value()),
                ..Default::default()
            },
        );
        let requests = builder.create_vector(&vec![request; 1000]);
        let batch = client::RequestBatch::create(
            &mut builder,
            &client::RequestBatchArgs {
                requests: Some(requests),
            },
        );
        builder.finish_minimal(batch);
        let body = builder.finished_data();
        match verify(FrameKind::ClientRequest, body) {
            Err(BodyError::Invalid { error, .. }) => assert!(
                matches!(
                    error,
                    InvalidFlatbuffer::TooManyTables | InvalidFlatbuffer::ApparentSizeTooLarge
                ),
                "{error}"
            ),
            other => panic!("a 1000-fold shared table was accepted: {other:?}"),
        }
    }

    /// More requests than [`MAX_REQUESTS_PER_FRAME`] are refused after verification, with
    /// the count and the bound.
    #[test]
    fn too_many_requests_are_refused() {
        let mut builder = FlatBufferBuilder::new();
        let requests: Vec<_> = (0..=MAX_REQUESTS_PER_FRAME as u64)
            .map(|id| {
                let op = client::Register::create(&mut builder, &client::RegisterArgs {});
                client::Request::create(
                    &mut builder,
                    &client::RequestArgs {
                        id,
                        op_type: client::Op::Register,
                        op: Some(op.as_union_value()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let requests = builder.create_vector(&requests);
        let batch = client::RequestBatch::create(
            &mut builder,
            &client::RequestBatchArgs {
                requests: Some(requests),
            },
        );
        builder.finish_minimal(batch);
        assert_eq!(
            verify(FrameKind::ClientRequest, builder.finished_data()).unwrap_err(),
            BodyError::TooManyItems {
                kind: FrameKind::ClientRequest,
                what: "requests",
                count: MAX_REQUESTS_PER_FRAME + 1,
                max: MAX_REQUESTS_PER_FRAME,
            }
        );
    }

    /// Every truncation and every single flipped bit of a valid body is either refused or
    /// yields a readable accessor; none panics. (The frame's checksum catches such damage on
    /// the wire; this is the verifier's own guard.)
    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let body = hello_body();
        for cut in 0..body.len() {
            let _ = verify(FrameKind::Hello, &body[..cut]);
        }
        for bit in 0..body.len() * 8 {
            let mut flipped = body.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Ok(Body::Hello(hello)) = verify(FrameKind::Hello, &flipped) {
                let _ = (hello.cluster_id(), hello.role(), hello.core_count());
            }
        }
    }
}
