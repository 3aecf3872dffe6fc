//! Tests of the wire conversions: every variant round-trips from a seeded generator, and
//! garbage, truncated and bit-flipped bodies are refused (or read as something) without a
//! panic. `SEED=<n>` is not read here (the core's tests take no environment); each test prints
//! the seed it uses and loops over a fixed range of them.

use bytes::{Bytes, BytesMut};
use shardcore_protocol::flatbuffers::{self, FlatBufferBuilder};
use shardcore_protocol::limits::{MAX_FRAME_BYTES, MAX_REQUESTS_PER_FRAME};
use shardcore_protocol::schema::{client as fb_client, hello as fb_hello, raft as fb_raft};
use shardcore_protocol::{BodyError, Frame, FrameKind};

use super::*;
use crate::kv::command::{Consistency, KvError, Op, Reply, Request};
use crate::raft::{
    AppendResponse, CampaignReason, Entry, EntryKind, Message, MessageBody, SnapshotMeta, VoteKind,
};
use crate::rng::Rng;

/// Seeds each randomized test runs.
const SEEDS: u64 = 200;
/// The number of `MessageBody` variants (with pre- and real votes counted once).
const MESSAGE_VARIANTS: u64 = 11;

/// Random bytes of a random length below `max_len` (empty a quarter of the time).
fn bytes(rng: &mut Rng, max_len: u64) -> Bytes {
    if rng.chance(1, 4) {
        return Bytes::new();
    }
    let len = rng.range(1, max_len.max(2));
    Bytes::from((0..len).map(|_| rng.next_u64() as u8).collect::<Vec<u8>>())
}

/// A number that is often small and sometimes anywhere in u64 (defaults and large values).
fn number(rng: &mut Rng) -> u64 {
    match rng.range(0, 4) {
        0 => 0,
        1 => rng.range(1, 100),
        2 => u64::MAX - rng.range(0, 3),
        _ => rng.next_u64(),
    }
}

fn vote_kind(rng: &mut Rng) -> VoteKind {
    if rng.chance(1, 2) {
        VoteKind::Pre
    } else {
        VoteKind::Real
    }
}

/// A message body of variant `variant` (mod [`MESSAGE_VARIANTS`]) with random fields.
fn message_body(rng: &mut Rng, variant: u64) -> MessageBody {
    match variant % MESSAGE_VARIANTS {
        0 => MessageBody::Vote {
            kind: vote_kind(rng),
            last_index: number(rng),
            last_term: number(rng),
            reason: if rng.chance(1, 2) {
                CampaignReason::Timeout
            } else {
                CampaignReason::Transfer
            },
        },
        1 => MessageBody::VoteResponse {
            kind: vote_kind(rng),
            granted: rng.chance(1, 2),
        },
        2 => MessageBody::Append {
            prev_index: number(rng),
            prev_term: number(rng),
            entries: (0..rng.range(0, 5))
                .map(|_| Entry {
                    term: number(rng),
                    index: number(rng),
                    kind: if rng.chance(1, 3) {
                        EntryKind::Noop
                    } else {
                        EntryKind::Normal
                    },
                    data: bytes(rng, 64),
                })
                .collect(),
            commit: number(rng),
        },
        3 => MessageBody::AppendResponse(if rng.chance(1, 2) {
            AppendResponse::Accepted {
                match_index: number(rng),
            }
        } else {
            AppendResponse::Rejected {
                rejected_index: number(rng),
                hint_index: number(rng),
                hint_term: number(rng),
            }
        }),
        4 => MessageBody::Heartbeat {
            commit: number(rng),
            read_round: number(rng),
        },
        5 => MessageBody::HeartbeatResponse {
            read_round: number(rng),
        },
        6 => MessageBody::SnapshotChunk {
            meta: SnapshotMeta {
                index: number(rng),
                term: number(rng),
            },
            total_bytes: number(rng),
            offset: number(rng),
            data: bytes(rng, 256),
        },
        7 => MessageBody::SnapshotResponse {
            index: number(rng),
            next_offset: number(rng),
            done: rng.chance(1, 2),
        },
        8 => MessageBody::TimeoutNow,
        9 => MessageBody::ReadIndex {
            context: bytes(rng, 16),
        },
        _ => MessageBody::ReadIndexResponse {
            context: bytes(rng, 16),
            index: number(rng),
        },
    }
}

