//! What the shard controller's clients ask and are told, and the encoding of a controller write
//! (join, leave, move, register) inside a Raft log entry and of configurations in snapshots.
//!
//! The log encoding is internal to the controller group and versioned by its first byte; every
//! count is checked against its bound before anything is allocated, so a damaged entry is an
//! error, never a panic or a huge allocation.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::config::{
    Config, ConfigError, Replica, ShardId, MAX_GROUPS, MAX_REPLICAS_PER_GROUP, MAX_SHARDS,
};
use crate::kv::command::{get_u64, get_u8, ClientId, DecodeError};
use crate::kv::{Refusal, ServiceRequest, ServiceResponse};
use crate::raft::{GroupId, NodeId};

/// The number [`CtlOp::Query`] takes for "the latest configuration" (the lab's -1).
pub const LATEST: u64 = u64::MAX;

/// One operation on the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtlOp {
    /// Open a session (its id is the entry's index, as for KV). Sent with client 0, sequence 0.
    Register,
    /// Add groups with their replicas; shards are rebalanced onto them.
    Join {
        /// The new groups and each one's replicas.
        groups: BTreeMap<GroupId, Vec<Replica>>,
    },
    /// Remove groups; their shards are spread over the others.
    Leave {
        /// The groups leaving.
        groups: Vec<GroupId>,
    },
    /// Put one shard on one group, without rebalancing.
    Move {
        /// The shard.
        shard: ShardId,
        /// Its new group.
        group: GroupId,
    },
    /// Read configuration `num` ([`LATEST`], or any number past the latest: the latest).
    Query {
        /// The configuration number.
        num: u64,
    },
}

impl CtlOp {
    /// A query for the latest configuration.
    pub fn latest() -> CtlOp {
        CtlOp::Query { num: LATEST }
    }

    /// Checks the static bounds (sizes), before the operation is proposed.
    pub fn check_bounds(&self) -> Result<(), CtlError> {
        match self {
            CtlOp::Join { groups } => {
                if groups.len() > MAX_GROUPS {
                    return Err(CtlError::Invalid(ConfigError::TooManyGroups));
                }
                for (&group, replicas) in groups {
                    if replicas.len() > MAX_REPLICAS_PER_GROUP {
                        return Err(CtlError::Invalid(ConfigError::TooManyReplicas(group)));
                    }
                }
                Ok(())
            }
            CtlOp::Leave { groups } if groups.len() > MAX_GROUPS => {
                Err(CtlError::Invalid(ConfigError::TooManyGroups))
            }
            CtlOp::Move { shard, .. } if *shard as usize >= MAX_SHARDS => {
                Err(CtlError::Invalid(ConfigError::ShardOutOfRange(*shard)))
            }
            _ => Ok(()),
        }
    }
}

/// A successful result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtlReply {
    /// A session was opened.
    Registered {
        /// The new session's id.
        client: ClientId,
    },
    /// A join, leave or move took effect and made configuration `num`.
    Changed {
        /// The new configuration's number.
        num: u64,
    },
    /// A query's configuration.
    Config(Config),
}

/// Why a controller request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlError {
    /// This replica cannot serve it; `leader` is its guess (0: unknown).
    WrongLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// The server gave up waiting (the request may still take effect).
    Timeout,
    /// Too many requests wait at this replica.
    Busy,
    /// The command is larger than one log entry may be.
    TooLarge,
    /// The session is unknown (expired or evicted); the outcome of the request is unknown.
    SessionExpired,
    /// Older than the session's latest request: a late duplicate, not applied.
    Stale,
    /// The operation does not fit the configuration it was applied to; nothing changed.
    Invalid(ConfigError),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::WrongLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            CtlError::WrongLeader { leader } => write!(f, "not the leader (try node {leader})"),
            CtlError::Timeout => write!(f, "timed out waiting for the request to complete"),
            CtlError::Busy => write!(f, "too many requests waiting; retry later"),
            CtlError::TooLarge => write!(f, "request too large for one log entry"),
            CtlError::SessionExpired => write!(f, "client session expired; start a new one"),
            CtlError::Stale => write!(f, "request older than the session's latest"),
            CtlError::Invalid(e) => write!(f, "refused: {e}"),
        }
    }
}

