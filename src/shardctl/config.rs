//! Numbered shard configurations and the rebalancing that keeps them balanced while moving as
//! few shards as possible. Pure functions of their inputs: every controller replica computes the
//! same next configuration from the same previous one.
//!
//! A [`Config`] maps each of S shards to a replica group (0: unassigned) and names each group's
//! replicas. [`Config::join`] and [`Config::leave`] rebalance; [`Config::move_shard`] pins one
//! shard to a group and does not rebalance, so the pin holds until the next join or leave.
//!
//! Rebalancing: with `n` groups every group gets `S / n` shards and `S % n` of them one more,
//! given to the groups that already hold the most (ties: lower group id first), since that keeps
//! the most shards in place. A group over its target gives up its highest-numbered shards; the
//! freed shards and the shards of groups that left go, lowest shard first, to the groups under
//! their target, lowest group id first. Starting from a balanced config, a join moves shards only
//! to the joining groups and a leave moves only the leaving groups' shards: the fewest moves any
//! balanced assignment allows.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::raft::{GroupId, NodeId};

/// A shard's number, `0..S`.
pub type ShardId = u32;

/// Shards per configuration unless configured otherwise: enough that 8 groups of 3 nodes each
/// hold 8 shards, so a join or leave moves an eighth of the data, not half of it.
pub const DEFAULT_SHARDS: usize = 64;
/// Most shards a configuration may have. Every configuration is kept for historical queries and
/// sent whole in replies (8 bytes a shard), so 4096 shards make a 32 KiB config.
pub const MAX_SHARDS: usize = 4096;
/// Most groups one configuration may hold (each is a Raft group with its own log and replicas).
pub const MAX_GROUPS: usize = 1024;
/// Most replicas a group may list: Raft groups above 7 voters gain little; 16 leaves room for
/// learners during membership changes.
pub const MAX_REPLICAS_PER_GROUP: usize = 16;

/// The unassigned group: shards of config 0, and of any config without groups.
pub const NO_GROUP: GroupId = 0;

/// One replica of a group: the node that hosts it and, optionally, the core on that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Replica {
    /// The node.
    pub node: NodeId,
    /// The core on that node (`None`: the node places the group itself).
    pub core: Option<u32>,
}

impl Replica {
    /// A replica on `node`, placed by the node.
    pub fn on(node: NodeId) -> Replica {
        Replica { node, core: None }
    }
}

/// Why an operation on a configuration was refused. Refusals are results too: they are decided
/// when the command is applied, alike on every replica, and leave the configuration unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A join or leave that names no group.
    NoGroups,
    /// Group 0 means "unassigned"; it cannot join.
    GroupZero,
    /// A joining group is already in the configuration.
    GroupExists(GroupId),
    /// A leaving group, or a move's target, is not in the configuration.
    UnknownGroup(GroupId),
    /// A leave names the same group twice.
    DuplicateGroup(GroupId),
    /// A joining group lists no replicas, or the same replica twice.
    BadReplicas(GroupId),
    /// A joining group lists more than [`MAX_REPLICAS_PER_GROUP`] replicas.
    TooManyReplicas(GroupId),
    /// The join would make more than [`MAX_GROUPS`] groups.
    TooManyGroups,
    /// A move names a shard past the last one.
    ShardOutOfRange(ShardId),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::NoGroups => write!(f, "no group named"),
            ConfigError::GroupZero => write!(f, "group 0 is reserved for unassigned shards"),
            ConfigError::GroupExists(g) => write!(f, "group {g} has already joined"),
            ConfigError::UnknownGroup(g) => write!(f, "group {g} is not in the configuration"),
            ConfigError::DuplicateGroup(g) => write!(f, "group {g} is named twice"),
            ConfigError::BadReplicas(g) => {
                write!(f, "group {g} lists no replicas or one replica twice")
            }
            ConfigError::TooManyReplicas(g) => {
                write!(
                    f,
                    "group {g} lists more than {MAX_REPLICAS_PER_GROUP} replicas"
                )
            }
            ConfigError::TooManyGroups => write!(f, "more than {MAX_GROUPS} groups"),
            ConfigError::ShardOutOfRange(s) => write!(f, "shard {s} does not exist"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One numbered configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Its number: 0 for the initial one, one more for every change.
    pub num: u64,
    /// The group serving each shard, indexed by shard number ([`NO_GROUP`]: none).
    pub shards: Vec<GroupId>,
    /// Every group and its replicas, in the order they were given at join.
    pub groups: BTreeMap<GroupId, Vec<Replica>>,
}