/// A batch of messages from `from` to `to`, covering every variant once in a random rotation,
/// plus random extra messages.
fn raft_batch(rng: &mut Rng, from: u64, to: u64) -> Vec<Message> {
    let first = rng.range(0, MESSAGE_VARIANTS);
    let count = MESSAGE_VARIANTS + rng.range(0, 8);
    (0..count)
        .map(|i| {
            let variant = if i < MESSAGE_VARIANTS {
                first + i
            } else {
                rng.range(0, MESSAGE_VARIANTS)
            };
            Message {
                group: number(rng),
                from,
                to,
                term: number(rng),
                body: message_body(rng, variant),
            }
        })
        .collect()
}

/// The order a decoded batch comes back in: heartbeats, heartbeat responses, the rest.
fn decoded_order(messages: &[Message]) -> Vec<Message> {
    let rank = |m: &Message| match m.body {
        MessageBody::Heartbeat { .. } => 0,
        MessageBody::HeartbeatResponse { .. } => 1,
        _ => 2,
    };
    let mut ordered = messages.to_vec();
    ordered.sort_by_key(rank); // stable: each kind keeps its order
    ordered
}

/// An operation of variant `variant` (mod 6) with random fields.
fn op(rng: &mut Rng, variant: u64) -> Op {
    match variant % 6 {
        0 => Op::Register,
        1 => Op::Get {
            key: bytes(rng, 32),
        },
        2 => Op::Put {
            key: bytes(rng, 32),
            value: bytes(rng, 64),
        },
        3 => Op::Append {
            key: bytes(rng, 32),
            value: bytes(rng, 64),
        },
        4 => Op::Delete {
            key: bytes(rng, 32),
        },
        _ => Op::CompareAndSwap {
            key: bytes(rng, 32),
            expected: rng.chance(1, 2).then(|| bytes(rng, 16)),
            new: bytes(rng, 64),
        },
    }
}

fn consistency(rng: &mut Rng) -> Consistency {
    if rng.chance(1, 2) {
        Consistency::Linearizable
    } else {
        Consistency::Serializable
    }
}

fn client_request(rng: &mut Rng, variant: u64) -> ClientRequest {
    let op = op(rng, variant);
    // Only a Get carries its consistency; a write decodes as linearizable, which it is.
    let consistency = match op {
        Op::Get { .. } => consistency(rng),
        _ => Consistency::Linearizable,
    };
    ClientRequest {
        id: number(rng),
        group: number(rng),
        request: Request {
            client: number(rng),
            seq: number(rng),
            op,
            consistency,
        },
    }
}

/// Every error a reply can carry.
const REPLY_ERRORS: [ReplyError; 12] = [
    ReplyError::Kv(KvError::WrongLeader { leader: 0 }),
    ReplyError::Kv(KvError::KeyTooLarge),
    ReplyError::Kv(KvError::ValueTooLarge),
    ReplyError::Kv(KvError::SessionExpired),
    ReplyError::Kv(KvError::Stale),
    ReplyError::Kv(KvError::Timeout),
    ReplyError::Kv(KvError::Busy),
    ReplyError::WrongGroup,
    ReplyError::WrongShard { config_num: 0 },
    ReplyError::BadRequest,
    ReplyError::Unavailable,
    ReplyError::ShuttingDown,
];
/// Reply shapes: six successes, then the errors.
const REPLY_VARIANTS: u64 = 6 + REPLY_ERRORS.len() as u64;

fn client_reply(rng: &mut Rng, variant: u64) -> ClientReply {
    let result = match variant % REPLY_VARIANTS {
        0 => Ok(Reply::Done),
        1 => Ok(Reply::Value(Some(bytes(rng, 64)))),
        2 => Ok(Reply::Value(None)),
        3 => Ok(Reply::Registered {
            client: rng.range(1, u64::MAX),
        }),
        4 => Ok(Reply::Swapped {
            swapped: true,
            found: rng.chance(1, 2).then(|| bytes(rng, 16)),
        }),
        5 => Ok(Reply::Swapped {
            swapped: false,
            found: rng.chance(1, 2).then(|| bytes(rng, 16)),
        }),
        error => match REPLY_ERRORS[(error - 6) as usize] {
            ReplyError::Kv(KvError::WrongLeader { .. }) => {
                Err(ReplyError::Kv(KvError::WrongLeader {
                    leader: number(rng),
                }))
            }
            ReplyError::WrongShard { .. } => Err(ReplyError::WrongShard {
                config_num: number(rng),
            }),
            other => Err(other),
        },
    };
    ClientReply {
        id: number(rng),
        result,
        consistency: consistency(rng),
    }
}