impl std::error::Error for CtlError {}

impl CtlError {
    /// The error for a refusal the generic server or clerk makes.
    pub fn from_refusal(refusal: Refusal) -> CtlError {
        match refusal {
            Refusal::WrongLeader { leader } => CtlError::WrongLeader { leader },
            Refusal::Timeout => CtlError::Timeout,
            Refusal::Busy => CtlError::Busy,
            Refusal::TooLarge => CtlError::TooLarge,
            Refusal::SessionExpired => CtlError::SessionExpired,
        }
    }

    /// The generic refusal this error is, if it is one.
    pub fn as_refusal(&self) -> Option<Refusal> {
        match *self {
            CtlError::WrongLeader { leader } => Some(Refusal::WrongLeader { leader }),
            CtlError::Timeout => Some(Refusal::Timeout),
            CtlError::Busy => Some(Refusal::Busy),
            CtlError::TooLarge => Some(Refusal::TooLarge),
            CtlError::SessionExpired => Some(Refusal::SessionExpired),
            CtlError::Stale | CtlError::Invalid(_) => None,
        }
    }
}

/// A controller request: one operation in a session.
pub type CtlRequest = ServiceRequest<CtlOp>;
/// The answer to a [`CtlRequest`].
pub type CtlResponse = ServiceResponse<CtlReply, CtlError>;

/// A controller write as it travels through the log (never a `Query`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlCommand {
    /// The session.
    pub client: ClientId,
    /// The session's sequence number.
    pub seq: u64,
    /// The proposing leader's clock in milliseconds (sessions expire by it).
    pub stamp_ms: u64,
    /// The operation.
    pub op: CtlOp,
}

const FORMAT_V1: u8 = 1;
const TAG_REGISTER: u8 = 1;
const TAG_JOIN: u8 = 2;
const TAG_LEAVE: u8 = 3;
const TAG_MOVE: u8 = 4;

impl CtlCommand {
    /// The entry bytes: version, tag, client, seq, stamp, then the operation's fields
    /// (little-endian; counts as u32 before their items).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(FORMAT_V1);
        buf.put_u8(match &self.op {
            CtlOp::Register => TAG_REGISTER,
            CtlOp::Join { .. } => TAG_JOIN,
            CtlOp::Leave { .. } => TAG_LEAVE,
            CtlOp::Move { .. } => TAG_MOVE,
            CtlOp::Query { .. } => panic!("queries never enter the log"),
        });
        buf.put_u64_le(self.client);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.stamp_ms);
        match &self.op {
            CtlOp::Join { groups } => put_groups(&mut buf, groups),
            CtlOp::Leave { groups } => {
                buf.put_u32_le(groups.len() as u32);
                for &g in groups {
                    buf.put_u64_le(g);
                }
            }
            CtlOp::Move { shard, group } => {
                buf.put_u32_le(*shard);
                buf.put_u64_le(*group);
            }
            CtlOp::Register | CtlOp::Query { .. } => {}
        }
        buf.freeze()
    }

    /// Decodes an entry written by [`CtlCommand::encode`].
    pub fn decode(data: &Bytes) -> Result<CtlCommand, DecodeError> {
        let mut buf = data.clone();
        let version = get_u8(&mut buf)?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let tag = get_u8(&mut buf)?;
        let client = get_u64(&mut buf)?;
        let seq = get_u64(&mut buf)?;
        let stamp_ms = get_u64(&mut buf)?;
        let op = match tag {
            TAG_REGISTER => CtlOp::Register,
            TAG_JOIN => CtlOp::Join {
                groups: get_groups(&mut buf)?,
            },
            TAG_LEAVE => {
                let count = get_count(&mut buf, MAX_GROUPS)?;
                let groups = (0..count)
                    .map(|_| get_u64(&mut buf))
                    .collect::<Result<_, _>>()?;
                CtlOp::Leave { groups }
            }
            TAG_MOVE => CtlOp::Move {
                shard: get_u32(&mut buf)?,
                group: get_u64(&mut buf)?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(CtlCommand {
            client,
            seq,
            stamp_ms,
            op,
        })
    }
}

pub(crate) fn get_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u32_le())
}