impl Config {
    /// Config 0: `shards` shards, no groups, every shard unassigned.
    pub fn initial(shards: usize) -> Config {
        assert!(
            (1..=MAX_SHARDS).contains(&shards),
            "between 1 and {MAX_SHARDS} shards, not {shards}"
        );
        Config {
            num: 0,
            shards: vec![NO_GROUP; shards],
            groups: BTreeMap::new(),
        }
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The group serving `shard` ([`NO_GROUP`] when none).
    pub fn group_of(&self, shard: ShardId) -> GroupId {
        self.shards[shard as usize]
    }

    /// The shards `group` serves, in order.
    pub fn shards_of(&self, group: GroupId) -> Vec<ShardId> {
        (0..self.shards.len() as ShardId)
            .filter(|&s| self.shards[s as usize] == group)
            .collect()
    }

    /// Shards held by each group of the configuration (0 for a group holding none).
    pub fn counts(&self) -> BTreeMap<GroupId, usize> {
        let mut counts: BTreeMap<GroupId, usize> = self.groups.keys().map(|&g| (g, 0)).collect();
        for g in &self.shards {
            if let Some(count) = counts.get_mut(g) {
                *count += 1;
            }
        }
        counts
    }

    /// True when every group holds within one shard of every other and, if any group exists,
    /// every shard is assigned to one of them.
    pub fn is_balanced(&self) -> bool {
        let counts = self.counts();
        let (Some(min), Some(max)) = (counts.values().min(), counts.values().max()) else {
            return self.shards.iter().all(|&g| g == NO_GROUP);
        };
        max - min <= 1 && self.shards.iter().all(|g| self.groups.contains_key(g))
    }

    /// The next configuration with `groups` added, rebalanced.
    pub fn join(&self, groups: &BTreeMap<GroupId, Vec<Replica>>) -> Result<Config, ConfigError> {
        if groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        for (&group, replicas) in groups {
            check_joining(self, group, replicas)?;
        }
        if self.groups.len() + groups.len() > MAX_GROUPS {
            return Err(ConfigError::TooManyGroups);
        }
        let mut next = self.successor();
        for (&group, replicas) in groups {
            next.groups.insert(group, replicas.clone());
        }
        next.rebalance();
        Ok(next)
    }

    /// The next configuration without `groups`, their shards spread over the rest.
    pub fn leave(&self, groups: &[GroupId]) -> Result<Config, ConfigError> {
        if groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        for (i, &group) in groups.iter().enumerate() {
            if !self.groups.contains_key(&group) {
                return Err(ConfigError::UnknownGroup(group));
            }
            if groups[..i].contains(&group) {
                return Err(ConfigError::DuplicateGroup(group));
            }
        }
        let mut next = self.successor();
        for group in groups {
            next.groups.remove(group);
        }
        next.rebalance();
        Ok(next)
    }

    /// The next configuration with `shard` on `group`, nothing else changed (no rebalance: the
    /// shard stays there until a join or leave rebalances).
    pub fn move_shard(&self, shard: ShardId, group: GroupId) -> Result<Config, ConfigError> {
        if shard as usize >= self.shards.len() {
            return Err(ConfigError::ShardOutOfRange(shard));
        }
        if !self.groups.contains_key(&group) {
            return Err(ConfigError::UnknownGroup(group));
        }
        let mut next = self.successor();
        next.shards[shard as usize] = group;
        Ok(next)
    }

    fn successor(&self) -> Config {
        Config {
            num: self.num + 1,
            ..self.clone()
        }
    }

    /// Balances the assignment over the current groups with the fewest moves (module docs).
    fn rebalance(&mut self) {
        if self.groups.is_empty() {
            self.shards.fill(NO_GROUP);
            return;
        }
        let mut held: BTreeMap<GroupId, Vec<usize>> =
            self.groups.keys().map(|&g| (g, Vec::new())).collect();
        let mut free = Vec::new();
        for (shard, group) in self.shards.iter().enumerate() {
            match held.get_mut(group) {
                Some(list) => list.push(shard),
                None => free.push(shard),
            }
        }
        let targets = targets(&held, self.shards.len());
        for (group, list) in held.iter_mut() {
            let target = targets[group];
            if list.len() > target {
                free.extend(list.drain(target..));
            }
        }
        free.sort_unstable();
        let mut free = free.into_iter();
        for (&group, list) in held.iter_mut() {
            while list.len() < targets[&group] {
                let shard = free.next().expect("targets sum to the shard count");
                self.shards[shard] = group;
                list.push(shard);
            }
        }
        assert!(free.next().is_none(), "every freed shard found a group");
        debug_assert!(self.is_balanced());
    }
}

/// Each group's share of `shards`: `shards / n`, plus one for the `shards % n` groups holding
/// the most now (ties: lower id), so the extra slots go where shards already are.
fn targets(held: &BTreeMap<GroupId, Vec<usize>>, shards: usize) -> BTreeMap<GroupId, usize> {
    let n = held.len();
    let (base, extra) = (shards / n, shards % n);
    let mut order: Vec<GroupId> = held.keys().copied().collect();
    order.sort_by_key(|g| (Reverse(held[g].len()), *g));
    order
        .into_iter()
        .enumerate()
        .map(|(rank, g)| (g, base + usize::from(rank < extra)))
        .collect()
}

fn check_joining(config: &Config, group: GroupId, replicas: &[Replica]) -> Result<(), ConfigError> {
    if group == NO_GROUP {
        return Err(ConfigError::GroupZero);
    }
    if config.groups.contains_key(&group) {
        return Err(ConfigError::GroupExists(group));
    }
    if replicas.len() > MAX_REPLICAS_PER_GROUP {
        return Err(ConfigError::TooManyReplicas(group));
    }
    let repeated = replicas
        .iter()
        .enumerate()
        .any(|(i, r)| replicas[..i].contains(r));
    if replicas.is_empty() || repeated {
        return Err(ConfigError::BadReplicas(group));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
