//! Client requests and replies: `kv::command::Request` and `Response` on the wire, each with
//! the client's request id, many to a frame.
//!
//! A request carries the Raft group it is for, its session (client id, sequence) and one
//! operation; a Get also carries its
//! consistency (a write is always linearizable, so a decoded write says `Linearizable`).
//! A reply carries the request id, a status and what the status needs: a value, a session id,
//! a leader hint. What happened maps to statuses as follows:
//!
//! | in memory | on the wire |
//! |---|---|
//! | `Ok(Reply::Done)` | `Ok`, ok kind `Done` |
//! | `Ok(Reply::Value(Some(v)))` | `Ok`, ok kind `Value`, value v |
//! | `Ok(Reply::Value(None))` | `NotFound` |
//! | `Ok(Reply::Registered { client })` | `Ok`, ok kind `Registered`, session client |
//! | `Ok(Reply::Swapped { swapped: true, found })` | `Ok`, ok kind `Swapped`, value found |
//! | `Ok(Reply::Swapped { swapped: false, found })` | `CasMismatch`, value found |
//! | `Err(ReplyError::Kv(KvError::WrongLeader { leader }))` | `NotLeader`, leader hint |
//! | `Err(ReplyError::WrongShard { config_num })` | `WrongShard`, config num |
//! | every other `KvError` and [`ReplyError`] | the status of the same name |

use bytes::Bytes;
use shardcore_protocol::flatbuffers::{UnionWIPOffset, WIPOffset};
use shardcore_protocol::limits::MAX_REQUESTS_PER_FRAME;
use shardcore_protocol::schema::client as fb;

use super::{check_estimate, slice_of, DecodeError, EncodeError, Encoder, RequestId};
use crate::kv::command::{Consistency, KvError, Op, Reply, Request, Response};
use crate::raft::GroupId;
use crate::shardkv::{ShardKvError, ShardResponse};

/// Bytes a request or reply takes beyond its keys and values, for the size estimate made
/// before building (ids, session, tables, vtable offsets).
const ITEM_OVERHEAD_BYTES: usize = 96;

/// A request as a client sends it: the KV request and the id its reply will echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// Echoed by the reply.
    pub id: RequestId,
    /// The Raft group the request is for: the one serving its key (a session is registered
    /// with the group it will be used with).
    pub group: GroupId,
    /// The session, the sequence, the operation and (for a Get) its consistency.
    pub request: Request,
}

/// A reply as a client receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    /// The request's id.
    pub id: RequestId,
    /// What happened.
    pub result: Result<Reply, ReplyError>,
    /// For a read: how it was served (a serializable read says so).
    pub consistency: Consistency,
}

impl ClientReply {
    /// The reply to request `id` that the KV service answered with `response`.
    pub fn from_response(id: RequestId, response: &Response) -> ClientReply {
        ClientReply {
            id,
            result: response.result.clone().map_err(ReplyError::Kv),
            consistency: response.consistency,
        }
    }

    /// The reply to request `id` that a shard group answered with `response`. The sharded KV
    /// speaks the KV request shape, so its errors map onto the same statuses:
    ///
    /// | `ShardKvError` | on the wire |
    /// |---|---|
    /// | `WrongGroup { config }` | `WrongShard`, config num `config` |
    /// | `WrongLeader`, `KeyTooLarge`, `ValueTooLarge`, `SessionExpired`, `Stale`, `Timeout`, `Busy` | the KV status of the same name |
    /// | `TooManySessions` | `Busy`: nothing was applied; the client retries later with the same sequence |
    /// | `Unsupported` (a Register) | `BadRequest` |
    pub fn from_shard_response(id: RequestId, response: &ShardResponse) -> ClientReply {
        ClientReply {
            id,
            result: response.result.clone().map_err(shard_error),
            consistency: response.consistency,
        }
    }
}

/// A shard group's error as the wire says it (see [`ClientReply::from_shard_response`]).
fn shard_error(error: ShardKvError) -> ReplyError {
    match error {
        ShardKvError::WrongGroup { config } => ReplyError::WrongShard { config_num: config },
        ShardKvError::TooManySessions => ReplyError::Kv(KvError::Busy),
        ShardKvError::Unsupported => ReplyError::BadRequest,
        // The rest are the variants the two services share.
        shared => shared
            .as_kv()
            .map_or(ReplyError::BadRequest, ReplyError::Kv),
    }
}

