//! Which group owns a key, and which core of a node owns a group.
//!
//! A cluster has a fixed number of KV groups, numbered `1..=groups`, each a Raft group with a
//! replica on every node. A key belongs to group `1 + jump(fnv1a64(key), groups)`; a group lives
//! on core [`shardcore_io::core_for_group`] of every node. Both are pure and stable, and both
//! are part of the on-disk layout: changing either strands data, so golden tests pin them.
//! Clients compute the same function to send a request straight to the owning core's group.
//!
//! The sharded KV (the shard controller) replaces the fixed key-to-group map with numbered
//! configurations; the group-to-core rule stays.
//!
//! Besides the KV groups every node hosts the shard controller's group, [`CONTROLLER_GROUP`]:
//! a reserved id far above any KV group (at most 4096), placed on a core by the same rule and
//! replicated on every node like the others.

use std::num::NonZeroUsize;

use shardcore_io::{core_for_group, CoreId};

use crate::raft::GroupId;

/// The shard controller's Raft group. Reserved: KV groups are `1..=groups` with `groups` at
/// most 4096, and shard groups joined through the controller may not use it (the CLI refuses
/// it). Part of the on-disk layout (its log records and `snap-<group>-...` files name it), so it
/// never changes; its core is `core_of_group(CONTROLLER_GROUP, cores)`, pinned by a golden test.
pub const CONTROLLER_GROUP: GroupId = u64::MAX;

/// FNV-1a, 64-bit: a stable, dependency-free hash of the key bytes.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The group (`1..=groups`) that owns `key`. `groups` must be at least 1.
pub fn group_for_key(key: &[u8], groups: u64) -> GroupId {
    assert!(groups >= 1, "a cluster has at least one group");
    // The group-to-core placement is a jump hash over a mixed id; reuse it over the key hash
    // so that both maps share one audited implementation.
    let buckets = NonZeroUsize::new(groups as usize).expect("groups >= 1");
    1 + core_for_group(key_hash(key), buckets).0 as u64
}

/// The core of a node with `cores` cores that owns `group`.
pub fn core_of_group(group: GroupId, cores: usize) -> usize {
    let cores = NonZeroUsize::new(cores.max(1)).expect("at least one core");
    let CoreId(core) = core_for_group(group, cores);
    core
}

/// The KV groups core `core` of a node with `cores` cores owns, ascending.
pub fn groups_of_core(core: usize, cores: usize, groups: u64) -> Vec<GroupId> {
    (1..=groups)
        .filter(|&g| core_of_group(g, cores) == core)
        .collect()
}

/// Every group core `core` hosts: its KV groups, then the controller's group if it lands here.
pub fn hosted_groups_of_core(core: usize, cores: usize, groups: u64) -> Vec<GroupId> {
    let mut hosted = groups_of_core(core, cores, groups);
    if core_of_group(CONTROLLER_GROUP, cores) == core {
        hosted.push(CONTROLLER_GROUP);
    }
    hosted
}

/// True when a node with `groups` KV groups hosts `group` (on some core).
pub fn is_hosted(group: GroupId, groups: u64) -> bool {
    (1..=groups).contains(&group) || group == CONTROLLER_GROUP
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: the key-to-group map is part of the on-disk layout.
    #[test]
    fn key_placement_is_pinned() {
        let keys: Vec<u64> = (0..8)
            .map(|i| group_for_key(format!("key{i}").as_bytes(), 8))
            .collect();
        assert_eq!(keys, GOLDEN_8);
        assert_eq!(group_for_key(b"", 1), 1);
    }

    const GOLDEN_8: [u64; 8] = [8, 7, 4, 3, 1, 3, 5, 3];

    /// Golden values: the controller's core is part of the on-disk layout too.
    #[test]
    fn controller_placement_is_pinned() {
        let cores: Vec<usize> = (1..=8)
            .map(|cores| core_of_group(CONTROLLER_GROUP, cores))
            .collect();
        assert_eq!(cores, GOLDEN_CONTROLLER_CORES);
        for cores in 1..=8 {
            let hosting: Vec<usize> = (0..cores)
                .filter(|&c| hosted_groups_of_core(c, cores, 8).contains(&CONTROLLER_GROUP))
                .collect();
            assert_eq!(hosting.len(), 1, "one core of {cores} hosts the controller");
        }
        assert!(is_hosted(CONTROLLER_GROUP, 8) && is_hosted(8, 8) && !is_hosted(9, 8));
        assert!(!is_hosted(0, 8));
    }

    const GOLDEN_CONTROLLER_CORES: [usize; 8] = [0, 0, 0, 3, 3, 3, 3, 3];

    #[test]
    fn every_group_has_one_core_and_keys_spread() {
        for cores in 1..=4 {
            let mut seen = Vec::new();
            for core in 0..cores {
                seen.extend(groups_of_core(core, cores, 16));
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=16).collect::<Vec<_>>());
        }
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[group_for_key(format!("k{i}").as_bytes(), 8) as usize - 1] += 1;
        }
        for (g, &n) in counts.iter().enumerate() {
            assert!(
                (700..1300).contains(&n),
                "group {} got {n} of 8000 keys",
                g + 1
            );
        }
    }
}
