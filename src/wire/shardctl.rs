//! Shard controller requests and replies on the wire (`FrameKind::ControllerRequest`,
//! `FrameKind::ControllerReply`, one per frame): `shardctl::CtlRequest` and the controller's
//! results, each with the client's request id.
//!
//! | in memory | on the wire |
//! |---|---|
//! | `Ok(CtlReply::Changed { num })` | `Ok`, ok kind `Changed`, num |
//! | `Ok(CtlReply::Registered { client })` | `Ok`, ok kind `Registered`, session client |
//! | `Ok(CtlReply::Config(config))` | `Ok`, ok kind `Config`, config |
//! | `Err(Ctl(CtlError::WrongLeader { leader }))` | `NotLeader`, leader hint |
//! | `Err(Ctl(CtlError::Invalid(e)))` | `BadRequest`, refused reason and value |
//! | other `CtlError`s, `BadRequest`, `Unavailable` | the status of the same name |
//!
//! Decoding judges what the verifier cannot: unknown enum values and union variants, counts past
//! the controller's bounds (shards, groups, replicas per group), a group named twice in one
//! join or configuration, a `Registered` without a session id.

use std::collections::BTreeMap;

use bytes::Bytes;
use shardcore_protocol::flatbuffers::{UnionWIPOffset, WIPOffset};
use shardcore_protocol::schema::shardctl as fb;

use super::{check_estimate, DecodeError, EncodeError, Encoder, RequestId};
use crate::kv::command::Consistency;
use crate::raft::GroupId;
use crate::shardctl::config::{MAX_GROUPS, MAX_REPLICAS_PER_GROUP, MAX_SHARDS};
use crate::shardctl::{
    Config, ConfigError, CtlError, CtlOp, CtlReply, CtlRequest, CtlResponse, Replica, LATEST,
};

/// Bytes a request or reply takes beyond its groups and shards (ids, tables, vtables).
const OVERHEAD_BYTES: usize = 128;
/// Bytes one replica takes at most (table, vtable, two fields).
const REPLICA_BYTES: usize = 32;
/// Bytes one group takes beyond its replicas.
const GROUP_BYTES: usize = 32;

/// A controller request as a client sends it: the request and the id its reply will echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerRequest {
    /// Echoed by the reply.
    pub id: RequestId,
    /// The session, the sequence and the operation (always linearizable).
    pub request: CtlRequest,
}

/// Why a controller request did not succeed: the controller's errors, and the node's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerReplyError {
    /// The controller's state machine or replica refused or gave up.
    Ctl(CtlError),
    /// The request was well-formed FlatBuffers but not a valid request.
    BadRequest,
    /// The node runs no controller replica, or cannot serve now.
    Unavailable,
}

/// A controller reply as a client receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerReply {
    /// The request's id.
    pub id: RequestId,
    /// What happened.
    pub result: Result<CtlReply, ControllerReplyError>,
}

impl ControllerReply {
    /// The reply to request `id` that the controller answered with `response`.
    pub fn from_response(id: RequestId, response: &CtlResponse) -> ControllerReply {
        ControllerReply {
            id,
            result: response.result.clone().map_err(ControllerReplyError::Ctl),
        }
    }
}

type GroupsOffset = WIPOffset<
    shardcore_protocol::flatbuffers::Vector<
        'static,
        shardcore_protocol::flatbuffers::ForwardsUOffset<fb::GroupReplicas<'static>>,
    >,
>;

impl Encoder {
    /// The body of a `ControllerRequest` frame carrying `request`.
    pub fn controller_request_body(
        &mut self,
        request: &ControllerRequest,
    ) -> Result<&[u8], EncodeError> {
        let groups_bytes = match &request.request.op {
            CtlOp::Join { groups } => groups_estimate(groups),
            CtlOp::Leave { groups } => 8 * groups.len(),
            _ => 0,
        };
        check_estimate(OVERHEAD_BYTES + groups_bytes)?;
        self.builder.reset();
        let (op_type, op) = self.controller_op(&request.request.op);
        let args = fb::ControllerRequestArgs {
            id: request.id,
            client: request.request.client,
            seq: request.request.seq,
            op_type,
            op: Some(op),
        };
        let root = fb::ControllerRequest::create(&mut self.builder, &args);
        self.builder.finish_minimal(root);
        self.finished_body()
    }