/// Why a request did not succeed: the KV service's errors, and the node's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The KV state machine or its replica refused or gave up.
    Kv(KvError),
    /// Reserved for the sharded KV: this node hosts no replica of the group named.
    WrongGroup,
    /// For the sharded KV: the key's shard is not served by this group now, judged by the shard
    /// controller's configuration `config_num` (0: not said). A client behind that number
    /// refreshes its configuration (`client::ShardRouter::needs_refresh`).
    WrongShard {
        /// The configuration the group judged by.
        config_num: u64,
    },
    /// The request was well-formed FlatBuffers but not a valid request.
    BadRequest,
    /// The replica cannot serve now (no leader known, recovering).
    Unavailable,
    /// The node is stopping.
    ShuttingDown,
}

impl From<KvError> for ReplyError {
    fn from(error: KvError) -> Self {
        ReplyError::Kv(error)
    }
}

impl Encoder {
    /// The body of a `ClientRequest` frame carrying `requests`.
    pub fn requests_body(&mut self, requests: &[ClientRequest]) -> Result<&[u8], EncodeError> {
        check_count(requests.len())?;
        check_estimate(requests.iter().map(request_estimate).sum())?;
        self.builder.reset();
        self.requests.clear();
        for request in requests {
            let (op_type, op) = self.op(&request.request);
            let args = fb::RequestArgs {
                id: request.id,
                group: request.group,
                client: request.request.client,
                seq: request.request.seq,
                op_type,
                op: Some(op),
            };
            let offset = fb::Request::create(&mut self.builder, &args);
            self.requests.push(offset);
        }
        let requests = Some(self.builder.create_vector(&self.requests));
        let batch = fb::RequestBatch::create(&mut self.builder, &fb::RequestBatchArgs { requests });
        self.builder.finish_minimal(batch);
        self.finished_body()
    }

    /// The body of a `ClientResponse` frame carrying `replies`.
    pub fn replies_body(&mut self, replies: &[ClientReply]) -> Result<&[u8], EncodeError> {
        check_count(replies.len())?;
        check_estimate(replies.iter().map(reply_estimate).sum())?;
        self.builder.reset();
        self.replies.clear();
        for reply in replies {
            let offset = self.reply(reply);
            self.replies.push(offset);
        }
        let replies = Some(self.builder.create_vector(&self.replies));
        let batch = fb::ReplyBatch::create(&mut self.builder, &fb::ReplyBatchArgs { replies });
        self.builder.finish_minimal(batch);
        self.finished_body()
    }

    /// Encodes `replies` into as many frame bodies as the frame limit needs, in order, handing
    /// each to `emit`: up to [`MAX_REQUESTS_PER_FRAME`] a body, and a batch whose values
    /// together pass the limit is halved until each half fits (one reply always fits: a value
    /// is at most `MAX_VALUE_BYTES`). Returns the error of a single reply that cannot be
    /// encoded, after emitting the others.
    ///
    /// [`MAX_REQUESTS_PER_FRAME`]: shardcore_protocol::limits::MAX_REQUESTS_PER_FRAME
    pub fn replies_bodies(
        &mut self,
        replies: &[ClientReply],
        emit: &mut impl FnMut(&[u8]),
    ) -> Result<(), EncodeError> {
        let mut result = Ok(());
        for chunk in replies.chunks(shardcore_protocol::limits::MAX_REQUESTS_PER_FRAME) {
            if let Err(e) = self.replies_split(chunk, emit) {
                result = Err(e);
            }
        }
        result
    }

    fn replies_split(
        &mut self,
        replies: &[ClientReply],
        emit: &mut impl FnMut(&[u8]),
    ) -> Result<(), EncodeError> {
        match self.replies_body(replies) {
            Ok(body) => {
                emit(body);
                Ok(())
            }
            Err(EncodeError::TooLarge { .. }) if replies.len() > 1 => {
                let (first, second) = replies.split_at(replies.len() / 2);
                let first = self.replies_split(first, emit);
                let second = self.replies_split(second, emit);
                first.and(second)
            }
            Err(e) => Err(e),
        }
    }