/// `body` framed as `kind`, then taken off a read buffer as a connection would: checked.
fn framed(kind: FrameKind, body: Result<&[u8], EncodeError>) -> Frame {
    let mut wire = BytesMut::new();
    shardcore_protocol::encode(kind, body.expect("an encodable body"), &mut wire).unwrap();
    let frame = shardcore_protocol::decode(&mut wire)
        .expect("a valid frame")
        .expect("a whole frame");
    assert!(wire.is_empty(), "one frame only");
    assert_eq!(frame.kind, kind);
    frame
}

/// Every Raft message variant, in batches from a seeded generator, survives encode, frame check
/// and decode: the same messages, heartbeats first (see `raft.rs`), data sliced from the body.
#[test]
fn raft_batches_round_trip() {
    let mut encoder = Encoder::new();
    for seed in 0..SEEDS {
        println!("SEED={seed}");
        let mut rng = Rng::stream(seed, "wire-raft");
        let (from, to) = (number(&mut rng), number(&mut rng));
        let messages = raft_batch(&mut rng, from, to);
        let frame = framed(
            FrameKind::PeerRaft,
            encoder.raft_batch_body(from, to, &messages),
        );
        let mut decoded = vec![Message {
            group: 1,
            from: 2,
            to: 3,
            term: 4,
            body: MessageBody::TimeoutNow,
        }];
        decode_raft_batch(&frame.body, &mut decoded).unwrap();
        assert_eq!(decoded[1..], decoded_order(&messages)[..], "SEED={seed}");
        // Entry data is a slice of the frame body, not a copy.
        for message in &decoded {
            if let MessageBody::Append { entries, .. } = &message.body {
                for entry in entries.iter().filter(|e| !e.data.is_empty()) {
                    let body_range = frame.body.as_ptr_range();
                    assert!(body_range.contains(&entry.data.as_ptr()), "SEED={seed}");
                }
            }
        }
    }
}

/// An empty batch is a valid frame and decodes to nothing.
#[test]
fn empty_raft_batch_round_trips() {
    let frame = framed(
        FrameKind::PeerRaft,
        Encoder::new().raft_batch_body(1, 2, &[]),
    );
    let mut decoded = Vec::new();
    decode_raft_batch(&frame.body, &mut decoded).unwrap();
    assert!(decoded.is_empty());
}

/// A message whose sender or receiver is not the batch's is refused, naming it.
#[test]
fn raft_batch_refuses_strays() {
    let message = Message {
        group: 9,
        from: 1,
        to: 3,
        term: 1,
        body: MessageBody::TimeoutNow,
    };
    assert_eq!(
        Encoder::new().raft_batch_body(1, 2, &[message]),
        Err(EncodeError::WrongEndpoints {
            group: 9,
            from: 1,
            to: 3
        })
    );
}

/// A batch too large for one frame is refused (before anything is built).
#[test]
fn oversized_raft_batch_is_refused() {
    let entry = Entry {
        term: 1,
        index: 1,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![0u8; MAX_FRAME_BYTES as usize]),
    };
    let message = Message {
        group: 1,
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry],
            commit: 0,
        },
    };
    let mut encoder = Encoder::new();
    let result = encoder.raft_batch_body(1, 2, &[message]);
    assert!(
        matches!(result, Err(EncodeError::TooLarge { .. })),
        "{result:?}"
    );
}

/// Every operation, with both consistencies for Get and both kinds of CAS expectation, survives
/// a request batch's round trip.
#[test]
fn client_requests_round_trip() {
    let mut encoder = Encoder::new();
    for seed in 0..SEEDS {
        println!("SEED={seed}");
        let mut rng = Rng::stream(seed, "wire-requests");
        let count = 6 + rng.range(0, 10);
        let first = rng.range(0, 6);
        let requests: Vec<_> = (0..count)
            .map(|i| client_request(&mut rng, first + i))
            .collect();
        let frame = framed(FrameKind::ClientRequest, encoder.requests_body(&requests));
        let mut decoded = Vec::new();
        decode_requests(&frame.body, &mut decoded).unwrap();
        assert_eq!(decoded, requests, "SEED={seed}");
    }
}