    /// The body of a `ControllerReply` frame carrying `reply`.
    pub fn controller_reply_body(&mut self, reply: &ControllerReply) -> Result<&[u8], EncodeError> {
        let config_bytes = match &reply.result {
            Ok(CtlReply::Config(config)) => {
                8 * config.shards.len() + groups_estimate(&config.groups)
            }
            _ => 0,
        };
        check_estimate(OVERHEAD_BYTES + config_bytes)?;
        self.builder.reset();
        let mut args = fb::ControllerReplyArgs {
            id: reply.id,
            ..Default::default()
        };
        match &reply.result {
            Ok(CtlReply::Changed { num }) => {
                args.ok = fb::ControllerOk::Changed;
                args.num = *num;
            }
            Ok(CtlReply::Registered { client }) => {
                args.ok = fb::ControllerOk::Registered;
                args.session = *client;
            }
            Ok(CtlReply::Config(config)) => {
                args.ok = fb::ControllerOk::Config;
                args.config = Some(self.config(config));
            }
            Err(ControllerReplyError::Ctl(CtlError::WrongLeader { leader })) => {
                args.status = fb::ControllerStatus::NotLeader;
                args.leader_hint = *leader;
            }
            Err(ControllerReplyError::Ctl(CtlError::Invalid(error))) => {
                args.status = fb::ControllerStatus::BadRequest;
                (args.refused, args.refused_value) = refused_to_wire(*error);
            }
            Err(error) => args.status = error_status(*error),
        }
        let root = fb::ControllerReply::create(&mut self.builder, &args);
        self.builder.finish_minimal(root);
        self.finished_body()
    }

    fn controller_op(&mut self, op: &CtlOp) -> (fb::ControllerOp, WIPOffset<UnionWIPOffset>) {
        match op {
            CtlOp::Register => {
                let register = fb::Register::create(&mut self.builder, &fb::RegisterArgs {});
                (fb::ControllerOp::Register, register.as_union_value())
            }
            CtlOp::Join { groups } => {
                let groups = Some(self.groups(groups));
                let join = fb::Join::create(&mut self.builder, &fb::JoinArgs { groups });
                (fb::ControllerOp::Join, join.as_union_value())
            }
            CtlOp::Leave { groups } => {
                let groups = Some(self.builder.create_vector(groups));
                let leave = fb::Leave::create(&mut self.builder, &fb::LeaveArgs { groups });
                (fb::ControllerOp::Leave, leave.as_union_value())
            }
            CtlOp::Move { shard, group } => {
                let args = fb::MoveArgs {
                    shard: *shard,
                    group: *group,
                };
                let moved = fb::Move::create(&mut self.builder, &args);
                (fb::ControllerOp::Move, moved.as_union_value())
            }
            CtlOp::Query { num } => {
                let num = (*num != LATEST).then_some(*num);
                let query = fb::Query::create(&mut self.builder, &fb::QueryArgs { num });
                (fb::ControllerOp::Query, query.as_union_value())
            }
        }
    }

    fn groups(&mut self, groups: &BTreeMap<GroupId, Vec<Replica>>) -> GroupsOffset {
        let mut tables = Vec::with_capacity(groups.len());
        for (&group, replicas) in groups {
            let replicas: Vec<_> = replicas
                .iter()
                .map(|r| {
                    let args = fb::ReplicaArgs {
                        node_id: r.node,
                        core: r.core,
                    };
                    fb::Replica::create(&mut self.builder, &args)
                })
                .collect();
            let replicas = Some(self.builder.create_vector(&replicas));
            let args = fb::GroupReplicasArgs { group, replicas };
            tables.push(fb::GroupReplicas::create(&mut self.builder, &args));
        }
        self.builder.create_vector(&tables)
    }