    /// The operation union of one request.
    fn op(&mut self, request: &Request) -> (fb::Op, WIPOffset<UnionWIPOffset>) {
        let builder = &mut self.builder;
        match &request.op {
            Op::Register => {
                let register = fb::Register::create(builder, &fb::RegisterArgs {});
                (fb::Op::Register, register.as_union_value())
            }
            Op::Get { key } => {
                let key = Some(builder.create_vector(&key[..]));
                let consistency = consistency_to_wire(request.consistency);
                let get = fb::Get::create(builder, &fb::GetArgs { key, consistency });
                (fb::Op::Get, get.as_union_value())
            }
            Op::Put { key, value } => {
                let key = Some(builder.create_vector(&key[..]));
                let value = Some(builder.create_vector(&value[..]));
                let put = fb::Put::create(builder, &fb::PutArgs { key, value });
                (fb::Op::Put, put.as_union_value())
            }
            Op::Append { key, value } => {
                let key = Some(builder.create_vector(&key[..]));
                let value = Some(builder.create_vector(&value[..]));
                let append = fb::Append::create(builder, &fb::AppendArgs { key, value });
                (fb::Op::Append, append.as_union_value())
            }
            Op::Delete { key } => {
                let key = Some(builder.create_vector(&key[..]));
                let delete = fb::Delete::create(builder, &fb::DeleteArgs { key });
                (fb::Op::Delete, delete.as_union_value())
            }
            Op::CompareAndSwap { key, expected, new } => {
                let key = Some(builder.create_vector(&key[..]));
                // Present but empty is "expected the empty value"; absent is "expected absent".
                let expected = expected.as_ref().map(|e| builder.create_vector(&e[..]));
                let new_value = Some(builder.create_vector(&new[..]));
                let args = fb::CompareAndSwapArgs {
                    key,
                    expected,
                    new_value,
                };
                let cas = fb::CompareAndSwap::create(builder, &args);
                (fb::Op::CompareAndSwap, cas.as_union_value())
            }
        }
    }

    /// One reply table.
    fn reply(&mut self, reply: &ClientReply) -> WIPOffset<fb::Reply<'static>> {
        let builder = &mut self.builder;
        let mut args = fb::ReplyArgs {
            id: reply.id,
            consistency: consistency_to_wire(reply.consistency),
            ..Default::default()
        };
        let mut value = None;
        match &reply.result {
            Ok(Reply::Done) => args.ok = fb::OkKind::Done,
            Ok(Reply::Value(Some(found))) => {
                args.ok = fb::OkKind::Value;
                value = Some(found);
            }
            Ok(Reply::Value(None)) => args.status = fb::Status::NotFound,
            Ok(Reply::Registered { client }) => {
                args.ok = fb::OkKind::Registered;
                args.session = *client;
            }
            Ok(Reply::Swapped { swapped, found }) => {
                if *swapped {
                    args.ok = fb::OkKind::Swapped;
                } else {
                    args.status = fb::Status::CasMismatch;
                }
                value = found.as_ref();
            }
            Err(ReplyError::Kv(KvError::WrongLeader { leader })) => {
                args.status = fb::Status::NotLeader;
                args.leader_hint = *leader;
            }
            Err(ReplyError::WrongShard { config_num }) => {
                args.status = fb::Status::WrongShard;
                args.config_num = *config_num;
            }
            Err(error) => args.status = error_status(*error),
        }
        args.value = value.map(|value| builder.create_vector(&value[..]));
        fb::Reply::create(builder, &args)
    }
}

