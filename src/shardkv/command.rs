//! A shard group's log entries and errors, and their encoding.
//!
//! Four kinds of entry go through a group's log: a client's write (the KV service's own
//! [`Command`], so the request shape and the operation encoding are the KV service's), the next
//! configuration, the install of a pulled shard, and the delete of a shard the new owner has
//! installed. Each migration entry names the configuration it belongs to; applying it in any
//! other configuration does nothing, so duplicates and a stale leader's proposals are harmless.
//! Decoding checks every length before reading: a damaged entry is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::kv::command::{get_bytes, get_u64, get_u8, put_bytes, Command, DecodeError};
use crate::kv::{Reply, ServiceResponse};
use crate::raft::NodeId;
use crate::shardctl::command::{get_config, get_u32, put_config};
use crate::shardctl::{Config, ShardId};

/// Largest frozen shard an install entry may carry: every key of a shard with its value, and
/// the shard's session table. Raft carries one entry whole, so this is the Raft core's default
/// `max_entry_bytes` (8 MiB): a larger shard cannot move until transfers are chunked.
pub const MAX_SHARD_TRANSFER_BYTES: usize = 8 << 20;

/// Why a request did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKvError {
    /// This group does not serve the key's shard in its configuration `config` (it is not the
    /// owner, or it is the owner but the shard has not arrived yet). The client refreshes its
    /// configuration and retries, with the same sequence number.
    WrongGroup {
        /// The configuration the group is in.
        config: u64,
    },
    /// This replica cannot serve it; `leader` is its guess (0: unknown).
    WrongLeader {
        /// The leader hint.
        leader: NodeId,
    },
    /// The key exceeds [`crate::kv::command::MAX_KEY_BYTES`].
    KeyTooLarge,
    /// The value (or the value an append would make) exceeds
    /// [`crate::kv::command::MAX_VALUE_BYTES`].
    ValueTooLarge,
    /// The session is unknown and cannot be opened again (never made by this service, which
    /// opens sessions on first use; kept so the shared refusals map one to one).
    SessionExpired,
    /// Older than the session's latest request in this shard: a late duplicate, not applied.
    Stale,
    /// The server gave up waiting for the request to complete (it may still complete).
    Timeout,
    /// Too many requests are waiting at this replica; retry later.
    Busy,
    /// The shard's session table is full of sessions active within their lifetime: a new
    /// client cannot be admitted to this shard now. Nothing was applied; retry later.
    TooManySessions,
    /// The operation is not one this service takes (sessions need no registration here).
    Unsupported,
}

impl std::fmt::Display for ShardKvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardKvError::WrongGroup { config } => {
                write!(f, "shard not served by this group (its config {config})")
            }
            ShardKvError::WrongLeader { leader: 0 } => write!(f, "not the leader (leader unknown)"),
            ShardKvError::WrongLeader { leader } => write!(f, "not the leader (try node {leader})"),
            ShardKvError::KeyTooLarge => write!(f, "key too long"),
            ShardKvError::ValueTooLarge => write!(f, "value too long"),
            ShardKvError::SessionExpired => write!(f, "client session expired"),
            ShardKvError::Stale => write!(f, "request older than the session's latest"),
            ShardKvError::Timeout => write!(f, "timed out waiting for the request to complete"),
            ShardKvError::Busy => write!(f, "too many requests waiting; retry later"),
            ShardKvError::TooManySessions => write!(f, "shard session table full; retry later"),
            ShardKvError::Unsupported => write!(f, "operation not supported by the sharded KV"),
        }
    }
}

impl std::error::Error for ShardKvError {}

/// A shard group's answer to a client request (the KV request shape, this service's error).
pub type ShardResponse = ServiceResponse<Reply, ShardKvError>;