    fn config(&mut self, config: &Config) -> WIPOffset<fb::Config<'static>> {
        let groups = Some(self.groups(&config.groups));
        let shards = Some(self.builder.create_vector(&config.shards));
        let args = fb::ConfigArgs {
            num: config.num,
            shards,
            groups,
        };
        fb::Config::create(&mut self.builder, &args)
    }
}

/// Decodes a `ControllerRequest` frame body.
pub fn decode_controller_request(body: &Bytes) -> Result<ControllerRequest, DecodeError> {
    let request = shardcore_protocol::body::verify_controller_request(body)?;
    let missing = DecodeError::MissingField {
        field: "ControllerRequest.op",
    };
    let op = match request.op_type() {
        fb::ControllerOp::Register => {
            request.op_as_register().ok_or(missing)?;
            CtlOp::Register
        }
        fb::ControllerOp::Join => CtlOp::Join {
            groups: decode_groups(request.op_as_join().ok_or(missing)?.groups())?,
        },
        fb::ControllerOp::Leave => {
            let groups = request.op_as_leave().ok_or(missing)?.groups();
            if groups.len() > MAX_GROUPS {
                return Err(too_many("Leave.groups"));
            }
            CtlOp::Leave {
                groups: groups.iter().collect(),
            }
        }
        fb::ControllerOp::Move => {
            let moved = request.op_as_move().ok_or(missing)?;
            CtlOp::Move {
                shard: moved.shard(),
                group: moved.group(),
            }
        }
        fb::ControllerOp::Query => CtlOp::Query {
            num: request
                .op_as_query()
                .ok_or(missing)?
                .num()
                .unwrap_or(LATEST),
        },
        fb::ControllerOp::NONE => return Err(missing),
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "ControllerRequest.op_type",
                value: other.0,
            })
        }
    };
    Ok(ControllerRequest {
        id: request.id(),
        request: CtlRequest {
            client: request.client(),
            seq: request.seq(),
            op,
            consistency: Consistency::Linearizable,
        },
    })
}

/// Decodes a `ControllerReply` frame body.
pub fn decode_controller_reply(body: &Bytes) -> Result<ControllerReply, DecodeError> {
    let reply = shardcore_protocol::body::verify_controller_reply(body)?;
    let result = match reply.status() {
        fb::ControllerStatus::Ok => Ok(decode_ok(&reply)?),
        fb::ControllerStatus::NotLeader => Err(ControllerReplyError::Ctl(CtlError::WrongLeader {
            leader: reply.leader_hint(),
        })),
        fb::ControllerStatus::BadRequest => Err(match refused_from_wire(&reply)? {
            Some(error) => ControllerReplyError::Ctl(CtlError::Invalid(error)),
            None => ControllerReplyError::BadRequest,
        }),
        status => Err(status_error(status)?),
    };
    Ok(ControllerReply {
        id: reply.id(),
        result,
    })
}

fn decode_ok(reply: &fb::ControllerReply<'_>) -> Result<CtlReply, DecodeError> {
    Ok(match reply.ok() {
        fb::ControllerOk::Changed => CtlReply::Changed { num: reply.num() },
        // A session id is the index of its Register entry, and indexes start at 1.
        fb::ControllerOk::Registered if reply.session() == 0 => {
            return Err(DecodeError::Inconsistent {
                field: "ControllerReply.session",
                why: "a Registered reply needs a session id, and 0 is none",
            })
        }
        fb::ControllerOk::Registered => CtlReply::Registered {
            client: reply.session(),
        },
        fb::ControllerOk::Config => {
            let config = reply.config().ok_or(DecodeError::MissingField {
                field: "ControllerReply.config",
            })?;
            CtlReply::Config(decode_config(&config)?)
        }
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "ControllerReply.ok",
                value: other.0,
            })
        }
    })
}