/// CompareAndSwap keeps "expected absent" apart from "expected the empty value".
#[test]
fn cas_expectations_stay_distinct() {
    for expected in [None, Some(Bytes::new())] {
        let request = ClientRequest {
            id: 1,
            group: 2,
            request: Request {
                client: 5,
                seq: 6,
                op: Op::CompareAndSwap {
                    key: Bytes::from_static(b"k"),
                    expected: expected.clone(),
                    new: Bytes::from_static(b"v"),
                },
                consistency: Consistency::Linearizable,
            },
        };
        let mut encoder = Encoder::new();
        let frame = framed(FrameKind::ClientRequest, encoder.requests_body(&[request]));
        let mut decoded = Vec::new();
        decode_requests(&frame.body, &mut decoded).unwrap();
        let Op::CompareAndSwap { expected: got, .. } = &decoded[0].request.op else {
            panic!("not a CAS: {decoded:?}");
        };
        assert_eq!(got, &expected);
    }
}

/// Every success shape and every error survives a reply batch's round trip.
#[test]
fn client_replies_round_trip() {
    let mut encoder = Encoder::new();
    for seed in 0..SEEDS {
        println!("SEED={seed}");
        let mut rng = Rng::stream(seed, "wire-replies");
        let first = rng.range(0, REPLY_VARIANTS);
        let count = REPLY_VARIANTS + rng.range(0, 10);
        let replies: Vec<_> = (0..count)
            .map(|i| client_reply(&mut rng, first + i))
            .collect();
        let frame = framed(FrameKind::ClientResponse, encoder.replies_body(&replies));
        let mut decoded = Vec::new();
        decode_replies(&frame.body, &mut decoded).unwrap();
        assert_eq!(decoded, replies, "SEED={seed}");
    }
}

/// A turn's replies whose values together pass the frame limit go out in several frames, each
/// within the limit, and decode back to all of them in order (they were dropped whole before).
#[test]
fn replies_past_the_frame_limit_are_split_by_size() {
    let value = Bytes::from(vec![7u8; crate::kv::command::MAX_VALUE_BYTES]);
    let count = 2 * MAX_FRAME_BYTES as usize / value.len() + 3;
    let replies: Vec<ClientReply> = (0..count as u64)
        .map(|id| ClientReply {
            id,
            result: Ok(Reply::Value(Some(value.slice(..value.len() - id as usize)))),
            consistency: Consistency::Linearizable,
        })
        .collect();
    let mut encoder = Encoder::new();
    assert!(matches!(
        encoder.replies_body(&replies),
        Err(EncodeError::TooLarge { .. })
    ));
    let mut bodies = Vec::new();
    encoder
        .replies_bodies(&replies, &mut |body| {
            bodies.push(Bytes::copy_from_slice(body))
        })
        .expect("every reply fits a frame of its own");
    assert!(bodies.len() >= 3, "{} frames", bodies.len());
    let mut decoded = Vec::new();
    for body in &bodies {
        assert!(
            body.len() <= MAX_FRAME_BYTES as usize,
            "{} bytes",
            body.len()
        );
        decode_replies(body, &mut decoded).expect("decodes");
    }
    assert_eq!(decoded, replies);
}

/// A KV response becomes the reply to its request id unchanged.
#[test]
fn reply_from_response_keeps_the_result() {
    let response = crate::kv::command::Response {
        client: 3,
        seq: 4,
        result: Err(KvError::WrongLeader { leader: 2 }),
        consistency: Consistency::Serializable,
    };
    assert_eq!(
        ClientReply::from_response(77, &response),
        ClientReply {
            id: 77,
            result: Err(ReplyError::Kv(KvError::WrongLeader { leader: 2 })),
            consistency: Consistency::Serializable,
        }
    );
}

