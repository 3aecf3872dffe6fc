//! Routing for the sharded KV: key → shard → group, from a cached shard controller
//! configuration.
//!
//! The key-to-shard function belongs to the sharded KV (`shardkv::key_to_shard`), and the router
//! takes it as a parameter rather than naming it, so the client library does not depend on the
//! sharded KV's server code and tests can use any function. The router holds one configuration
//! and only ever moves forward: an older configuration (a late or reordered query reply) is
//! ignored.
//!
//! A shard group that no longer serves a key's shard answers `WrongShard` with the number of
//! the configuration it judged by. [`ShardRouter::needs_refresh`] says whether that calls for a
//! fresher configuration: only when the group knows a newer one than ours (or did not say). When
//! the group is behind us, asking the controller again cannot help; the caller retries the same
//! group after a backoff, and the group catches up.

use crate::raft::GroupId;
use crate::shardctl::{Config, Replica, ShardId, NO_GROUP};

/// Maps a key to its shard among `shards` (must return less than `shards`).
pub type KeyToShard = fn(&[u8], usize) -> u64;

/// Where a key goes under the router's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    /// The key's shard.
    pub shard: ShardId,
    /// The group serving it (`None`: unassigned in this configuration; ask again later).
    pub group: Option<GroupId>,
    /// That group's replicas (empty when unassigned).
    pub replicas: &'a [Replica],
}

/// A cached configuration and the key-to-shard function. See the module docs.
#[derive(Clone, Debug)]
pub struct ShardRouter {
    config: Config,
    key_to_shard: KeyToShard,
}

impl ShardRouter {
    /// A router starting from `config` (config 0, `Config::initial(shards)`, before the first
    /// query).
    pub fn new(config: Config, key_to_shard: KeyToShard) -> ShardRouter {
        ShardRouter {
            config,
            key_to_shard,
        }
    }

    /// The configuration routed by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its number.
    pub fn config_num(&self) -> u64 {
        self.config.num
    }

    /// Where `key` goes.
    pub fn route(&self, key: &[u8]) -> Route<'_> {
        let shards = self.config.shard_count();
        let shard = (self.key_to_shard)(key, shards);
        // The function is code, not input: a shard past the end is a bug in it, and routing by
        // a wrapped number would send keys to the wrong group silently.
        assert!(
            (shard as usize) < shards,
            "key_to_shard returned shard {shard} of {shards}"
        );
        let shard = shard as ShardId;
        let group = self.config.group_of(shard);
        if group == NO_GROUP {
            return Route {
                shard,
                group: None,
                replicas: &[],
            };
        }
        Route {
            shard,
            group: Some(group),
            replicas: self.config.groups.get(&group).map_or(&[], Vec::as_slice),
        }
    }

    /// True when a `WrongShard` answer that carried `config_num` calls for a fresher
    /// configuration: the group judged by a newer one than ours, or did not say (0).
    pub fn needs_refresh(&self, config_num: u64) -> bool {
        config_num == 0 || config_num > self.config.num
    }

    /// Takes `config` if it is newer than the one held (and has the same shard count, which
    /// never changes in a cluster); returns whether it did.
    pub fn update(&mut self, config: Config) -> bool {
        if config.num <= self.config.num || config.shard_count() != self.config.shard_count() {
            return false;
        }
        self.config = config;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A stand-in key-to-shard function: the first byte modulo the shard count.
    fn first_byte(key: &[u8], shards: usize) -> u64 {
        u64::from(key.first().copied().unwrap_or(0)) % shards as u64
    }

    fn joined(groups: &[GroupId]) -> Config {
        let mut config = Config::initial(4);
        for &g in groups {
            config = config
                .join(&BTreeMap::from([(
                    g,
                    vec![Replica::on(g), Replica::on(g + 10)],
                )]))
                .expect("join");
        }
        config
    }

    /// Before any group joins, every key's shard is unassigned; after, each key goes to the
    /// group of its shard with that group's replicas.
    #[test]
    fn routes_key_to_shard_to_group() {
        let router = ShardRouter::new(Config::initial(4), first_byte);
        let route = router.route(b"\x06key");
        assert_eq!((route.shard, route.group), (2, None));
        assert!(route.replicas.is_empty());

        let config = joined(&[1, 2]);
        let router = ShardRouter::new(config.clone(), first_byte);
        for key in [&b"\x00"[..], b"\x01", b"\x02", b"\x03"] {
            let route = router.route(key);
            let group = config.group_of(route.shard);
            assert_eq!(route.group, Some(group));
            assert_eq!(route.replicas, &config.groups[&group][..]);
        }
    }

    /// The router moves forward only: an older or equal config, or one with another shard
    /// count, is ignored.
    #[test]
    fn update_only_moves_forward() {
        let c1 = joined(&[1]);
        let c2 = joined(&[1, 2]);
        let mut router = ShardRouter::new(c1.clone(), first_byte);
        assert!(router.update(c2.clone()));
        assert_eq!(router.config_num(), 2);
        assert!(!router.update(c1));
        assert!(!router.update(c2.clone()));
        let mut other = Config::initial(8);
        other.num = 9;
        assert!(!router.update(other));
        assert_eq!(router.config(), &c2);
    }

    /// A WrongShard from a group that knows a newer config (or did not say) asks for a refresh;
    /// one from a group behind us does not (the group will catch up).
    #[test]
    fn wrong_shard_refreshes_only_when_behind() {
        let router = ShardRouter::new(joined(&[1, 2]), first_byte);
        assert!(router.needs_refresh(0));
        assert!(router.needs_refresh(3));
        assert!(!router.needs_refresh(2));
        assert!(!router.needs_refresh(1));
    }

    #[test]
    #[should_panic(expected = "key_to_shard returned shard")]
    fn a_shard_past_the_end_is_a_bug() {
        let router = ShardRouter::new(Config::initial(4), |_, _| 4);
        router.route(b"k");
    }
}