fn decode_config(config: &fb::Config<'_>) -> Result<Config, DecodeError> {
    let shards = config.shards();
    if shards.is_empty() || shards.len() > MAX_SHARDS {
        return Err(DecodeError::Inconsistent {
            field: "Config.shards",
            why: "a configuration has between 1 and MAX_SHARDS shards",
        });
    }
    Ok(Config {
        num: config.num(),
        shards: shards.iter().collect(),
        groups: decode_groups(config.groups())?,
    })
}

fn decode_groups(
    groups: shardcore_protocol::flatbuffers::Vector<
        '_,
        shardcore_protocol::flatbuffers::ForwardsUOffset<fb::GroupReplicas<'_>>,
    >,
) -> Result<BTreeMap<GroupId, Vec<Replica>>, DecodeError> {
    if groups.len() > MAX_GROUPS {
        return Err(too_many("GroupReplicas"));
    }
    let mut decoded = BTreeMap::new();
    for group in groups {
        let replicas = group.replicas();
        if replicas.len() > MAX_REPLICAS_PER_GROUP {
            return Err(too_many("GroupReplicas.replicas"));
        }
        let replicas = replicas
            .iter()
            .map(|r| Replica {
                node: r.node_id(),
                core: r.core(),
            })
            .collect();
        if decoded.insert(group.group(), replicas).is_some() {
            return Err(DecodeError::Inconsistent {
                field: "GroupReplicas.group",
                why: "a group is named twice",
            });
        }
    }
    Ok(decoded)
}

fn too_many(field: &'static str) -> DecodeError {
    DecodeError::Inconsistent {
        field,
        why: "more items than the controller's bound",
    }
}

fn groups_estimate(groups: &BTreeMap<GroupId, Vec<Replica>>) -> usize {
    groups
        .values()
        .map(|r| GROUP_BYTES + REPLICA_BYTES * r.len())
        .sum()
}

fn refused_to_wire(error: ConfigError) -> (fb::Refused, u64) {
    match error {
        ConfigError::NoGroups => (fb::Refused::NoGroups, 0),
        ConfigError::GroupZero => (fb::Refused::GroupZero, 0),
        ConfigError::GroupExists(g) => (fb::Refused::GroupExists, g),
        ConfigError::UnknownGroup(g) => (fb::Refused::UnknownGroup, g),
        ConfigError::DuplicateGroup(g) => (fb::Refused::DuplicateGroup, g),
        ConfigError::BadReplicas(g) => (fb::Refused::BadReplicas, g),
        ConfigError::TooManyReplicas(g) => (fb::Refused::TooManyReplicas, g),
        ConfigError::TooManyGroups => (fb::Refused::TooManyGroups, 0),
        ConfigError::ShardOutOfRange(s) => (fb::Refused::ShardOutOfRange, u64::from(s)),
    }
}

/// The configuration's refusal a BadRequest carries (`None`: a plain malformed request).
fn refused_from_wire(reply: &fb::ControllerReply<'_>) -> Result<Option<ConfigError>, DecodeError> {
    let value = reply.refused_value();
    Ok(Some(match reply.refused() {
        fb::Refused::None => return Ok(None),
        fb::Refused::NoGroups => ConfigError::NoGroups,
        fb::Refused::GroupZero => ConfigError::GroupZero,
        fb::Refused::GroupExists => ConfigError::GroupExists(value),
        fb::Refused::UnknownGroup => ConfigError::UnknownGroup(value),
        fb::Refused::DuplicateGroup => ConfigError::DuplicateGroup(value),
        fb::Refused::BadReplicas => ConfigError::BadReplicas(value),
        fb::Refused::TooManyReplicas => ConfigError::TooManyReplicas(value),
        fb::Refused::TooManyGroups => ConfigError::TooManyGroups,
        fb::Refused::ShardOutOfRange => {
            let shard = u32::try_from(value).map_err(|_| DecodeError::Inconsistent {
                field: "ControllerReply.refused_value",
                why: "a shard number past u32",
            })?;
            ConfigError::ShardOutOfRange(shard)
        }
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "ControllerReply.refused",
                value: other.0,
            })
        }
    }))
}