/// A shard group's response maps onto the KV statuses: "wrong group" becomes WrongShard with
/// the group's configuration number, a full session table is Busy (nothing applied: retry),
/// an unsupported operation is BadRequest, the rest keep their KV names; each survives a frame.
#[test]
fn shard_responses_map_onto_kv_statuses() {
    use crate::shardkv::{ShardKvError, ShardResponse};
    let cases = [
        (
            Err(ShardKvError::WrongGroup { config: 7 }),
            Err(ReplyError::WrongShard { config_num: 7 }),
        ),
        (
            Err(ShardKvError::WrongLeader { leader: 3 }),
            Err(ReplyError::Kv(KvError::WrongLeader { leader: 3 })),
        ),
        (
            Err(ShardKvError::TooManySessions),
            Err(ReplyError::Kv(KvError::Busy)),
        ),
        (Err(ShardKvError::Unsupported), Err(ReplyError::BadRequest)),
        (
            Err(ShardKvError::Stale),
            Err(ReplyError::Kv(KvError::Stale)),
        ),
        (
            Err(ShardKvError::ValueTooLarge),
            Err(ReplyError::Kv(KvError::ValueTooLarge)),
        ),
        (Ok(Reply::Done), Ok(Reply::Done)),
    ];
    let mut encoder = Encoder::new();
    for (result, wire) in cases {
        let response = ShardResponse {
            client: 5,
            seq: 6,
            result,
            consistency: Consistency::Linearizable,
        };
        let reply = ClientReply::from_shard_response(11, &response);
        assert_eq!(reply.result, wire, "{response:?}");
        let body =
            Bytes::copy_from_slice(encoder.replies_body(std::slice::from_ref(&reply)).unwrap());
        let mut decoded = Vec::new();
        decode_replies(&body, &mut decoded).expect("decodes");
        assert_eq!(decoded, vec![reply]);
    }
}

/// WrongShard carries the configuration number it was judged by, through a frame and back;
/// other statuses carry none, and a number sent with them anyway is not read.
#[test]
fn wrong_shard_carries_its_config_number() {
    let mut encoder = Encoder::new();
    for config_num in [0, 1, 41, u64::MAX] {
        let reply = ClientReply {
            id: 9,
            result: Err(ReplyError::WrongShard { config_num }),
            consistency: Consistency::Linearizable,
        };
        let body =
            Bytes::copy_from_slice(encoder.replies_body(std::slice::from_ref(&reply)).unwrap());
        let mut decoded = Vec::new();
        decode_replies(&body, &mut decoded).expect("decodes");
        assert_eq!(decoded, vec![reply]);
    }
    let mut builder = shardcore_protocol::flatbuffers::FlatBufferBuilder::new();
    let args = fb_client::ReplyArgs {
        id: 3,
        status: fb_client::Status::Busy,
        config_num: 12,
        ..Default::default()
    };
    let reply = fb_client::Reply::create(&mut builder, &args);
    let replies = Some(builder.create_vector(&[reply]));
    let batch = fb_client::ReplyBatch::create(&mut builder, &fb_client::ReplyBatchArgs { replies });
    builder.finish_minimal(batch);
    let body = Bytes::copy_from_slice(builder.finished_data());
    let mut decoded = Vec::new();
    decode_replies(&body, &mut decoded).expect("decodes");
    assert_eq!(decoded[0].result, Err(ReplyError::Kv(KvError::Busy)));
}

/// More requests than a frame may carry are refused by the encoder, and by the decoder when a
/// peer sends them anyway.
#[test]
fn request_counts_are_bounded() {
    let request = ClientRequest {
        id: 1,
        group: 1,
        request: Request {
            client: 0,
            seq: 0,
            op: Op::Register,
            consistency: Consistency::Linearizable,
        },
    };
    let requests = vec![request; MAX_REQUESTS_PER_FRAME + 1];
    assert_eq!(
        Encoder::new().requests_body(&requests),
        Err(EncodeError::TooManyItems {
            count: MAX_REQUESTS_PER_FRAME + 1,
            max: MAX_REQUESTS_PER_FRAME
        })
    );
    // Build the oversized batch by hand, as a misbehaving client would.
    let mut builder = FlatBufferBuilder::new();
    let offsets: Vec<_> = requests
        .iter()
        .map(|r| {
            let op = fb_client::Register::create(&mut builder, &fb_client::RegisterArgs {});
            let args = fb_client::RequestArgs {
                id: r.id,
                op_type: fb_client::Op::Register,
                op: Some(op.as_union_value()),
                ..Default::default()
            };
            fb_client::Request::create(&mut builder, &args)
        })
        .collect();
    let requests = Some(builder.create_vector(&offsets));
    let batch =
        fb_client::RequestBatch::create(&mut builder, &fb_client::RequestBatchArgs { requests });
    builder.finish_minimal(batch);
    let body = Bytes::copy_from_slice(builder.finished_data());
    let mut decoded = Vec::new();
    assert!(matches!(
        decode_requests(&body, &mut decoded),
        Err(DecodeError::Body(BodyError::TooManyItems { .. }))
    ));
    assert!(decoded.is_empty());
}