/// Decodes a `ClientRequest` frame body, appending its requests to `out`. Keys and values are
/// slices of `body`. On error `out` is left as it was.
pub fn decode_requests(body: &Bytes, out: &mut Vec<ClientRequest>) -> Result<(), DecodeError> {
    let start = out.len();
    let result = decode_requests_into(body, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Decodes a `ClientResponse` frame body, appending its replies to `out`. Values are slices of
/// `body`. On error `out` is left as it was.
pub fn decode_replies(body: &Bytes, out: &mut Vec<ClientReply>) -> Result<(), DecodeError> {
    let start = out.len();
    let result = decode_replies_into(body, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn decode_requests_into(body: &Bytes, out: &mut Vec<ClientRequest>) -> Result<(), DecodeError> {
    let requests = shardcore_protocol::body::verify_request_batch(body)?.requests();
    out.reserve(requests.len());
    for request in requests {
        out.push(decode_request(body, &request)?);
    }
    Ok(())
}

fn decode_replies_into(body: &Bytes, out: &mut Vec<ClientReply>) -> Result<(), DecodeError> {
    let replies = shardcore_protocol::body::verify_reply_batch(body)?.replies();
    out.reserve(replies.len());
    for reply in replies {
        out.push(decode_reply(body, &reply)?);
    }
    Ok(())
}

fn decode_request(body: &Bytes, request: &fb::Request<'_>) -> Result<ClientRequest, DecodeError> {
    let missing = DecodeError::MissingField {
        field: "Request.op",
    };
    let mut consistency = Consistency::Linearizable;
    let op = match request.op_type() {
        fb::Op::Register => {
            request.op_as_register().ok_or(missing)?;
            Op::Register
        }
        fb::Op::Get => {
            let get = request.op_as_get().ok_or(missing)?;
            consistency = consistency_from_wire(get.consistency(), "Get.consistency")?;
            Op::Get {
                key: slice_of(body, Some(get.key())),
            }
        }
        fb::Op::Put => {
            let put = request.op_as_put().ok_or(missing)?;
            Op::Put {
                key: slice_of(body, Some(put.key())),
                value: slice_of(body, Some(put.value())),
            }
        }
        fb::Op::Append => {
            let append = request.op_as_append().ok_or(missing)?;
            Op::Append {
                key: slice_of(body, Some(append.key())),
                value: slice_of(body, Some(append.value())),
            }
        }
        fb::Op::Delete => {
            let delete = request.op_as_delete().ok_or(missing)?;
            Op::Delete {
                key: slice_of(body, Some(delete.key())),
            }
        }
        fb::Op::CompareAndSwap => {
            let cas = request.op_as_compare_and_swap().ok_or(missing)?;
            Op::CompareAndSwap {
                key: slice_of(body, Some(cas.key())),
                // Absent and present-but-empty differ: keep the difference.
                expected: cas
                    .expected()
                    .map(|expected| slice_of(body, Some(expected))),
                new: slice_of(body, Some(cas.new_value())),
            }
        }
        fb::Op::NONE => return Err(missing),
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "Request.op_type",
                value: other.0,
            })
        }
    };
    Ok(ClientRequest {
        id: request.id(),
        group: request.group(),
        request: Request {
            client: request.client(),
            seq: request.seq(),
            op,
            consistency,
        },
    })
}

fn decode_reply(body: &Bytes, reply: &fb::Reply<'_>) -> Result<ClientReply, DecodeError> {
    let value = reply.value().map(|value| slice_of(body, Some(value)));
    let result = match reply.status() {
        fb::Status::Ok => Ok(decode_ok(reply, value)?),
        fb::Status::NotFound => Ok(Reply::Value(None)),
        fb::Status::CasMismatch => Ok(Reply::Swapped {
            swapped: false,
            found: value,
        }),
        fb::Status::NotLeader => Err(ReplyError::Kv(KvError::WrongLeader {
            leader: reply.leader_hint(),
        })),
        fb::Status::WrongShard => Err(ReplyError::WrongShard {
            config_num: reply.config_num(),
        }),
        status => Err(status_error(status)?),
    };
    Ok(ClientReply {
        id: reply.id(),
        result,
        consistency: consistency_from_wire(reply.consistency(), "Reply.consistency")?,
    })
}

/// The success an `Ok` reply carries.
fn decode_ok(reply: &fb::Reply<'_>, value: Option<Bytes>) -> Result<Reply, DecodeError> {
    Ok(match reply.ok() {
        fb::OkKind::Done => Reply::Done,
        fb::OkKind::Value => Reply::Value(Some(value.ok_or(DecodeError::MissingField {
            field: "Reply.value",
        })?)),
        // A session id is the index of its Register entry, and indexes start at 1.
        fb::OkKind::Registered if reply.session() == 0 => {
            return Err(DecodeError::Inconsistent {
                field: "Reply.session",
                why: "a Registered reply needs a session id, and 0 is none",
            })
        }
        fb::OkKind::Registered => Reply::Registered {
            client: reply.session(),
        },
        fb::OkKind::Swapped => Reply::Swapped {
            swapped: true,
            found: value,
        },
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "Reply.ok",
                value: other.0,
            })
        }
    })
}