/// A u32 count, refused past `max` before anything is allocated for it.
pub(crate) fn get_count(buf: &mut Bytes, max: usize) -> Result<usize, DecodeError> {
    let count = get_u32(buf)? as usize;
    if count > max {
        return Err(DecodeError::TooLong);
    }
    Ok(count)
}

fn put_replica(buf: &mut BytesMut, replica: &Replica) {
    buf.put_u64_le(replica.node);
    match replica.core {
        None => buf.put_u8(0),
        Some(core) => {
            buf.put_u8(1);
            buf.put_u32_le(core);
        }
    }
}

fn get_replica(buf: &mut Bytes) -> Result<Replica, DecodeError> {
    let node = get_u64(buf)?;
    let core = match get_u8(buf)? {
        0 => None,
        1 => Some(get_u32(buf)?),
        other => return Err(DecodeError::UnknownTag(other)),
    };
    Ok(Replica { node, core })
}

pub(crate) fn put_groups(buf: &mut BytesMut, groups: &BTreeMap<GroupId, Vec<Replica>>) {
    buf.put_u32_le(groups.len() as u32);
    for (&group, replicas) in groups {
        buf.put_u64_le(group);
        buf.put_u32_le(replicas.len() as u32);
        for replica in replicas {
            put_replica(buf, replica);
        }
    }
}

pub(crate) fn get_groups(buf: &mut Bytes) -> Result<BTreeMap<GroupId, Vec<Replica>>, DecodeError> {
    let mut groups = BTreeMap::new();
    for _ in 0..get_count(buf, MAX_GROUPS)? {
        let group = get_u64(buf)?;
        let count = get_count(buf, MAX_REPLICAS_PER_GROUP)?;
        let replicas = (0..count)
            .map(|_| get_replica(buf))
            .collect::<Result<_, _>>()?;
        groups.insert(group, replicas);
    }
    Ok(groups)
}

/// Appends a configuration: number, shard count and each shard's group, then the groups.
pub(crate) fn put_config(buf: &mut BytesMut, config: &Config) {
    buf.put_u64_le(config.num);
    buf.put_u32_le(config.shards.len() as u32);
    for &g in &config.shards {
        buf.put_u64_le(g);
    }
    put_groups(buf, &config.groups);
}

/// Reads [`put_config`]'s bytes.
pub(crate) fn get_config(buf: &mut Bytes) -> Result<Config, DecodeError> {
    let num = get_u64(buf)?;
    let count = get_count(buf, MAX_SHARDS)?;
    let shards = (0..count).map(|_| get_u64(buf)).collect::<Result<_, _>>()?;
    let groups = get_groups(buf)?;
    Ok(Config {
        num,
        shards,
        groups,
    })
}

fn put_config_error(buf: &mut BytesMut, error: &ConfigError) {
    let (tag, value) = match *error {
        ConfigError::NoGroups => (0, 0),
        ConfigError::GroupZero => (1, 0),
        ConfigError::GroupExists(g) => (2, g),
        ConfigError::UnknownGroup(g) => (3, g),
        ConfigError::DuplicateGroup(g) => (4, g),
        ConfigError::BadReplicas(g) => (5, g),
        ConfigError::TooManyReplicas(g) => (6, g),
        ConfigError::TooManyGroups => (7, 0),
        ConfigError::ShardOutOfRange(s) => (8, u64::from(s)),
    };
    buf.put_u8(tag);
    buf.put_u64_le(value);
}