/// A Raft batch whose one message is built by `make`.
fn raft_body_with(
    make: impl FnOnce(
        &mut FlatBufferBuilder<'static>,
    ) -> (
        fb_raft::Body,
        Option<flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>>,
    ),
) -> Bytes {
    let mut builder = FlatBufferBuilder::new();
    let (body_type, body) = make(&mut builder);
    let message = fb_raft::Message::create(
        &mut builder,
        &fb_raft::MessageArgs {
            group: 1,
            term: 1,
            body_type,
            body,
        },
    );
    let messages = Some(builder.create_vector(&[message]));
    let batch = fb_raft::RaftBatch::create(
        &mut builder,
        &fb_raft::RaftBatchArgs {
            from: 1,
            to: 2,
            messages,
            ..Default::default()
        },
    );
    builder.finish_minimal(batch);
    Bytes::copy_from_slice(builder.finished_data())
}

/// Values the verifier lets through are judged by the decoder: an unknown enum value, an
/// unknown union variant, a missing body, an AppendResponse that is both or neither, each with
/// an error naming the field; `out` keeps only what it held.
#[test]
fn decoder_names_bad_fields() {
    let cases: Vec<(Bytes, DecodeError)> = vec![
        (
            raft_body_with(|b| {
                let args = fb_raft::VoteArgs {
                    kind: fb_raft::VoteKind(7),
                    ..Default::default()
                };
                let vote = fb_raft::Vote::create(b, &args);
                (fb_raft::Body::Vote, Some(vote.as_union_value()))
            }),
            DecodeError::UnknownEnum {
                field: "Vote.kind",
                value: 7,
            },
        ),
        (
            raft_body_with(|b| {
                let now = fb_raft::TimeoutNow::create(b, &fb_raft::TimeoutNowArgs {});
                (fb_raft::Body(99), Some(now.as_union_value()))
            }),
            DecodeError::UnknownEnum {
                field: "Message.body_type",
                value: 99,
            },
        ),
        (
            raft_body_with(|_| (fb_raft::Body::NONE, None)),
            DecodeError::MissingField {
                field: "Message.body",
            },
        ),
        (
            raft_body_with(|b| {
                let response = fb_raft::AppendResponse::create(
                    b,
                    &fb_raft::AppendResponseArgs {
                        accepted: None,
                        rejected: None,
                    },
                );
                (
                    fb_raft::Body::AppendResponse,
                    Some(response.as_union_value()),
                )
            }),
            DecodeError::Inconsistent {
                field: "AppendResponse",
                why: "exactly one of accepted and rejected must be present",
            },
        ),
    ];
    for (body, expected) in cases {
        let mut out = vec![];
        assert_eq!(decode_raft_batch(&body, &mut out), Err(expected));
        assert!(out.is_empty());
    }
}

/// A Hello round-trips; one with cluster 0 or an unknown role is refused.
#[test]
fn hello_round_trips_and_is_judged() {
    let hello = Hello {
        cluster_id: 42,
        node_id: 3,
        role: HelloRole::Client,
        core_count: 64,
    };
    let mut encoder = Encoder::new();
    let frame = framed(FrameKind::Hello, encoder.hello_body(&hello));
    assert_eq!(decode_hello(&frame.body), Ok(hello));
    let no_cluster = Hello {
        cluster_id: 0,
        ..hello
    };
    let frame = framed(FrameKind::Hello, encoder.hello_body(&no_cluster));
    assert!(matches!(
        decode_hello(&frame.body),
        Err(DecodeError::Inconsistent { .. })
    ));
    let mut builder = FlatBufferBuilder::new();
    let args = fb_hello::HelloArgs {
        cluster_id: 1,
        role: fb_hello::Role(5),
        ..Default::default()
    };
    let root = fb_hello::Hello::create(&mut builder, &args);
    builder.finish_minimal(root);
    assert_eq!(
        decode_hello(builder.finished_data()),
        Err(DecodeError::UnknownEnum {
            field: "Hello.role",
            value: 5
        })
    );
}

