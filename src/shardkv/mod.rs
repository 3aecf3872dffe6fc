//! The sharded key/value service: replica groups that serve the shards the shard controller's
//! configuration gives them, follow the configurations strictly in order, and move shards
//! between groups (data and the shard's exactly-once session table) with every migration step
//! committed through the group's own Raft log. Old owners delete what moved once the new owner
//! has installed it, so the state a group holds stays bounded by the shards it serves.
//!
//! # Layout
//! - [`command`]: the group's log entries (client writes, the next configuration, one part of a
//!   pulled shard, a shard delete), [`ShardKvError`], and their encoding.
//! - [`shard`]: one shard as a group holds it: its migration state ([`ShardState`]), its data,
//!   its bounded session table and, while pulled, how far its install has come; the encoding
//!   of a frozen shard's parts.
//! - [`store`]: [`ShardStore`], the state machine: the current configuration and every shard,
//!   changed only by applying committed entries; the pure answers to other groups' inquiries.
//! - [`inquiry`]: the cross-group messages ([`Inquiry`], [`Answer`], [`Outbound`]): "config n",
//!   "the part of shard s as of config n after key k", "have you installed shard s of config
//!   n?".
//! - [`server`]: [`ShardKvServer`], one replica: the generic [`crate::kv::ReplicaServer`] for
//!   client requests plus the leader's migration driver (polls, pulls part by part,
//!   proposals).
//! - [`client`]: [`ShardClerk`], the sans-I/O sharded clerk: key → shard → group from a cached
//!   configuration, refreshed from the controller on "wrong group"; one id and one sequence
//!   across retries and groups.
//!
//! # Migration, one shard at a time
//! A group at configuration `n` applies configuration `n + 1` only once every shard it holds is
//! settled (`Serving` or `Absent`). Applying it, a shard it keeps stays `Serving`; a shard it
//! gains from group 0 (unassigned) starts empty and `Serving`; a shard it loses becomes
//! `BePulled`: not served, frozen, kept until the new owner says it installed it, then the
//! leader commits a `Delete` and the shard is `Absent`. A shard it gains from another group
//! becomes `Pulling` and arrives in parts, so a shard of any size moves and no entry outgrows
//! what one log entry may hold:
//!
//! 1. the leader asks the old owner for the part of the shard *as of `n + 1`* after the last
//!    key it has installed (the first part: after nothing), with a byte budget its log's
//!    entry limit sets;
//! 2. any replica of the old owner that has applied `n + 1` answers from its frozen copy
//!    (immutable until the new owner has it all, so every replica gives the same part): the
//!    keys after the cursor, in key order, up to the budget (at least one key), and on the
//!    last part the shard's session table, so exactly-once holds across the move;
//! 3. the leader commits an `InstallPart` naming the configuration, the shard and the cursor
//!    key. It applies only in `n + 1` to a `Pulling` shard whose install has reached exactly
//!    that key: its pairs are merged and the part's last key becomes the shard's install
//!    progress, which is replicated state (in every snapshot), so a replica restarted or a new
//!    leader elected mid-transfer goes on from the right part. A duplicate, a part out of order
//!    or a stale leader's part is ignored;
//! 4. as soon as a part is applied, the leader asks for the next; the last part installs the
//!    sessions and makes the shard `Serving` at once (other shards may still be pulling). The
//!    shard takes no client writes until then.
//!
//! An empty shard is one last part. Every command names the configuration it belongs to and is
//! ignored when applied in any other, so a stale leader's proposals are harmless. The leader's
//! poll (every 100 ms) is the retry path for a lost inquiry or answer; a step it can take at
//! once (the next part, what a new configuration needs) it takes without waiting for it.
//!
//! All of it is sans-I/O and deterministic, like [`crate::kv`] and [`crate::shardctl`].

pub mod client;
pub mod command;
pub mod inquiry;
pub mod server;
pub mod shard;
pub mod store;

pub use client::{ShardClerk, ShardClerkConfig, ShardOutcome, ShardOutgoing};
pub use command::{ShardCommand, ShardKvError, ShardResponse};
pub use inquiry::{answer_config_inquiry, Answer, Inquiry, Outbound, PullAnswer, Target};
pub use server::{ShardKvServer, ShardKvServerConfig};
pub use shard::ShardState;
pub use store::{ShardKvSettings, ShardStore};

use crate::shardctl::ShardId;

/// The shard a key belongs to, for a configuration of `shards` shards: FNV-1a (64-bit) of the
/// key bytes, modulo `shards`. Servers and clients must agree on it forever, so it is pinned by
/// a golden test; FNV-1a is the hash the node already uses for placement
/// (`node::placement::key_hash`), written out here so the core does not depend on the node.
pub fn key_to_shard(key: &[u8], shards: usize) -> ShardId {
    assert!(shards >= 1, "a configuration has at least one shard");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key-to-shard function is part of the protocol between clients and servers: these
    /// values must never change.
    #[test]
    fn key_to_shard_is_pinned() {
        let golden: [(&[u8], usize, ShardId); 8] = [
            (b"", 10, 7),
            (b"0", 10, 9),
            (b"1", 10, 8),
            (b"9", 10, 6),
            (b"key", 64, 44),
            (b"user:42", 64, 2),
            (b"a", 4096, 3212),
            (b"anything", 1, 0),
        ];
        for (key, shards, shard) in golden {
            assert_eq!(
                key_to_shard(key, shards),
                shard,
                "key {:?} over {shards} shards",
                String::from_utf8_lossy(key)
            );
        }
    }
}