/// The status of an error other than `WrongLeader` and `Invalid` (which carry more).
fn error_status(error: ControllerReplyError) -> fb::ControllerStatus {
    match error {
        ControllerReplyError::Ctl(CtlError::WrongLeader { .. }) => fb::ControllerStatus::NotLeader,
        ControllerReplyError::Ctl(CtlError::Invalid(_)) | ControllerReplyError::BadRequest => {
            fb::ControllerStatus::BadRequest
        }
        ControllerReplyError::Ctl(CtlError::Timeout) => fb::ControllerStatus::Timeout,
        ControllerReplyError::Ctl(CtlError::Busy) => fb::ControllerStatus::Busy,
        ControllerReplyError::Ctl(CtlError::TooLarge) => fb::ControllerStatus::TooLarge,
        ControllerReplyError::Ctl(CtlError::SessionExpired) => fb::ControllerStatus::SessionExpired,
        ControllerReplyError::Ctl(CtlError::Stale) => fb::ControllerStatus::Stale,
        ControllerReplyError::Unavailable => fb::ControllerStatus::Unavailable,
    }
}

/// The error a plain error status names (every status but Ok, NotLeader, BadRequest).
fn status_error(status: fb::ControllerStatus) -> Result<ControllerReplyError, DecodeError> {
    Ok(match status {
        fb::ControllerStatus::Timeout => ControllerReplyError::Ctl(CtlError::Timeout),
        fb::ControllerStatus::Busy => ControllerReplyError::Ctl(CtlError::Busy),
        fb::ControllerStatus::TooLarge => ControllerReplyError::Ctl(CtlError::TooLarge),
        fb::ControllerStatus::SessionExpired => ControllerReplyError::Ctl(CtlError::SessionExpired),
        fb::ControllerStatus::Stale => ControllerReplyError::Ctl(CtlError::Stale),
        fb::ControllerStatus::Unavailable => ControllerReplyError::Unavailable,
        other => {
            return Err(DecodeError::UnknownEnum {
                field: "ControllerReply.status",
                value: other.0,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_groups(rng: &mut Rng) -> BTreeMap<GroupId, Vec<Replica>> {
        (0..rng.range(0, 4))
            .map(|_| {
                let replicas = (0..rng.range(0, 5))
                    .map(|_| Replica {
                        node: rng.next_u64(),
                        core: rng.chance(1, 2).then(|| rng.next_u64() as u32),
                    })
                    .collect();
                (rng.next_u64(), replicas)
            })
            .collect()
    }

    fn random_config(rng: &mut Rng) -> Config {
        Config {
            num: rng.next_u64(),
            shards: (0..rng.range(1, 70)).map(|_| rng.range(0, 5)).collect(),
            groups: random_groups(rng),
        }
    }

    fn random_request(rng: &mut Rng) -> ControllerRequest {
        let op = match rng.range(0, 6) {
            0 => CtlOp::Register,
            1 => CtlOp::Join {
                groups: random_groups(rng),
            },
            2 => CtlOp::Leave {
                groups: (0..rng.range(0, 5)).map(|_| rng.next_u64()).collect(),
            },
            3 => CtlOp::Move {
                shard: rng.next_u64() as u32,
                group: rng.next_u64(),
            },
            4 => CtlOp::latest(),
            _ => CtlOp::Query {
                num: rng.range(0, 1000),
            },
        };
        ControllerRequest {
            id: rng.next_u64(),
            request: CtlRequest {
                client: rng.next_u64(),
                seq: rng.next_u64(),
                op,
                consistency: Consistency::Linearizable,
            },
        }
    }

    fn random_reply(rng: &mut Rng) -> ControllerReply {
        let errors = [
            CtlError::WrongLeader {
                leader: rng.next_u64(),
            },
            CtlError::Timeout,
            CtlError::Busy,
            CtlError::TooLarge,
            CtlError::SessionExpired,
            CtlError::Stale,
            CtlError::Invalid(ConfigError::NoGroups),
            CtlError::Invalid(ConfigError::GroupZero),
            CtlError::Invalid(ConfigError::GroupExists(rng.next_u64())),
            CtlError::Invalid(ConfigError::UnknownGroup(rng.next_u64())),
            CtlError::Invalid(ConfigError::DuplicateGroup(rng.next_u64())),
            CtlError::Invalid(ConfigError::BadReplicas(rng.next_u64())),
            CtlError::Invalid(ConfigError::TooManyReplicas(rng.next_u64())),
            CtlError::Invalid(ConfigError::TooManyGroups),
            CtlError::Invalid(ConfigError::ShardOutOfRange(rng.next_u64() as u32)),
        ];
        let result = match rng.range(0, 6) {
            0 => Ok(CtlReply::Changed {
                num: rng.next_u64(),
            }),
            1 => Ok(CtlReply::Registered {
                client: rng.range(1, u64::MAX),
            }),
            2 => Ok(CtlReply::Config(random_config(rng))),
            3 => Err(ControllerReplyError::BadRequest),
            4 => Err(ControllerReplyError::Unavailable),
            _ => Err(ControllerReplyError::Ctl(errors[rng.index(errors.len())])),
        };
        ControllerReply {
            id: rng.next_u64(),
            result,
        }
    }

    /// Every request and reply variant from a seeded generator survives encode and decode.
    #[test]
    fn round_trips() {
        let mut rng = Rng::stream(1, "wire shardctl");
        let mut encoder = Encoder::new();
        for _ in 0..2000 {
            let request = random_request(&mut rng);
            let body =
                Bytes::copy_from_slice(encoder.controller_request_body(&request).expect("encodes"));
            assert_eq!(decode_controller_request(&body), Ok(request));
            let reply = random_reply(&mut rng);
            let body =
                Bytes::copy_from_slice(encoder.controller_reply_body(&reply).expect("encodes"));
            assert_eq!(decode_controller_reply(&body), Ok(reply));
        }
    }

    /// Truncations and bit flips of valid bodies are refused or decode to something; never a
    /// panic. Garbage is refused.
    #[test]
    fn damage_never_panics() {
        let mut rng = Rng::stream(2, "wire shardctl damage");
        let mut encoder = Encoder::new();
        for _ in 0..50 {
            let request = random_request(&mut rng);
            let body = encoder
                .controller_request_body(&request)
                .expect("encodes")
                .to_vec();
            let reply = random_reply(&mut rng);
            let reply_body = encoder
                .controller_reply_body(&reply)
                .expect("encodes")
                .to_vec();
            for (body, is_request) in [(body, true), (reply_body, false)] {
                let decode = |bytes: Vec<u8>| {
                    let bytes = Bytes::from(bytes);
                    if is_request {
                        let _ = decode_controller_request(&bytes);
                    } else {
                        let _ = decode_controller_reply(&bytes);
                    }
                };
                for len in 0..body.len() {
                    decode(body[..len].to_vec());
                }
                for bit in 0..body.len() * 8 {
                    let mut flipped = body.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    decode(flipped);
                }
            }
        }
        assert!(decode_controller_request(&Bytes::from_static(b"garbage!")).is_err());
        assert!(decode_controller_reply(&Bytes::new()).is_err());
    }

    /// A join naming more replicas than a group may have is refused by the decoder.
    #[test]
    fn bounds_are_enforced() {
        let groups = BTreeMap::from([(1, (0..17).map(Replica::on).collect())]);
        let request = ControllerRequest {
            id: 1,
            request: CtlRequest {
                client: 1,
                seq: 1,
                op: CtlOp::Join { groups },
                consistency: Consistency::Linearizable,
            },
        };
        let mut encoder = Encoder::new();
        let body =
            Bytes::copy_from_slice(encoder.controller_request_body(&request).expect("encodes"));
        assert!(matches!(
            decode_controller_request(&body),
            Err(DecodeError::Inconsistent { .. })
        ));
    }
}