/// Runs every decoder over `body`; none may panic. Returns how many accepted it.
fn decode_all(body: &Bytes) -> usize {
    let mut accepted = 0;
    accepted += usize::from(decode_hello(body).is_ok());
    accepted += usize::from(decode_raft_batch(body, &mut Vec::new()).is_ok());
    accepted += usize::from(decode_requests(body, &mut Vec::new()).is_ok());
    accepted += usize::from(decode_replies(body, &mut Vec::new()).is_ok());
    // Errors must print without panicking too.
    if let Err(error) = decode_raft_batch(body, &mut Vec::new()) {
        assert!(!error.to_string().is_empty());
    }
    accepted
}

/// Random bytes, of random lengths, through every decoder: no panic, and (almost) never
/// accepted. Seeded; the seed is printed.
#[test]
fn garbage_bodies_are_refused_without_panic() {
    let mut accepted = 0;
    for seed in 0..SEEDS * 10 {
        let mut rng = Rng::stream(seed, "wire-garbage");
        let body = bytes(&mut rng, 512);
        let hits = decode_all(&body);
        if hits > 0 {
            println!("SEED={seed}: random bytes accepted by {hits} decoders");
        }
        accepted += hits;
    }
    // Random bytes rarely make a valid root; a few may (an empty table is a valid RaftBatch).
    assert!(accepted < (SEEDS * 10 / 20) as usize, "{accepted} accepted");
}

/// Is `truncated` refused, or read exactly as `whole`?
fn same_decoding<T: PartialEq>(
    decode: fn(&Bytes, &mut Vec<T>) -> Result<(), DecodeError>,
    whole: &Bytes,
    truncated: &Bytes,
) -> bool {
    let (mut expected, mut got) = (Vec::new(), Vec::new());
    decode(whole, &mut expected).unwrap();
    decode(truncated, &mut got).is_err() || got == expected
}

/// Every prefix and every single-bit flip of valid bodies of every kind goes through every
/// decoder without a panic. (On the wire the frame checksum refuses such bodies first; this is
/// the decoders' own guard.) A truncated body is refused, or reads as the whole one.
#[test]
fn truncated_and_bit_flipped_bodies_never_panic() {
    let mut rng = Rng::stream(1, "wire-damage");
    let mut encoder = Encoder::new();
    let mut frames = Vec::new();
    let messages = raft_batch(&mut rng, 1, 2);
    let body = encoder.raft_batch_body(1, 2, &messages);
    frames.push(framed(FrameKind::PeerRaft, body));
    let requests: Vec<_> = (0..6).map(|i| client_request(&mut rng, i)).collect();
    let body = encoder.requests_body(&requests);
    frames.push(framed(FrameKind::ClientRequest, body));
    let replies: Vec<_> = (0..REPLY_VARIANTS)
        .map(|i| client_reply(&mut rng, i))
        .collect();
    let body = encoder.replies_body(&replies);
    frames.push(framed(FrameKind::ClientResponse, body));

    for frame in &frames {
        let body = &frame.body;
        for cut in 0..body.len() {
            let truncated = body.slice(..cut);
            decode_all(&truncated);
            // The builder may leave alignment padding at the very end, which a cut can remove
            // harmlessly; anything accepted must then read exactly as the whole body.
            let same = match frame.kind {
                FrameKind::PeerRaft => same_decoding(decode_raft_batch, body, &truncated),
                FrameKind::ClientRequest => same_decoding(decode_requests, body, &truncated),
                _ => same_decoding(decode_replies, body, &truncated),
            };
            assert!(same, "{:?} body cut at {cut} read differently", frame.kind);
        }
        for bit in 0..body.len() * 8 {
            let mut flipped = body.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            decode_all(&Bytes::from(flipped));
        }
    }
}