fn get_config_error(buf: &mut Bytes) -> Result<ConfigError, DecodeError> {
    let tag = get_u8(buf)?;
    let value = get_u64(buf)?;
    Ok(match tag {
        0 => ConfigError::NoGroups,
        1 => ConfigError::GroupZero,
        2 => ConfigError::GroupExists(value),
        3 => ConfigError::UnknownGroup(value),
        4 => ConfigError::DuplicateGroup(value),
        5 => ConfigError::BadReplicas(value),
        6 => ConfigError::TooManyReplicas(value),
        7 => ConfigError::TooManyGroups,
        8 => ConfigError::ShardOutOfRange(u32::try_from(value).map_err(|_| DecodeError::TooLong)?),
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

/// Appends a session's cached result (what a retry of a write gets again).
pub(crate) fn put_result(buf: &mut BytesMut, result: &Result<CtlReply, CtlError>) {
    match result {
        Ok(CtlReply::Registered { client }) => {
            buf.put_u8(0);
            buf.put_u64_le(*client);
        }
        Ok(CtlReply::Changed { num }) => {
            buf.put_u8(1);
            buf.put_u64_le(*num);
        }
        Ok(CtlReply::Config(config)) => {
            buf.put_u8(2);
            put_config(buf, config);
        }
        Err(CtlError::Invalid(e)) => {
            buf.put_u8(3);
            put_config_error(buf, e);
        }
        // Only results of applied writes are cached, and those are the cases above; a refusal
        // the server makes is never applied. Kept total so a snapshot never panics.
        Err(_) => buf.put_u8(4),
    }
}

/// Reads [`put_result`]'s bytes.
pub(crate) fn get_result(buf: &mut Bytes) -> Result<Result<CtlReply, CtlError>, DecodeError> {
    Ok(match get_u8(buf)? {
        0 => Ok(CtlReply::Registered {
            client: get_u64(buf)?,
        }),
        1 => Ok(CtlReply::Changed { num: get_u64(buf)? }),
        2 => Ok(CtlReply::Config(get_config(buf)?)),
        3 => Err(CtlError::Invalid(get_config_error(buf)?)),
        4 => Err(CtlError::Stale),
        other => return Err(DecodeError::UnknownTag(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<CtlOp> {
        let groups = BTreeMap::from([
            (1, vec![Replica::on(1), Replica::on(2)]),
            (
                7,
                vec![Replica {
                    node: 3,
                    core: Some(1),
                }],
            ),
        ]);
        vec![
            CtlOp::Register,
            CtlOp::Join { groups },
            CtlOp::Leave { groups: vec![1, 7] },
            CtlOp::Move { shard: 9, group: 7 },
        ]
    }

    /// Every write survives the log encoding; every truncation and a trailing byte are errors.
    #[test]
    fn commands_round_trip_and_damage_is_an_error() {
        for op in ops() {
            let cmd = CtlCommand {
                client: 3,
                seq: 4,
                stamp_ms: 5,
                op,
            };
            let bytes = cmd.encode();
            assert_eq!(CtlCommand::decode(&bytes), Ok(cmd));
            for len in 0..bytes.len() {
                assert!(CtlCommand::decode(&bytes.slice(..len)).is_err(), "{len}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(
                CtlCommand::decode(&Bytes::from(longer)),
                Err(DecodeError::TrailingBytes)
            );
        }
    }

    /// A count past its bound is refused before anything is allocated for it.
    #[test]
    fn huge_counts_are_refused() {
        let mut buf = BytesMut::new();
        buf.put_u8(FORMAT_V1);
        buf.put_u8(TAG_LEAVE);
        buf.put_bytes(0, 24);
        buf.put_u32_le(u32::MAX);
        assert_eq!(CtlCommand::decode(&buf.freeze()), Err(DecodeError::TooLong));
    }

    /// Cached results round-trip, configs included.
    #[test]
    fn results_round_trip() {
        let config = Config::initial(4)
            .join(&BTreeMap::from([(2, vec![Replica::on(5)])]))
            .expect("valid");
        let results = [
            Ok(CtlReply::Registered { client: 9 }),
            Ok(CtlReply::Changed { num: 3 }),
            Ok(CtlReply::Config(config)),
            Err(CtlError::Invalid(ConfigError::ShardOutOfRange(77))),
            Err(CtlError::Invalid(ConfigError::GroupExists(4))),
        ];
        for result in results {
            let mut buf = BytesMut::new();
            put_result(&mut buf, &result);
            let mut bytes = buf.freeze();
            assert_eq!(get_result(&mut bytes), Ok(result));
            assert!(bytes.is_empty());
        }
    }
}