/// One entry of a shard group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardCommand {
    /// A client's write, with its session, sequence and the leader's stamp.
    Client(Command),
    /// Move to this configuration (applied only as the successor of the current one, and only
    /// once every shard is settled).
    Config(Config),
    /// Install shard `shard`, pulled from its previous owner as of configuration `config`
    /// (applied only in configuration `config` while the shard is `Pulling`).
    Install {
        /// The configuration the shard was gained in.
        config: u64,
        /// The shard.
        shard: ShardId,
        /// The frozen shard ([`super::shard::Shard::encode_transfer`]).
        payload: Bytes,
    },
    /// Delete shard `shard`, which the new owner has installed (applied only in configuration
    /// `config` while the shard is `BePulled`).
    Delete {
        /// The configuration the shard was lost in.
        config: u64,
        /// The shard.
        shard: ShardId,
    },
}

const FORMAT_V1: u8 = 1;
const TAG_CLIENT: u8 = 1;
const TAG_CONFIG: u8 = 2;
const TAG_INSTALL: u8 = 3;
const TAG_DELETE: u8 = 4;

impl ShardCommand {
    /// The entry bytes: version, tag, then the kind's fields (a client write is the KV
    /// service's own command encoding, length-prefixed).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(FORMAT_V1);
        match self {
            ShardCommand::Client(command) => {
                buf.put_u8(TAG_CLIENT);
                buf.put_slice(&command.encode());
            }
            ShardCommand::Config(config) => {
                buf.put_u8(TAG_CONFIG);
                put_config(&mut buf, config);
            }
            ShardCommand::Install {
                config,
                shard,
                payload,
            } => {
                buf.put_u8(TAG_INSTALL);
                buf.put_u64_le(*config);
                buf.put_u32_le(*shard);
                put_bytes(&mut buf, payload);
            }
            ShardCommand::Delete { config, shard } => {
                buf.put_u8(TAG_DELETE);
                buf.put_u64_le(*config);
                buf.put_u32_le(*shard);
            }
        }
        buf.freeze()
    }

    /// Decodes an entry written by [`ShardCommand::encode`].
    pub fn decode(data: &Bytes) -> Result<ShardCommand, DecodeError> {
        let mut buf = data.clone();
        let version = get_u8(&mut buf)?;
        if version != FORMAT_V1 {
            return Err(DecodeError::UnknownTag(version));
        }
        let command = match get_u8(&mut buf)? {
            TAG_CLIENT => return Ok(ShardCommand::Client(Command::decode(&buf)?)),
            TAG_CONFIG => ShardCommand::Config(get_config(&mut buf)?),
            TAG_INSTALL => ShardCommand::Install {
                config: get_u64(&mut buf)?,
                shard: get_u32(&mut buf)?,
                payload: get_bytes(&mut buf, MAX_SHARD_TRANSFER_BYTES)?,
            },
            TAG_DELETE => ShardCommand::Delete {
                config: get_u64(&mut buf)?,
                shard: get_u32(&mut buf)?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::Op;
    use crate::shardctl::Replica;

    fn all() -> Vec<ShardCommand> {
        let config = Config {
            num: 3,
            shards: vec![1, 2, 0],
            groups: BTreeMap::from([(1, vec![Replica::on(4)]), (2, vec![Replica::on(5)])]),
        };
        vec![
            ShardCommand::Client(Command {
                client: 9,
                seq: 2,
                stamp_ms: 7,
                op: Op::Append {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                },
            }),
            ShardCommand::Config(config),
            ShardCommand::Install {
                config: 4,
                shard: 2,
                payload: Bytes::from_static(b"frozen"),
            },
            ShardCommand::Delete {
                config: 4,
                shard: 1,
            },
        ]
    }

    /// Every entry kind survives the encoding unchanged.
    #[test]
    fn commands_round_trip() {
        for command in all() {
            assert_eq!(ShardCommand::decode(&command.encode()), Ok(command));
        }
    }

    /// Every truncation and every trailing byte is an error, not a panic.
    #[test]
    fn damaged_entries_are_errors() {
        for command in all() {
            let bytes = command.encode();
            for len in 0..bytes.len() {
                assert!(ShardCommand::decode(&bytes.slice(..len)).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(ShardCommand::decode(&Bytes::from(longer)).is_err());
        }
    }
}