/// The status for an error other than `WrongLeader` and `WrongShard` (which carry a number).
fn error_status(error: ReplyError) -> fb::Status {
    match error {
        ReplyError::Kv(KvError::WrongLeader { .. }) => fb::Status::NotLeader,
        ReplyError::Kv(KvError::KeyTooLarge) => fb::Status::KeyTooLarge,
        ReplyError::Kv(KvError::ValueTooLarge) => fb::Status::ValueTooLarge,
        ReplyError::Kv(KvError::SessionExpired) => fb::Status::SessionExpired,
        ReplyError::Kv(KvError::Stale) => fb::Status::Stale,
        ReplyError::Kv(KvError::Timeout) => fb::Status::Timeout,
        ReplyError::Kv(KvError::Busy) => fb::Status::Busy,
        ReplyError::WrongGroup => fb::Status::WrongGroup,
        ReplyError::WrongShard { .. } => fb::Status::WrongShard,
        ReplyError::BadRequest => fb::Status::BadRequest,
        ReplyError::Unavailable => fb::Status::Unavailable,
        ReplyError::ShuttingDown => fb::Status::ShuttingDown,
    }
}

/// The error an error status names (every status but Ok, NotFound, CasMismatch, NotLeader,
/// WrongShard).
fn status_error(status: fb::Status) -> Result<ReplyError, DecodeError> {
    Ok(match status {
        fb::Status::KeyTooLarge => ReplyError::Kv(KvError::KeyTooLarge),
        fb::Status::ValueTooLarge => ReplyError::Kv(KvError::ValueTooLarge),
        fb::Status::SessionExpired => ReplyError::Kv(KvError::SessionExpired),
        fb::Status::Stale => ReplyError::Kv(KvError::Stale),
        fb::Status::Timeout => ReplyError::Kv(KvError::Timeout),
        fb::Status::Busy => ReplyError::Kv(KvError::Busy),
        fb::Status::WrongGroup => ReplyError::WrongGroup,
        fb::Status::BadRequest => ReplyError::BadRequest,
        fb::Status::Unavailable => ReplyError::Unavailable,
        fb::Status::ShuttingDown => ReplyError::ShuttingDown,
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "Reply.status",
                value: other.0,
            })
        }
    })
}

fn consistency_to_wire(consistency: Consistency) -> fb::Consistency {
    match consistency {
        Consistency::Linearizable => fb::Consistency::Linearizable,
        Consistency::Serializable => fb::Consistency::Serializable,
    }
}

fn consistency_from_wire(
    consistency: fb::Consistency,
    field: &'static str,
) -> Result<Consistency, DecodeError> {
    match consistency {
        fb::Consistency::Linearizable => Ok(Consistency::Linearizable),
        fb::Consistency::Serializable => Ok(Consistency::Serializable),
        other => Err(DecodeError::UnknownEnum {
            field,
            value: other.0,
        }),
    }
}

fn check_count(count: usize) -> Result<(), EncodeError> {
    if count > MAX_REQUESTS_PER_FRAME {
        return Err(EncodeError::TooManyItems {
            count,
            max: MAX_REQUESTS_PER_FRAME,
        });
    }
    Ok(())
}

/// About how many bytes `request` takes in a frame body (its keys and values plus a
/// generous per-item overhead).
pub fn request_estimate(request: &ClientRequest) -> usize {
    let values = match &request.request.op {
        Op::Register | Op::Get { .. } | Op::Delete { .. } => 0,
        Op::Put { value, .. } | Op::Append { value, .. } => value.len(),
        Op::CompareAndSwap { expected, new, .. } => {
            new.len() + expected.as_ref().map_or(0, Bytes::len)
        }
    };
    ITEM_OVERHEAD_BYTES + request.request.op.key().len() + values
}

fn reply_estimate(reply: &ClientReply) -> usize {
    let value = match &reply.result {
        Ok(Reply::Value(Some(value))) => value.len(),
        Ok(Reply::Swapped { found, .. }) => found.as_ref().map_or(0, Bytes::len),
        _ => 0,
    };
    ITEM_OVERHEAD_BYTES + value
}
